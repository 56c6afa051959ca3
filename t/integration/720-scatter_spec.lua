-- scatter in front of three real redis-servers, one per "region": writes
-- answered by a quorum while a region is down or hung (SIGSTOP, bounded by
-- its own timeout), reads answered when replies agree, divergent regions
-- repaired (seen on their own redis-server), and the commands it refuses.
-- t/unit/200 checks its config and command modes; 730 runs the
-- examples/redis-multi config with a Redis Cluster as one region.
local h = require("harness")

local function proxy(regions, opts)
    opts = opts or {}
    local port, admin = h.free_port(), h.free_port()
    local list = {}
    for _, r in ipairs(regions) do
        list[#list + 1] = string.format(
            '{ name = %q, %s chain = { { "redis", remote = "127.0.0.1:%d", '
            .. 'request_timeout_ms = 60000, connect_timeout_ms = 300 } } }',
            r.name, r.timeout and ("timeout_ms = " .. r.timeout .. ",") or "",
            r.port)
    end
    local s = h.shotover({ port = port, config = string.format([[
return { workers = 1, admin = { listen = "127.0.0.1:%d" },
  sources = { { name = "r", protocol = "redis", listen = "127.0.0.1:%d",
    chain = { { "scatter", write_quorum = %d, read_quorum = %d,
                timeout_ms = %d, regions = { %s } } } } } }
]], admin, port, opts.w or 2, opts.r or 2, opts.timeout or 1000,
        table.concat(list, ",\n")) })
    return port, admin, s
end

local function metric(admin, name, region)
    return h.metric(admin, string.format('%s{name="scatter",region="%s"}',
                                         name, region)) or 0
end

describe("scatter over three redis-servers", function()
    local A, B, C
    local regions
    before_each(function()
        A, B, C = h.redis_server(), h.redis_server(), h.redis_server()
        regions = { { name = "eu", port = A.port }, { name = "us", port = B.port },
                    { name = "ap", port = C.port } }
    end)
    after_each(h.cleanup)

    it("writes to every region and answers once a quorum acknowledged, "
       .. "with one region down", function()
        local P = proxy(regions)
        local c = h.connect(P)
        for i = 1, 50 do
            assert.same(h.status("OK"), c:cmd("SET", "w:" .. i, "v" .. i))
        end
        -- the reply waited for two regions; the third follows in the
        -- background
        h.wait_until(function() return h.cli(C.port, "get", "w:50") == "v50" end,
                     10, "the third region to get the last write")
        for _, R in ipairs({ A, B, C }) do
            assert.equal("v1", h.cli(R.port, "get", "w:1"))
            assert.equal("v37", h.cli(R.port, "get", "w:37"))
        end
        C:stop(h.SIGKILL)
        for i = 1, 50 do
            assert.same(h.status("OK"), c:cmd("SET", "d:" .. i, "x" .. i))
            assert.equal(1, c:cmd("DEL", "w:" .. i))
        end
        assert.equal("x50", h.cli(A.port, "get", "d:50"))
        assert.equal("x50", h.cli(B.port, "get", "d:50"))
        assert.equal("", h.cli(A.port, "get", "w:1"))
        -- two regions down: no quorum, and the error says which and why
        B:stop(h.SIGKILL)
        local e = c:cmd("SET", "q", "1")
        assert.is_table(e)
        assert.matches('^ERR shotover scatter "scatter": write quorum 2 of 3 '
                       .. "not reached: ", e.err)
        assert.matches("us: ERR shotover: backend 127%.0%.0%.1:" .. B.port, e.err)
        assert.matches("ap: ERR shotover: backend 127%.0%.0%.1:" .. C.port, e.err)
    end)

    it("answers a read when read_quorum regions agree, else an error",
       function()
        local P = proxy(regions)
        for _, R in ipairs({ A, B, C }) do
            h.cli(R.port, "set", "same", "v")
        end
        assert.equal("v", h.cli(P, "get", "same"))
        h.cli(A.port, "set", "split", "a")
        h.cli(B.port, "set", "split", "b")
        h.cli(C.port, "set", "split", "c")
        assert.equal('ERR shotover scatter "scatter": read quorum 2 of 3 not '
                     .. "reached (no 2 replies agree): eu: a reply that does "
                     .. "not agree; us: a reply that does not agree; ap: a "
                     .. "reply that does not agree",
                     h.chomp((h.cli(P, "get", "split"))))
        -- nothing agreed: nothing repaired
        assert.equal("c", h.cli(C.port, "get", "split"))
        -- reads across keys and of other types agree too
        h.cli(P, "hset", "h", "f", "1")
        assert.equal("f\n1", h.cli(P, "hgetall", "h"))
        assert.equal("v\n\n", h.cli(P, "mget", "same", "nope", "nope2"))
    end)

    it("repairs the regions whose reply to a read differed", function()
        local P, admin = proxy(regions)
        -- a stale value in ap
        h.cli(A.port, "set", "r:1", "new", "px", "100000")
        h.cli(B.port, "set", "r:1", "new", "px", "100000")
        h.cli(C.port, "set", "r:1", "old")
        assert.equal("new", h.cli(P, "get", "r:1"))
        h.wait_until(function() return h.cli(C.port, "get", "r:1") == "new" end,
                     10, "ap to be repaired")
        local ttl = tonumber((h.cli(C.port, "pttl", "r:1")))
        assert.is_true(ttl > 0 and ttl <= 100000, tostring(ttl))
        -- missing in eu (a hash)
        h.cli(B.port, "hset", "r:2", "a", "1", "b", "2")
        h.cli(C.port, "hset", "r:2", "a", "1", "b", "2")
        assert.equal("a\n1\nb\n2", h.cli(P, "hgetall", "r:2"))
        h.wait_until(function() return h.cli(A.port, "hget", "r:2", "b") == "2" end,
                     10, "eu to be repaired")
        -- deleted in eu and us, left over in ap: deleted there too
        h.cli(C.port, "set", "r:3", "zombie")
        assert.equal("", h.cli(P, "get", "r:3"))
        h.wait_until(function() return h.cli(C.port, "exists", "r:3") == "0" end,
                     10, "ap's left-over key to be deleted")
        -- (counted once the region's reply to the repair came back)
        h.wait_until(function()
            return metric(admin, "shotover_scatter_repairs_total", "ap") == 2
                   and metric(admin, "shotover_scatter_repairs_total", "eu") == 1
        end, 10, "the repairs to be counted")
        assert.equal(0, metric(admin, "shotover_scatter_repairs_total", "us"))
        -- a region that answers after the client has its reply (hung for
        -- a while) is compared then, and repaired
        h.cli(A.port, "set", "r:4", "new")
        h.cli(B.port, "set", "r:4", "new")
        h.cli(C.port, "set", "r:4", "old")
        C.proc:kill(h.SIGSTOP)
        h.defer(function() C.proc:kill(h.SIGCONT) end)
        assert.equal("new", h.cli(P, "get", "r:4"))
        C.proc:kill(h.SIGCONT)
        h.wait_until(function() return h.cli(C.port, "get", "r:4") == "new" end,
                     10, "ap to be repaired after its late reply")
        h.wait_until(function()
            return metric(admin, "shotover_scatter_repairs_total", "ap") == 3
        end, 10, "the late repair to be counted")
        -- agreeing reads repair nothing
        assert.equal("new", h.cli(P, "get", "r:1"))
        assert.equal(3, metric(admin, "shotover_scatter_repairs_total", "ap"))
    end)

    it("never holds the client longer than a hung region's timeout",
       function()
        regions[3].timeout = 300
        local P = proxy(regions, { w = 2, r = 2, timeout = 5000 })
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SET", "t:0", "x"))
        C.proc:kill(h.SIGSTOP)
        h.defer(function() C.proc:kill(h.SIGCONT) end)
        -- the quorum answers at once: the hung region does not hold it
        local t0 = h.now()
        for i = 1, 20 do
            assert.same(h.status("OK"), c:cmd("SET", "t:" .. i, "v"))
        end
        assert.equal("v", c:cmd("GET", "t:20"))
        assert.is_true(h.now() - t0 < 2, "20 writes took " .. (h.now() - t0))
        local admin
        P, admin = proxy(regions, { w = 3, r = 3, timeout = 5000 })
        c = h.connect(P)
        t0 = h.now()
        local e = c:cmd("SET", "t:x", "v")
        local took = h.now() - t0
        assert.equal('ERR shotover scatter "scatter": write quorum 3 of 3 not '
                     .. "reached: eu: acknowledged; us: acknowledged; ap: "
                     .. "timed out after 300 ms", e.err)
        -- bounded by ap's 300 ms, not the global 5000 nor the sink's 60000
        assert.is_true(took >= 0.29 and took < 2, "took " .. took)
        assert.is_true(metric(admin, "shotover_scatter_timeouts_total", "ap") >= 1)
        -- the region comes back: its queue is worked off, and what it
        -- missed meanwhile was written there in the end
        C.proc:kill(h.SIGCONT)
        h.wait_until(function() return h.cli(C.port, "get", "t:20") == "v" end,
                     20, "ap to catch up")
        assert.equal("v", h.cli(C.port, "get", "t:x"))
    end)

    it("drops what does not fit a hung region's queue, and counts it",
       function()
        local port, admin = h.free_port(), h.free_port()
        h.shotover({ port = port, config = string.format([[
return { workers = 1, admin = { listen = "127.0.0.1:%d" },
  sources = { { name = "r", protocol = "redis", listen = "127.0.0.1:%d",
    chain = { { "scatter", buffer_size = 4, timeout_ms = 300, regions = {
      { name = "eu", chain = { { "redis", remote = "127.0.0.1:%d" } } },
      { name = "us", chain = { { "redis", remote = "127.0.0.1:%d" } } },
      { name = "ap", chain = { { "redis", remote = "127.0.0.1:%d",
                                 request_timeout_ms = 60000 } } } } } } } } }
]], admin, port, A.port, B.port, C.port) })
        C.proc:kill(h.SIGSTOP)
        h.defer(function() C.proc:kill(h.SIGCONT) end)
        local c = h.connect(port)
        -- a batch bigger than the queue goes whole to the healthy regions
        local reqs = {}
        for i = 1, 10 do reqs[i] = h.resp_command("SET", "p:" .. i, "v") end
        c:send(table.concat(reqs))
        for i, r in ipairs(c:read_replies(10)) do
            assert.same(h.status("OK"), r, "SET p:" .. i)
        end
        assert.equal("v", h.cli(A.port, "get", "p:10"))
        -- ap holds those (its queue was empty when they came): the next
        -- requests find it full
        for i = 1, 20 do
            assert.same(h.status("OK"), c:cmd("SET", "b:" .. i, "v"))
        end
        assert.equal(20, metric(admin, "shotover_scatter_dropped_total", "ap"))
        assert.equal(0, metric(admin, "shotover_scatter_dropped_total", "eu"))
        C.proc:kill(h.SIGCONT)
        h.wait_until(function() return h.cli(C.port, "exists", "p:10") == "1" end,
                     10, "ap to apply what it queued")
        assert.equal("0", h.cli(C.port, "exists", "b:1"))
    end)

    it("lets clients leave while their requests wait for a region",
       function()
        regions[3].timeout = 2000
        local P, admin = proxy(regions, { w = 3, r = 3 })
        C.proc:kill(h.SIGSTOP)
        h.defer(function() C.proc:kill(h.SIGCONT) end)
        local eu = h.connect(A.port)
        -- three reset their connection once their write is out (shotover
        -- closes such a connection at once, its waiting batch with it),
        -- then three close it (a FIN: their batches finish, unanswered)
        for k = 1, 6 do
            local gone = h.connect(P)
            gone:send(h.resp_command("SET", "gone:" .. k, "v"))
            h.wait_until(function() return eu:cmd("GET", "gone:" .. k) == "v" end,
                         10, "the write to be out")
            if k <= 3 then
                gone:reset()
            else
                gone:close()
            end
        end
        -- the closed ones' requests time out for ap; the reset ones' were
        -- dropped with their client before (their deadlines came first)
        h.wait_until(function()
            return metric(admin, "shotover_scatter_timeouts_total", "ap") >= 3
        end, 10, "the closed clients' requests to time out")
        assert.equal(3, metric(admin, "shotover_scatter_timeouts_total", "ap"))
        assert.equal("PONG", h.cli(P, "ping"))
        C.proc:kill(h.SIGCONT)
        h.wait_until(function() return h.cli(C.port, "get", "gone:6") == "v" end,
                     20, "ap to catch up")
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SET", "stay", "v"))
        assert.equal("v", c:cmd("GET", "gone:1"))
    end)

    it("carries on across a reload, on the old and the new config",
       function()
        local P, admin, s = proxy(regions)
        local old = h.connect(P)
        assert.same(h.status("OK"), old:cmd("SET", "g:1", "a"))
        s:wait_log("running with", 15)
        local text = h.read_file(s.config_path)
        h.write_file(s.config_path, (text:gsub("timeout_ms = 1000", "timeout_ms = 900")))
        assert.is_true(s.proc:kill(h.SIGHUP))
        h.wait_until(function() return s:log():find("reloaded ", 1, true) end,
                     15, "the worker to reload")
        -- a connection of each configuration: both scatter and repair
        local new = h.connect(P)
        assert.same(h.status("OK"), old:cmd("SET", "g:2", "b"))
        assert.same(h.status("OK"), new:cmd("SET", "g:3", "c"))
        h.cli(C.port, "set", "g:1", "stale")
        assert.equal("a", new:cmd("GET", "g:1"))
        h.wait_until(function() return h.cli(C.port, "get", "g:1") == "a" end,
                     10, "ap to be repaired on the new configuration")
        h.cli(C.port, "set", "g:2", "stale")
        assert.equal("b", old:cmd("GET", "g:2"))
        h.wait_until(function() return h.cli(C.port, "get", "g:2") == "b" end,
                     10, "ap to be repaired on the old configuration")
        h.wait_until(function()
            return metric(admin, "shotover_scatter_repairs_total", "ap") == 2
        end, 10, "both repairs to be counted")
        assert.equal("c", h.cli(C.port, "get", "g:3"))
    end)

    it("runs inside a tee's chain, waiting or asynchronous", function()
        for _, wait in ipairs({ "false", "true" }) do
            local P = h.free_port()
            h.shotover({ port = P, config = string.format([[
return { workers = 1, sources = { { name = "r", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "tee", wait = %s, chain = { { "scatter", regions = {
        { name = "eu", chain = { { "redis", remote = "127.0.0.1:%d" } } },
        { name = "us", chain = { { "redis", remote = "127.0.0.1:%d" } } },
        { name = "ap", chain = { { "redis", remote = "127.0.0.1:%d" } } } } } } },
    { "redis", remote = "127.0.0.1:%d" } } } } }
]], P, wait, A.port, B.port, C.port, A.port) })
            local key = "tee:" .. wait
            assert.equal("OK", h.cli(P, "set", key, "v"))
            assert.equal("v", h.cli(A.port, "get", key))
            h.wait_until(function()
                return h.cli(B.port, "get", key) == "v"
                       and h.cli(C.port, "get", key) == "v"
            end, 10, "both regions of the tee's scatter to get the write")
            -- a divergent region repaired (with the tee waiting: the
            -- scatter runs on the client's run)
            h.cli(C.port, "set", key, "stale")
            assert.equal("v", h.cli(P, "get", key))
            if wait == "true" then
                h.wait_until(function() return h.cli(C.port, "get", key) == "v" end,
                             10, "ap to be repaired")
            end
        end
    end)

    it("refuses what is not a read nor an idempotent write", function()
        local P = proxy(regions)
        for _, cmd in ipairs({ { "incr", "n" }, { "lpush", "l", "a" },
                               { "multi" }, { "publish", "ch", "m" },
                               { "blpop", "l", "1" }, { "eval", "return 1", "0" } }) do
            local out = h.cli(P, unpack(cmd))
            assert.equal(string.format('ERR shotover scatter "scatter": %s is not '
                .. "sent to every region (only reads and idempotent writes "
                .. "are): refused", cmd[1]:upper()), h.chomp(out))
        end
        for _, R in ipairs({ A, B, C }) do
            assert.equal("0", h.cli(R.port, "exists", "n", "l"))
        end
        -- housekeeping is answered by a region
        assert.equal("PONG", h.cli(P, "ping"))
        assert.equal("hi", h.cli(P, "echo", "hi"))
        -- QUIT closes the client's connection, once it has its replies
        local q = h.connect(P)
        q:send(h.resp_command("SET", "q", "1") .. h.resp_command("QUIT"))
        assert.same({ h.status("OK"), h.status("OK") }, q:read_replies(2))
        assert.is_true((q:wait_closed(10)))
        assert.equal("1", h.cli(A.port, "get", "q"))
    end)
end)
