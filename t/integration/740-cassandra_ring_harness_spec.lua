-- The two-node Cassandra ring of the test harness (cassandra.start_ring in
-- t/lib/cassandra.lua): two real nodes on 127.0.0.2 and 127.0.0.3, the same
-- native port on both, see each other as peers with their tokens, replicate
-- a keyspace of replication factor 2, keep answering at ONE with one node
-- stopped and see it come back up.  No shotover here: this is the ground
-- the specs of a Cassandra cluster sink stand on.

local h = require("harness")
local cassandra = require("cassandra")

local HOSTS = { "127.0.0.2", "127.0.0.3" }

describe("cassandra harness: two-node ring", function()
    local ring

    setup(function()
        ring = cassandra.start_ring{ hosts = HOSTS, auth = false }
        io.stderr:write(string.format(
            "# ring of %d started in %.1fs (nodes ready %.1fs / %.1fs, ring formed %.1fs after), native port %d\n",
            #ring.nodes, ring.startup_seconds, ring.nodes[1].startup_seconds,
            ring.nodes[2].startup_seconds, ring.ready_seconds, ring.port))
    end)
    teardown(h.cleanup)

    it("runs one node per address, on the same native port", function()
        assert.equal(2, #ring.nodes)
        for i, host in ipairs(HOSTS) do
            local n = ring:node(i)
            assert.equal(host, n.host)
            assert.equal(ring.port, n.port)
            assert.is_true(n:alive())
            assert.equal(cassandra.versions().CASSANDRA_VERSION, n:probe())
            assert.truthy(h.read_file(n.yaml_path):find("listen_address: " .. host, 1, true))
            -- nothing on that port on the other addresses but the nodes
            assert.is_nil(h.try_connect(n.port, 1, "127.0.0.1"))
        end
        assert.same({ "127.0.0.2:" .. ring.port }, ring:seeds())
        assert.same({ "127.0.0.2:" .. ring.port, "127.0.0.3:" .. ring.port }, ring:contact_points())
    end)

    it("each node lists the other in system.peers(_v2): address, native port, dc, rack, tokens", function()
        local views = { ring:view(1), ring:view(2) }
        local all_tokens = {}
        for i = 1, 2 do
            local j = 3 - i
            local v, other = views[i], views[j]
            local n = 0
            for _ in pairs(v.peers) do n = n + 1 end
            assert.equal(1, n)
            local p = v.peers[HOSTS[j]]
            assert.truthy(p, "node " .. i .. " does not list " .. HOSTS[j])
            assert.equal(HOSTS[j], p.native_address)
            assert.equal(HOSTS[j], p.rpc_address)      -- system.peers, for older drivers
            assert.equal(ring.port, p.native_port)
            assert.equal("datacenter1", p.data_center)
            assert.equal("rack1", p.rack)
            assert.equal(other["local"].host_id, p.host_id)
            assert.equal(v["local"].schema_version, p.schema_version)
            -- the tokens the other node owns, as it says itself
            table.sort(p.tokens); table.sort(other["local"].tokens)
            assert.equal(ring.num_tokens, #p.tokens)
            assert.same(other["local"].tokens, p.tokens)
            assert.equal(HOSTS[i], v["local"].rpc_address)
            assert.equal(ring.port, v["local"].native_port)
            for _, t in ipairs(v["local"].tokens) do
                assert.is_nil(all_tokens[t], "token " .. t .. " owned twice")
                all_tokens[t] = true
            end
        end
        assert.are_not.equal(views[1]["local"].host_id, views[2]["local"].host_id)
    end)

    it("replicates: written at ALL through one node, read through the other", function()
        local c1 = ring:connect(1)
        c1:query("CREATE KEYSPACE ring WITH replication = "
            .. "{'class': 'SimpleStrategy', 'replication_factor': 2}")
        c1:query("CREATE TABLE ring.kv (k int PRIMARY KEY, v text)")
        ring:wait_ready(30)                     -- schema agreement
        for k = 1, 20 do
            c1:query(string.format("INSERT INTO ring.kv (k, v) VALUES (%d, 'v%d')", k, k),
                { consistency = "ALL" })
        end
        c1:close()
        local c2 = ring:connect(2)
        for k = 1, 20 do
            local r = c2:query("SELECT v FROM ring.kv WHERE k = " .. k, { consistency = "ALL" })
            assert.same({ "v" .. k }, r.rows[1])
        end
        c2:close()
        -- the DataStax driver against both contact points sees both hosts
        local out = ring:python([[
c, s = connect(keyspace='ring')
hosts = sorted('%s:%d' % (h.endpoint.address, h.endpoint.port) for h in c.metadata.all_hosts())
print('hosts', ','.join(hosts))
from cassandra import ConsistencyLevel
from cassandra.query import SimpleStatement
n = s.execute(SimpleStatement("SELECT count(*) FROM kv", consistency_level=ConsistencyLevel.ALL)).one()[0]
print('count', n)
owners = sorted(str(r.address) for r in c.metadata.get_replicas('ring', b'\x00\x00\x00\x07'))
print('replicas', ','.join(owners))
c.shutdown()
]])
        assert.truthy(out:find("hosts " .. table.concat(ring:contact_points(), ","), 1, true), out)
        assert.truthy(out:find("count 20", 1, true), out)
        assert.truthy(out:find("replicas 127.0.0.2,127.0.0.3", 1, true), out)
    end)

    it("a node stopped: the other still reads at ONE, refuses ALL; back UP after a restart", function()
        local n2 = ring:node(2)
        local c1 = ring:connect(1, { timeout = 10 })
        assert.equal("READY", c1:register({ "STATUS_CHANGE" }).opname)
        local _, killed = n2:stop()
        assert.is_false(killed)
        assert.is_false(n2:alive())
        local t0 = h.now()
        cassandra.wait_event(c1, "STATUS_CHANGE DOWN " .. n2.host .. ":" .. n2.port, 30)
        io.stderr:write(string.format("# node 2 seen DOWN after %.1fs\n", h.now() - t0))
        local r = c1:query("SELECT v FROM ring.kv WHERE k = 7", { consistency = "ONE" })
        assert.same({ "v7" }, r.rows[1])
        local e = c1:query("SELECT v FROM ring.kv WHERE k = 7", { consistency = "ALL", may_fail = true })
        assert.equal("ERROR", e.opname)
        assert.equal(0x1000, e.code)            -- unavailable
        c1:query("INSERT INTO ring.kv (k, v) VALUES (100, 'while down')", { consistency = "ONE" })
        assert.is_false(ring:all_up_from(1))

        c1.events = {}
        t0 = h.now()
        n2:start()
        cassandra.wait_event(c1, "STATUS_CHANGE UP " .. n2.host .. ":" .. n2.port, 60)
        io.stderr:write(string.format("# node 2 restarted in %.1fs, UP as seen from node 1 after %.1fs\n",
            n2.startup_seconds, h.now() - t0))
        c1:close()
        h.wait_until(function() return ring:all_up_from(1) end, 30, "ALL through node 1")
        local c = ring:connect(1)
        r = c:query("SELECT v FROM ring.kv WHERE k = 7", { consistency = "ALL" })
        assert.same({ "v7" }, r.rows[1])
        c:close()
        ring:wait_ready(60)
    end)
end)
