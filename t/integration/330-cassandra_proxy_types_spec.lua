-- CQL features through shotover, each checked by reading back what the node
-- stored: lightweight transactions, counters, collections, UDTs, tuples,
-- Cassandra 5 vectors, TTL, 1 MB blobs, logged and unlogged batches.
local h = require("harness")
local cassandra = require("cassandra")

describe("cql features through shotover", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = cassandra.start_proxy{ remote = node.port }
    end)
    teardown(h.cleanup)

    for _, v in ipairs({ 4, 5 }) do
        it("stores and returns every kind of value over protocol v" .. v,
           function()
            local out = cassandra.python([==[
import uuid, decimal, datetime, ipaddress, struct
from cassandra.query import BatchStatement, BatchType, SimpleStatement
from cassandra.util import Date, Time
pv = int(ARGS[0]); ks = 'ty%d' % pv
c, s = connect(protocol_version=pv)
s.execute("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}" % ks)
s.set_keyspace(ks)
s.execute("CREATE TYPE IF NOT EXISTS addr (street text, zip int)")
s.execute("""CREATE TABLE IF NOT EXISTS all_types (k int PRIMARY KEY,
    t text, i int, b bigint, u uuid, tu timeuuid, bl blob, bo boolean,
    d double, f float, de decimal, vi varint, ts timestamp, dt date, tm time,
    ip inet, l list<int>, st set<text>, m map<text, int>,
    tp tuple<int, text>, a frozen<addr>, vec vector<float, 3>)""")
class Addr(object):
    def __init__(self, street=None, zip=None):
        self.street, self.zip = street, zip
c.register_user_type(ks, 'addr', Addr)
ins = s.prepare("""INSERT INTO all_types (k, t, i, b, u, tu, bl, bo, d, f, de, vi,
    ts, dt, tm, ip, l, st, m, tp, a, vec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""")
u, tu = uuid.uuid4(), uuid.uuid1()
# the 3.25 driver has no vector type: a vector<float, 3> travels as its bytes
VEC = struct.pack('>3f', 0.5, 1.5, 2.5)
ts = datetime.datetime(2026, 11, 28, 12, 0, 0)
vals = (1, 'héllo', -7, 2**40, u, tu, b'\x00\x01', True, 1.5, 2.5,
        decimal.Decimal('3.14'), 10**30, ts, Date(datetime.date(2026, 1, 2)),
        Time(3723000000000), '10.0.0.1', [1, 2], {'a', 'b'}, {'x': 1},
        (7, 'seven'), Addr('Main', 12345), VEC)
s.execute(ins, vals)
r = s.execute("SELECT * FROM all_types WHERE k = 1").one()
checks = [r.t == 'héllo', r.i == -7, r.b == 2**40, r.u == u, r.tu == tu,
          r.bl == b'\x00\x01', r.bo is True, r.d == 1.5, r.f == 2.5,
          r.de == decimal.Decimal('3.14'), r.vi == 10**30, r.ts == ts,
          r.ip == '10.0.0.1', r.l == [1, 2], set(r.st) == {'a', 'b'},
          dict(r.m) == {'x': 1}, tuple(r.tp) == (7, 'seven'),
          r.a.zip == 12345, bytes(r.vec) == VEC]
print('types', all(checks), checks)
# lightweight transaction
s.execute("CREATE TABLE IF NOT EXISTS lwt (k int PRIMARY KEY, v int)")
first = s.execute("INSERT INTO lwt (k, v) VALUES (1, 1) IF NOT EXISTS").one()
again = s.execute("INSERT INTO lwt (k, v) VALUES (1, 2) IF NOT EXISTS").one()
print('lwt', first.applied, again.applied)
# counters
s.execute("CREATE TABLE IF NOT EXISTS cnt (k int PRIMARY KEY, n counter)")
for _ in range(5):
    s.execute("UPDATE cnt SET n = n + 2 WHERE k = 1")
print('counter', s.execute("SELECT n FROM cnt WHERE k = 1").one().n)
# TTL
s.execute("CREATE TABLE IF NOT EXISTS ttl (k int PRIMARY KEY, v int)")
s.execute("INSERT INTO ttl (k, v) VALUES (1, 1) USING TTL 3000")
print('ttl', 0 < s.execute("SELECT TTL(v) AS t FROM ttl WHERE k = 1").one().t <= 3000)
# a 1 MB blob
s.execute("CREATE TABLE IF NOT EXISTS blobs (k int PRIMARY KEY, v blob)")
mb = bytes(range(256)) * 4096
s.execute(s.prepare("INSERT INTO blobs (k, v) VALUES (?, ?)"), (1, mb))
print('blob', s.execute("SELECT v FROM blobs WHERE k = 1").one().v == mb)
# logged and unlogged batches
s.execute("CREATE TABLE IF NOT EXISTS bt (k int, n int, PRIMARY KEY (k, n))")
bi = s.prepare("INSERT INTO bt (k, n) VALUES (?, ?)")
for kind, k in ((BatchType.LOGGED, 1), (BatchType.UNLOGGED, 2)):
    b = BatchStatement(batch_type=kind)
    for n in range(10):
        b.add(bi, (k, n))
    b.add(SimpleStatement("INSERT INTO bt (k, n) VALUES (%s, 99)"), (k,))
    s.execute(b)
print('batch', [len(list(s.execute("SELECT n FROM bt WHERE k = %d" % k))) for k in (1, 2)])
]==], { port = P, args = { v }, timeout = 120 })
            assert.matches("types True", out, 1, true)
            assert.matches("lwt True False", out, 1, true)
            assert.matches("counter 10", out, 1, true)
            assert.matches("ttl True", out, 1, true)
            assert.matches("blob True", out, 1, true)
            assert.matches("batch [11, 11]", out, 1, true)
        end)
    end
end)
