-- Lanes: while a CQL connection's batch waits for a backend, the requests
-- it reads next run at once (on a lane) instead of waiting for that batch.
-- The slow backend here is a silent node: a socket that accepts and reads
-- but never answers, so the slow request is answered by the sink's request
-- timeout, and anything answered before that ran beside it.
local h = require("harness")
local cassandra = require("cassandra")

local op = cassandra.op
local TIMEOUT_MS = 3000

-- the slow request's answer: the router's second sink replays the
-- client's STARTUP to the silent node, and that times out
local function assert_timed_out(r)
    assert.equal(cassandra.op.ERROR, r.opcode)
    assert.matches("timed out after " .. TIMEOUT_MS .. "ms", r.message, 1, true)
end

local query_body = cassandra.query_body

local function wait_received(peer, what)
    h.wait_until(function()
        peer:fill(0.05)
        return #peer:buffer() > 0
    end, 10, what)
end

describe("cassandra lanes", function()
    local node, silent

    -- a proxy: requests on table `slow` go to the silent node, the rest to
    -- the real one; `seen` counts the session's requests (chain.conn) and
    -- `SELECT seen FROM shotover.session` answers with that count
    local function proxy(source_opts)
        local admin = h.free_port()
        local _, port = cassandra.start_proxy{ no_sink = true,
            source = source_opts,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', admin),
            prelude = [[
local reply = require "shotover.cql.reply"
local function session_counter(batch, chain)
    local conn = chain.conn
    conn.seen = (conn.seen or 0) + batch.n
    local answered
    for i = 1, batch.n do
        local m = batch[i]
        if m.rtype == 0x07 and m:query() == "SELECT seen FROM shotover.session" then
            answered = answered or {}
            answered[i] = reply.rows(m, { keyspace = "shotover", table = "session",
                columns = { { "seen", "int" } }, rows = { { conn.seen } } })
        end
    end
    if not answered then return chain:next(batch) end
    return chain:next_except(batch, answered)
end
]],
            chain = string.format([[
            session_counter,
            { "router",
              routes = { { match = { table = "slow" },
                           chain = { { "cassandra", remote = "127.0.0.1:%d",
                                       request_timeout_ms = %d } } } },
              default = { { "cassandra", remote = "127.0.0.1:%d" } } }]],
                silent.port, TIMEOUT_MS, node.port) }
        return port, admin
    end

    local LANE_BATCHES = 'shotover_lane_batches_total{source="cql"}'

    setup(function()
        node = cassandra.start{}
        local c = cassandra.connect(node.port)
        c:query("CREATE KEYSPACE ln WITH replication = "
                .. "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        c:query("CREATE TABLE ln.t (k int PRIMARY KEY, v text)")
        c:close()
        silent = h.blackhole()
    end)
    teardown(h.cleanup)

    it("answers a later request on the connection while an earlier batch waits",
       function()
        local P, admin = proxy()
        local c = cassandra.connect(P)
        -- the session's USE goes to the real node, on the parent
        assert.equal("set_keyspace", c:query("USE ln").result)
        local slow = c:send(op.QUERY, query_body("SELECT v FROM ln.slow WHERE k = 1"))
        local peer = silent:accept(10)
        wait_received(peer, "the slow request to reach the silent node")
        -- the connection's batch now waits; these run on lanes
        local ins = c:send(op.QUERY, query_body("INSERT INTO t (k, v) VALUES (1, 'one')"))
        local f = c:read_frame(TIMEOUT_MS * 3 / 1000)
        local r = cassandra.decode(f)
        -- answered first, though sent after the slow one: and unqualified,
        -- so it ran on the connection's own backend connection (its USE)
        assert.equal(ins, f.stream)
        assert.equal("void", r.result, r.message)
        local sel = c:send(op.QUERY, query_body("SELECT v FROM t WHERE k = 1"))
        f = c:read_frame(TIMEOUT_MS * 3 / 1000)
        r = cassandra.decode(f)
        assert.equal(sel, f.stream)
        assert.equal("one", r.rows[1][1])
        -- one session table for the connection and its lanes: STARTUP,
        -- USE, the slow SELECT, INSERT, SELECT and this one
        local cnt = c:send(op.QUERY, query_body("SELECT seen FROM shotover.session"))
        f = c:read_frame(TIMEOUT_MS * 3 / 1000)
        r = cassandra.decode(f)
        assert.equal(cnt, f.stream)
        assert.equal(6, cassandra.int_of(r.rows[1][1]))
        -- those three ran on lanes, one after the other
        assert.equal(3, h.metric(admin, LANE_BATCHES))
        -- the slow one is answered by the timeout, on its stream, and the
        -- connection goes on afterwards
        f = c:read_frame(TIMEOUT_MS * 3 / 1000)
        r = cassandra.decode(f)
        assert.equal(slow, f.stream)
        assert_timed_out(r)
        peer:close()
    end)

    it("finishes every lane's replies after the client half-closes", function()
        local P = proxy()
        local c = cassandra.connect(P, { keyspace = "ln" })
        local slow = c:send(op.QUERY, query_body("SELECT v FROM ln.slow WHERE k = 2"))
        local peer = silent:accept(10)
        wait_received(peer, "the slow request to reach the silent node")
        local fast = c:send(op.QUERY, query_body("SELECT v FROM t WHERE k = 1"))
        c.conn:shutdown_write()
        local got = {}
        for _ = 1, 2 do
            local f = c:read_frame(TIMEOUT_MS * 3 / 1000)
            got[#got + 1] = f.stream
        end
        assert.same({ fast, slow }, got)
        assert.is_true(c.conn:wait_closed(10))
        peer:close()
    end)

    for _, opts in ipairs({ "protocol_version=4, compression='snappy'",
                            "protocol_version=5, compression='lz4'" }) do
        it("carries thousands of concurrent driver requests on lanes (" .. opts .. ")",
           function()
            local P, admin = proxy()
            local out = cassandra.python(string.format([[
from cassandra.concurrent import execute_concurrent_with_args
c, s = connect(%s, keyspace='ln')
ins = s.prepare("INSERT INTO t (k, v) VALUES (?, ?)")
res = execute_concurrent_with_args(s, ins, [(i, 'v%%d' %% i) for i in range(2000)],
                                   concurrency=500, raise_on_first_error=True)
print('written', sum(1 for ok, _ in res if ok))
sel = s.prepare("SELECT v FROM t WHERE k = ?")
futures = [s.execute_async(sel, (i,)) for i in range(2000)]
bad = [i for i, f in enumerate(futures) if f.result().one().v != 'v%%d' %% i]
print('read back, mismatches', len(bad))
]], opts), { port = P, timeout = 180 })
            assert.matches("written 2000", out, 1, true)
            assert.matches("mismatches 0", out, 1, true)
            -- with 500 in flight, batches ran beside each other
            assert.is_true(h.metric(admin, LANE_BATCHES) > 0)
        end)
    end

    it("runs one batch at a time with lanes = 1", function()
        local P, admin = proxy("lanes = 1,")
        local c = cassandra.connect(P)
        local slow = c:send(op.QUERY, query_body("SELECT v FROM ln.slow WHERE k = 3"))
        local peer = silent:accept(10)
        wait_received(peer, "the slow request to reach the silent node")
        local fast = c:send(op.QUERY, query_body("SELECT release_version FROM system.local"))
        local first = c:read_frame(TIMEOUT_MS * 3 / 1000)
        local second = c:read_frame(TIMEOUT_MS * 3 / 1000)
        assert.same({ slow, fast }, { first.stream, second.stream })
        assert_timed_out(cassandra.decode(first))
        assert.equal("rows", cassandra.decode(second).result)
        assert.is_nil(h.metric(admin, LANE_BATCHES))    -- no lanes, no series
        peer:close()
    end)
end)
