-- A RESULT Rows as raw cells, for a transform that rewrites rows: read()
-- splits the body into what comes before the rows (tracing id, warnings,
-- result kind, metadata: kept as bytes) and each row's cells (bytes, or
-- nil for null); write() puts rows back behind the same header and
-- metadata.  decode() gives Lua values by column name.
local bit = require "bit"
local ffi = require "ffi"
local types = require "shotover.cql.types"
local session = require "shotover.cql.session"
local C = require("shotover.ffi").C

local s32 = types.s32
local char, concat = string.char, table.concat
local band, rshift = bit.band, bit.rshift
local ffi_string, cast = ffi.string, ffi.cast
local u8p = ffi.typeof("const uint8_t *")

local OP_RESULT = C.SH_CQL_RESULT

local _M = { _VERSION = "0.1.0" }

local function be32(n)
    return char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
                band(rshift(n, 8), 0xff), band(n, 0xff))
end
_M.be32 = be32

-- { prefix = bytes, columns = { { name, type, ... } }, [k] = row } with
-- row[c] the bytes of column c (nil: null), or nil when f is not a
-- RESULT Rows.  req: the request (for a prepared statement's columns when
-- the node skipped the metadata).  Raises on a body that does not read.
function _M.read(f, req)
    if f == nil or f.rtype ~= OP_RESULT then
        return nil
    end
    local p, n = f:body_view()
    local i = session.response_start(f, p, n)
    if s32(p, i, n, "a result kind") ~= 2 then
        return nil
    end
    local meta
    meta, i = types.read_rows_metadata(p, i + 4, n)
    local cols = meta.columns
    if meta.no_metadata then
        local st = req and session.prepared(req)
        cols = st and st.result_columns and st.result_columns.columns
        if cols == nil then
            return nil
        end
    end
    local t = { prefix = ffi_string(p, i), columns = cols }
    local nrows = s32(p, i, n, "a row count")
    i = i + 4
    local ncol = #cols
    if nrows > 0 and (ncol < 1 or nrows > (n - i) / 4 / ncol) then
        error("cql body: " .. nrows .. " rows of " .. ncol .. " columns in "
              .. (n - i) .. " bytes", 0)
    end
    for r = 1, nrows do
        local row = {}
        for c = 1, ncol do
            local len = s32(p, i, n, "a cell")
            i = i + 4
            if len >= 0 then
                row[c] = types.bytes(p, i, n, len, "a cell")
                i = i + len
            end
        end
        t[r] = row
    end
    return t
end

-- The value of a cell's bytes (nil for null) of column col.
local function value(col, b)
    if b == nil then
        return nil
    end
    return types.decode(col.type, cast(u8p, b), 0, #b)
end
_M.value = value

-- Rows as { column name -> value }.
function _M.decode(t)
    local out = {}
    for r = 1, #t do
        local row = {}
        for c, col in ipairs(t.columns) do
            local ok, v = pcall(value, col, t[r][c])
            if ok then
                row[col.name] = v
            end
        end
        out[r] = row
    end
    return out
end

-- A row's cells by column name (bytes).
function _M.by_name(t, r)
    local out = {}
    for c, col in ipairs(t.columns) do
        out[col.name] = t[r][c]
    end
    return out
end

-- Give f (the RESULT read into t) the rows `list` (each a list of cell
-- bytes in t's column order, nil for null), behind t's prefix.
function _M.write(f, t, list)
    local parts = { t.prefix, be32(#list) }
    local ncol = #t.columns
    for _, row in ipairs(list) do
        for c = 1, ncol do
            local b = row[c]
            if b == nil then
                parts[#parts + 1] = "\255\255\255\255"
            else
                parts[#parts + 1] = be32(#b)
                parts[#parts + 1] = b
            end
        end
    end
    f:set_body(concat(parts))
end

return _M
