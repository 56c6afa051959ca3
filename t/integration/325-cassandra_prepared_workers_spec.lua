-- Prepared statements across workers: a driver prepares on one connection
-- and executes on any, and its connections land on any worker.  Every
-- worker must know an EXECUTE's statement, whichever worker carried the
-- PREPARE (shared dict), or routes and filters would treat it as unknown.
local h = require("harness")
local cassandra = require("cassandra")

describe("prepared statements across workers", function()
    local node, P, admin

    setup(function()
        node = cassandra.start{}
        local c = cassandra.connect(node.port)
        c:query("CREATE KEYSPACE pw WITH replication = "
                .. "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        c:query("CREATE TABLE pw.t (k int PRIMARY KEY, v text)")
        c:query("INSERT INTO pw.t (k, v) VALUES (1, 'one')")
        c:close()
        admin = h.free_port()
        local _
        _, P = cassandra.start_proxy{ remote = node.port, workers = 2,
            chain = '{ "query_counter", name = "pw" },',
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', admin) }
    end)
    teardown(h.cleanup)

    it("knows an EXECUTE on every worker, whichever one saw the PREPARE", function()
        local first = cassandra.connect(P)
        local id = first:prepare("SELECT v FROM pw.t WHERE k = ?")
        -- fresh connections, spread over both workers by the kernel
        -- (SO_REUSEPORT): each executes the statement once
        local N = 24
        for _ = 1, N do
            local c = cassandra.connect(P)
            local r = c:execute(id, { "\0\0\0\1" })
            assert.equal("rows", r.result, r.message)
            assert.equal("one", r.rows[1][1])
            c:close()
        end
        -- query_counter knew each one's statement: a `select`, never
        -- `unparsed` (an EXECUTE whose PREPARE its worker cannot know)
        assert.equal(N, h.metric(admin, 'shotover_query_count_total{name="pw",query="select"}'))
        assert.is_nil(h.metric(admin, 'shotover_query_count_total{name="pw",query="unparsed"}'))
        assert.equal(1, h.metric(admin, 'shotover_query_count_total{name="pw",query="prepare select"}'))
    end)
end)
