-- Constructors for Redis replies a transform produces itself.  Each returns
-- a message (sh_frame_t); inside a connection it lives until the batch's
-- replies are written.
local message = require "shotover.message"

local frame_from_resp = message.frame_from_resp
local concat = table.concat
local gsub = string.gsub
local type = type
local tostring = tostring
local floor = math.floor

local _M = { _VERSION = "0.1.0" }

-- the marker for a null element inside array{}
_M.NULL = setmetatable({}, { __tostring = function() return "null" end })

local function line(s)
    -- a simple string or error is one line: CR and LF would break framing
    return (gsub(tostring(s), "[\r\n]", " "))
end

local function encode(v, out)
    local t = type(v)
    if t == "string" then
        out[#out + 1] = "$" .. #v .. "\r\n" .. v .. "\r\n"
    elseif t == "number" then
        if v ~= floor(v) then
            error("reply.array: integers only, got " .. v, 3)
        end
        out[#out + 1] = ":" .. string.format("%d", v) .. "\r\n"
    elseif v == _M.NULL or v == nil then
        out[#out + 1] = "$-1\r\n"
    elseif t == "table" then
        out[#out + 1] = "*" .. #v .. "\r\n"
        for i = 1, #v do
            encode(v[i], out)
        end
    elseif t == "cdata" then
        out[#out + 1] = v:raw()
    else
        error("reply.array: cannot encode a " .. t, 3)
    end
end

local function make(s)
    local f, err = frame_from_resp(s)
    if not f then
        error("reply: " .. err, 3)
    end
    return f
end

function _M.simple(s)
    return make("+" .. line(s) .. "\r\n")
end

-- error("ERR no such key") ; a message without an upper-case code gets ERR
function _M.error(s)
    s = line(s)
    if not s:match("^[A-Z]+ ") then
        s = "ERR " .. s
    end
    return make("-" .. s .. "\r\n")
end

function _M.integer(n)
    return make(":" .. string.format("%d", n) .. "\r\n")
end

function _M.bulk(s)
    s = tostring(s)
    return make("$" .. #s .. "\r\n" .. s .. "\r\n")
end

function _M.null()
    return make("$-1\r\n")
end

-- array{ "a", 1, { "nested" }, reply.NULL, some_message }
function _M.array(items)
    local out = {}
    encode(items, out)
    return make(concat(out))
end

return _M
