-- Two cassandra sinks behind a router, in front of a PasswordAuthenticator
-- node: the driver's handshake goes down the default route only, so the
-- other route's sink replays it (STARTUP, AUTH_RESPONSE) on its own
-- connection, and follows the session's USE.
local h = require("harness")
local cassandra = require("cassandra")

describe("a router with two cassandra sinks", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = true }
        cassandra.python([[
c, s = connect(user='cassandra', password='cassandra')
s.execute("CREATE KEYSPACE rs WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE rs.hot (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE rs.cold (k int PRIMARY KEY, v text)")
]], { port = node.port })
        local _
        _, P = cassandra.start_proxy{ no_sink = true, chain = string.format([[
            { "router",
              routes = { { match = { table = "hot" },
                           chain = { { "query_counter", name = "hot" },
                                     { "cassandra", remote = "127.0.0.1:%d" } } } },
              default = { { "cassandra", remote = "127.0.0.1:%d" } } }]],
            node.port, node.port) }
    end)
    teardown(h.cleanup)

    for _, opts in ipairs({ "protocol_version=4",
                            "protocol_version=4, compression='snappy'",
                            "protocol_version=5, compression='lz4'" }) do
        it("serves both routes with one login and one USE (" .. opts .. ")",
           function()
            local out = cassandra.python(string.format([[
c, s = connect(%s, user='cassandra', password='cassandra')
s.execute("USE rs")
s.execute("INSERT INTO hot (k, v) VALUES (1, 'h')")
s.execute("INSERT INTO cold (k, v) VALUES (1, 'c')")
hot = s.prepare("SELECT v FROM hot WHERE k = ?")
print('hot', s.execute(hot, (1,)).one().v)
print('cold', s.execute("SELECT v FROM cold WHERE k = 1").one().v)
]], opts), { port = P, timeout = 120 })
            assert.matches("hot h", out, 1, true)
            assert.matches("cold c", out, 1, true)
        end)
    end
end)
