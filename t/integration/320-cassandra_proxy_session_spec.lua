-- The parts of a Cassandra session that must pass through shotover intact:
-- PasswordAuthenticator logins, events pushed by the node, thousands of
-- concurrent streams, and the node's own errors.
local h = require("harness")
local cassandra = require("cassandra")

local function start_proxy(remote_port)
    return cassandra.start_proxy{ remote = remote_port, workers = 2 }
end

describe("shotover in front of a PasswordAuthenticator node", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = true }
        local _
        _, P = start_proxy(node.port)
    end)
    teardown(h.cleanup)

    it("lets a driver log in through it", function()
        local out = cassandra.python([[
c, s = connect(user='cassandra', password='cassandra')
print('user', s.execute("SELECT release_version FROM system.local").one()[0])
]], { port = P })
        assert.matches("user 5%.0", out)
    end)

    it("refuses a wrong password with the node's own error", function()
        local out = cassandra.python([[
try:
    c, s = connect(user='cassandra', password='wrong')
    print('logged in')
except Exception as e:
    print('err', str(e)[:400])
]], { port = P })
        assert.matches("err ", out, 1, true)
        assert.matches("Bad credentials", out, 1, true)
        assert.not_matches("logged in", out, 1, true)
    end)
end)

describe("a cassandra session through shotover", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = start_proxy(node.port)
    end)
    teardown(h.cleanup)

    it("receives the schema events the node pushes", function()
        -- session A watches (its control connection REGISTERs for
        -- SCHEMA_CHANGE); session B creates a table; A must learn of it
        -- from the event, with its own schema refreshes off
        local out = cassandra.python([[
import time
from cassandra.cluster import Cluster
a, sa = connect(schema_event_refresh_window=0)
b, sb = connect()
sb.execute("CREATE KEYSPACE IF NOT EXISTS ev WITH replication = "
           "{'class': 'SimpleStrategy', 'replication_factor': 1}")
sb.execute("CREATE TABLE IF NOT EXISTS ev.fresh (k int PRIMARY KEY)")
deadline = time.time() + 30
seen = False
while time.time() < deadline and not seen:
    ks = a.metadata.keyspaces.get('ev')
    seen = ks is not None and 'fresh' in ks.tables
    time.sleep(0.1)
print('seen', seen)
]], { port = P, timeout = 90 })
        assert.matches("seen True", out, 1, true)
    end)

    it("carries thousands of concurrent requests on one connection", function()
        local out = cassandra.python([[
from cassandra.concurrent import execute_concurrent_with_args
c, s = connect()
s.execute("CREATE KEYSPACE IF NOT EXISTS cc WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE IF NOT EXISTS cc.t (k int PRIMARY KEY, v text)")
ins = s.prepare("INSERT INTO cc.t (k, v) VALUES (?, ?)")
res = execute_concurrent_with_args(s, ins, [(i, 'v%d' % i) for i in range(3000)],
                                   concurrency=1000, raise_on_first_error=True)
print('written', sum(1 for ok, _ in res if ok))
sel = s.prepare("SELECT v FROM cc.t WHERE k = ?")
futures = [s.execute_async(sel, (i,)) for i in range(3000)]
bad = [i for i, f in enumerate(futures) if f.result().one().v != 'v%d' % i]
print('read back, mismatches', len(bad))
]], { port = P, timeout = 180 })
        assert.matches("written 3000", out, 1, true)
        assert.matches("mismatches 0", out, 1, true)
    end)

    it("passes the node's errors through intact", function()
        local out = cassandra.python([[
from cassandra import InvalidRequest, Unavailable, ConsistencyLevel
from cassandra.protocol import SyntaxException
from cassandra.query import SimpleStatement
c, s = connect()
for label, q, cl in [
        ('syntax', "SELEC nonsense", None),
        ('invalid', "SELECT * FROM system.no_such_table", None),
        ('unavailable', "SELECT * FROM rf3.t", ConsistencyLevel.QUORUM)]:
    if label == 'unavailable':
        s.execute("CREATE KEYSPACE IF NOT EXISTS rf3 WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 3}")
        s.execute("CREATE TABLE IF NOT EXISTS rf3.t (k int PRIMARY KEY)")
    try:
        s.execute(SimpleStatement(q, consistency_level=cl))
        print(label, 'no error')
    except Exception as e:
        print(label, type(e).__name__, str(e)[:300])
]], { port = P, timeout = 90 })
        assert.matches("syntax SyntaxException", out, 1, true)
        assert.matches("invalid InvalidRequest", out, 1, true)
        -- the driver's retry policy wraps it, with the node's code inside
        assert.matches("unavailable %a+ .*code=1000 %[Unavailable exception%]",
                       out)
    end)
end)
