-- query_type_filter in front of a real redis-server: refused commands get an
-- error and never reach Redis.
local h = require("harness")

describe("query_type_filter in front of redis", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1, chain = [[
            { "query_type_filter", deny = { "write", "read_write" } },
            { "redis", remote = "%REMOTE%" }]] })
        P, R = env.port, env.redis.port
        h.cli(R, "set", "k", "before")
    end)
    teardown(h.cleanup)

    it("refuses writes with an error and lets reads through", function()
        assert.matches("query_type_filter: read_write queries are not "
                       .. "allowed", h.cli(P, "set", "k", "after"))
        assert.matches("write queries are not allowed",
                       h.cli(P, "del", "k"))
        assert.equal("before", h.cli(P, "get", "k"))
        -- nothing reached redis
        assert.equal("before", h.cli(R, "get", "k"))
    end)
end)

describe("query_type_filter's read-only recipe in front of redis",
         function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1, chain = [[
            { "query_type_filter", allow = { "read", "connection" } },
            { "redis", remote = "%REMOTE%" }]] })
        P, R = env.port, env.redis.port
        h.cli(R, "set", "k", "v")
        h.cli(R, "config", "set", "maxmemory-policy", "noeviction")
    end)
    teardown(h.cleanup)

    it("lets reads and connection commands through", function()
        assert.equal("v", h.cli(P, "get", "k"))
        assert.equal("1", h.cli(P, "exists", "k"))
        assert.equal("PONG", h.cli(P, "ping"))
        assert.equal("v", h.cli(P, "get", "k", { pre = { "-3" } }))  -- HELLO 3
        assert.equal("OK", h.cli(P, "client", "setname", "ro"))
        assert.equal("v", h.cli(P, "-n", "0", "get", "k"))           -- SELECT 0
    end)

    it("refuses SHUTDOWN NOSAVE, and the backend stays up", function()
        assert.matches("query_type_filter: admin queries are not allowed",
                       h.cli(P, "shutdown", "nosave"))
        assert.equal("PONG", h.cli(R, "ping"))
        assert.is_true(env.redis.proc:alive())
        assert.equal("v", h.cli(P, "get", "k"))
    end)

    it("refuses CONFIG SET, DEBUG, FLUSHALL, KEYS and writes", function()
        assert.matches("admin queries are not allowed",
                       h.cli(P, "config", "set", "maxmemory-policy",
                             "allkeys-lru"))
        assert.equal("maxmemory-policy\nnoeviction",
                     h.cli(R, "config", "get", "maxmemory-policy"))
        assert.matches("admin queries are not allowed",
                       h.cli(P, "debug", "sleep", "0"))
        assert.matches("admin queries are not allowed",
                       h.cli(P, "config", "get", "requirepass"))
        assert.matches("write queries are not allowed", h.cli(P, "flushall"))
        assert.matches("admin queries are not allowed", h.cli(P, "keys", "*"))
        assert.matches("read_write queries are not allowed",
                       h.cli(P, "set", "k", "w"))
        assert.equal("v", h.cli(R, "get", "k"))
    end)
end)
