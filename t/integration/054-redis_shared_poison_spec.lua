-- Commands whose replies do not pair one-to-one with requests must never
-- reach a shared pipelined connection: there an extra reply (UNSUBSCRIBE
-- a b answers once per channel) or a missing one (REPLCONF ACK answers
-- nothing) would shift every later reply to the wrong client.  They run on
-- the client's own connection and stream, as SUBSCRIBE does.
local h = require("harness")

describe("a client's command with an odd number of replies", function()
    local env
    setup(function()
        env = h.start_pair({ workers = 1, sink = "connections = 1," })
    end)
    teardown(h.cleanup)

    local function others_get_their_own()
        local other = h.connect(env.port)
        for i = 1, 20 do
            assert.same(h.status("OK"), other:cmd("SET", "sp:" .. i, "v" .. i))
        end
        for i = 1, 20 do
            assert.equal("v" .. i, other:cmd("GET", "sp:" .. i))
        end
        other:close()
    end

    it("UNSUBSCRIBE of two channels: its client gets both replies, others "
       .. "only theirs", function()
        local c = h.connect(env.port)
        assert(c:send(h.resp_command("UNSUBSCRIBE", "ch1", "ch2")))
        local r = c:read_replies(2, 5)
        assert.same({ "unsubscribe", "ch1", 0 }, r[1])
        assert.same({ "unsubscribe", "ch2", 0 }, r[2])
        others_get_their_own()
        assert.same({ "punsubscribe", "p1", 0 },
                    c:cmd("PUNSUBSCRIBE", "p1"))
        others_get_their_own()
    end)

    it("REPLCONF ACK (no reply at all) leaves others' replies where they "
       .. "belong", function()
        local c = h.connect(env.port)
        assert(c:send(h.resp_command("REPLCONF", "ACK", "0")))
        others_get_their_own()
        -- as from redis-server: nothing for the ACK, a reply for the next
        assert.same(h.status("PONG"), c:cmd("PING"))
        others_get_their_own()
    end)
end)
