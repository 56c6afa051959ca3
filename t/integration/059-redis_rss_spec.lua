-- Idle memory goes back to the system: after bursts of thousands of
-- connections opened, pinged and closed, the proxy's RSS returns to within
-- a few MB of where it started (it grew by ~100 MB over such rounds when
-- freed memory stayed in malloc's arenas and the Lua heap).
local h = require("harness")
local ffi = require("ffi")

ffi.cdef [[
struct sh_t_rlimit { unsigned long cur, max; };
int getrlimit(int resource, struct sh_t_rlimit *rl);
int setrlimit(int resource, const struct sh_t_rlimit *rl);
]]
local RLIMIT_NOFILE = 7

-- this process opens a round's connections at once: raise its soft limit
local function raise_nofile()
    local rl = ffi.new("struct sh_t_rlimit")
    assert(ffi.C.getrlimit(RLIMIT_NOFILE, rl) == 0)
    rl.cur = rl.max
    ffi.C.setrlimit(RLIMIT_NOFILE, rl)
    return tonumber(rl.cur)
end

describe("after bursts of connections", function()
    teardown(h.cleanup)

    it("RSS returns to within a few MB of its start", function()
        local per_round = math.min(6000, raise_nofile() - 500)
        local A = h.free_port()
        local env = h.start_pair({ workers = 2, extra = string.format(
            'admin = { listen = "127.0.0.1:%d" },', A) })
        local function rss() return env.proxy:status_kb("VmRSS") end
        local function releases()
            return h.metric(A, "shotover_memory_releases_total") or 0
        end
        local ping = h.resp_command("PING")
        -- one connection first, so the start counts what any client costs
        local first = h.connect(env.port)
        assert.same(h.status("PONG"), first:cmd("PING"))
        first:close()
        local start, peak = rss(), 0
        for round = 1, 6 do
            local before = releases()
            local conns = {}
            for i = 1, per_round do
                conns[i] = h.connect(env.port)
                assert(conns[i]:send(ping))
            end
            for i = 1, per_round do
                assert.same(h.status("PONG"), conns[i]:read_reply(10))
            end
            peak = math.max(peak, rss())
            for i = 1, per_round do conns[i]:close() end
            -- each worker releases once its share has gone quiet
            h.wait_until(function() return releases() >= before + 2 end, 15,
                         "both workers to release memory")
            print(string.format("# round %d: %d connections, RSS peak %d kB, "
                                .. "after %d kB (start %d kB)", round,
                                per_round, peak, rss(), start))
        end
        assert.is_true(peak - start > 20 * 1024,
                       "the rounds did not grow RSS: peak " .. peak)
        -- A sanitizer build's malloc is AddressSanitizer's, which keeps
        -- freed memory in its quarantine and ignores malloc_trim: there
        -- the releases above are checked, what RSS does is ASan's.
        if not os.getenv("ASAN_OPTIONS") then
            local after = rss()
            assert.is_true(after - start < 4 * 1024, string.format(
                "RSS %d kB after the rounds, %d kB at the start", after, start))
        end
        local healthy = h.connect(env.port)
        assert.same(h.status("PONG"), healthy:cmd("PING"))
    end)
end)
