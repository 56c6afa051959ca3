-- The redis_cluster sink against a real 6-node Redis Cluster (3 masters, 3
-- replicas of Debian's redis-server, t/lib/redis_cluster.lua), driven by
-- plain redis-cli and raw connections that know nothing of clusters: keys
-- land on their slot's master and MOVED never reaches the client;
-- multi-key commands split by slot and joined in order; CROSSSLOT where
-- Redis gives it; DBSIZE, KEYS, SCAN and FLUSHALL over every master;
-- MULTI/EXEC and WATCH on one slot; pub/sub and blocking commands; reads
-- from replicas; a slot migration under load with every increment counted
-- once; a master killed under load, and service back without a restart.
local h = require("harness")
local rc = require("redis_cluster")

local key_slot = require("shotover.transforms.redis_cluster").key_slot

-- n keys whose slots are all in `slots` (a set), named prefix..i
local function keys_in(slots, n, prefix)
    local out, i = {}, 0
    while #out < n do
        i = i + 1
        local k = prefix .. i
        if slots[key_slot(k)] then
            out[#out + 1] = k
        end
    end
    return out
end

local function set_of(list)
    local s = {}
    for _, v in ipairs(list) do s[v] = true end
    return s
end

describe("redis_cluster sink", function()
    local cl, P

    local function proxy(extra)
        local port = h.free_port()
        local seeds = {}
        for i = 1, 2 do seeds[i] = string.format("%q", cl:seeds()[i]) end
        h.shotover{ port = port, config = h.config{ listen = port,
            chain = string.format('{ "redis_cluster", nodes = { %s }, %s }',
                                  table.concat(seeds, ", "), extra or "") } }
        return port
    end

    setup(function()
        cl = rc.start{ masters = 3, replicas = 1 }
        P = proxy()
    end)
    teardown(h.cleanup)

    it("puts each key on its slot's master, never showing MOVED", function()
        local c = h.connect(P)
        for i = 1, 60 do
            assert.same(h.status("OK"), c:cmd("SET", "k" .. i, "v" .. i))
        end
        for i = 1, 60 do
            local k = "k" .. i
            assert.equal("v" .. i, c:cmd("GET", k))
            -- on the master the cluster says owns its slot
            local m = cl:master_of_slot(key_slot(k))
            assert.equal("v" .. i, cl:query(m, "GET", k))
            assert.equal(cl:slot_of(k), key_slot(k))
        end
        -- the keys are spread: every master got some
        for _, m in ipairs(cl:masters()) do
            assert.is_true(tonumber(cl:query(m, "DBSIZE")) > 0)
        end
        -- hash tags keep keys together
        assert.equal(key_slot("{user1}.a"), key_slot("{user1}.b"))
    end)

    it("splits multi-key commands by slot and joins them in order",
       function()
        local c = h.connect(P)
        assert.same(h.status("OK"),
                    c:cmd("MSET", "ma", "1", "mb", "2", "mc", "3", "md", "4"))
        assert.same({ "1", "2", h.NULL, "3", "4" },
                    c:cmd("MGET", "ma", "mb", "nosuch", "mc", "md"))
        assert.equal(5, c:cmd("EXISTS", "ma", "mb", "mc", "md", "ma"))
        assert.equal(4, c:cmd("TOUCH", "ma", "mb", "mc", "md"))
        assert.equal(2, c:cmd("DEL", "ma", "mb", "nosuch"))
        assert.equal(2, c:cmd("UNLINK", "mc", "md"))
        assert.equal(0, c:cmd("EXISTS", "ma", "mb", "mc", "md"))
        -- Redis' own refusals
        assert.matches("^CROSSSLOT",
                       c:cmd("MSETNX", "ma", "1", "mb", "2").err)
        assert.equal(1, c:cmd("MSETNX", "{t}a", "1", "{t}b", "2"))
        assert.matches("^CROSSSLOT", c:cmd("SUNION", "ma", "mb").err)
        assert.matches("wrong number of arguments",
                       c:cmd("MSET", "{t}a", "1", "{t}b").err)
    end)

    it("counts, lists, scans and flushes over every master", function()
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("FLUSHALL"))
        assert.equal(0, c:cmd("DBSIZE"))
        for i = 1, 300 do
            c:cmd("SET", "s" .. i, "x")
        end
        assert.equal(300, c:cmd("DBSIZE"))
        assert.equal(300, #c:cmd("KEYS", "s*"))
        -- redis-cli --scan runs SCAN until the cursor comes back 0
        local out = h.cli(P, "--scan", "--pattern", "s*")
        local seen, n = {}, 0
        for k in out:gmatch("[^\n]+") do
            if not seen[k] then n = n + 1 end
            seen[k] = true
        end
        assert.equal(300, n)
        assert.same(h.status("OK"), c:cmd("FLUSHALL"))
        assert.equal(0, c:cmd("DBSIZE"))
        for _, m in ipairs(cl:masters()) do
            assert.equal(0, tonumber(cl:query(m, "DBSIZE")))
        end
    end)

    it("runs MULTI/EXEC and WATCH on one slot, refuses them across slots",
       function()
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "{tx}a", "1"))
        assert.same(h.status("QUEUED"), c:cmd("INCR", "{tx}a"))
        assert.same({ h.status("OK"), 2 }, c:cmd("EXEC"))
        assert.equal("2", c:cmd("GET", "{tx}a"))
        -- a command on another slot: CROSSSLOT, then EXECABORT
        c:cmd("MULTI")
        c:cmd("SET", "{tx}a", "9")
        assert.matches("^CROSSSLOT", c:cmd("SET", "other", "1").err)
        assert.matches("^EXECABORT", c:cmd("EXEC").err)
        assert.equal("2", c:cmd("GET", "{tx}a"))
        assert.matches("EXEC without MULTI", c:cmd("EXEC").err)
        -- WATCH: a change by another client aborts the transaction
        local other = h.connect(P)
        assert.same(h.status("OK"), c:cmd("WATCH", "{tx}a"))
        other:cmd("SET", "{tx}a", "changed")
        c:cmd("MULTI")
        c:cmd("SET", "{tx}a", "mine")
        assert.equal(h.NULL, c:cmd("EXEC"))
        assert.equal("changed", c:cmd("GET", "{tx}a"))
        -- DISCARD drops the WATCH too: a later change does not abort
        c:cmd("WATCH", "{tx}a")
        c:cmd("MULTI")
        assert.same(h.status("OK"), c:cmd("DISCARD"))
        other:cmd("SET", "{tx}a", "changed again")
        c:cmd("MULTI")
        c:cmd("SET", "{tx}a", "after discard")
        assert.same({ h.status("OK") }, c:cmd("EXEC"))
        -- and without a change it goes through
        c:cmd("WATCH", "{tx}a")
        c:cmd("MULTI")
        c:cmd("SET", "{tx}a", "mine")
        assert.same({ h.status("OK") }, c:cmd("EXEC"))
        assert.equal("mine", other:cmd("GET", "{tx}a"))
        -- pipelined: keys of several nodes around a transaction, in order
        local pipe = {}
        for _, a in ipairs({ { "SET", "p1", "1" }, { "SET", "p2", "2" },
                             { "MULTI" }, { "INCR", "{tx}n" },
                             { "INCR", "{tx}n" }, { "EXEC" },
                             { "MGET", "p1", "p2", "{tx}n" } }) do
            pipe[#pipe + 1] = h.resp_command(unpack(a))
        end
        assert.is_true((c:send(table.concat(pipe))))
        local r = c:read_replies(7)
        assert.same({ h.status("OK"), h.status("OK"), h.status("OK"),
                      h.status("QUEUED"), h.status("QUEUED"), { 1, 2 },
                      { "1", "2", "2" } }, r)
    end)

    it("relays pub/sub and serves blocking commands", function()
        local sub = h.connect(P)
        sub:send(h.resp_command("SUBSCRIBE", "news"))
        assert.same({ "subscribe", "news", 1 }, sub:read_reply())
        local pub = h.connect(P)
        -- every node passes a publication on: the subscriber hears it
        h.wait_until(function()
            return pub:cmd("PUBLISH", "news", "hello") >= 1
        end, 10, "the subscriber to be counted")
        assert.same({ "message", "news", "hello" }, sub:read_reply())
        local b = h.connect(P)
        b:send(h.resp_command("BLPOP", "queue", "10"))
        assert.is_true(b:silent(0.3))
        assert.equal(1, pub:cmd("LPUSH", "queue", "job"))
        assert.same({ "queue", "job" }, b:read_reply())
    end)

    it("reads from replicas with read_from = replica", function()
        local master = cl:master_of_slot(key_slot("rk"))
        local replica = cl:replicas(master)[1]
        assert.same(h.status("OK"), h.connect(P):cmd("SET", "rk", "rv"))
        -- the replica has the write, and CLUSTER SLOTS lists it (Redis
        -- leaves out replicas that never replicated anything)
        local slot = key_slot("rk")
        -- as the nodes the proxy asks (its seeds) see it
        local function listed(node)
            for _, range in ipairs(cl:query(node, "CLUSTER", "SLOTS")) do
                if tonumber(range[1]) <= slot and slot <= tonumber(range[2])
                then
                    return #range > 3
                end
            end
            return false
        end
        h.wait_until(function()
            return cl:query(replica, "READONLY") and
                   cl:query(replica, "GET", "rk") == "rv"
                   and listed(cl.nodes[1].port) and listed(cl.nodes[2].port)
        end, 20, "the replica to have the write")
        local R = proxy('read_from = "replica",')
        local c = h.connect(R)
        assert.same(h.status("OK"), c:cmd("SET", "rk", "rv"))
        local function gets(port)
            local info = cl:cli(port, "INFO", "commandstats")
            return tonumber(info:match("cmdstat_get:calls=(%d+)")) or 0
        end
        local r0, m0 = gets(replica), gets(master)
        for _ = 1, 10 do
            assert.equal("rv", c:cmd("GET", "rk"))
        end
        -- the reads went to the replica, none to the master
        assert.is_true(gets(replica) >= r0 + 10, string.format(
            "replica %d: %d GETs before, %d after; master %d: %d, %d",
            replica, r0, gets(replica), master, m0, gets(master)))
        assert.equal(m0, gets(master))
    end)

    it("moves slots under load without a client error or a lost write",
       function()
        local from = cl:masters()[1]
        local to = cl:masters()[2]
        local moving = {}
        for i, s in ipairs(cl:slots_of(from)) do
            if i > 200 then break end
            moving[s] = true
        end
        local ks = keys_in(moving, 8, "mig")
        -- INCR each key 3000 times from separate redis-cli processes, while
        -- the slots move
        local procs, outs = {}, {}
        for i, k in ipairs(ks) do
            outs[i] = h.tmpfile("incr" .. i)
            procs[i] = h.spawn({ "redis-cli", "-p", tostring(P), "-r", "3000",
                                 "INCR", k },
                               { stdout = outs[i], stderr = "stdout" })
        end
        local moved = cl:reshard(from, to, 200)
        assert.is_true(#moved >= 200)
        for i, p in ipairs(procs) do
            p:wait(120)
            local out = h.read_file(outs[i])
            assert.is_nil(out:find("ERR", 1, true), out:sub(1, 500))
            assert.is_nil(out:find("MOVED", 1, true))
            assert.is_nil(out:find("ASK", 1, true))
        end
        local c = h.connect(P)
        for _, k in ipairs(ks) do
            assert.equal("3000", c:cmd("GET", k))
            -- now on the new owner
            assert.equal(to, cl:master_of_slot(key_slot(k)))
        end
    end)

    it("learns a failover and serves again without a restart", function()
        local victim = cl:masters()[3]
        local slots = cl:slots_of(victim)
        local ks = keys_in(set_of(slots), 5, "fo")
        local c = h.connect(P)
        for _, k in ipairs(ks) do
            assert.same(h.status("OK"), c:cmd("SET", k, "before"))
        end
        -- the writes reached the replica before the master dies
        cl:query(victim, "WAIT", 1, 5000)
        -- under load: INCRs of a key on a master that stays, and of one on
        -- the victim, from their own clients
        local other = cl:masters()[1]
        local steady = keys_in(set_of(cl:slots_of(other)), 1, "steady")[1]
        local hit = keys_in(set_of(slots), 1, "hit")[1]
        local outs, procs = {}, {}
        for i, k in ipairs({ steady, hit }) do
            outs[i] = h.tmpfile("fo" .. i)
            procs[i] = h.spawn({ "redis-cli", "-p", tostring(P), "-r",
                                 "20000", "INCR", k },
                               { stdout = outs[i], stderr = "stdout" })
        end
        h.wait_until(function()
            local v = cl:query(other, "GET", steady)
            return type(v) == "string" and tonumber(v) > 500
        end, 20, "the load to run")
        cl:kill(victim)
        local newm = cl:wait_failover(victim)
        assert.are_not.equal(victim, newm)
        for i, p in ipairs(procs) do
            p:wait(180)
            local out = h.read_file(outs[i])
            if i == 1 then
                -- a slot of a master that stayed: the only errors are the
                -- cluster's own CLUSTERDOWN while a slot has no master
                -- (Redis' cluster-require-full-coverage, on by default),
                -- never applied; every success counted once
                local oks = 0
                for line in out:gmatch("[^\n]+") do
                    if line:match("^%d+$") then
                        oks = oks + 1
                    else
                        assert.equal("CLUSTERDOWN The cluster is down", line)
                    end
                end
                assert.equal(tostring(oks), c:cmd("GET", steady))
                assert.is_true(oks > 1000)
            else
                -- the victim's slot: a request sent while it was down
                -- failed with the backend's error or CLUSTERDOWN (both
                -- documented), never a redirection; every success counted
                -- (a failed one may have been applied), and the last ones
                -- succeeded: service came back under the same load
                local oks, last = 0, nil
                for line in out:gmatch("[^\n]+") do
                    if line:match("^%d+$") then
                        oks, last = oks + 1, "ok"
                    else
                        assert.truthy(line:find("shotover: backend", 1, true)
                                      or line:find("CLUSTERDOWN", 1, true),
                                      line)
                        last = line
                    end
                end
                assert.equal("ok", last)
                assert.is_true(tonumber((c:cmd("GET", hit))) >= oks)
                assert.is_true(oks > 1000)
            end
        end
        -- through the same shotover: within a few maps, every key is read
        -- from the new master and takes writes
        h.wait_until(function()
            local v = c:cmd("GET", ks[1])
            return v == "before"
        end, 20, "shotover to read from the new master")
        for _, k in ipairs(ks) do
            assert.equal("before", c:cmd("GET", k))
            assert.same(h.status("OK"), c:cmd("SET", k, "after"))
            assert.equal("after", cl:query(newm, "GET", k))
        end
        cl:restart(victim)
        cl:wait_ok()
    end)
end)
