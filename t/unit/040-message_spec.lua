-- The Redis message API and reply constructors, over the real C codec.
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

describe("a Redis request message", function()
    local m = assert(message.command({ "set", "user:1", "a\r\nb\0c" }))

    it("gives the command, arguments and key", function()
        assert.are.equal("SET", m:command())
        assert.are.equal(3, m:nargs())
        assert.are.equal("set", m:arg(1))
        assert.are.equal("user:1", m:key())
        assert.are.equal("a\r\nb\0c", m:arg(3))
        assert.is_nil(m:arg(4))
        assert.are.same({ "set", "user:1", "a\r\nb\0c" }, m:args())
        assert.is_true(m:is_request())
    end)

    it("compares the command name without case and without a string",
       function()
        assert.is_true(m:command_is("SET"))
        assert.is_true(m:command_is("sEt"))
        assert.is_false(m:command_is("SETNX"))
        assert.is_false(m:command_is("GET"))
    end)

    it("offers zero-copy views of arguments", function()
        local p, n = m:arg_view(2)
        assert.are.equal(6, n)
        assert.are.equal("user:1", require("ffi").string(p, n))
    end)

    it("is its exact RESP encoding, unmodified", function()
        assert.are.equal("*3\r\n$3\r\nset\r\n$6\r\nuser:1\r\n$6\r\na\r\nb\0c\r\n",
                         m:raw())
        assert.is_false(m:is_modified())
    end)

    it("is re-encoded and marked modified by set_arg", function()
        local x = assert(message.command({ "GET", "k" }))
        x:set_arg(2, "a much longer key")
        assert.is_true(x:is_modified())
        assert.are.equal("a much longer key", x:key())
        assert.are.equal("*2\r\n$3\r\nGET\r\n$17\r\na much longer key\r\n",
                         x:raw())
        assert.has_error(function() x:set_arg(3, "no") end,
                         "set_arg: argument index out of range")
    end)

    it("describes itself readably", function()
        assert.are.equal('["set", "user:1", "a\\r\\nb\\x00c"]', m:describe())
    end)
end)

describe("reply constructors", function()
    it("build every RESP2 reply type byte for byte", function()
        assert.are.equal("+OK\r\n", reply.simple("OK"):raw())
        assert.are.equal("-ERR nope\r\n", reply.error("nope"):raw())
        assert.are.equal("-WRONGTYPE bad\r\n", reply.error("WRONGTYPE bad"):raw())
        assert.are.equal(":-42\r\n", reply.integer(-42):raw())
        assert.are.equal("$3\r\na\0b\r\n", reply.bulk("a\0b"):raw())
        assert.are.equal("$-1\r\n", reply.null():raw())
        assert.are.equal("*4\r\n$1\r\na\r\n:1\r\n*1\r\n$1\r\nb\r\n$-1\r\n",
                         reply.array({ "a", 1, { "b" }, reply.NULL }):raw())
    end)

    it("keep line replies on one line", function()
        assert.are.equal("-ERR a b\r\n", reply.error("a\r\nb"):raw():gsub("  ", " "))
    end)

    it("know their type", function()
        assert.are.equal("simple", reply.simple("OK"):type())
        assert.are.equal("error", reply.error("x"):type())
        assert.is_true(reply.error("x"):is_error())
        assert.are.equal("integer", reply.integer(1):type())
        assert.are.equal("bulk", reply.bulk("x"):type())
        assert.are.equal("array", reply.array({}):type())
        assert.are.equal("OK", reply.simple("OK"):line())
    end)

    it("embed an existing message in an array", function()
        local inner = reply.integer(7)
        assert.are.equal("*1\r\n:7\r\n", reply.array({ inner }):raw())
    end)
end)

describe("a batch", function()
    it("has a length, 1-based slots, and takes messages", function()
        local b = message.new_batch(2)
        assert.are.equal(2, #b)
        assert.is_nil(b[1])
        b:set(2, reply.simple("OK"))
        assert.are.equal("+OK\r\n", b[2]:raw())
        assert.is_nil(b[3])
        assert.has_error(function() b:set(3, reply.null()) end)
        b:push(reply.null())
        assert.are.equal(3, #b)
    end)
end)
