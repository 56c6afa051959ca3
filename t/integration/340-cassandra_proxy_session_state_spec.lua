-- What shotover learns from a CQL session it carries: the keyspace chosen
-- by USE, and prepared statements remembered by id, so that an EXECUTE is
-- known by its statement.  Observed through debug_printer's log.
local h = require("harness")
local cassandra = require("cassandra")

describe("a cql session's state as shotover sees it", function()
    local node, proxy, P

    setup(function()
        node = cassandra.start{ auth = false }
        proxy, P = cassandra.start_proxy{ remote = node.port,
                                          chain = '{ "debug_printer" },' }
    end)
    teardown(h.cleanup)

    it("tracks USE and knows an EXECUTE by its prepared statement", function()
        cassandra.python([[
c, s = connect(protocol_version=4)
s.execute("CREATE KEYSPACE IF NOT EXISTS trk WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("USE trk")
s.execute("CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY, v text)")
ins = s.prepare("INSERT INTO kv (k, v) VALUES (?, ?)")
s.execute(ins, (1, 'one'))
print(s.execute("SELECT v FROM kv WHERE k = 1").one().v)
]], { port = P })
        proxy:wait_log("session keyspace is now trk", 10)
        proxy:wait_log("PREPARE stream", 10)
        -- the EXECUTE is shown with the statement it runs
        proxy:wait_log("(prepared): INSERT INTO kv (k, v) VALUES (?, ?)", 10)
        assert.matches("QUERY stream %d+, %d+ bytes: USE trk", proxy:log())
    end)
end)

describe("a transform that rewrites cql requests", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = [[
    function(batch, chain)
        for i = 1, #batch do
            local m = batch[i]
            if m:opcode_name() == "QUERY"
               and m:query() == "SELECT release_version FROM system.local"
            then
                m:set_query("SELECT cluster_name FROM system.local")
            end
        end
        return chain:next(batch)
    end,]] }
    end)
    teardown(h.cleanup)

    for _, sess in ipairs({ { 4, "False" }, { 4, "'lz4'" }, { 4, "'snappy'" },
                            { 5, "'lz4'" } }) do
        it("rewrites a query the driver sends over v" .. sess[1] .. " "
           .. sess[2], function()
            local out = cassandra.python([[
c, s = connect(protocol_version=int(ARGS[0]), compression=eval(ARGS[1]))
print('got', s.execute("SELECT release_version FROM system.local").one()[0])
]], { port = P, args = sess })
            assert.matches("got shotover%-test", out)
        end)
    end
end)
