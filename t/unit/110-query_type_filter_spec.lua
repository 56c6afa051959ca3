-- query_type_filter: classes of Redis commands (from Redis' own metadata)
-- and CQL statements, and which requests it refuses.
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local config = require "shotover.config"

local function build(protocol, elements)
    return unit.build(elements, protocol, "f")
end

local redis_batch = unit.redis_batch

describe("query_type_filter on redis", function()
    local ch = build("redis", { { "query_type_filter", deny = { "write",
        "read_write" } }, { "debug_returner", simple = "OK" } })

    it("refuses writes and passes reads, in request order", function()
        local resp = ch:run(ch:context(nil), redis_batch({ "GET", "a" },
            { "SET", "a", "1" }, { "mget", "a", "b" }, { "INCR", "n" },
            { "DEL", "a" }, { "PING" }, { "EVAL", "return 1", "0" }))
        assert.are.equal("+OK\r\n", resp[1]:raw())
        assert.matches("^%-ERR shotover: query_type_filter: read_write "
                       .. "queries are not allowed", resp[2]:raw())
        assert.are.equal("+OK\r\n", resp[3]:raw())
        assert.matches("read_write queries", resp[4]:raw())
        assert.matches("^%-ERR .* write queries", resp[5]:raw())
        assert.are.equal("+OK\r\n", resp[6]:raw())   -- "other" passes
        assert.matches("read_write queries", resp[7]:raw()) -- scripts write
    end)

    it("with an allow list refuses everything else", function()
        local only = build("redis", { { "query_type_filter",
            allow = { "read" } }, { "debug_returner", simple = "OK" } })
        local resp = only:run(only:context(nil), redis_batch({ "GET", "a" },
            { "PUBLISH", "c", "m" }, { "PING" }))
        assert.are.equal("+OK\r\n", resp[1]:raw())
        assert.matches("pubsub queries are not allowed", resp[2]:raw())
        assert.matches("connection queries are not allowed", resp[3]:raw())
    end)

    it("lets a read-only list through reads and connection commands only",
       function()
        local ro = build("redis", { { "query_type_filter",
            allow = { "read", "connection" } },
            { "debug_returner", simple = "OK" } })
        local resp = ro:run(ro:context(nil), redis_batch({ "GET", "a" },
            { "PING" }, { "HELLO", "3" }, { "AUTH", "pw" }, { "SELECT", "1" },
            { "CLIENT", "SETNAME", "x" }, { "SHUTDOWN", "NOSAVE" },
            { "CONFIG", "SET", "save", "" }, { "DEBUG", "SLEEP", "0" },
            { "FLUSHALL" }, { "KEYS", "*" }, { "CLIENT", "KILL", "ID", "1" },
            { "SET", "a", "1" }, { "MULTI" }))
        for i = 1, 6 do
            assert.are.equal("+OK\r\n", resp[i]:raw())
        end
        for i = 7, 12 do            -- FLUSHALL: a write before admin
            assert.matches((i == 10 and " write" or "admin")
                           .. " queries are not allowed", resp[i]:raw())
        end
        assert.matches("read_write queries are not allowed", resp[13]:raw())
        assert.matches("other queries are not allowed", resp[14]:raw())
    end)

    it("refuses admin commands, writes or not, with admin denied",
       function()
        local f = build("redis", { { "query_type_filter",
            deny = { "write", "read_write", "admin" } },
            { "debug_returner", simple = "OK" } })
        local resp = f:run(f:context(nil), redis_batch({ "SHUTDOWN" },
            { "FLUSHALL" }, { "config", "get", "*" }, { "PING" },
            { "CONFIG", "HELP" }, { "GET", "a" }))
        assert.matches("admin queries", resp[1]:raw())
        assert.matches(" write queries", resp[2]:raw())
        assert.matches("admin queries", resp[3]:raw())
        assert.are.equal("+OK\r\n", resp[4]:raw())
        assert.are.equal("+OK\r\n", resp[5]:raw())
        assert.are.equal("+OK\r\n", resp[6]:raw())
    end)

    it("keeps other naming connection and admin commands too", function()
        local f = build("redis", { { "query_type_filter",
            deny = { "other" } }, { "debug_returner", simple = "OK" } })
        local resp = f:run(f:context(nil), redis_batch({ "SHUTDOWN" },
            { "PING" }, { "MULTI" }, { "GET", "a" }))
        assert.matches("admin queries", resp[1]:raw())
        assert.matches("connection queries", resp[2]:raw())
        assert.matches("other queries", resp[3]:raw())
        assert.are.equal("+OK\r\n", resp[4]:raw())
    end)
end)

describe("query_type_filter config", function()
    it("needs exactly one known list", function()
        local ok, errs = config.check({ sources = { { name = "f",
            protocol = "redis", listen = "127.0.0.1:1", chain = {
                { "query_type_filter", deny = { "writes" } },
                { "null" } } } } })
        assert.is_nil(ok)
        assert.are.same({ 'sources[1].chain[1].deny[1]: unknown query type "writes" '
            .. "(one of read, write, read_write, schema_change, pubsub, use, "
            .. "dcl, connection, admin, other)" }, errs)
        ok, errs = config.check({ sources = { { name = "f",
            protocol = "redis", listen = "127.0.0.1:1", chain = {
                { "query_type_filter" }, { "null" } } } } })
        assert.is_nil(ok)
        assert.are.same({ "sources[1].chain[1]: give exactly one of allow "
                          .. "and deny" }, errs)
        -- every problem at once
        ok, errs = config.check({ sources = { { name = "f",
            protocol = "redis", listen = "127.0.0.1:1", chain = {
                { "query_type_filter", allow = { "reads", "write", "pub" },
                  deny = { "write" } },
                { "null" } } } } })
        assert.is_nil(ok)
        local one_of = " (one of read, write, read_write, schema_change, "
                       .. "pubsub, use, dcl, connection, admin, other)"
        assert.are.same({
            "sources[1].chain[1]: give exactly one of allow and deny",
            'sources[1].chain[1].allow[1]: unknown query type "reads"' .. one_of,
            'sources[1].chain[1].allow[3]: unknown query type "pub"' .. one_of,
        }, errs)
        -- classes the source's protocol never gives
        ok, errs = config.check({ sources = {
            { name = "r", protocol = "redis", listen = "127.0.0.1:1",
              chain = { { "query_type_filter",
                          deny = { "write", "schema_change", "dcl" } },
                        { "null" } } },
            { name = "c", protocol = "cassandra", listen = "127.0.0.1:2",
              chain = { { "query_type_filter", allow = { "read", "pubsub" } },
                        { "null" } } } } })
        assert.is_nil(ok)
        local redis = " (their classes: read, write, read_write, pubsub, "
                      .. "connection, admin, other)"
        assert.are.same({
            'sources[1].chain[1].deny[2]: redis requests are never '
            .. '"schema_change"' .. redis,
            'sources[1].chain[1].deny[3]: redis requests are never "dcl"'
            .. redis,
            'sources[2].chain[1].allow[2]: cassandra requests are never '
            .. '"pubsub" (their classes: read, write, read_write, '
            .. 'schema_change, use, dcl, other)',
        }, errs)
    end)
end)
