-- parallel_map in front of a real redis-server: a pipeline is spread over
-- four copies of the sink (four backend connections) and comes back in
-- order; a transaction stays on one copy.
local h = require("harness")

describe("parallel_map in front of redis", function()
    local R, P

    setup(function()
        R = h.redis_server()
        P = h.free_port()
        h.shotover({ port = P, config = string.format([[
return { workers = 1, sources = { { name = "r", protocol = "redis",
  listen = "127.0.0.1:%d", chain = { { "parallel_map", parallelism = 4,
    chain = { { "redis", remote = "127.0.0.1:%d" } } } } } } }
]], P, R.port) })
    end)
    teardown(h.cleanup)

    it("answers a pipeline spread over four backend connections in order",
       function()
        local c = h.connect(P)
        local reqs = {}
        for i = 1, 400 do
            reqs[#reqs + 1] = h.resp_command("SET", "p:" .. i, "v" .. i)
            reqs[#reqs + 1] = h.resp_command("GET", "p:" .. i)
        end
        assert.is_true(c:send(table.concat(reqs)))
        local replies = c:read_replies(800, 20)
        for i = 1, 400 do
            assert.same(h.status("OK"), replies[2 * i - 1])
            assert.equal("v" .. i, replies[2 * i])
        end
        -- each copy's connection served part of it (its last command was
        -- one of ours)
        local n = 0
        for line in h.cli(R.port, "client", "list"):gmatch("[^\n]+") do
            if line:match(" cmd=get ") or line:match(" cmd=set ") then
                n = n + 1
            end
        end
        assert.equal(4, n)
    end)

    it("keeps a transaction on one copy", function()
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("MULTI"))
        for i = 1, 5 do
            assert.same(h.status("QUEUED"), c:cmd("INCR", "tx"))
        end
        assert.same({ 1, 2, 3, 4, 5 }, c:cmd("EXEC"))
    end)
end)
