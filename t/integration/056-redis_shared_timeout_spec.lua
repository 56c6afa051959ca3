-- One client's slow request times out alone: the other clients' requests
-- on the same shared backend connection keep their own deadlines and get
-- their replies (the connection is set aside for a new one and closed once
-- it owes nothing), instead of failing with it.
local h = require("harness")

local TIMEOUT_MS = 1000

describe("a request that times out on a shared connection", function()
    local env
    setup(function()
        env = h.start_pair({ workers = 1, sink = string.format(
            "connections = 1, request_timeout_ms = %d,", TIMEOUT_MS) })
    end)
    teardown(h.cleanup)

    it("fails alone: requests of others behind it within their own "
       .. "deadlines are answered", function()
        local slow, other = h.connect(env.port), h.connect(env.port)
        assert.same(h.status("PONG"), other:cmd("PING"))
        local t0 = h.now()
        -- Redis runs a script for 1.5 s: the slow request's deadline
        -- passes at 1 s
        assert(slow:send(h.resp_command("EVAL", "local function us() "
            .. "local t = redis.call('TIME') return t[1] * 1e6 + t[2] end "
            .. "local s = us() repeat until us() - s > 1500000 return 1", "0")))
        -- the other client's requests go out 0.7 s in, on the same shared
        -- connection (workers = 1, connections = 1): their deadlines
        -- (1.7 s) are after Redis wakes (1.5 s)
        h.sleep(0.7)
        local cmds = {}
        for i = 1, 50 do
            cmds[#cmds + 1] = h.resp_command("SET", "st:" .. i, "v" .. i)
            cmds[#cmds + 1] = h.resp_command("GET", "st:" .. i)
        end
        assert(other:send(table.concat(cmds)))
        local r = slow:read_reply(5)
        assert.is_table(r)
        assert.matches("timed out after 1000ms", r.err)
        assert.is_true(h.now() - t0 < 1.45, "the slow request failed only "
                       .. "when Redis woke: " .. (h.now() - t0) .. " s")
        local replies = other:read_replies(100, 5)
        for i = 1, 50 do
            assert.same(h.status("OK"), replies[2 * i - 1])
            assert.equal("v" .. i, replies[2 * i])
        end
        -- the slow client and everyone else are served on
        assert.same(h.status("PONG"), slow:cmd("PING"))
        assert.same("v7", other:cmd("GET", "st:7"))
        env.proxy:wait_log("set aside until the replies it still owes")
        -- the set-aside connection is closed once it owes nothing: Redis
        -- sees the proxy's one shared connection again
        h.wait_until(function()
            local list = env.redis:cli("CLIENT", "LIST")
            local n = 0
            for line in list:gmatch("[^\n]+") do
                if not line:find("cmd=client", 1, true) then n = n + 1 end
            end
            return n == 1
        end, 5, "the set-aside backend connection to close")
    end)
end)

describe("a backend that never answers the sink's AUTH", function()
    teardown(h.cleanup)

    it("fails the requests queued behind it after request_timeout_ms",
       function()
        local bh = h.blackhole()
        local port = h.free_port()
        h.shotover({ port = nil, config = h.config({ listen = port,
            chain = string.format('{ "redis", remote = "127.0.0.1:%d", '
                .. 'password = "pw", request_timeout_ms = 300 }', bh.port) }) })
        h.wait_until(function() return h.try_connect(port, 0.2) end, 15,
                     "shotover to listen")
        local c = h.connect(port)
        assert(c:send(h.resp_command("GET", "k")))
        local backend = bh:accept(5)       -- connected: AUTH sent, unanswered
        local r = c:read_reply(5)
        assert.is_table(r)
        assert.matches("timed out after 300ms", r.err)
        backend:close()
    end)
end)
