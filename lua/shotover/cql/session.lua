-- What a CQL session learns from its own traffic: the keyspace set by USE
-- (a RESULT Set_keyspace), and prepared statements, remembered by id from a
-- PREPARE and its RESULT Prepared, so an EXECUTE knows its statement.
-- Prepared ids belong to the node, not to a connection (a driver prepares
-- on one connection and executes on any, and its connections land on any
-- worker), so each worker keeps what it learned, and every worker's
-- learning is also put in a shared dict: an EXECUTE on a worker that never
-- saw its PREPARE is still known (its statement, bound types, partition
-- key), so a router or filter treats it as on the worker that prepared it.
local bit = require "bit"
local ffi = require "ffi"
local types = require "shotover.cql.types"
local shdict = require "shotover.shdict"
local C = require("shotover.ffi").C

local band, rshift = bit.band, bit.rshift
local ffi_string = ffi.string
local char, byte, sub = string.char, string.byte, string.sub
local cast = ffi.cast
local u8p = ffi.typeof("const uint8_t *")

local _M = { _VERSION = "0.1.0", MAX_PREPARED = 20000,
             -- why m:statement() has none for an EXECUTE of an id no
             -- worker of this shotover saw prepared
             UNKNOWN = "prepared statement not seen by this worker" }

local PROTO_CQL = C.SH_PROTO_CQL
local OP_RESULT, OP_PREPARE = C.SH_CQL_RESULT, C.SH_CQL_PREPARE
local OP_EXECUTE = C.SH_CQL_EXECUTE
local FLAG_TRACING, FLAG_PAYLOAD = C.SH_CQL_FLAG_TRACING, C.SH_CQL_FLAG_PAYLOAD
local FLAG_WARNING = C.SH_CQL_FLAG_WARNING
local KIND_SET_KEYSPACE, KIND_PREPARED = 3, 4

local prepared = {}                      -- id (string) -> { query, keyspace }
local nprepared = 0
local shared                             -- all workers' ids: see below

-- reads of a body, each checked against its end n (shotover.cql.types)
local be32 = types.be32
local u16, s32 = types.u16, types.s32
local cql_string = types.cql_string

-- Where a response's message starts in its body of n bytes: after the
-- tracing id (flag 0x02), the warnings (0x08) and the custom payload
-- (0x04).
local function response_start(f, p, n)
    local flags, i = f.data[1], 0
    if band(flags, FLAG_TRACING) ~= 0 then
        i = i + 16
    end
    if band(flags, FLAG_WARNING) ~= 0 then
        local count = u16(p, i, n, "warnings")
        i = i + 2
        for _ = 1, count do
            i = i + 2 + u16(p, i, n, "warnings")
        end
    end
    if band(flags, FLAG_PAYLOAD) ~= 0 then
        local count = u16(p, i, n, "a custom payload")
        i = i + 2
        for _ = 1, count do
            i = i + 2 + u16(p, i, n, "a custom payload")
            local vl = s32(p, i, n, "a custom payload")
            i = i + 4 + (vl > 0 and vl or 0)
        end
    end
    if i > n then
        types.past("a response's header fields")
    end
    return i
end

_M.response_start = response_start

-- The dict every worker shares: id -> a record of the PREPARE's query and
-- keyspace and the RESULT Prepared's metadata bytes (false when it cannot
-- be had, e.g. no shared dicts in this process).
local function shared_dict()
    if shared == nil then
        shared = shdict.open("shotover.cql.prepared", _M.MAX_PREPARED)
                 or false
    end
    return shared
end

local function be32s(n)
    return char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
                band(rshift(n, 8), 0xff), band(n, 0xff))
end

-- record: version (1 byte), keyspace (4-byte length, "" for none), query
-- (4-byte length), then the metadata as the node sent it
local function encode(version, keyspace, query, meta)
    keyspace = keyspace or ""
    return char(version) .. be32s(#keyspace) .. keyspace .. be32s(#query)
           .. query .. meta
end

local function entry(version, query, keyspace, p, i, n)
    local ok, meta = pcall(_M.prepared_metadata, version, p, i, n)
    return { query = query, keyspace = keyspace,
             columns = ok and meta.columns or nil,
             pk = ok and meta.pk or nil,
             result_columns = ok and meta.result_columns or nil }
end

local function remember(id, st)
    if prepared[id] == nil then
        if nprepared >= _M.MAX_PREPARED then
            prepared, nprepared = {}, 0
        end
        nprepared = nprepared + 1
    end
    prepared[id] = st
end

-- What another worker learned of id, or nil.
local function from_shared(id)
    local d = shared_dict()
    local rec = d and d:get(id)
    local n = rec and #rec or 0
    if n < 9 then
        return nil
    end
    local p = cast(u8p, rec)
    local klen = be32(p, 1)
    if klen < 0 or 9 + klen > n then
        return nil
    end
    local qlen = be32(p, 5 + klen)
    local at = 9 + klen + qlen
    if qlen < 0 or at > n then
        return nil
    end
    local keyspace = klen > 0 and sub(rec, 6, 5 + klen) or nil
    local query = sub(rec, 10 + klen, 9 + klen + qlen)
    local st = entry(byte(rec, 1), query, keyspace, p, at, n)
    -- p points into rec: rec is used after the parse so that the GC keeps
    -- it until then, whatever the JIT makes of the locals above
    if #rec < at then
        return nil
    end
    remember(id, st)
    return st
end

-- What one RESULT teaches; raises when its body does not read.
local function learn_one(state, req, rs)
    local p, n = rs:body_view()
    local at = response_start(rs, p, n)
    local kind = s32(p, at, n, "a result kind")
    if kind == KIND_SET_KEYSPACE then
        state.keyspace = cql_string(p, at + 4, n)
    elseif kind == KIND_PREPARED and req.rtype == OP_PREPARE then
        local id, from = cql_string(p, at + 4, n)  -- [short bytes]
        local version = band(rs.data[0], 0x7f)
        local query = req:query()
        remember(id, entry(version, query, state.keyspace, p, from, n))
        local d = shared_dict()
        if d then
            d:set(id, encode(version, state.keyspace, query,
                             ffi_string(p + from, n - from)))
        end
    end
end

-- After a batch: learn from each RESULT answering a request.  `state` is
-- the connection's session table (chain.conn).  A RESULT that does not
-- read teaches nothing (its client gets it as the node sent it).
function _M.learn(state, req, resp)
    for i = 1, resp.n do
        local rs = resp[i]
        if rs ~= nil and rs.proto == PROTO_CQL and rs.rtype == OP_RESULT then
            pcall(learn_one, state, req[i], rs)
        end
    end
end

-- The bound variables of a RESULT Prepared (protocol `version`) whose id
-- ends before offset i, in a body of n bytes:
-- { columns = { { name =, keyspace =, table =, type = } ... },
--   pk = { indexes of the partition key columns, 1-based } }.
function _M.prepared_metadata(version, p, i, n)
    if version >= 5 then
        i = i + 2 + u16(p, i, n, "a result metadata id")
    end
    local flags = s32(p, i, n, "prepared metadata")
    local count = s32(p, i + 4, n, "prepared metadata")
    i = i + 8
    local meta = { columns = {}, pk = {} }
    if version >= 4 then
        local npk = s32(p, i, n, "partition key indexes")
        i = i + 4
        for k = 1, npk do
            meta.pk[k] = u16(p, i, n, "partition key indexes") + 1
            i = i + 2
        end
    end
    local gks, gtable
    if band(flags, 0x0001) ~= 0 then
        gks, i = cql_string(p, i, n)
        gtable, i = cql_string(p, i, n)
    end
    for k = 1, count do
        local col = { keyspace = gks, table = gtable }
        if not gks then
            col.keyspace, i = cql_string(p, i, n)
            col.table, i = cql_string(p, i, n)
        end
        col.name, i = cql_string(p, i, n)
        col.type, i = types.read_type(p, i, n)
        meta.columns[k] = col
    end
    -- then the metadata of the rows it will return
    meta.result_columns = types.read_rows_metadata(p, i, n)
    return meta
end

-- The statement an EXECUTE runs: { query = text, keyspace = the session's
-- keyspace when it was prepared, columns = its bound variables with their
-- types, pk = the indexes of the partition key among them }, or nil when no
-- worker of this shotover saw it prepared (the driver prepared it through
-- another proxy, or shotover restarted since).
function _M.prepared_by_id(id)
    return prepared[id] or from_shared(id)
end

function _M.prepared(msg)
    if msg.rtype ~= OP_EXECUTE then
        return nil
    end
    -- an EXECUTE whose id does not read prepares nothing: the node
    -- refuses it, and the transforms asking are not failed for it
    local ok, id = pcall(msg.prepared_id, msg)
    return ok and _M.prepared_by_id(id) or nil
end

return _M
