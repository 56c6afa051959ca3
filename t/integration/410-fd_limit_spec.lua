-- At the open files limit: new connections are closed at once (not left
-- hanging, and without spinning), the log says so at most once a second
-- with how many it did not say, shotover_accept_errors_total counts them,
-- existing clients are served on, and new ones are taken again once
-- descriptors free up.  And the soft limit is raised to the hard one at
-- start.
local h = require("harness")

local EMFILE = 'shotover_accept_errors_total{source="redis",reason="emfile"}'
local WARN = '[warn] source "redis": accept: Too many open files'

-- A new client's PING: the connection when answered, or nil when shotover
-- closed it instead.
local function try_client(port)
    local c = h.connect(port)
    c:send("PING\r\n")            -- fails when the close came first: fine
    local v = c:try_read_reply(5)
    if type(v) == "table" and v.status == "PONG" then
        return c
    end
    assert(c.eof, "neither answered nor closed: " .. tostring(v))
    c:close()
    return nil
end

-- the warn lines about refused connections in the log, and what they add
-- up to (each says how many it closed and how many went unsaid before it)
local function warnings(log)
    local lines, total = {}, 0
    for l in log:gmatch("[^\n]+") do
        if l:find(WARN, 1, true) then
            local n = tonumber(l:match("closed (%d+) new connection"))
            local more = tonumber(l:match("; (%d+) more since the last message")) or 0
            assert(n, "unexpected line: " .. l)
            lines[#lines + 1] = l
            total = total + n + more
        end
    end
    return lines, total
end

describe("shotover at the open files limit", function()
    local env, P, A

    setup(function()
        A = h.free_port()
        env = h.start_pair({ workers = 1,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            wrap = { "prlimit", "--nofile=64:64", "--" } })
        P = env.port
    end)
    teardown(h.cleanup)

    it("logs the limit it runs with", function()
        assert.truthy(env.proxy:log():find("open files limit 64 (the hard limit is 64)", 1, true))
    end)

    it("closes new connections, says so once a second, counts them and serves on", function()
        local kept, refused = {}, 0
        for _ = 1, 100 do
            local c = try_client(P)
            if not c then
                refused = 1
                break
            end
            kept[#kept + 1] = c
        end
        assert.equal(1, refused, "no connection was refused with 64 descriptors")
        assert.is_true(#kept > 20 and #kept < 64, #kept .. " clients kept")
        local t0 = h.now()
        for _ = 1, 10 do
            assert.is_nil(try_client(P), "taken at the limit")
            refused = refused + 1
        end
        assert(h.now() - t0 < 0.8, "the refusals took too long to test the rate limit")

        -- one line for the lot: the first refusal's
        env.proxy:wait_log(WARN)
        local lines = warnings(env.proxy:log())
        assert.equal(1, #lines, table.concat(lines, "\n"))
        -- closing a refused connection lets its client go on to the next
        -- one, which the same shedding round may take too: 1 or 2 here
        -- (what they add up to is checked below)
        local first = tonumber(lines[1]:match(
            "%(open files limit 64%): closed (%d+) new connections? at once"))
        assert.truthy(first and first <= 2, lines[1])

        -- the clients it has are served
        assert.same(h.status("OK"), kept[1]:cmd("SET", "fd:k", "v"))
        assert.equal("v", kept[#kept]:cmd("GET", "fd:k"))
        assert.same(h.status("PONG"), kept[2]:cmd("PING"))
        assert.is_true(env.proxy:alive())

        -- descriptors free up: new clients are taken again
        for _ = 1, 5 do
            table.remove(kept):close()
        end
        local fresh = h.wait_until(function()
            local c = try_client(P)
            if not c then refused = refused + 1 end
            return c
        end, 5, "a new client to be taken", 0.05)
        assert.same(h.status("OK"), fresh:cmd("SET", "fd:k", "w"))
        assert.equal(refused, h.metric(A, EMFILE))

        -- a second later, the next refusal is said, with the ones held back
        h.sleep(1.1)
        for _ = 1, 10 do
            local c = try_client(P)
            if not c then
                refused = refused + 1
                break
            end
            kept[#kept + 1] = c
        end
        h.wait_until(function() return #warnings(env.proxy:log()) == 2 end, 5,
                     "a second warning")
        local all, total = warnings(env.proxy:log())
        assert.truthy(all[2]:find("more since the last message", 1, true), all[2])
        assert.equal(refused, total)
        -- the admin endpoint needs a descriptor too
        for _ = 1, 3 do
            table.remove(kept):close()
        end
        h.wait_until(function() return h.metric(A, EMFILE) end, 5, "the metrics")
        assert.equal(refused, h.metric(A, EMFILE))
        assert.equal(0, h.metric(A, 'shotover_accept_errors_total{source="redis",reason="other"}'))
        for _, c in ipairs(kept) do
            assert.same(h.status("PONG"), c:cmd("PING"))
        end
    end)
end)

describe("the soft open files limit", function()
    teardown(h.cleanup)

    it("is raised to the hard limit at start", function()
        local port = h.free_port()
        local s = h.shotover({ config = h.config({ listen = port, chain = "{ 'null' }" }),
                               port = port, wrap = { "prlimit", "--nofile=64:256", "--" } })
        local limits = h.read_file("/proc/" .. s.proc.pid .. "/limits")
        assert.truthy(limits, "no /proc/PID/limits")
        local soft, hard = limits:match("Max open files%s+(%d+)%s+(%d+)")
        assert.same({ "256", "256" }, { soft, hard }, limits)
        assert.truthy(s:log():find("open files limit raised from 64 to 256 (the hard limit)", 1, true),
                      s:log())
    end)
end)
