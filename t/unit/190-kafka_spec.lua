-- The kafka transform's pure parts: the JSON of its records, the records
-- built from query_info tables (Redis from real requests, CQL from
-- hand-made tables of the shape docs/lua-api.md gives), Redis'
-- m:query_info(), config errors with their paths, and dry chains that
-- never touch Kafka.  t/integration/610 runs it against a real Kafka.
local testing = require "shotover.testing"
local json = require "shotover.kafka.json"
local record = require "shotover.kafka.record"

local function qi(line, db)
    return testing.redis(line):query_info({ conn = { redis_db = db } })
end

describe("kafka records", function()
    describe("JSON", function()
        it("writes numbers, int64 cdata, NaN and infinities", function()
            assert.equal('[1,1.5,-3,null,null,null]',
                         json.encode({ 1, 1.5, -3, 0 / 0, 1 / 0, -1 / 0 }))
            assert.equal('[9007199254740992,"9007199254740993",-5,'
                         .. '"18446744073709551615"]',
                         json.encode({ 2LL ^ 53, 2LL ^ 53 + 1, -5LL,
                                       0ULL - 1 }))
        end)

        it("escapes text and writes bytes that are not UTF-8 as hex", function()
            assert.equal('["a\\"b\\\\c\\n\\u0001","é","0xff00"]',
                         json.encode({ 'a"b\\c\n\1', "é", "\255\0" }))
        end)

        it("orders an object's keys: those given first, then sorted",
           function()
            assert.equal('{"z":1,"b":2,"a":3}',
                         json.object({ a = 3, b = 2, z = 1 }, { "z", "b" }))
            assert.equal('{"e":[],"o":{}}',
                         json.encode({ e = json.array(), o = {} }))
        end)
    end)

    describe("of Redis writes", function()
        local opts = { topic_prefix = "shotover." }

        it("are one per write, keyed by its key, on its database's topic",
           function()
            local r = record.build(qi("SET k v EX 10", 3), opts)
            assert.same({ {
                topic = "shotover.db3", key = "k",
                value = '{"source":"redis","db":3,"op":"update",'
                        .. '"command":"SET","key":"k","values":["v","EX","10"]}',
            } }, r)
        end)

        it("name deletes, expiries and truncations", function()
            local fixed = { topic = "cdc" }
            local del = record.build(qi("DEL a b"), fixed)[1]
            assert.equal("cdc", del.topic)
            assert.equal("a", del.key)
            assert.equal('{"source":"redis","db":0,"op":"delete",'
                         .. '"command":"DEL","keys":["a","b"],"values":[]}',
                         del.value)
            assert.matches('"op":"expire"',
                           record.build(qi("PEXPIRE k 5"), fixed)[1].value)
            local flush = record.build(qi("FLUSHDB"), fixed)[1]
            assert.equal("db0", flush.key)
            assert.matches('"op":"truncate"', flush.value)
        end)

        it("say when a command's keys could not be told", function()
            local r = record.build(qi("NOSUCH x y"), opts)
            assert.same({}, r)     -- not a known write: nothing to record
            local w = qi("SET k v")
            w.complete = false
            assert.matches('"complete":false', record.build(w, opts)[1].value)
        end)

        it("are none for reads and connection commands", function()
            for _, line in ipairs({ "GET k", "PING", "SELECT 1", "MULTI",
                                    "SUBSCRIBE c" }) do
                assert.same({}, record.build(qi(line), opts), line)
            end
        end)
    end)

    describe("of CQL writes", function()
        local insert = {
            protocol = "cassandra", kind = "write", op = "insert",
            keyspace = "ks", table = "t", namespace = "ks.t",
            key_columns = { "b", "a" }, key = { a = 1, b = "x" },
            clustering_columns = { "c" }, clustering = { c = 2LL },
            values = { v = "\255", w = 1.5 }, ttl = 60,
            consistency = "QUORUM",
        }

        it("are keyed by the partition key's values in key order", function()
            local r = record.build(insert, { topic_prefix = "cdc." })
            assert.equal(1, #r)
            assert.equal("cdc.ks.t", r[1].topic)
            assert.equal('["x",1]', r[1].key)
            assert.equal('{"source":"cassandra","keyspace":"ks","table":"t",'
                         .. '"op":"insert","key":{"b":"x","a":1},'
                         .. '"clustering":{"c":2},'
                         .. '"values":{"v":"0xff","w":1.5},"ttl":60,'
                         .. '"consistency":"QUORUM","lwt":false}', r[1].value)
        end)

        it("are one per statement of a BATCH, each on its table's topic",
           function()
            local r = record.build({
                protocol = "cassandra", kind = "batch", op = "batch",
                consistency = "ONE", statements = {
                    insert,
                    { protocol = "cassandra", kind = "delete", op = "delete",
                      keyspace = "ks", table = "u", key_columns = { "id" },
                      key = { id = 7 } },
                    { protocol = "cassandra", kind = "read", op = "select" },
                } }, { topic_prefix = "s." })
            assert.equal(2, #r)
            assert.equal("s.ks.t", r[1].topic)
            assert.equal("s.ks.u", r[2].topic)
            assert.equal("[7]", r[2].key)
            assert.equal('{"source":"cassandra","keyspace":"ks","table":"u",'
                         .. '"op":"delete","key":{"id":7},'
                         .. '"consistency":"ONE","lwt":false}', r[2].value)
        end)

        it("say when the key could not be known", function()
            local r = record.build({ protocol = "cassandra", kind = "write",
                op = "update", keyspace = "ks", table = "t",
                namespace = "ks.t", values = { v = 1 }, complete = false },
                { topic = "cdc" })
            assert.equal("ks.t", r[1].key)
            assert.matches('"complete":false', r[1].value)
        end)

        it("are none for reads and schema changes", function()
            assert.same({}, record.build({ protocol = "cassandra",
                kind = "read", op = "select" }, { topic = "x" }))
            assert.same({}, record.build({ protocol = "cassandra",
                kind = "schema_change", op = "create_table" }, { topic = "x" }))
        end)
    end)
end)

describe("m:query_info() of Redis requests", function()
    it("gives kind, op, keys, values and the client's database", function()
        local i = qi("MSET a 1 b 2", 4)
        assert.same({ protocol = "redis", kind = "write", op = "MSET",
                      db = 4, namespace = "db4", keys = { "a", "b" },
                      values = { "1", "2" }, complete = true }, i)
        assert.equal(0, qi("GET k").db)
    end)

    it("tells whole-key deletes from other writes", function()
        assert.equal("delete", qi("DEL a").kind)
        assert.equal("delete", qi("UNLINK a b").kind)
        assert.equal("delete", qi("GETDEL a").kind)
        assert.equal("write", qi("HDEL h f").kind)
        assert.equal("write", qi("INCR n").kind)
        assert.equal("read", qi("GET k").kind)
        assert.equal("use", qi("SELECT 2").kind)
        assert.equal("pubsub", qi("PUBLISH c m").kind)
        assert.equal("other", qi("MULTI").kind)
    end)

    it("is incomplete for a command Redis does not know", function()
        local i = qi("NOSUCH x")
        assert.is_false(i.complete)
        assert.same({}, i.keys)
    end)

    it("is nil for a reply", function()
        local reply = require("shotover.redis.reply").simple("OK")
        assert.is_nil(reply:query_info({ conn = {} }))
    end)
end)

describe("the kafka transform's config", function()
    it("reports every problem with its path", function()
        local ok, errs = testing.check({ { "kafka", brokers = "",
            topic = "", create_topics = { partitions = 0, foo = 1 },
            properties = { acks = "1", ["bootstrap.servers"] = "x",
                           ["linger.ms"] = "soon" } },
            { "null" } })
        assert.is_nil(ok)
        table.sort(errs)
        assert.same({
            "chain[1].brokers: give host:port[,host:port...]",
            "chain[1].create_topics.foo: unknown key (give partitions and "
            .. "replication)",
            "chain[1].create_topics.partitions: a positive integer",
            "chain[1].properties.acks: always all: acks=all and "
            .. "enable.idempotence=true are always on (a record counts as "
            .. "written once every in-sync replica has it, once)",
            "chain[1].properties.bootstrap.servers: set by brokers",
            'chain[1].properties.linger.ms: Invalid value for configuration '
            .. 'property "queue.buffering.max.ms"',
            "chain[1].topic: give a topic name, or leave it out for one "
            .. "topic per table or database",
        }, errs)
    end)

    it("has librdkafka check the other properties", function()
        local errs = testing.errors({ { "kafka", brokers = "h:1",
            properties = { ["no.such.property"] = "1",
                           ["compression.type"] = "lz4" } }, { "null" } })
        assert.matches("chain%[1%]%.properties%.no%.such%.property: "
                       .. "No such configuration property", errs)
        assert.is_nil(errs:find("compression", 1, true))
    end)

    it("accepts acks=all said again and fills in defaults", function()
        local conf = assert(testing.check({ { "kafka", brokers = "h:1",
            properties = { acks = "all" } }, { "null" } }))
        assert.equal("shotover.", conf[1].topic_prefix)
        assert.is_true(conf[1].wait)
        assert.equal(10000, conf[1].timeout_ms)
    end)

    it("passes requests through in a dry chain, never touching Kafka",
       function()
        local t = testing.build({ { "kafka", brokers = "127.0.0.1:1" },
                                  { "redis", remote = "127.0.0.1:6379" } })
        assert.same({ "DRY", "DRY" }, t:replies({ "SET", "k", "v" },
                                                { "DEL", "k" }))
        local c = testing.build({ { "kafka", brokers = "127.0.0.1:1" },
                                  { "cassandra", remote = "127.0.0.1:9042" } },
                                "cassandra")
        assert.same({ "RESULT Void" }, c:replies(testing.cql(
            "INSERT INTO ks.t (k, v) VALUES (1, 'x')")))
    end)
end)
