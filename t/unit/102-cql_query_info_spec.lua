-- m:query_info() for CQL requests: partition and clustering keys from
-- literals and bound values (typed by the table's schema, so both give the
-- same bytes), written columns, TTL and timestamp, BATCH children, LWTs,
-- TRUNCATE and schema changes; and what it says when it cannot know.
local testing = require "shotover.testing"
local schema = require "shotover.cql.schema"
local request = testing.cql_request

local conn = { keyspace = "ks" }
local chain = { conn = conn }

local function info(text, values, opts)
    return testing.cql(text, values, opts):query_info(chain)
end

describe("CQL query_info", function()
    setup(function()
        schema.learn("ks", "t", {
            { column_name = "k", kind = "partition_key", position = 0,
              type = "int" },
            { column_name = "k2", kind = "partition_key", position = 1,
              type = "text" },
            { column_name = "c", kind = "clustering", position = 0,
              type = "bigint" },
            { column_name = "v", kind = "regular", position = -1,
              type = "text" },
            { column_name = "n", kind = "regular", position = -1,
              type = "list<int>" },
            { column_name = "u", kind = "regular", position = -1,
              type = "uuid" },
        })
        schema.learn("ks", "d", {
            { column_name = "day", kind = "partition_key", position = 0,
              type = "date" },
            { column_name = "id", kind = "partition_key", position = 1,
              type = "uuid" },
            { column_name = "big", kind = "partition_key", position = 2,
              type = "varint" },
        })
    end)

    it("reads a SELECT's partition and clustering key", function()
        local qi = info("SELECT * FROM t WHERE k = 1 AND k2 = 'a' AND c = 5")
        assert.are.equal("read", qi.kind)
        assert.are.equal("select", qi.op)
        assert.are.equal("ks.t", qi.namespace)
        assert.are.same({ "k", "k2" }, qi.key_columns)
        assert.are.same({ k = 1, k2 = "a" }, qi.key)
        assert.are.equal(5, tonumber(qi.clustering.c))
        assert.is_true(qi.complete)
        assert.are.equal("\0\0\0\4\0\0\0\1\0\0\0\1a", qi.key_bytes)
        assert.are.equal("ONE", qi.consistency)
    end)

    it("gives a literal and the same value bound the same key bytes",
       function()
        local lit = info("SELECT v FROM t WHERE k = 7 AND k2 = 'x'")
        local bound = info("SELECT v FROM t WHERE k = ? AND k2 = ?",
                           { 7, "x" })
        assert.are.equal(lit.key_bytes, bound.key_bytes)
        assert.are.same(lit.key, bound.key)
        -- and values that would read alike as text do not collide
        local a = info("SELECT v FROM t WHERE k = 1 AND k2 = '23'")
        local b = info("SELECT v FROM t WHERE k = 12 AND k2 = '3'")
        assert.are_not.equal(a.key_bytes, b.key_bytes)
    end)

    it("types literals by their column: date, uuid, varint", function()
        local lit = info("SELECT * FROM d WHERE day = '2024-02-29' AND id = "
                         .. "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47 AND big = -129")
        assert.is_true(lit.complete)
        assert.are.equal(19782, lit.key.day)
        assert.are.equal("6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47", lit.key.id)
        -- -129 is 0xff7f in two's complement, as a driver sends it
        assert.are.equal("\255\127", lit.key_bytes:sub(-2))
    end)

    it("reads an INSERT's key, clustering and written values", function()
        local qi = info("INSERT INTO t (k, k2, c, v, n) VALUES (1, 'a', 2, ?, "
                        .. "[1, 2]) USING TTL 10 AND TIMESTAMP 1234",
                        { "x" })
        assert.are.equal("write", qi.kind)
        assert.are.equal("insert", qi.op)
        assert.are.same({ k = 1, k2 = "a" }, qi.key)
        assert.are.equal(2, tonumber(qi.clustering.c))
        assert.are.equal("x", qi.values.v)
        assert.are.same({ 1, 2 }, qi.values.n)
        assert.are.equal(10, qi.ttl)
        assert.are.equal(1234, qi.timestamp)
        assert.is_false(qi.lwt)
    end)

    it("reads an UPDATE's assignments and an LWT", function()
        local qi = info("UPDATE t SET v = 'y', n = n + [3] WHERE k = 1 AND "
                        .. "k2 = 'b' AND c = 4 IF v = 'x'")
        assert.are.equal("update", qi.op)
        assert.are.equal("y", qi.values.v)
        assert.are.same({ op = "+", value = { 3 } }, qi.values.n)
        assert.is_true(qi.lwt)
    end)

    it("reads a DELETE of a range and of a partition", function()
        local qi = info("DELETE FROM t WHERE k = 1 AND k2 = 'a' AND c > 3")
        assert.are.equal("delete", qi.kind)
        assert.is_true(qi.range)
        assert.is_true(qi.complete)
        qi = info("DELETE v FROM ks.t WHERE k = 1 AND k2 = 'a'")
        assert.are.same({ "v" }, qi.columns)
    end)

    it("says when the partition key is not known", function()
        local qi = info("SELECT * FROM t WHERE k = 1")
        assert.is_false(qi.complete)
        assert.is_nil(qi.key_bytes)
        qi = info("SELECT * FROM t WHERE k IN (1, 2) AND k2 = 'a'")
        assert.is_true(qi.multi_partition)
        qi = info("SELECT * FROM nosuch WHERE k = 1")
        assert.is_false(qi.complete)
        assert.matches("schema not loaded", qi.incomplete, 1, true)
    end)

    it("gives each child of a BATCH, literal or bound", function()
        local qi = info("BEGIN BATCH INSERT INTO t (k, k2, c, v) VALUES "
                        .. "(1, 'a', 1, 'x'); DELETE FROM t WHERE k = ? AND "
                        .. "k2 = ?; APPLY BATCH", { 2, "z" })
        assert.are.equal("batch", qi.kind)
        assert.are.equal(2, #qi.statements)
        assert.are.equal("insert", qi.statements[1].op)
        assert.are.same({ k = 2, k2 = "z" }, qi.statements[2].key)
    end)

    it("gives TRUNCATE, DROP and USE their kinds", function()
        assert.are.equal("truncate", info("TRUNCATE t").kind)
        assert.are.equal("ks.t", info("TRUNCATE t").namespace)
        local qi = info("DROP TABLE ks.t")
        assert.are.equal("schema_change", qi.kind)
        assert.are.equal("drop_table", qi.op)
        assert.are.equal("use", info("USE other").kind)
    end)

    it("takes a v5 QUERY's own keyspace parameter", function()
        local reply = require "shotover.cql.reply"
        local q = "SELECT v FROM t WHERE k = 3 AND k2 = 'a'"
        local body = reply.be32(#q) .. q .. reply.be16(1)      -- ONE
                     .. reply.be32(0x80) .. reply.be16(2) .. "ks"
        local m = request.envelope(request.OP.QUERY, body, { version = 5 })
        local qi = m:query_info({ conn = {} })
        assert.are.equal("ks.t", qi.namespace)
        assert.is_true(qi.complete)
    end)

    it("calls a PREPARE a prepare, naming its statement", function()
        local qi = request.prepare("UPDATE t SET v = ? WHERE k = ? AND "
                                   .. "k2 = ?"):query_info(chain)
        assert.are.equal("prepare", qi.kind)
        assert.are.equal("update", qi.op)
        assert.are.equal("ks.t", qi.namespace)
        assert.is_nil(qi.key)
    end)

    it("gives a BATCH message's children its consistency", function()
        local qi = info("BEGIN UNLOGGED BATCH UPDATE t SET v = 'a' WHERE "
                        .. "k = 1 AND k2 = 'b' AND c = 2; APPLY BATCH", nil,
                        { consistency = "QUORUM" })
        assert.are.equal("QUORUM", qi.statements[1].consistency)
        assert.are.equal("unlogged", qi.batch_type)
    end)

    it("is nil for the handshake and replies", function()
        assert.is_nil(request.startup():query_info(chain))
        assert.is_nil(request.options():query_info(chain))
    end)
end)

describe("redis_cache config", function()
    local cache = { { "redis", remote = "127.0.0.1:6379" } }

    it("needs a TTL, tables and a cache chain", function()
        local _, errs = testing.check({ { "redis_cache" },
                                        { "cassandra", remote = "h:1" } },
                                      "cassandra")
        table.sort(errs)
        assert.are.same({ "chain[1].cache_chain: required",
                          "chain[1].tables: required",
                          "chain[1].ttl_seconds: required" }, errs)
    end)

    it("names a bad table entry with its path", function()
        local _, errs = testing.check({
            { "redis_cache", ttl_seconds = 5, cache_chain = cache,
              tables = { "nodot", ["ks.t"] = { ttl = 3 } } },
            { "cassandra", remote = "h:1" } }, "cassandra")
        table.sort(errs)
        assert.are.same({
            'chain[1].tables: "ks.t" has an unknown key ttl (ttl_seconds, '
            .. 'max_entry_bytes)',
            'chain[1].tables: nodot is not "keyspace.table"' }, errs)
    end)

    it("checks its cache chain as Redis", function()
        local _, errs = testing.check({
            { "redis_cache", ttl_seconds = 5, tables = { "ks.t" },
              cache_chain = { { "cassandra", remote = "h:1" } } },
            { "cassandra", remote = "h:1" } }, "cassandra")
        assert.matches('cache_chain[1]: transform "cassandra" does not '
                       .. 'support protocol "redis"', table.concat(errs),
                       1, true)
    end)

    it("passes a dry run straight to the sink", function()
        local t = testing.build({
            { "redis_cache", ttl_seconds = 5, tables = { "ks.t" },
              cache_chain = cache },
            { "cassandra", remote = "127.0.0.1:9042" } }, "cassandra")
        assert.are.same({ "RESULT Void" },
                        t:replies(testing.cql("INSERT INTO ks.t (k) VALUES (1)")))
    end)
end)
