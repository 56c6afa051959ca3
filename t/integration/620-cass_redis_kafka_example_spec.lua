-- examples/cass-redis-kafka end to end: that exact config (its addresses
-- moved to free ports through its SHOTOVER_EXAMPLE_* variables) in front of
-- a real Cassandra 5.0 node, a real redis-server and a real Kafka 4.x, with
-- the example's own application (app.py, the DataStax driver) and the
-- driver directly: rows read twice (the second from Redis, the node not
-- asked), updated, batched, deleted, prepared; never a stale read; every
-- write in Kafka, in order.  Then Redis and Kafka killed in turn under a
-- running driver workload: no client error while the cache is down; with
-- Kafka down (wait = true) writes fail with a clear error, and every write
-- a client saw succeed is in Kafka afterwards.
local h = require("harness")
local cassandra = require("cassandra")
local kafka = require("kafka")

local src = os.getenv("SHOTOVER_SRC") or "."
local dir = src .. "/examples/cass-redis-kafka"

local json_decode = require("cjson").decode     -- Debian lua-cjson

describe("examples/cass-redis-kafka", function()
    local node, redis, broker, P, admin

    local function app(...)
        local argv = { cassandra.PYTHON, dir .. "/app.py", "--port",
                       tostring(P) }
        for _, a in ipairs({ ... }) do argv[#argv + 1] = tostring(a) end
        local r = h.run(argv, { timeout = 60 })
        assert(r.code == 0, r.stderr .. r.stdout)
        return (r.stdout:gsub("\n$", ""))
    end

    local function cache(what)
        return h.metric(admin, "shotover_cache_" .. what
                        .. '_total{name="redis_cache"}') or 0
    end

    setup(function()
        node = cassandra.start{ auth = false }
        redis = h.redis_server()
        broker = kafka.start()
        P, admin = h.free_port(), h.free_port()
        h.shotover({
            config = h.read_file(dir .. "/shotover.lua"),
            wrap = { "env",
                "SHOTOVER_EXAMPLE_CASSANDRA=127.0.0.1:" .. node.port,
                "SHOTOVER_EXAMPLE_REDIS=127.0.0.1:" .. redis.port,
                "SHOTOVER_EXAMPLE_KAFKA=" .. broker:brokers(),
                "SHOTOVER_EXAMPLE_LISTEN=127.0.0.1:" .. P,
                "SHOTOVER_EXAMPLE_ADMIN=127.0.0.1:" .. admin },
        })
        h.wait_until(function()
            local c = h.try_connect(P, 1)
            if c then c:close() end
            return c ~= nil
        end, 15, "shotover to listen on " .. P)
    end)
    teardown(h.cleanup)

    it("passes shotover check", function()
        local r = h.run({ h.shotover_bin(), "check", "-c",
                          dir .. "/shotover.lua" }, { timeout = 30 })
        assert.are.equal(0, r.code, r.stdout .. r.stderr)
    end)

    it("walks through the README", function()
        assert.are.equal("schema ready", app("schema"))
        assert.are.equal("added 1", app("add", 1, "Coffee mug", 9.5, 10))
        assert.are.equal("(1, 'Coffee mug', 9.5, 10)", app("show", 1))
        local h0 = cache("hits")
        assert.are.equal("(1, 'Coffee mug', 9.5, 10)", app("show", 1))
        assert.are.equal(h0 + 1, cache("hits"))
        assert.are.equal("price of 1 is 7.5", app("price", 1, 7.5))
        assert.are.equal("(1, 'Coffee mug', 7.5, 10)", app("show", 1))
        assert.are.equal("cart c1 has 2 of 1 - stock left 8",
                         app("order", "c1", 1, 2))
        assert.are.equal("[(1, 2)]", app("cart", "c1"))
        assert.are.equal("(1, 'Coffee mug', 7.5, 8)", app("show", 1))
        assert.are.equal("removed 1", app("remove", 1))
        assert.are.equal("no such product", app("show", 1))

        -- every write, in order, in Kafka (one partition key: one
        -- partition, its order kept)
        local recs = broker:consume("shop.cdc", 5, 30)
        -- and nothing else (a PREPARE, a read, writes nothing)
        assert.is_nil(broker:consume("shop.cdc", nil, 10,
                                     { to_end = true })[6])
        local by_key = {}
        for _, r in ipairs(recs) do
            by_key[r.key] = by_key[r.key] or {}
            table.insert(by_key[r.key], json_decode(r.value))
        end
        local p1 = by_key["[1]"]
        assert.are.same({ "insert", "update", "update", "delete" },
                        { p1[1].op, p1[2].op, p1[3].op, p1[4].op })
        assert.are.same({ id = 1 }, p1[1].key)
        assert.are.same({ name = "Coffee mug", price = 9.5, stock = 10 },
                        p1[1].values)
        assert.are.same({ price = 7.5 }, p1[2].values)
        assert.are.same({ stock = 8 }, p1[3].values)
        assert.are.equal("products", p1[4].table)
        local c1 = by_key['["c1"]']
        assert.are.equal("carts", c1[1].table)
        assert.are.same({ id = 1 }, c1[1].clustering)
        assert.are.same({ qty = 2 }, c1[1].values)
        -- the topic was made with the example's 3 partitions
        assert.are.equal(3, broker:topic_partitions("shop.cdc"))
    end)

    it("answers the second read from Redis without asking the node",
       function()
        local out = cassandra.python(string.format([[
import urllib.request
def sink():
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith('shotover_transform_duration_seconds_count{chain="shop",source="shop",transform="cassandra"}'):
            return float(line.split()[-1])
c, s = connect()
s.execute("INSERT INTO shop.products (id, name, price, stock) VALUES (2, 'Tea', 3.0, 5)")
q = s.prepare("SELECT name FROM shop.products WHERE id = ?")
a = sink(); print("first", s.execute(q, [2]).one().name, sink() - a)
a = sink(); print("second", s.execute(q, [2]).one().name, sink() - a)
c.shutdown()
]], admin), { port = P })
        assert.matches("first Tea 1.0\nsecond Tea 0.0", out, 1, true)
    end)

    it("keeps serving with Redis and then Kafka killed under load",
       function()
        -- a workload: each write a new row of its own partition, then a
        -- read of it (so the cache is in use); every outcome printed
        local proc, out = cassandra.python_spawn([[
import time
from cassandra.cluster import NoHostAvailable
c, s = connect(request_timeout=20)
ins = s.prepare("INSERT INTO shop.products (id, name, price, stock) VALUES (?, 'w', 1.0, ?)")
sel = s.prepare("SELECT stock FROM shop.products WHERE id = ?")
i = 1000
while True:
    i += 1
    try:
        s.execute(ins, [i, i])
        print("ok", i)
    except Exception as e:
        print("fail", i, type(e).__name__, str(e).replace("\n", " "))
        continue
    try:
        v = s.execute(sel, [i]).one().stock
        print("read" if v == i else "stale", i)
    except Exception as e:
        print("readfail", i, str(e).replace("\n", " "))
]], { port = P })
        local function count(what)
            local text = h.read_file(out) or ""
            local n = 0
            for _ in text:gmatch("\n" .. what .. " ") do n = n + 1 end
            if text:sub(1, #what + 1) == what .. " " then n = n + 1 end
            return n
        end
        local function more(what, k, why)
            local base = count(what)
            h.wait_until(function() return count(what) >= base + k end, 60,
                         why)
        end
        more("ok", 20, "the workload to run")
        -- Redis killed: reads and writes go on untouched
        local e0 = cache("errors")
        redis:stop(h.SIGKILL)
        more("ok", 30, "writes with Redis down")
        assert.is_true(cache("errors") > e0)
        redis:start()
        more("ok", 20, "writes with Redis back")
        assert.are.equal(0, count("fail"))
        assert.are.equal(0, count("readfail"))
        -- Kafka killed: writes fail clearly (wait = true), within the
        -- transform's timeout
        broker:kill()
        h.wait_until(function() return count("fail") >= 2 end, 90,
                     "writes to fail with Kafka down")
        broker:start()
        more("ok", 20, "writes with Kafka back")
        proc:kill(h.SIGKILL)
        proc:wait(10)
        local text = h.read_file(out)
        assert.are.equal(0, count("stale"))
        assert.matches("fail %d+ %w+ .*Kafka", text)
        -- every write a client saw succeed is in Kafka
        local ok = {}
        for id in text:gmatch("\nok (%d+)") do ok[tonumber(id)] = true end
        local seen = {}
        for _, r in ipairs(broker:consume("shop.cdc", nil, 60,
                                          { to_end = true })) do
            local rec = json_decode(r.value)
            if rec.table == "products" and rec.op == "insert" then
                seen[rec.key.id] = true
            end
        end
        local missing = {}
        for id in pairs(ok) do
            if not seen[id] then missing[#missing + 1] = id end
        end
        table.sort(missing)
        assert.are.same({}, missing)
    end)
end)
