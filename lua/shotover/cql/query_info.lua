-- m:query_info(chain) for CQL requests: the protocol-independent view of a
-- QUERY, EXECUTE, BATCH or PREPARE (docs/lua-api.md, "m:query_info()").
--
-- Values come as the node will read them.  A bound value is taken as its
-- bytes; a literal is serialized for its column's type (from
-- shotover.cql.schema), so `k = 5` and `k = ?` bound to 5 give the same
-- bytes, and both are decoded from those bytes into the same Lua value.
-- The partition key's bytes, each with its length, make `key_bytes`: equal
-- exactly when the typed values are (no two values collide).
local bit = require "bit"
local ffi = require "ffi"
local schema = require "shotover.cql.schema"
local types = require "shotover.cql.types"
local reply = require "shotover.cql.reply"
local C = require("shotover.ffi").C

local band, rshift = bit.band, bit.rshift
local char, concat = string.char, table.concat
local floor = math.floor
local cast = ffi.cast
local u8p = ffi.typeof("const uint8_t *")

local OP_QUERY, OP_EXECUTE = C.SH_CQL_QUERY, C.SH_CQL_EXECUTE
local OP_BATCH, OP_PREPARE = C.SH_CQL_BATCH, C.SH_CQL_PREPARE

local _M = { _VERSION = "0.1.0" }

local function be32(n)
    return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                band(rshift(n, 8), 255), band(n, 255))
end

local function is_int(v)
    return type(v) == "number" and v == floor(v) and v > -2^53 and v < 2^53
end

-- the minimal two's complement big-endian bytes of integer v (varint)
local function varint(v)
    local out = {}
    repeat
        local b = v % 256
        out[#out + 1] = b
        v = (v - b) / 256
    until (v == 0 and b < 0x80) or (v == -1 and b >= 0x80)
    local s = {}
    for i = #out, 1, -1 do
        s[#s + 1] = char(out[i])
    end
    return concat(s)
end

-- days since the epoch of a proleptic Gregorian date
local function days(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = floor(y / 400)
    local yoe = y - era * 400
    local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local function uuid_bytes(s)
    local hex = s:gsub("-", "")
    if #hex ~= 32 or hex:find("[^%x]") then
        return nil
    end
    return (hex:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

local function cell(ty, v)
    return reply.cell(ty, v):sub(5)
end

-- The bytes a literal stands for in a column of type t (a type table), or
-- nil when shotover cannot serialize it (then the key is not known).
local function literal_bytes(t, lit)
    local name, lt, v = t.name, lit.type, lit.value
    if t.opaque then
        return nil
    elseif lt == "null" then
        return nil
    elseif name == "varchar" or name == "ascii" then
        return lt == "string" and v or nil
    elseif name == "blob" then
        return lt == "blob" and v or nil
    elseif name == "int" or name == "smallint" or name == "tinyint" then
        local lim = name == "int" and 2^31 or name == "smallint" and 2^15
                    or 2^7
        if lt == "integer" and is_int(v) and v >= -lim and v < lim then
            return cell(name, v)
        end
    elseif name == "bigint" or name == "counter" or name == "timestamp"
        or name == "time" then
        if lt == "integer" and is_int(v) then
            return cell("bigint", v)
        end
    elseif name == "varint" then
        return lt == "integer" and is_int(v) and varint(v) or nil
    elseif name == "boolean" then
        return lt == "boolean" and char(v and 1 or 0) or nil
    elseif name == "double" or name == "float" then
        if lt == "integer" or lt == "float" then
            return cell(name, v)
        end
    elseif name == "uuid" or name == "timeuuid" then
        return (lt == "uuid" or lt == "string") and uuid_bytes(v) or nil
    elseif name == "date" then
        if lt == "string" then
            local y, m, d = v:match("^(%-?%d+)%-(%d%d)%-(%d%d)$")
            if y then
                return be32(days(tonumber(y), tonumber(m), tonumber(d))
                            + 2^31)
            end
        elseif lt == "integer" and is_int(v) and v >= 0 and v < 2^32 then
            return be32(v)
        end
    elseif name == "inet" then
        local a, b, c, d = (lt == "string" and v or ""):match(
            "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
        if a then
            return char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
        end
    end
    return nil
end

_M.literal_bytes = literal_bytes

-- A literal as a Lua value when its column's type cannot take it as bytes
-- (a collection, a UDT): the same shapes decoded values have.
local function literal_value(lit)
    local lt = lit.type
    if lt == "list" or lt == "set" or lt == "tuple" then
        local out = {}
        for i, x in ipairs(lit.items) do
            out[i] = literal_value(x)
        end
        return out
    elseif lt == "map" then
        local out = {}
        for i, e in ipairs(lit.entries) do
            out[i] = { literal_value(e[1] or e.key), literal_value(e[2]
                                                                 or e.value) }
        end
        return out
    elseif lt == "udt" then
        local out = {}
        for _, f in ipairs(lit.fields) do
            out[f.name or f[1]] = literal_value(f.value or f[2])
        end
        return out
    elseif lt == "null" then
        return nil
    end
    return lit.value ~= nil and lit.value or lit.text
end

local function decode(t, b)
    local ok, v = pcall(types.decode, t, cast(u8p, b), 0, #b)
    if not ok then
        return b
    end
    return v
end

-- Resolve term `node` for a column of type t (nil: unknown column) against
-- the bound values `raw` (bytes by position and by name): its bytes (nil
-- when they cannot be known, or for a null), its Lua value, and whether it
-- is known at all.
local BLOB = { name = "blob" }
local function resolve(node, t, raw)
    if node == nil then
        return nil, nil, false
    end
    if node.marker then
        if raw == nil then
            return nil, nil, false
        end
        local b = raw[node.marker]
        if node.name and raw[node.name] ~= nil then
            b = raw[node.name]
        end
        if b == nil then
            return nil, nil, true                   -- a bound null
        elseif b == "unset" then
            return nil, "unset", true
        end
        return b, decode(t or BLOB, b), true
    end
    if node.type == "null" then
        return nil, nil, true
    end
    if t then
        local b = literal_bytes(t, node)
        if b then
            return b, decode(t, b), true
        end
    end
    return nil, literal_value(node), node.type ~= nil
end

_M.decode = decode

local function number_of(node, raw)
    local b, v, known = resolve(node, { name = "bigint" }, raw)
    if known and b and #b == 4 then
        v = decode({ name = "int" }, b)
    end
    if type(v) == "cdata" and v > -2^53 and v < 2^53 then
        v = tonumber(v)
    end
    return v
end

local function consistency_of(m)
    local ok, cl = pcall(m.consistency, m)
    return ok and cl or nil
end

-- The partition key and clustering columns restricted by equality in
-- `where`, into qi; other restrictions into qi.restrictions as well.
local function key_from_where(qi, tab, where, raw)
    local restrictions = {}
    for i, rel in ipairs(where or {}) do
        local col = rel.column
        local t = col and tab.types[col]
        local r = { column = col, op = rel.op }
        if rel.token or rel.columns or rel.key or rel.field or not t then
            r.known = false
        elseif rel.values then
            r.bytes, r.value, r.known = {}, {}, true
            for k, node in ipairs(rel.values) do
                local b, v, known = resolve(node, t, raw)
                r.bytes[k], r.value[k] = b, v
                r.known = r.known and known and b ~= nil
            end
        else
            local b, v, known = resolve(rel.value, t, raw)
            r.bytes, r.value, r.known = b, v, known and b ~= nil
        end
        restrictions[i] = r
        local kind = t and tab.kinds[col]
        if r.known and rel.op == "=" and not rel.values then
            if kind == "partition_key" then
                qi.key[col], qi.key_parts[col] = r.value, r.bytes
            elseif kind == "clustering" then
                qi.clustering[col] = r.value
            end
        elseif kind == "clustering" then
            qi.range = true
        elseif kind == "partition_key" then
            qi.multi_partition = true
        end
    end
    qi.restrictions = restrictions
end

-- Once the key's parts are in: key_bytes when the whole partition key is
-- known, complete = false otherwise.
local function finish_key(qi, tab)
    local parts = {}
    for i, col in ipairs(tab.partition) do
        local b = qi.key_parts[col]
        if b == nil then
            qi.key_bytes = nil
            qi.complete = false
            qi.incomplete = qi.incomplete or "partition key column " .. col
                                            .. " not given by equality"
            return
        end
        parts[i] = be32(#b) .. b
    end
    qi.key_bytes = concat(parts)
end

local function base(kind, op, ast, ks)
    return { protocol = "cassandra", kind = kind, op = op,
             keyspace = ks, table = ast and (ast.table or ast.name),
             namespace = ks and ast and (ast.table or ast.name)
                         and ks .. "." .. (ast.table or ast.name) or ks,
             complete = true }
end

local function with_table(qi, ks, ast)
    local tab = schema.get(ks, ast.table)
    if not tab then
        qi.complete = false
        qi.incomplete = tab == false and "no such table"
                        or "table schema not loaded"
        return nil
    end
    qi.key_columns, qi.clustering_columns = tab.partition, tab.clustering
    qi.column_types = tab.types
    qi.key, qi.key_parts, qi.clustering = {}, {}, {}
    return tab
end

local function using(qi, u, raw)
    if u then
        qi.ttl = u.ttl and number_of(u.ttl, raw) or nil
        qi.timestamp = u.timestamp and number_of(u.timestamp, raw) or nil
    end
end

local statement_info

local function select_info(ast, ks, raw)
    local qi = base("read", "select", ast, ks)
    local tab = with_table(qi, ks, ast)
    qi.filtering = ast.allow_filtering or nil
    if tab then
        key_from_where(qi, tab, ast.where, raw)
        finish_key(qi, tab)
        qi.limit = ast.limit and number_of(ast.limit, raw) or nil
        qi.per_partition_limit = ast.per_partition_limit
                                 and number_of(ast.per_partition_limit, raw)
                                 or nil
    end
    return qi
end

local function insert_info(ast, ks, raw)
    local qi = base("write", "insert", ast, ks)
    qi.lwt = ast.if_not_exists or false
    using(qi, ast.using, raw)
    local tab = with_table(qi, ks, ast)
    if not tab then
        return qi
    end
    qi.values = {}
    if ast.json then
        qi.complete, qi.incomplete = false, "INSERT JSON"
        return qi
    end
    for i, col in ipairs(ast.columns or {}) do
        local t = tab.types[col]
        local b, v, known = resolve(ast.values[i], t, raw)
        local kind = tab.kinds[col]
        if kind == "partition_key" then
            qi.key[col], qi.key_parts[col] = v, known and b or nil
        elseif kind == "clustering" then
            qi.clustering[col] = v
        else
            qi.values[col] = v
        end
    end
    finish_key(qi, tab)
    return qi
end

-- The part UPDATE and DELETE share: LWT, USING, and the key from WHERE.
local function where_keyed(kind, ast, ks, raw)
    local qi = base(kind, ast.kind, ast, ks)
    qi.lwt = (ast.if_exists or ast.if_conditions ~= nil) or false
    using(qi, ast.using, raw)
    local tab = with_table(qi, ks, ast)
    if tab then
        key_from_where(qi, tab, ast.where, raw)
        finish_key(qi, tab)
    end
    return qi, tab
end

local function update_info(ast, ks, raw)
    local qi, tab = where_keyed("write", ast, ks, raw)
    if not tab then
        return qi
    end
    qi.values = {}
    for _, a in ipairs(ast.assignments or {}) do
        local t = tab.types[a.column]
        if a.op == "=" and a.key == nil and a.field == nil then
            local _, v = resolve(a.value, t, raw)
            qi.values[a.column] = v
        else
            -- counters, collection appends, an element or field: the
            -- change, not the column's new value
            local _, v = resolve(a.value, nil, raw)
            local _, k = resolve(a.key, nil, raw)
            qi.values[a.column] = { op = a.op, value = v, key = k,
                                   field = a.field }
        end
    end
    return qi
end

local function delete_info(ast, ks, raw)
    local qi, tab = where_keyed("delete", ast, ks, raw)
    if tab and ast.columns and #ast.columns > 0 then
        qi.columns = ast.columns                -- only these are deleted
    end
    return qi
end

local function add_child(qi, i, child)
    qi.statements[i] = child
    if not child.complete then
        qi.complete = false
    end
end

local function batch_info(ast, ks, raw)
    local qi = base("batch", "batch", ast, ks)
    qi.batch_type = ast.batch_type
    qi.statements = {}
    using(qi, ast.using, raw)
    for i, s in ipairs(ast.statements or {}) do
        local child = statement_info(s, s.keyspace or ks, raw)
        child.ttl = child.ttl or qi.ttl
        child.timestamp = child.timestamp or qi.timestamp
        add_child(qi, i, child)
    end
    return qi
end

local BY_KIND = { select = select_info, insert = insert_info,
                  update = update_info, delete = delete_info,
                  batch = batch_info }

statement_info = function(ast, ks, raw)
    local f = BY_KIND[ast.kind]
    if f then
        return f(ast, ks, raw)
    end
    if ast.kind == "truncate" then
        return base("truncate", "truncate", ast, ast.keyspace or ks)
    end
    local qi = base(ast.class or "other", ast.kind, ast,
                    ast.keyspace or ks)
    if ast.kind == "use" then
        qi.keyspace, qi.namespace = ast.keyspace, ast.keyspace
    end
    return qi
end

-- The values a QUERY or EXECUTE binds, as bytes, by position and name.
local function raw_values(m)
    local ok, vals = pcall(m.values, m, true)
    return ok and vals or nil
end

function _M.info(m, chain)
    if band(m.data[0], 0x80) ~= 0 then
        return nil                                  -- a response
    end
    local op = m.rtype
    local conn = chain and chain.conn
    if op == OP_QUERY or op == OP_EXECUTE or op == OP_PREPARE then
        local ast, ks = m:statement(conn)
        if not ast then
            return { protocol = "cassandra", kind = "other",
                     op = op == OP_EXECUTE and "execute" or "query",
                     complete = false, incomplete = ks }
        end
        local raw = op ~= OP_PREPARE and raw_values(m) or nil
        local qi = statement_info(ast, ks, raw)
        if op == OP_PREPARE then
            -- it runs nothing: kind "prepare", op the statement's
            qi.kind, qi.prepare = "prepare", true
            qi.key, qi.key_parts, qi.key_bytes, qi.values = nil, nil, nil, nil
            qi.statements = nil
        else
            qi.consistency = consistency_of(m)
            for _, child in ipairs(qi.statements or {}) do
                child.consistency = qi.consistency
            end
            if raw == nil then
                qi.complete = false
            end
        end
        return qi
    elseif op == OP_BATCH then
        local ok, children = pcall(m.batch_children, m, true)
        local qi = { protocol = "cassandra", kind = "batch", op = "batch",
                     statements = {}, complete = ok and children ~= nil,
                     consistency = ok and children and children.consistency
                                   or nil }
        if not qi.complete then
            return qi
        end
        qi.batch_type = children.type
        local parse = require("shotover.cql.parser").cached
        for i, ch in ipairs(children) do
            local ast = ch.query and parse(ch.query)
            local child
            if ast then
                child = statement_info(ast, ast.keyspace
                                       or (ch.id and ch.keyspace)
                                       or (conn and conn.keyspace),
                                       ch.values)
            else
                child = { protocol = "cassandra", kind = "other",
                          op = "unknown", complete = false,
                          incomplete = "statement not known" }
            end
            child.consistency = qi.consistency
            add_child(qi, i, child)
        end
        return qi
    end
    return nil
end

return _M
