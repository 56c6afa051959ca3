-- parallel_map in front of a real Cassandra: three copies of the sink, so
-- three backend connections per client; the handshake and USE reach every
-- copy, replies come back ordered or unordered (stream ids keep them apart).
local h = require("harness")
local cassandra = require("cassandra")

describe("parallel_map in front of cassandra", function()
    local node

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE pm WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE pm.t (k int PRIMARY KEY, v text)")
]], { port = node.port })
    end)
    teardown(h.cleanup)

    for _, ordered in ipairs({ "true", "false" }) do
        it("serves drivers through three copies, ordered = " .. ordered,
           function()
            local _, P = cassandra.start_proxy{ no_sink = true,
                chain = string.format([[
                { "parallel_map", parallelism = 3, ordered = %s,
                  chain = { { "cassandra", remote = "127.0.0.1:%d" } } }]],
                ordered, node.port) }
            for _, opts in ipairs({ "protocol_version=4",
                                    "protocol_version=5, compression='lz4'" }) do
                local out = cassandra.python(string.format([[
c, s = connect(%s)
s.execute("USE pm")
ins = s.prepare("INSERT INTO t (k, v) VALUES (?, ?)")
futures = [s.execute_async(ins, (k, 'v%%d' %% k)) for k in range(300)]
for f in futures:
    f.result()
sel = s.prepare("SELECT v FROM t WHERE k = ?")
futures = [(k, s.execute_async(sel, (k,))) for k in range(300)]
bad = [k for k, f in futures if f.result().one().v != 'v%%d' %% k]
print('bad', bad)
print('count', s.execute("SELECT count(*) FROM t").one()[0])
]], opts), { port = P, timeout = 180 })
                assert.matches("bad []", out, 1, true)
                assert.matches("count 300", out, 1, true)
            end
        end)
    end
end)
