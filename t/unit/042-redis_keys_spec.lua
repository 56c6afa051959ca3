-- Which arguments of a Redis request are keys (m:keys(), m:key_positions()),
-- from Redis' key specs in shotover.redis.command_meta, and the classes of
-- requests (query_classes), by subcommand for containers.
local message = require "shotover.message"
local keys = require "shotover.redis.keys"
local redis = require "shotover.protocols.redis"

local function cmd(...)
    return assert(message.command({ ... }))
end

local function keys_of(...)
    return cmd(...):keys()
end

describe("m:keys()", function()
    it("finds the one key of plain commands", function()
        assert.are.same({ "k" }, keys_of("GET", "k"))
        assert.are.same({ "k" }, keys_of("set", "k", "v", "EX", "10"))
        assert.are.same({ "k" }, keys_of("HSET", "k", "f", "v", "g", "w"))
        assert.are.same({ "k" }, keys_of("LPUSH", "k", "a", "b"))
        assert.are.same({ "k" }, keys_of("EXPIRE", "k", "10"))
    end)

    it("finds every key of multi-key commands and no value", function()
        assert.are.same({ "a", "b", "c" },
                        keys_of("MSET", "a", "1", "b", "2", "c", "3"))
        assert.are.same({ "a", "b" }, keys_of("MSETNX", "a", "1", "b", "2"))
        assert.are.same({ "a", "b", "c" }, keys_of("DEL", "a", "b", "c"))
        assert.are.same({ "a", "b" }, keys_of("MGET", "a", "b"))
        assert.are.same({ "a", "b", "c" }, keys_of("UNLINK", "a", "b", "c"))
        assert.are.same({ "s", "d" }, keys_of("RENAME", "s", "d"))
        assert.are.same({ "s", "d" }, keys_of("COPY", "s", "d", "REPLACE"))
        assert.are.same({ "s", "d" }, keys_of("LMOVE", "s", "d", "LEFT",
                                              "RIGHT"))
        assert.are.same({ "a", "b" }, keys_of("BLPOP", "a", "b", "0"))
        assert.are.same({ "d", "a", "b" }, keys_of("BITOP", "AND", "d", "a",
                                                   "b"))
        assert.are.same({ "a", "b" }, keys_of("PFCOUNT", "a", "b"))
        assert.are.same({ "a", "b" }, keys_of("WATCH", "a", "b"))
    end)

    it("counts numkeys (EVAL, FCALL, ZUNIONSTORE, LMPOP)", function()
        assert.are.same({ "k1", "k2" }, keys_of("EVAL", "return 1", "2", "k1",
                                                "k2", "arg1", "arg2"))
        assert.are.same({}, keys_of("EVAL", "return 1", "0", "notakey"))
        assert.are.same({ "k" }, keys_of("evalsha", "abc", "1", "k", "a"))
        assert.are.same({ "k" }, keys_of("EVAL_RO", "return 1", "1", "k"))
        assert.are.same({ "k1", "k2" }, keys_of("FCALL", "f", "2", "k1", "k2",
                                                "a"))
        assert.are.same({ "k" }, keys_of("FCALL_RO", "f", "1", "k", "a"))
        assert.are.same({ "d", "a", "b" }, keys_of("ZUNIONSTORE", "d", "2",
            "a", "b", "WEIGHTS", "1", "2"))
        assert.are.same({ "d", "a" }, keys_of("ZINTERSTORE", "d", "1", "a"))
        assert.are.same({ "a", "b" }, keys_of("ZUNION", "2", "a", "b",
                                              "WITHSCORES"))
        assert.are.same({ "a", "b" }, keys_of("LMPOP", "2", "a", "b", "LEFT"))
        assert.are.same({ "a" }, keys_of("BZMPOP", "0", "1", "a", "MIN"))
        -- a numkeys that is no number: no keys (Redis refuses it)
        assert.are.same({}, keys_of("EVAL", "return 1", "x", "k"))
        -- more keys announced than given: those there are
        assert.are.same({ "k" }, keys_of("EVAL", "return 1", "3", "k"))
    end)

    it("finds the keys after STREAMS (XREAD, XREADGROUP)", function()
        assert.are.same({ "s1", "s2" }, keys_of("XREAD", "COUNT", "2",
            "STREAMS", "s1", "s2", "0", "0"))
        assert.are.same({ "s1" }, keys_of("xread", "BLOCK", "0", "streams",
                                          "s1", "$"))
        assert.are.same({ "s1", "s2" }, keys_of("XREADGROUP", "GROUP", "g",
            "c", "COUNT", "1", "STREAMS", "s1", "s2", ">", ">"))
    end)

    it("finds optional keyword keys (GEORADIUS STORE, SORT STORE)",
       function()
        assert.are.same({ "g" }, keys_of("GEORADIUS", "g", "1", "2", "3",
                                         "km"))
        assert.are.same({ "g", "d" }, keys_of("GEORADIUS", "g", "1", "2", "3",
                                              "km", "STORE", "d"))
        assert.are.same({ "g", "d" }, keys_of("GEORADIUS", "g", "1", "2", "3",
                                              "km", "STOREDIST", "d"))
        assert.are.same({ "d", "g" }, keys_of("GEOSEARCHSTORE", "d", "g",
            "FROMMEMBER", "m", "BYRADIUS", "1", "km"))
        assert.are.same({ "l" }, keys_of("SORT", "l"))
        assert.are.same({ "l", "d" }, keys_of("SORT", "l", "BY", "w_*",
            "LIMIT", "0", "10", "GET", "#", "GET", "STORE", "STORE", "d"))
        assert.are.same({ "l" }, keys_of("SORT", "l", "GET", "STORE"))
        assert.are.same({ "l" }, keys_of("SORT_RO", "l", "BY", "w_*"))
    end)

    it("finds MIGRATE's key or its KEYS, never its password", function()
        assert.are.same({ "k" }, keys_of("MIGRATE", "h", "1", "k", "0", "10"))
        assert.are.same({ "a", "b" }, keys_of("MIGRATE", "h", "1", "", "0",
            "10", "COPY", "AUTH", "KEYS", "KEYS", "a", "b"))
        assert.are.same({ "a" }, keys_of("MIGRATE", "h", "1", "", "0", "10",
            "AUTH2", "u", "KEYS", "KEYS", "a"))
    end)

    it("finds the keys of subcommands", function()
        assert.are.same({ "k" }, keys_of("OBJECT", "ENCODING", "k"))
        assert.are.same({ "k" }, keys_of("object", "freq", "k"))
        assert.are.same({}, keys_of("OBJECT", "HELP"))
        assert.are.same({ "k" }, keys_of("MEMORY", "USAGE", "k"))
        assert.are.same({ "s" }, keys_of("XINFO", "STREAM", "s"))
        assert.are.same({ "s" }, keys_of("XGROUP", "CREATE", "s", "g", "$"))
        assert.are.same({}, keys_of("CONFIG", "GET", "maxmemory"))
    end)

    it("finds none in commands without keys", function()
        assert.are.same({}, keys_of("PING", "hello"))
        assert.are.same({}, keys_of("ECHO", "k"))
        assert.are.same({}, keys_of("AUTH", "user", "password"))
        assert.are.same({}, keys_of("SELECT", "1"))
        assert.are.same({}, keys_of("HELLO", "3", "AUTH", "u", "p"))
        assert.are.same({}, keys_of("CLIENT", "SETNAME", "x"))
        assert.are.same({}, keys_of("PUBLISH", "chan", "msg"))
        assert.are.same({}, keys_of("SUBSCRIBE", "chan"))
        assert.are.same({}, keys_of("KEYS", "*"))
        assert.are.same({}, keys_of("SCAN", "0", "MATCH", "a*"))
        assert.are.same({}, keys_of("FLUSHALL"))
        assert.are.same({}, keys_of("NOSUCHCOMMAND", "k"))
        assert.are.same({}, keys_of("GET"))     -- too short: none
    end)

    it("fills a buffer without making tables", function()
        local out = {}
        local m = cmd("MSET", "a", "1", "b", "2")
        assert.are.equal(2, m:key_positions(out))
        assert.are.equal(2, out[1])
        assert.are.equal(4, out[2])
        assert.are.equal(1, keys.positions(cmd("GET", "x"), out))
        assert.are.equal(2, out[1])
    end)
end)

describe("Redis query classes", function()
    local function classes(...)
        return redis.query_classes(cmd(...))
    end

    it("splits connection and admin commands out of other", function()
        assert.are.same({ "connection" }, classes("PING"))
        assert.are.same({ "connection" }, classes("HELLO", "3"))
        assert.are.same({ "connection" }, classes("AUTH", "p"))
        assert.are.same({ "connection" }, classes("SELECT", "0"))
        assert.are.same({ "admin" }, classes("SHUTDOWN", "NOSAVE"))
        assert.are.same({ "admin" }, classes("DEBUG", "SLEEP", "0"))
        assert.are.same({ "admin" }, classes("INFO"))
        assert.are.same({ "other" }, classes("MULTI"))
        assert.are.same({ "other" }, classes("EXEC"))
    end)

    it("goes by subcommand for containers", function()
        assert.are.same({ "connection" }, classes("CLIENT", "SETNAME", "x"))
        assert.are.same({ "connection" }, classes("client", "id"))
        assert.are.same({ "connection", "admin" }, classes("CLIENT", "KILL",
                                                           "ID", "1"))
        assert.are.same({ "admin" }, classes("CONFIG", "SET", "a", "b"))
        assert.are.same({ "admin" }, classes("config", "get", "*"))
        assert.are.same({ "other" }, classes("CONFIG", "HELP"))
        assert.are.same({ "read" }, classes("OBJECT", "ENCODING", "k"))
        -- an unknown subcommand: the container's most restrictive
        assert.are.same({ "connection", "admin" }, classes("CLIENT", "NOPE"))
        assert.are.same({ "connection", "admin" }, classes("CLIENT"))
    end)

    it("keeps reads and writes and marks the dangerous ones admin",
       function()
        assert.are.same({ "read" }, classes("GET", "k"))
        assert.are.same({ "write" }, classes("APPEND", "k", "v"))
        assert.are.same({ "write", "admin" }, classes("FLUSHALL"))
        assert.are.same({ "read", "admin" }, classes("KEYS", "*"))
        assert.are.same({ "other" }, classes("NOSUCHCOMMAND"))
        assert.are.equal("write", redis.query_class(cmd("FLUSHALL")))
        assert.are.equal("admin", redis.query_class(cmd("SHUTDOWN")))
    end)
end)
