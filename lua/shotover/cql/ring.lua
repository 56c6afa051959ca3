-- The ring behind a `cassandra` sink given contact_points: its nodes (from
-- system.local and system.peers_v2, or system.peers before Cassandra 4),
-- their tokens, racks and data centres, and for each token range the nodes
-- to send a request to, in order: the range's replicas first, walking the
-- ring from the range's owner, the local data centre's before the others'
-- (for SimpleStrategy and NetworkTopologyStrategy alike, racks aside, these
-- are the replicas of every keyspace, in the order the node picks them),
-- then every other node, which can still coordinate.
--
-- One Ring per worker and sink settings (shotover.pools keeps it across
-- reloads that leave those settings alone); each node has a pool of the
-- clients' connections to it (c/sh_cql_pool.c, in ring mode).
local bit = require "bit"
local ffi = require "ffi"
local C = require("shotover.ffi").C
local schema = require "shotover.schema"
local rows = require "shotover.cql.rows"
local now_ns = require("shotover.metrics").now_ns

local band, rshift = bit.band, bit.rshift
local char, concat, sort = string.char, table.concat, table.sort
local fmt = string.format
local tostring, ipairs, setmetatable = tostring, ipairs, setmetatable

local _M = { _VERSION = "0.1.0",
             DOWN_NS = 1e9 }     -- a node that failed is skipped this long

local Ring = {}
Ring.__index = Ring

local pool_out = ffi.new("sh_cql_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

-- "host:port" of an address and a port, brackets around an IPv6 host
local function hostport(host, port)
    if host:find(":", 1, true) then
        host = "[" .. host .. "]"
    end
    return host .. ":" .. tostring(port)
end
_M.hostport = hostport

function _M.new(worker, conf, name)
    local r = setmetatable({
        worker = worker, conf = conf, name = name,
        nodes = {},             -- "host:port" -> node
        list = {},              -- the nodes known, contact points first
        tokens = nil,           -- int64_t[ntokens], ascending
        ntokens = 0,
        cands = {},             -- token index + 1 -> { node, ... }
        everyone = {},          -- every node, local data centre first
        local_dc = conf.local_dc,
        local_row = nil,        -- system.local's cells by column name
        known = false,          -- the ring was read once
        refreshed = 0,          -- when (ns)
        refreshing = false,
        rr = 0,
    }, Ring)
    for _, a in ipairs(conf.contact_points) do
        r:node(a)
    end
    r.everyone = r.list
    return r
end

function Ring.free(r)
    for _, node in ipairs(r.list) do
        if node.pool ~= nil then
            C.sh_ffi_cql_pool_free(node.pool)
            node.pool = nil
        end
    end
end

-- The node at "host:port" (made the first time), with its pool.
function Ring.node(r, addr)
    local node = r.nodes[addr]
    if node == nil then
        local host, port = schema.parse_hostport(addr)
        local cc = ffi.new("sh_cql_conf_t", {
            host = host, port = port,
            connect_timeout_ms = r.conf.connect_timeout_ms,
            request_timeout_ms = r.conf.request_timeout_ms,
            name = r.name, ring = 1,
            tls = require("shotover.tls").context(r.conf.tls, false, r.name),
        })
        if C.sh_ffi_cql_pool_new(r.worker, cc, pool_out, err_out) ~= 0 then
            error(fmt("%s: node %s: %s", r.name, addr,
                      ffi.string(err_out[0])), 0)
        end
        node = { addr = addr, host = host, port = port, pool = pool_out[0],
                 down_until = 0, tokens = {} }
        r.nodes[addr] = node
        r.list[#r.list + 1] = node
    end
    return node
end

function Ring.usable(_, node, now)
    return node.down_until <= now
end

-- A request to node failed for want of the node: skip it a while.
function Ring.down(r, node, why)
    if node.down_until <= now_ns() then
        require("shotover.log").warn("%s: node %s unavailable (%s); its "
            .. "requests go to other replicas", r.name, node.addr,
            tostring(why))
    end
    node.down_until = now_ns() + _M.DOWN_NS
    r.stale = true
end

-- A client's first node (its handshake, and requests that name no
-- partition): the nodes of the local data centre in turn.
function Ring.pick_home(r)
    local list = r.everyone
    local now = now_ns()
    for _ = 1, #list do
        r.rr = r.rr % #list + 1
        local node = list[r.rr]
        if node.down_until <= now
           and (r.local_dc == nil or node.dc == nil
                or node.dc == r.local_dc) then
            return node
        end
    end
    return list[r.rr % #list + 1]
end

-- A token's decimal text as an int64_t.
local function parse_token(s)
    local neg = s:sub(1, 1) == "-"
    local v = ffi.new("int64_t", 0)
    for i = neg and 2 or 1, #s do
        local d = s:byte(i) - 48
        if d < 0 or d > 9 then
            return nil
        end
        v = v * 10 + (neg and -d or d)
    end
    return v
end

-- Learn the ring from system.local's row and system.peers(_v2)'s rows
-- (cells decoded by name, shotover.cql.rows), as read from node `asked`.
function Ring.learn(r, local_row, peer_rows, asked)
    local entries = {}
    local seen = {}
    local function add(host, port, row)
        if host == nil or host == "0.0.0.0" or host == "::" then
            return
        end
        local addr = hostport(host, port or asked.port)
        if seen[addr] then
            return
        end
        seen[addr] = true
        local node = r:node(addr)
        node.port = port or asked.port
        node.dc, node.rack = row.data_center, row.rack
        node.host_id = row.host_id
        node.tokens = row.tokens or {}
        for _, t in ipairs(node.tokens) do
            local v = parse_token(t)
            if v then
                entries[#entries + 1] = { v, node }
            end
        end
    end
    add(asked.host, asked.port, local_row)
    for _, row in ipairs(peer_rows) do
        add(row.native_address or row.rpc_address or row.peer,
            row.native_port, row)
    end
    if #entries == 0 then
        return false
    end
    sort(entries, function(a, b) return a[1] < b[1] end)
    local n = #entries
    local tokens = ffi.new("int64_t[?]", n)
    for i = 1, n do
        tokens[i - 1] = entries[i][1]
    end
    r.local_dc = r.conf.local_dc or r.local_dc or local_row.data_center
    -- nodes that left the ring are not routed to (their pools stay: a
    -- client's requests in flight there finish)
    local members = {}
    for i = 1, n do
        members[entries[i][2]] = true
    end
    local everyone = {}
    for _, node in ipairs(r.list) do
        if members[node] and node.dc == r.local_dc then
            everyone[#everyone + 1] = node
        end
    end
    for _, node in ipairs(r.list) do
        if members[node] and node.dc ~= r.local_dc then
            everyone[#everyone + 1] = node
        end
    end
    -- per range: replicas in ring order from its owner, local dc first,
    -- then the rest of the nodes
    local cands = {}
    for i = 1, n do
        local list, got = {}, {}
        for pass = 1, 2 do
            for k = 0, n - 1 do
                local node = entries[(i - 1 + k) % n + 1][2]
                if not got[node]
                   and (pass == 2 or node.dc == r.local_dc) then
                    got[node] = true
                    list[#list + 1] = node
                end
            end
        end
        cands[i] = list
    end
    r.tokens, r.ntokens, r.cands, r.everyone = tokens, n, cands, everyone
    r.local_row = local_row
    r.known, r.stale, r.refreshed = true, false, now_ns()
    return true
end

-- The nodes for a partition key's bytes (as the partitioner hashes them),
-- or nil before the ring is known.
function Ring.for_key(r, key)
    if r.ntokens == 0 then
        return nil
    end
    return r.cands[C.sh_ffi_cql_ring_find(r.tokens, r.ntokens, key, #key)
                   + 1]
end

local function be16(n)
    return char(band(rshift(n, 8), 0xff), band(n, 0xff))
end

-- A partition key's bytes as the partitioner hashes them, from its
-- columns' values (parts[1..n]): one column's value as it is; several each
-- as a 2-byte length, the bytes and a zero (CompositeType).
function _M.routing_key(parts, n)
    if n == 1 then
        return parts[1]
    end
    local out = {}
    for k = 1, n do
        local b = parts[k]
        out[k] = be16(#b) .. b .. "\0"
    end
    return concat(out)
end

-- What refresh() asks, and how the rows come back (shotover.cql.rows).
_M.LOCAL_QUERY = "SELECT * FROM system.local WHERE key = 'local'"
_M.PEERS_V2_QUERY = "SELECT * FROM system.peers_v2"
_M.PEERS_QUERY = "SELECT * FROM system.peers"
_M.decode_rows = rows.decode

return _M
