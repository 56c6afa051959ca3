-- The Redis Cluster test harness itself (t/lib/redis_cluster.lua): 3
-- masters and 3 replicas of Debian's redis-server start on free loopback
-- client and bus ports and form one cluster that every node agrees on;
-- redis-cli -c reads and writes keys on the masters the harness names; a
-- killed master's replica takes over and the restarted master rejoins as
-- its replica; a reshard moves slots, and their keys, from one master to
-- another; cleanup stops every node and removes their dirs.  No shotover
-- here: these specs prove the ground the cluster-aware Redis specs stand
-- on.  The same cluster speaking only TLS (certificates from
-- t/lib/certs.lua) forms, serves redis-cli --tls and fails over.

local h = require("harness")
local rc = require("redis_cluster")

-- redis-cli in cluster mode (follows MOVED/ASK)
local C = { pre = { "-c" } }

local function sorted(t)
    local c = {}
    for i, v in ipairs(t) do c[i] = v end
    table.sort(c)
    return c
end

local function contains(t, x)
    for _, v in ipairs(t) do if v == x then return true end end
    return false
end

local function fields(text) return rc.info_fields(text) end

describe("redis cluster harness", function()
    local cl
    local keys = {}        -- key -> value, written by the tests below

    setup(function()
        cl = rc.start{ masters = 3, replicas = 1 }
        io.stderr:write(string.format("# redis cluster of %d nodes ready in %.1fs (node timeout %d ms)\n",
            #cl.nodes, cl.startup_seconds, cl.node_timeout_ms))
    end)
    teardown(h.cleanup)

    it("starts 3 masters and 3 replicas on free loopback client and bus ports, each in its own dir", function()
        assert.equal(6, #cl.nodes)
        local seen = {}
        for i, n in ipairs(cl.nodes) do
            assert.is_true(n.proc:alive(), n.proc:describe())
            assert.is_nil(seen[n.port]); seen[n.port] = true
            assert.is_nil(seen[n.bus_port]); seen[n.bus_port] = true
            assert.equal("127.0.0.1:" .. n.port, cl:seeds()[i])
            assert.equal(n.port, cl:ports()[i])
            -- its own nodes.conf, naming itself with the id it reports
            local conf = assert(h.read_file(n.dir .. "/nodes.conf"), n.dir)
            local id = cl:cli(n.port, "cluster", "myid")
            assert.truthy(id:find("^%x+$") and #id == 40, id)
            assert.equal(id, cl:node_id(n.port))
            assert.equal(id, n.id)
            assert.truthy(conf:find(id .. " 127.0.0.1:" .. n.port .. "@" .. n.bus_port, 1, true), conf)
            assert.truthy(conf:find("myself", 1, true))
        end
        -- every node sees every other on the bus port the harness chose
        -- (--cluster-port), not on the default port + 10000
        local topo = cl:topology(cl.nodes[6].port)
        assert.equal(6, #topo)
        for _, e in ipairs(topo) do
            assert.equal(cl:node(e.port).bus_port, e.bus_port)
            assert.equal("connected", e.link)
        end
    end)

    it("is ok on every node, with 3 masters owning all 16384 slots and one replica each", function()
        for _, n in ipairs(cl.nodes) do
            local ci = fields(cl:cli(n.port, "cluster", "info"))
            assert.equal("ok", ci.cluster_state, n.port)
            assert.equal("16384", ci.cluster_slots_assigned)
            assert.equal("16384", ci.cluster_slots_ok)
            assert.equal("6", ci.cluster_known_nodes)
            assert.equal("3", ci.cluster_size)
        end
        local masters, replicas = cl:masters(), cl:replicas()
        assert.equal(3, #masters)
        assert.equal(3, #replicas)
        local all = {}
        for _, p in ipairs(masters) do all[#all + 1] = p end
        for _, p in ipairs(replicas) do all[#all + 1] = p end
        assert.same(sorted(cl:ports()), sorted(all))
        -- the roles the harness reports are the ones each server reports
        local total = 0
        for _, m in ipairs(masters) do
            assert.equal("master", fields(cl:cli(m, "info", "replication")).role)
            local mine = cl:replicas(m)
            assert.equal(1, #mine, "replicas of " .. m)
            local ri = fields(cl:cli(mine[1], "info", "replication"))
            assert.equal("slave", ri.role)
            assert.equal(tostring(m), ri.master_port)
            assert.equal("up", ri.master_link_status)
            local slots = cl:slots_of(m)
            assert.is_true(#slots > 5000, "slots of " .. m)
            total = total + #slots
            assert.equal(m, cl:master_of_slot(slots[1]))
            assert.equal(m, cl:master_of_slot(slots[#slots]))
        end
        assert.equal(16384, total)
        for _, r in ipairs(replicas) do assert.same({}, cl:slots_of(r)) end
        assert.is_true(contains(masters, cl:master_of_slot(0)))
        assert.is_true(contains(masters, cl:master_of_slot(16383)))
        assert.is_nil(cl:master_of_slot(16384))
        assert.is_true(cl:check())
        local ok, out = cl:cluster_check()
        assert.is_true(ok, out)
    end)

    it("writes and reads keys in different slots through redis-cli -c, each on the master the harness names", function()
        -- Redis's own examples (CLUSTER KEYSLOT docs)
        assert.equal(11058, cl:slot_of("somekey"))
        assert.equal(2515, cl:slot_of("foo{hash_tag}"))
        assert.equal(2515, cl:slot_of("bar{hash_tag}"))
        -- one key on each master
        local by_master, found = {}, 0
        for i = 1, 1000 do
            local k = "key:" .. i
            local m = cl:master_of_slot(cl:slot_of(k))
            if not by_master[m] then by_master[m] = k; found = found + 1 end
            if found == 3 then break end
        end
        assert.equal(3, found)
        local masters = cl:masters()
        for m, k in pairs(by_master) do
            local v = "value of " .. k
            keys[k] = v
            local slot = cl:slot_of(k)
            assert.equal("OK", cl:cli(1, "set", k, v, C))
            assert.equal(v, cl:cli(6, "get", k, C))
            -- it lives on that master: read there without -c ...
            assert.equal(v, cl:cli(m, "get", k))
            -- ... and the other masters redirect to it
            for _, other in ipairs(masters) do
                if other ~= m then
                    local out, _, err = cl:cli(other, "get", k)
                    assert.truthy((out .. err):find("MOVED " .. slot .. " 127.0.0.1:" .. m, 1, true),
                        out .. err)
                end
            end
        end
    end)

    it("promotes a killed master's replica, and the restarted master rejoins as its replica", function()
        local k = next(keys)
        assert.truthy(k, "the previous test wrote keys")
        local slot = cl:slot_of(k)
        local victim = cl:master_of_slot(slot)
        local replica = cl:replicas(victim)[1]
        assert.truthy(replica)
        local victim_id = cl:node_id(victim)
        -- the replica has the key before its master dies
        assert.equal("OK", cl:query(replica, "READONLY").status)
        h.wait_until(function() return cl:query(replica, "GET", k) == keys[k] end,
            10, "replica " .. replica .. " to have " .. k)

        cl:kill(victim)
        assert.is_false(cl:alive(victim))
        assert.is_nil(h.try_connect(victim, 1))
        -- readiness notices a master gone (its replica's link is down, then
        -- the cluster fails until the promotion)
        local why = h.wait_until(function()
            local ok, reason = cl:check()
            return not ok and reason
        end, 10, "check() to notice the dead master")
        assert.truthy(why:find("link") or why:find("fail"), why)
        local promoted, secs = cl:wait_failover(victim)
        io.stderr:write(string.format("# failover of %d to %d took %.1fs after the kill\n",
            victim, promoted, secs))
        assert.equal(replica, promoted)
        assert.equal("master", fields(cl:cli(replica, "info", "replication")).role)
        assert.equal(replica, cl:master_of_slot(slot))
        local masters = cl:masters()
        assert.equal(3, #masters)
        assert.is_true(contains(masters, replica))
        assert.is_false(contains(masters, victim))
        assert.equal(2, #cl:replicas())
        -- the cluster agrees the old master failed
        for _, e in ipairs(cl:topology()) do
            if e.port == victim then assert.is_true(e.flags.fail, "fail flag of " .. victim) end
        end
        for _, n in ipairs(cl:live_nodes()) do
            assert.equal("ok", fields(cl:cli(n.port, "cluster", "info")).cluster_state)
        end
        -- acknowledged writes survived, and writes go on
        for key, v in pairs(keys) do assert.equal(v, cl:cli(replica, "get", key, C)) end
        assert.equal("OK", cl:cli(replica, "set", k, "after failover"))
        keys[k] = "after failover"

        cl:restart(victim)
        local rejoin = cl:wait_ok(30)
        io.stderr:write(string.format("# old master %d rejoined as a replica in %.1fs\n", victim, rejoin))
        assert.equal(victim_id, cl:node_id(victim))
        assert.same({ victim }, cl:replicas(replica))
        assert.equal(3, #cl:replicas())
        assert.same(masters, cl:masters())
        local ri = fields(cl:cli(victim, "info", "replication"))
        assert.equal("slave", ri.role)
        assert.equal(tostring(replica), ri.master_port)
        assert.equal("up", ri.master_link_status)
        assert.equal("6", fields(cl:cli(victim, "cluster", "info")).cluster_known_nodes)
        -- no persistence: what it holds now came from its new master
        assert.equal("OK", cl:query(victim, "READONLY").status)
        h.wait_until(function() return cl:query(victim, "GET", k) == "after failover" end,
            10, "the rejoined node to have the write made after the failover")
        assert.same({}, cl:slots_of(victim))
        local ok, out = cl:cluster_check()
        assert.is_true(ok, out)
    end)

    it("reshards slots, and their keys, from one master to another", function()
        local N = 100
        local masters = cl:masters()
        local from, to = masters[1], masters[2]
        local from_slots, to_slots = cl:slots_of(from), cl:slots_of(to)
        -- redis-cli moves the source's lowest slots first: keys in those,
        -- and keys in slots that stay
        local lowest = {}
        for i = 1, N do lowest[from_slots[i]] = true end
        local owned = {}
        for _, s in ipairs(from_slots) do owned[s] = true end
        local moving, staying = {}, {}
        for i = 1, 20000 do
            local k = "reshard:" .. i
            local s = cl:slot_of(k)
            if lowest[s] and #moving < 3 then moving[#moving + 1] = k
            elseif owned[s] and not lowest[s] and #staying < 3 then staying[#staying + 1] = k end
            if #moving == 3 and #staying == 3 then break end
        end
        assert.equal(3, #moving)
        assert.equal(3, #staying)
        for _, k in ipairs(moving) do assert.equal("OK", cl:query(from, "SET", k, "v-" .. k).status) end
        for _, k in ipairs(staying) do assert.equal("OK", cl:query(from, "SET", k, "v-" .. k).status) end

        local t0 = h.now()
        local moved = cl:reshard(from, to, N)
        io.stderr:write(string.format("# reshard of %d slots took %.1fs\n", N, h.now() - t0))
        assert.equal(N, #moved)
        assert.equal(#from_slots - N, #cl:slots_of(from))
        assert.equal(#to_slots + N, #cl:slots_of(to))
        for _, s in ipairs(moved) do
            assert.is_true(owned[s])
            assert.equal(to, cl:master_of_slot(s))
        end
        -- every node agrees on the new owners
        for _, n in ipairs(cl.nodes) do
            local topo = cl:topology(n.port)
            for _, e in ipairs(topo) do
                if e.port == to then
                    local has = {}
                    for _, r in ipairs(e.ranges) do
                        for s = r[1], r[2] do has[s] = true end
                    end
                    for _, s in ipairs(moved) do assert.is_true(has[s], n.port .. " sees slot " .. s .. " on " .. to) end
                end
            end
        end
        -- the keys went with their slots
        for _, k in ipairs(moving) do
            local s = cl:slot_of(k)
            assert.is_true(contains(moved, s), k)
            assert.equal("v-" .. k, cl:cli(to, "get", k))
            local out, _, err = cl:cli(from, "get", k)
            assert.truthy((out .. err):find("MOVED " .. s .. " 127.0.0.1:" .. to, 1, true), out .. err)
            assert.equal("v-" .. k, cl:cli(from, "get", k, C))
        end
        for _, k in ipairs(staying) do
            assert.equal(from, cl:master_of_slot(cl:slot_of(k)))
            assert.equal("v-" .. k, cl:cli(from, "get", k))
        end
        -- and the keys written before are all still there
        for k, v in pairs(keys) do assert.equal(v, cl:cli(to, "get", k, C)) end
        assert.is_true(cl:check())
        local ok, out = cl:cluster_check()
        assert.is_true(ok, out)
    end)

    it("cleanup stops every node and removes their dirs", function()
        local nodes = {}
        for i, n in ipairs(cl.nodes) do nodes[i] = n end
        h.cleanup()
        local keep = os.getenv("SHOTOVER_KEEP_TMP")
        for _, n in ipairs(nodes) do
            assert.is_false(n.proc:alive())
            assert.is_nil(h.try_connect(n.port, 1))
            assert.is_nil(h.try_connect(n.bus_port, 1))
            if not keep or keep == "" or keep == "0" then
                assert.is_nil(h.read_file(n.dir .. "/nodes.conf"))
            end
        end
    end)
end)

describe("a redis cluster speaking only TLS", function()
    local c, cl

    setup(function()
        c = require("certs").make()
        cl = rc.start{ masters = 3, replicas = 1,
                       tls = { cert = c.node.cert, key = c.node.key, ca = c.ca.cert } }
    end)
    teardown(h.cleanup)

    it("forms over TLS, serves redis-cli --tls -c and refuses plain text", function()
        local ok, out = cl:cluster_check()
        assert.is_true(ok, out)
        assert.is_true(cl:check())
        for i = 1, 20 do
            assert.equal("OK", cl:cli(1, "set", "tls" .. i, "v" .. i, C))
        end
        for i = 1, 20 do
            local k = "tls" .. i
            local m = cl:master_of_slot(cl:slot_of(k))
            assert.equal("v" .. i, cl:cli(m, "get", k))
            assert.equal("v" .. i, (cl:query(m, "GET", k)))
        end
        -- the nodes' ports speak TLS only
        local plain, code = h.cli(cl:port(1), "ping")
        assert.are_not.equal("PONG", plain)
        assert.are_not.equal(0, code)
    end)

    it("promotes a killed master's replica over the TLS bus", function()
        local m = cl:masters()[1]
        cl:kill(m)
        local promoted = cl:wait_failover(m, 60)
        assert.is_number(promoted)
        cl:restart(m)
        cl:wait_ok(60)
    end)
end)
