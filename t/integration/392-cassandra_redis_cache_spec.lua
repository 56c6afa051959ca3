-- redis_cache against a real Cassandra node and a real redis-server, driven
-- by the DataStax Python driver: hits answered without the node (a
-- query_counter behind the cache counts what reaches it), every write path
-- invalidating its partition (or its table), literal and bound values
-- sharing entries, protocol v4 with LZ4 and v5, the race of a SELECT that
-- read the old row while a write went by, and the cache failing open when
-- Redis is down.
local h = require("harness")
local cassandra = require("cassandra")

local function metric(admin, name, labels)
    return h.metric(admin, name .. "{" .. (labels or 'name="redis_cache"')
                    .. "}") or 0
end

-- SELECTs the node was asked (the query_counter sits behind the cache)
local function selects(admin)
    return metric(admin, "shotover_query_count_total",
                  'name="behind",query="select"')
end

describe("redis_cache", function()
    local node, redis, P, admin

    -- what the driver itself SELECTs when it connects (system tables)
    local function driver_selects()
        local b0 = selects(admin)
        cassandra.python([[
c, s = connect(keyspace="rc")
c.shutdown()
]], { port = P })
        return selects(admin) - b0
    end

    setup(function()
        node = cassandra.start{ auth = false }
        redis = h.redis_server()
        admin = h.free_port()
        local _
        _, P = cassandra.start_proxy{ remote = node.port,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },',
                                  admin),
            chain = string.format([[
            { "redis_cache", ttl_seconds = 60,
              tables = { "rc.t", "rc.c", ["rc.other"] = { ttl_seconds = 30 },
                         ["rc.short"] = { ttl_seconds = 1 },
                         ["rc.small"] = { max_entry_bytes = 200 } },
              cache_chain = { { "redis", remote = "127.0.0.1:%d" } } },
            { "query_counter", name = "behind" },]], redis.port) }
        node:python([[
c, s = connect()
s.execute("CREATE KEYSPACE rc WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE rc.t (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE rc.c (a text, b bigint, c int, v text, "
          "PRIMARY KEY ((a, b), c))")
s.execute("CREATE TABLE rc.other (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE rc.short (k int PRIMARY KEY, v text)")
s.execute("CREATE TABLE rc.small (k int PRIMARY KEY, v text)")
c.shutdown()
]])
    end)
    teardown(h.cleanup)

    it("answers a repeated read from Redis, literal and bound alike",
       function()
        cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO t (k, v) VALUES (1, 'one')")
c.shutdown()
]], { port = P })
        local driver = driver_selects()
        local s0, h0 = selects(admin), metric(admin, "shotover_cache_hits_total")
        local out = cassandra.python([[
c, s = connect(keyspace="rc")
print("a", s.execute("SELECT v FROM t WHERE k = 1").one().v)
p = s.prepare("SELECT v FROM t WHERE k = ?")
print("b", s.execute(p, [1]).one().v)
print("c", s.execute(p, [1]).one().v)
print("d", s.execute("SELECT v FROM t WHERE k = %s", [1]).one().v)
c.shutdown()
]], { port = P })
        assert.matches("a one\nb one\nc one\nd one", out, 1, true)
        -- one miss reached the node; the prepared EXECUTEs (bound 1) and
        -- the client-side-bound query hit the literal's entry
        assert.are.equal(s0 + driver + 1, selects(admin))
        assert.are.equal(h0 + 3, metric(admin, "shotover_cache_hits_total"))
        assert.is_true(metric(admin, "shotover_cache_stores_total") >= 1)
        -- the entry is in Redis, under the table's hash tag
        local keys = redis:cli("--scan", "--pattern", "shotover:cache:{rc.t}:P:*")
        assert.truthy(keys:find("shotover:cache:{rc.t}:P:", 1, true))
    end)

    -- From its second EXECUTE on, a prepared SELECT is read against a plan
    -- made once (redis_cache's fast path); its entries must be the ones
    -- the general path (QUERY, first EXECUTE) reads and writes, and a
    -- write must still reach them.
    it("keys a prepared statement's later EXECUTEs like its first",
       function()
        cassandra.python([[
c, s = connect(keyspace="rc")
for cc in range(3):
    s.execute("INSERT INTO c (a, b, c, v) VALUES ('p', 3, %s, 'x')", [cc])
c.shutdown()
]], { port = P })
        local driver = driver_selects()
        local s0, h0 = selects(admin), metric(admin, "shotover_cache_hits_total")
        local out = cassandra.python([[
c, s = connect(keyspace="rc")
stmts = [
    ("SELECT c, v FROM c WHERE a = ? AND b = ?", ["p", 3],
     "SELECT c, v FROM c WHERE a = 'p' AND b = 3"),
    ("SELECT v FROM rc.c WHERE b = ? AND a = 'p' AND c = ?", [3, 1],
     "SELECT v FROM rc.c WHERE b = 3 AND a = 'p' AND c = 1"),
    ("SELECT c FROM c WHERE a = ? AND b = ? AND c > ? LIMIT 1", ["p", 3, 0],
     "SELECT c FROM c WHERE a = 'p' AND b = 3 AND c > 0 LIMIT 1"),
]
for q, vals, lit in stmts:
    p = s.prepare(q)
    got = [sorted(tuple(r) for r in s.execute(p, vals)) for _ in range(3)]
    got.append(sorted(tuple(r) for r in s.execute(lit)))
    assert all(g == got[0] for g in got), got
    print("rows", got[0])
s.execute("UPDATE c SET v = 'y' WHERE a = 'p' AND b = 3 AND c = 1")
p = s.prepare("SELECT v FROM rc.c WHERE b = ? AND a = 'p' AND c = ?")
print("after", s.execute(p, [3, 1]).one().v)
c.shutdown()
]], { port = P })
        assert.matches("rows [(0, 'x'), (1, 'x'), (2, 'x')]", out, 1, true)
        assert.matches("rows [('x',)]", out, 1, true)
        assert.matches("rows [(1,)]", out, 1, true)
        assert.matches("after y", out, 1, true)
        -- per statement one miss; the two later EXECUTEs and the literal
        -- hit its entry; the read after the write missed
        assert.are.equal(s0 + driver + 3 + 1, selects(admin))
        assert.are.equal(h0 + 9, metric(admin, "shotover_cache_hits_total"))
    end)

    it("never serves a row after a write to it", function()
        local out = cassandra.python([[
from cassandra.query import BatchStatement
c, s = connect(keyspace="rc")
ins = s.prepare("INSERT INTO c (a, b, c, v) VALUES (?, ?, ?, ?)")
sel = s.prepare("SELECT c, v FROM c WHERE a = ? AND b = ?")
def read(tag):
    for _ in range(2):        # the second is a hit when nothing changed
        rows = sorted((r.c, r.v) for r in s.execute(sel, ["x", 7]))
    lit = sorted((r.c, r.v) for r in s.execute(
        "SELECT c, v FROM c WHERE a = 'x' AND b = 7"))
    assert rows == lit, (rows, lit)
    print(tag, rows)
s.execute(ins, ["x", 7, 1, "v1"])
s.execute(ins, ["x", 7, 2, "v2"])
read("prepared-insert")
s.execute("UPDATE c SET v = 'u1' WHERE a = 'x' AND b = 7 AND c = 1")
read("update")
s.execute("DELETE FROM c WHERE a = 'x' AND b = 7 AND c = 2")
read("delete-row")
s.execute("INSERT INTO c (a, b, c, v) VALUES ('x', 7, 3, 'v3')")
s.execute("INSERT INTO c (a, b, c, v) VALUES ('x', 7, 4, 'v4')")
read("literal-insert")
s.execute("DELETE FROM c WHERE a = 'x' AND b = 7 AND c >= 3")
read("delete-range")
b = BatchStatement()
b.add(ins, ["x", 7, 5, "b5"])
b.add("UPDATE c SET v = 'b1' WHERE a = 'x' AND b = 7 AND c = 1")
s.execute(b)
read("batch")
r = s.execute("INSERT INTO c (a, b, c, v) VALUES ('x', 7, 6, 'lwt') IF NOT EXISTS")
read("lwt")
s.execute("DELETE FROM c WHERE a = 'x' AND b = 7")
read("delete-partition")
s.execute(ins, ["x", 7, 9, "again"])
read("again")
c.shutdown()
]], { port = P, timeout = 120 })
        assert.matches("prepared-insert [(1, 'v1'), (2, 'v2')]", out, 1, true)
        assert.matches("update [(1, 'u1'), (2, 'v2')]", out, 1, true)
        assert.matches("delete-row [(1, 'u1')]", out, 1, true)
        assert.matches("literal-insert [(1, 'u1'), (3, 'v3'), (4, 'v4')]",
                       out, 1, true)
        assert.matches("delete-range [(1, 'u1')]", out, 1, true)
        assert.matches("batch [(1, 'b1'), (5, 'b5')]", out, 1, true)
        assert.matches("lwt [(1, 'b1'), (5, 'b5'), (6, 'lwt')]", out, 1, true)
        assert.matches("delete-partition []", out, 1, true)
        assert.matches("again [(9, 'again')]", out, 1, true)
        assert.is_true(metric(admin, "shotover_cache_invalidations_total")
                       >= 9)
    end)

    it("drops only the truncated table's entries", function()
        local out = cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO t (k, v) VALUES (2, 'two')")
s.execute("INSERT INTO other (k, v) VALUES (2, 'other')")
for _ in range(2):
    s.execute("SELECT v FROM t WHERE k = 2")
    s.execute("SELECT v FROM other WHERE k = 2")
s.execute("TRUNCATE t")
print("t", s.execute("SELECT v FROM t WHERE k = 2").one())
print("other", s.execute("SELECT v FROM other WHERE k = 2").one().v)
c.shutdown()
]], { port = P })
        assert.matches("t None\nother other", out, 1, true)
    end)

    it("serves an entry no longer than its table's TTL", function()
        local script = [[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO short (k, v) VALUES (1, 'x')")
for _ in range(2):
    s.execute("SELECT v FROM short WHERE k = 1")
c.shutdown()
]]
        local h0 = metric(admin, "shotover_cache_hits_total")
        cassandra.python(script, { port = P })
        assert.are.equal(h0 + 1, metric(admin, "shotover_cache_hits_total"))
        -- one second later the entry is a miss again
        local m0 = metric(admin, "shotover_cache_misses_total")
        h.wait_until(function()
            cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("SELECT v FROM short WHERE k = 1")
c.shutdown()
]], { port = P })
            return metric(admin, "shotover_cache_misses_total") > m0
        end, 10, "the entry to expire")
    end)

    it("does not store a result over max_entry_bytes", function()
        local s0 = metric(admin, "shotover_cache_stores_total")
        local h0 = metric(admin, "shotover_cache_hits_total")
        cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO small (k, v) VALUES (1, 'x')")
s.execute("INSERT INTO small (k, v) VALUES (2, '" + "y" * 500 + "')")
for k in (1, 2, 1, 2):
    s.execute("SELECT v FROM small WHERE k = %s", [k])
c.shutdown()
]], { port = P })
        -- the small row stored and hit once; the big one neither
        assert.are.equal(s0 + 1, metric(admin, "shotover_cache_stores_total"))
        assert.are.equal(h0 + 1, metric(admin, "shotover_cache_hits_total"))
    end)

    it("keys by the typed value: no two values share an entry", function()
        local out = cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO c (a, b, c, v) VALUES ('1', 23, 0, 'x')")
s.execute("INSERT INTO c (a, b, c, v) VALUES ('12', 3, 0, 'y')")
for _ in range(2):
    print("p", s.execute("SELECT v FROM c WHERE a = '1' AND b = 23").one().v,
          s.execute("SELECT v FROM c WHERE a = '12' AND b = 3").one().v)
c.shutdown()
]], { port = P })
        assert.matches("p x y\np x y", out, 1, true)
    end)

    for _, case in ipairs({ { 4, "'lz4'" }, { 5, "False" } }) do
        it("gives a hit the driver's own framing (v" .. case[1] .. ", "
           .. "compression " .. case[2] .. ")", function()
            local h0 = metric(admin, "shotover_cache_hits_total")
            local out = cassandra.python(string.format([[
c, s = connect(protocol_version=%d, compression=%s, keyspace="rc")
s.execute("INSERT INTO t (k, v) VALUES (%d, '%s')")
p = s.prepare("SELECT k, v FROM t WHERE k = ?")
for i in range(3):
    r = s.execute(p, [%d]).one()
    print("r", r.k, r.v)
c.shutdown()
]], case[1], case[2], 40 + case[1], string.rep("z", 3000), 40 + case[1]),
                { port = P })
            local _, n = out:gsub("r " .. (40 + case[1]) .. " z+\n", "")
            assert.are.equal(3, n)
            assert.are.equal(h0 + 2, metric(admin, "shotover_cache_hits_total"))
        end)
    end

    it("a version's entry is a miss for another protocol version", function()
        local m0 = metric(admin, "shotover_cache_misses_total")
        cassandra.python([[
c, s = connect(protocol_version=4, keyspace="rc")
s.execute("INSERT INTO t (k, v) VALUES (50, 'fifty')")
s.execute("SELECT v FROM t WHERE k = 50")
c.shutdown()
c, s = connect(protocol_version=5, keyspace="rc")
print(s.execute("SELECT v FROM t WHERE k = 50").one().v)
c.shutdown()
]], { port = P })
        assert.are.equal(m0 + 2, metric(admin, "shotover_cache_misses_total"))
    end)

    it("does not store what a SELECT read before a write went by", function()
        -- the interleaving, step by step, with the transform's own scripts
        -- on the real redis-server: a lookup misses and finds the
        -- versions; a write invalidates the partition; the SELECT's late
        -- store is refused; a store with the new versions is taken
        local scripts = require("shotover.transforms.redis_cache").scripts
        local P_, T_ = "test:{x.y}:P:k", "test:{x.y}:T"
        local function lookup()
            return redis:cli("GET", T_) .. "|"
                   .. redis:cli("HMGET", P_, "f", "@f", "v")
        end
        local function store(pv, tv, body)
            return redis:cli("EVAL", scripts.store, 2, P_, T_, "f", pv, tv,
                             "99999999999999", body, 60000)
        end
        assert.are.equal("|\n\n", lookup())
        -- the invalidation, as the transform sends it: two plain commands
        redis:cli("HINCRBY", P_, "v", 1)
        redis:cli("PEXPIRE", P_, 60000)
        assert.are.equal("0", store("0", "0", "old"))
        assert.are.equal("|\n\n1", lookup())
        assert.are.equal("1", store("1", "0", "new"))
        -- the stamp: table version, partition version, expiry
        assert.are.equal("|new\n0:1:99999999999999\n1", lookup())
        -- a later write leaves the entry, stamped with an older version
        -- (a miss from now on), and refuses a store begun before it
        redis:cli("HINCRBY", P_, "v", 1)
        assert.are.equal("|new\n0:1:99999999999999\n2", lookup())
        assert.are.equal("0", store("1", "0", "old"))
        -- a table-wide invalidation refuses stores begun before it
        redis:cli("INCR", T_)
        assert.are.equal("0", store("2", "0", "old"))
    end)

    it("never shows a reader a value older than an acknowledged write",
       function()
        -- writers bump a counter row; readers, after each acknowledged
        -- write they learn of, must read at least that value
        local out = cassandra.python([[
import threading
c, s = connect(keyspace="rc")
ins = s.prepare("INSERT INTO t (k, v) VALUES (99, ?)")
sel = s.prepare("SELECT v FROM t WHERE k = 99")
s.execute(ins, ["0"])
acked = [0]
bad = []
stop = threading.Event()
def reader():
    while not stop.is_set():
        floor = acked[0]
        v = int(s.execute(sel).one().v)
        if v < floor:
            bad.append((floor, v))
ts = [threading.Thread(target=reader) for _ in range(4)]
for t in ts: t.start()
for i in range(1, 301):
    s.execute(ins, [str(i)])
    acked[0] = i
stop.set()
for t in ts: t.join()
print("bad", bad[:5])
c.shutdown()
]], { port = P, timeout = 180 })
        assert.matches("bad []", out, 1, true)
    end)

    it("goes on to Cassandra, within its timeout, when Redis hangs",
       function()
        local e0 = metric(admin, "shotover_cache_errors_total")
        redis.proc:kill(h.SIGSTOP)
        -- the driver gives up after 5 s: the cache's own bound (250 ms)
        -- must answer well before that
        local ok, out = pcall(cassandra.python, [[
c, s = connect(keyspace="rc", request_timeout=5)
s.execute("INSERT INTO t (k, v) VALUES (8, 'hung')")
print("r", s.execute("SELECT v FROM t WHERE k = 8").one().v)
c.shutdown()
]], { port = P })
        redis.proc:kill(h.SIGCONT)
        assert(ok, out)
        assert.matches("r hung", out, 1, true)
        assert.is_true(metric(admin, "shotover_cache_errors_total") > e0)
    end)

    it("goes on to Cassandra when Redis is down, and back to Redis after",
       function()
        local e0 = metric(admin, "shotover_cache_errors_total")
        redis:stop()
        local out = cassandra.python([[
c, s = connect(keyspace="rc")
s.execute("INSERT INTO t (k, v) VALUES (7, 'down')")
print("r", s.execute("SELECT v FROM t WHERE k = 7").one().v)
s.execute("UPDATE t SET v = 'down2' WHERE k = 7")
print("r", s.execute("SELECT v FROM t WHERE k = 7").one().v)
c.shutdown()
]], { port = P })
        assert.matches("r down\nr down2", out, 1, true)
        assert.is_true(metric(admin, "shotover_cache_errors_total") > e0)
        redis:start()
        local h0 = metric(admin, "shotover_cache_hits_total")
        out = cassandra.python([[
c, s = connect(keyspace="rc")
for _ in range(3):
    print("r", s.execute("SELECT v FROM t WHERE k = 7").one().v)
c.shutdown()
]], { port = P })
        assert.matches("r down2\nr down2\nr down2", out, 1, true)
        assert.is_true(metric(admin, "shotover_cache_hits_total") >= h0 + 1)
    end)
end)
