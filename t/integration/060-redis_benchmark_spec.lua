-- redis-benchmark through shotover: pipelined and unpipelined SET/GET runs
-- complete, report a throughput, and their writes land in the real redis.
local h = require("harness")

local function bench(port, args, timeout)
    local argv = { "redis-benchmark", "-p", tostring(port) }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = h.run(argv, { timeout = timeout or 180 })
    assert.is_false(r.timed_out, "redis-benchmark " .. table.concat(args, " ")
        .. " did not finish; output: " .. r.stdout:sub(-400))
    assert.equal(0, r.code, "redis-benchmark failed: " .. r.stdout:sub(-400) .. r.stderr)
    return r.stdout .. r.stderr
end

local function check_run(env, args, n)
    local R = env.redis.port
    assert.equal("OK", h.cli(R, "flushall"))
    assert.equal("OK", h.cli(R, "config", "resetstat"))
    local out = bench(env.port, args)
    local set, get = h.benchmark_rps(out, "SET"), h.benchmark_rps(out, "GET")
    assert.is_number(set, "no SET result in: " .. out)
    assert.is_number(get, "no GET result in: " .. out)
    assert.is_true(set > 0, "SET rps " .. set)
    assert.is_true(get > 0, "GET rps " .. get)
    -- every request reached the real redis, which holds the data
    assert.is_true(h.cmdstat_calls(R, "set") >= n,
        "redis saw " .. h.cmdstat_calls(R, "set") .. " SETs, wanted " .. n)
    assert.is_true(h.cmdstat_calls(R, "get") >= n,
        "redis saw " .. h.cmdstat_calls(R, "get") .. " GETs, wanted " .. n)
    return out
end

describe("redis-benchmark through a one-worker shotover", function()
    local env

    setup(function() env = h.start_pair({ workers = 1 }) end)
    teardown(h.cleanup)

    it("completes -t set,get -n 20000 -c 20 -P 16 and the data lands in redis", function()
        check_run(env, { "-t", "set,get", "-n", "20000", "-c", "20", "-P", "16", "-q" }, 20000)
        local R = env.redis.port
        assert.equal("1", h.cli(R, "dbsize"))
        assert.equal("3", h.cli(R, "strlen", "key:__rand_int__"))   -- -d 3 payload
        assert.equal("3", h.cli(env.port, "strlen", "key:__rand_int__"))
    end)

    it("completes -t set,get -n 20000 -c 20 -P 1 with random keys that all land in redis", function()
        check_run(env, { "-t", "set,get", "-n", "20000", "-c", "20", "-P", "1", "-q",
            "-r", "1000" }, 20000)
        -- 20000 SETs over 1000 random keys leave (all but surely) every key
        local n = tonumber((h.cli(env.redis.port, "dbsize")))
        assert.is_true(n >= 990 and n <= 1000, "dbsize " .. tostring(n))
        local key = h.cli(env.redis.port, "randomkey")
        assert.matches("^key:%d+$", key)
        assert.equal("3", h.cli(env.port, "strlen", key))
    end)

    it("is still running and responsive afterwards", function()
        assert.is_true(env.proxy:alive(), env.proxy.proc:describe())
        assert.equal("PONG", h.cli(env.port, "ping"))
    end)
end)

describe("redis-benchmark through a two-worker shotover", function()
    local env

    setup(function() env = h.start_pair({ workers = 2, sink = "connections = 2," }) end)
    teardown(h.cleanup)

    it("completes -t set,get -n 20000 -c 20 -P 16 and the data lands in redis", function()
        check_run(env, { "-t", "set,get", "-n", "20000", "-c", "20", "-P", "16", "-q" }, 20000)
        assert.equal("1", h.cli(env.redis.port, "dbsize"))
    end)

    it("completes a 50-client run of mixed commands", function()
        local out = bench(env.port, { "-t", "ping,set,get,incr,lpush,lpop", "-n", "5000",
            "-c", "50", "-P", "4", "-q" })
        for _, t in ipairs({ "SET", "GET", "INCR", "LPUSH", "LPOP" }) do
            local v = h.benchmark_rps(out, t)
            assert.is_number(v, "no " .. t .. " result in: " .. out)
            assert.is_true(v > 0)
        end
        assert.is_true(env.proxy:alive(), env.proxy.proc:describe())
    end)
end)
