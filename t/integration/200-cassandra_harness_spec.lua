-- The Cassandra test harness itself (t/lib/cassandra.lua): a real Cassandra
-- node from the Maven Central jars starts on free loopback ports, answers
-- the DataStax Python driver over protocol v3/v4/v5, uncompressed and
-- compressed, enforces PasswordAuthenticator, and can be stopped and
-- restarted on the same ports under a running client.  No shotover here:
-- these specs prove the ground the Cassandra proxy specs stand on.

local h = require("harness")
local cassandra = require("cassandra")

-- (protocol version, compression) pairs the driver and the node agree on;
-- `want` is the compression the connection must end up with (the driver
-- has no Snappy with v5's framing, so v5+snappy is uncompressed)
local SESSIONS = {
    { v = 3, comp = "False", want = "None" },
    { v = 4, comp = "False", want = "None" },
    { v = 4, comp = "'lz4'", want = "lz4" },
    { v = 4, comp = "'snappy'", want = "snappy" },
    { v = 5, comp = "False", want = "None" },
    { v = 5, comp = "'lz4'", want = "lz4" },
}

-- one script per session: schema, writes of several types, reads back,
-- paging, and what the pool connection negotiated
local ROUNDTRIP = [[
pv, comp, tag = int(ARGS[0]), eval(ARGS[1]), ARGS[2]
c, s = connect(protocol_version=pv, compression=comp)
pool = list(s._pools.values())[0]
conn = pool._connection if hasattr(pool, '_connection') else list(pool._connections.values())[0]
print('negotiated', c.protocol_version, conn.protocol_version, conn._compression_type,
      bool(getattr(conn, '_is_checksumming_enabled', False)))
s.execute("CREATE KEYSPACE IF NOT EXISTS harness WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
t = 'harness.kv_' + tag
s.execute("CREATE TABLE IF NOT EXISTS %s (k text, n int, v blob, l list<int>, PRIMARY KEY (k, n))" % t)
ins = s.prepare("INSERT INTO %s (k, n, v, l) VALUES (?, ?, ?, ?)" % t)
big = bytes(range(256)) * 64          # 16 KiB, compressible
for i in range(50):
    s.execute(ins, ('key', i, big if i == 7 else b'x' * i, [i, i + 1]))
from cassandra.query import SimpleStatement
rows = list(s.execute(SimpleStatement("SELECT n, v, l FROM %s WHERE k = 'key'" % t, fetch_size=7)))
assert [r.n for r in rows] == list(range(50)), [r.n for r in rows]
assert rows[7].v == big
assert rows[3].v == b'xxx' and rows[3].l == [3, 4]
# a value bigger than one v5 segment (128 KiB payload): multi-segment frames
huge = bytes(range(251)) * 1200
s.execute(ins, ('huge', 0, huge, None))
got = s.execute("SELECT v FROM %s WHERE k = 'huge'" % t).one().v
assert got == huge, len(got)
print('rows', len(rows), 'huge', len(got))
print(s.execute("SELECT release_version FROM system.local").one().release_version)
c.shutdown()
]]

describe("cassandra harness: plain node", function()
    local node

    setup(function()
        node = cassandra.start{ auth = false, jmx = true }
        io.stderr:write(string.format("# cassandra %s started in %.1fs (native %d, storage %d, jmx %d)\n",
            node.version, node.startup_seconds, node.port, node.storage_port, node.jmx_port))
    end)
    teardown(h.cleanup)

    it("runs the version pinned in t/versions on free loopback ports", function()
        assert.equal(cassandra.versions().CASSANDRA_VERSION, node.version)
        assert.is_true(node:alive())
        assert.are_not.equal(9042, node.port)
        assert.truthy(node:log():find("Startup complete", 1, true))
        -- the temp dir holds the generated config and logs
        assert.truthy(h.read_file(node.yaml_path):find("native_transport_port: " .. node.port, 1, true))
    end)

    it("answers raw CQL v4 frames: OPTIONS, STARTUP, QUERY", function()
        local c = cassandra.connect(node.port, { no_startup = true })
        local sup = c:options()
        assert.equal("SUPPORTED", sup.opname)
        assert.truthy(table.concat(sup.options.PROTOCOL_VERSIONS, ","):find("5/v5", 1, true))
        local comp = table.concat(sup.options.COMPRESSION, ",")
        assert.truthy(comp:find("lz4", 1, true) and comp:find("snappy", 1, true), comp)
        assert.equal("READY", c:startup().opname)
        local r = c:query("SELECT cluster_name, release_version FROM system.local")
        assert.equal("rows", r.result)
        assert.same({ "shotover-test", node.version }, r.rows[1])
        local e = c:query("SELEKT 1", { may_fail = true })
        assert.equal("ERROR", e.opname)
        assert.equal(0x2000, e.code)          -- syntax error
        c:close()
    end)

    for _, sess in ipairs(SESSIONS) do
        local name = string.format("v%d %s", sess.v, sess.comp)
        it("Python driver round trip: protocol " .. name, function()
            local tag = string.format("v%d_%s", sess.v, sess.comp:gsub("%W", ""))
            local out = node:python(ROUNDTRIP, { args = { sess.v, sess.comp, tag }, timeout = 90 })
            local pv, cpv, ctype = out:match("negotiated (%d) (%d) (%S+)")
            assert.equal(tostring(sess.v), pv, out)
            assert.equal(tostring(sess.v), cpv, out)
            assert.equal(sess.want, ctype, out)
            assert.truthy(out:find("rows 50 huge 301200", 1, true), out)
            assert.truthy(out:find(node.version, 1, true), out)
        end)
    end

    it("runs nodetool over local JMX", function()
        local out, code, err = node:nodetool("version")
        assert.equal(0, code, err)
        assert.truthy(out:find("ReleaseVersion: " .. node.version, 1, true), out .. err)
    end)

    it("stops and restarts on the same ports under a running client; data survives", function()
        local port, storage = node.port, node.storage_port
        node:python([[
c, s = connect()
s.execute("CREATE TABLE IF NOT EXISTS harness.survive (k int PRIMARY KEY, v text)")
s.execute("INSERT INTO harness.survive (k, v) VALUES (1, 'before restart')")
c.shutdown()
]])
        -- a client that keeps querying through the outage and reports each result
        local proc, out_path = node:python_spawn([[
import time
c, s = connect()
ok_before = ok_after = errs = 0
deadline = time.time() + 120
while time.time() < deadline:
    try:
        v = s.execute("SELECT v FROM harness.survive WHERE k = 1", timeout=2).one().v
        if errs: ok_after += 1
        else: ok_before += 1
        print('ok', ok_before, ok_after, errs, v, flush=True)
        if ok_after >= 3: break
    except Exception as e:
        errs += 1
        print('err', type(e).__name__, flush=True)
    time.sleep(0.1)
c.shutdown()
print('done', ok_before, ok_after, errs, flush=True)
]])
        h.wait_until(function()
            return (h.read_file(out_path) or ""):find("ok 2 ", 1, true)
        end, 60, "the client to query before the restart")
        local _, killed = node:stop()
        assert.is_false(killed)            -- a clean shutdown on SIGTERM
        assert.is_false(node:alive())
        assert.is_nil(h.try_connect(port, 1))
        h.wait_until(function()
            return (h.read_file(out_path) or ""):find("\nerr ", 1, true)
        end, 30, "the client to see the node down")
        node:start()
        assert.equal(port, node.port)
        assert.equal(storage, node.storage_port)
        local st = proc:wait(90)
        local out = h.read_file(out_path) or ""
        assert.truthy(st, "client still running:\n" .. out)
        assert.equal(0, st.code, out)
        assert.truthy(out:find("done %d+ 3 [1-9]"), out)
        assert.truthy(out:find("before restart", 1, true), out)
        io.stderr:write(string.format("# restart took %.1fs\n", node.startup_seconds))
    end)

    it("survives SIGKILL: commit log replay keeps acknowledged writes", function()
        local c = cassandra.connect(node.port)
        c:query("INSERT INTO harness.survive (k, v) VALUES (2, 'before crash')")
        c:close()
        node:kill()
        assert.is_false(node:alive())
        node:start()
        local c2 = cassandra.connect(node.port)
        local r = c2:query("SELECT v FROM harness.survive WHERE k = 2")
        assert.same({ "before crash" }, r.rows[1])
        c2:close()
    end)
end)

describe("cassandra harness: PasswordAuthenticator node", function()
    local node

    setup(function()
        node = cassandra.start{ auth = true }
        io.stderr:write(string.format("# cassandra (auth) started in %.1fs\n", node.startup_seconds))
    end)
    teardown(h.cleanup)

    it("asks raw clients to authenticate and accepts cassandra/cassandra", function()
        local c = cassandra.connect(node.port, { no_startup = true })
        local r = c:request(cassandra.op.STARTUP, cassandra.string_map({ CQL_VERSION = "3.0.0" }))
        assert.equal("AUTHENTICATE", r.opname)
        assert.equal("org.apache.cassandra.auth.PasswordAuthenticator", r.authenticator)
        r = c:request(cassandra.op.AUTH_RESPONSE, cassandra.bytes("\0cassandra\0wrong"))
        assert.equal("ERROR", r.opname)
        assert.equal(0x0100, r.code)             -- bad credentials
        c:close()
        local ok = cassandra.connect(node.port, { user = "cassandra", password = "cassandra" })
        assert.equal("rows", ok:query("SELECT release_version FROM system.local").result)
        ok:close()
    end)

    it("Python driver: a wrong password is rejected, the right one works", function()
        local out = node:python([[
from cassandra.cluster import NoHostAvailable
from cassandra import AuthenticationFailed
for pv in (4, 5):
    try:
        c, s = connect(protocol_version=pv, password='wrong')
        print('UNEXPECTED: connected with a wrong password')
    except NoHostAvailable as e:
        errs = list(e.errors.values())
        assert errs and all(isinstance(x, AuthenticationFailed) for x in errs), errs
        print('rejected', pv, 'Provided username cassandra and/or password are incorrect' in str(errs[0]))
    c, s = connect(protocol_version=pv, compression='lz4')
    print('accepted', pv, s.execute("SELECT release_version FROM system.local").one()[0])
    c.shutdown()
try:
    connect(user=None)
    print('UNEXPECTED: connected without credentials')
except NoHostAvailable as e:
    print('no credentials rejected')
]])
        for _, pv in ipairs({ 4, 5 }) do
            assert.truthy(out:find("rejected " .. pv .. " True", 1, true), out)
            assert.truthy(out:find("accepted " .. pv .. " " .. node.version, 1, true), out)
        end
        assert.truthy(out:find("no credentials rejected", 1, true), out)
        assert.falsy(out:find("UNEXPECTED", 1, true), out)
    end)

    it("enforces permissions (CassandraAuthorizer): unauthorized errors", function()
        local out = node:python([[
from cassandra import Unauthorized
c, s = connect()
s.execute("CREATE KEYSPACE IF NOT EXISTS secret WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE IF NOT EXISTS secret.t (k int PRIMARY KEY)")
s.execute("CREATE ROLE IF NOT EXISTS reader WITH PASSWORD = 'pw' AND LOGIN = true")
c.shutdown()
c, s = connect(user='reader', password='pw')
try:
    s.execute("SELECT * FROM secret.t")
    print('UNEXPECTED: read allowed')
except Unauthorized as e:
    print('unauthorized', 'has no SELECT permission' in str(e))
c.shutdown()
]])
        assert.truthy(out:find("unauthorized True", 1, true), out)
    end)
end)
