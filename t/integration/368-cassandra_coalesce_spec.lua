-- coalesce in front of a real Cassandra, driven by the DataStax Python
-- driver: the handshake passes straight through, single queries are
-- answered when the timer fires, concurrent ones in batches, over v4 and
-- v5 (segments, LZ4).
local h = require("harness")
local cassandra = require("cassandra")

describe("coalesce in front of cassandra", function()
    local node, proxy, P

    setup(function()
        node = cassandra.start{ auth = false }
        proxy, P = cassandra.start_proxy{ remote = node.port, chain = [[
            { "coalesce", max_requests = 20, max_wait_ms = 20 },
            { function(batch, chain)
                require("shotover.log").info("sink saw a batch of %d",
                                             batch.n)
                return chain:next(batch)
              end, name = "recorder" },]] }
    end)
    teardown(h.cleanup)

    local SCRIPT = [[
pv, comp, tag = int(ARGS[0]), eval(ARGS[1]), ARGS[2]
c, s = connect(protocol_version=pv, compression=comp)
s.execute("CREATE KEYSPACE IF NOT EXISTS co WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
t = 'co.kv_' + tag
s.execute("CREATE TABLE IF NOT EXISTS %s (k int PRIMARY KEY, v text)" % t)
ins = s.prepare("INSERT INTO %s (k, v) VALUES (?, ?)" % t)
# one at a time: each waits for the timer
for i in range(5):
    s.execute(ins, (i, 'one-%d' % i))
# many at once: they go on together
futures = [s.execute_async(ins, (i, 'many-%d' % i)) for i in range(5, 205)]
for f in futures:
    f.result()
rows = {r.k: r.v for r in s.execute("SELECT k, v FROM %s" % t)}
assert len(rows) == 205, len(rows)
assert rows[3] == 'one-3' and rows[150] == 'many-150', (rows[3], rows[150])
print('ok', c.protocol_version, len(rows))
c.shutdown()
]]

    for _, v in ipairs({ { "4", "False", "v4" }, { "5", "'lz4'", "v5lz4" } })
    do
        it("serves a driver session over protocol v" .. v[1] .. " " .. v[3],
           function()
            local out = cassandra.python(SCRIPT, { port = P, timeout = 120,
                                                   args = v })
            assert.matches("ok " .. v[1] .. " 205", out, 1, true)
            -- concurrent requests reached the node in batches
            local biggest = 0
            for n in proxy:log():gmatch("sink saw a batch of (%d+)") do
                biggest = math.max(biggest, tonumber(n))
            end
            assert.is_true(biggest > 1)
        end)
    end
end)
