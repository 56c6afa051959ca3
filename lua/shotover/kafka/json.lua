-- A small JSON encoder for change records: objects with a stable key order
-- (the fields a caller lists first, the rest sorted), int64 cdata as
-- numbers when exact in a double (|v| <= 2^53) and as decimal strings
-- otherwise, NaN and infinities as null, and bytes that are not UTF-8 text
-- (a blob, a binary Redis value) as "0x" and their hex.  Lua tables are
-- objects unless they have a [1] or are marked with json.array().
local bit = require "bit"
local ffi = require "ffi"

local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs
local fmt, byte, gsub, sort = string.format, string.byte, string.gsub,
                              table.sort
local concat = table.concat
local find = string.find
local band, rshift = bit.band, bit.rshift
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

-- "0x" and the hex of s, through one reused buffer (a loop the JIT
-- compiles: no closure, string.format or string per byte)
local DIGITS = ffi.new("const uint8_t[16]", { 48, 49, 50, 51, 52, 53, 54,
    55, 56, 57, 97, 98, 99, 100, 101, 102 })
local u8p = ffi.typeof("const uint8_t *")
local hbuf, hcap = nil, 0
local function hex(s)
    local n = #s
    if 2 * n > hcap then
        hcap = 2 * n + 256
        hbuf = ffi.new("uint8_t[?]", hcap)
    end
    local p = ffi.cast(u8p, s)
    for i = 0, n - 1 do
        local c = p[i]
        hbuf[2 * i] = DIGITS[rshift(c, 4)]
        hbuf[2 * i + 1] = DIGITS[band(c, 15)]
    end
    return "0x" .. ffi.string(hbuf, 2 * n)
end

-- bytes as "0x..." whatever they hold (a blob column's value)
function _M.bytes(s)
    return '"' .. hex(s) .. '"'
end

local function string_value(s)
    if not utf8(s) then
        return '"' .. hex(s) .. '"'
    end
    if not find(s, '[%c"\\]') then
        return '"' .. s .. '"'
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

-- The quoted names of the keys objects are ordered by, made once.
local names = setmetatable({}, { __mode = "k" })

-- An object: the keys of `order` first (those present), the rest sorted.
local function object(t, order)
    local out, n, listed = {}, 0, 0
    if order then
        local quoted = names[order]
        if quoted == nil then
            quoted = {}
            for i, k in ipairs(order) do
                quoted[i] = string_value(tostring(k)) .. ":"
            end
            names[order] = quoted
        end
        for i = 1, #order do
            local v = t[order[i]]
            if v ~= nil then
                n = n + 1
                out[n] = quoted[i] .. encode(v)
            end
        end
        listed = n
    end
    local total = 0
    for _ in pairs(t) do
        total = total + 1
    end
    if total > listed then
        local skip = {}
        for _, k in ipairs(order or {}) do
            skip[k] = true
        end
        local rest = {}
        for k in pairs(t) do
            if not skip[k] then rest[#rest + 1] = tostring(k) end
        end
        sort(rest)
        for _, k in ipairs(rest) do
            local v = t[k]
            if v == nil then v = t[tonumber(k)] end
            n = n + 1
            out[n] = string_value(k) .. ":" .. encode(v)
        end
    end
    return "{" .. concat(out, ",", 1, n) .. "}"
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
