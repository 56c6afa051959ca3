-- router: first matching route wins, the default catches the rest, replies
-- come back in request order; routes are validated like any chain.
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"

local function build(elements)
    local conf = assert(config.check({ sources = { {
        name = "r", protocol = "redis", listen = "127.0.0.1:1",
        chain = elements } } }))
    return chain.build(conf.sources[1].chain, { name = "r", protocol = "redis" })
end

local function batch_of(...)
    local b = message.new_batch(0)
    for _, cmd in ipairs({ ... }) do
        b:push(assert(message.command(cmd)))
    end
    return b
end

describe("the router", function()
    local ch = build({ { "router",
        routes = {
            { match = { key_prefix = "session:" },
              chain = { { "debug_returner", bulk = "sessions" } } },
            { match = { command = { "publish", "SUBSCRIBE" } },
              chain = { { "debug_returner", bulk = "pubsub" } } },
            { match = { key_pattern = "'user:' [0-9]+" },
              chain = { { "debug_returner", bulk = "users" } } },
            { when = function(m) return m:nargs() > 3 end,
              chain = { { "debug_returner", bulk = "long" } } },
        },
        default = { { "debug_returner", bulk = "default" } },
    } })

    local function routed(resp, i)
        return resp[i]:raw():match("\r\n(.-)\r\n")
    end

    it("sends each request to its first matching route, in order", function()
        local resp = ch:run(ch:context(nil), batch_of(
            { "GET", "session:1" }, { "PUBLISH", "c", "m" },
            { "GET", "user:42" }, { "GET", "user:x" },
            { "MSET", "a", "1", "b", "2" }, { "GET", "other" },
            { "SET", "session:9", "v" }))
        assert.are.same({ "sessions", "pubsub", "users", "default", "long",
                          "default", "sessions" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3),
                          routed(resp, 4), routed(resp, 5), routed(resp, 6),
                          routed(resp, 7) })
    end)

    it("hands a batch that routes one way to that chain whole", function()
        local resp = ch:run(ch:context(nil), batch_of({ "GET", "session:1" },
                                                      { "GET", "session:2" }))
        assert.are.equal("sessions", routed(resp, 2))
    end)

    it("checks its routes like any chain, with their paths", function()
        local ok, errs = config.check({ sources = { { name = "r",
            protocol = "redis", listen = "127.0.0.1:1", chain = { { "router",
                routes = { { match = { key_prefix = "a" },
                             chain = { { "redis", remote = 1 } } } },
                default = { { "debug_printer" } } } } } } })
        assert.is_nil(ok)
        assert.are.same({
            'sources[1].chain[1].routes[1].chain[1].remote: expected '
            .. '"host:port", got 1',
            'sources[1].chain[1].default[1]: the chain must end in a sink '
            .. '("debug_printer" passes requests on)',
        }, errs)
        ok, errs = config.check({ sources = { { name = "r", protocol = "redis",
            listen = "127.0.0.1:1", chain = { { "router",
                routes = { { match = { colour = "red" }, chain = { { "null" } } } },
                default = { { "null" } } } } } } })
        assert.are.same({ "sources[1].chain[1]: routes[1].match.colour: unknown "
                          .. "rule (command, key, key_prefix, key_pattern, "
                          .. "kind, class, keyspace, table)" }, errs)
    end)
end)
