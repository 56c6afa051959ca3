-- The C path: a source whose chain is only a redis sink runs a connection's
-- first batch through Lua, which hands the sink's pool to the C core, and
-- every later batch in C (sh_ffi_run_direct_redis).  Checked here: the
-- batches really take that path (shotover_direct_batches_total), the
-- chain's metrics count them as the Lua path does, and what the sink does
-- for a client -- pinned connections for MULTI and SELECT, errors, a dead
-- backend, a request timeout, pub/sub, QUIT -- works on batches of the C
-- path.  A chain with any other element stays in Lua.
local h = require("harness")
local NULL, OK, QUEUED = h.NULL, h.status("OK"), h.status("QUEUED")

local function start(o)
    local redis = h.redis_server({ args = { "--enable-debug-command", "yes" } })
    local port, admin = h.free_port(), h.free_port()
    local proxy = h.shotover({ port = port, config = h.config({
        listen = port, remote = redis.port, chain = o.chain, sink = o.sink,
        extra = string.format('admin = { listen = "127.0.0.1:%d" },', admin) }) })
    h.wait_listening(admin, "the admin endpoint")
    return { redis = redis, proxy = proxy, port = port, admin = admin }
end

local function metrics(env)
    return h.chain_metrics(env.admin, "redis", "redis")
end

describe("the C path of a chain that is only a redis sink", function()
    teardown(h.cleanup)
    local env

    setup(function()
        env = start({ sink = "request_timeout_ms = 300," })
    end)

    it("runs every batch after a connection's first in C, counted as in Lua", function()
        local before = metrics(env)
        local a = h.connect(env.port)
        assert.same(OK, a:cmd("SET", "d:k", "v"))             -- batch 1: Lua
        for i = 1, 50 do                                       -- 50 batches of 1
            assert.equal(i, a:cmd("INCR", "d:n"))
        end
        local pipe = {}                                        -- one batch of 20
        for _ = 1, 20 do pipe[#pipe + 1] = h.resp_command("GET", "d:k") end
        a:send(table.concat(pipe))
        local replies = a:read_replies(20)
        for i = 1, 20 do assert.equal("v", replies[i]) end
        local after = metrics(env)
        assert.equal(51, after.direct - before.direct, "batches on the C path")
        -- the chain's and the sink's series count all 71 requests
        assert.equal(71, after.requests - before.requests)
        assert.equal(71, after.latency - before.latency)
        assert.equal(71, after.sink_latency - before.sink_latency)
        a:close()
    end)

    it("keeps a client's state on its pinned connection: SELECT, MULTI/EXEC", function()
        local a, b = h.connect(env.port), h.connect(env.port)
        assert.equal("PONG", a:cmd("PING").status)
        assert.equal("PONG", b:cmd("PING").status)
        local before = metrics(env)
        assert.same(OK, a:cmd("SELECT", "3"))
        assert.same(OK, a:cmd("SET", "d:db", "three"))
        assert.equal(NULL, b:cmd("GET", "d:db"))               -- b is on db 0
        assert.equal("three", h.cli(env.redis.port, "-n", "3", "get", "d:db"))
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("INCR", "d:tx"))
        assert.same(QUEUED, a:cmd("INCR", "d:tx"))
        assert.equal(NULL, b:cmd("GET", "d:tx"))
        assert.same({ 1, 2 }, a:cmd("EXEC"))
        assert.equal("three", a:cmd("GET", "d:db"))
        assert.equal(9, metrics(env).direct - before.direct)  -- a's 7, b's 2
        a:close()
        b:close()
    end)

    it("returns the server's errors and a timeout's, and keeps the connection", function()
        local a = h.connect(env.port)
        assert.same(OK, a:cmd("SET", "d:str", "x"))
        local before = metrics(env)
        local e = a:cmd("LPUSH", "d:str", "y")
        assert.is_truthy(e.err and e.err:find("^WRONGTYPE"), tostring(e.err))
        -- longer than request_timeout_ms (300): an error reply, in order
        a:send(h.resp_command("DEBUG", "SLEEP", "1") .. h.resp_command("PING"))
        local r = a:read_replies(2, 10)
        assert.is_truthy(r[1].err and r[1].err:find("timed out", 1, true), tostring(r[1].err))
        assert.is_truthy(r[2].err or r[2].status == "PONG")
        -- once the server answers again, so does the connection
        h.wait_until(function()
            local p = a:cmd("PING")
            return p.status == "PONG"
        end, 10, "PING to be answered after the timeout")
        assert.is_true(metrics(env).direct - before.direct >= 3)
        a:close()
    end)

    it("relays pub/sub messages and closes on QUIT", function()
        local sub = h.connect(env.port)
        assert.equal("PONG", sub:cmd("PING").status)          -- batch 1: Lua
        local before = metrics(env)
        assert.same({ "subscribe", "d:ch", 1 }, sub:cmd("SUBSCRIBE", "d:ch"))
        h.wait_until(function()
            return tonumber(h.cli(env.redis.port, "pubsub", "numsub", "d:ch"):match("\n(%d+)")) == 1
        end, 10, "the subscription to reach the server")
        assert.equal("1", h.cli(env.redis.port, "publish", "d:ch", "hello"))
        assert.same({ "message", "d:ch", "hello" }, sub:read_reply(10))
        assert.equal(1, metrics(env).direct - before.direct)
        sub:close()

        local q = h.connect(env.port)
        assert.equal("PONG", q:cmd("PING").status)
        assert.same(OK, q:cmd("QUIT"))
        q:wait_closed(10)
    end)

    it("answers while the backend is down, and recovers when it is back", function()
        local a = h.connect(env.port)
        assert.equal("PONG", a:cmd("PING").status)
        local before = metrics(env)
        env.redis:stop()
        local e = a:cmd("GET", "d:k")
        assert.is_truthy(e.err, "an error reply while the server is down")
        env.redis:start()
        h.wait_until(function()
            local r = a:cmd("PING")
            return r.status == "PONG"
        end, 15, "PING through shotover once the server is back")
        assert.is_true(metrics(env).direct - before.direct >= 2)
        a:close()
    end)
end)

describe("a chain with other elements", function()
    teardown(h.cleanup)

    it("runs every batch in Lua", function()
        local env = start({ chain = '{ "query_counter", name = "q" }, '
                                    .. '{ "redis", remote = "%REMOTE%" }' })
        local before = metrics(env)
        local a = h.connect(env.port)
        for i = 1, 20 do assert.equal(i, a:cmd("INCR", "l:n")) end
        local m = metrics(env)
        assert.equal(20, m.requests - before.requests)
        assert.is_nil(m.text:find("shotover_direct_batches_total", 1, true))
        a:close()
    end)
end)
