-- RESP reply decoder: one reply (RESP2 or RESP3) -> Lua values, for
-- transforms that read what a Redis backend said (a Redis sub-chain inside
-- a chain of another protocol, a cache).  It reads the bytes in place
-- through the FFI: only the values it returns become Lua strings.
--
-- Spec: https://github.com/redis/redis-specifications (RESP2, RESP3).
-- Values:
--   simple string, bulk string        Lua string
--   verbatim string (=)               Lua string (the text, without its
--                                     "txt:" format)
--   integer (:)                       Lua number; an integer beyond 2^53
--                                     (where a double is no longer exact)
--                                     an int64_t cdata
--   double (,)                        Lua number (inf, -inf, nan too)
--   boolean (#)                       true / false
--   big number (()                    _M.BigNumber { digits = "-123..." }
--   null ($-1, *-1, _)                _M.NULL (so arrays keep their length)
--   error (-), blob error (!)         _M.Error { message = "ERR no such
--                                     key", code = "ERR" }
--   array (*), set (~), push (>)      Lua array (1..n, nulls as _M.NULL)
--   map (%)                           Lua table: decoded key -> value
--   attribute (|)                     skipped: the value is the reply that
--                                     follows it
-- Not supported: RESP3 streamed strings and aggregates (`$?`, `*?`: no
-- Redis server sends them), inline replies.
--
-- Like the C reader (hiredis' shape): no recursion — nesting is an explicit
-- stack, so depth is bounded by opts.max_depth, not by the Lua C stack —
-- and every length read from the bytes is checked against the limits and
-- against the bytes left before anything is allocated.
local ffi = require "ffi"
local base = require "shotover.ffi"          -- luacheck: ignore (sh_frame_t)

local ffi_string = ffi.string
local ffi_cast = ffi.cast
local tonumber = tonumber
local setmetatable = setmetatable
local getmetatable = getmetatable
local type = type
local fmt = string.format
local find = string.find
local sub = string.sub

local ok_new, tnew = pcall(require, "table.new")
if not ok_new then
    tnew = function() return {} end
end

local u8p = ffi.typeof("const uint8_t *")

local _M = {
    _VERSION = "0.1.0",
    -- defaults of opts
    MAX_DEPTH = 1024,                   -- nested aggregates
    MAX_ELEMENTS = 1024 * 1024,         -- elements in the whole reply
    MAX_BULK = 512 * 1024 * 1024,       -- bytes of one string
}

-- null: one value, so `v == decode.NULL` tests it and arrays have no holes
_M.NULL = setmetatable({}, { __tostring = function() return "null" end })

-- An error reply: { message = "ERR no such key", code = "ERR" }.
local Error = {}
Error.__index = Error
Error.__tostring = function(e) return e.message end
_M.Error = Error

-- A RESP3 big number: { digits = "3492890328409238509324850943850943825" }.
local BigNumber = {}
BigNumber.__index = BigNumber
BigNumber.__tostring = function(b) return b.digits end
_M.BigNumber = BigNumber

function _M.is_error(v)
    return type(v) == "table" and getmetatable(v) == Error
end

function _M.is_null(v)
    return v == _M.NULL
end

local NULL = _M.NULL

local function new_error(s)
    local sp = find(s, " ", 1, true)
    return setmetatable({ message = s, code = sp and sub(s, 1, sp - 1) or s },
                        Error)
end

local CR, LF, MINUS, PLUS = 13, 10, 45, 43
local TWO53 = 2 ^ 53

-- The end of the line starting at i (the index of its CR), or nil when the
-- bytes end first or CR is not followed by LF.
local function line_end(p, i, n)
    while i < n and p[i] ~= CR do
        i = i + 1
    end
    if i + 1 >= n or p[i + 1] ~= LF then
        return nil
    end
    return i
end

-- The signed decimal integer in bytes [a, b), or nil: a Lua number, or an
-- int64_t cdata beyond 2^53.
local function integer(p, a, b)
    local neg = false
    if a < b and (p[a] == MINUS or p[a] == PLUS) then
        neg = p[a] == MINUS
        a = a + 1
    end
    local nd = b - a
    if nd < 1 or nd > 19 then
        return nil
    end
    if nd <= 15 then                    -- exact in a double
        local v = 0
        for i = a, b - 1 do
            local d = p[i] - 48
            if d < 0 or d > 9 then
                return nil
            end
            v = v * 10 + d
        end
        return neg and -v or v
    end
    local v = 0ULL
    for i = a, b - 1 do
        local d = p[i] - 48
        if d < 0 or d > 9 then
            return nil
        end
        v = v * 10 + d
    end
    if v > 9223372036854775808ULL
       or (not neg and v == 9223372036854775808ULL)
    then
        return nil                      -- beyond int64
    end
    if v <= TWO53 then
        local x = tonumber(v)
        return neg and -x or x
    end
    local s = ffi_cast("int64_t", v)    -- 2^63 wraps to -2^63: right if neg
    if neg and v ~= 9223372036854775808ULL then
        s = -s
    end
    return s
end

-- container kinds on the stack
local ARRAY, MAP, ATTRIBUTE = 1, 2, 3

-- Decode the reply at p[0 .. n).  Returns value, bytes used; or nil and a
-- message.  opts: max_depth, max_elements, max_bulk.
function _M.view(p, n, opts)
    p = ffi_cast(u8p, p)
    local max_depth = opts and opts.max_depth or _M.MAX_DEPTH
    local budget = opts and opts.max_elements or _M.MAX_ELEMENTS
    local max_bulk = opts and opts.max_bulk or _M.MAX_BULK
    -- the stack: container, its kind, elements still to come, next array
    -- index, a map's key waiting for its value
    local st_t, st_kind, st_left, st_i, st_key = {}, {}, {}, {}, {}
    local depth = 0
    local pos = 0
    while true do
        if pos >= n then
            return nil, "truncated reply"
        end
        local ty = p[pos]
        local e = line_end(p, pos + 1, n)
        if e == nil then
            return nil, fmt("no CRLF after the line at byte %d", pos)
        end
        local value, count, kind
        if ty == 43 then                                    -- + simple
            value = ffi_string(p + pos + 1, e - pos - 1)
        elseif ty == 45 then                                -- - error
            value = new_error(ffi_string(p + pos + 1, e - pos - 1))
        elseif ty == 58 then                                -- : integer
            value = integer(p, pos + 1, e)
            if value == nil then
                return nil, fmt("bad integer at byte %d", pos)
            end
        elseif ty == 36 or ty == 33 or ty == 61 then        -- $ ! = strings
            local len = integer(p, pos + 1, e)
            if len == nil or type(len) ~= "number" or len < -1 then
                return nil, fmt("bad string length at byte %d", pos)
            end
            if len == -1 and ty == 36 then
                value = NULL
            elseif len < 0 or len > max_bulk then
                return nil, fmt("string length %d at byte %d over the "
                                .. "limit %d", len, pos, max_bulk)
            elseif e + 2 + len + 2 > n then
                return nil, fmt("string at byte %d runs past the reply", pos)
            elseif p[e + 2 + len] ~= CR or p[e + 3 + len] ~= LF then
                return nil, fmt("no CRLF after the string at byte %d", pos)
            else
                local s = e + 2
                if ty == 61 then                -- "txt:" before the text
                    if len < 4 or p[s + 3] ~= 58 then
                        return nil, fmt("bad verbatim string at byte %d", pos)
                    end
                    value = ffi_string(p + s + 4, len - 4)
                elseif ty == 33 then
                    value = new_error(ffi_string(p + s, len))
                else
                    value = ffi_string(p + s, len)
                end
                e = e + 2 + len
            end
        elseif ty == 95 then                                -- _ null
            if e ~= pos + 1 then
                return nil, fmt("bad null at byte %d", pos)
            end
            value = NULL
        elseif ty == 35 then                                -- # boolean
            local c = p[pos + 1]
            if e ~= pos + 2 or (c ~= 116 and c ~= 102) then
                return nil, fmt("bad boolean at byte %d", pos)
            end
            value = c == 116
        elseif ty == 44 then                                -- , double
            local s = ffi_string(p + pos + 1, e - pos - 1)
            if s == "inf" or s == "+inf" then
                value = 1 / 0
            elseif s == "-inf" then
                value = -1 / 0
            elseif s == "nan" or s == "-nan" then
                value = 0 / 0
            else
                value = tonumber(s)
                if value == nil then
                    return nil, fmt("bad double at byte %d", pos)
                end
            end
        elseif ty == 40 then                                -- ( big number
            local s = ffi_string(p + pos + 1, e - pos - 1)
            if not find(s, "^[-+]?%d+$") then
                return nil, fmt("bad big number at byte %d", pos)
            end
            value = setmetatable({ digits = s }, BigNumber)
        elseif ty == 42 or ty == 126 or ty == 62 then       -- * ~ > arrays
            count, kind = integer(p, pos + 1, e), ARRAY
            if count == -1 and ty == 42 then
                value, count = NULL, nil
            end
        elseif ty == 37 or ty == 124 then                   -- % | maps
            count = integer(p, pos + 1, e)
            kind = ty == 37 and MAP or ATTRIBUTE
            if type(count) == "number" and count >= 0 then
                count = count * 2       -- keys and values
            end
        else
            return nil, fmt("unknown reply type %q at byte %d",
                            string.char(ty), pos)
        end
        pos = e + 2
        if count ~= nil then
            -- an aggregate: checked before its table is made
            if type(count) ~= "number" or count < 0 then
                return nil, fmt("bad aggregate length at byte %d", e)
            end
            if count > budget then
                return nil, fmt("aggregate of %d elements over the limit",
                                count)
            end
            if count * 3 > n - pos then         -- each takes >= 3 bytes
                return nil, fmt("aggregate of %d elements runs past the "
                                .. "reply", count)
            end
            budget = budget - count
            if count == 0 then
                value = kind == MAP and {} or (kind == ARRAY and {} or nil)
            else
                if depth >= max_depth then
                    return nil, fmt("reply nested deeper than %d", max_depth)
                end
                depth = depth + 1
                st_t[depth] = kind == ARRAY and tnew(count, 0)
                              or tnew(0, count / 2)
                st_kind[depth], st_left[depth] = kind, count
                st_i[depth], st_key[depth] = 0, nil
            end
        end
        if count == nil or count == 0 then
            -- a complete value (or an empty attribute): hand it to the
            -- containers, closing each one it completes
            local deliver = value ~= nil
            while true do
                if depth == 0 then
                    if deliver then
                        return value, pos
                    end
                    break                       -- attribute: read the reply
                end
                if deliver then
                    local k = st_kind[depth]
                    if k == ARRAY then
                        local i = st_i[depth] + 1
                        st_i[depth] = i
                        st_t[depth][i] = value
                    elseif st_key[depth] == nil then
                        if value ~= value then
                            value = "nan"       -- NaN cannot index a table
                        end
                        st_key[depth] = value
                    else
                        if k == MAP then
                            st_t[depth][st_key[depth]] = value
                        end
                        st_key[depth] = nil
                    end
                    st_left[depth] = st_left[depth] - 1
                end
                if st_left[depth] > 0 then
                    break
                end
                value = st_t[depth]
                deliver = st_kind[depth] ~= ATTRIBUTE
                st_t[depth] = nil
                depth = depth - 1
            end
        end
    end
end

-- Decode a reply frame (sh_frame_t: a message whose .data/.len hold one
-- reply), in place.  Returns the value, or nil and a message.
function _M.frame(f, opts)
    local v, used = _M.view(f.data, f.len, opts)
    if v == nil then
        return nil, used
    end
    return v
end

-- Decode a Lua string holding exactly one reply (specs, tools).
function _M.string(s, opts)
    local v, used = _M.view(s, #s, opts)
    if v == nil then
        return nil, used
    end
    if used ~= #s then
        return nil, fmt("%d bytes after the reply", #s - used)
    end
    return v
end

return _M
