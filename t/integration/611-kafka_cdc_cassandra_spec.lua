-- The kafka transform in a Cassandra chain: a real Cassandra 5.0 node, a
-- real Kafka 4.x and the DataStax Python driver.  One topic per table
-- (topic_prefix), records of literal and prepared writes with their key,
-- clustering, values, TTL, timestamp and consistency, one record per BATCH
-- child, LWTs recorded only when applied, TRUNCATE, and nothing for reads,
-- PREPAREs or writes Cassandra refused.
local h = require("harness")
local cassandra = require("cassandra")
local kafka = require("kafka")
local cjson = require("cjson")

describe("kafka CDC of Cassandra writes", function()
    local node, broker, P

    setup(function()
        node = cassandra.start{ auth = false }
        broker = kafka.start()
        local _
        _, P = cassandra.start_proxy{ remote = node.port,
            chain = string.format([[
            { "kafka", brokers = %q, topic_prefix = "cdc.", wait = true },]],
            broker:brokers()) }
    end)
    teardown(h.cleanup)

    local function records(topic, n)
        local out = {}
        for _, r in ipairs(broker:consume(topic, n, 30)) do
            local rec = cjson.decode(r.value)
            rec._key = r.key
            out[#out + 1] = rec
        end
        -- nothing beyond the n expected
        assert.is_nil(broker:consume(topic, nil, 10, { to_end = true })[n + 1])
        return out
    end

    it("records every acknowledged write of each table in its topic",
       function()
        cassandra.python([[
from cassandra.query import BatchStatement
from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.query import SimpleStatement
c, s = connect()
s.execute("CREATE KEYSPACE k WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE k.ev (a text, b int, c int, v text, n bigint, "
          "PRIMARY KEY ((a, b), c))")
s.set_keyspace("k")
s.execute(SimpleStatement("INSERT INTO ev (a, b, c, v, n) VALUES ('x', 1, 1, "
          "'one', 9007199254740993) USING TTL 300 AND TIMESTAMP 1700000000000000",
          consistency_level=ConsistencyLevel.QUORUM))
p = s.prepare("UPDATE ev SET v = ? WHERE a = ? AND b = ? AND c = ?")
s.execute(p, ["two", "x", 1, 2])
s.execute("SELECT * FROM ev WHERE a = 'x' AND b = 1")
b = BatchStatement()
b.add(p, ["three", "x", 1, 3])
b.add("DELETE FROM ev WHERE a = 'y' AND b = 2 AND c > 5")
s.execute(b)
s.execute("INSERT INTO ev (a, b, c, v) VALUES ('x', 1, 1, 'lwt') IF NOT EXISTS")
s.execute("INSERT INTO ev (a, b, c, v) VALUES ('z', 3, 1, 'new') IF NOT EXISTS")
try:
    s.execute("INSERT INTO ev (a, b, c, nosuch) VALUES ('q', 1, 1, 'x')")
except InvalidRequest:
    pass
s.execute("TRUNCATE ev")
c.shutdown()
]], { port = P, timeout = 120 })
        local r = records("cdc.k.ev", 6)
        -- one partition (x, 1) keeps its order; the others by their keys
        local by = {}
        for _, rec in ipairs(r) do
            by[rec._key] = by[rec._key] or {}
            table.insert(by[rec._key], rec)
        end
        local x = by['["x",1]']
        assert.are.equal(3, #x)
        assert.are.same({ "insert", "update", "update" },
                        { x[1].op, x[2].op, x[3].op })
        assert.are.same({ a = "x", b = 1 }, x[1].key)
        assert.are.same({ c = 1 }, x[1].clustering)
        -- a bigint beyond 2^53 as its decimal string
        assert.are.same({ v = "one", n = "9007199254740993" }, x[1].values)
        assert.are.equal(300, x[1].ttl)
        assert.are.equal(1700000000000000, x[1].timestamp)
        assert.are.equal("QUORUM", x[1].consistency)
        assert.are.same({ v = "two" }, x[2].values)
        assert.are.same({ c = 3 }, x[3].clustering)
        -- the batch's range delete
        local y = by['["y",2]'][1]
        assert.are.equal("delete", y.op)
        assert.is_nil(y.clustering)
        -- the LWT that applied, not the one that did not
        local z = by['["z",3]'][1]
        assert.is_true(z.lwt)
        assert.are.same({ v = "new" }, z.values)
        -- TRUNCATE last, keyed by its table
        local t = by["k.ev"][1]
        assert.are.equal("truncate", t.op)
        assert.are.equal("ev", t.table)
    end)

    -- From its second EXECUTE on, a prepared write's record is its
    -- statement's template filled from the bound bytes (kafka's fast
    -- path): the same text the first EXECUTE's general path gives.
    it("records later EXECUTEs of a prepared write like the first",
       function()
        local raw = function(topic, n)
            local out = {}
            for _, r in ipairs(broker:consume(topic, n, 30)) do
                out[#out + 1] = { key = r.key, value = r.value }
            end
            return out
        end
        cassandra.python([[
import uuid, datetime
from cassandra import ConsistencyLevel
c, s = connect()
s.execute("CREATE KEYSPACE IF NOT EXISTS k WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE k.ty (id uuid, day text, c int, b blob, n bigint, "
          "f double, ok boolean, at timestamp, PRIMARY KEY ((id, day), c))")
ins = s.prepare("INSERT INTO k.ty (id, day, c, b, n, f, ok, at) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?")
upd = s.prepare("UPDATE k.ty SET b = ?, ok = ? WHERE id = ? AND day = 'd1' "
                "AND c = ?")
dele = s.prepare("DELETE FROM k.ty WHERE id = ? AND day = ? AND c = ?")
u = uuid.UUID("6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47")
at = datetime.datetime(2024, 2, 29, 12, 0, 0)
row = [u, "d1", 1, b"abc", 9007199254740993, 1.5, True, at, 600,
       1700000000000001]
for _ in range(3):                  # general, then template, template
    s.execute(ins, row)
ins.consistency_level = ConsistencyLevel.QUORUM
s.execute(ins, [u, "d\u00e9\"", 2, b"\xff\x00", -5, 0.25, False, at, 60, 7])
for _ in range(2):
    s.execute(upd, [b"\x01", False, u, 3])
for _ in range(2):
    s.execute(dele, [u, "d1", 1])
c.shutdown()
]], { port = P, timeout = 120 })
        local r = raw("cdc.k.ty", 8)
        -- the same EXECUTE three times: three identical records
        assert.are.same(r[1], r[2])
        assert.are.same(r[1], r[3])
        local first = cjson.decode(r[1].value)
        assert.are.same({ id = "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47",
                          day = "d1" }, first.key)
        assert.are.equal('["6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47","d1"]',
                         r[1].key)
        assert.are.same({ c = 1 }, first.clustering)
        -- a blob is hex even when its bytes are UTF-8 text
        assert.are.equal("0x616263", first.values.b)
        assert.are.equal("9007199254740993", first.values.n)
        assert.are.equal(1.5, first.values.f)
        assert.is_true(first.values.ok)
        assert.are.equal(600, first.ttl)
        assert.are.equal(1700000000000001, first.timestamp)
        assert.are.equal("LOCAL_ONE", first.consistency)
        -- other values, escapes and consistency through the template
        local q = cjson.decode(r[4].value)
        assert.are.equal('d\195\169"', q.key.day)
        assert.are.same({ c = 2 }, q.clustering)
        assert.are.same({ b = "0xff00", n = -5, f = 0.25, ok = false,
                          at = first.values.at }, q.values)
        assert.are.equal(60, q.ttl)
        assert.are.equal(7, q.timestamp)
        assert.are.equal("QUORUM", q.consistency)
        -- UPDATE (a literal key part kept) and DELETE, twice each
        assert.are.same(r[5], r[6])
        local up = cjson.decode(r[5].value)
        assert.are.equal("update", up.op)
        assert.are.same({ id = first.key.id, day = "d1" }, up.key)
        assert.are.same({ b = "0x01", ok = false }, up.values)
        assert.are.same(r[7], r[8])
        local del = cjson.decode(r[7].value)
        assert.are.equal("delete", del.op)
        assert.are.same({ c = 1 }, del.clustering)
    end)
end)
