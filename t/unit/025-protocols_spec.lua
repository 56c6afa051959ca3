-- Protocols on the Lua side: one module each, looked up by name or by the
-- frame's id, never guessed; transforms say which protocols they support
-- and `check` holds them to it, sub-chains included; a sub-chain may speak
-- another protocol than its parent (a Redis sink inside a Cassandra chain).
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local config = require "shotover.config"
local protocols = require "shotover.protocols"
local message = require "shotover.message"
local cql_request = require "shotover.cql.request"
local C = require("shotover.ffi").C

-- config.check's answer for one source of `protocol` whose chain is
-- elements (errors carry the whole path, sources[1]...)
local function check(elements, protocol)
    return config.check({ sources = { {
        name = "s", protocol = protocol, listen = "127.0.0.1:1",
        chain = elements } } })
end

local function errors_of(elements, protocol)
    local ok, errs = check(elements, protocol)
    assert.is_nil(ok)
    return errs
end

-- a transform module that only reads Redis, and one whose sub-chain
-- (without a protocol of its own) has its parent's
package.preload["shotover.transforms.redis_only"] = function()
    return { name = "redis_only", version = "0.1.0", schema = {},
             protocols = { "redis" },
             new = function() return {} end }
end
package.preload["shotover.transforms.wrap"] = function()
    return { name = "wrap", version = "0.1.0",
             capabilities = { sink = true, lanes = true, subchains = true },
             schema = { chain = { type = "table", required = true },
                        protocol = { type = "string" } },
             subchains = function(conf)
                 return { { chain = conf.chain, path = ".chain",
                            protocol = conf.protocol } }
             end,
             new = function() return {} end }
end

describe("the protocol registry", function()
    it("gives each protocol by name and by the id frames carry", function()
        local redis, cql = protocols.get("redis"), protocols.get("cassandra")
        assert.are.equal(C.SH_PROTO_REDIS, redis.id)
        assert.are.equal(C.SH_PROTO_CQL, cql.id)
        assert.are.equal(redis, protocols.by_id(C.SH_PROTO_REDIS))
        assert.are.equal(cql, protocols.by_id(C.SH_PROTO_CQL))
        local m = assert(message.command({ "GET", "k" }))
        assert.are.equal(redis, protocols.of(m))
        assert.are.equal("redis", m:protocol())
        local q = cql_request.query("SELECT * FROM ks.t")
        assert.are.equal(cql, protocols.of(q))
        assert.are.equal("cassandra", q:protocol())
    end)

    it("raises for a protocol it does not have, instead of guessing", function()
        assert.has_error(function() protocols.get("memcached") end,
            'unknown protocol "memcached" (no module '
            .. 'shotover.protocols.memcached)')
        assert.has_error(function() protocols.by_id(99) end,
                         "unknown protocol id 99")
        local p, err = protocols.find("memcached")
        assert.is_nil(p)
        assert.matches("unknown protocol", err)
    end)

    it("gives every protocol the whole interface", function()
        for _, name in ipairs(protocols.BUILTIN) do
            local p = protocols.get(name)
            assert.are.equal(name, p.name)
            for _, k in ipairs({ "install", "describe", "show", "log_text",
                                 "error_reply", "unknown_reply",
                                 "is_error_reply", "fixed_reply", "dry",
                                 "query_class", "query_label", "passthrough",
                                 "streams", "urgent", "pins", "cost" }) do
                assert.are.equal("function", type(p[k]), name .. "." .. k)
            end
            assert.are.equal("table", type(p.reply), name .. ".reply")
            assert.are.equal("table", type(p.REPLY_KINDS))
            assert.are.equal("boolean", type(p.lanes))
        end
    end)

    it("classifies requests for transforms, each in its protocol", function()
        local redis, cql = protocols.get("redis"), protocols.get("cassandra")
        local sub = assert(message.command({ "SUBSCRIBE", "c" }))
        local get = assert(message.command({ "GET", "k" }))
        assert.is_true(redis.streams(sub))
        assert.is_true(redis.urgent(sub))
        assert.is_false(redis.streams(get))
        assert.are.equal("read", redis.query_class(get))
        assert.are.equal("GET", redis.query_label(get))
        assert.is_false(redis.passthrough(get))
        local ctx = { conn = {} }
        local q = cql_request.query("INSERT INTO ks.t (k) VALUES (1)")
        assert.are.equal("write", cql.query_class(q, ctx))
        assert.are.equal("insert", cql.query_label(q, ctx))
        assert.are.equal(1, cql.cost(q))
        local opts = cql_request.options()
        assert.is_true(cql.passthrough(opts))
        assert.is_nil(cql.query_class(opts, ctx))
        assert.are.equal(0, cql.cost(opts))
        local e = cql.error_reply(q, "no", "overloaded")
        assert.are.same({ code = C.SH_CQL_OVERLOADED, message = "no" },
                        e:error_info())
        assert.is_true(cql.is_error_reply(e))
        assert.is_true(redis.is_error_reply(redis.error_reply(get, "no")))
    end)
end)

describe("config validation of protocols", function()
    it("refuses a transform in a chain of a protocol it does not support", function()
        assert.are.same({ 'sources[1].chain[1]: transform "redis_only" does '
                          .. 'not support protocol "cassandra"' },
                        errors_of({ { "redis_only" }, { "null" } },
                                  "cassandra"))
        assert.truthy(check({ { "redis_only" }, { "null" } }, "redis"))
    end)

    it("checks a sub-chain in its parent's protocol unless the transform names one", function()
        assert.are.same({ 'sources[1].chain[1].chain[1]: transform "redis" '
                          .. 'does not support protocol "cassandra"' },
                        errors_of({ { "wrap", chain = {
                            { "redis", remote = "127.0.0.1:6379" } } } },
                                  "cassandra"))
        assert.truthy(check({ { "wrap", protocol = "redis", chain = {
            { "redis", remote = "127.0.0.1:6379" } } } }, "cassandra"))
        assert.are.same({ 'sources[1].chain[1].chain[1]: transform '
                          .. '"cassandra" does not support protocol "redis"' },
                        errors_of({ { "wrap", protocol = "redis", chain = {
                            { "cassandra", remote = "127.0.0.1:9042" } } } },
                                  "cassandra"))
        assert.are.same({ 'sources[1].chain[1].chain: unknown protocol '
                          .. '"memcached" (no module '
                          .. 'shotover.protocols.memcached)' },
                        errors_of({ { "wrap", protocol = "memcached", chain = {
                            { "null" } } } }, "cassandra"))
    end)

    it("keeps a sub-chain's element that needs one batch at a time in view", function()
        local ok, err = config.check({ sources = { {
            name = "s", protocol = "cassandra", listen = "127.0.0.1:1",
            lanes = 4, chain = { { "wrap", protocol = "redis", chain = {
                { "coalesce", max_requests = 2 }, { "null" } } } } } } })
        assert.is_nil(ok)
        assert.matches("sources%[1%]%.chain%[1%]%.chain%[1%] %(coalesce%) "
                       .. "sees a connection's batches one at a time",
                       err[1])
    end)
end)

describe("a sub-chain of another protocol", function()
    it("runs Redis requests a Cassandra chain builds and reads their replies as values", function()
        local sub_got = {}
        local ch = unit.build({
            { "redis_statement_counter", prefix = "n:", redis = {
                function(batch, chain)
                    for i = 1, batch.n do
                        sub_got[#sub_got + 1] = batch[i]:describe()
                    end
                    return chain:next(batch)
                end,
                { "debug_returner", integer = 41 } } },
            { "null" },
        }, "cassandra", "c")
        local sub = ch.elements[1].inst.redis
        assert.are.equal("redis", sub.protocol)
        assert.are.equal("cassandra", ch.protocol)
        local b = message.new_batch(0)
        b:push(cql_request.query("SELECT * FROM ks.t"))
        b:push(cql_request.query("INSERT INTO ks.t (k) VALUES (1)"))
        local ctx = ch:context(nil)
        local resp = ch:run(ctx, b)
        assert.are.equal(2, resp.n)
        assert.are.equal("RESULT", resp[1]:opcode_name())
        assert.are.equal("RESULT", resp[2]:opcode_name())
        assert.are.same({ '["INCR", "n:select"]', '["INCR", "n:insert"]',
                          '["SET", "n:select:seen", "number:41"]',
                          '["SET", "n:insert:seen", "number:41"]' }, sub_got)
        assert.are.same({ select = 41, insert = 41 },
                        ctx.conn.redis_statement_counts)
    end)

    it("has its redis sink refuse what would act on the client connection", function()
        local chain = require "shotover.chain"
        local sink = chain.build({ { "redis", remote = "127.0.0.1:6379" } },
            { name = "c/redis", protocol = "redis",
              client_protocol = "cassandra" })
        local resp = sink:run(sink:context(nil), unit.redis_batch(
            { "GET", "k" }, { "QUIT" }, { "SUBSCRIBE", "ch" },
            { "HELLO", "3" }, { "HELLO", "2" }, { "MONITOR" }))
        assert.are.equal("+DRY\r\n", resp[1]:raw())
        for _, i in ipairs({ 2, 3, 4, 6 }) do
            assert.matches("^%-ERR shotover: %u+ is not allowed in a redis "
                           .. "sub%-chain of a cassandra connection",
                           resp[i]:raw())
        end
        assert.are.equal("+DRY\r\n", resp[5]:raw())
        -- in a Redis connection they are the client's own business
        local plain = chain.build({ { "redis", remote = "127.0.0.1:6379" } },
                                  { name = "r", protocol = "redis" })
        local r2 = plain:run(plain:context(nil),
                             unit.redis_batch({ "QUIT" }))
        assert.are.equal("+DRY\r\n", r2[1]:raw())
    end)
end)
