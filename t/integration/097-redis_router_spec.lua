-- router in front of two real redis-servers: each key lands on the backend
-- its route names, and a mixed pipeline's replies come back in order.
local h = require("harness")

describe("router in front of two redis servers", function()
    local A, B, P

    setup(function()
        A, B = h.redis_server(), h.redis_server()
        P = h.free_port()
        h.shotover({ config = string.format([[
return { workers = 1, sources = { { name = "r", protocol = "redis",
  listen = "127.0.0.1:%d", chain = { { "router",
    routes = { { match = { key_prefix = "hot:" },
                 chain = { { "redis", remote = "127.0.0.1:%d" } } } },
    default = { { "redis", remote = "127.0.0.1:%d" } } } } } } }
]], P, B.port, A.port), port = P })
    end)
    teardown(h.cleanup)

    it("puts each key on the backend of its route", function()
        assert.equal("OK", h.cli(P, "set", "hot:1", "b"))
        assert.equal("OK", h.cli(P, "set", "cold:1", "a"))
        assert.equal("b", h.cli(B.port, "get", "hot:1"))
        assert.equal("", h.cli(A.port, "get", "hot:1"))
        assert.equal("a", h.cli(A.port, "get", "cold:1"))
        assert.equal("", h.cli(B.port, "get", "cold:1"))
    end)

    it("answers a pipeline that spans both routes in request order", function()
        local c = h.connect(P)
        local reqs = {}
        for i = 1, 50 do
            reqs[#reqs + 1] = h.resp_command("SET", (i % 2 == 0 and "hot:" or "cold:")
                                             .. i, "v" .. i)
            reqs[#reqs + 1] = h.resp_command("GET", (i % 2 == 0 and "hot:" or "cold:")
                                             .. i)
        end
        assert.is_true(c:send(table.concat(reqs)))
        local replies = c:read_replies(100, 10)
        for i = 1, 50 do
            assert.same(h.status("OK"), replies[2 * i - 1])
            assert.equal("v" .. i, replies[2 * i])
        end
    end)
end)
