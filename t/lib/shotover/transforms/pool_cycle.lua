-- pool_cycle (tests only, t/lib): a Redis sink that makes a pool for every
-- batch and frees it once the batch is answered -- or, with free_early,
-- right after sending, before the replies can come.  What a cluster sink
-- does when its topology changes: pools made and freed while the worker
-- runs (sh_ffi_redis_pool_new / sh_ffi_redis_pool_free).
local ffi = require "ffi"
local base = require "shotover.ffi"
local message = require "shotover.message"
local schema = require "shotover.schema"

local C = base.C

local _M = {
    name = "pool_cycle",
    version = "0.1.0",
    capabilities = { sink = true },
    protocols = { "redis" },
    schema = {
        remote = { type = "hostport", required = true },
        free_early = { type = "boolean", default = false },
    },
}

local mt = { __index = {} }
local pool_out = ffi.new("sh_redis_pool_t *[1]")
local err_out = ffi.new("const char *[1]")

function _M.new(conf, env)
    local host, port = schema.parse_hostport(conf.remote)
    return setmetatable({ worker = env.worker, host = host, port = port,
                          free_early = conf.free_early }, mt)
end

function mt.__index.transform(self, batch, chain)
    local rc = ffi.new("sh_redis_conf_t", {
        host = self.host, port = self.port, connections = 1,
        connect_timeout_ms = 1000, request_timeout_ms = 5000,
        backoff_min_ms = 1, backoff_max_ms = 10, name = "pool_cycle" })
    assert(C.sh_ffi_redis_pool_new(self.worker, rc, pool_out, err_out) == 0)
    local pool = pool_out[0]
    local resp = message.new_batch(batch.n)
    local again = C.sh_ffi_redis_send(pool, chain.c, batch, resp)
                  == base.AGAIN
    if self.free_early then
        C.sh_ffi_redis_pool_free(pool)
        pool = nil
    end
    if again then
        chain:wait()
    end
    if pool ~= nil then
        C.sh_ffi_redis_pool_free(pool)
    end
    return resp
end

return _M
