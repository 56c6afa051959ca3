-- Reloading the config (SIGHUP, POST /reload) while clients run: no client
-- sees an error or loses its connection, a pinned client's transaction and
-- database stay, new connections get the new chains, listeners that stay
-- never close, removed ones stop accepting while their connections carry
-- on, unchanged backends keep their connections, metrics keep counting,
-- and a bad config is refused with every problem logged while the old one
-- serves on.
local h = require("harness")
local OK = h.status("OK")

-- the text of a config: sources given as Lua text
local function config(A, sources)
    return string.format([[
return {
  workers = 2,
  admin = { listen = "127.0.0.1:%d" },
  sources = { %s },
}
]], A, sources)
end

local function redis_source(P, R, extra)
    return string.format([[{ name = "main", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { %s { "redis", remote = "127.0.0.1:%d" } } },]], P, extra or "", R)
end

local function returner_source(P, name, text)
    return string.format([[{ name = %q, protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "debug_returner", simple = %q } } },]], name, P, text)
end

-- the ids of shotover's shared connections on the redis at port R
local function shared_ids(R)
    local ids = {}
    for _, e in ipairs(h.client_list(R)) do
        if e.name == "shotover" then ids[#ids + 1] = e.id end
    end
    table.sort(ids)
    return table.concat(ids, ",")
end

-- rewrite the config and reload with SIGHUP; wait until every worker did
local function reload(s, text, workers)
    -- the workers listen before the main thread handles signals
    s:wait_log("running with", 15)
    local before = select(2, s:log():gsub("reloaded ", ""))
    h.write_file(s.config_path, text)
    assert.is_true(s.proc:kill(h.SIGHUP))
    h.wait_until(function()
        return select(2, s:log():gsub("reloaded ", "")) >= before + (workers or 2)
    end, 15, "every worker to reload")
end

describe("reloading the config", function()
    local redis, R

    setup(function()
        redis = h.redis_server()
        R = redis.port
    end)
    teardown(h.cleanup)

    it("under a running redis-benchmark that connects anew for each request: no error, no refused or dropped connection, the backend connections kept", function()
        local P, A = h.free_port(), h.free_port()
        local plain = config(A, redis_source(P, R))
        local counted = config(A, redis_source(P, R, '{ "query_counter", name = "q" },'))
        local s = h.shotover({ config = plain, port = P })
        assert.equal("PONG", h.cli(P, "ping"))
        -- both workers' shared connections up
        for _ = 1, 20 do h.cli(P, "get", "warm") end
        local ids = shared_ids(R)
        local out = h.tmpfile("bench.out")
        -- -k 0: a new connection for every request, so connections are
        -- being accepted all through each reload
        local bench = h.spawn({ "redis-benchmark", "-p", tostring(P), "-c", "20",
            "-n", "40000", "-k", "0", "-t", "set,get", "-q" },
            { stdout = out, stderr = "stdout" })
        h.wait_until(function()
            return (h.metric(A, 'shotover_requests_total{source="main"}') or 0) > 1000
        end, 20, "the benchmark to be running")
        for i = 1, 4 do
            assert.is_true(bench:alive(), "the benchmark still runs at reload " .. i)
            reload(s, i % 2 == 1 and counted or plain)
        end
        local st = bench:wait(120)
        assert.is_table(st, "redis-benchmark finished")
        local text = h.read_file(out)
        assert.equal(0, st.code, text)
        assert.is_nil(text:find("rror"), text)
        assert.is_nil(text:find("connect", 1, true), text)     -- "Could not connect"
        assert.is_nil(text:find("refused", 1, true), text)
        assert.matches("SET: [%d.]+ requests per second", text)
        assert.matches("GET: [%d.]+ requests per second", text)
        -- the sink's settings never changed: its pools, and their backend
        -- connections, are the ones it had
        assert.equal(ids, shared_ids(R))
        assert.is_true(s:alive())
    end)

    it("keeps a pinned client's transaction and database; new connections get the new chain", function()
        local P, P2, A = h.free_port(), h.free_port(), h.free_port()
        local s = h.shotover({ port = P, config = config(A,
            redis_source(P, R) .. returner_source(P2, "side", "OLD")) })
        local a = h.connect(P)
        assert.same(OK, a:cmd("SELECT", "2"))
        assert.same(OK, a:cmd("MULTI"))
        assert.same(h.status("QUEUED"), a:cmd("SET", "reload:k", "in db 2"))
        local old_side = h.connect(P2)
        assert.equal("OLD", old_side:cmd("GET", "x").status)
        local requests = h.metric(A, 'shotover_requests_total{source="main"}')

        reload(s, config(A, redis_source(P, R, '{ "query_counter", name = "q" },')
                            .. returner_source(P2, "side", "NEW")))
        -- the transaction goes on where it was, on its own connection
        assert.same({ OK }, a:cmd("EXEC"))
        assert.equal("in db 2", a:cmd("GET", "reload:k"))
        assert.equal("in db 2", h.cli(R, "-n", "2", "get", "reload:k"))
        -- old connection, old chain; new connection, new chain
        assert.equal("OLD", old_side:cmd("GET", "x").status)
        local new_side = h.connect(P2)
        assert.equal("NEW", new_side:cmd("GET", "x").status)
        -- counters go on from where they were
        assert.is_true(h.metric(A, 'shotover_requests_total{source="main"}') >= requests + 2)
        a:close(); old_side:close(); new_side:close()
    end)

    it("opens added sources, and closes removed ones to new clients while theirs carry on", function()
        local P, P2, P3, A = h.free_port(), h.free_port(), h.free_port(), h.free_port()
        local s = h.shotover({ port = P, config = config(A,
            redis_source(P, R) .. returner_source(P2, "gone", "STILL HERE")) })
        local stays = h.connect(P2)
        assert.equal("STILL HERE", stays:cmd("PING").status)
        reload(s, config(A, redis_source(P, R) .. returner_source(P3, "added", "ADDED")))
        assert.equal("ADDED", h.connect(P3):cmd("PING").status)
        assert.is_nil((h.try_connect(P2, 1)), "a removed source accepts nothing")
        assert.equal("STILL HERE", stays:cmd("PING").status)
        assert.matches('source "gone" on 127%.0%.0%.1:' .. P2 .. " removed", s:log())
        stays:close()
        -- its configuration goes once its last client has: the old chain's
        -- Redis pool is the new one's, so its connections stay
        assert.equal("PONG", h.cli(P, "ping"))
    end)

    it("refuses a bad config with every problem logged, and serves on with the old one", function()
        local P, A = h.free_port(), h.free_port()
        local good = config(A, redis_source(P, R))
        local s = h.shotover({ port = P, config = good })
        s:wait_log("running with", 15)
        h.write_file(s.config_path, config(A, [[{ name = "main", protocol = "redis",
            listen = "127.0.0.1:]] .. P .. [[", chain = { { "nosuch" },
            { "redis", remote = "nowhere" } } },]]))
        assert.is_true(s.proc:kill(h.SIGHUP))
        s:wait_log("SIGHUP: " .. s.config_path .. " is not valid", 10)
        s:wait_log('unknown transform "nosuch"', 10)
        s:wait_log("sources[1].chain[2].remote", 10)
        assert.equal("PONG", h.cli(P, "ping"))
        -- the same through the admin endpoint, with the problems in the reply
        local code, body = h.http("POST", A, "/reload")
        assert.equal(400, code)
        assert.matches('unknown transform "nosuch"', body)
        assert.matches("sources%[1%]%.chain%[2%]%.remote", body)
        h.write_file(s.config_path, good)
        code, body = h.http("POST", A, "/reload")
        assert.equal(200, code, body)
        assert.equal("PONG", h.cli(P, "ping"))
        assert.is_true(s:alive())
        -- what a reload cannot change is said, and the rest is loaded
        h.write_file(s.config_path, (good:gsub("workers = 2", "workers = 3")))
        code, body = h.http("POST", A, "/reload")
        assert.equal(200, code, body)
        s:wait_log("`workers` or `admin` changed: that takes a restart", 10)
        assert.equal("PONG", h.cli(P, "ping"))
    end)
end)
