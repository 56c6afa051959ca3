-- key_prefix, tested with shotover.testing: its config is validated as
-- `shotover check` does, and its chain runs dry (no Redis needed).
local testing = require "shotover.testing"

-- a sink that answers each request with its arguments, to see what the
-- transform sent on
local function echo_args(batch)
    local resp = require("shotover.message").new_batch(batch.n)
    local reply = require "shotover.redis.reply"
    for i = 1, batch.n do
        resp:set(i, reply.bulk(table.concat(batch[i]:args(), " ")))
    end
    return resp
end

describe("key_prefix", function()
    it("needs a prefix, and a redis source", function()
        local ok, errs = testing.check({ { "key_prefix" }, { "null" } })
        assert.is_nil(ok)
        assert.are.same({ "chain[1].prefix: required" }, errs)
        ok, errs = testing.check({ { "key_prefix", prefix = "a:" },
                                   { "null" } }, "cassandra")
        assert.is_nil(ok)
        assert.are.same({ "chain[1]: key_prefix needs a redis source" }, errs)
    end)

    it("prefixes every key of each request, and nothing else", function()
        local t = testing.build({ { "key_prefix", prefix = "app:" },
                                  echo_args })
        assert.are.same({ "GET app:k", "SET app:other v",
                          "MSET app:a 1 app:b 2",
                          "EVAL return 1 1 app:k arg",
                          "PING hello", "AUTH secret" },
                        t:replies({ "GET", "k" }, "SET other v",
                                  "MSET a 1 b 2", "EVAL 'return 1' 1 k arg",
                                  "PING hello", "AUTH secret"))
    end)

    it("passes replies back from a dry redis sink", function()
        local t = testing.build({ { "key_prefix", prefix = "app:" },
                                  { "redis", remote = "127.0.0.1:6379" } })
        assert.are.same({ "DRY" }, t:replies({ "GET", "k" }))
    end)
end)
