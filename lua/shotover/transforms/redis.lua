-- redis: the sink for one Redis server.  Stateless requests of all clients
-- share pipelined connections; a client entering a stateful mode (MULTI,
-- WATCH, SELECT, AUTH, HELLO, CLIENT, blocking commands, SUBSCRIBE...) gets
-- a dedicated connection.  See docs/transforms/redis.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"

local C = base.C
local AGAIN = base.AGAIN
local new_batch = message.new_batch
local setmetatable = setmetatable

local _M = {
    name = "redis",
    version = "0.1.0",
    lanes = true,                       -- batches of a connection may run at once
    terminal = true,
    protocols = { "redis" },            -- it sends requests as they are
    schema = {
        remote = { type = "hostport", required = true },
        connections = { type = "integer", min = 1, max = 64, default = 1 },
        connect_timeout_ms = { type = "integer", min = 1, default = 1000 },
        request_timeout_ms = { type = "integer", min = 0, default = 5000 },
        backoff_min_ms = { type = "integer", min = 1, default = 50 },
        backoff_max_ms = { type = "integer", min = 1, default = 1000 },
        username = { type = "string" },
        password = { type = "string" },
    },
}

local mt = { __index = {} }
local methods = mt.__index

function _M.check_config(conf)
    if conf.username and not conf.password then
        return nil, "username needs a password"
    end
    return true
end

local pool_out = ffi.new("sh_redis_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

function _M.new(conf, env)
    local self = setmetatable({ name = conf.name or "redis",
                                remote = conf.remote }, mt)
    if env.worker ~= nil then
        local host, port = schema.parse_hostport(conf.remote)
        local rc = ffi.new("sh_redis_conf_t", {
            host = host, port = port, connections = conf.connections,
            connect_timeout_ms = conf.connect_timeout_ms,
            request_timeout_ms = conf.request_timeout_ms,
            backoff_min_ms = conf.backoff_min_ms,
            backoff_max_ms = conf.backoff_max_ms,
            username = conf.username, password = conf.password,
            name = self.name,
        })
        if C.sh_ffi_redis_pool_new(env.worker, rc, pool_out, err_out) ~= 0
        then
            error((env.path or "chain") .. ": redis sink: "
                  .. ffi.string(err_out[0]), 0)
        end
        self.pool = pool_out[0]
    end
    return self
end

function methods.transform(self, batch, chain)
    if self.pool == nil then                -- no worker: answer dry
        return require("shotover.protocols.redis").dry(batch, chain)
    end
    local resp = new_batch(batch.n)
    if C.sh_ffi_redis_send(self.pool, chain.c, batch, resp) == AGAIN then
        chain:wait()
    end
    return resp
end

return _M
