-- shotover route-test and shotover repl on a Cassandra config: CQL
-- statements with bound values routed by keyspace and filtered by class,
-- dry; then the repl live against a real Cassandra node.
local h = require("harness")
local cassandra = require("cassandra")

local function config(remote, listen)
    return string.format([[
return { workers = 1, sources = { { name = "cql", protocol = "cassandra",
  listen = "127.0.0.1:%d", chain = {
    { "query_type_filter", deny = { "schema_change" } },
    { "router",
      routes = { { match = { keyspace = "hot" },
                   chain = { { "cassandra", name = "hot_node",
                               remote = "127.0.0.1:%d" } } } },
      default = { { "cassandra", name = "main_node",
                    remote = "127.0.0.1:%d" } } } } } } }
]], listen, remote, remote)
end

describe("shotover route-test with CQL cases", function()
    teardown(h.cleanup)

    it("routes statements with values and filters schema changes, dry",
       function()
        local conf = h.write_file(h.tmpfile("conf") .. ".lua",
                                  config(h.free_port(), h.free_port()))
        local cases = h.write_file(h.tmpfile("cases") .. ".lua", [[
return { cases = {
  { cql = "SELECT * FROM hot.t WHERE k = ?", values = { 1 },
    route = "route1", sink = "hot_node", reply = "RESULT Void" },
  { "INSERT INTO ks.t (k, v) VALUES (?, ?)", values = { 2, "two" },
    sink = "main_node" },
  { "DROP TABLE hot.t", filtered = true, error = "schema_change" },
  { "SELECT * FROM ks.t", sink = "hot_node" },
} }
]])
        local r = h.shotover_cmd({ "route-test", "-c", conf, cases })
        assert.equal(1, r.code, r.stdout .. r.stderr)
        assert.matches("ok 1 - SELECT * FROM hot.t WHERE k = ?\n"
                       .. "ok 2 - INSERT INTO ks.t (k, v) VALUES (?, ?)\n"
                       .. "ok 3 - DROP TABLE hot.t\n"
                       .. "not ok 4 - SELECT * FROM ks.t\n"
                       .. '# sink: expected "hot_node", got "main_node"\n',
                       r.stdout, 1, true)
        assert.matches('QUERY "SELECT * FROM ks.t"', r.stdout, 1, true)
    end)
end)

describe("shotover repl on cassandra, live", function()
    local node, conf

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
for ks in ('hot', 'cold'):
    s.execute("CREATE KEYSPACE %s WITH replication = "
              "{'class': 'SimpleStrategy', 'replication_factor': 1}" % ks)
    s.execute("CREATE TABLE %s.t (k int PRIMARY KEY, v text)" % ks)
]], { port = node.port })
        -- one Cassandra sink: the handshake goes to the router's default
        -- chain only, so a second sink in a route would never see it
        conf = h.write_file(h.tmpfile("conf") .. ".lua", string.format([[
return { workers = 1, sources = { { name = "cql", protocol = "cassandra",
  listen = "127.0.0.1:%d", chain = {
    { "query_type_filter", deny = { "schema_change" } },
    { "router",
      routes = { { match = { table = "secrets" },
                   chain = { { "debug_returner", name = "refuse",
                               error = "not here",
                               error_code = "UNAUTHORIZED" } } } },
      default = { { "cassandra", name = "main_node",
                    remote = "127.0.0.1:%d" } } } } } } }
]], h.free_port(), node.port))
    end)
    teardown(h.cleanup)

    it("runs statements with values on the node and shows path and reply",
       function()
        local r = h.shotover_cmd({ "repl", "-c", conf }, { timeout = 60,
            stdin = "INSERT INTO hot.t (k, v) VALUES (?, ?) -- values: 1, 'x'\n"
                    .. "SELECT v FROM hot.t WHERE k = ? -- values: 1\n"
                    .. "INSERT INTO hot.t (k, v) VALUES (?, ?) "
                    .. "-- values: { 2, 'y' }\n"
                    .. "SELECT k, v FROM hot.t WHERE k = ? -- values: { 2 }\n"
                    .. "DROP TABLE hot.t\n"
                    .. "SELECT * FROM hot.secrets\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("cql/default[1] main_node (cassandra): answered "
                       .. "RESULT Void", r.stdout, 1, true)
        assert.matches("cql/route1[1] refuse (debug_returner): answered "
                       .. "ERROR 0x2100 not here", r.stdout, 1, true)
        assert.matches("answered RESULT Rows (1 row)\n=> RESULT Rows (1 row)",
                       r.stdout, 1, true)
        -- rows as a table; values given as a Lua list
        assert.matches("=> RESULT Rows (1 row)\n   v\n  --\n   x\n"
                       .. "  (1 row)\n", r.stdout, 1, true)
        assert.matches("=> RESULT Rows (1 row)\n   k | v\n  ---+--\n"
                       .. "   2 | y\n  (1 row)\n", r.stdout, 1, true)
        assert.matches("query_type_filter: answered ERROR 0x2100",
                       r.stdout, 1, true)
        local out = cassandra.python([[
c, s = connect()
print('v', s.execute("SELECT v FROM hot.t WHERE k = 1").one().v)
print('tables', sorted(r.table_name for r in s.execute(
    "SELECT table_name FROM system_schema.tables WHERE keyspace_name = 'hot'")))
]], { port = node.port })
        assert.matches("v x", out, 1, true)
        assert.matches("tables ['t']", out, 1, true)
    end)
end)
