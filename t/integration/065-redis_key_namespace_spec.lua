-- key_namespace in front of a real redis-server: two tenants, each through
-- a source of its own with its own prefix, share one Redis and cannot see
-- each other's keys; KEYS and SCAN show a tenant its keys without the
-- prefix; what would reach beyond the namespace is refused.
local h = require("harness")

describe("key_namespace in front of redis", function()
    local R, A, B

    setup(function()
        local r = h.redis_server()
        R = r.port
        A, B = h.free_port(), h.free_port()
        h.shotover({ port = A, config = h.config({ listen = A, remote = R,
            chain = [[
                { "key_namespace", prefix = "tenant1:" },
                { "redis", remote = "%REMOTE%" }]],
            extra_sources = string.format([[
    { name = "tenant2", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "key_namespace", prefix = "tenant2:" },
                { "redis", remote = "127.0.0.1:%d" } } },]], B, R) }) })
        -- the second source listens too
        h.wait_until(function()
            return h.cli(B, "ping") == "PONG"
        end, 10, "tenant2's source")
        h.cli(R, "set", "shared", "backend's own")
    end)
    teardown(h.cleanup)

    it("keeps each tenant's keys apart, stored under its prefix", function()
        assert.equal("OK", h.cli(A, "set", "k", "one"))
        assert.equal("OK", h.cli(B, "set", "k", "two"))
        assert.equal("one", h.cli(A, "get", "k"))
        assert.equal("two", h.cli(B, "get", "k"))
        assert.equal("one", h.cli(R, "get", "tenant1:k"))
        assert.equal("two", h.cli(R, "get", "tenant2:k"))
        assert.equal("", h.cli(A, "get", "shared"))
        assert.equal("OK", h.cli(A, "mset", "a", "1", "b", "2"))
        assert.equal("1\n2", h.cli(A, "mget", "a", "b"))
        assert.equal("\n", h.cli(B, "mget", "a", "b"))
        assert.equal("1", h.cli(B, "exists", "k", "a"))   -- its k only
        assert.equal("PONG", h.cli(A, "ping"))
        assert.equal("hello", h.cli(A, "ping", "hello"))  -- not a key
    end)

    it("shows KEYS * and SCAN only the tenant's keys, without the prefix",
       function()
        h.cli(A, "set", "only1", "x")
        h.cli(B, "set", "only2", "x")
        local function sorted(s)
            local t = {}
            for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
            table.sort(t)
            return table.concat(t, " ")
        end
        assert.equal("a b k only1", sorted(h.cli(A, "keys", "*")))
        assert.equal("k only2", sorted(h.cli(B, "keys", "*")))
        assert.equal("only1", h.cli(A, "keys", "only*"))
        -- redis-cli --scan follows the cursor to the end
        assert.equal("a b k only1", sorted(h.cli(A, "--scan")))
        assert.equal("only2", sorted(h.cli(B, "--scan", "--pattern", "o*")))
        local out = h.cli(A, "scan", "0", "count", "1000")
        assert.equal("0\na b k only1", out:match("^(%d+)\n") .. "\n"
                     .. sorted(out:gsub("^%d+\n", "")))
    end)

    it("takes the prefix off BLPOP's key and runs transactions", function()
        h.cli(A, "rpush", "q", "job")
        assert.equal("q\njob", h.cli(A, "blpop", "q", "1"))
        assert.equal("0", h.cli(R, "exists", "tenant1:q"))
        local out = h.cli(A, { stdin = "MULTI\nKEYS only*\nINCR n\nEXEC\n" })
        assert.matches("only1\n1$", out)
        assert.equal("1", h.cli(R, "get", "tenant1:n"))
    end)

    it("answers RANDOMKEY with a key of the tenant's only", function()
        -- many keys of the backend's own, one of tenant2's
        local lines = {}
        for i = 1, 300 do
            lines[#lines + 1] = "SET other:" .. i .. " x"
        end
        h.cli(R, { stdin = table.concat(lines, "\n") .. "\n" })
        h.cli(B, "flushall")            -- refused: tenant2 keeps its keys
        local seen = {}
        for _ = 1, 5 do
            local k = h.cli(B, "randomkey")
            assert.is_truthy(k == "k" or k == "only2", k)
            seen[k] = true
        end
        assert.is_truthy(next(seen))
    end)

    it("refuses FLUSHALL, scripts and keyspace channels", function()
        assert.matches("key_namespace: FLUSHALL reaches beyond",
                       h.cli(A, "flushall"))
        assert.matches("allow_scripts", h.cli(A, "eval", "return 1", "0"))
        assert.matches("keyspace notification",
                       h.cli(A, "psubscribe", "*", { timeout = 5 }))
        assert.equal("two", h.cli(B, "get", "k"))      -- nothing flushed
    end)
end)
