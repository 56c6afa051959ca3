-- router: first matching route wins, the default catches the rest, replies
-- come back in request order; routes are validated like any chain.
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local config = require "shotover.config"

local function build(elements)
    return unit.build(elements, "redis", "r")
end

local batch_of = unit.redis_batch

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

    it("keeps rule order across patterns, prefixes, commands and keys",
       function()
        -- a pattern rule before a prefix rule that also matches its keys;
        -- a command set with a module's command (no id); exact keys, the
        -- empty one too
        local r = build({ { "router",
            routes = {
                { match = { key_pattern = "'user:' [0-9]+" },
                  chain = { { "debug_returner", bulk = "digits" } } },
                { match = { key_prefix = "user:" },
                  chain = { { "debug_returner", bulk = "users" } } },
                { match = { command = { "GET", "MY.FLUSHNOW" } },
                  chain = { { "debug_returner", bulk = "gets" } } },
                { match = { key = { "", "k" } },
                  chain = { { "debug_returner", bulk = "exact" } } },
            },
            default = { { "debug_returner", bulk = "default" } },
        } })
        local resp = r:run(r:context(nil), batch_of(
            { "GET", "user:7" }, { "GET", "user:x" }, { "GET", "b" },
            { "my.flushnow" }, { "SET", "k", "v" }, { "SET", "", "v" },
            { "SET", "kk", "v" }, { "PING" }))
        assert.are.same({ "digits", "users", "gets", "gets", "exact",
                          "exact", "default", "default" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3),
                          routed(resp, 4), routed(resp, 5), routed(resp, 6),
                          routed(resp, 7), routed(resp, 8) })
        -- three routes in one batch: replies in request order
        resp = r:run(r:context(nil), batch_of({ "SET", "k", "v" },
                                              { "GET", "b" }, { "DEL", "x" }))
        assert.are.same({ "exact", "gets", "default" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3) })
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
        assert.is_nil(ok)
        assert.are.same({ "sources[1].chain[1].routes[1].match.colour: unknown "
                          .. "rule (command, key, key_prefix, key_pattern, "
                          .. "kind, class, keyspace, table)" }, errs)
    end)

    it("lists every problem of its routes, not only the first", function()
        local ok, errs = config.check({ sources = { { name = "r",
            protocol = "redis", listen = "127.0.0.1:1", chain = { { "router",
                routes = {
                    { match = { key_pattern = "'a' [" },
                      chain = { { "null" } } },
                    { match = { colour = "red", key = 7 },
                      chain = { { "redis", remote = 1 } } },
                    { chain = { { "null" } }, weight = 2 },
                    { when = "yes", chain = "none" },
                    { match = { key = "k" }, when = function() end,
                      chain = { { "null" } } },
                },
                default = { { "debug_printer" } } } } } } })
        assert.is_nil(ok)
        local el = "sources[1].chain[1]."
        local bad = el .. "routes[1].match.key_pattern: bad LPeg re "
                    .. "pattern \"'a' [\": "
        assert.are.equal(bad, errs[1]:sub(1, #bad))
        assert.are.same({
            el .. "routes[2].match.colour: unknown rule (command, key, "
            .. "key_prefix, key_pattern, kind, class, keyspace, table)",
            el .. "routes[2].match.key: expected a string or a list of "
            .. "strings, got 7",
            el .. "routes[3]: give match = { ... } or when = "
            .. "function(msg, chain)",
            el .. "routes[3].weight: unknown key (match, when, chain)",
            el .. 'routes[4].chain: expected a chain { ... }, got "none"',
            el .. 'routes[4].when: expected a function, got "yes"',
            el .. "routes[5]: give match or when, not both",
            -- the route chains and the default are checked all the same
            'sources[1].chain[1].routes[2].chain[1].remote: expected '
            .. '"host:port", got 1',
            'sources[1].chain[1].default[1]: the chain must end in a sink '
            .. '("debug_printer" passes requests on)',
        }, { unpack(errs, 2) })
    end)

    it("refuses command names Redis lacks and rules of another protocol",
       function()
        local function errors(protocol, routes)
            local ok, errs = config.check({ sources = { { name = "s",
                protocol = protocol, listen = "127.0.0.1:1", chain = {
                    { "router", routes = routes,
                      default = { { "null" } } } } } } })
            assert.is_nil(ok)
            return errs
        end
        local null = { { "null" } }
        local el = "sources[1].chain[1]."
        assert.are.same({
            el .. 'routes[1].match.command: unknown Redis command "GTE" '
            .. '(did you mean "GET"?)',
            el .. 'routes[2].match.command[2]: unknown Redis command "hsett" '
            .. '(did you mean "HSET"?)',
            el .. 'routes[2].match.command[4]: unknown Redis command "xyzzyq"',
            el .. "routes[3].match.keyspace: a cassandra rule, and this "
            .. "router's requests are redis (its rules: command, key, "
            .. "key_prefix, key_pattern)",
        }, errors("redis", {
            { match = { command = "GTE" }, chain = null },
            -- any case; a module's command has a dot and no check
            { match = { command = { "get", "hsett", "JSON.GET", "xyzzyq" } },
              chain = null },
            { match = { keyspace = "ks", key = "k" }, chain = null },
        }))
        assert.are.same({
            el .. "routes[1].match.key_prefix: a redis rule, and this "
            .. "router's requests are cassandra (its rules: kind, class, "
            .. "keyspace, table)",
            el .. 'routes[2].match.class: unknown statement class "reed" '
            .. "(one of dcl, other, read, schema_change, use, write)",
            el .. 'routes[2].match.kind[1]: unknown statement kind "selct" '
            .. '(did you mean "select"?)',
        }, errors("cassandra", {
            { match = { key_prefix = "a", table = "t" }, chain = null },
            { match = { kind = { "selct", "insert" }, class = "reed" },
              chain = null },
        }))
        -- CQL rules with known kinds and classes pass
        assert.truthy(config.check({ sources = { { name = "s",
            protocol = "cassandra", listen = "127.0.0.1:1", chain = {
                { "router", routes = { { match = { kind = { "select",
                    "create_table" }, class = "read", keyspace = "ks" },
                                         chain = { { "null" } } } },
                  default = { { "null" } } } } } } }))
    end)

    it("matches commands in any case, also module commands (a dot)", function()
        local r = build({ { "router",
            routes = {
                { match = { command = { "json.get", "Get" } },
                  chain = { { "debug_returner", bulk = "named" } } },
            },
            default = { { "debug_returner", bulk = "default" } },
        } })
        local resp = r:run(r:context(nil), batch_of(
            { "JSON.GET", "a" }, { "json.Get", "a" }, { "gEt", "a" },
            { "JSON.SET", "a" }, { "GETX", "a" }, { "SET", "a", "b" },
            { "", "a" }))
        assert.are.same({ "named", "named", "named", "default", "default",
                          "default", "default" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3),
                          routed(resp, 4), routed(resp, 5), routed(resp, 6),
                          routed(resp, 7) })
    end)

    it("matches exact keys, any of several prefixes, and every rule of a route",
       function()
        local r = build({ { "router",
            routes = {
                { match = { command = "GET", key = { "a", "bb", "" } },
                  chain = { { "debug_returner", bulk = "keys" } } },
                { match = { key_prefix = { "s:", "cache:" },
                            key_pattern = "[a-z]+ ':' [0-9]+" },
                  chain = { { "debug_returner", bulk = "prefixed" } } },
                { match = { key_prefix = "" },
                  chain = { { "debug_returner", bulk = "any key" } } },
            },
            default = { { "debug_returner", bulk = "default" } },
        } })
        local resp = r:run(r:context(nil), batch_of(
            { "GET", "a" }, { "GET", "bb" }, { "GET", "" }, { "GET", "b" },
            { "SET", "a", "1" }, { "GET", "s:1" }, { "GET", "cache:22" },
            { "GET", "cache:x" }, { "GET", "c" }, { "PING" }))
        assert.are.same({ "keys", "keys", "keys", "any key", "any key",
                          "prefixed", "prefixed", "any key", "any key",
                          "default" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3),
                          routed(resp, 4), routed(resp, 5), routed(resp, 6),
                          routed(resp, 7), routed(resp, 8), routed(resp, 9),
                          routed(resp, 10) })
    end)

    it("tests a key pattern whole, whatever literal it opens with", function()
        local r = build({ { "router",
            routes = {
                { match = { key_pattern = { "'a' [0-9] / 'b' [0-9]",
                                            "'x'? 'y'", "'k' ('1' / '2')",
                                            "'q' 'r'*" } },
                  chain = { { "debug_returner", bulk = "pattern" } } },
            },
            default = { { "debug_returner", bulk = "default" } },
        } })
        local resp = r:run(r:context(nil), batch_of(
            { "GET", "a1" }, { "GET", "b2" }, { "GET", "y" }, { "GET", "xy" },
            { "GET", "k2" }, { "GET", "k3" }, { "GET", "qrr" }, { "GET", "a1x" },
            { "GET", "r" }))
        assert.are.same({ "pattern", "pattern", "pattern", "pattern",
                          "pattern", "default", "pattern", "default",
                          "default" },
                        { routed(resp, 1), routed(resp, 2), routed(resp, 3),
                          routed(resp, 4), routed(resp, 5), routed(resp, 6),
                          routed(resp, 7), routed(resp, 8), routed(resp, 9) })
    end)

    it("finds the literal a key pattern's keys must open with only when the "
       .. "pattern plainly has one", function()
        local lp = require("shotover.transforms.router").literal_prefix
        local cases = {
            { "'user:' [0-9]+", "user:" },
            { '  "user:" [0-9]+', "user:" },
            { "'a' ('b' / 'c')", "a" },
            { "'a' [/] .*", "a" },
            { "'a' '/' .*", "a" },
            { "'a' {[^/]*}", "a" },
            { "'a' []/] .*", "a" },
            { "'a' / 'b'", nil },
            { "'a' [0-9] / 'b'", nil },
            { "'a'? 'b'", nil },
            { "'a' * 'b'", nil },
            { "'a'+", nil },
            { "'a'^-1 'b'", nil },
            { "'a' -- comment\n* 'b'", nil },
            { "('a') 'b'", nil },
            { "[a-z]+", nil },
            { "'' 'b'", nil },
            { "&'a' .", nil },
        }
        for _, c in ipairs(cases) do
            assert.are.equal(c[2], lp(c[1]), c[1])
        end
    end)

    it("routes a batch that mixes routes with one trace of its loop", function()
        -- the matcher is straight-line code: no loop nested in the batch loop
        local r = build({ { "router",
            routes = {
                { match = { command = { "FLUSHALL", "KEYS" } },
                  chain = { { "debug_returner", bulk = "admin" } } },
                { match = { key_prefix = { "session:", "cache:" } },
                  chain = { { "debug_returner", bulk = "sessions" } } },
                { match = { key_pattern = "'user:' [0-9]+" },
                  chain = { { "debug_returner", bulk = "users" } } },
            },
            default = { { "debug_returner", bulk = "default" } },
        } })
        local src = r.elements[1].inst.source
        assert.is_nil(src:find("for ", 1, true))
        assert.is_nil(src:find("while ", 1, true))
        assert.is_nil(src:find("session", 1, true))  -- values stay out of it
    end)
end)
