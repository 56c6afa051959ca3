-- The kafka change-data-capture transform in front of a real redis-server,
-- producing to a real Kafka broker (t/lib/kafka.lua): every write Redis
-- acknowledged is one JSON record, read back with kcat, in order per key;
-- a write Kafka does not acknowledge (the broker killed) is an error
-- within timeout_ms and, once Kafka is back, every write that succeeded is
-- there; topics are created through the admin API with the configured
-- partition count; an asynchronous transform's overflow is counted.
local h = require("harness")
local kafka = require("kafka")

-- shotover with { kafka (opts), redis } on a free port; admin on `admin`
local function proxy(redis, opts, admin)
    local port = h.free_port()
    local s = h.shotover({ port = port, config = h.config({
        listen = port, remote = redis.port,
        extra = admin and string.format('admin = { listen = "127.0.0.1:%d" },',
                                        admin) or "",
        chain = string.format('{ "kafka", %s }, { "redis", remote = "%%REMOTE%%" }',
                              opts),
    }) })
    return port, s
end

-- records of `topic` by Kafka key, each key's in offset order
local function by_key(recs)
    local out = {}
    for _, p in pairs(kafka.by_partition(recs)) do
        for _, r in ipairs(p) do
            out[r.key] = out[r.key] or {}
            table.insert(out[r.key], r.value)
        end
    end
    return out
end

describe("kafka cdc of redis writes", function()
    local k, R

    setup(function()
        k = kafka.start()
        R = h.redis_server()
    end)
    teardown(h.cleanup)

    it("records each acknowledged write, in order per key, on a topic it "
       .. "creates with the partitions asked for", function()
        local M = h.free_port()
        local P = proxy(R, string.format([[brokers = %q, topic = "cdc",
            create_topics = { partitions = 3 }]], k:brokers()), M)
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SET", "k1", "v1"))
        assert.same(1, c:cmd("HSET", "h", "f", "x"))
        assert.same(h.status("OK"), c:cmd("SET", "k1", "v2", "EX", "100"))
        assert.same("v2", c:cmd("GET", "k1"))              -- a read: none
        assert.same(h.status("OK"), c:cmd("SET", "n", "abc"))
        -- refused by Redis: no record
        assert.truthy(c:cmd("INCR", "n").err)
        assert.same(1, c:cmd("EXPIRE", "h", "100"))
        assert.same(1, c:cmd("DEL", "k1"))
        -- the topic was made through the admin API, not auto-created
        -- (the broker's default is 1 partition)
        assert.equal(3, k:topic_partitions("cdc"))
        -- wait = true: acknowledged before the replies came
        local got = by_key(k:consume("cdc", 6, 10))
        assert.same({
            '{"source":"redis","db":0,"op":"update","command":"SET","key":"k1","values":["v1"]}',
            '{"source":"redis","db":0,"op":"update","command":"SET","key":"k1","values":["v2","EX","100"]}',
            '{"source":"redis","db":0,"op":"delete","command":"DEL","key":"k1","values":[]}',
        }, got.k1)
        assert.same({
            '{"source":"redis","db":0,"op":"update","command":"HSET","key":"h","values":["f","x"]}',
            '{"source":"redis","db":0,"op":"expire","command":"EXPIRE","key":"h","values":["100"]}',
        }, got.h)
        assert.same({
            '{"source":"redis","db":0,"op":"update","command":"SET","key":"n","values":["abc"]}',
        }, got.n)
        -- nothing else: the read and the refused INCR made none
        assert.equal(6, #k:consume("cdc", nil, 10, { to_end = true }))
        assert.equal(6, h.metric(M, 'shotover_kafka_records_total{name="kafka"}'))
        assert.equal(0, h.metric(M, 'shotover_kafka_errors_total{name="kafka"}'))
        assert.equal(6, h.metric(M,
            'shotover_kafka_delivery_seconds_count{name="kafka"}'))
    end)

    it("names topics by database and records the writes EXEC ran",
       function()
        local P = proxy(R, string.format('brokers = %q, topic_prefix = "t1."',
                                         k:brokers()))
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SELECT", "2"))
        assert.same(h.status("OK"), c:cmd("SET", "a", "1"))
        assert.same(h.status("OK"), c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "b", "2"))
        assert.same(h.status("QUEUED"), c:cmd("GET", "b"))
        -- fails inside EXEC: not recorded
        assert.same(h.status("QUEUED"), c:cmd("LPUSH", "b", "x"))
        assert.same(h.status("QUEUED"), c:cmd("DEL", "a"))
        assert.same({ h.status("OK"), "2", h.err("WRONGTYPE Operation against "
                      .. "a key holding the wrong kind of value"), 1 },
                    c:cmd("EXEC"))
        assert.same(h.status("OK"), c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "c", "3"))
        assert.same(h.status("OK"), c:cmd("DISCARD"))
        local got = k:consume("t1.db2", 3, 10)
        local values = {}
        for _, r in ipairs(got) do values[r.key] = values[r.key] or {}
            table.insert(values[r.key], r.value) end
        assert.same({
            '{"source":"redis","db":2,"op":"update","command":"SET","key":"a","values":["1"]}',
            '{"source":"redis","db":2,"op":"delete","command":"DEL","key":"a","values":[]}',
        }, values.a)
        assert.same({
            '{"source":"redis","db":2,"op":"update","command":"SET","key":"b","values":["2"]}',
        }, values.b)
        assert.equal(3, #k:consume("t1.db2", nil, 10, { to_end = true }))
        assert.is_nil(values.c)
    end)

    it("fails writes Kafka does not acknowledge within timeout_ms, and has "
       .. "every write that succeeded once it is back", function()
        k:create_topic("down", 1)
        local P, s = proxy(R, string.format([[brokers = %q, topic = "down",
            timeout_ms = 3000]], k:brokers()))
        local c = h.connect(P)
        local ok = {}
        assert.same(h.status("OK"), c:cmd("SET", "d", "before"))
        ok[#ok + 1] = "before"
        k:kill()
        -- a client that leaves while its write waits for Kafka: the late
        -- report settles a batch nobody waits for
        local gone = h.connect(P)
        gone:send("*3\r\n$3\r\nSET\r\n$4\r\ngone\r\n$1\r\n1\r\n")
        h.wait_until(function() return h.cli(R.port, "get", "gone") == "1" end,
                     10, "the leaving client's write to reach redis")
        gone:close()
        local t0 = h.now()
        local r = c:cmd("SET", "d", "during")
        local took = h.now() - t0
        assert.truthy(r.err, "a write Kafka missed must fail")
        assert.truthy(r.err:find('shotover: kafka "kafka": the write was '
            .. 'applied by the database but not recorded in Kafka', 1, true),
            r.err)
        assert.is_true(took >= 2.5 and took < 10, "failed after " .. took .. "s")
        -- the database has it: at-least-once, the client may retry
        assert.equal("during", h.cli(R.port, "get", "d"))
        k:start()
        h.wait_until(function()
            return c:cmd("SET", "d", "after").status == "OK"
        end, 30, "a write to succeed once Kafka is back")
        ok[#ok + 1] = "after"
        assert.is_true(s:alive())
        assert.is_nil(s:log():find("[error]", 1, true), s:log())
        local values = {}
        for _, rec in ipairs(k:consume("down", nil, 10, { to_end = true })) do
            values[#values + 1] = rec.value:match('"values":%["([^"]*)"%]')
        end
        -- in order; a failed write may be there too (at-least-once)
        local i = 1
        for _, v in ipairs(values) do
            if v == ok[i] then i = i + 1 end
        end
        assert.equal(#ok + 1, i, "every acknowledged write, in order: "
                     .. table.concat(values, ","))
    end)

    it("keeps records across reloads and flushes them when it stops",
       function()
        local opts = [[brokers = %q, topic = "flush", wait = false,
            timeout_ms = %d]]
        local P, s = proxy(R, string.format(opts, k:brokers(), 10000))
        local c = h.connect(P)
        for i = 1, 50 do
            assert.same(h.status("OK"), c:cmd("SET", "f", "a" .. i))
        end
        -- other settings: a new producer for new connections; the old one
        -- goes once its client left and its records are reported
        h.write_file(s.config_path, (h.read_file(s.config_path):gsub(
            "timeout_ms = 10000", "timeout_ms = 20000")))
        s.proc:kill(h.SIGHUP)
        s:wait_log("new connections run the new configuration", 10)
        c:close()
        s:wait_log('kafka "kafka": producer closed', 10)
        local c2 = h.connect(P)
        for i = 1, 50 do
            assert.same(h.status("OK"), c2:cmd("SET", "f", "b" .. i))
        end
        c2:close()
        s.proc:kill(h.SIGTERM)
        local st = s.proc:wait(15)
        assert.is_table(st, "shotover exits")
        assert.equal(0, st.code)
        assert.is_nil(s:log():find("error", 1, true), s:log())
        -- every record, in order (one key: one partition)
        local got = k:consume("flush", nil, 10, { to_end = true })
        assert.equal(100, #got)
        for i, r in ipairs(got) do
            local want = i <= 50 and "a" .. i or "b" .. (i - 50)
            assert.equal(want, r.value:match('"values":%["([^"]*)"%]'))
        end
    end)

    it("fails a write whose topic cannot be created, or whose record "
       .. "librdkafka refuses", function()
        -- one broker cannot hold 3 replicas: CreateTopics says so at once
        local P = proxy(R, string.format([[brokers = %q, topic = "norep",
            create_topics = { partitions = 1, replication = 3 }]], k:brokers()))
        local r = h.connect(P):cmd("SET", "nr", "1")
        assert.truthy(r.err and r.err:find("not recorded in Kafka (creating "
            .. "topic norep: ", 1, true), r.err)
        assert.equal(0, k:topic_partitions("norep") or 0)     -- none made
        -- a queue of one record, no broker: the second of a pipeline is
        -- refused at once (the first fails at its timeout)
        local dead = h.free_port()
        local Q = proxy(R, string.format([[brokers = "127.0.0.1:%d",
            topic = "q", timeout_ms = 1000,
            properties = { ["queue.buffering.max.messages"] = "1" }]], dead))
        local c = h.connect(Q)
        c:send("*3\r\n$3\r\nSET\r\n$2\r\nq1\r\n$1\r\n1\r\n"
               .. "*3\r\n$3\r\nSET\r\n$2\r\nq2\r\n$1\r\n2\r\n")
        local replies = c:read_replies(2, 10)
        assert.truthy(replies[1].err:find("not recorded in Kafka", 1, true))
        assert.truthy(replies[2].err:find("not recorded in Kafka (Local: "
            .. "Queue full)", 1, true), replies[2].err)
        assert.equal("2", h.cli(R.port, "get", "q2"))
    end)

    it("drops and counts what overflows an asynchronous buffer", function()
        local M = h.free_port()
        -- no broker there: nothing is ever acknowledged, the buffer stays full
        local dead = h.free_port()
        local P = proxy(R, string.format([[brokers = "127.0.0.1:%d",
            topic = "x", wait = false, buffer = 2, timeout_ms = 60000]], dead), M)
        local c = h.connect(P)
        for i = 1, 10 do
            assert.same(h.status("OK"), c:cmd("SET", "o" .. i, "v"))
        end
        assert.equal(8, h.metric(M, 'shotover_kafka_dropped_total{name="kafka"}'))
        assert.equal(0, h.metric(M, 'shotover_kafka_records_total{name="kafka"}'))
    end)
end)
