-- tee in front of a real Cassandra, the copy going to the same node: the
-- drivers' handshakes, prepared statements and compression work through
-- both sides; a reply that cannot be the same twice (now()) is a mismatch;
-- an asynchronous copy reaches its chain after the client has its reply.
local h = require("harness")
local cassandra = require("cassandra")

describe("tee in front of cassandra", function()
    local node

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE tee WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE tee.t (k int PRIMARY KEY, v text)")
]], { port = node.port })
    end)
    teardown(h.cleanup)

    it("waits for both sides and fails what differs (fail_on_mismatch)",
       function()
        local _, P = cassandra.start_proxy{ remote = node.port, chain = string.format([[
            { "tee", behavior = "fail_on_mismatch",
              chain = { { "cassandra", remote = "127.0.0.1:%d" } } },]],
            node.port) }
        for _, opts in ipairs({ "protocol_version=4",
                                "protocol_version=4, compression='lz4'",
                                "protocol_version=5, compression='lz4'" }) do
            local out = cassandra.python(string.format([[
c, s = connect(%s)
print('version', s.execute("SELECT release_version FROM system.local").one()[0])
ins = s.prepare("INSERT INTO tee.t (k, v) VALUES (?, ?)")
for k in range(20):
    s.execute(ins, (k, 'v%%d' %% k))
print('rows', len(list(s.execute("SELECT k FROM tee.t"))))
try:
    s.execute("SELECT now() FROM system.local")
    print('now ok')
except Exception as e:
    print('now refused', type(e).__name__, str(e)[:300])
]], opts), { port = P, timeout = 120 })
            assert.matches("version 5.0", out, 1, true)
            assert.matches("rows 20", out, 1, true)
            -- the driver tries the next host after a SERVER_ERROR: none
            assert.matches("now refused", out, 1, true)
            assert.matches("[Server error]", out, 1, true)
            assert.matches('tee "tee": the replies differ', out, 1, true)
        end
    end)

    it("copies asynchronously, after the client has its replies", function()
        local M = h.free_port()
        local _, P = cassandra.start_proxy{ remote = node.port,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', M),
            chain = string.format([[
            { "tee", wait = false, behavior = "log_mismatch",
              chain = { { "query_counter", name = "copies" },
                        { "cassandra", remote = "127.0.0.1:%d" } } },]],
            node.port) }
        local out = cassandra.python([[
c, s = connect(protocol_version=4)
sel = s.prepare("SELECT v FROM tee.t WHERE k = ?")
for k in range(50):
    assert s.execute(sel, (k % 20,)).one().v == 'v%d' % (k % 20)
print('done')
]], { port = P, timeout = 120 })
        assert.matches("done", out, 1, true)
        h.wait_until(function()
            return (h.metric(M, 'shotover_query_count_total{name="copies",query="select"}')
                    or 0) >= 50
        end, 20, "the copies of 50 SELECTs to reach the tee chain")
        assert.equal(0, h.metric(M, 'shotover_tee_mismatches_total{name="tee"}'))
        assert.equal(0, h.metric(M, 'shotover_tee_dropped_total{name="tee"}'))
    end)
end)
