-- Config validation: every problem at once, each with its path.
local config = require "shotover.config"

local function errors_of(conf)
    local ok, errs = config.check(conf)
    assert.is_nil(ok)
    return errs
end

local function redis_source(chain, extra)
    local s = { name = "redis", protocol = "redis",
                listen = "127.0.0.1:16379", chain = chain }
    for k, v in pairs(extra or {}) do
        s[k] = v
    end
    return s
end

describe("config validation", function()
    it("accepts the documented minimal config and fills in defaults", function()
        local conf = assert(config.check({
            workers = 1,
            sources = { redis_source({ { "redis", remote = "127.0.0.1:16380" } }) },
        }))
        local sink = conf.sources[1].chain[1]
        assert.are.equal(1000, sink.connect_timeout_ms)
        assert.are.equal(5000, sink.request_timeout_ms)
        assert.are.equal(1, sink.connections)
        assert.are.equal(512 * 1024 * 1024, conf.sources[1].max_bulk_len)
    end)

    it("reports a wrong remote with its full path and the bad value", function()
        local errs = errors_of({ sources = {
            redis_source({ { "redis", remote = 6380 } }) } })
        assert.are.same(
            { 'sources[1].chain[1].remote: expected "host:port", got 6380' },
            errs)
    end)

    it("reports every problem at once, not only the first", function()
        local errs = errors_of({
            workers = 0,
            surces = {},
            sources = {
                redis_source({ { "redis", remote = "nohost" }, { "null" } }),
                { name = "redis", protocol = "memcached", listen = "x",
                  chain = { { "no_such_transform" } } },
            },
        })
        local text = table.concat(errs, "\n")
        assert.matches('workers: expected a number of workers', text, 1, true)
        assert.matches("surces: unknown key", text, 1, true)
        assert.matches('sources[1].chain[1].remote: expected "host:port", '
                       .. 'got "nohost"', text, 1, true)
        assert.matches('sources[1].chain[1]: "redis" is a sink and must be '
                       .. 'the last element', text, 1, true)
        assert.matches('sources[2].protocol: expected "redis" or '
                       .. '"cassandra", got "memcached"', text, 1, true)
        assert.matches('sources[2].listen: expected "host:port", got "x"',
                       text, 1, true)
        assert.matches('sources[2].name: "redis" is already the name of '
                       .. 'sources[1]', text, 1, true)
        assert.matches('sources[2].chain[1]: unknown transform '
                       .. '"no_such_transform" (no module '
                       .. 'shotover.transforms.no_such_transform)', text, 1,
                       true)
        assert.is_true(#errs >= 8)
    end)

    it("never shows a secret's value in an error, only its path", function()
        local errs = errors_of({ admin = { token = "short-tok-9f1" },
            sources = { redis_source({ { "redis", remote = "127.0.0.1:1",
                                         password = 987654321 } }),
                        redis_source({ { "redis", remote = "127.0.0.1:1",
                                         password = ("pw-long-"):rep(40) } },
                                     { name = "r2", listen = "127.0.0.1:2" }) } })
        local text = table.concat(errs, "\n")
        assert.matches("sources[1].chain[1].password: expected a string, got "
                       .. "a number", text, 1, true)
        assert.matches("sources[2].chain[1].password: at most 255 bytes",
                       text, 1, true)
        assert.matches("admin.token: a bearer token is 16 to 1024 characters",
                       text, 1, true)
        for _, secret in ipairs({ "987654321", "pw-long-", "short-tok-9f1" }) do
            assert.is_nil(text:find(secret, 1, true), secret)
        end
    end)

    it("refuses sources whose listen addresses overlap, a wildcard included", function()
        local null = { { "null" } }
        local errs = errors_of({ sources = {
            redis_source(null, { name = "a", listen = "0.0.0.0:7000" }),
            redis_source(null, { name = "b", listen = "127.0.0.1:7000" }),
            redis_source(null, { name = "c", listen = "127.0.0.1:7001" }),
            redis_source(null, { name = "d", listen = "127.0.0.1:7001" }),
            redis_source(null, { name = "e", listen = "127.0.0.2:7001" }),
            redis_source(null, { name = "f", listen = "[::]:7002" }),
            redis_source(null, { name = "g", listen = "127.0.0.1:7002" }),
        } })
        local text = table.concat(errs, "\n")
        assert.matches("sources[2].listen: 127.0.0.1:7000 overlaps "
                       .. "sources[1].listen 0.0.0.0:7000 (the same port, and "
                       .. "a wildcard address is every address)", text, 1, true)
        assert.matches("sources[4].listen: 127.0.0.1:7001 overlaps "
                       .. "sources[3].listen 127.0.0.1:7001 (the same address)",
                       text, 1, true)
        assert.matches("sources[7].listen: 127.0.0.1:7002 overlaps "
                       .. "sources[6].listen [::]:7002", text, 1, true)
        assert.is_nil(text:find("sources[5]", 1, true), text)
        assert.equal(3, #errs, text)
    end)

    it("rejects a chain that does not end in a sink", function()
        local errs = errors_of({ sources = {
            redis_source({ { "debug_printer" } }) } })
        assert.are.same({ 'sources[1].chain[1]: the chain must end in a sink '
                          .. '("debug_printer" passes requests on)' }, errs)
    end)

    it("rejects unknown and mistyped transform options", function()
        local errs = errors_of({ sources = { redis_source({
            { "redis", remote = "127.0.0.1:1", conect_timeout_ms = 5,
              request_timeout_ms = "soon" } }) } })
        assert.are.same({
            'sources[1].chain[1].request_timeout_ms: expected an integer, '
            .. 'got "soon"',
            "sources[1].chain[1].conect_timeout_ms: unknown key",
        }, errs)
    end)

    it("matches sinks to their source's protocol", function()
        local errs = errors_of({ sources = {
            redis_source({ { "cassandra", remote = "127.0.0.1:9042" } }),
            { name = "cql", protocol = "cassandra", listen = "127.0.0.1:19042",
              chain = { { "redis", remote = "127.0.0.1:6379" } } },
            { name = "cql2", protocol = "cassandra", listen = "127.0.0.1:19043",
              chain = { { "debug_returner", simple = "OK" } } },
        } })
        assert.are.same({
            'sources[1].chain[1]: transform "cassandra" does not support '
            .. 'protocol "redis"',
            'sources[2].chain[1]: transform "redis" does not support '
            .. 'protocol "cassandra"',
            "sources[3].chain[1]: for a cassandra source give error or null",
        }, errs)
        assert.truthy(config.check({ sources = { { name = "cql",
            protocol = "cassandra", listen = "127.0.0.1:19042",
            chain = { { "cassandra", remote = "127.0.0.1:9042" } } } } }))
    end)

    it("runs a transform's own check", function()
        local errs = errors_of({ sources = { redis_source({
            { "debug_returner", simple = "OK", integer = 1 } }) } })
        assert.are.same({ "sources[1].chain[1]: give exactly one of simple, "
                          .. "error, integer, bulk, null" }, errs)
    end)

    it("reports a transform check that raises as a problem of its element",
       function()
        package.loaded["shotover.transforms.raising_check"] = {
            new = function() return {} end,
            capabilities = { sink = true },
            check_config = function() error("oops", 0) end,
        }
        local errs = errors_of({ sources = { redis_source({
            { "raising_check" } }) } })
        package.loaded["shotover.transforms.raising_check"] = nil
        assert.are.same({ "sources[1].chain[1]: raising_check's check_config "
                          .. "raised an error: oops" }, errs)
    end)

    it("reports a transform's subchains() that raises", function()
        package.loaded["shotover.transforms.raising_subs"] = {
            new = function() return {} end,
            capabilities = { sink = true, subchains = true },
            subchains = function() error("no subs", 0) end,
        }
        local errs = errors_of({ sources = { redis_source({
            { "raising_subs" } }) } })
        package.loaded["shotover.transforms.raising_subs"] = nil
        assert.are.same({ "sources[1].chain[1]: raising_subs's subchains() "
                          .. "raised an error: no subs" }, errs)
    end)

    it("accepts inline functions, bare or in a table, anywhere", function()
        local f = function(batch, chain) return chain:next(batch) end
        assert.truthy(config.check({ sources = { redis_source({
            f, { f, name = "pass" }, { "null" } }) } }))
    end)

    it("needs at least one source and one chain element", function()
        assert.are.same({ "sources: at least one source is needed" },
                        errors_of({ sources = {} }))
        assert.are.same({ "sources[1].chain: a chain needs at least one "
                          .. "element" },
                        errors_of({ sources = { redis_source({}) } }))
    end)

    it("says which file failed to load and why", function()
        local path = os.tmpname()
        local f = io.open(path, "w")
        f:write("return {")
        f:close()
        local ok, errs = config.load(path)
        os.remove(path)
        assert.is_nil(ok)
        assert.matches("config: cannot load " .. path, errs[1], 1, true)
    end)

    it("gives cassandra sources lanes unless an element needs one batch at a time",
       function()
        local function cql(chain, extra)
            local src = redis_source(chain, extra)
            src.name, src.protocol = "cql", "cassandra"
            return src
        end
        local sink = { "cassandra", remote = "127.0.0.1:9042" }
        local function lanes_of(src)
            return assert(config.check({ sources = { src } })).sources[1].lanes
        end
        assert.are.equal(16, lanes_of(cql({ { "query_counter" }, sink })))
        assert.are.equal(4, lanes_of(cql({ sink }, { lanes = 4 })))
        assert.are.equal(1, lanes_of(redis_source({ { "redis", remote = "127.0.0.1:1" } })))
        -- tee and coalesce see a connection's batches in order: one at a
        -- time, also when they stand in a router's route
        local tee = { "tee", behavior = "ignore", chain = { sink } }
        assert.are.equal(1, lanes_of(cql({ tee, sink })))
        local routed = { "router", routes = { { match = { table = "t" },
            chain = { { "coalesce", max_requests = 2 }, sink } } },
            default = { sink } }
        assert.are.equal(1, lanes_of(cql({ routed })))
        assert.are.same({ 'sources[1].lanes: sources[1].chain[1].routes[1].chain[1] '
                          .. '(coalesce) sees a connection\'s batches one at a time; '
                          .. 'set lanes = 1 or leave it out' },
                        errors_of({ sources = { cql({ routed }, { lanes = 8 }) } }))
        assert.are.same({ 'sources[1].lanes: only cassandra sources run a connection\'s '
                          .. 'batches at once (a Redis client\'s replies keep its '
                          .. 'request order); got 2' },
                        errors_of({ sources = { redis_source(
                            { { "redis", remote = "127.0.0.1:1" } }, { lanes = 2 }) } }))
    end)

    it("gives check_file the worker count, 0 for auto", function()
        local path = os.tmpname()
        local f = io.open(path, "w")
        f:write('return { workers = "auto", sources = { { name = "r", '
                .. 'protocol = "redis", listen = "127.0.0.1:1", '
                .. 'chain = { { "null" } } } } }')
        f:close()
        assert.are.equal(0, config.check_file(path))
        os.remove(path)
    end)
    describe("resolves the hosts it names", function()
        -- getaddrinfo's reason (glibc: "Name or service not known")
        local REASON = '[^\n]+'
        local function remote_routed(remote)
            return redis_source({ { "router",
                routes = { { match = { key_prefix = "a" },
                             chain = { { "redis", remote = remote } } } },
                default = { { "redis", remote = "localhost:6380" } } } },
                { name = "r2", listen = "127.0.0.1:16380" })
        end

        it("not at all unless asked (a worker's load)", function()
            assert.truthy(config.check({ sources = {
                redis_source({ { "redis", remote = "nohost.invalid:6379" } },
                             { listen = "nohost.invalid:1" }) } }))
        end)

        it("every remote, in sub-chains too, for check", function()
            local ok, errs = config.check({ sources = {
                redis_source({ { "redis", remote = "nohost.invalid:6379" } }),
                remote_routed("other.invalid:1"),
            } }, { resolve = "all" })
            assert.is_nil(ok)
            assert.are.equal(2, #errs)
            local note = " %(`run` starts anyway: requests to it fail until "
                         .. "the name resolves%)$"
            assert.matches('^sources%[1%]%.chain%[1%]%.remote: cannot '
                           .. 'resolve "nohost%.invalid": ' .. REASON .. note,
                           errs[1])
            assert.matches('^sources%[2%]%.chain%[1%]%.routes%[1%]%.chain%[1%]'
                           .. '%.remote: cannot resolve "other%.invalid": '
                           .. REASON .. note, errs[2])
        end)

        it("the addresses to listen on, for run", function()
            local ok, errs = config.check({
                admin = { listen = "nohost.invalid:9001" },
                sources = { redis_source({ { "redis",
                                             remote = "nohost.invalid:1" } },
                                         { listen = "nohost.invalid:16379" }) },
            }, { resolve = "listen" })
            assert.is_nil(ok)
            assert.are.equal(2, #errs)
            assert.matches('^admin%.listen: cannot resolve "nohost%.invalid": '
                           .. REASON .. "$", errs[1])
            assert.matches('^sources%[1%]%.listen: cannot resolve '
                           .. '"nohost%.invalid": ' .. REASON .. "$", errs[2])
            assert.is_nil(errs[2]:find("run", 1, true))
        end)

        it("after every other problem, all in one list", function()
            local ok, errs = config.check({ sources = {
                redis_source({ { "redis", remote = "nohost.invalid:6379",
                                 conections = 2 } }) } }, { resolve = "all" })
            assert.is_nil(ok)
            assert.are.equal("sources[1].chain[1].conections: unknown key",
                             errs[1])
            assert.matches("^sources%[1%]%.chain%[1%]%.remote: cannot resolve",
                           errs[2])
        end)

        it("looks each name up once, and reports it at every path",
           function()
            local resolve = require "shotover.resolve"
            local real, calls = resolve.resolve, 0
            resolve.resolve = function(host)
                calls = calls + 1
                return nil, string.format("cannot resolve %q: test", host)
            end
            local ok, errs = config.check({ sources = {
                redis_source({ { "router",
                    routes = { { match = { key = "a" }, chain = {
                        { "redis", remote = "same.invalid:1" } } } },
                    default = { { "redis", remote = "same.invalid:2" } } } }),
            } }, { resolve = "all" })
            resolve.resolve = real
            assert.is_nil(ok)
            -- the listen address and the name both sinks share
            assert.are.equal(2, calls)
            assert.are.same({
                "sources[1].listen: cannot resolve \"127.0.0.1\": test",
                "sources[1].chain[1].routes[1].chain[1].remote: cannot "
                .. "resolve \"same.invalid\": test (`run` starts anyway: "
                .. "requests to it fail until the name resolves)",
                "sources[1].chain[1].default[1].remote: cannot resolve "
                .. "\"same.invalid\": test (`run` starts anyway: requests "
                .. "to it fail until the name resolves)",
            }, errs)
        end)

        it("passes names and numeric addresses that resolve", function()
            assert.truthy(config.check({
                admin = { listen = "[::1]:9001" },
                sources = { redis_source({ { "redis",
                                             remote = "localhost:6379" } }),
                            remote_routed("127.0.0.1:1") },
            }, { resolve = "all" }))
        end)
    end)
end)
