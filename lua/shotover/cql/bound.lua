-- An EXECUTE's parameters read straight from its body, for transforms that
-- keep a plan per prepared statement (redis_cache, kafka): everything
-- about the statement is worked out once, and each EXECUTE only brings
-- its bound values, consistency and flags.  No table per request: the
-- values asked for are put in a table the caller reuses.
--
-- Only the plain case is read; anything else is left to the general path
-- (m:query_info()) by returning nil: a custom payload, named values, a
-- needed value that is null or unset, a body cut short.
local bit = require "bit"
local ffi = require "ffi"
local base = require "shotover.ffi"
local session = require "shotover.cql.session"

local C = base.C
local band, bor, lshift, tobit = bit.band, bit.bor, bit.lshift, bit.tobit
local ffi_string = ffi.string

local FLAG_PAYLOAD = C.SH_CQL_FLAG_PAYLOAD
local VALUES, NAMES = 0x01, 0x40

local _M = { _VERSION = "0.1.0" }

_M.CONSISTENCY = {
    [0] = "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
    "EACH_QUORUM", "SERIAL", "LOCAL_SERIAL", "LOCAL_ONE",
}

local function u16(p, i)
    return p[i] * 256 + p[i + 1]
end

local function s32(p, i)
    return tobit(bor(lshift(p[i], 24), lshift(p[i + 1], 16),
                     lshift(p[i + 2], 8), p[i + 3]))
end
_M.s32 = s32

-- The session's record of the statement EXECUTE m runs (its prepared id
-- looked up), or nil.  Also the body's view, for read().
function _M.statement(m)
    if band(m.data[1], FLAG_PAYLOAD) ~= 0 then
        return nil
    end
    local p, n = m:body_view()
    if n < 2 then
        return nil
    end
    local idlen = u16(p, 0)
    if 2 + idlen > n then
        return nil
    end
    return session.prepared_by_id(ffi_string(p + 2, idlen)), p, n
end

-- The parameters of EXECUTE m (body p, n from statement()): consistency
-- (its code), flags, and vals[k] = the bytes of bound value k for each k
-- with needs[k] (all values when needs is true); the offset after the
-- values (where page size and the rest follow) and the value count.  nil
-- when the plain case does not apply.  The caller empties vals.
function _M.read(m, p, n, needs, vals)
    local i = 2 + u16(p, 0)
    local v5 = band(m.data[0], 0x7f) >= 5
    if v5 then
        if i + 2 > n then
            return nil
        end
        i = i + 2 + u16(p, i)                   -- result metadata id
    end
    if i + 7 > n then
        return nil
    end
    local cl = u16(p, i)
    local flags
    if v5 then
        flags, i = s32(p, i + 2), i + 6
    else
        flags, i = p[i + 2], i + 3
    end
    if band(flags, NAMES) ~= 0 then
        return nil
    end
    local count = 0
    if band(flags, VALUES) ~= 0 then
        count = u16(p, i)
        i = i + 2
    end
    for k = 1, count do
        if i + 4 > n then
            return nil
        end
        local len = s32(p, i)
        i = i + 4
        local want = needs == true or needs[k]
        if len >= 0 then
            if i + len > n then
                return nil
            end
            if want then
                vals[k] = ffi_string(p + i, len)
            end
            i = i + len
        elseif want then
            return nil                          -- null or unset
        end
    end
    return cl, flags, i, count
end

-- For the AST of a write: fn(column, term) for each column an INSERT
-- gives a value, or each column an UPDATE's or DELETE's WHERE sets by "="
-- to one value (where plans find their key); false as soon as fn returns
-- false, else true.
function _M.each_keyed(ast, fn)
    if ast.kind == "insert" then
        for i, col in ipairs(ast.columns or {}) do
            if fn(col, ast.values[i]) == false then
                return false
            end
        end
        return true
    end
    for _, rel in ipairs(ast.where or {}) do
        if rel.op == "=" and not rel.values and rel.column
           and fn(rel.column, rel.value) == false then
            return false
        end
    end
    return true
end

return _M
