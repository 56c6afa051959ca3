-- Change records: what the kafka transform sends for one acknowledged
-- write, built from the request's m:query_info() (docs/transforms/
-- kafka.md, "Records").  Each record is { topic, key, value }: the topic
-- (the fixed one, or prefix .. namespace), the Kafka message key (the
-- partition key, so one partition's changes keep their order) and the JSON
-- object.  Pure functions of their arguments: the unit spec drives them
-- with hand-made query_info tables.
local json = require "shotover.kafka.json"

local encode, object, array, raw = json.encode, json.object, json.array,
                                   json.raw

local _M = { _VERSION = "0.1.0" }

-- the fields of a record, in this order (the others sorted after)
local CQL_ORDER = { "source", "keyspace", "table", "op", "key",
                    "clustering", "values", "ttl", "timestamp",
                    "consistency", "lwt", "complete" }
local REDIS_ORDER = { "source", "db", "op", "command", "key", "keys",
                      "values", "complete" }

-- CQL statements that change rows, by op
local CQL_OPS = { insert = true, update = true, delete = true,
                  truncate = true }

-- Redis: what the write does to its key(s)
local REDIS_EXPIRE = { EXPIRE = true, PEXPIRE = true, EXPIREAT = true,
                       PEXPIREAT = true, PERSIST = true }
local REDIS_TRUNCATE = { FLUSHDB = true, FLUSHALL = true }

-- A CQL map of columns to values with each blob column's value as its
-- hex, whatever bytes it holds (text that happens to be UTF-8 too): the
-- column's type says what it is, not its bytes.
local function typed(map, types)
    if map == nil or types == nil then
        return map
    end
    local out
    for col, v in pairs(map) do
        local t = types[col]
        if type(v) == "string" and t and t.name == "blob" then
            if out == nil then
                out = {}
                for k, x in pairs(map) do
                    out[k] = x
                end
            end
            out[col] = raw(json.bytes(v))
        end
    end
    return out or map
end

local function topic_for(opts, namespace)
    return opts.topic or (opts.topic_prefix .. namespace)
end

-- One CQL statement (not a BATCH) as a record, or nil when it changes no
-- rows.  `parent`: the BATCH it is in, for what a child does not carry.
local function cql_record(qi, opts, parent)
    if not CQL_OPS[qi.op] or qi.prepare then
        return nil                      -- a PREPARE writes nothing yet
    end
    local keyspace = qi.keyspace or (parent and parent.keyspace)
    local namespace = qi.namespace
                      or (keyspace and qi.table and keyspace .. "." .. qi.table)
                      or "unknown"
    local types = qi.column_types
    local key = typed(qi.key, types)
    local rec = {
        source = "cassandra", keyspace = keyspace, table = qi.table,
        op = qi.op, values = typed(qi.values, types), ttl = qi.ttl,
        timestamp = qi.timestamp or (parent and parent.timestamp),
        consistency = qi.consistency or (parent and parent.consistency),
        lwt = qi.lwt and true or false,
    }
    if qi.complete == false then
        rec.complete = false
    end
    -- the key columns in the table's order
    if key then
        rec.key = raw(object(key, qi.key_columns))
    end
    if qi.clustering and next(qi.clustering) ~= nil then
        rec.clustering = raw(object(typed(qi.clustering, types),
                                    qi.clustering_columns))
    end
    local kafka_key = namespace
    if key and qi.key_columns then
        local vals = {}
        for i, c in ipairs(qi.key_columns) do
            vals[i] = key[c]
        end
        -- the partition key's values as a JSON array, in key order
        kafka_key = encode(array(vals))
    end
    return {
        topic = topic_for(opts, namespace),
        key = kafka_key,
        value = object(rec, CQL_ORDER),
    }
end

-- One Redis write as a record, or nil for a request that writes nothing.
local function redis_record(qi, opts)
    if qi.kind ~= "write" and qi.kind ~= "delete" then
        return nil
    end
    local cmd = qi.op
    local op = qi.kind == "delete" and "delete"
               or REDIS_EXPIRE[cmd] and "expire"
               or REDIS_TRUNCATE[cmd] and "truncate"
               or "update"
    local rec = {
        source = "redis", db = qi.db, op = op, command = cmd,
        values = array(qi.values),
    }
    if qi.complete == false then
        rec.complete = false
    end
    local keys = qi.keys or {}
    if #keys == 1 then
        rec.key = keys[1]
    elseif #keys > 1 then
        rec.keys = array(keys)
    end
    return {
        topic = topic_for(opts, qi.namespace),
        -- the first key (a command on several keys keeps the order of the
        -- first); none (FLUSHDB): the database
        key = keys[1] or qi.namespace,
        value = object(rec, REDIS_ORDER),
    }
end

-- The records of one request: a list (empty when it writes nothing).
-- opts: { topic = fixed or nil, topic_prefix = "..." }.
function _M.build(qi, opts)
    local out = {}
    if qi == nil then
        return out
    end
    if qi.protocol == "redis" then
        out[1] = redis_record(qi, opts)
    elseif qi.kind == "batch" or qi.op == "batch" then
        for _, child in ipairs(qi.statements or {}) do
            out[#out + 1] = cql_record(child, opts, qi)
        end
    else
        out[1] = cql_record(qi, opts)
    end
    return out
end


return _M
