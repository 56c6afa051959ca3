-- redis: the sink for one Redis server.  Stateless requests of all clients
-- share pipelined connections; a client entering a stateful mode (MULTI,
-- WATCH, SELECT, AUTH, HELLO, CLIENT, blocking commands, SUBSCRIBE...) gets
-- a dedicated connection.  See docs/transforms/redis.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"
local pools = require "shotover.pools"
local tls = require "shotover.tls"

local C = base.C
local AGAIN = base.AGAIN
local band, bor = require("bit").band, require("bit").bor
local new_batch = message.new_batch
local error_reply = message.error_reply
local setmetatable = setmetatable
local fmt = string.format

-- what the C core does for the client connection itself: QUIT closes it,
-- streaming replies (SUBSCRIBE, MONITOR) go straight to it
local CLIENT_BOUND = bor(C.SH_CMD_STREAM, C.SH_CMD_QUIT)

local _M = {
    name = "redis",
    version = "0.1.0",
    capabilities = { sink = true, lanes = true },
    protocols = { "redis" },            -- it sends requests as they are
    schema = {
        remote = { type = "hostport", required = true },
        -- a backend pool's settings (redis_cluster's nodes have them too)
        connections = { type = "integer", min = 1, max = 64, default = 1 },
        connect_timeout_ms = { type = "integer", min = 1, default = 1000 },
        request_timeout_ms = { type = "integer", min = 0, default = 5000 },
        backoff_min_ms = { type = "integer", min = 1, default = 50 },
        backoff_max_ms = { type = "integer", min = 1, default = 1000 },
        -- the C pool keeps copies of at most 127 and 255 bytes
        username = { type = "string", check = function(v)
            return #v <= 127, "at most 127 bytes"
        end },
        password = { type = "string", secret = true, check = function(v)
            return #v <= 255, "at most 255 bytes"
        end },
        tls = { type = "table",
            doc = "TLS to the server: `{ ca = \"ca.pem\" }` (verifies "
                  .. "its certificate and name), with `cert`/`key` for a "
                  .. "client certificate; keys `server_name`, `verify`, "
                  .. "`min_version`, `ciphers`, `ciphersuites`. See "
                  .. "docs/tls.md." },
    },
}

-- The settings of a backend pool, for sinks with pools of their own.
_M.POOL_SETTINGS = { "connections", "connect_timeout_ms",
                     "request_timeout_ms", "backoff_min_ms", "backoff_max_ms",
                     "username", "password", "tls" }

local mt = { __index = {} }
local methods = mt.__index

function _M.check_config(conf)
    if conf.username and not conf.password then
        return nil, "username needs a password"
    end
    return tls.check_sink(conf)
end

local pool_out = ffi.new("sh_redis_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

-- A backend pool of worker w for the Redis server at addr ("host:port"),
-- with conf's POOL_SETTINGS; readonly: READONLY on every connection (a
-- cluster replica's reads).  Raises "<where>: <why>".
function _M.new_pool(w, conf, addr, name, where, readonly)
    local host, port = schema.parse_hostport(addr)
    local rc = ffi.new("sh_redis_conf_t", {
        host = host, port = port, connections = conf.connections,
        connect_timeout_ms = conf.connect_timeout_ms,
        request_timeout_ms = conf.request_timeout_ms,
        backoff_min_ms = conf.backoff_min_ms,
        backoff_max_ms = conf.backoff_max_ms,
        username = conf.username, password = conf.password,
        name = name, readonly = readonly and 1 or 0,
        tls = tls.context(conf.tls, false, name),
    })
    if C.sh_ffi_redis_pool_new(w, rc, pool_out, err_out) ~= 0 then
        error(where .. ": " .. ffi.string(err_out[0]), 0)
    end
    return pool_out[0]
end

function _M.new(conf, env)
    local self = setmetatable({ name = conf.name or "redis",
                                remote = conf.remote }, mt)
    -- a sub-chain of a connection that speaks another protocol (a Redis
    -- sub-chain in a Cassandra chain): what would act on the client
    -- connection is refused (see client_bound)
    local client = env.client_protocol or env.protocol
    if client ~= nil and client ~= "redis" then
        self.client_protocol = client
    end
    if env.worker ~= nil then
        -- a reload that leaves these settings alone keeps the pool, its
        -- backend connections and the clients pinned to them
        self.pool = pools.get("redis" .. tls.identity(conf.tls), conf,
                              function()
            return _M.new_pool(env.worker, conf, conf.remote, self.name,
                               (env.path or "chain") .. ": redis sink")
        end, C.sh_ffi_redis_pool_free)
    end
    return self
end

-- The database the client uses, for m:query_info() (its `db`): a SELECT
-- answered +OK sets chain.conn.redis_db, a RESET answered +RESET clears
-- it.  (A SELECT inside MULTI is answered +QUEUED and not followed.)  The
-- scan before sending runs compiled; the rare batch with one of them is
-- looked at again once answered.
local SELECT = require("shotover.redis.command_ids").id("SELECT")
local RESET = require("shotover.redis.command_ids").id("RESET")

local function switches_db(batch)
    for i = 1, batch.n do
        local id = batch[i].cmd_id
        if id == SELECT or id == RESET then
            return true
        end
    end
    return false
end

local function note_db(batch, resp, chain)
    for i = 1, batch.n do
        local m, r = batch[i], resp[i]
        if r ~= nil and not r:is_error() then
            if m.cmd_id == SELECT and r:line() == "OK" then
                chain.conn.redis_db = tonumber(m:arg(2))
            elseif m.cmd_id == RESET then
                chain.conn.redis_db = nil
            end
        end
    end
end

local function send(self, batch, chain)
    if self.pool == nil then                -- no worker: answer dry
        return require("shotover.protocols.redis").dry(batch, chain)
    end
    local resp = new_batch(batch.n)
    local db = switches_db(batch)
    if C.sh_ffi_redis_send(self.pool, chain.c, batch, resp) == AGAIN then
        chain:wait()
    end
    if db then
        note_db(batch, resp, chain)
    end
    return resp
end

-- Requests whose effect the C core applies to the client connection (it
-- closes it after QUIT, relays SUBSCRIBE's and MONITOR's replies and, after
-- HELLO 3, RESP3 pushes to it): in a connection of another protocol those
-- would close it or write RESP bytes into its stream.
local function client_bound(m)
    return band(m.cmd, CLIENT_BOUND) ~= 0
           or (m:command_is("HELLO") and m:arg(2) == "3")
end

-- The batch of a connection of another protocol: client-bound requests
-- get an error, the others go to the server; replies in request order.
local function send_foreign(self, batch, chain)
    local n, refused = batch.n, nil
    for i = 1, n do
        local m = batch[i]
        if client_bound(m) then
            refused = refused or {}
            refused[i] = error_reply(m, fmt("shotover: %s is not allowed in "
                                            .. "a redis sub-chain of a %s "
                                            .. "connection", m:command(),
                                            self.client_protocol))
        end
    end
    if refused == nil then
        return send(self, batch, chain)
    end
    return require("shotover.chain").except(batch, refused, send, self, chain)
end

-- The pool (and its kind) a chain that is only this sink hands to the C
-- core (shotover.runner.direct: its batches then never enter Lua), or nil
-- where the Lua path is needed: no worker (dry runs), or a sub-chain of a
-- connection of another protocol.
function methods.direct_pool(self)
    if self.client_protocol == nil and self.pool ~= nil then
        return self.pool, base.PROTO_REDIS
    end
    return nil
end

-- The common case inline: the code after the wait runs interpreted, and
-- each Lua frame it returns through costs there.
function methods.transform(self, batch, chain)
    local pool = self.pool
    if pool == nil or self.client_protocol ~= nil then
        if self.client_protocol ~= nil then
            return send_foreign(self, batch, chain)
        end
        return send(self, batch, chain)
    end
    local resp = new_batch(batch.n)
    local db = switches_db(batch)
    if C.sh_ffi_redis_send(pool, chain.c, batch, resp) == AGAIN then
        chain:wait()
    end
    if db then
        note_db(batch, resp, chain)
    end
    return resp
end

return _M
