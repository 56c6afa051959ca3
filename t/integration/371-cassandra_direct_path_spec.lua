-- The C path for CQL: a source whose chain is only a cassandra sink runs
-- the handshake, PREPARE and QUERY requests through Lua, and, once the
-- client's session is open on the node, every batch of EXECUTE and BATCH
-- requests in C (sh_ffi_run_direct).  Checked: which batches take that
-- path (shotover_direct_batches_total), that the chain's metrics count
-- them as the Lua path does, that a USE and a PREPARE after the switch
-- still go through Lua and work, that the node's errors come back, and
-- that a driver running many requests at once (lanes, protocol v5) gets
-- every answer right.  A chain with another element stays in Lua.
local h = require("harness")
local cassandra = require("cassandra")

local op = cassandra.op

local function be32(n)
    return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                       math.floor(n / 256) % 256, n % 256)
end

local function proxy(node, chain)
    local admin = h.free_port()
    local _, port = cassandra.start_proxy{ remote = node.port, chain = chain,
        no_sink = chain ~= nil,
        extra = string.format('admin = { listen = "127.0.0.1:%d" },', admin) }
    h.wait_listening(admin, "the admin endpoint")
    return port, admin
end

local function metrics(admin)
    return h.chain_metrics(admin, "cql", "cassandra")
end

describe("the C path of a chain that is only a cassandra sink", function()
    local node, port, admin
    setup(function()
        node = cassandra.start{}
        local c = cassandra.connect(node.port)
        c:query("CREATE KEYSPACE dp WITH replication = "
                .. "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        c:query("CREATE TABLE dp.t (k int PRIMARY KEY, v text)")
        c:query("CREATE TABLE dp.u (k int PRIMARY KEY, v text)")
        c:query("CREATE TABLE dp.big (k int, c int, v text, PRIMARY KEY (k, c))")
        c:close()
        port, admin = proxy(node)
    end)
    teardown(h.cleanup)

    it("runs EXECUTE batches in C once the session is open, counted as in Lua", function()
        local before = metrics(admin)
        local c = cassandra.connect(port)                    -- STARTUP: Lua
        local ins = c:prepare("INSERT INTO dp.t (k, v) VALUES (?, ?)")  -- Lua
        local sel = c:prepare("SELECT v FROM dp.t WHERE k = ?")
        for k = 1, 30 do                                     -- 30 batches: C
            local r = c:execute(ins, { be32(k), "v" .. k })
            assert.equal(op.RESULT, r.opcode, r.message)
        end
        -- ten EXECUTEs in one write: one batch, answered on their streams
        local streams, body = {}, {}
        for k = 1, 10 do
            body[#body + 1] = cassandra.frame(4, 100 + k, op.EXECUTE,
                string.char(0, #sel) .. sel .. "\0\1\1\0\1" .. cassandra.bytes(be32(k)))
            streams[100 + k] = k
        end
        assert.is_true(c.conn:send(table.concat(body)))
        for _ = 1, 10 do
            local f = c:read_frame()
            local r = cassandra.decode(f)
            local k = streams[f.stream]
            assert.is_not_nil(k, "a reply on a stream we sent")
            streams[f.stream] = nil
            assert.equal("rows", r.result)
            assert.equal("v" .. k, r.rows[1][1])
        end
        local after = metrics(admin)
        assert.equal(31, after.direct - before.direct, "batches on the C path")
        -- startup, two prepares, 30 + 10 executes: all counted
        assert.equal(43, after.requests - before.requests)
        assert.equal(43, after.latency - before.latency)
        assert.equal(43, after.sink_latency - before.sink_latency)
        c:close()
    end)

    it("keeps USE, PREPARE and QUERY in Lua after the switch, and they work", function()
        local c = cassandra.connect(port)
        local ins = c:prepare("INSERT INTO dp.t (k, v) VALUES (?, ?)")
        assert.equal(op.RESULT, c:execute(ins, { be32(500), "a" }).opcode)
        local before = metrics(admin)
        assert.equal("set_keyspace", c:query("USE dp").result)
        -- an unqualified table: the session's keyspace on the node
        local sel = c:prepare("SELECT v FROM u WHERE k = ?")
        local ins_u = c:prepare("INSERT INTO u (k, v) VALUES (?, ?)")
        assert.equal(op.RESULT, c:execute(ins_u, { be32(7), "in u" }).opcode)
        assert.same({ { "in u" } }, c:execute(sel, { be32(7) }).rows)
        assert.same({ { "a" } }, c:query("SELECT v FROM t WHERE k = 500").rows)
        local after = metrics(admin)
        assert.equal(2, after.direct - before.direct)        -- the two EXECUTEs
        assert.equal(6, after.requests - before.requests)
        c:close()
    end)

    it("returns the node's errors on the C path, and the connection goes on", function()
        local c = cassandra.connect(port)
        local sel = c:prepare("SELECT v FROM dp.t WHERE k = ?")
        assert.equal(op.RESULT, c:execute(sel, { be32(1) }).opcode)
        local before = metrics(admin)
        -- an id the node never prepared: UNPREPARED (0x2500)
        local r = c:execute(string.rep("\7", 16), { be32(1) })
        assert.equal(op.ERROR, r.opcode)
        assert.equal(0x2500, r.code)
        -- a value of the wrong size for an int: INVALID (0x2200)
        r = c:execute(sel, { "xyz" })
        assert.equal(op.ERROR, r.opcode)
        assert.equal(0x2200, r.code)
        assert.same({ { "v1" } }, c:execute(sel, { be32(1) }).rows)
        assert.equal(3, metrics(admin).direct - before.direct)
        c:close()
    end)

    it("answers each request of a batch as its reply comes, not with the batch's slowest", function()
        local c = cassandra.connect(port)
        local ins = c:prepare("INSERT INTO dp.big (k, c, v) VALUES (?, ?, ?)")
        -- a partition of 20,000 rows: counting it takes the node far longer
        -- than reading one row
        local pipe = {}
        for i = 1, 20000 do
            pipe[#pipe + 1] = cassandra.frame(4, i % 30000, op.EXECUTE,
                string.char(0, #ins) .. ins .. "\0\1\1\0\3" .. cassandra.bytes(be32(1))
                .. cassandra.bytes(be32(i)) .. cassandra.bytes(string.rep("x", 100)))
            if #pipe == 500 then
                assert.is_true(c.conn:send(table.concat(pipe)))
                for _ = 1, 500 do
                    assert.equal(op.RESULT, cassandra.decode(c:read_frame()).opcode)
                end
                pipe = {}
            end
        end
        local count = c:prepare("SELECT count(*) FROM dp.big WHERE k = ?")
        local sel = c:prepare("SELECT v FROM dp.t WHERE k = ?")
        local before = metrics(admin)
        -- the slow request first, then a quick one, in one write: one batch
        local slow = cassandra.frame(4, 1, op.EXECUTE, string.char(0, #count) .. count
            .. "\0\1\1\0\1" .. cassandra.bytes(be32(1)))
        local quick = cassandra.frame(4, 2, op.EXECUTE, string.char(0, #sel) .. sel
            .. "\0\1\1\0\1" .. cassandra.bytes(be32(1)))
        assert.is_true(c.conn:send(slow .. quick))
        local first, second = c:read_frame(30), c:read_frame(30)
        assert.equal(1, metrics(admin).direct - before.direct, "one batch, on the C path")
        assert.equal(2, first.stream, "the quick request answered first")
        assert.same({ { "v1" } }, cassandra.decode(first).rows)
        assert.equal(1, second.stream)
        assert.equal("rows", cassandra.decode(second).result)
        c:close()
    end)

    it("answers a driver's many requests at once (protocol v5, lanes)", function()
        local before = metrics(admin)
        local out = cassandra.python([[
from cassandra.concurrent import execute_concurrent_with_args
c, s = connect(protocol_version=5)
ins = s.prepare("INSERT INTO dp.t (k, v) VALUES (?, ?)")
sel = s.prepare("SELECT v FROM dp.t WHERE k = ?")
rs = execute_concurrent_with_args(s, ins, [(k, "d%d" % k) for k in range(1000, 1400)],
                                  concurrency=64)
assert all(ok for ok, _ in rs)
rs = execute_concurrent_with_args(s, sel, [(k,) for k in range(1000, 1400)], concurrency=64)
bad = [k for (ok, r), k in zip(rs, range(1000, 1400)) if not ok or r.one().v != "d%d" % k]
print("bad", len(bad))
]], { port = port, timeout = 120 })
        assert.matches("bad 0", out, 1, true)
        local after = metrics(admin)
        -- the 800 EXECUTEs came in batches of many (the driver writes what
        -- is ready at once), on the main run and on lanes, in C
        assert.is_true(after.direct - before.direct > 0,
                       "direct batches: " .. (after.direct - before.direct))
        assert.is_true(after.requests - before.requests >= 800)
    end)

    it("is not taken by a chain with another element", function()
        local p2, a2 = proxy(node, '{ "query_counter", name = "q" }, '
            .. string.format('{ "cassandra", remote = "127.0.0.1:%d" }', node.port))
        local c = cassandra.connect(p2)
        local sel = c:prepare("SELECT v FROM dp.t WHERE k = ?")
        for _ = 1, 5 do
            assert.same({ { "v1" } }, c:execute(sel, { be32(1) }).rows)
        end
        local m = metrics(a2)
        assert.is_nil(m.text:find("shotover_direct_batches_total", 1, true))
        assert.equal(7, m.requests)
        c:close()
    end)
end)
