-- cassandra: the sink for one Cassandra node, or for a ring of them.  Each
-- client connection gets its own backend connection (per node); the
-- client's handshake and stream ids pass through untouched, replies are
-- matched by stream id and events relayed.  Given contact_points instead of
-- a remote, it learns the ring, sends each request to a replica of its
-- partition (token-aware), fails over to the next replica, and shows
-- drivers the shotover instances in place of the nodes
-- (shotover.cql.ring, shotover.cql.peers).  See docs/transforms/cassandra.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"
local session = require "shotover.cql.session"
local request = require "shotover.cql.request"
local peers = require "shotover.cql.peers"
local tls = require "shotover.tls"

local C = base.C
local AGAIN = base.AGAIN
local band = require("bit").band
local rshift = require("bit").rshift
local fmt = string.format
local new_batch = message.new_batch
local constant_batch = message.constant_batch
local setmetatable, ipairs, type, tostring = setmetatable, ipairs, type,
                                             tostring
local watch_handshake, catch_up     -- defined below, used by transform

local _M = {
    name = "cassandra",
    version = "0.1.0",
    capabilities = { sink = true, lanes = true },
    protocols = { "cassandra" },        -- it sends requests as they are
    schema = {
        remote = { type = "hostport" },
        contact_points = { type = "table" },
        shotover_nodes = { type = "table" },
        local_node = { type = "hostport" },
        local_dc = { type = "string" },
        refresh_interval_ms = { type = "integer", min = 0, default = 60000 },
        connect_timeout_ms = { type = "integer", min = 1, default = 3000 },
        request_timeout_ms = { type = "integer", min = 0, default = 12000 },
        -- the node's login, sent instead of the client's (authenticate
        -- checks the client's at shotover)
        username = { type = "string" },
        password = { type = "string", secret = true },
        tls = { type = "table",
            doc = "TLS to the server: `{ ca = \"ca.pem\" }` (verifies "
                  .. "its certificate and name), with `cert`/`key` for a "
                  .. "client certificate; keys `server_name`, `verify`, "
                  .. "`min_version`, `ciphers`, `ciphersuites`. See "
                  .. "docs/tls.md." },
    },
}

local RING_ONLY = { "shotover_nodes", "local_node", "local_dc" }

-- every problem at once: true, or nil and the list
function _M.check_config(conf)
    local errs = {}
    if conf.remote == nil and conf.contact_points == nil then
        errs[#errs + 1] = "remote: required (\"host:port\" of the node), "
                          .. "or contact_points (of a ring)"
    elseif conf.remote ~= nil and conf.contact_points ~= nil then
        errs[#errs + 1] = "remote and contact_points: give one (a node, or "
                          .. "a ring)"
    end
    if conf.contact_points ~= nil then
        local cp = conf.contact_points
        if type(cp) ~= "table" or #cp == 0 then
            errs[#errs + 1] = "contact_points: a list of \"host:port\" of "
                              .. "the ring's nodes"
        else
            for i, a in ipairs(cp) do
                if schema.parse_hostport(a) == nil then
                    errs[#errs + 1] = fmt("contact_points[%d]: expected "
                        .. "\"host:port\", got %s", i, tostring(a))
                end
            end
        end
        if conf.shotover_nodes ~= nil then
            local ok, why = peers.check(conf.shotover_nodes)
            if not ok then
                errs[#errs + 1] = why
            elseif conf.local_node ~= nil then
                local found = false
                for _, n in ipairs(conf.shotover_nodes) do
                    found = found or n.address == conf.local_node
                end
                if not found then
                    errs[#errs + 1] = "local_node: not one of "
                                      .. "shotover_nodes' addresses"
                end
            end
        end
    else
        for _, k in ipairs(RING_ONLY) do
            if conf[k] ~= nil then
                errs[#errs + 1] = k .. ": only for a ring (contact_points)"
            end
        end
    end
    if (conf.username == nil) ~= (conf.password == nil) then
        errs[#errs + 1] = "username and password: give both (the node's "
                          .. "login) or neither"
    end
    if conf.tls ~= nil then
        for _, e in ipairs(tls.check(conf.tls, "tls", false)) do
            errs[#errs + 1] = e
        end
    end
    if #errs > 0 then
        return nil, errs
    end
    return true
end

local mt = { __index = {} }

local pool_out = ffi.new("sh_cql_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

function _M.new(conf, env)
    local self = setmetatable({ name = conf.name or "cassandra" }, mt)
    if conf.username ~= nil then
        -- its AUTH_RESPONSE body: a SASL PLAIN token as [bytes]
        local tok = "\0" .. conf.username .. "\0" .. conf.password
        local n = #tok
        self.token = string.char(rshift(n, 24) % 256,
                                 rshift(n, 16) % 256,
                                 rshift(n, 8) % 256, n % 256) .. tok
    end
    if conf.contact_points ~= nil then
        return _M.new_ring(self, conf, env)
    end
    if env.worker ~= nil then
        -- a reload that leaves these settings alone keeps the pool: the
        -- clients' sessions on the node stay where they are
        self.pool = require("shotover.pools").get("cassandra"
            .. tls.identity(conf.tls), conf,
            function()
                local host, port = schema.parse_hostport(conf.remote)
                local cc = ffi.new("sh_cql_conf_t", {
                    host = host, port = port,
                    connect_timeout_ms = conf.connect_timeout_ms,
                    request_timeout_ms = conf.request_timeout_ms,
                    name = self.name,
                    tls = tls.context(conf.tls, false, self.name),
                })
                if C.sh_ffi_cql_pool_new(env.worker, cc, pool_out, err_out)
                   ~= 0
                then
                    error((env.path or "chain") .. ": cassandra sink: "
                          .. ffi.string(err_out[0]), 0)
                end
                return pool_out[0]
            end, C.sh_ffi_cql_pool_free)
    end
    return self
end

local learn = session.learn

local OP_ERROR, OP_STARTUP = C.SH_CQL_ERROR, C.SH_CQL_STARTUP
local OP_READY, OP_AUTHENTICATE = C.SH_CQL_READY, C.SH_CQL_AUTHENTICATE
local OP_AUTH_RESPONSE = C.SH_CQL_AUTH_RESPONSE
local OP_AUTH_SUCCESS = C.SH_CQL_AUTH_SUCCESS
local OP_RESULT = C.SH_CQL_RESULT

local function send(pool, chain, batch)
    local resp = new_batch(batch.n)
    if C.sh_ffi_cql_send(pool, chain.c, batch, resp) == AGAIN then
        chain:wait()
    end
    return resp
end

-- Every sink of a chain opens its own connection to its node for a client,
-- but only the sinks the client's handshake went through saw it (a router
-- sends STARTUP down one route).  So the handshake is remembered in the
-- session as it passes (STARTUP and AUTH_RESPONSE requests, as bytes), and
-- a sink first used after it replays it on its own connection; USE is
-- replayed the same way whenever the session's keyspace moves on.
watch_handshake = function(conn, st, batch, resp)
    for i = 1, batch.n do
        local m = batch[i]
        local op = m.rtype
        if resp == nil then
            if op == OP_STARTUP then
                conn.cql_startup = m:raw()
                conn.cql_auth = nil
                st.started = true
            elseif op == OP_AUTH_RESPONSE then
                conn.cql_auth = conn.cql_auth or {}
                conn.cql_auth[#conn.cql_auth + 1] = m:raw()
            end
        else
            local r = resp[i]
            local rop = r ~= nil and r.rtype
            if rop == OP_READY or rop == OP_AUTH_SUCCESS then
                conn.cql_handshake_done = true
            end
        end
    end
end

-- Replay the remembered handshake and USE on the client's connection of
-- pool (of the sink or ring node called name).  Returns nil, or why the
-- session could not be opened there.
catch_up = function(pool, name, chain, conn, st, batch)
    local first = batch[1]
    if not st.started then
        local startup = conn.cql_startup
        if startup == nil then
            return nil              -- this batch starts the session itself
        end
        for i = 1, batch.n do
            if batch[i].rtype == OP_STARTUP then
                return nil          -- so does this one
            end
        end
        local f = assert(message.frame_from_cql(startup))
        local reply = send(pool, chain, constant_batch(1, f))[1]
        local auth = conn.cql_auth or {}
        local k = 1
        while reply ~= nil and reply.rtype == OP_AUTHENTICATE and auth[k] do
            f = assert(message.frame_from_cql(auth[k]))
            if st.token ~= nil then
                f:set_body(st.token)    -- this sink's own login
            end
            reply = send(pool, chain, constant_batch(1, f))[1]
            k = k + 1
        end
        if reply == nil or (reply.rtype ~= OP_READY
                            and reply.rtype ~= OP_AUTH_SUCCESS) then
            local why = reply ~= nil and reply.rtype == OP_ERROR
                        and reply:error_info().message or "no READY"
            return fmt("shotover: cannot open the client's session on sink "
                       .. "\"%s\": %s", name, tostring(why))
        end
        st.started = true
        st.keyspace = nil
    end
    local ks = conn.keyspace
    if ks ~= nil and st.keyspace ~= ks then
        local use = request.query('USE "' .. ks:gsub('"', '""') .. '"', nil,
                                  { version = band(first.data[0], 0x7f),
                                    stream = first.argc })
        local reply = send(pool, chain, constant_batch(1, use))[1]
        if reply == nil or reply.rtype ~= OP_RESULT then
            local why = reply ~= nil and reply.rtype == OP_ERROR
                        and reply:error_info().message or "no reply"
            return fmt("shotover: cannot USE %s on sink \"%s\": %s", ks,
                       name, tostring(why))
        end
    end
    st.keyspace = ks
    return nil
end

-- The pool a chain that is only this sink hands to the C core once the
-- client's session is open on the node (shotover.runner.direct: its
-- EXECUTE and BATCH requests then never enter Lua), or nil: no worker
-- (dry runs), or a ring (each request is routed).
function mt.__index.direct_pool(self)
    if self.ring == nil and self.pool ~= nil then
        return self.pool, base.PROTO_CQL
    end
    return nil
end

function mt.__index.transform(self, batch, chain)
    local resp
    local token = self.token
    if token ~= nil then
        -- the node gets the sink's login, whatever the client sent
        for i = 1, batch.n do
            local m = batch[i]
            if m.rtype == OP_AUTH_RESPONSE then
                m:set_body(token)
            end
        end
    end
    if self.ring ~= nil then
        return self:ring_transform(batch, chain)
    end
    if self.pool == nil then                -- no worker: answer dry
        resp = require("shotover.protocols.cassandra").dry(batch, chain)
        learn(chain.conn, batch, resp)
        return resp
    end
    local conn = chain.conn
    local st = conn[self]
    if st == nil then
        st = { token = self.token }
        conn[self] = st
    end
    if not conn.cql_handshake_done then
        watch_handshake(conn, st, batch)
    end
    if not st.started or st.keyspace ~= conn.keyspace then
        -- one batch of the client at a time opens its session here; other
        -- batches of it (lanes) wait for that one, then look again
        while st.opening do
            chain:sleep()
        end
        if not st.started or st.keyspace ~= conn.keyspace then
            st.opening = true
            local ok, err = pcall(catch_up, self.pool, self.name, chain,
                                  conn, st, batch)
            st.opening = nil
            chain:notify()
            if not ok then
                error(err, 0)
            end
            if err then
                return message.error_batch(batch, err)
            end
        end
    end
    resp = send(self.pool, chain, batch)
    -- USE and prepared statements, for the transforms in front
    learn(conn, batch, resp)
    st.keyspace = conn.keyspace
    if not conn.cql_handshake_done then
        watch_handshake(conn, st, batch, resp)
    elseif chain.direct and st.started then
        -- the session is open: C from here on (chain.direct: only on a
        -- worker, where the runner is loaded)
        require("shotover.runner").direct(chain)
    end
    return resp
end

_M.watch_handshake, _M.catch_up, _M.send = watch_handshake, catch_up, send
require("shotover.cql.routing")(_M, mt.__index)

return _M
