-- A loop iteration's client reads and writes in one io_uring submission
-- each (c/sh_uring.c): many clients' requests are received and their
-- replies sent in few submissions, each to its own client and in order
-- (backend sockets are not batched); a reply the client's socket does not
-- take whole goes on after it; a request larger than one receive arrives
-- whole; a client that half-closes still gets its replies; a client that
-- resets costs nothing else; `io_uring = false` reads and writes one by
-- one.
local h = require("harness")

local function start(extra)
    local redis = h.redis_server()
    local port, admin = h.free_port(), h.free_port()
    local proxy = h.shotover({ port = port, config = h.config({
        listen = port, remote = redis.port, source = "max_write_queue = 65536,",
        extra = string.format('admin = { listen = "127.0.0.1:%d" }, %s', admin,
                              extra or "") }) })
    h.wait_listening(admin, "the admin endpoint")
    return { redis = redis, proxy = proxy, port = port, admin = admin }
end

local function counters(env)
    local _, text = h.http("GET", env.admin, "/metrics")
    local function m(name) return h.metric(text, name) or 0 end
    return {
        batches = m('shotover_socket_write_batches_total{side="client"}'),
        writes = m('shotover_socket_writes_total{side="client"}'),
        rbatches = m('shotover_socket_read_batches_total{side="client"}'),
        reads = m('shotover_socket_reads_total{side="client"}'),
        up_batches = m('shotover_socket_write_batches_total{side="backend"}'),
        up_rbatches = m('shotover_socket_read_batches_total{side="backend"}'),
        requests = m('shotover_requests_total{source="redis"}'),
        conns = m('shotover_connections{source="redis"}'),
    }
end

-- n clients each GET their own key in rounds, all sending before any
-- reads.  The proxy is stopped (SIGSTOP) while they send, so that its
-- next poll finds every one of them readable whatever the machine's
-- scheduling: on a busy machine it would otherwise wake for each client's
-- request on its own.  Loopback puts the bytes in the proxy's sockets
-- before send returns.  A first round, not stopped, has every connection
-- accepted; it is left out of what `measure` sees.
local function rounds(env, n, r, measure)
    local keys = {}
    local setter = h.connect(env.redis.port)
    for i = 1, n do
        keys[i] = "u:" .. i
        assert.same(h.status("OK"), setter:cmd("SET", keys[i], "value-" .. i))
    end
    setter:close()
    local clients = {}
    for i = 1, n do clients[i] = h.connect(env.port) end
    local function round(stop)
        if stop then assert.is_true(env.proxy.proc:kill(h.SIGSTOP)) end
        local ok, err = pcall(function()
            for i = 1, n do
                assert.is_true(clients[i]:send(h.resp_command("GET", keys[i])))
            end
        end)
        if stop then assert.is_true(env.proxy.proc:kill(h.SIGCONT)) end
        assert(ok, err)
        for i = 1, n do assert.equal("value-" .. i, clients[i]:read_reply()) end
    end
    round(false)
    local before = measure and measure()
    for _ = 1, r do round(true) end
    local after = measure and measure()
    for i = 1, n do clients[i]:close() end
    return before, after
end

describe("reads and writes batched with io_uring", function()
    teardown(h.cleanup)
    local env

    setup(function() env = start() end)

    it("serve many clients in few submissions, each its own replies", function()
        local before, after = rounds(env, 40, 20, function()
            return counters(env)
        end)
        local batches = after.batches - before.batches
        local writes = after.writes - before.writes
        assert.is_true(batches > 0, "no io_uring submission was made")
        assert.is_true(writes >= 800, writes .. " client writes for 800 replies")
        -- 40 clients answered by a few reads of the backend: several
        -- replies a submission
        assert.is_true(writes / batches > 1.5, string.format(
            "%d writes in %d submissions", writes, batches))
        -- 40 clients that all sent while the proxy was stopped: found
        -- readable by one poll, received in one submission
        local reads = after.reads - before.reads
        local rbatches = after.rbatches - before.rbatches
        assert.is_true(reads >= 800, reads .. " client reads for 800 requests")
        assert.is_true(rbatches > 0, "no io_uring submission received")
        assert.is_true(reads / rbatches > 1.5, string.format(
            "%d reads in %d submissions", reads, rbatches))
        -- backend sockets read and write on their own (batching them made
        -- Redis work harder: docs/architecture.md)
        assert.equal(0, after.up_batches - before.up_batches)
        assert.equal(0, after.up_rbatches - before.up_rbatches)
    end)

    it("receive a request larger than one receive whole", function()
        -- 3 MB in one SET: many receives, over many loop iterations
        local value = string.rep("0123456789abcdef", 196608)
        local c = h.connect(env.port)
        assert.same(h.status("OK"), c:cmd("SET", "huge", value))
        local direct = h.connect(env.redis.port)
        assert.equal(#value, direct:cmd("STRLEN", "huge"))
        direct:close()
        assert.equal(value, c:cmd("GET", "huge"))
        c:close()
    end)

    it("answer a pipeline whose client half-closed after sending it", function()
        local c = h.connect(env.port)
        local reqs = {}
        for i = 1, 20 do reqs[i] = h.resp_command("ECHO", "half-" .. i) end
        assert.is_true(c:send(table.concat(reqs)))
        c:shutdown_write()
        local replies = c:read_replies(20, 10)
        for i = 1, 20 do assert.equal("half-" .. i, replies[i]) end
        assert.is_true(c:wait_closed(10), "closed after its replies")
    end)

    it("go on in order after a client's socket took only part of one", function()
        -- 15,000-byte replies (batched: under 16 KiB), a batch each, to a
        -- client that reads nothing until its socket stops taking them
        -- (a few MB on loopback): a send comes up short, the rest is
        -- queued behind it, the connection pauses (max_write_queue), and
        -- reading then gets everything
        local value = {}
        local setter = h.connect(env.redis.port)
        for i = 1, 26 do
            value[i] = string.rep(string.char(64 + i), 15000)
            assert.same(h.status("OK"), setter:cmd("SET", "big:" .. i, value[i]))
        end
        setter:close()
        local c = h.connect(env.port)
        assert.equal("PONG", c:cmd("PING").status)
        local before = counters(env)
        local sent = 0
        for i = 1, 1000 do               -- a batch each, while it takes them
            assert.is_true(c:send(h.resp_command("GET", "big:" .. (i % 26 + 1))))
            sent = i
            local ok = pcall(h.wait_until, function()
                return counters(env).requests - before.requests >= i
            end, 1, "request " .. i .. " answered")
            if not ok then break end     -- paused: max_write_queue reached
        end
        assert.is_true(sent < 1000, "never paused")
        assert.is_true(counters(env).batches > before.batches)
        local replies = c:read_replies(sent, 30)
        for i = 1, sent do
            local want = value[i % 26 + 1]
            assert.equal(#want, #replies[i], "reply " .. i .. "'s length")
            assert.equal(want, replies[i], "reply " .. i)
        end
        assert.is_true(c:silent(0.2))
        c:close()
    end)

    it("cost nothing else when clients reset before theirs are sent", function()
        local before = counters(env)
        local gone = {}
        for i = 1, 50 do
            gone[i] = h.connect(env.port)
            assert.is_true(gone[i]:send(string.rep(h.resp_command("GET", "u:1"), 3)))
        end
        for i = 1, 50 do gone[i]:reset() end
        h.wait_until(function() return counters(env).conns == before.conns end, 10,
                     "the reset clients' connections closed")
        rounds(env, 10, 5)                -- the others are served as before
    end)
end)

describe("io_uring = false", function()
    teardown(h.cleanup)

    it("reads and writes one by one, with no submission", function()
        local env = start("io_uring = false,")
        local before = counters(env)
        rounds(env, 20, 10)
        local after = counters(env)
        for _, k in ipairs({ "batches", "rbatches", "up_batches", "up_rbatches" }) do
            assert.equal(0, after[k] - before[k], k)
        end
        assert.is_true(after.writes - before.writes >= 200)
        assert.is_true(after.reads - before.reads >= 200)
    end)
end)
