-- SIGTERM and SIGINT drain: shotover accepts nothing more, /ready answers
-- 503 while the admin endpoint stays up, requests in flight get their
-- replies, idle connections close, whatever remains closes at
-- drain_timeout, and the exit status is 0; a second signal stops at once.
-- And a second instance on an address shotover serves refuses to start.
local h = require("harness")
local OK = h.status("OK")

-- a shotover in front of redis with an admin endpoint; extra: config text
local function start(redis, extra)
    local P, A = h.free_port(), h.free_port()
    local s = h.shotover({ port = P, config = h.config({ listen = P,
        remote = redis.port,
        extra = string.format('admin = { listen = "127.0.0.1:%d" }, %s', A,
                              extra or "") }) })
    s:wait_log("running with", 15)       -- signals are handled from here
    return s, P, A
end

-- a client of shotover on port P blocked in BLPOP on redis (it holds a
-- drain: its batch never ends)
local function blocked_client(redis, P)
    local c = h.connect(P)
    c:send(h.resp_command("BLPOP", "drain:never", "0"))
    h.wait_until(function()
        return (redis:cli("INFO", "clients"):match("blocked_clients:(%d+)")) == "1"
    end, 10, "BLPOP to block")
    return c
end

local function refused(port)
    local c = h.try_connect(port, 1)
    if c then c:close() end
    return c == nil
end

describe("draining on SIGTERM", function()
    local redis

    setup(function() redis = h.redis_server() end)
    teardown(h.cleanup)

    it("answers the request in flight on a paused backend, closes idle clients, refuses new ones, answers /ready 503 to the end, exits 0", function()
        local s, P, A = start(redis, "drain_timeout = 20,")
        assert.equal(200, (h.http("GET", A, "/ready")))
        local busy, idle = h.connect(P), h.connect(P)
        assert.equal("PONG", busy:cmd("PING").status)
        assert.equal("PONG", idle:cmd("PING").status)
        -- Redis holds writes; busy's SET is read by Redis and waits
        assert.equal("OK", redis:cli("CLIENT", "PAUSE", "1500", "WRITE"))
        busy:send(h.resp_command("SET", "drain:k", "v"))
        h.wait_until(function()
            return h.clients_by_last_cmd(redis.port, "set") >= 1
                   or (redis:cli("INFO", "clients"):match("blocked_clients:(%d+)") or "0") ~= "0"
        end, 10, "the SET to reach the paused Redis")

        assert.is_true(s.proc:kill(h.SIGTERM))
        s:wait_log("draining", 10)
        -- the admin endpoint stays up, not ready, for the whole drain
        assert.equal(503, (h.http("GET", A, "/ready")))
        assert.is_true((idle:wait_closed(10)), "the idle client is closed")
        h.wait_until(function() return refused(P) end, 10, "new connections refused")
        assert.is_true(s:alive(), "still draining while a reply is owed")
        assert.equal(503, (h.http("GET", A, "/ready")))
        -- the reply comes once the pause ends, then the connection closes
        assert.same(OK, busy:read_reply(10))
        assert.is_true((busy:wait_closed(10)))
        local st = s.proc:wait(10)
        assert.is_table(st, "shotover exits after the drain")
        assert.equal(0, st.code)
        assert.matches("drained: every connection is closed", s:log())
        assert.equal("v", redis:cli("GET", "drain:k"))
    end)

    it("stops at once on a second signal, still with status 0", function()
        local s, P = start(redis, "drain_timeout = 60,")
        local blocked = blocked_client(redis, P)
        s.proc:kill(h.SIGINT)
        s:wait_log("draining", 10)
        assert.is_true(s:alive(), "a blocked client holds the drain")
        s.proc:kill(h.SIGTERM)
        local st = s.proc:wait(10)
        assert.is_table(st, "the second signal stops it")
        assert.equal(0, st.code)
        assert.matches("while draining: stopping now", s:log())
        assert.is_true((blocked:wait_closed(5)))
    end)

    it("closes what remains at drain_timeout", function()
        local s, P = start(redis, "drain_timeout = 0.5,")
        local blocked = blocked_client(redis, P)
        s.proc:kill(h.SIGTERM)
        local st = s.proc:wait(15)
        assert.is_table(st, "shotover exits at drain_timeout")
        assert.equal(0, st.code)
        assert.matches("drain_timeout %(500ms%) reached", s:log())
        assert.is_true((blocked:wait_closed(5)))
    end)
end)

describe("a second instance on the same address", function()
    local redis

    setup(function() redis = h.redis_server() end)
    teardown(h.cleanup)

    it("refuses to start, naming the address, while the first keeps serving", function()
        local P = h.free_port()
        local cfg = h.config({ listen = P, remote = redis.port })
        local first = h.shotover({ config = cfg, port = P })
        local second = h.shotover({ config = cfg })
        local st = second.proc:wait(15)
        assert.is_table(st, "the second instance exits")
        assert.is_not.equal(0, st.code)
        assert.matches("cannot listen on 127%.0%.0%.1:" .. P .. ": the address is already in use",
            second:log())
        assert.is_true(first:alive())
        local c = h.connect(P)
        assert.equal("PONG", c:cmd("PING").status)
        c:close()
    end)

    it("refuses an address another program listens on", function()
        local P = h.free_port()
        h.occupy(P)
        local s = h.shotover({ config = h.config({ listen = P, remote = redis.port }) })
        local st = s.proc:wait(15)
        assert.is_table(st)
        assert.is_not.equal(0, st.code)
        assert.matches("already in use", s:log())
    end)

    it("shares it when both sources say share_listen = true", function()
        local P = h.free_port()
        local cfg = h.config({ listen = P, remote = redis.port, source = "share_listen = true," })
        local first = h.shotover({ config = cfg, port = P })
        local second = h.shotover({ config = cfg })
        second:wait_log("running with", 15)
        assert.is_true(first:alive() and second:alive())
    end)
end)
