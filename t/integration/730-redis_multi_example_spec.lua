-- examples/redis-multi end to end: that exact config (its addresses moved to
-- free ports through its SHOTOVER_EXAMPLE_* variables) in front of two real
-- redis-servers (eu, us) and a real Redis Cluster of three masters and
-- three replicas (ap).  Writes under load -- a client of our own checking
-- every reply, and redis-benchmark beside it -- while us is killed: no
-- client error.  us restarted empty: every key read through shotover has
-- its value, and afterwards us has every key again (read repair).  A master
-- of the cluster killed under writes: no client error while ap fails over.
local h = require("harness")
local rc = require("redis_cluster")

local src = os.getenv("SHOTOVER_SRC") or "."
local dir = src .. "/examples/redis-multi"

describe("examples/redis-multi", function()
    local eu, us, cl, P, admin

    setup(function()
        eu, us = h.redis_server(), h.redis_server()
        cl = rc.start{ masters = 3, replicas = 1 }
        P, admin = h.free_port(), h.free_port()
        h.shotover({
            config = h.read_file(dir .. "/shotover.lua"),
            port = P,
            wrap = { "env",
                "SHOTOVER_EXAMPLE_EU=127.0.0.1:" .. eu.port,
                "SHOTOVER_EXAMPLE_US=127.0.0.1:" .. us.port,
                "SHOTOVER_EXAMPLE_AP=" .. table.concat(cl:seeds(), ","),
                "SHOTOVER_EXAMPLE_LISTEN=127.0.0.1:" .. P,
                "SHOTOVER_EXAMPLE_ADMIN=127.0.0.1:" .. admin },
        })
    end)
    teardown(h.cleanup)

    -- a key as the cluster has it, asked of a live node (-c follows MOVED)
    local function ap_get(key)
        return (h.cli(cl:live_nodes()[1].port, "get", key, { pre = { "-c" } }))
    end

    it("passes shotover check", function()
        local r = h.run({ h.shotover_bin(), "check", "-c",
                          dir .. "/shotover.lua" }, { timeout = 30 })
        assert.are.equal(0, r.code, r.stdout .. r.stderr)
    end)

    it("walks through the README", function()
        assert.equal("OK", h.cli(P, "set", "greeting", "hello"))
        -- in all three regions once they all acknowledged
        h.wait_until(function()
            return h.cli(us.port, "get", "greeting") == "hello"
                   and ap_get("greeting") == "hello"
        end, 10, "every region to have the write")
        assert.equal("hello", h.cli(eu.port, "get", "greeting"))
        assert.equal("hello", h.cli(P, "get", "greeting"))
        -- a stale copy in us is repaired by the next read
        h.cli(us.port, "set", "greeting", "stale")
        assert.equal("hello", h.cli(P, "get", "greeting"))
        h.wait_until(function() return h.cli(us.port, "get", "greeting") == "hello" end,
                     10, "us to be repaired")
        assert.equal('ERR shotover scatter "scatter": INCR is not sent to every '
                     .. "region (only reads and idempotent writes are): refused",
                     h.chomp((h.cli(P, "incr", "visits"))))
    end)

    it("keeps writing while a region dies, and repairs it when it comes "
       .. "back empty", function()
        local N = 1500
        -- redis-benchmark beside our own client, for the load
        local bench_out = h.tmpfile("bench.out")
        local bench = h.spawn({ "redis-benchmark", "-p", tostring(P), "-t", "set",
                                "-n", "20000", "-c", "8", "-r", "500", "-q" },
                              { stdout = bench_out, stderr = "stdout" })
        local c = h.connect(P)
        local errors = {}
        local killed_at
        for i = 1, N do
            local r = c:cmd("SET", "load:" .. i, "v" .. i)
            if type(r) ~= "table" or r.status ~= "OK" then
                errors[#errors + 1] = string.format("SET load:%d: %s", i,
                    type(r) == "table" and (r.err or r.status) or tostring(r))
            end
            if i == 500 then
                us:stop(h.SIGKILL)
                killed_at = i
            end
        end
        assert.equal(500, killed_at)
        assert.same({}, errors)
        local st = bench:wait(120)
        local out = h.read_file(bench_out) or ""
        assert.truthy(st, "redis-benchmark to finish")
        assert.equal(0, st.code, out)
        assert.matches("SET: ", out)
        assert.not_matches("ERR", out)
        assert.not_matches("rror", out)
        -- us comes back empty; eu and ap have everything
        us:start()
        assert.equal("0", h.cli(us.port, "dbsize"))
        assert.equal("v" .. N, h.cli(eu.port, "get", "load:" .. N))
        assert.equal("v" .. N, ap_get("load:" .. N))
        -- shotover's us sink reconnects after its backoff: until then us
        -- fails each request at once (and what a region fails is not
        -- repaired), so wait until a write through shotover reaches it
        local probe = 0
        h.wait_until(function()
            probe = probe + 1
            c:cmd("SET", "probe", tostring(probe))
            return h.cli(us.port, "get", "probe") == tostring(probe)
        end, 30, "shotover to write to us again")
        -- every key read through shotover has its value...
        local bad = {}
        for i = 1, N do
            local v = c:cmd("GET", "load:" .. i)
            if v ~= "v" .. i then
                bad[#bad + 1] = string.format("load:%d = %s", i, tostring(v))
            end
        end
        assert.same({}, bad)
        -- ...and us has been given each of them back
        h.wait_until(function()
            return h.cli(us.port, "eval",
                         "return #redis.call('keys', 'load:*')", "0") == tostring(N)
        end, 60, "us to have every key back")
        for _, i in ipairs({ 1, 499, 500, 501, 1000, N }) do
            assert.equal("v" .. i, h.cli(us.port, "get", "load:" .. i))
        end
        local repairs = h.metric(admin,
            'shotover_scatter_repairs_total{name="scatter",region="us"}')
        assert.is_true(repairs >= N, tostring(repairs))
    end)

    it("keeps answering while a master of the ap cluster fails over",
       function()
        local c = h.connect(P)
        local errors = {}
        local function write(i)
            local r = c:cmd("SET", "fo:" .. i, "v" .. i)
            if type(r) ~= "table" or r.status ~= "OK" then
                errors[#errors + 1] = string.format("SET fo:%d: %s", i,
                    type(r) == "table" and (r.err or r.status) or tostring(r))
            end
        end
        for i = 1, 200 do write(i) end
        local master = cl:masters()[1]
        cl:kill(master)
        -- while ap has no master for some slots (CLUSTERDOWN, the dead
        -- node's errors), eu and us are the quorum
        local i = 200
        local promoted
        h.wait_until(function()
            for _ = 1, 20 do
                i = i + 1
                write(i)
            end
            local ok, p = pcall(cl.wait_failover, cl, master, 0.01)
            promoted = ok and p
            return promoted
        end, 60, "a replica of the killed master to take over")
        for _ = 1, 100 do
            i = i + 1
            write(i)
        end
        assert.same({}, errors)
        -- every write is readable through shotover, and in ap too once the
        -- cluster serves every slot again
        for k = 1, i, 7 do
            assert.equal("v" .. k, c:cmd("GET", "fo:" .. k))
        end
        h.wait_until(function() return ap_get("fo:" .. i) == "v" .. i end, 20,
                     "ap to have the last write")
        cl:restart(master)
    end)
end)
