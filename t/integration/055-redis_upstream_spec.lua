-- The upstream layer under every sink: pools made and freed while the
-- worker runs (what a cluster sink does when its topology changes), and
-- backends named by host name, resolved without blocking the loop.
local h = require("harness")

describe("backend pools made and freed while shotover runs", function()
    teardown(h.cleanup)

    it("serve every batch through a pool of its own, freed after it",
       function()
        local env = h.start_pair({ chain = [[
            { "pool_cycle", remote = "%REMOTE%" } ]] })
        local c = h.connect(env.port)
        for i = 1, 200 do
            assert.same(h.status("OK"),
                        c:cmd("SET", "pc:" .. i, tostring(i)))
        end
        -- pipelined: one batch, one pool, many replies
        local cmds = {}
        for i = 1, 200 do
            cmds[#cmds + 1] = h.resp_command("GET", "pc:" .. i)
        end
        c:send(table.concat(cmds))
        for i = 1, 200 do
            assert.equal(tostring(i), c:read_reply())
        end
        assert.equal("200", h.cli(env.redis.port, "get", "pc:200"))
    end)

    it("fail what a pool owes when it is freed first, and go on serving",
       function()
        local env = h.start_pair({ chain = [[
            { "pool_cycle", remote = "%REMOTE%", free_early = true } ]] })
        local c = h.connect(env.port)
        for _ = 1, 20 do
            local v = c:cmd("PING")
            assert.is_table(v)
            assert.matches("shotover: backend .* unavailable: shutting down",
                           v.err)
        end
        assert.is_true(env.proxy:alive())
    end)
end)

describe("a backend named by host name", function()
    teardown(h.cleanup)

    it("is resolved at connect time and served", function()
        local r = h.redis_server()
        local port = h.free_port()
        local p = h.shotover({ port = port, config = h.config({
            listen = port, chain = string.format(
                '{ "redis", remote = "localhost:%d" }', r.port) }) })
        local c = h.connect(port)
        assert.same(h.status("OK"), c:cmd("SET", "dns:k", "v"))
        assert.equal("v", h.cli(r.port, "get", "dns:k"))
        assert.is_true(p:alive())
    end)

    it("that does not resolve fails requests with the reason, and the proxy "
       .. "keeps serving", function()
        local port = h.free_port()
        local p = h.shotover({ port = port, config = h.config({
            listen = port, chain = [[
                { "redis", remote = "no-such-host.invalid:6379",
                  backoff_min_ms = 1, backoff_max_ms = 1 } ]] }) })
        local c = h.connect(port)
        local v = c:cmd("GET", "k")
        assert.is_table(v)
        assert.matches('cannot resolve "no%-such%-host%.invalid"', v.err)
        assert.is_true(p:alive())
    end)
end)
