-- The admin endpoint of a running shotover: health, readiness, Prometheus
-- metrics that promtool accepts without warnings and that count what
-- happened, and the log level changed live.
local h = require("harness")

local http, series = h.http, h.metric

describe("the admin endpoint", function()
    local env, P, A

    setup(function()
        A = h.free_port()
        env = h.start_pair({ workers = 2,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = [[{ "query_counter", name = "main" },
                      { "redis", remote = "%REMOTE%" }]] })
        P = env.port
        -- the source listens before the admin endpoint does
        h.wait_listening(A, "the admin endpoint")
    end)
    teardown(h.cleanup)

    it("answers health and readiness", function()
        assert.same({ 200, "ok\n" }, { http("GET", A, "/health") })
        assert.same({ 200, "ready\n" }, { http("GET", A, "/ready") })
        assert.equal(404, (http("GET", A, "/nope")))
        assert.equal(405, (http("POST", A, "/metrics")))
    end)

    it("serves the process metrics under Prometheus' standard names", function()
        local text = select(2, http("GET", A, "/metrics"))
        local start = series(text, "process_start_time_seconds")
        assert.is_true(start > os.time() - 3600 and start <= os.time() + 1,
            "start time " .. tostring(start))
        assert.is_true(series(text, "process_cpu_seconds_total") >= 0)
        assert.is_true(series(text, "process_resident_memory_bytes") > 1024 * 1024)
        assert.is_true(series(text, "process_virtual_memory_bytes")
                       >= series(text, "process_resident_memory_bytes"))
        local fds, max = series(text, "process_open_fds"), series(text, "process_max_fds")
        assert.is_true(fds >= 3 and fds < max, fds .. " of " .. max)
        -- twenty more clients are twenty more descriptors
        local conns = {}
        for i = 1, 20 do conns[i] = h.connect(P) end
        h.wait_until(function()
            return series(A, "process_open_fds") >= fds + 20
        end, 10, "open fds to follow the connections")
        for i = 1, 20 do conns[i]:close() end
    end)

    it("serves metrics that promtool accepts and that count requests",
       function()
        for i = 1, 5 do
            h.cli(P, "set", "k" .. i, "v")
        end
        h.cli(P, "get", "k1")
        local c = h.connect(P)                 -- an open connection
        local code, text = http("GET", A, "/metrics")
        assert.equal(200, code)
        local path = h.tmpfile("metrics")
        h.write_file(path, text)
        local r = h.run({ "sh", "-c", "promtool check metrics < " .. path },
                        { timeout = 20 })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal("", r.stdout .. r.stderr)    -- not even a warning
        assert.is_true(series(text, 'shotover_requests_total{source="redis"}')
                       >= 6)
        assert.equal(5, series(text,
            'shotover_query_count_total{name="main",query="SET"}'))
        assert.equal(1, series(text,
            'shotover_query_count_total{name="main",query="GET"}'))
        assert.equal(1, series(text, 'shotover_connections{source="redis"}'))
        assert.is_true(series(text,
            'shotover_request_duration_seconds_count{source="redis"}') >= 6)
        assert.equal(1, series(text, 'shotover_build_info{version="0.1.0"}'))
        c:close()
    end)

    it("counts socket reads and writes toward clients and toward backends", function()
        local names = { "reads", "read_bytes", "writes", "written_bytes" }
        local function counts()
            local text, t = select(2, http("GET", A, "/metrics")), {}
            for _, side in ipairs({ "client", "backend" }) do
                for _, k in ipairs(names) do
                    t[side .. " " .. k] = series(text, string.format(
                        'shotover_socket_%s_total{side="%s"}', k, side))
                end
            end
            return t
        end
        local c = h.connect(P)
        local req = h.resp_command("SET", "sockets", "v")
        assert.same(h.status("OK"), c:cmd("SET", "sockets", "v"))  -- connected
        local before = counts()
        -- one request at a time: a read and a write on each side per request
        for _ = 1, 10 do
            assert.same(h.status("OK"), c:cmd("SET", "sockets", "v"))
        end
        local after = counts()
        c:close()
        local d = {}
        for k, v in pairs(after) do d[k] = v - before[k] end
        assert.same({
            ["client reads"] = 10, ["client read_bytes"] = 10 * #req,
            ["client writes"] = 10, ["client written_bytes"] = 10 * #"+OK\r\n",
            ["backend reads"] = 10, ["backend read_bytes"] = 10 * #"+OK\r\n",
            ["backend writes"] = 10, ["backend written_bytes"] = 10 * #req,
        }, d)
    end)

    it("counts backend failures", function()
        env.redis:stop()
        assert.matches("unavailable", h.cli(P, "get", "x"))
        local _, text = http("GET", A, "/metrics")
        local n = 0
        for v in text:gmatch('shotover_backend_errors_total{sink="redis"[^}]*} (%d+)')
        do
            n = n + tonumber(v)
        end
        assert.is_true(n >= 1)
    end)

    it("changes the log level live", function()
        assert.same({ 400, "unknown log level: give error, warn, info or debug\n" },
                    { http("PUT", A, "/log-level", "loud") })
        assert.same({ 200, "log level debug\n" },
                    { http("PUT", A, "/log-level", "debug") })
        h.cli(P, "ping")
        env.proxy:wait_log("[debug] conn ", 5)
        assert.same({ 200, "log level info\n" },
                    { http("PUT", A, "/log-level", "info") })
    end)
end)
