-- The cassandra sink in front of a real two-node Cassandra 5.0 ring
-- (127.0.0.2 and 127.0.0.3, t/lib/cassandra.lua's start_ring), with two
-- shotover instances in front of it, driven by the DataStax Python driver:
-- the driver's metadata lists only the shotover instances; every request
-- reaches a replica of its partition (the node's own trace says which node
-- coordinated it), prepared and literal alike; tokens are the node's own;
-- a node stopped under a running workload at consistency ONE costs the
-- client no error, and service through it resumes when it is back.
local h = require("harness")
local cassandra = require("cassandra")
local ffi = require("ffi")
local C = require("shotover.ffi").C
local ring_key = require("shotover.cql.ring").routing_key

-- the script prelude for a driver pointed at the shotover instances: only
-- shotover's own token-aware, round-robin load balancing, and no retries of
-- its own (every error the proxy gives reaches the script)
local DRIVER = [[
from cassandra.cluster import Cluster, ExecutionProfile, EXEC_PROFILE_DEFAULT
from cassandra.policies import (TokenAwarePolicy, RoundRobinPolicy,
                                FallthroughRetryPolicy,
                                ConstantReconnectionPolicy)
from cassandra import ConsistencyLevel
import time
def shotover(port, cl=ConsistencyLevel.ONE):
    prof = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
        retry_policy=FallthroughRetryPolicy(), consistency_level=cl,
        request_timeout=20)
    c = Cluster(['127.0.0.1'], port=port, protocol_version=4,
                execution_profiles={EXEC_PROFILE_DEFAULT: prof},
                reconnection_policy=ConstantReconnectionPolicy(0.2, None),
                connect_timeout=10, control_connection_timeout=10)
    return c, c.connect()
]]

describe("cassandra sink on a ring", function()
    local ring, P1, P2

    local function proxy_config(port)
        return string.format([[
return {
  workers = 2,
  sources = {
    { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d",
      chain = { { "cassandra", contact_points = { %q },
                  shotover_nodes = {
                    { address = "127.0.0.1:%d", rack = "rA", dc = "dcX" },
                    { address = "127.0.0.1:%d", rack = "rB", dc = "dcX" } } } } },
  },
}
]], port, ring:contact_points()[1], P1, P2)
    end

    setup(function()
        ring = cassandra.start_ring{ hosts = { "127.0.0.2", "127.0.0.3" } }
        P1, P2 = h.free_port(), h.free_port()
        for _, port in ipairs({ P1, P2 }) do
            h.shotover({ config = proxy_config(port) })
            h.wait_until(function()
                local c = h.try_connect(port, 1)
                if c then c:close() end
                return c ~= nil
            end, 15, "shotover to listen on " .. port)
        end
        ring:python([[
c, s = connect()
s.execute("CREATE KEYSPACE one WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE KEYSPACE two WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 2}")
s.execute("CREATE TABLE one.t (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE one.c (a text, b bigint, v text, PRIMARY KEY ((a, b)))")
s.execute("CREATE TABLE two.t (k int PRIMARY KEY, v text)")
c.shutdown()
]])
    end)
    teardown(h.cleanup)

    it("hashes partition keys to the tokens Cassandra gives them", function()
        local out = ring:python([[
c, s = connect()
ints = [0, 1, -1, 7, 123456789, -2147483648]
pairs = [("", 0), ("x", 1), ("\u00e9t\u00e9 long enough to pass sixteen", -5)]
for k in ints:
    s.execute("INSERT INTO one.t (k, v) VALUES (%s, 'x')", [k])
    print("int", k, s.execute("SELECT token(k) FROM one.t WHERE k = %s",
                              [k]).one()[0])
for a, b in pairs:
    s.execute("INSERT INTO one.c (a, b, v) VALUES (%s, %s, 'x')", [a, b])
    print("pair", a.encode().hex(), b,
          s.execute("SELECT token(a, b) FROM one.c WHERE a = %s AND b = %s",
                    [a, b]).one()[0])
c.shutdown()
]])
        local n = 0
        local function tok(key)
            return (tostring(C.sh_ffi_cql_token(key, #key)):gsub("LL$", ""))
        end
        local function be(v, bytes)
            local x = ffi.cast("uint64_t", ffi.cast("int64_t", v))
            local s = {}
            for i = bytes - 1, 0, -1 do
                s[#s + 1] = string.char(tonumber(bit.band(bit.rshift(x,
                                                                i * 8), 0xff)))
            end
            return table.concat(s)
        end
        for k, want in out:gmatch("int (%-?%d+) (%-?%d+)") do
            assert.equal(want, tok(be(tonumber(k), 4)))
            n = n + 1
        end
        for a, b, want in out:gmatch("pair (%x*) (%-?%d+) (%-?%d+)") do
            local text = a:gsub("%x%x", function(x)
                return string.char(tonumber(x, 16))
            end)
            assert.equal(want, tok(ring_key({ text, be(tonumber(b), 8) }, 2)))
            n = n + 1
        end
        assert.equal(9, n)
    end)

    it("shows drivers the shotover instances and never the nodes",
       function()
        local out = cassandra.python(DRIVER .. [[
c, s = shotover(int(ARGS[0]))
for h in sorted(c.metadata.all_hosts(), key=lambda h: str(h.endpoint)):
    print("host", h.endpoint.address, h.endpoint.port, h.datacenter, h.rack,
          h.is_up)
deadline = time.time() + 20
while len(s._pools) < 2 and time.time() < deadline:
    time.sleep(0.05)
print("pools", sorted(str(h.endpoint) for h in s._pools))
for h in c.metadata.all_hosts():
    via = h.endpoint.port
    print("local", via, s.execute("SELECT rpc_address, rpc_port, data_center, "
                                  "rack, release_version FROM system.local",
                                  host=h).one())
    for r in s.execute("SELECT peer, native_address, native_port, "
                       "data_center, rack, tokens FROM system.peers_v2",
                       host=h):
        print("peer_v2", via, r.peer, r.native_address, r.native_port,
              r.data_center, r.rack, list(r.tokens))
    for r in s.execute("SELECT peer, rpc_address, data_center "
                       "FROM system.peers", host=h):
        print("peer", via, r.peer, r.rpc_address, r.data_center)
c.shutdown()
]], { args = { P1 } })
        assert.matches("host 127.0.0.1 " .. P1 .. " dcX rA True", out,
                       nil, true)
        assert.matches("host 127.0.0.1 " .. P2 .. " dcX rB True", out,
                       nil, true)
        local hosts = select(2, out:gsub("\nhost ", "\n"))
        assert.equal(2, hosts + (out:sub(1, 5) == "host " and 1 or 0))
        -- system.local describes the instance that answered, and the
        -- peers tables the other one
        for _, port in ipairs({ P1, P2 }) do
            local other = port == P1 and P2 or P1
            local rack = { [P1] = "rA", [P2] = "rB" }
            local token = { [P1] = "-9223372036854775808", [P2] = "-1" }
            assert.matches("local " .. port .. " Row(rpc_address='127.0.0.1', "
                           .. "rpc_port=" .. port .. ", data_center='dcX', "
                           .. "rack='" .. rack[port] .. "', "
                           .. "release_version='5.0.5')", out, nil, true)
            assert.matches("peer_v2 " .. port .. " 127.0.0.1 127.0.0.1 "
                           .. other .. " dcX " .. rack[other] .. " ['"
                           .. token[other] .. "']", out, nil, true)
            assert.matches("peer " .. port .. " 127.0.0.1 127.0.0.1 dcX", out,
                           nil, true)
        end
        assert.equal(2, select(2, out:gsub("peer_v2 ", "")))
        assert.is_nil(out:find("127.0.0.2", 1, true), out)
        assert.is_nil(out:find("127.0.0.3", 1, true), out)
        local pools = { "127.0.0.1:" .. P1, "127.0.0.1:" .. P2 }
        table.sort(pools)
        assert.matches("pools ['" .. pools[1] .. "', '" .. pools[2] .. "']",
                       out, nil, true)
    end)

    it("lets a table be used at once after the driver created it",
       function()
        -- the driver waits for schema agreement after a DDL (asking the
        -- system tables through its control connection), then prepares on
        -- any instance: the agreement must be asked of the node that made
        -- the change, or a node still without the table gets the PREPARE
        local out = cassandra.python(DRIVER .. [[
c, s = shotover(int(ARGS[0]))
bad = []
for i in range(30):
    t = "one.ddl%d" % i
    s.execute("CREATE TABLE %s (k int PRIMARY KEY, v text)" % t)
    try:
        p = s.prepare("INSERT INTO %s (k, v) VALUES (?, ?)" % t)
        s.execute(p, [1, "x"])
    except Exception as e:
        bad.append(repr(e))
print("bad", len(bad), bad[:3])
c.shutdown()
# whichever instance and connection: the DDL and the agreement's reads
# are coordinated by one node (the node's trace says which)
seen = set()
for i in range(6):
    c, s = shotover(int(ARGS[i % 2]))
    rs = s.execute("CREATE TABLE one.tr%d (k int PRIMARY KEY)" % i, trace=True)
    seen.add(rs.get_query_trace().coordinator)
    for h in c.metadata.all_hosts():
        rs = s.execute("SELECT schema_version FROM system.local", host=h,
                       trace=True)
        seen.add(rs.get_query_trace().coordinator)
    c.shutdown()
print("coordinators", len(seen), sorted(seen))
]], { args = { P1, P2 }, timeout = 240 })
        assert.matches("bad 0 []", out, nil, true)
        assert.matches("coordinators 1 ", out, nil, true)
    end)

    it("sends each request to a replica of its partition", function()
        -- keyspace `one` keeps each partition on one node: the node that
        -- coordinated a request (its trace) must be that replica, which the
        -- driver connected to the ring itself computes
        local owners = ring:python([[
from cassandra.query import SimpleStatement
c, s = connect(keyspace="one")
import struct
for k in range(40):
    r = c.metadata.get_replicas("one", struct.pack(">i", k))
    print("owner", k, r[0].address)
c.shutdown()
]])
        local owner = {}
        for k, a in owners:gmatch("owner (%d+) ([%d.]+)") do
            owner[tonumber(k)] = a
        end
        local out = cassandra.python(DRIVER .. [[
from cassandra.query import BatchStatement
c, s = shotover(int(ARGS[0]))
ins = s.prepare("INSERT INTO one.t (k, v) VALUES (?, ?)")
sel = s.prepare("SELECT v FROM one.t WHERE k = ?")
for k in range(40):
    rs = s.execute(ins, [k, "v%d" % k], trace=True)
    print("ins", k, rs.get_query_trace().coordinator)
    rs = s.execute(sel, [k], trace=True)
    assert rs.one().v == "v%d" % k
    print("sel", k, rs.get_query_trace().coordinator)
    rs = s.execute("SELECT v FROM one.t WHERE k = %d" % k, trace=True)
    assert rs.one().v == "v%d" % k
    print("lit", k, rs.get_query_trace().coordinator)
    b = BatchStatement()
    b.add(ins, [k, "b%d" % k])
    b.add(ins, [k, "v%d" % k])
    rs = s.execute(b, trace=True)
    print("batch", k, rs.get_query_trace().coordinator)
c.shutdown()
]], { args = { P1 }, timeout = 180 })
        local n, seen = 0, {}
        for kind, k, coord in out:gmatch("(%a+) (%d+) ([%d.]+)") do
            assert.equal(owner[tonumber(k)], coord,
                         kind .. " of key " .. k .. ":\n" .. out)
            seen[coord] = true
            n = n + 1
        end
        assert.equal(160, n)
        assert.is_true(seen["127.0.0.2"] and seen["127.0.0.3"])
    end)

    it("keeps serving at ONE when a node stops under load, and uses it "
       .. "again once it is back; drivers hear of no node's events",
       function()
        local stopfile = h.tmpfile("stop")
        local script = DRIVER .. [[
import threading, os, sys
c, s = shotover(int(ARGS[0]))
ins = s.prepare("INSERT INTO two.t (k, v) VALUES (?, ?)")
sel = s.prepare("SELECT v FROM two.t WHERE k = ?")
ok = [0]; errors = []
def done(): return os.path.exists(ARGS[1])
def work(base):
    i = 0
    while not done():
        k = base + i % 500
        try:
            s.execute(ins, [k, "v%d" % i])
            # (at ONE a replica that was down may not have the row yet:
            # only errors count)
            r = s.execute(sel, [k]).one()
            assert r is None or r.v.startswith("v"), r
            ok[0] += 2
        except Exception as e:
            errors.append(repr(e))
        i += 1
ts = [threading.Thread(target=work, args=(t * 1000,)) for t in range(4)]
for t in ts: t.start()
while not done():
    print("progress", ok[0], len(errors)); sys.stdout.flush(); time.sleep(0.2)
for t in ts: t.join()
print("ok", ok[0])
print("errors", len(errors))
for e in errors[:5]: print("error", e)
c.shutdown()
]]
        local w, out = cassandra.python_spawn(script, { args = { P2, stopfile } })
        local function progress()
            local last
            for n in (h.read_file(out) or ""):gmatch("progress (%d+)") do
                last = tonumber(n)
            end
            return last or 0
        end
        local function more(ops, what)
            local from = progress()
            h.wait_until(function()
                assert(w:alive(), h.read_file(out))
                return progress() >= from + ops
            end, 60, what)
        end
        more(200, "the workload to run")
        -- events: a client REGISTERed through shotover (a third instance,
        -- given node 1 alone as contact point, so that its first client's
        -- home is node 1) and one straight on node 1
        local P3 = h.free_port()
        h.shotover({ config = proxy_config(P3):gsub("contact_points = { [^}]* }",
            'contact_points = { "' .. ring.nodes[1].host .. ":"
            .. ring.nodes[1].port .. '" }, local_node = "127.0.0.1:' .. P1
            .. '"'):gsub("workers = 2", "workers = 1") })
        h.wait_until(function()
            local c = h.try_connect(P3, 1)
            if c then c:close() end
            return c ~= nil
        end, 15, "shotover to listen on " .. P3)
        local direct = ring:connect(1, { timeout = 10 })
        assert.equal("READY", direct:register({ "STATUS_CHANGE" }).opname)
        local via = cassandra.connect(P3, { timeout = 10 })
        assert.equal("READY", via:register({ "STATUS_CHANGE",
            "TOPOLOGY_CHANGE", "SCHEMA_CHANGE" }).opname)
        local node = ring.nodes[2]
        node:stop()
        cassandra.wait_event(direct, "STATUS_CHANGE DOWN " .. node.host .. ":"
                           .. node.port, 30)
        -- a schema change after the node's DOWN event: shotover's client
        -- hears of it, and of nothing about nodes before it
        direct:query("CREATE TABLE one.ev (k int PRIMARY KEY)")
        local seen = cassandra.wait_event(via, "SCHEMA_CHANGE CREATED TABLE one.ev",
                                30)
        for _, e in ipairs(seen) do
            assert.matches("^SCHEMA_CHANGE", e)
        end
        direct:close()
        more(500, "the workload to go on with a node stopped")
        node:start()
        ring:wait_ready(120)
        more(500, "the workload to go on with the node back")
        h.write_file(stopfile, "")
        local st = w:wait(60)
        local text = h.read_file(out) or ""
        assert.same({ code = 0 }, st, text)
        assert.matches("errors 0", text, nil, true)
        assert.is_true(tonumber(text:match("\nok (%d+)")) > 1200, text)
        -- the node the events came from stops: the client's REGISTER moves
        -- to the other node with its requests, and events come from there
        direct = ring:connect(2, { timeout = 10 })
        assert.equal("READY", direct:register({ "STATUS_CHANGE" }).opname)
        local first = ring.nodes[1]
        first:stop()
        cassandra.wait_event(direct, "STATUS_CHANGE DOWN " .. first.host .. ":"
                                     .. first.port, 30)
        for _ = 1, 2 do       -- the first finds node 1 gone, the second moves
            assert.equal("RESULT", via:query(
                "SELECT release_version FROM system.local").opname)
        end
        direct:query("CREATE TABLE one.ev2 (k int PRIMARY KEY)")
        seen = cassandra.wait_event(via, "SCHEMA_CHANGE CREATED TABLE one.ev2",
                                    30)
        for _, e in ipairs(seen) do
            assert.matches("^SCHEMA_CHANGE", e)
        end
        direct:close()
        via:close()
        first:start()
        ring:wait_ready(120)
        -- both nodes coordinate requests through shotover again
        local coord = cassandra.python(DRIVER .. [[
c, s = shotover(int(ARGS[0]))
sel = s.prepare("SELECT v FROM one.t WHERE k = ?")
seen = set()
for k in range(40):
    seen.add(s.execute(sel, [k], trace=True).get_query_trace().coordinator)
print("coordinators", sorted(seen))
c.shutdown()
]], { args = { P2 } })
        assert.matches("coordinators ['127.0.0.2', '127.0.0.3']", coord,
                       nil, true)
    end)
end)
