-- What a CQL session learns from its own traffic: the keyspace set by USE
-- (a RESULT Set_keyspace), and prepared statements, remembered by id from a
-- PREPARE and its RESULT Prepared, so an EXECUTE knows its statement.
-- Prepared ids belong to the node, not to a connection (a driver prepares
-- on one connection and executes on any), so they are kept per worker.
local bit = require "bit"
local ffi = require "ffi"
local types = require "shotover.cql.types"

local band, bor, lshift = bit.band, bit.bor, bit.lshift
local ffi_string = ffi.string

local _M = { _VERSION = "0.1.0", MAX_PREPARED = 20000 }

local OP_RESULT, OP_PREPARE, OP_EXECUTE = 0x08, 0x09, 0x0A
local KIND_SET_KEYSPACE, KIND_PREPARED = 3, 4

local prepared = {}                      -- id (string) -> { query, keyspace }
local nprepared = 0

local function be16(p, i)
    return bor(lshift(p[i], 8), p[i + 1])
end

local function be32(p, i)
    return bor(lshift(p[i], 24), lshift(p[i + 1], 16), lshift(p[i + 2], 8),
               p[i + 3])
end

-- Where a response's message starts: after the tracing id (flag 0x02), the
-- warnings (0x08) and the custom payload (0x04).
local function response_start(f, p)
    local flags, i = f.data[1], 0
    if band(flags, 0x02) ~= 0 then
        i = i + 16
    end
    if band(flags, 0x08) ~= 0 then
        local n = be16(p, i)
        i = i + 2
        for _ = 1, n do
            i = i + 2 + be16(p, i)
        end
    end
    if band(flags, 0x04) ~= 0 then
        local n = be16(p, i)
        i = i + 2
        for _ = 1, n do
            i = i + 2 + be16(p, i)
            local vl = be32(p, i)
            i = i + 4 + (vl > 0x7fffffff and 0 or vl)
        end
    end
    return i
end

_M.response_start = response_start

-- After a batch: learn from each RESULT answering a request.  `state` is
-- the connection's session table (chain.conn).
function _M.learn(state, req, resp)
    for i = 1, resp.n do
        local rs = resp[i]
        if rs ~= nil and rs.proto == 2 and rs.rtype == OP_RESULT then
            local p, n = rs:body_view()
            local at = response_start(rs, p)
            if at + 4 <= n then
                local kind = be32(p, at)
                if kind == KIND_SET_KEYSPACE then
                    state.keyspace = ffi_string(p + at + 6, be16(p, at + 4))
                elseif kind == KIND_PREPARED and req[i].rtype == OP_PREPARE
                then
                    local id = ffi_string(p + at + 6, be16(p, at + 4))
                    if prepared[id] == nil then
                        if nprepared >= _M.MAX_PREPARED then
                            prepared, nprepared = {}, 0
                        end
                        nprepared = nprepared + 1
                    end
                    local ok, meta = pcall(_M.prepared_metadata, rs, p,
                                           at + 6 + be16(p, at + 4))
                    prepared[id] = { query = req[i]:query(),
                                     keyspace = state.keyspace,
                                     columns = ok and meta.columns or nil,
                                     pk = ok and meta.pk or nil,
                                     result_columns = ok and meta.result_columns
                                                      or nil }
                end
            end
        end
    end
end

-- The bound variables of a RESULT Prepared whose id ends before offset i:
-- { columns = { { name =, keyspace =, table =, type = } ... },
--   pk = { indexes of the partition key columns, 1-based } }.
function _M.prepared_metadata(rs, p, i)
    if band(rs.data[0], 0x7f) >= 5 then
        i = i + 2 + be16(p, i)           -- result metadata id
    end
    local flags, n = be32(p, i), be32(p, i + 4)
    i = i + 8
    local meta = { columns = {}, pk = {} }
    if band(rs.data[0], 0x7f) >= 4 then
        local npk = be32(p, i)
        i = i + 4
        for k = 1, npk do
            meta.pk[k] = be16(p, i) + 1
            i = i + 2
        end
    end
    local gks, gtable
    if band(flags, 0x0001) ~= 0 then
        gks, i = types.cql_string(p, i)
        gtable, i = types.cql_string(p, i)
    end
    for k = 1, n do
        local col = { keyspace = gks, table = gtable }
        if not gks then
            col.keyspace, i = types.cql_string(p, i)
            col.table, i = types.cql_string(p, i)
        end
        col.name, i = types.cql_string(p, i)
        col.type, i = types.read_type(p, i)
        meta.columns[k] = col
    end
    -- then the metadata of the rows it will return
    meta.result_columns = types.read_rows_metadata(p, i)
    return meta
end

-- The statement an EXECUTE runs: { query = text, keyspace = the session's
-- keyspace when it was prepared, columns = its bound variables with their
-- types, pk = the indexes of the partition key among them }, or nil when
-- this worker never saw it prepared (the driver prepared it through another
-- worker or proxy).
function _M.prepared(msg)
    if msg.rtype ~= OP_EXECUTE then
        return nil
    end
    return prepared[msg:prepared_id()]
end

function _M.prepared_by_id(id)
    return prepared[id]
end

return _M
