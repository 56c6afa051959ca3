-- CQL types: reading a type [option] (native_protocol_v4.spec 4.2.5.2) and
-- decoding a value of that type (section 6) into a Lua value.  Reads go
-- through a (pointer, length) view; nothing is copied but the strings a
-- caller asks for.
--
-- Lua values: text/ascii/blob/varint/decimal/inet keep their bytes (as Lua
-- strings; decimal as { scale = n, unscaled = bytes }, inet as "a.b.c.d" or
-- an IPv6 string); int, smallint, tinyint, float, double, counter, bigint,
-- timestamp, date, time as numbers (64-bit ones as LuaJIT int64 cdata);
-- boolean; uuid/timeuuid as "xxxxxxxx-xxxx-..."; list/set as arrays; map as
-- an array of { key, value } pairs (keys may be any type); tuple and UDT as
-- arrays / tables by field name; vector as an array; null as nil.
local bit = require "bit"
local ffi = require "ffi"

local band, bor, lshift = bit.band, bit.bor, bit.lshift
local ffi_string = ffi.string
local fmt = string.format
local error = error
local tonumber = tonumber

local _M = { _VERSION = "0.1.0" }

local NAMES = {
    [0x0000] = "custom", [0x0001] = "ascii", [0x0002] = "bigint",
    [0x0003] = "blob", [0x0004] = "boolean", [0x0005] = "counter",
    [0x0006] = "decimal", [0x0007] = "double", [0x0008] = "float",
    [0x0009] = "int", [0x000B] = "timestamp", [0x000C] = "uuid",
    [0x000D] = "varchar", [0x000E] = "varint", [0x000F] = "timeuuid",
    [0x0010] = "inet", [0x0011] = "date", [0x0012] = "time",
    [0x0013] = "smallint", [0x0014] = "tinyint", [0x0015] = "duration",
    [0x0020] = "list", [0x0021] = "map", [0x0022] = "set", [0x0030] = "udt",
    [0x0031] = "tuple",
}

local i64 = ffi.typeof("int64_t")
local dbl_box = ffi.new("union { uint64_t u; double d; }")
local flt_box = ffi.new("union { uint32_t u; float f; }")

-- Unchecked big-endian reads, for callers that checked the bounds.
local function be16(p, i)
    return bor(lshift(p[i], 8), p[i + 1])
end

local function be32(p, i)
    return bor(lshift(p[i], 24), lshift(p[i + 1], 16), lshift(p[i + 2], 8),
               p[i + 3])
end

local function be64(p, i)
    local v = i64(0)
    for k = 0, 7 do
        v = v * 256 + p[i + k]
    end
    return v
end

-- Checked reads.  Every decoder reads a body through these, with `n` the
-- end of what it may read (the body's length, or a value's end): a length
-- field that lies raises here instead of reading the memory after the
-- body (the FFI reads whatever is there).  c/test/fuzz-cql.c holds every
-- decoder to it, bodies placed against an unmapped page.
local function past(what)
    error("cql: " .. what .. " runs past the body", 0)
end

local function u8(p, i, n, what)
    if i < 0 or i >= n then
        past(what or "a byte")
    end
    return p[i]
end

local function u16(p, i, n, what)
    if i < 0 or i + 2 > n then
        past(what or "a [short]")
    end
    return bor(lshift(p[i], 8), p[i + 1])
end

-- a signed [int]
local function s32(p, i, n, what)
    if i < 0 or i + 4 > n then
        past(what or "an [int]")
    end
    return bor(lshift(p[i], 24), lshift(p[i + 1], 16), lshift(p[i + 2], 8),
               p[i + 3])
end

-- len bytes at p[i] as a Lua string
local function bytes(p, i, n, len, what)
    if len < 0 or i < 0 or i + len > n then
        past(what or "a string")
    end
    return ffi_string(p + i, len)
end

-- a [string]: the string and the offset after it
local function cql_string(p, i, n)
    local len = u16(p, i, n, "a [string]")
    return bytes(p, i + 2, n, len, "a [string]"), i + 2 + len
end

-- Read a type [option] at p[i]: returns the type table and the next offset.
-- { name = "list", elem = T }, { name = "map", key = K, value = V },
-- { name = "udt", keyspace, type_name, fields = { { name, T }... } },
-- { name = "tuple", elems = { T... } },
-- { name = "vector", elem = T, dim = n } (a custom VectorType),
-- { name = "custom", class = "..." }, or { name = "int" } etc.
local SIMPLE = {}
for id, name in pairs(NAMES) do
    SIMPLE[id] = { name = name }
end

local function vector_of(class)
    -- org.apache.cassandra.db.marshal.VectorType(org....FloatType , 3)
    local inner, dim = class:match("VectorType%((.-)%s*,%s*(%d+)%)$")
    if not inner then
        return nil
    end
    local short = inner:match("([%a]+)Type$")
    local map = { Float = "float", Double = "double", Int32 = "int",
                  Long = "bigint", UTF8 = "varchar", Bytes = "blob",
                  Boolean = "boolean" }
    local elem = map[short] and { name = map[short] }
                 or { name = "custom", class = inner }
    return { name = "vector", elem = elem, dim = tonumber(dim) }
end

_M.MAX_DEPTH = 16                         -- nesting of collection types

local function read_type(p, i, n, depth)
    depth = (depth or 0) + 1
    if depth > _M.MAX_DEPTH then
        error("cql: types nested deeper than " .. _M.MAX_DEPTH, 0)
    end
    local id = u16(p, i, n, "a type")
    i = i + 2
    if id == 0x0000 then
        local class
        class, i = cql_string(p, i, n)
        return vector_of(class) or { name = "custom", class = class }, i
    elseif id == 0x0020 or id == 0x0022 then
        local elem
        elem, i = read_type(p, i, n, depth)
        return { name = NAMES[id], elem = elem }, i
    elseif id == 0x0021 then
        local k, v
        k, i = read_type(p, i, n, depth)
        v, i = read_type(p, i, n, depth)
        return { name = "map", key = k, value = v }, i
    elseif id == 0x0030 then
        local t = { name = "udt", fields = {} }
        t.keyspace, i = cql_string(p, i, n)
        t.type_name, i = cql_string(p, i, n)
        local count = u16(p, i, n, "a UDT")
        i = i + 2
        for f = 1, count do
            local fname, ft
            fname, i = cql_string(p, i, n)
            ft, i = read_type(p, i, n, depth)
            t.fields[f] = { fname, ft }
        end
        return t, i
    elseif id == 0x0031 then
        local t = { name = "tuple", elems = {} }
        local count = u16(p, i, n, "a tuple")
        i = i + 2
        for e = 1, count do
            t.elems[e], i = read_type(p, i, n, depth)
        end
        return t, i
    end
    local t = SIMPLE[id]
    if not t then
        error(fmt("cql: unknown type id 0x%04x", id), 0)
    end
    return t, i
end
_M.read_type = read_type

local function uuid(p, i)
    local h = {}
    for k = 0, 15 do
        h[k + 1] = fmt("%02x", p[i + k])
    end
    local s = table.concat(h)
    return s:sub(1, 8) .. "-" .. s:sub(9, 12) .. "-" .. s:sub(13, 16) .. "-"
           .. s:sub(17, 20) .. "-" .. s:sub(21)
end

local decode

-- fixed sizes of vector elements that have one
local FIXED = { float = 4, double = 8, int = 4, bigint = 8, boolean = 1 }

-- the size of every type that has one: a value of another size is refused
-- (an empty one, which Cassandra keeps for "no value", is nil)
local SIZE = { int = 4, bigint = 8, counter = 8, timestamp = 8, time = 8,
               smallint = 2, tinyint = 1, boolean = 1, double = 8, float = 4,
               uuid = 16, timeuuid = 16, date = 4 }

-- Decode the n bytes at p[i] (n >= 0, all within the body: the caller
-- checked) as a value of type t.  Nothing is read outside them.
decode = function(t, p, i, n)
    local name = t.name
    local size = SIZE[name]
    if size and n ~= size then
        if n == 0 then
            return nil
        end
        error(fmt("cql: %s of %d bytes", name, n), 0)
    end
    if name == "varchar" or name == "ascii" or name == "blob"
       or name == "varint" or name == "custom" or name == "duration"
    then
        return ffi_string(p + i, n)
    elseif name == "int" then
        return be32(p, i)                   -- bit ops give signed 32-bit
    elseif name == "bigint" or name == "counter" or name == "timestamp" then
        return be64(p, i)
    elseif name == "smallint" then
        local v = be16(p, i)
        return v >= 0x8000 and v - 0x10000 or v
    elseif name == "tinyint" then
        local v = p[i]
        return v >= 0x80 and v - 0x100 or v
    elseif name == "boolean" then
        return p[i] ~= 0
    elseif name == "double" then
        local u = ffi.new("uint64_t", 0)
        for k = 0, 7 do
            u = u * 256 + p[i + k]
        end
        dbl_box.u = u
        return tonumber(dbl_box.d)
    elseif name == "float" then
        flt_box.u = be32(p, i) % 2^32
        return tonumber(flt_box.f)
    elseif name == "uuid" or name == "timeuuid" then
        return uuid(p, i)
    elseif name == "date" then
        return be32(p, i) % 2^32 - 2^31     -- days since the epoch
    elseif name == "time" then
        return be64(p, i)                   -- nanoseconds since midnight
    elseif name == "decimal" then
        if n < 4 then
            error("cql: decimal of " .. n .. " bytes", 0)
        end
        return { scale = be32(p, i), unscaled = ffi_string(p + i + 4, n - 4) }
    elseif name == "inet" then
        if n == 4 then
            return fmt("%d.%d.%d.%d", p[i], p[i + 1], p[i + 2], p[i + 3])
        elseif n ~= 16 then
            error("cql: inet of " .. n .. " bytes", 0)
        end
        local g = {}
        for k = 0, 7 do
            g[k + 1] = fmt("%x", be16(p, i + 2 * k))
        end
        return table.concat(g, ":")
    elseif name == "list" or name == "set" then
        if n < 4 then
            error("cql: collection in " .. n .. " bytes", 0)
        end
        local out, count = {}, be32(p, i)
        -- every element takes at least its 4-byte length: a count beyond
        -- that is a lie, refused before any work
        if count < 0 or count > (n - 4) / 4 then
            error("cql: collection of " .. count .. " elements in " .. n
                  .. " bytes", 0)
        end
        local at, stop = i + 4, i + n
        for k = 1, count do
            local len = s32(p, at, stop, "a collection element")
            at = at + 4
            if len < 0 then
                out[k] = nil
            else
                if at + len > stop then
                    past("a collection element")
                end
                out[k] = decode(t.elem, p, at, len)
                at = at + len
            end
        end
        return out
    elseif name == "map" then
        if n < 4 then
            error("cql: map in " .. n .. " bytes", 0)
        end
        local out, count = {}, be32(p, i)
        if count < 0 or count > (n - 4) / 8 then
            error("cql: map of " .. count .. " entries in " .. n .. " bytes",
                  0)
        end
        local at, stop = i + 4, i + n
        for k = 1, count do
            local kl = s32(p, at, stop, "a map key")
            if kl < 0 or at + 4 + kl > stop then
                past("a map key")
            end
            local key = decode(t.key, p, at + 4, kl)
            at = at + 4 + kl
            local vl = s32(p, at, stop, "a map value")
            local val
            if vl >= 0 then
                if at + 4 + vl > stop then
                    past("a map value")
                end
                val = decode(t.value, p, at + 4, vl)
            end
            at = at + 4 + (vl >= 0 and vl or 0)
            out[k] = { key, val }
        end
        return out
    elseif name == "tuple" or name == "udt" then
        local out, at, stop = {}, i, i + n
        local parts = name == "tuple" and t.elems or t.fields
        for k = 1, #parts do
            if at >= stop then
                break                       -- trailing fields may be absent
            end
            local len = s32(p, at, stop, "a field")
            at = at + 4
            local ft = name == "tuple" and parts[k] or parts[k][2]
            local v = nil
            if len >= 0 then
                if at + len > stop then
                    past("a field")
                end
                v = decode(ft, p, at, len)
                at = at + len
            end
            if name == "tuple" then
                out[k] = v
            else
                out[parts[k][1]] = v
            end
        end
        return out
    elseif name == "vector" then
        local fixed = FIXED[t.elem.name]
        if fixed and fixed * t.dim ~= n then
            error("cql: vector of " .. t.dim .. " elements in " .. n
                  .. " bytes", 0)
        end
        local out, at, stop = {}, i, i + n
        for k = 1, t.dim do
            local len = fixed
            if not len then
                -- variable-size elements carry an unsigned vint length
                local b = u8(p, at, stop, "a vector element")
                len, at = b, at + 1
                if b >= 0x80 then
                    error("cql: long vector elements are not supported", 0)
                end
                if at + len > stop then
                    past("a vector element")
                end
            end
            out[k] = decode(t.elem, p, at, len)
            at = at + len
        end
        return out
    end
    error("cql: cannot decode type " .. tostring(name), 0)
end

-- Decode a [value] / [bytes] at p[i], within a body of n bytes, of type t:
-- value (nil for null, or the string "unset" for the v4+ not-set marker)
-- and the next offset.
function _M.value(t, p, i, n)
    local len = s32(p, i, n, "a [value]")
    if len < 0 then
        -- [bytes]: any negative length is null; [value]: -2 is "not set"
        return len == -2 and "unset" or nil, i + 4
    end
    if i + 4 + len > n then
        past("a [value]")
    end
    return decode(t, p, i + 4, len), i + 4 + len
end

-- Rows metadata (a RESULT Rows, or the result part of a RESULT Prepared) at
-- p[i], within a body of n bytes: { columns = { { name, keyspace, table,
-- type } }, count = columns, paging_state = bytes or nil, no_metadata =
-- bool }, and the next offset.
function _M.read_rows_metadata(p, i, n)
    local flags = s32(p, i, n, "rows metadata")
    local count = s32(p, i + 4, n, "rows metadata")
    i = i + 8
    local meta = { columns = {}, count = count }
    if band(flags, 0x0002) ~= 0 then            -- Has_more_pages
        local len = s32(p, i, n, "a paging state")
        if len >= 0 then
            meta.paging_state = bytes(p, i + 4, n, len, "a paging state")
            i = i + 4 + len
        else
            i = i + 4
        end
    end
    if band(flags, 0x0008) ~= 0 then            -- Metadata_changed (v5)
        i = i + 2 + u16(p, i, n, "a result metadata id")
        if i > n then
            past("a result metadata id")
        end
    end
    if band(flags, 0x0004) ~= 0 then            -- No_metadata
        meta.no_metadata = true
        return meta, i
    end
    local gks, gtable
    if band(flags, 0x0001) ~= 0 then
        gks, i = cql_string(p, i, n)
        gtable, i = cql_string(p, i, n)
    end
    -- (each column takes bytes: a lying count stops at the body's end)
    for k = 1, count do
        local col = { keyspace = gks, table = gtable }
        if not gks then
            col.keyspace, i = cql_string(p, i, n)
            col.table, i = cql_string(p, i, n)
        end
        col.name, i = cql_string(p, i, n)
        col.type, i = read_type(p, i, n)
        meta.columns[k] = col
    end
    return meta, i
end

_M.decode = decode
_M.be16, _M.be32 = be16, be32
_M.u8, _M.u16, _M.s32, _M.bytes = u8, u16, s32, bytes
_M.cql_string, _M.past = cql_string, past

return _M
