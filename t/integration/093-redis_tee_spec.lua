-- tee in front of real redis-servers: a main one and a shadow one.  Writes
-- reach both, waiting or asynchronously; mismatches are logged, failed or
-- sent to a third server; the admin endpoint flips which side answers; an
-- asynchronous tee whose shadow hangs drops (and counts) instead of
-- holding the client.
local h = require("harness")

local function proxy(main, shadow, tee, admin)
    local port = h.free_port()
    local s = h.shotover({ port = port, config = string.format([[
return { workers = 1, %s sources = { { name = "r", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "tee", %s chain = { { "redis", remote = "127.0.0.1:%d",
                            request_timeout_ms = 60000 } } },
    { "redis", remote = "127.0.0.1:%d" } } } } }
]], admin and string.format('admin = { listen = "127.0.0.1:%d" },', admin)
    or "", port, tee, shadow.port, main.port) })
    return port, s
end

describe("tee in front of two redis servers", function()
    local A, B
    setup(function()
        A, B = h.redis_server(), h.redis_server()
    end)
    teardown(h.cleanup)

    it("writes to both servers before answering with wait = true",
       function()
        local P = proxy(A, B, 'wait = true,')
        assert.equal("OK", h.cli(P, "set", "w:1", "v1"))
        -- the reply waited for both: no polling needed
        assert.equal("v1", h.cli(A.port, "get", "w:1"))
        assert.equal("v1", h.cli(B.port, "get", "w:1"))
        -- MULTI/EXEC pins a connection on both sides
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "w:2", "x"))
        assert.same({ h.status("OK") }, c:cmd("EXEC"))
        assert.equal("x", h.cli(B.port, "get", "w:2"))
    end)

    it("copies asynchronously with wait = false", function()
        local P = proxy(A, B, 'wait = false,')
        local c = h.connect(P)
        for i = 1, 200 do
            assert.same(h.status("OK"), c:cmd("SET", "a:" .. i, "v" .. i))
        end
        h.wait_until(function() return h.cli(B.port, "get", "a:200") == "v200" end,
                     10, "the shadow to get the last write")
        assert.equal("v1", h.cli(B.port, "get", "a:1"))
        assert.equal("200", h.cli(B.port, "eval",
            "return #redis.call('keys', 'a:*')", "0"))
    end)

    it("logs mismatches with log_mismatch and counts them", function()
        local M = h.free_port()
        local P, s = proxy(A, B, 'behavior = "log_mismatch", wait = false,', M)
        h.cli(A.port, "set", "m:1", "main")
        h.cli(B.port, "set", "m:1", "shadow")
        assert.equal("main", h.cli(P, "get", "m:1"))
        s:wait_log('replies differ for ["get", "m:1"]: main "main", tee "shadow"')
        assert.equal(1, h.metric(M, 'shotover_tee_mismatches_total{name="tee"}'))
    end)

    it("fails mismatching requests with fail_on_mismatch", function()
        local P = proxy(A, B, 'behavior = "fail_on_mismatch",')
        h.cli(A.port, "set", "f:1", "same")
        h.cli(B.port, "set", "f:1", "same")
        h.cli(A.port, "set", "f:2", "main")
        h.cli(B.port, "set", "f:2", "shadow")
        assert.equal("same", h.cli(P, "get", "f:1"))
        assert.equal('ERR shotover: tee "tee": the replies differ (main "main", '
                     .. 'tee "shadow")', h.chomp(h.cli(P, "get", "f:2")))
    end)

    it("sends mismatching requests to the mismatch chain", function()
        local X = h.redis_server()
        local P = proxy(A, B, string.format([[behavior = "subchain_on_mismatch",
            mismatch_chain = { { "redis", remote = "127.0.0.1:%d" } },]], X.port))
        h.cli(A.port, "set", "s:1", "same")
        h.cli(B.port, "set", "s:1", "same")
        h.cli(A.port, "set", "s:2", "main")
        assert.equal("same", h.cli(P, "get", "s:1"))
        assert.equal("main", h.cli(P, "get", "s:2"))
        local stats = h.cli(X.port, "info", "commandstats")
        assert.matches("cmdstat_get:calls=1,", stats)
    end)

    it("answers from the side the admin endpoint's switch names", function()
        local M = h.free_port()
        local P = proxy(A, B, 'name = "mirror", wait = false,', M)
        h.cli(A.port, "set", "r:1", "main")
        h.cli(B.port, "set", "r:1", "shadow")
        assert.same({ 200, "mirror.result_source main (main|tee)\n" },
                    { h.http("GET", M, "/switches") })
        assert.equal("main", h.cli(P, "get", "r:1"))
        assert.same({ 200, "mirror.result_source tee\n" },
                    { h.http("PUT", M, "/switches/mirror.result_source", "tee") })
        assert.equal("shadow", h.cli(P, "get", "r:1"))
        assert.equal(400, (h.http("PUT", M, "/switches/mirror.result_source",
                                  "left")))
        assert.equal(404, (h.http("PUT", M, "/switches/nope", "tee")))
        h.http("PUT", M, "/switches/mirror.result_source", "main")
        assert.equal("main", h.cli(P, "get", "r:1"))
    end)

    it("starts a new shadow connection when the old one's backend is lost",
       function()
        local S = h.redis_server()
        local P = proxy(A, S, 'wait = false,')
        local c = h.connect(P)
        -- MULTI pins the shadow to a dedicated backend connection
        assert.same(h.status("OK"), c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "n:1", "x"))
        assert.same({ h.status("OK") }, c:cmd("EXEC"))
        h.wait_until(function() return h.cli(S.port, "get", "n:1") == "x" end,
                     10, "the shadow to run the transaction")
        S:stop(h.SIGKILL)                     -- the shadow's backend is lost
        S:start()
        -- the client is unaffected, and its copies reach the new server
        -- through a new shadow connection
        h.wait_until(function()
            assert.same(h.status("OK"), c:cmd("SET", "n:2", "y"))
            return h.cli(S.port, "get", "n:2") == "y"
        end, 20, "copies to reach the restarted shadow server")
        assert.same(h.status("OK"), c:cmd("SET", "n:3", "z"))
        assert.equal("z", h.cli(A.port, "get", "n:3"))
    end)

    it("drops and counts what an asynchronous tee cannot buffer, never "
       .. "holding the client", function()
        local S = h.redis_server()
        local M = h.free_port()
        local P = proxy(A, S, 'wait = false, buffer_size = 10,', M)
        S.proc:kill(h.SIGSTOP)                -- the shadow hangs
        h.defer(function() S.proc:kill(h.SIGCONT) end)
        local c = h.connect(P)
        local reqs = {}
        for i = 1, 100 do
            reqs[i] = h.resp_command("SET", "d:" .. i, "v")
        end
        assert.is_true(c:send(table.concat(reqs)))
        local replies = c:read_replies(100, 10)
        for i = 1, 100 do
            assert.same(h.status("OK"), replies[i])
        end
        local dropped = h.metric(M, 'shotover_tee_dropped_total{name="tee"}')
        assert.equal(90, dropped)
        S.proc:kill(h.SIGCONT)
        h.wait_until(function() return h.cli(S.port, "dbsize") == "10" end, 10,
                     "the shadow to get the ten buffered writes")
    end)
end)
