-- CQL reply constructors, decoded by the test harness's independent CQL
-- decoder (t/lib/cassandra.lua), not by shotover's own code.
local message = require "shotover.message"
local reply = require "shotover.cql.reply"
local cassandra = require "cassandra"

-- a v4 QUERY request on stream 77 to answer
local function request(version)
    local body = "\0\0\0\8SELECT 1\0\1\0"
    return assert(message.frame_from_cql(string.char(version or 4, 0, 0, 77, 7)
        .. string.char(0, 0, 0, #body) .. body))
end

local function decoded(f)
    return cassandra.decode(cassandra.parse_frame(f:raw()))
end

describe("CQL reply constructors", function()
    local req = request()

    it("answer on the request's stream and version, as responses", function()
        local f = reply.ready(req)
        assert.are.equal("\132\0\0\77\2\0\0\0\0", f:raw())
        local v5 = reply.ready(request(5))
        assert.are.equal(0x85, v5.data[0])
    end)

    it("build ERROR with any code and its message", function()
        local r = decoded(reply.error(req, "OVERLOADED", "busy here"))
        assert.are.equal(0x1001, r.code)
        assert.are.equal("busy here", r.message)
        r = decoded(reply.error(req, 0x2200, "no such table"))
        assert.are.equal(0x2200, r.code)
        assert.has_error(function() reply.error(req, "NOPE", "x") end,
                         "cql reply: unknown error code NOPE")
    end)

    it("build RESULT void and set_keyspace", function()
        assert.are.equal("void", decoded(reply.void(req)).result)
        local r = decoded(reply.set_keyspace(req, "shop"))
        assert.are.equal(3, r.kind)
        assert.are.equal("shop", r.keyspace)
    end)

    it("build RESULT rows with typed cells and nulls", function()
        local r = decoded(reply.rows(req, {
            keyspace = "ks", table = "t",
            columns = { { "k", "int" }, { "name", "text" }, { "big", "bigint" },
                        { "ok", "boolean" }, { "x", "double" } },
            rows = { { 1, "one", 2^40, true, 1.5 }, { -2, nil, -3, false, 0 } },
        }))
        assert.are.equal("rows", r.result)
        assert.are.equal(5, r.metadata.ncols)
        assert.are.equal(2, #r.rows)
        assert.are.equal(1, cassandra.int_of(r.rows[1][1]))
        assert.are.equal("one", r.rows[1][2])
        assert.are.equal(2^40, cassandra.int_of(r.rows[1][3]))
        assert.are.equal("\1", r.rows[1][4])
        assert.are.equal("\63\248\0\0\0\0\0\0", r.rows[1][5])   -- 1.5
        assert.are.equal(-2, cassandra.int_of(r.rows[2][1]))
        assert.is_nil(r.rows[2][2])
        -- (int_of is exact only to 2^53: compare a negative bigint's bytes)
        assert.are.equal("\255\255\255\255\255\255\255\253", r.rows[2][3])
    end)

    it("accept the handshake without a backend", function()
        local opts = assert(message.frame_from_cql("\4\0\0\1\5\0\0\0\0"))
        local r = decoded(reply.without_backend(opts, reply.void))
        assert.are.same({ "3.4.7" }, r.options.CQL_VERSION)
        assert.are.equal("void", decoded(reply.without_backend(req, reply.void)).result)
    end)
end)
