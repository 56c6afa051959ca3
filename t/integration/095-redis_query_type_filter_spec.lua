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
