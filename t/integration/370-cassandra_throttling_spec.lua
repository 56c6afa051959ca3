-- request_throttling in front of a real Cassandra: over the limit a request
-- gets OVERLOADED (0x1001) on its stream and never reaches the node, a
-- BATCH costs one unit per statement, the handshake always passes, and the
-- DataStax driver sees the error as an overloaded coordinator.
--
-- The rate is one request per 1000 s, so nothing refills while the spec
-- runs: which requests pass is exact, without any timing assertion.
local h = require("harness")
local cassandra = require("cassandra")

local function be16(n) return string.char(math.floor(n / 256) % 256, n % 256) end

local ONE = be16(1)

local function insert(k)
    return string.format("INSERT INTO th.t (k) VALUES (%d)", k)
end

-- an unlogged BATCH of inserts of keys from..to
local function batch(from, to)
    local body = { "\1", be16(to - from + 1) }
    for k = from, to do
        body[#body + 1] = "\0" .. cassandra.long_string(insert(k)) .. be16(0)
    end
    body[#body + 1] = ONE .. "\0"
    return table.concat(body)
end

-- "ok" or the error code in hex
local function outcome(r)
    if r.opcode == cassandra.op.ERROR then
        return string.format("0x%04x", r.code)
    end
    return "ok"
end

local function rows_on_node(node)
    return cassandra.python([[
c, s = connect()
print(sorted(r.k for r in s.execute("SELECT k FROM th.t")))
]], { port = node.port })
end

describe("request_throttling in front of cassandra", function()
    local node, P, A, D

    setup(function()
        node = cassandra.start{ auth = false }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE th WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE th.t (k int PRIMARY KEY)")
]], { port = node.port })
        A = h.free_port()
        P = h.free_port()
        -- two workers, one bucket: 10 units, refilled once per 1000 s; and
        -- a second source for the driver with a bucket of its own
        D = h.free_port()
        local proxy = h.shotover({ config = string.format([[
return {
  workers = 2,
  admin = { listen = "127.0.0.1:%d" },
  sources = {
    { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d",
      chain = {
        { "request_throttling", name = "cql", max_requests_per_second = 0.001,
          burst = 10 },
        { "cassandra", remote = "127.0.0.1:%d" } } },
    { name = "driver", protocol = "cassandra", listen = "127.0.0.1:%d",
      chain = {
        { "request_throttling", name = "driver",
          max_requests_per_second = 0.001, burst = 150 },
        { "cassandra", remote = "127.0.0.1:%d" } } },
  },
}
]], A, P, node.port, D, node.port) })
        proxy:wait_log("running with 2 workers", 20)
    end)
    teardown(h.cleanup)

    it("charges a BATCH per statement and answers OVERLOADED", function()
        local c = cassandra.connect(P)          -- STARTUP costs nothing
        local got = {}
        local function send(opcode, body)
            got[#got + 1] = outcome((c:request(opcode, body)))
        end
        local Q = cassandra.op.QUERY
        send(cassandra.op.BATCH, batch(1, 4))   -- 4 of 10
        send(cassandra.op.BATCH, batch(5, 8))   -- 8 of 10
        send(cassandra.op.BATCH, batch(9, 11))  -- 3 more: over
        send(Q, cassandra.long_string(insert(20)) .. ONE .. "\0") -- 9
        send(Q, cassandra.long_string(insert(21)) .. ONE .. "\0") -- 10
        send(Q, cassandra.long_string(insert(22)) .. ONE .. "\0") -- over
        send(cassandra.op.BATCH, batch(30, 40)) -- 11 > burst: never
        assert.are.same({ "ok", "ok", "0x1001", "ok", "ok", "0x1001",
                          "0x1001" }, got)
        local r = c:request(Q, cassandra.long_string(insert(23)) .. ONE
                            .. "\0")
        assert.are.equal(0x1001, r.code)
        assert.are.equal("shotover: request throttled (cql: over 0.001 "
                         .. "requests per second)", r.message)
        c:close()
        assert.matches("[1, 2, 3, 4, 5, 6, 7, 8, 20, 21]",
                       rows_on_node(node), 1, true)
    end)

    it("lets the handshake through with the bucket empty", function()
        for _ = 1, 4 do                         -- on both workers, surely
            local c = cassandra.connect(P)      -- STARTUP passes
            assert.are.equal("SUPPORTED", c:options().opname)
            assert.are.equal("READY", c:register({ "SCHEMA_CHANGE" }).opname)
            assert.are.equal(0x1001, c:query("SELECT k FROM th.t",
                                             { may_fail = true }).code)
            c:close()
        end
        local r = h.run({ "curl", "-s", "http://127.0.0.1:" .. A
                          .. "/metrics" }, { timeout = 10 })
        -- 4 refused in the first test (a BATCH counts as one request), 4
        -- here
        assert.matches('shotover_throttled_requests_total{name="cql"} 8\n',
                       r.stdout, 1, true)
    end)

    it("shows the driver an overloaded coordinator", function()
        local out = cassandra.python([[
c, s = connect()
n = 0
try:
    for i in range(400):
        s.execute("SELECT k FROM th.t WHERE k = 1")
        n += 1
    print('never throttled')
except Exception as e:
    print('throttled after', n, type(e).__name__, repr(e)[:600])
]], { port = D, timeout = 120 })
        assert.matches("throttled after %d+ NoHostAvailable", out)
        assert.matches("code=1001 [Coordinator node overloaded]", out, 1, true)
        assert.matches("shotover: request throttled (driver", out, 1, true)
    end)
end)
