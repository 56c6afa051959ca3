-- A small JSON encoder for change records: objects with a stable key order
-- (the fields a caller lists first, the rest sorted), int64 cdata as
-- numbers when exact in a double (|v| <= 2^53) and as decimal strings
-- otherwise, NaN and infinities as null, and bytes that are not UTF-8 text
-- (a blob, a binary Redis value) as "0x" and their hex.  Lua tables are
-- objects unless they have a [1] or are marked with json.array().
local ffi = require "ffi"

local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs
local fmt, byte, gsub, sort = string.format, string.byte, string.gsub,
                              table.sort
local concat = table.concat
local huge = math.huge

local _M = { _VERSION = "0.1.0" }

local ARRAY = {}                          -- metatable marking an array
local RAW = {}                            -- ... JSON text made already

-- t as a JSON array even when empty
function _M.array(t)
    return setmetatable(t or {}, ARRAY)
end

-- text (JSON already) as a value: an object encoded with its own order
function _M.raw(text)
    return setmetatable({ text }, RAW)
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b",
              ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
              ["\t"] = "\\t" }
local function esc(c)
    return ESC[c] or fmt("\\u%04x", byte(c))
end

-- Is s valid UTF-8 (no overlongs checked beyond the lead byte's range)?
local function utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = byte(s, i)
        local k
        if c < 0x80 then k = 0
        elseif c >= 0xC2 and c <= 0xDF then k = 1
        elseif c >= 0xE0 and c <= 0xEF then k = 2
        elseif c >= 0xF0 and c <= 0xF4 then k = 3
        else return false end
        for j = i + 1, i + k do
            local d = byte(s, j)
            if d == nil or d < 0x80 or d > 0xBF then
                return false
            end
        end
        i = i + k + 1
    end
    return true
end

local function hex(s)
    return "0x" .. gsub(s, ".", function(c) return fmt("%02x", byte(c)) end)
end

local function string_value(s)
    if not utf8(s) then
        return '"' .. hex(s) .. '"'
    end
    return '"' .. gsub(s, '[%c"\\]', esc) .. '"'
end
_M.string = string_value

local function number(v)
    if v ~= v or v == huge or v == -huge then
        return "null"
    end
    if v == math.floor(v) and v >= -2^53 and v <= 2^53 then
        return fmt("%d", v)
    end
    return fmt("%.17g", v)
end

local I53 = 2^53
local function int64(v)
    if ffi.istype("int64_t", v) or ffi.istype("uint64_t", v) then
        if v <= I53 and (ffi.istype("uint64_t", v) or v >= -I53) then
            return fmt("%d", tonumber(v))
        end
        return '"' .. tostring(v):gsub("U?LL$", "") .. '"'
    end
    return string_value(tostring(v))
end

local encode

local function array(t)
    local out = {}
    for i, v in ipairs(t) do
        out[i] = encode(v)
    end
    return "[" .. concat(out, ",") .. "]"
end

-- An object: the keys of `order` first (those present), the rest sorted.
local function object(t, order)
    local out, done = {}, {}
    if order then
        for _, k in ipairs(order) do
            if t[k] ~= nil and not done[k] then
                done[k] = true
                out[#out + 1] = string_value(tostring(k)) .. ":" .. encode(t[k])
            end
        end
    end
    local rest = {}
    for k in pairs(t) do
        if not done[k] then rest[#rest + 1] = tostring(k) end
    end
    sort(rest)
    for _, k in ipairs(rest) do
        local v = t[k]
        if v == nil then v = t[tonumber(k)] end
        out[#out + 1] = string_value(k) .. ":" .. encode(v)
    end
    return "{" .. concat(out, ",") .. "}"
end
_M.object = object

encode = function(v)
    local tv = type(v)
    if v == nil then
        return "null"
    elseif tv == "boolean" then
        return v and "true" or "false"
    elseif tv == "number" then
        return number(v)
    elseif tv == "string" then
        return string_value(v)
    elseif tv == "cdata" then
        return int64(v)
    elseif tv == "table" then
        local mt = getmetatable(v)
        if mt == RAW then
            return v[1]
        elseif mt == ARRAY or v[1] ~= nil then
            return array(v)
        end
        return object(v)
    end
    return string_value(tostring(v))
end
_M.encode = encode

return _M
