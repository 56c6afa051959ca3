-- The cassandra sink's ring parts that need no node: config errors with
-- their paths, the shotover instances' view (tokens shared evenly, host
-- ids derived alike on every instance, which one is this instance),
-- routing keys as Cassandra composes them, and Murmur3 tokens against the
-- DataStax driver's own murmur3 (its values pinned below).
-- t/integration/750 runs it against a real two-node ring.
local testing = require "shotover.testing"
local peers = require "shotover.cql.peers"
local ring = require "shotover.cql.ring"
local C = require("shotover.ffi").C

local function token(s)
    return (tostring(C.sh_ffi_cql_token(s, #s)):gsub("LL$", ""))
end

describe("cassandra ring", function()
    it("reports config problems with their paths", function()
        local function errs(el)
            local _, e = testing.check({ el }, { protocol = "cassandra" })
            return table.concat(e or {}, "\n")
        end
        assert.matches("remote: required", errs({ "cassandra" }))
        assert.matches("remote and contact_points: give one",
                       errs({ "cassandra", remote = "h:1",
                              contact_points = { "h:2" } }))
        assert.matches('contact_points%[2%]: expected "host:port"',
                       errs({ "cassandra", contact_points = { "h:1", "x" } }))
        assert.matches("contact_points: a list",
                       errs({ "cassandra", contact_points = {} }))
        assert.matches('shotover_nodes%[1%]%.address: expected "ip:port"',
                       errs({ "cassandra", contact_points = { "h:1" },
                              shotover_nodes = { { address = "name:1" } } }))
        assert.matches("shotover_nodes%[2%]%.address: listed twice",
                       errs({ "cassandra", contact_points = { "h:1" },
                              shotover_nodes = { { address = "1.2.3.4:5" },
                                                 { address = "1.2.3.4:5" } } }))
        assert.matches("shotover_nodes%[1%]%.tokens%[1%]: expected an integer",
                       errs({ "cassandra", contact_points = { "h:1" },
                              shotover_nodes = { { address = "1.2.3.4:5",
                                                   tokens = { "x" } } } }))
        assert.matches("local_node: not one of",
                       errs({ "cassandra", contact_points = { "h:1" },
                              local_node = "1.2.3.4:6",
                              shotover_nodes = { { address = "1.2.3.4:5" } } }))
        assert.matches("shotover_nodes: only for a ring",
                       errs({ "cassandra", remote = "h:1",
                              shotover_nodes = { { address = "1.2.3.4:5" } } }))
        assert.equal("", errs({ "cassandra", contact_points = { "h:1" },
            shotover_nodes = { { address = "1.2.3.4:5", dc = "d", rack = "r",
                                 host_id = "2dd022d6-2937-4754-89d6-02d2933a8f7a",
                                 tokens = { "-5", "7" } } } }))
    end)

    it("shares the ring among the shotover instances of a data centre",
       function()
        local list = { { address = "10.0.0.1:9042", dc = "a" },
                       { address = "10.0.0.2:9042", dc = "a" },
                       { address = "10.0.0.3:9042", dc = "b" },
                       { address = "10.0.0.4:9042", dc = "a",
                         tokens = { "42" } } }
        local v = peers.view(list, "10.0.0.2:9042")
        assert.equal("10.0.0.2:9042", v.self.address)
        assert.equal(3, #v.others)
        -- a: three nodes, one with its own token; the others at 0 and 1/3
        assert.same({ "-9223372036854775808" }, v.all[1].tokens)
        assert.same({ "-3074457345618258603" }, v.all[2].tokens)
        assert.same({ "-9223372036854775808" }, v.all[3].tokens)
        assert.same({ "42" }, v.all[4].tokens)
        -- host ids: uuid v4 bytes, alike on every instance, distinct
        local again = peers.view(list, "10.0.0.1:9042")
        assert.equal(v.all[1].host_id, again.all[1].host_id)
        assert.are_not.equal(v.all[1].host_id, v.all[2].host_id)
        assert.equal(16, #v.all[1].host_id)
        assert.equal(0x40, bit.band(v.all[1].host_id:byte(7), 0xf0))
        assert.equal("\10\0\0\2", v.self.inet)
    end)

    it("tells which of shotover_nodes this instance is", function()
        local list = { { address = "127.0.0.1:19042" },
                       { address = "127.0.0.1:19043" } }
        assert.equal("127.0.0.1:19043",
                     peers.find_self(list, "127.0.0.1:19043"))
        assert.equal("127.0.0.1:19042",
                     peers.find_self(list, "0.0.0.0:19042"))
        assert.is_nil(peers.find_self(list, "127.0.0.1:9042"))
        assert.is_nil(peers.find_self({ { address = "10.0.0.1:9042" },
                                        { address = "10.0.0.2:9042" } },
                                      "0.0.0.0:9042"))
    end)

    it("hashes keys as Murmur3Partitioner does", function()
        -- cassandra.murmur3.murmur3 of the DataStax Python driver, which
        -- follows Cassandra's MurmurHash (its signed-byte tail included)
        assert.equal("-8839064797231613815", token("a"))
        assert.equal("-5434086359492102041", token("abc"))
        assert.equal("3220105459530905645", token("\255\254\253\128\129"))
        assert.equal("5467490433528156583", token("0123456789abcdef"))
        assert.equal("-6691489712879347859", token("0123456789abcdef\255"))
        assert.equal("-4333528773682802501", token(("\200x"):rep(20)))
        -- composite keys: each part's length, bytes and a zero
        assert.equal("\0\1a\0\0\2bc\0", ring.routing_key({ "a", "bc" }, 2))
        assert.equal("abc", ring.routing_key({ "abc" }, 1))
    end)

    it("answers a dry run without a ring", function()
        local t = testing.build({ { "cassandra", contact_points = { "h:1" } } },
                                "cassandra")
        assert.is_not_nil(t)
    end)
end)
