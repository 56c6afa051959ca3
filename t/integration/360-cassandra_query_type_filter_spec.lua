-- query_type_filter in front of a real Cassandra: statements are classified
-- by the parser, prepared ones by their PREPARE, LWTs as read_write.
local h = require("harness")
local cassandra = require("cassandra")

describe("query_type_filter in front of cassandra", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE qf WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE qf.t (k int PRIMARY KEY, v text)")
s.execute("INSERT INTO qf.t (k, v) VALUES (1, 'one')")
]], { port = node.port })
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = [[
            { "query_type_filter", deny = { "schema_change", "read_write" } },]] }
    end)
    teardown(h.cleanup)

    it("refuses schema changes and LWTs, and serves the rest", function()
        local out = cassandra.python([[
from cassandra import Unauthorized
c, s = connect(protocol_version=4)
def attempt(label, q):
    try:
        s.execute(q)
        print(label, 'ok')
    except Exception as e:
        print(label, 'refused', type(e).__name__, str(e)[:200])
attempt('ddl', "CREATE TABLE qf.u (k int PRIMARY KEY)")
attempt('lwt', "INSERT INTO qf.t (k, v) VALUES (2, 'two') IF NOT EXISTS")
attempt('write', "INSERT INTO qf.t (k, v) VALUES (3, 'three')")
print('read', s.execute("SELECT v FROM qf.t WHERE k = 1").one().v)
ins = s.prepare("INSERT INTO qf.t (k, v) VALUES (?, ?)")
s.execute(ins, (4, 'four'))
print('prepared write ok')
try:
    s.prepare("UPDATE qf.t SET v = ? WHERE k = ? IF v = 'x'")
    print('prepared lwt ok')
except Exception as e:
    print('prepared lwt refused', type(e).__name__)
print('rows', sorted(r.k for r in s.execute("SELECT k FROM qf.t")))
]], { port = P, timeout = 120 })
        assert.matches("ddl refused Unauthorized", out, 1, true)
        assert.matches("schema_change queries are not allowed", out, 1, true)
        assert.matches("lwt refused Unauthorized", out, 1, true)
        assert.matches("write ok", out, 1, true)
        assert.matches("read one", out, 1, true)
        assert.matches("prepared write ok", out, 1, true)
        assert.matches("prepared lwt refused Unauthorized", out, 1, true)
        assert.matches("rows [1, 3, 4]", out, 1, true)
    end)
end)

describe("router in front of cassandra", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = cassandra.start_proxy{ no_sink = true, chain = string.format([[
            { "router",
              routes = { { match = { table = "secrets" },
                           chain = { { "debug_returner", error = "not here",
                                       error_code = "UNAUTHORIZED" } } } },
              default = { { "cassandra", remote = "127.0.0.1:%d" } } }]],
            node.port) }
    end)
    teardown(h.cleanup)

    it("routes statements by table, the rest to the node", function()
        local out = cassandra.python([[
c, s = connect(protocol_version=4)
print('version', s.execute("SELECT release_version FROM system.local").one()[0])
try:
    s.execute("SELECT * FROM system.secrets")
    print('secrets served')
except Exception as e:
    print('secrets', str(e)[:200])
]], { port = P })
        assert.matches("version 5%.0", out)
        assert.matches("secrets .*not here", out)
        assert.not_matches("secrets served", out, 1, true)
    end)
end)
