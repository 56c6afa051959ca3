-- Backpressure: a client that pipelines big replies and does not read them
-- makes shotover stop taking its requests, instead of buffering every
-- reply; nothing is lost once it reads.
local h = require("harness")

local function rss_kb(pid)
    local s = h.read_file("/proc/" .. pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

local function gets_processed(port)
    local out = h.cli(port, "info", "commandstats")
    return tonumber(out:match("cmdstat_get:calls=(%d+)")) or 0
end

describe("a client that does not read its replies", function()
    local env, P, R
    local N, SIZE = 120, 1024 * 1024

    setup(function()
        env = h.start_pair({
            workers = 1,
            source = "max_write_queue = 1048576, max_batch = 8,",
        })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("is paused after a bounded number of requests, then gets every reply",
       function()
        local value = string.rep("v", SIZE)
        local setter = h.connect(R)
        assert.same(h.status("OK"), setter:cmd("SET", "big", value))
        h.cli(R, "config", "resetstat")

        local c = h.connect(P)
        local one = h.resp_command("GET", "big")
        assert.is_true(c:send(string.rep(one, N)))

        -- wait until the proxy stops feeding redis: the GET count holds
        -- still across several polls
        local last, same = -1, 0
        h.wait_until(function()
            local n = gets_processed(R)
            if n == last and n > 0 then
                same = same + 1
            else
                same = 0
            end
            last = n
            return same >= 5
        end, 20, "shotover to stop sending GETs for the unread client", 0.1)
        assert.is_true(last < N / 2, "shotover ran " .. last .. " of " .. N
                       .. " GETs for a client that reads nothing")
        local rss = rss_kb(env.proxy.proc.pid)
        assert.is_true(rss < 96 * 1024, "shotover grew to " .. rss .. " kB")

        -- now read: every reply arrives, whole and in order
        local replies = c:read_replies(N, 60)
        assert.equal(N, #replies)
        for i = 1, N do
            assert.equal(SIZE, #replies[i], "reply " .. i)
        end
        assert.equal(N, gets_processed(R))
    end)
end)

-- Small replies a client does not read while it sends: they are written
-- flat (copied into one buffer per write), and what the socket does not
-- take -- 100,000 replies of 107 bytes, more than its buffers hold -- waits
-- in copies queued behind one another; the backend's requests go flat too.
-- Every reply comes, whole and in order.
describe("a client that sends 100,000 small requests before reading", function()
    local env

    setup(function() env = h.start_pair({ workers = 1 }) end)
    teardown(h.cleanup)

    it("gets every reply, in order", function()
        local N, pad = 100000, string.rep("p", 94)
        local reqs = {}
        for i = 1, N do
            reqs[i] = h.resp_command("ECHO", string.format("%06d", i) .. pad)
        end
        local c = h.connect(env.port)
        assert.is_true(c:send(table.concat(reqs), 120))
        local replies = c:read_replies(N, 120)
        for i = 1, N do
            local want = string.format("%06d", i) .. pad
            if replies[i] ~= want then
                assert.equal(want, replies[i], "reply " .. i)
            end
        end
        assert.equal(N, h.cmdstat_calls(env.redis.port, "echo"))
        c:close()
    end)
end)
