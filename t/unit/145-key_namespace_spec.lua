-- key_namespace: every key of a request gets the prefix (and nothing else
-- does), keys in replies lose it, and what would reach beyond the
-- namespace is refused.  A fake backend records what it was sent and
-- answers canned replies.
local testing = require "shotover.testing"
local message = require "shotover.message"

local P = "t1:"

local function fake(sent, canned)
    return function(batch)
        local resp = message.new_batch(batch.n)
        for i = 1, batch.n do
            local m = batch[i]
            local line = table.concat(m:args(), " ")
            sent[#sent + 1] = line
            local c = canned[m:command()] or "+OK\r\n"
            if type(c) == "function" then
                c = c(m)
            end
            resp:set(i, assert(message.frame_from_resp(c)))
        end
        return resp
    end
end

local function bulk(s)
    return "$" .. #s .. "\r\n" .. s .. "\r\n"
end

local function arr(...)
    local t = { ... }
    return "*" .. #t .. "\r\n" .. table.concat(t)
end

local function setup_chain(canned, opts)
    local sent = {}
    local el = { "key_namespace", prefix = P }
    for k, v in pairs(opts or {}) do
        el[k] = v
    end
    local t = testing.build({ el, fake(sent, canned or {}) })
    return t, sent
end

local function raws(resp)
    local out = {}
    for i = 1, resp.n do
        out[i] = resp[i]:raw()
    end
    return out
end

describe("key_namespace config", function()
    it("needs a prefix without glob characters, on a redis source",
       function()
        assert.matches("prefix: required",
                       testing.errors({ { "key_namespace" }, { "null" } }))
        assert.matches("no glob characters", testing.errors({
            { "key_namespace", prefix = "a*" }, { "null" } }))
        assert.matches("non%-empty", testing.errors({
            { "key_namespace", prefix = "" }, { "null" } }))
        assert.is_truthy(testing.errors({ { "key_namespace", prefix = "a:" },
                                          { "null" } }, "cassandra"))
        assert.is_nil(testing.errors({ { "key_namespace", prefix = "a:" },
                                       { "null" } }))
    end)
end)

describe("key_namespace on requests", function()
    it("prefixes every key and nothing else", function()
        local t, sent = setup_chain()
        t:run({ "GET", "k" }, { "SET", "k", "v", "EX", "10" },
              { "MSET", "a", "1", "b", "2" }, { "DEL", "a", "b", "c" },
              { "PING", "hello" }, { "AUTH", "secret" }, { "ECHO", "x" },
              { "XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0" },
              { "ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2" },
              { "OBJECT", "ENCODING", "k" }, { "SELECT", "1" },
              { "GEORADIUS", "g", "1", "2", "3", "km", "STORE", "d" },
              { "PUBLISH", "chan", "msg" })
        assert.are.same({ "GET t1:k", "SET t1:k v EX 10",
            "MSET t1:a 1 t1:b 2", "DEL t1:a t1:b t1:c", "PING hello",
            "AUTH secret", "ECHO x",
            "XREAD COUNT 1 STREAMS t1:s1 t1:s2 0 0",
            "ZUNIONSTORE t1:d 2 t1:a t1:b WEIGHTS 1 2",
            "OBJECT ENCODING t1:k", "SELECT 1",
            "GEORADIUS t1:g 1 2 3 km STORE t1:d", "PUBLISH chan msg" }, sent)
    end)

    it("prefixes KEYS and SCAN MATCH patterns, adding one to SCAN",
       function()
        local t, sent = setup_chain()
        t:run({ "KEYS", "*" }, { "SCAN", "0" },
              { "SCAN", "5", "MATCH", "a*", "COUNT", "10" },
              { "scan", "0", "COUNT", "10", "TYPE", "string" })
        assert.are.same({ "KEYS t1:*", "SCAN 0 MATCH t1:*",
            "SCAN 5 MATCH t1:a* COUNT 10",
            "scan 0 COUNT 10 TYPE string MATCH t1:*" }, sent)
    end)

    it("prefixes SORT's key, BY and GET patterns and STORE, not GET #",
       function()
        local t, sent = setup_chain()
        t:run({ "SORT", "l", "BY", "w_*", "LIMIT", "0", "5", "GET", "#",
                "GET", "d_*->f", "STORE", "dst" })
        assert.are.same({ "SORT t1:l BY t1:w_* LIMIT 0 5 GET # GET t1:d_*->f "
                          .. "STORE t1:dst" }, sent)
    end)

    it("prefixes many keys with one encoding, keeping the request usable",
       function()
        local t, sent = setup_chain()
        local req = { "MSET" }
        local want = { "MSET" }
        for i = 1, 200 do
            req[#req + 1] = "k" .. i
            req[#req + 1] = "v"
            want[#want + 1] = "t1:k" .. i
            want[#want + 1] = "v"
        end
        t:run(req)
        assert.are.equal(table.concat(want, " "), sent[1])
    end)

    it("refuses what reaches beyond the namespace, passing the rest",
       function()
        local t, sent = setup_chain()
        local resp = t:run({ "FLUSHALL" }, { "GET", "k" }, { "FLUSHDB" },
            { "MULTI" }, { "DBSIZE" }, { "SWAPDB", "0", "1" },
            { "EVAL", "return 1", "0" }, { "FCALL", "f", "0" },
            { "SUBSCRIBE", "__keyspace@0__:k" }, { "PSUBSCRIBE", "*" },
            { "PSUBSCRIBE", "_*" }, { "CLIENT", "TRACKING", "on" })
        assert.are.same({ "GET t1:k", "MULTI" }, sent)
        assert.are.equal("+OK\r\n", resp[2]:raw())
        for _, i in ipairs({ 1, 3, 5, 6, 7, 8, 9, 10, 11, 12 }) do
            assert.matches("^%-ERR shotover: key_namespace: ", resp[i]:raw())
        end
        assert.matches("FLUSHALL reaches beyond the namespace", resp[1]:raw())
        assert.matches("allow_scripts", resp[7]:raw())
    end)

    it("lets scripts through with allow_scripts, keys prefixed", function()
        local t, sent = setup_chain(nil, { allow_scripts = true })
        t:run({ "EVAL", "return 1", "2", "a", "b", "arg" },
              { "PSUBSCRIBE", "news.*" }, { "SUBSCRIBE", "c" })
        assert.are.same({ "EVAL return 1 2 t1:a t1:b arg",
                          "PSUBSCRIBE news.*", "SUBSCRIBE c" }, sent)
    end)
end)

describe("key_namespace on replies", function()
    local canned = {
        KEYS = arr(bulk("t1:a"), bulk("t1:bb")),
        SCAN = arr(bulk("17"), arr(bulk("t1:a"), bulk("t1:c"))),
        BLPOP = arr(bulk("t1:q"), bulk("v")),
        LMPOP = arr(bulk("t1:q"), arr(bulk("x"), bulk("y"))),
        BZPOPMIN = arr(bulk("t1:z"), bulk("m"), bulk("1")),
        XREAD = arr(arr(bulk("t1:s"), arr(arr(bulk("1-0"),
            arr(bulk("f"), bulk("t1:not-a-key")))))),
        GET = bulk("t1:value"),
        EXEC = arr(arr(bulk("t1:a")), ":1\r\n", arr(bulk("t1:q"), bulk("v"))),
        MULTI = "+OK\r\n",
    }

    it("takes the prefix off the keys replies carry, and only those",
       function()
        local t = setup_chain(canned)
        local resp = t:run({ "KEYS", "*" }, { "SCAN", "0" },
            { "BLPOP", "q", "0" }, { "LMPOP", "1", "q", "LEFT" },
            { "BZPOPMIN", "z", "0" }, { "XREAD", "STREAMS", "s", "0" },
            { "GET", "k" })
        assert.are.same({
            arr(bulk("a"), bulk("bb")),
            arr(bulk("17"), arr(bulk("a"), bulk("c"))),
            arr(bulk("q"), bulk("v")),
            arr(bulk("q"), arr(bulk("x"), bulk("y"))),
            arr(bulk("z"), bulk("m"), bulk("1")),
            arr(arr(bulk("s"), arr(arr(bulk("1-0"),
                arr(bulk("f"), bulk("t1:not-a-key")))))),
            bulk("t1:value"),
        }, raws(resp))
    end)

    it("takes it off RESP3 XREAD maps", function()
        local t = setup_chain({ XREAD = "%1\r\n" .. bulk("t1:s")
            .. arr(arr(bulk("1-0"), arr(bulk("f"), bulk("v")))) })
        local resp = t:run({ "XREAD", "STREAMS", "s", "0" })
        assert.are.equal("%1\r\n" .. bulk("s") .. arr(arr(bulk("1-0"),
            arr(bulk("f"), bulk("v")))), resp[1]:raw())
    end)

    it("leaves nulls and errors alone", function()
        local t = setup_chain({ BLPOP = "*-1\r\n", KEYS = "-ERR nope\r\n" })
        local resp = t:run({ "BLPOP", "q", "1" }, { "KEYS", "*" })
        assert.are.same({ "*-1\r\n", "-ERR nope\r\n" }, raws(resp))
    end)

    it("takes it off the replies inside an EXEC, by what was queued",
       function()
        local t, sent = setup_chain(canned)
        local resp = t:run({ "MULTI" }, { "KEYS", "*" }, { "INCR", "n" },
                           { "BLPOP", "q", "0" }, { "EXEC" })
        assert.are.same({ "MULTI", "KEYS t1:*", "INCR t1:n", "BLPOP t1:q 0",
                          "EXEC" }, sent)
        assert.are.equal(arr(arr(bulk("a")), ":1\r\n",
                             arr(bulk("q"), bulk("v"))), resp[5]:raw())
        -- and a transaction over several batches
        t:run({ "MULTI" })
        t:run({ "KEYS", "*" })
        t:run({ "INCR", "n" })
        t:run({ "BLPOP", "q", "0" })
        resp = t:run({ "EXEC" })
        assert.are.equal(arr(arr(bulk("a")), ":1\r\n",
                             arr(bulk("q"), bulk("v"))), resp[1]:raw())
    end)
end)

describe("key_namespace under shotover route-test", function()
    local config = require "shotover.config"
    local common = require "shotover.cli.common"
    local route_test = require "shotover.cli.route_test"

    it("shows the prefixed request each sink got, and what it refused",
       function()
        local conf = assert(config.check({ sources = { {
            name = "t1", protocol = "redis", listen = "127.0.0.1:1",
            chain = {
                { "key_namespace", prefix = "t1:" },
                { "router",
                  routes = { { match = { key_prefix = "t1:user:" },
                               chain = { { "redis", name = "users",
                                           remote = "127.0.0.1:1" } } } },
                  default = { { "redis", name = "main",
                                remote = "127.0.0.1:1" } } } } } } }))
        local lines = {}
        local failed = route_test.run_cases({ cases = {
            { "GET user:1", sink = "users", sent = "GET t1:user:1" },
            { "MSET a 1 b 2", sink = "main", sent = "MSET t1:a 1 t1:b 2" },
            { "PING hello", sent = "PING hello" },
            { "KEYS *", sent = "KEYS t1:*" },
            { "FLUSHALL", filtered = true, sink = false,
              answered_by = "key_namespace", error = "beyond the namespace" },
        } }, common.build_dry(conf), function(l) lines[#lines + 1] = l end)
        assert.are.equal(0, failed, table.concat(lines, "\n"))
    end)
end)

describe("key_namespace transactions", function()
    it("forget what was queued at DISCARD and RESET", function()
        local t = setup_chain({ EXEC = "*1\r\n:1\r\n" })
        t:run({ "MULTI" }, { "KEYS", "*" }, { "DISCARD" })
        t:run({ "MULTI" }, { "KEYS", "*" }, { "RESET" })
        local resp = t:run({ "MULTI" }, { "INCR", "n" }, { "EXEC" })
        assert.are.equal("*1\r\n:1\r\n", resp[3]:raw())
        assert.is_nil(t.ctx.conn.key_namespace_multi)
    end)
end)

describe("key_namespace RANDOMKEY", function()
    it("answers a key of the namespace, tried through RANDOMKEY", function()
        local n = 0
        local t, sent = setup_chain({ RANDOMKEY = function()
            n = n + 1
            return n < 3 and bulk("t2:other") or bulk("t1:mine")
        end })
        local resp = t:run({ "SET", "a", "1" }, { "RANDOMKEY" },
                           { "DEL", "a" })
        assert.are.same({ "SET t1:a 1", "RANDOMKEY", "RANDOMKEY", "RANDOMKEY",
                          "DEL t1:a" }, sent)
        assert.are.same({ "+OK\r\n", bulk("mine"), "+OK\r\n" }, raws(resp))
    end)

    it("falls back to SCAN when other namespaces' keys keep coming",
       function()
        local t, sent = setup_chain({ RANDOMKEY = bulk("t2:other"),
            SCAN = function(m)
                return m:arg(2) == "0" and arr(bulk("5"), arr())
                       or arr(bulk("0"), arr(bulk("t1:found")))
            end })
        local resp = t:run({ "RANDOMKEY" })
        assert.are.equal(bulk("found"), resp[1]:raw())
        assert.are.equal("SCAN 0 MATCH t1:* COUNT 1000", sent[9])
        assert.are.equal("SCAN 5 MATCH t1:* COUNT 1000", sent[10])
    end)

    it("answers null for an empty database or namespace", function()
        local t = setup_chain({ RANDOMKEY = "$-1\r\n" })
        assert.are.equal("$-1\r\n", t:run({ "RANDOMKEY" })[1]:raw())
        t = setup_chain({ RANDOMKEY = bulk("t2:x"),
                          SCAN = arr(bulk("0"), arr()) })
        assert.are.equal("$-1\r\n", t:run({ "RANDOMKEY" })[1]:raw())
    end)

    it("is refused inside MULTI, and keeps refusals in order", function()
        local t, sent = setup_chain({ RANDOMKEY = bulk("t1:k") })
        local resp = t:run({ "FLUSHALL" }, { "RANDOMKEY" }, { "GET", "x" })
        assert.matches("FLUSHALL", resp[1]:raw())
        assert.are.equal(bulk("k"), resp[2]:raw())
        assert.are.equal("+OK\r\n", resp[3]:raw())
        assert.are.same({ "RANDOMKEY", "GET t1:x" }, sent)
        resp = t:run({ "MULTI" }, { "RANDOMKEY" })
        assert.matches("inside MULTI", resp[2]:raw())
    end)
end)
