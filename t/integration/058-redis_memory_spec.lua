-- Memory is claimed as bytes arrive, not as a peer announces them: a client
-- that announces a 512 MiB bulk and sends 20 KB holds about 256 KiB, and a
-- frame the proxy cannot get memory for fails that connection with a
-- protocol error, a log line and a metric, never the process.
--
-- The address-space limit is RLIMIT_AS set on the running proxy (prlimit);
-- a sanitizer build maps terabytes of shadow memory, so there the same
-- limit is the allocator's own (allocator_may_return_null with a largest
-- allocation): either way malloc returns NULL where it would have aborted.
local h = require("harness")

local ANNOUNCED = 536870000              -- just under the 512 MiB max bulk
local asan = os.getenv("ASAN_OPTIONS")

local function announce(c, filler)
    assert(c:send("*3\r\n$3\r\nSET\r\n$5\r\nbig:k\r\n$" .. ANNOUNCED .. "\r\n"
                  .. filler))
end

-- a proxy whose allocations fail past `headroom_mb` more than it has now
local function start_limited(headroom_mb, extra)
    local wrap
    if asan then
        wrap = { "env", "ASAN_OPTIONS=" .. asan .. ":allocator_may_return_null=1"
                 .. ":max_allocation_size_mb=" .. math.floor(headroom_mb / 2) }
    end
    local env = h.start_pair({ workers = 1, wrap = wrap, extra = extra })
    if not asan then
        local kb = env.proxy:status_kb("VmSize")
        local r = h.run({ "prlimit", "--pid", tostring(env.proxy.proc.pid),
                          "--as=" .. (kb + headroom_mb * 1024) * 1024 })
        assert.equal(0, r.code, r.stderr)
    end
    return env
end

local function healthy(port)
    local c = h.connect(port)
    assert.same(h.status("OK"), c:cmd("SET", "mem:ok", "yes\0\r\nbinary"))
    assert.same("yes\0\r\nbinary", c:cmd("GET", "mem:ok"))
    c:close()
end

describe("a bulk announced but not sent", function()
    teardown(h.cleanup)

    it("claims memory as it arrives: 50 clients announcing 512 MiB and "
       .. "sending 20 KB grow the proxy by megabytes, not gigabytes", function()
        local env = h.start_pair({ workers = 1 })
        local before = env.proxy:status_kb("VmSize")
        local conns = {}
        for i = 1, 50 do
            conns[i] = h.connect(env.port)
            announce(conns[i], string.rep("x", 20000))
        end
        h.wait_until(function() return h.unread_on(env.port) == 0 end, 10,
                     "the proxy to read what the clients sent")
        local grown = env.proxy:status_kb("VmSize") - before
        assert.is_true(grown < 64 * 1024, "VmSize grew by " .. grown .. " kB")
        healthy(env.port)
        -- the announced values still complete when their bytes come
        local c = conns[1]
        assert(c:send(string.rep("y", ANNOUNCED - 20000) .. "\r\n", 60))
        assert.same(h.status("OK"), c:read_reply(60))
        assert.equal(ANNOUNCED, c:cmd("STRLEN", "big:k"))
        assert.is_true(env.proxy:alive())
    end)

    it("under an address-space limit, 200 such clients leave the proxy "
       .. "serving", function()
        local env = start_limited(768)
        local conns = {}
        for i = 1, 200 do
            conns[i] = h.connect(env.port)
            announce(conns[i], string.rep("x", 20000))
        end
        h.wait_until(function() return h.unread_on(env.port) == 0 end, 10,
                     "the proxy to read what the clients sent")
        assert.is_true(env.proxy:alive(), env.proxy:log())
        healthy(env.port)
    end)
end)

describe("a frame the proxy cannot get memory for", function()
    teardown(h.cleanup)

    it("fails its connection with a protocol error, a log line and a "
       .. "metric; the proxy serves on", function()
        local A = h.free_port()
        local env = start_limited(384, string.format(
            'admin = { listen = "127.0.0.1:%d" },', A))
        local other = h.connect(env.port)
        assert.same(h.status("PONG"), other:cmd("PING"))
        local c = h.connect(env.port)
        announce(c, "")
        local chunk = string.rep("z", 1024 * 1024)
        local sent = 0
        while sent < ANNOUNCED - #chunk do
            if not c:send(chunk, 3) then break end
            sent = sent + #chunk
        end
        assert.is_true(sent < ANNOUNCED - #chunk,
                       "the whole value was taken: the limit did not bite")
        local reply = c:read_reply(10)
        assert.is_table(reply)
        assert.matches("^ERR Protocol error: out of memory for a %d+%-byte frame$",
                       reply.err)
        c:wait_closed(10)
        env.proxy:wait_log("out of memory for a")
        assert.equal(1, h.metric(A,
            'shotover_out_of_memory_closes_total{source="redis"}'))
        assert.is_true(env.proxy:alive())
        assert.same(h.status("PONG"), other:cmd("PING"))
        healthy(env.port)
    end)
end)
