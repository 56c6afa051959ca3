-- Backend failure: with redis-server gone every request gets a prompt error
-- reply (never a hang); when redis-server is back on the same port,
-- requests succeed again without restarting shotover.
local h = require("harness")
local OK = h.status("OK")

local CONNECT_TIMEOUT = 0.5   -- connect_timeout_ms in the configs below
local MARGIN = 1.5            -- scheduling slack on a loaded 2-core box

-- the reply must be shotover's own backend error
local function assert_backend_error(v, what)
    assert.is_table(v, what .. ": not an error reply: " .. tostring(v))
    local e = v.err
    assert.is_string(e, what .. ": not an error reply")
    assert.matches("^ERR", e, nil, false, what .. ": " .. e)
    assert.matches("shotover", e, 1, true)
    assert.matches("backend", e, 1, true)
end

-- send one command on c and time its reply; the reply must come within 10 s
local function timed(c, ...)
    local t0 = h.now()
    c:send(h.resp_command(...))
    local v, err = c:try_read_reply(10)
    if v == nil then error("no reply within 10 s: " .. tostring(err), 2) end
    return v, h.now() - t0
end

describe("shotover when its redis backend dies and comes back", function()
    local env, P, redis, pid

    setup(function()
        env = h.start_pair({ workers = 1,
            sink = "connect_timeout_ms = 500, request_timeout_ms = 3000," })
        P, redis, pid = env.port, env.redis, env.proxy.proc.pid
    end)
    teardown(h.cleanup)

    it("works before the failure", function()
        assert.same(OK, h.connect(P):cmd("SET", "bf:before", "1"))
        assert.equal("1", h.cli(redis.port, "get", "bf:before"))
    end)

    it("answers requests with a backend error within the connect timeout once redis is killed", function()
        local old = h.connect(P)          -- a client connected before the crash
        assert.same(h.status("PONG"), old:cmd("PING"))
        redis:stop(h.SIGKILL)
        -- the first request may be the one that finds the connection dead
        for i = 1, 10 do
            local v, took = timed(old, "GET", "bf:before")
            assert_backend_error(v, "request " .. i .. " on an old connection")
            assert.is_true(took < CONNECT_TIMEOUT + MARGIN,
                string.format("request %d took %.2f s", i, took))
        end
        -- new clients get the same
        for i = 1, 5 do
            local c = h.connect(P)
            local v, took = timed(c, "SET", "bf:during", tostring(i))
            assert_backend_error(v, "request on new connection " .. i)
            assert.is_true(took < CONNECT_TIMEOUT + MARGIN,
                string.format("new connection %d waited %.2f s", i, took))
            c:close()
        end
    end)

    it("answers every request of a pipeline with a backend error while redis is down", function()
        local c = h.connect(P)
        local t0 = h.now()
        c:send(h.resp_command("SET", "bf:p", "1") .. h.resp_command("GET", "bf:p")
            .. h.resp_command("INCR", "bf:q"))
        local replies = c:read_replies(3, 10)
        for i = 1, 3 do assert_backend_error(replies[i], "pipelined request " .. i) end
        assert.is_true(h.now() - t0 < CONNECT_TIMEOUT + MARGIN)
        -- and the client connection stays open for more
        local v = timed(c, "PING")
        assert_backend_error(v, "PING after the pipeline")
    end)

    it("prints the backend error through redis-cli without hanging", function()
        local t0 = h.now()
        local out = h.cli(P, "get", "bf:x", { timeout = 10 })
        assert.matches("^ERR.*shotover.*backend", out)
        assert.is_true(h.now() - t0 < CONNECT_TIMEOUT + MARGIN + 0.5)
    end)

    it("recovers on its own when redis comes back on the same port", function()
        local c = h.connect(P)   -- connected during the outage
        redis:start()
        local t0 = h.now()
        h.wait_until(function()
            local v = timed(c, "SET", "bf:after", "back")
            return v ~= nil and v.status == "OK", v and (v.err or v.status)
        end, 10, "SET through shotover to succeed after the restart", 0.05)
        local took = h.now() - t0
        -- reconnect backoff is capped around 1 s
        assert.is_true(took < 5, string.format("recovery took %.2f s", took))
        assert.equal("back", c:cmd("GET", "bf:after"))
        assert.equal("back", h.cli(redis.port, "get", "bf:after"))
        assert.equal("back", h.cli(P, "get", "bf:after"))
        -- the same shotover process all along
        assert.is_true(env.proxy:alive())
        assert.equal(pid, env.proxy.proc.pid)
    end)

    it("recovers again after a second crash", function()
        redis:stop(h.SIGKILL)
        local c = h.connect(P)
        assert_backend_error((timed(c, "GET", "bf:after")), "request after the second crash")
        redis:start()
        h.wait_until(function()
            local v = timed(c, "PING")
            return v ~= nil and v.status == "PONG"
        end, 10, "PING through shotover after the second restart", 0.05)
        assert.is_true(env.proxy:alive())
    end)

    it("fails a client blocked in BLPOP with an error when redis dies, instead of hanging", function()
        local a = h.connect(P)
        a:send(h.resp_command("BLPOP", "bf:never", "30"))
        h.wait_until(function()
            local info = h.cli(redis.port, "info", "clients")
            return tonumber(info:match("blocked_clients:(%d+)")) == 1
        end, 5, "redis to report the blocked client")
        local t0 = h.now()
        redis:stop(h.SIGKILL)
        local v = a:try_read_reply(5)
        assert.is_table(v, "no reply to the blocked BLPOP within 5 s of the crash")
        assert.is_string(v.err)
        assert.matches("^ERR", v.err)
        assert.is_true(h.now() - t0 < 5)
        redis:start()
        h.wait_until(function()
            local r = timed(h.connect(P), "PING")
            return r.status == "PONG"
        end, 10, "PING through shotover after the restart", 0.05)
    end)
end)

describe("shotover when its redis backend is down from the start", function()
    local P, rport, proxy

    setup(function()
        rport = h.free_port()
        P = h.free_port()
        proxy = h.shotover({
            config = h.config({ listen = P, remote = rport,
                sink = "connect_timeout_ms = 500," }),
            port = P })   -- ready once it answers PING, even with an error
    end)
    teardown(h.cleanup)

    it("starts and answers with backend errors", function()
        local c = h.connect(P)
        for i = 1, 3 do
            local v, took = timed(c, "GET", "k")
            assert_backend_error(v, "request " .. i)
            assert.is_true(took < CONNECT_TIMEOUT + MARGIN)
        end
    end)

    it("starts forwarding once redis appears on the configured port", function()
        local redis = h.redis_server({ port = rport })
        local c = h.connect(P)
        h.wait_until(function()
            local v = timed(c, "SET", "late:k", "v")
            return v.status == "OK"
        end, 10, "SET to succeed once redis is up", 0.05)
        assert.equal("v", h.cli(redis.port, "get", "late:k"))
        assert.is_true(proxy:alive())
    end)
end)

describe("shotover when its redis backend accepts but never answers", function()
    local P, proxy, hole

    setup(function()
        hole = h.blackhole()
        P = h.free_port()
        local ready = h.free_port()
        local rs = h.redis_server()
        -- a second source on a working backend tells us when it is ready
        proxy = h.shotover({
            config = h.config({ listen = P, remote = hole.port,
                sink = "connect_timeout_ms = 500, request_timeout_ms = 500,",
                extra_sources = string.format(
                    '{ name = "ready", protocol = "redis", listen = "127.0.0.1:%d", chain = { { "redis", remote = "127.0.0.1:%d" } } },',
                    ready, rs.port) }),
            port = ready })
    end)
    teardown(h.cleanup)

    it("fails each request after request_timeout_ms instead of hanging", function()
        local c = h.connect(P)
        for i = 1, 3 do
            local v, took = timed(c, "GET", "k")
            assert.is_table(v, "request " .. i .. ": " .. tostring(v))
            assert.is_string(v.err, "request " .. i .. " is not an error")
            assert.matches("^ERR", v.err)
            -- connect (may be needed) plus the request timeout, with slack
            assert.is_true(took < 0.5 + 0.5 + MARGIN,
                string.format("request %d took %.2f s", i, took))
        end
        assert.is_true(proxy:alive())
    end)
end)

describe("shotover when its redis backend stalls", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1,
            sink = "connect_timeout_ms = 500, request_timeout_ms = 400," })
        P, R = env.port, env.redis.port
        for i = 1, 10 do
            assert.equal("OK", h.cli(R, "set", "stall:" .. i, "value-" .. i))
        end
    end)
    teardown(h.cleanup)

    it("times requests out and never hands a late reply to the wrong client", function()
        local conns = {}
        for i = 1, 10 do conns[i] = h.connect(P) end
        -- warm up: all shared connections are up
        for i, c in ipairs(conns) do assert.equal("value-" .. i, c:cmd("GET", "stall:" .. i)) end
        local saw_timeout = false
        for _ = 1, 3 do
            -- stall every client of redis (the proxy's connections too) for 1 s
            assert.equal("OK", h.cli(R, "client", "pause", "1000", "all"))
            local t0 = h.now()
            -- requests go in before, during and after the stall; each reply
            -- is either an error or the value of the key that client asked for
            while h.now() - t0 < 1.6 do
                for i, c in ipairs(conns) do
                    c:send(h.resp_command("GET", "stall:" .. i))
                end
                for i, c in ipairs(conns) do
                    local s = h.now()
                    local v = c:read_reply(5)
                    local took = h.now() - s
                    if type(v) == "table" and v.err then
                        assert.matches("^ERR", v.err)
                        saw_timeout = true
                    else
                        assert.equal("value-" .. i, v, "client " .. i .. " got another client's reply")
                    end
                    assert.is_true(took < 0.4 + MARGIN, string.format("reply took %.2f s", took))
                end
                h.sleep(0.05)
            end
        end
        assert.is_true(saw_timeout, "no request timed out during the 1 s stalls")
        -- and afterwards all is well
        h.wait_until(function()
            local v = conns[1]:cmd("GET", "stall:1")
            return v == "value-1"
        end, 10, "GET to succeed after the stalls", 0.05)
        for i, c in ipairs(conns) do assert.equal("value-" .. i, c:cmd("GET", "stall:" .. i)) end
        assert.is_true(env.proxy:alive())
    end)
end)

describe("shotover when connecting to its redis backend never completes", function()
    local P, proxy

    setup(function()
        -- a listener with a full accept queue: the kernel drops the SYNs
        local hole = h.blackhole({ unconnectable = true })
        P = h.free_port()
        proxy = h.shotover({
            config = h.config({ listen = P, remote = hole.port,
                sink = "connect_timeout_ms = 700, request_timeout_ms = 5000," }),
            port = P })
    end)
    teardown(h.cleanup)

    it("fails requests with a backend error once connect_timeout_ms has passed, never hanging", function()
        local c = h.connect(P)
        for i = 1, 4 do
            local v, took = timed(c, "GET", "k")
            assert_backend_error(v, "request " .. i)
            assert.is_true(took < 0.7 + MARGIN, string.format("request %d took %.2f s", i, took))
        end
        -- several clients at once are failed together, not one after another
        local conns = {}
        for i = 1, 5 do conns[i] = h.connect(P) end
        local t0 = h.now()
        for _, cc in ipairs(conns) do cc:send(h.resp_command("GET", "k")) end
        for i, cc in ipairs(conns) do assert_backend_error(cc:read_reply(10), "client " .. i) end
        assert.is_true(h.now() - t0 < 0.7 + MARGIN, string.format("5 clients took %.2f s", h.now() - t0))
        assert.is_true(proxy:alive())
    end)
end)
