-- shotover.testing, what a third-party transform's specs use, on the
-- example transform under examples/transform (laid out as its own rock
-- would be), and `shotover lua busted` run there as its author would.
local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")
local example = src .. "/examples/transform"
package.path = example .. "/lua/?.lua;" .. package.path

local testing = require "shotover.testing"
local NULL = testing.cql_request.NULL

describe("shotover.testing", function()
    it("validates a chain as check does, with paths from the chain",
       function()
        local els = assert(testing.check({ { "key_prefix", prefix = "a:" },
                                           { "redis", remote = "h:1" } }))
        assert.are.equal(5000, els[2].request_timeout_ms)
        local ok, errs = testing.check({ { "key_prefix", prefix = 1 },
                                         { "redis" } })
        assert.is_nil(ok)
        assert.are.same({ "chain[1].prefix: expected a string, got 1",
                          "chain[2].remote: required" }, errs)
        assert.matches("^chain%[1%]: key_prefix needs a redis source$",
                       testing.errors({ { "key_prefix", prefix = "a:" },
                                        { "null" } }, "cassandra"))
        local _, src_conf = testing.check({ { "null" } }, "cassandra")
        assert.are.equal(16, src_conf.lanes)
    end)

    it("refuses to build a chain that is not valid, listing every error",
       function()
        local ok, err = pcall(testing.build, { { "key_prefix" },
                                               { "redis" } })
        assert.is_false(ok)
        assert.matches("invalid chain:\nchain[1].prefix: required\n"
                       .. "chain[2].remote: required", err, 1, true)
    end)

    it("runs Redis requests through a dry chain and reads replies as text",
       function()
        local seen = {}
        local t = testing.build({
            { "key_prefix", prefix = "app:" },
            function(batch, chain)
                for i = 1, batch.n do
                    seen[#seen + 1] = batch[i]:key()
                end
                return chain:next(batch)
            end,
            { "redis", remote = "127.0.0.1:6379" },
        })
        assert.is_true(t.chain.lanes)
        assert.is_false(t.chain.parks)
        assert.are.same({ "DRY", "DRY" },
                        t:replies({ "GET", "k" }, 'SET "a b" v'))
        assert.are.same({ "app:k", "app:a b" }, seen)
        local resp = t:run(testing.batch(testing.redis("GET", "x")))
        assert.are.equal(1, resp.n)
        assert.are.equal("+DRY\r\n", resp[1]:raw())
    end)

    it("reads every kind of Redis reply as text", function()
        local function one(el)
            return testing.build({ el }):replies("PING")[1]
        end
        assert.are.equal("OK", one({ "debug_returner", simple = "OK" }))
        assert.are.equal("ERR nope", one({ "debug_returner", error = "nope" }))
        assert.are.equal("42", one({ "debug_returner", integer = 42 }))
        assert.are.equal("v\r\nw", one({ "debug_returner", bulk = "v\r\nw" }))
        assert.are.equal("(nil)", one({ "null" }))
        assert.is_true(testing.is_error(testing.build({ { "debug_returner",
            error = "x" } }):run("PING")[1]))
    end)

    it("runs CQL requests, one session per test chain", function()
        local t = testing.build({ { "query_counter" },
                                  { "cassandra", remote = "h:9042" } },
                                "cassandra")
        local q = testing.cql_request
        assert.are.same({ "READY", "RESULT Set_keyspace ks", "RESULT Void" },
            t:replies(q.startup(), testing.cql("USE ks", nil, { stream = 1 }),
                      testing.cql("INSERT INTO t (k, v) VALUES (?, ?)",
                                  { 1, NULL }, { stream = 2 })))
        assert.are.equal("ks", t.ctx.conn.keyspace)
        t:reconnect()
        assert.is_nil(t.ctx.conn.keyspace)
    end)

    it("traces a request as route-test does", function()
        local t = testing.build({ { "key_prefix", prefix = "p:" },
                                  { "debug_returner", simple = "OK" } })
        local r, tr = t:trace({ "GET", "k" })
        assert.are.equal("OK", testing.text(r))
        assert.matches("key_prefix", testing.format_trace(tr))
    end)
end)

describe("shotover lua busted", function()
    it("runs a transform's specs from its own directory", function()
        local bin = assert(os.getenv("SHOTOVER_BIN"), "SHOTOVER_BIN not set")
        local p = io.popen("cd " .. example .. " && " .. bin
                           .. " lua busted -o TAP 2>&1; echo \"exit $?\"")
        local out = p:read("*a")
        p:close()
        assert.matches("\nexit 0\n$", out)
        assert.matches("1..3", out, 1, true)
        assert.not_matches("not ok", out, 1, true)
    end)
end)
