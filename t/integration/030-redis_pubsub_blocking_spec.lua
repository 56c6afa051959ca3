-- Pub/sub and blocking commands through shotover: a subscriber receives what
-- other clients publish through the proxy; a blocked BLPOP holds up nobody
-- else and wakes when another client pushes.
local h = require("harness")
local NULL, OK = h.NULL, h.status("OK")

-- the subscriber count redis reports (through the proxy) for a channel
local function numsub(port, ch)
    local out = h.cli(port, "pubsub", "numsub", ch)
    local name, n = out:match("^(.-)\n(%d+)$")
    assert.equal(ch, name, "PUBSUB NUMSUB output: " .. out)
    return tonumber(n)
end

local function numpat(port)
    return tonumber((h.cli(port, "pubsub", "numpat")))
end

-- the backend's count of clients blocked in BLPOP and friends
local function blocked_clients(redis_port)
    local info = h.cli(redis_port, "info", "clients")
    return tonumber(info:match("blocked_clients:(%d+)"))
end

describe("pub/sub through shotover", function()
    local env, P

    setup(function()
        env = h.start_pair({ workers = 1 })
        P = env.port
    end)
    teardown(h.cleanup)

    it("delivers PUBLISHed messages to a redis-cli SUBSCRIBE running in the background", function()
        local out = h.tmpfile("sub.out")
        local sub = h.spawn({ "redis-cli", "-p", tostring(P), "subscribe", "ps:news" },
            { stdout = out, stderr = "stdout" })
        h.wait_until(function() return numsub(P, "ps:news") >= 1 end, 10,
            "PUBSUB NUMSUB ps:news >= 1")
        assert.is_true(sub:alive())
        local n = tonumber((h.cli(P, "publish", "ps:news", "hello-1")))
        assert.is_true(n >= 1, "PUBLISH reached " .. tostring(n) .. " subscribers")
        assert.equal("1", h.cli(P, "publish", "ps:news", "hello-2"))
        h.wait_until(function()
            return (h.read_file(out) or ""):find("hello-2", 1, true)
        end, 10, "the subscriber to print hello-2")
        assert.equal("subscribe\nps:news\n1\nmessage\nps:news\nhello-1\nmessage\nps:news\nhello-2\n",
            h.read_file(out))
        sub:stop(3)
        -- the proxy notices the subscriber left
        h.wait_until(function() return numsub(P, "ps:news") == 0 end, 10,
            "PUBSUB NUMSUB ps:news back to 0")
    end)

    it("delivers messages to a raw subscriber in exact RESP, on every subscribed channel", function()
        local s = h.connect(P)
        s:send(h.resp_command("SUBSCRIBE", "ps:a", "ps:b"))
        assert.same({ "subscribe", "ps:a", 1 }, s:read_reply())
        assert.same({ "subscribe", "ps:b", 2 }, s:read_reply())
        local p = h.connect(P)
        assert.equal(1, p:cmd("PUBLISH", "ps:b", "bin\r\n\0payload"))
        local v, raw = s:read_reply(5)
        assert.same({ "message", "ps:b", "bin\r\n\0payload" }, v)
        assert.equal("*3\r\n$7\r\nmessage\r\n$4\r\nps:b\r\n$13\r\nbin\r\n\0payload\r\n", raw)
        assert.equal(1, p:cmd("PUBLISH", "ps:a", "x"))
        assert.same({ "message", "ps:a", "x" }, s:read_reply(5))
        -- nothing for a channel it did not subscribe to
        assert.equal(0, p:cmd("PUBLISH", "ps:c", "nobody"))
        assert.is_true(s:silent(0.3))
    end)

    it("delivers one message to each of several subscribers", function()
        local subs = {}
        for i = 1, 3 do
            subs[i] = h.connect(P)
            assert.same({ "subscribe", "ps:fan", 1 }, subs[i]:cmd("SUBSCRIBE", "ps:fan"))
        end
        assert.equal(3, h.connect(P):cmd("PUBLISH", "ps:fan", "to-all"))
        for i = 1, 3 do
            assert.same({ "message", "ps:fan", "to-all" }, subs[i]:read_reply(5))
        end
    end)

    it("lets a client UNSUBSCRIBE and go back to normal commands", function()
        local s = h.connect(P)
        assert.same({ "subscribe", "ps:u", 1 }, s:cmd("SUBSCRIBE", "ps:u"))
        -- RESP2 subscribers get PING as a pong array
        assert.same({ "pong", "" }, s:cmd("PING"))
        assert.same({ "unsubscribe", "ps:u", 0 }, s:cmd("UNSUBSCRIBE", "ps:u"))
        assert.same(OK, s:cmd("SET", "ps:after-unsub", "yes"))
        assert.equal("yes", s:cmd("GET", "ps:after-unsub"))
        assert.equal(0, h.connect(P):cmd("PUBLISH", "ps:u", "late"))
    end)

    it("delivers pattern messages to a redis-cli PSUBSCRIBE in the background", function()
        local out = h.tmpfile("psub.out")
        local sub = h.spawn({ "redis-cli", "-p", tostring(P), "psubscribe", "ps:ev.*" },
            { stdout = out, stderr = "stdout" })
        h.wait_until(function() return numpat(P) >= 1 end, 10, "PUBSUB NUMPAT >= 1")
        assert.equal("1", h.cli(P, "publish", "ps:ev.one", "p-1"))
        assert.equal("0", h.cli(P, "publish", "ps:other", "p-x"))
        h.wait_until(function()
            return (h.read_file(out) or ""):find("p-1", 1, true)
        end, 10, "the pattern subscriber to print p-1")
        assert.equal("psubscribe\nps:ev.*\n1\npmessage\nps:ev.*\nps:ev.one\np-1\n", h.read_file(out))
        sub:stop(3)
    end)

    it("delivers pattern messages to a raw PSUBSCRIBE client in exact RESP", function()
        local s = h.connect(P)
        assert.same({ "psubscribe", "ps:pat.*", 1 }, s:cmd("PSUBSCRIBE", "ps:pat.*"))
        assert.equal(1, h.connect(P):cmd("PUBLISH", "ps:pat.x", "data"))
        local v, raw = s:read_reply(5)
        assert.same({ "pmessage", "ps:pat.*", "ps:pat.x", "data" }, v)
        assert.equal("*4\r\n$8\r\npmessage\r\n$8\r\nps:pat.*\r\n$8\r\nps:pat.x\r\n$4\r\ndata\r\n", raw)
    end)

    it("delivers messages as RESP3 pushes to a HELLO 3 subscriber", function()
        local s = h.connect(P)
        assert.is_table(s:cmd("HELLO", "3").map)
        local v = s:cmd("SUBSCRIBE", "ps:r3")
        assert.same({ push = { "subscribe", "ps:r3", 1 } }, v)
        assert.equal(1, h.connect(P):cmd("PUBLISH", "ps:r3", "pushed"))
        local m, raw = s:read_reply(5)
        assert.same({ push = { "message", "ps:r3", "pushed" } }, m)
        assert.equal(">3\r\n", raw:sub(1, 4))
        -- RESP3 lets a subscribed connection run ordinary commands
        assert.same(OK, s:cmd("SET", "ps:r3-key", "v"))
        assert.equal("v", s:cmd("GET", "ps:r3-key"))
    end)

    it("keeps serving other clients while subscribers wait", function()
        local c = h.connect(P)
        local t0 = h.now()
        for i = 1, 20 do assert.same(OK, c:cmd("SET", "ps:busy:" .. i, "v")) end
        assert.is_true(h.now() - t0 < 2, "20 SETs took " .. (h.now() - t0) .. " s")
    end)
end)

describe("blocking commands through shotover", function()
    local env, P, R

    setup(function()
        -- a short request timeout: blocking commands must be exempt from it
        env = h.start_pair({ workers = 1, sink = "request_timeout_ms = 1000," })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("lets other clients run at low latency while one client waits in BLPOP, then wakes it on RPUSH", function()
        local a = h.connect(P)
        local t0 = h.now()
        assert.is_true(a:send(h.resp_command("BLPOP", "bl:q", "20")))
        h.wait_until(function() return blocked_clients(R) == 1 end, 5,
            "redis to report one blocked client")
        -- other clients are not queued behind the blocked one
        local b = h.connect(P)
        local worst = 0
        for i = 1, 20 do
            local s = h.now()
            assert.same(OK, b:cmd("SET", "bl:k" .. i, "v" .. i))
            assert.equal("v" .. i, b:cmd("GET", "bl:k" .. i))
            worst = math.max(worst, h.now() - s)
        end
        assert.is_true(worst < 0.25, string.format("slowest SET+GET took %.3f s", worst))
        -- a new connection and a redis-cli process are fine too
        assert.equal("PONG", h.cli(P, "ping"))
        assert.is_true(a:silent(0.1), "BLPOP answered before anything was pushed")
        -- the push wakes the blocked client right away
        assert.equal(1, b:cmd("RPUSH", "bl:q", "item"))
        local v = a:read_reply(3)
        assert.same({ "bl:q", "item" }, v)
        assert.is_true(h.now() - t0 < 10, "BLPOP returned only after " .. (h.now() - t0) .. " s")
        -- and the formerly blocked connection is usable
        assert.same(h.status("PONG"), a:cmd("PING"))
    end)

    it("wakes several concurrently blocked clients each with its own list", function()
        local blocked = {}
        for i = 1, 4 do
            blocked[i] = h.connect(P)
            blocked[i]:send(h.resp_command("BLPOP", "bl:m" .. i, "20"))
        end
        h.wait_until(function() return blocked_clients(R) == 4 end, 5,
            "redis to report four blocked clients")
        assert.equal("PONG", h.cli(P, "ping"))
        local pusher = h.connect(P)
        for i = 4, 1, -1 do
            assert.equal(1, pusher:cmd("RPUSH", "bl:m" .. i, "for-" .. i))
        end
        for i = 1, 4 do
            assert.same({ "bl:m" .. i, "for-" .. i }, blocked[i]:read_reply(3))
        end
    end)

    it("returns a null from BLPOP at its own timeout even when it is longer than request_timeout_ms", function()
        local a = h.connect(P)
        local t0 = h.now()
        local _, raw = a:raw(h.resp_command("BLPOP", "bl:never", "1.5"), 10)
        local took = h.now() - t0
        assert.equal("*-1\r\n", raw)
        assert.is_true(took >= 1.4, string.format("BLPOP returned after %.2f s", took))
        assert.is_true(took < 5, string.format("BLPOP returned after %.2f s", took))
    end)

    it("answers commands pipelined behind a BLPOP after it, in order", function()
        local a = h.connect(P)
        a:send(h.resp_command("RPUSH", "bl:p", "x") .. h.resp_command("BLPOP", "bl:p", "1")
            .. h.resp_command("BLPOP", "bl:p", "0.5") .. h.resp_command("PING"))
        assert.same({ 1, { "bl:p", "x" }, NULL, h.status("PONG") }, a:read_replies(4, 5))
    end)

    it("unblocks the backend when a client blocked in BLPOP disconnects, so no pushed item is lost", function()
        local a = h.connect(P)
        a:send(h.resp_command("BLPOP", "bl:gone", "30"))
        h.wait_until(function() return blocked_clients(R) == 1 end, 5,
            "redis to report one blocked client")
        a:close()
        h.wait_until(function() return blocked_clients(R) == 0 end, 5,
            "redis to drop the blocked BLPOP of the departed client")
        local b = h.connect(P)
        assert.equal(1, b:cmd("RPUSH", "bl:gone", "kept"))
        assert.equal(1, b:cmd("LLEN", "bl:gone"))
        assert.same({ "kept" }, b:cmd("LRANGE", "bl:gone", "0", "-1"))
    end)

    it("serves ordinary requests without hitting the short request timeout", function()
        assert.equal("PONG", h.cli(P, "ping"))
        assert.equal(NULL, h.connect(P):cmd("GET", "bl:nothing"))
    end)
end)
