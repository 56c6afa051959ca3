-- What drivers see of the ring behind a `cassandra` sink: the shotover
-- instances (its shotover_nodes), never the nodes.  A driver learns its
-- cluster from system.local and system.peers(_v2) and then connects to
-- every peer; so the rows of those tables are rewritten to describe the
-- shotover instances: this instance in system.local, the others in
-- system.peers and system.peers_v2, with their addresses, data centres,
-- racks, host ids and the tokens they stand for.  Columns shotover has no
-- say in (release_version, schema_version, cluster_name, partitioner ...)
-- keep the node's values.
local ffi = require "ffi"
local bit = require "bit"
local C = require("shotover.ffi").C
local schema = require "shotover.schema"
local rows = require "shotover.cql.rows"

local char, concat, fmt = string.char, table.concat, string.format
local band, rshift = bit.band, bit.rshift
local tostring, ipairs = tostring, ipairs
local be32 = rows.be32

local _M = { _VERSION = "0.1.0" }

ffi.cdef [[
int inet_pton(int af, const char *src, void *dst);
]]
local AF_INET, AF_INET6 = 2, 10
local addr_buf = ffi.new("uint8_t[16]")

-- The bytes of an inet (4 or 16), or nil when host is not an address.
local function inet_bytes(host)
    if ffi.C.inet_pton(AF_INET, host, addr_buf) == 1 then
        return ffi.string(addr_buf, 4)
    elseif ffi.C.inet_pton(AF_INET6, host, addr_buf) == 1 then
        return ffi.string(addr_buf, 16)
    end
    return nil
end
_M.inet_bytes = inet_bytes

local function int_bytes(n)
    return be32(n)
end

-- 16 bytes of a uuid's text, or nil.
local function uuid_bytes(s)
    local hex = tostring(s):gsub("-", "")
    if #hex ~= 32 or hex:find("[^%x]") then
        return nil
    end
    return (hex:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- A host id for an address that has none configured: the same on every
-- shotover instance given the same list (two Murmur3 hashes of it, with
-- the version 4 and variant bits of a random uuid).
local function derived_host_id(addr)
    local out = {}
    for k, salt in ipairs({ "shotover:", "shotover#" }) do
        local s = salt .. addr
        local h = C.sh_ffi_cql_token(s, #s)
        for b = 7, 0, -1 do
            out[(k - 1) * 8 + (8 - b)] = tonumber(band(rshift(h, b * 8),
                                                       0xff))
        end
    end
    out[7] = band(out[7], 0x0f) + 0x40
    out[9] = band(out[9], 0x3f) + 0x80
    return char(unpack(out))
end

local function token_text(v)
    return (tostring(v):gsub("[UL]+$", ""))
end

-- A set<text> cell of token texts.
local function token_set(list)
    local parts = { be32(#list) }
    for _, t in ipairs(list) do
        parts[#parts + 1] = be32(#t) .. t
    end
    return concat(parts)
end

-- Check shotover_nodes (a config list): true, or nil and why (with its
-- path inside the element).
function _M.check(list)
    if type(list) ~= "table" or #list == 0 then
        return nil, "shotover_nodes: a list of { address = \"host:port\", "
                    .. "rack =, dc = }"
    end
    local seen = {}
    for i, n in ipairs(list) do
        local at = fmt("shotover_nodes[%d]", i)
        if type(n) ~= "table" then
            return nil, at .. ": expected a table"
        end
        local host = schema.parse_hostport(n.address)
        if host == nil or inet_bytes(host) == nil then
            return nil, fmt("%s.address: expected \"ip:port\", got %s", at,
                            tostring(n.address))
        end
        if seen[n.address] then
            return nil, at .. ".address: listed twice"
        end
        seen[n.address] = true
        for _, k in ipairs({ "rack", "dc" }) do
            if n[k] ~= nil and type(n[k]) ~= "string" then
                return nil, fmt("%s.%s: expected a string", at, k)
            end
        end
        if n.host_id ~= nil and uuid_bytes(n.host_id) == nil then
            return nil, at .. ".host_id: expected a uuid"
        end
        if n.tokens ~= nil then
            if type(n.tokens) ~= "table" or #n.tokens == 0 then
                return nil, at .. ".tokens: expected a list of tokens"
            end
            for k, t in ipairs(n.tokens) do
                if not tostring(t):match("^%-?%d+$") then
                    return nil, fmt("%s.tokens[%d]: expected an integer "
                                    .. "(as text), got %s", at, k,
                                    tostring(t))
                end
            end
        end
    end
    for k in pairs(list) do
        if type(k) ~= "number" then
            return nil, "shotover_nodes: a list, not a map"
        end
    end
    return true
end

-- The view: { self = node, others = { node, ... } } where each node is
-- { address, host, port, inet, dc, rack, host_id (bytes), tokens (list
-- of texts) }; `me` the address of this instance among them.  Nodes
-- without tokens share the ring evenly with the others of their data
-- centre (nodes without a dc: with each other).
function _M.view(list, me)
    local nodes, by_dc, dcs = {}, {}, {}
    for i, n in ipairs(list) do
        local host, port = schema.parse_hostport(n.address)
        local node = { address = n.address, host = host, port = port,
                       inet = inet_bytes(host), dc = n.dc, rack = n.rack,
                       host_id = n.host_id and uuid_bytes(n.host_id)
                                 or derived_host_id(n.address),
                       tokens = n.tokens }
        nodes[i] = node
        local dc = n.dc or ""
        if by_dc[dc] == nil then
            by_dc[dc] = {}
            dcs[#dcs + 1] = dc
        end
        local g = by_dc[dc]
        g[#g + 1] = node
    end
    for _, dc in ipairs(dcs) do
        local g = by_dc[dc]
        local step = 0xFFFFFFFFFFFFFFFFULL / #g
        for i, node in ipairs(g) do
            if node.tokens == nil then
                node.tokens = { token_text(ffi.cast("int64_t",
                    0x8000000000000000ULL + (i - 1) * step)) }
            end
        end
    end
    local v = { others = {}, all = nodes }
    for _, node in ipairs(nodes) do
        if node.address == me and v.self == nil then
            v.self = node
        else
            v.others[#v.others + 1] = node
        end
    end
    return v
end

-- This instance's address in list: `me` as configured (local_node), or
-- the one whose address is the source's listen address, or whose port is
-- its port (a source listening on every address).  nil when none is.
function _M.find_self(list, listen)
    if listen == nil then
        return nil
    end
    local lhost, lport = schema.parse_hostport(listen)
    local by_port
    for _, n in ipairs(list) do
        local host, port = schema.parse_hostport(n.address)
        if host == lhost and port == lport then
            return n.address
        end
        if port == lport and (lhost == "0.0.0.0" or lhost == "::") then
            if by_port then
                return nil                      -- two: cannot tell
            end
            by_port = n.address
        end
    end
    return by_port
end

-- The cell for column `name` of a shotover node's row, or nil to keep the
-- node's value.  (Columns of system.local, system.peers, system.peers_v2.)
local function cell(node, name, dc, rack)
    if name == "rpc_address" or name == "broadcast_address"
       or name == "listen_address" or name == "native_address"
       or name == "peer" or name == "preferred_ip" then
        return node.inet
    elseif name == "rpc_port" or name == "native_port"
           or name == "broadcast_port" or name == "listen_port"
           or name == "peer_port" or name == "preferred_port" then
        return int_bytes(node.port)
    elseif name == "data_center" then
        return node.dc or dc
    elseif name == "rack" then
        return node.rack or rack
    elseif name == "host_id" then
        return node.host_id
    elseif name == "tokens" then
        return token_set(node.tokens)
    end
    return nil
end

-- The peer a query restricts itself to (`WHERE peer = 'ip'`), as bytes,
-- or nil.
local function peer_filter(ast)
    for _, rel in ipairs(ast.where or {}) do
        local lit = rel.value
        if rel.column == "peer" and rel.op == "=" and type(lit) == "table"
           and lit.type == "string" then
            return inet_bytes(lit.value) or ""
        end
    end
    return nil
end

-- Rewrite reply f of a query of system.<which> (ast: its statement) to
-- describe the view's nodes.  fallback: system.local's cells by name (for
-- columns of peers that no real peer row gives).
function _M.rewrite(f, req, which, ast, view, fallback)
    local t = rows.read(f, req)
    if t == nil then
        return
    end
    local cols = t.columns
    local tpl = t[1] and rows.by_name(t, 1) or fallback or {}
    local out = {}
    local function row_of(node)
        local row = {}
        for c, col in ipairs(cols) do
            local b = cell(node, col.name, tpl.data_center, tpl.rack)
            if b == nil then
                b = tpl[col.name]
            end
            row[c] = b
        end
        return row
    end
    if which == "local" then
        if t[1] == nil then
            return
        end
        out[1] = row_of(view.self)
    else
        local only = peer_filter(ast)
        for _, node in ipairs(view.others) do
            if only == nil or only == node.inet then
                out[#out + 1] = row_of(node)
            end
        end
    end
    rows.write(f, t, out)
end

-- Which system table a statement reads: "local", "peers", "peers_v2" or
-- nil.
local SYSTEM = { ["local"] = "local", peers = "peers", peers_v2 = "peers_v2" }
function _M.system_table(ast, ks)
    if ast and ast.kind == "select" and (ast.keyspace or ks) == "system" then
        return SYSTEM[ast.table]
    end
    return nil
end

return _M
