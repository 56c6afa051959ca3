-- What a worker knows of the tables its clients use: each table's partition
-- key and clustering columns, in order, and every column's type, read from
-- the node's own system_schema.columns.  m:query_info() needs it to tell a
-- partition key from a clustering column in `INSERT ... (k, c, v)` and to
-- give a literal its column's type (so `k = 5` and `k = ?` bound to 5 are
-- the same key).
--
-- Loading is the transform's business, not query_info's (which never
-- waits): `schema.prepare(chain, batch)` asks the rest of the chain for the
-- tables the batch names (QUERY, EXECUTE, BATCH, PREPARE: protect checks
-- a statement's types when it is prepared) that this worker does not know
-- yet, one query per
-- table, on the client's own session (so the node's authorisation applies)
-- and on the stream id of the batch's first request (not in flight: the
-- request is sent after it, the way the cassandra sink replays USE).
-- A RESULT or EVENT Schema_change that names a table forgets it
-- (`schema.observe`), so ALTER TABLE is seen at the next use.
local message = require "shotover.message"
local request = require "shotover.cql.request"
local C = require("shotover.ffi").C

local band = require("bit").band
local constant_batch = message.constant_batch

local _M = { _VERSION = "0.1.0", MAX_TABLES = 4096 }

local OP_QUERY, OP_EXECUTE = C.SH_CQL_QUERY, C.SH_CQL_EXECUTE
local OP_BATCH, OP_RESULT = C.SH_CQL_BATCH, C.SH_CQL_RESULT
local OP_EVENT, OP_PREPARE = C.SH_CQL_EVENT, C.SH_CQL_PREPARE

-- "ks.t" -> { keyspace, table, partition = { names }, clustering = { names },
-- types = { name -> type table as shotover.cql.types reads it },
-- kinds = { name -> "partition_key" | "clustering" | "regular" | "static" } }
-- or false: no such table (the node said so).
local tables, ntables = {}, 0

-- Moves on whenever a table is learnt or forgotten: what was worked out
-- from schemas (redis_cache's plans) is good while it stays the same.
_M.generation = 0

-- system_schema's type text to the type tables of shotover.cql.types: the
-- native types by name; collections, tuples, UDTs and frozen<...> as
-- "blob" (their bytes are kept as they are, and a literal of such a type
-- cannot be keyed: query_info then says `complete = false`).
local NATIVE = {}
for _, n in ipairs({ "ascii", "bigint", "blob", "boolean", "counter", "date",
                     "decimal", "double", "duration", "float", "inet", "int",
                     "smallint", "text", "time", "timestamp", "timeuuid",
                     "tinyint", "uuid", "varint" }) do
    NATIVE[n] = { name = n == "text" and "varchar" or n }
end
local OPAQUE = { name = "blob", opaque = true }

function _M.type_of(text)
    return NATIVE[text] or OPAQUE
end

local function name_of(keyspace, table)
    return keyspace .. "." .. table
end

function _M.get(keyspace, table)
    if keyspace == nil or table == nil then
        return nil
    end
    return tables[name_of(keyspace, table)]
end

-- Learn a table from the rows of system_schema.columns (column_name, kind,
-- position, type).
function _M.learn(keyspace, table, rows)
    local t = { keyspace = keyspace, table = table, partition = {},
                clustering = {}, types = {}, kinds = {} }
    for _, r in ipairs(rows) do
        local name = r.column_name
        t.types[name] = _M.type_of(r.type)
        t.kinds[name] = r.kind
        if r.kind == "partition_key" then
            t.partition[r.position + 1] = name
        elseif r.kind == "clustering" then
            t.clustering[r.position + 1] = name
        end
    end
    if #t.partition == 0 then
        t = false                               -- no such table
    end
    if ntables >= _M.MAX_TABLES then
        tables, ntables = {}, 0
    end
    if tables[name_of(keyspace, table)] == nil then
        ntables = ntables + 1
    end
    tables[name_of(keyspace, table)] = t
    _M.generation = _M.generation + 1
    return t
end

function _M.forget(keyspace, table)
    _M.generation = _M.generation + 1
    if table == nil then
        local prefix = keyspace .. "."
        for k in pairs(tables) do
            if k:sub(1, #prefix) == prefix then
                tables[k] = nil
            end
        end
        return
    end
    tables[name_of(keyspace, table)] = nil
end

-- The tables a statement names: ks.t of the statement, or of each child.
local function wanted(ast, ks, out)
    if ast.kind == "batch" then
        for _, s in ipairs(ast.statements or {}) do
            wanted(s, s.keyspace or ks, out)
        end
    elseif ast.table and ks and (ast.kind == "select" or ast.kind == "insert"
            or ast.kind == "update" or ast.kind == "delete") then
        out[#out + 1] = { ks, ast.table }
    end
end

local function statements_of(m, conn, out)
    local op = m.rtype
    if op == OP_QUERY or op == OP_EXECUTE or op == OP_PREPARE then
        local ast, ks = m:statement(conn)
        if ast then
            wanted(ast, ks, out)
        end
    elseif op == OP_BATCH then
        local ok, children = pcall(m.batch_children, m)
        if not ok or not children then
            return
        end
        local parse = require("shotover.cql.parser").cached
        for _, ch in ipairs(children) do
            local ast = ch.query and parse(ch.query)
            if ast then
                wanted(ast, ast.keyspace or conn.keyspace, out)
            end
        end
    end
end

local QUERY = "SELECT column_name, kind, position, type FROM "
              .. "system_schema.columns WHERE keyspace_name = ? "
              .. "AND table_name = ?"

local function load(chain, first, keyspace, table, send)
    local q = request.query(QUERY, { keyspace, table },
                            { version = band(first.data[0], 0x7f),
                              stream = first.argc, consistency = "ONE" })
    local b = constant_batch(1, q)
    local resp = send and send(b) or chain:next(b)
    local r = resp and resp[1]
    if r == nil or r.rtype ~= OP_RESULT then
        return nil
    end
    local ok, rows = pcall(r.rows, r)
    if not ok or not rows then
        return nil
    end
    return _M.learn(keyspace, table, rows)
end

-- Load, through the rest of the chain, the schema of every table `batch`
-- names that this worker does not know.  A table that cannot be loaded now
-- (the node is down, the query is refused) stays unknown: query_info then
-- gives no key for it, and the next batch tries again.  `only`: a list of
-- the batch's indexes to look at (the others need nothing).  `send`: a
-- sink's own way to the node, send(batch) -> replies, in place of the
-- rest of the chain.
local want = {}
function _M.prepare(chain, batch, only, send)
    local n = 0
    local conn = chain.conn
    for k = 1, only and #only or batch.n do
        local m = batch[only and only[k] or k]
        local op = m.rtype
        if op == OP_QUERY or op == OP_EXECUTE or op == OP_BATCH
           or op == OP_PREPARE then
            n = n + 1
            want[n] = m
        end
    end
    if n == 0 or chain.c == nil then
        for i = 1, n do
            want[i] = nil
        end
        return
    end
    local need = {}
    for i = 1, n do
        statements_of(want[i], conn, need)
        want[i] = nil
    end
    local seen = {}
    for _, kt in ipairs(need) do
        local name = name_of(kt[1], kt[2])
        if tables[name] == nil and not seen[name] then
            seen[name] = true
            load(chain, batch[1], kt[1], kt[2], send)
        end
    end
end

-- Forget what a reply or event says has changed (`only`: of these
-- indexes of resp).
function _M.observe(resp, only)
    for k = 1, only and #only or resp.n do
        local r = resp[only and only[k] or k]
        if r ~= nil and (r.rtype == OP_RESULT or r.rtype == OP_EVENT) then
            local ok, sc = pcall(r.rtype == OP_RESULT and r.schema_change
                                 or r.event, r)
            if ok and sc and sc.keyspace and (sc.target == "TABLE"
                    or sc.target == "KEYSPACE" or sc.target == nil) then
                _M.forget(sc.keyspace, sc.target == "TABLE" and sc.name
                          or nil)
            end
        end
    end
end

return _M
