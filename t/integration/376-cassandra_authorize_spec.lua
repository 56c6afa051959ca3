-- authorize in front of a real Cassandra: rules by keyspace, table,
-- statement kind and class refuse statements with UNAUTHORIZED, which the
-- driver raises as Unauthorized, and serve the rest (the driver's own
-- reads of the system keyspaces allowed by a rule); rules per user after
-- authenticate.
local h = require("harness")
local cassandra = require("cassandra")

describe("authorize in front of cassandra", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE az WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE az.t (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE az.secrets (k int PRIMARY KEY, v text)")
s.execute("INSERT INTO az.secrets (k, v) VALUES (1, 'hidden')")
]], { port = node.port })
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = [[
            { "authorize", rules = {
                { deny = true, tables = { "az.secrets" } },
                { deny = true, commands = { "truncate" } },
                { allow = true, classes = { "read" }, keyspaces = {
                    "system", "system_schema", "system_virtual_schema" } },
                { allow = true, classes = { "read", "write", "use" },
                  keyspaces = { "az" } },
            } },]] }
    end)
    teardown(h.cleanup)

    it("refuses what the rules deny with UNAUTHORIZED and serves the rest",
       function()
        local out = cassandra.python([[
c, s = connect(protocol_version=4)
def attempt(label, q, *args):
    try:
        r = s.execute(q, *args)
        print(label, 'ok', [tuple(x) for x in r] if r else '')
    except Exception as e:
        print(label, 'refused', type(e).__name__, str(e)[:300])
attempt('write', "INSERT INTO az.t (k, v) VALUES (1, 'one')")
attempt('read', "SELECT v FROM az.t WHERE k = 1")
attempt('secret', "SELECT v FROM az.secrets WHERE k = 1")
attempt('secret-write', "INSERT INTO az.secrets (k, v) VALUES (2, 'x')")
attempt('ddl', "CREATE TABLE az.u (k int PRIMARY KEY)")
attempt('truncate', "TRUNCATE az.t")
try:
    s.prepare("SELECT v FROM az.secrets WHERE k = ?")
    print('prepared secret ok')
except Exception as e:
    print('prepared secret refused', type(e).__name__)
ins = s.prepare("INSERT INTO az.t (k, v) VALUES (?, ?)")
s.execute(ins, (2, 'two'))
print('prepared write ok')
]], { port = P, timeout = 120 })
        assert.matches("write ok", out, 1, true)
        assert.matches("read ok [('one',)]", out, 1, true)
        assert.matches("secret refused Unauthorized", out, 1, true)
        assert.matches("denied by rules[1]", out, 1, true)
        assert.matches("secret-write refused Unauthorized", out, 1, true)
        assert.matches("ddl refused Unauthorized", out, 1, true)
        assert.matches("truncate refused Unauthorized", out, 1, true)
        assert.matches("'truncate' command (shotover: authorize: denied by "
                       .. "rules[2])", out, 1, true)
        assert.matches("denied by default", out, 1, true)
        assert.matches("prepared secret refused Unauthorized", out, 1, true)
        assert.matches("prepared write ok", out, 1, true)
        -- nothing refused reached the node
        local direct = cassandra.python([[
c, s = connect()
print('secrets', sorted(r.k for r in s.execute("SELECT k FROM az.secrets")))
print('t', sorted(r.k for r in s.execute("SELECT k FROM az.t")))
]], { port = node.port })
        assert.matches("secrets [1]", direct, 1, true)
        assert.matches("t [1, 2]", direct, 1, true)
    end)
end)

describe("authorize after authenticate in front of cassandra", function()
    local node, P

    setup(function()
        local password = require("shotover.password")
        node = cassandra.start{ auth = true }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE az WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE az.t (k int PRIMARY KEY, v text)")
s.execute("INSERT INTO az.t (k, v) VALUES (1, 'one')")
]], { port = node.port, user = node.user, password = node.password })
        local _
        _, P = cassandra.start_proxy{ remote = node.port,
            sink = 'username = "cassandra", password = "cassandra",',
            chain = string.format([[
            { "authenticate", users = { alice = { hash = %q },
                                        bob = { hash = %q } } },
            { "authorize", roles = { readers = { "alice", "bob" } }, rules = {
                { role = "readers", allow = true, classes = { "read" },
                  keyspaces = { "system", "system_schema",
                                "system_virtual_schema" } },
                { user = "alice", allow = true, classes = { "read" },
                  keyspaces = { "az" } },
            } },]], password.hash("alice-pw", 1000),
                password.hash("bob-pw", 1000)) }
    end)
    teardown(h.cleanup)

    it("gives each user what its rules allow", function()
        local out = cassandra.python([[
for user in ('alice', 'bob'):
    c, s = connect(user=user, password=user + '-pw')
    try:
        print(user, 'read', s.execute("SELECT v FROM az.t WHERE k = 1").one().v)
    except Exception as e:
        print(user, 'refused', type(e).__name__, str(e)[:300])
    c.shutdown()
]], { port = P, timeout = 120 })
        assert.matches("alice read one", out, 1, true)
        assert.matches("bob refused Unauthorized", out, 1, true)
        assert.matches("User bob has no permissions to run the 'select' "
                       .. "command (shotover: authorize: denied by default)",
                       out, 1, true)
    end)
end)
