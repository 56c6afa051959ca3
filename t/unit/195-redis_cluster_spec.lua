-- The redis_cluster sink's pure parts: the hash slot of a key (CRC16 and
-- hash tags, against the Redis Cluster spec's examples and values Redis's
-- CLUSTER KEYSLOT gives), config errors with their paths, and a dry chain.
-- t/integration/710 runs it against a real cluster.
local testing = require "shotover.testing"
local slot = require("shotover.transforms.redis_cluster").key_slot

describe("redis_cluster", function()
    it("hashes keys to Redis Cluster slots", function()
        -- CRC16/XMODEM's check value: "123456789" -> 0x31C3
        assert.equal(0x31C3 % 16384, slot("123456789"))
        -- CLUSTER KEYSLOT of a real Redis 7
        assert.equal(12182, slot("foo"))
        assert.equal(5061, slot("bar"))
        assert.equal(0, slot(""))
        -- a hash tag: only what is between the first { and the next }
        assert.equal(slot("user1000"), slot("{user1000}.following"))
        assert.equal(slot("user1000"), slot("{user1000}.followers"))
        assert.equal(slot("user1000"), slot("x{user1000}{y}"))
        -- an empty tag, or no closing brace: the whole key
        assert.equal(8363, slot("foo{}{bar}"))      -- CRC16 of it all
        assert.equal(3443, slot("{user1000}.x"))
        assert.equal(slot("{bar"), slot("{bar"))
        assert.are_not.equal(slot("bar"), slot("{bar"))
        -- keys with zero bytes hash them too
        assert.are_not.equal(slot("a\0b"), slot("a\0c"))
    end)

    it("reports config problems with their paths", function()
        local function errs(el)
            local _, e = testing.check({ el }, { protocol = "redis" })
            return table.concat(e or {}, "\n")
        end
        assert.matches("nodes", errs({ "redis_cluster" }))
        assert.matches('nodes%[2%]: expected "host:port"',
                       errs({ "redis_cluster",
                              nodes = { "127.0.0.1:7000", "nope" } }))
        assert.matches("at least one",
                       errs({ "redis_cluster", nodes = {} }))
        assert.matches("read_from",
                       errs({ "redis_cluster", nodes = { "h:1" },
                              read_from = "any" }))
        assert.matches("username needs a password",
                       errs({ "redis_cluster", nodes = { "h:1" },
                              username = "u" }))
        assert.equal("", errs({ "redis_cluster", nodes = { "h:1" },
                                read_from = "replica" }))
    end)

    it("answers a dry run without a cluster", function()
        local t = testing.build({ { "redis_cluster", nodes = { "h:1" } } },
                                "redis")
        assert.are.same({ "DRY" }, t:replies(testing.redis("GET k")))
    end)
end)
