-- shotover in front of a real Cassandra 5.0 node, driven by the DataStax
-- Python driver: the driver connects to the proxy as if it were the node,
-- over protocol v3, v4 (plain, LZ4, Snappy) and v5 (plain, LZ4 segments).
local h = require("harness")
local cassandra = require("cassandra")

local function start_proxy(node, extra_chain)
    return cassandra.start_proxy{ remote = node.port, chain = extra_chain }
end

-- the driver session script: schema, prepared writes, paging, a value
-- bigger than a v5 segment, and what the connection negotiated
local ROUNDTRIP = [[
pv = None if ARGS[0] == 'auto' else int(ARGS[0])
comp, tag = eval(ARGS[1]), ARGS[2]
kw = {} if pv is None else {'protocol_version': pv}
from cassandra.cluster import Cluster
c, s = connect(compression=comp, **kw) if pv is not None else (None, None)
if c is None:
    from cassandra.policies import WhiteListRoundRobinPolicy
    c = Cluster(['127.0.0.1'], port=PORT, compression=comp,
                load_balancing_policy=WhiteListRoundRobinPolicy(['127.0.0.1']))
    s = c.connect()
print('negotiated', c.protocol_version)
s.execute("CREATE KEYSPACE IF NOT EXISTS px WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
t = 'px.kv_' + tag
s.execute("CREATE TABLE IF NOT EXISTS %s (k text, n int, v blob, l list<int>, PRIMARY KEY (k, n))" % t)
ins = s.prepare("INSERT INTO %s (k, n, v, l) VALUES (?, ?, ?, ?)" % t)
big = bytes(range(256)) * 64
for i in range(40):
    s.execute(ins, ('key', i, big if i == 7 else b'x' * i, [i, i + 1]))
from cassandra.query import SimpleStatement
rows = list(s.execute(SimpleStatement("SELECT n, v, l FROM %s WHERE k = 'key'" % t, fetch_size=7)))
assert [r.n for r in rows] == list(range(40)), [r.n for r in rows]
assert rows[7].v == big and rows[3].l == [3, 4]
huge = bytes(range(251)) * 1200
s.execute(ins, ('huge', 0, huge, None))
assert s.execute("SELECT v FROM %s WHERE k = 'huge'" % t).one().v == huge
print('rows', len(rows))
c.shutdown()
]]

describe("shotover in front of cassandra", function()
    local node, proxy, P -- luacheck: ignore proxy (holds the running proxy)

    setup(function()
        node = cassandra.start{ auth = false }
        proxy, P = start_proxy(node)
    end)
    teardown(h.cleanup)

    local sessions = {
        { v = "3", comp = "False", tag = "v3" },
        { v = "4", comp = "False", tag = "v4" },
        { v = "4", comp = "'lz4'", tag = "v4lz4" },
        { v = "4", comp = "'snappy'", tag = "v4snappy" },
        { v = "5", comp = "False", tag = "v5" },
        { v = "5", comp = "'lz4'", tag = "v5lz4" },
    }
    for _, sess in ipairs(sessions) do
        it("serves the driver over protocol v" .. sess.v .. " with compression "
           .. sess.comp, function()
            local out = cassandra.python(ROUNDTRIP, { port = P,
                args = { sess.v, sess.comp, sess.tag }, timeout = 120 })
            assert.matches("negotiated " .. sess.v, out, 1, true)
            assert.matches("rows 40", out, 1, true)
        end)
    end

    it("lets a driver that asks for a newer version settle on one we speak",
       function()
        local out = cassandra.python(ROUNDTRIP, { port = P,
            args = { "auto", "False", "auto" }, timeout = 120 })
        assert.matches("negotiated 5", out, 1, true)
        assert.matches("rows 40", out, 1, true)
    end)

    it("answers an unsupported version with a PROTOCOL_ERROR on its stream",
       function()
        -- OPTIONS in protocol v6, stream 7
        local c = h.connect(P)
        assert.is_true(c:send("\6\0\0\7\5\0\0\0\0"))
        local data = c:drain(0.5, 5)
        assert.equal("\133\0\0\7\0", data:sub(1, 5))   -- v5 response, ERROR
        assert.equal("\0\0\0\10", data:sub(10, 13))     -- PROTOCOL_ERROR
        assert.matches("Invalid or unsupported protocol version (6)", data,
                       1, true)
        assert.is_true(c:wait_closed(5))
    end)

    it("keeps serving other clients while one sends garbage", function()
        local c = h.connect(P)
        c:send("\4\0\0\1\7\255\255\255\255")           -- a 4 GiB QUERY
        local data = c:drain(0.5, 5)
        assert.matches("Request is too big", data, 1, true)
        local out = cassandra.python([[
c, s = connect(protocol_version=4)
print(s.execute("SELECT release_version FROM system.local").one().release_version)
]], { port = P })
        assert.matches("^5%.0", out)
    end)
end)

describe("shotover in front of cassandra with a raising transform", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local raising = [[function(batch, chain)
            for i = 1, #batch do
                if batch[i]:raw():find("forbidden_table", 1, true) then
                    error("no queries today")
                end
            end
            return chain:next(batch)
        end,]]
        local _
        _, P = start_proxy(node, raising)
    end)
    teardown(h.cleanup)

    it("answers each request of the batch with a CQL error on its stream",
       function()
        local out = cassandra.python([[
c, s = connect(protocol_version=4)
try:
    s.execute("SELECT * FROM system.forbidden_table")
    print('no error')
except Exception as e:
    print('error', type(e).__name__, e)
# the connection is still usable
print(s.execute("SELECT release_version FROM system.local").one().release_version)
]], { port = P })
        assert.matches("[Server error]", out, 1, true)
        assert.matches('chain "cql" element 1 (inline function) failed: ',
                       out, 1, true)
        assert.matches("no queries today", out, 1, true)
        assert.not_matches("no error", out, 1, true)
        assert.matches("\n5%.0", out)
    end)
end)
