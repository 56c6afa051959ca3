-- shotover route-test and the chain trace it stands on: dry sinks, the
-- path a request takes, TAP output and the failure count behind the exit
-- code.
local config = require "shotover.config"
local common = require "shotover.cli.common"
local route_test = require "shotover.cli.route_test"
local trace = require "shotover.trace"

local function sources(chain, protocol)
    local conf = assert(config.check({ sources = { {
        name = "src", protocol = protocol or "redis",
        listen = "127.0.0.1:1", chain = chain } } }))
    return common.build_dry(conf)
end

local function redis_sources()
    return sources({
        { "query_type_filter", deny = { "other" } },
        { "router",
          routes = { { match = { key_prefix = "user:" },
                       chain = { { "redis", name = "cache",
                                   remote = "127.0.0.1:1" } } } },
          default = {
              { function(batch, chain)
                  batch[1]:set_arg(2, "ns:" .. batch[1]:arg(2))
                  return chain:next(batch)
              end, name = "prefix" },
              { "redis", name = "main", remote = "127.0.0.1:1" } } },
    })
end

local function run(file, srcs)
    local lines = {}
    local failed = route_test.run_cases(file, srcs, function(l)
        lines[#lines + 1] = l
    end)
    return failed, table.concat(lines, "\n")
end

describe("a traced chain", function()
    it("records each element, its sub-chain and what it did", function()
        local s = redis_sources()
        local f = assert(common.request("redis", "GET user:1"))
        local reply, tr = common.run(s[1], f)
        assert.equal("+DRY", trace.show(reply))
        assert.equal(3, #tr)
        assert.same({ "src", "query_type_filter", 0, "forwarded" },
                    { tr[1].chain, tr[1].element, tr[1].depth, tr[1].result })
        assert.same({ "src", "router", 1, "forwarded" },
                    { tr[2].chain, tr[2].element, tr[2].depth, tr[2].result })
        assert.same({ "src/route1", "cache", 2, "answered", true, true },
                    { tr[3].chain, tr[3].element, tr[3].depth, tr[3].result,
                      tr[3].terminal, tr[3].dry })
        assert.same({ '["GET", "user:1"]' }, tr[3].requests)
    end)

    it("shows what a transform changed before the sink got it", function()
        local s = redis_sources()
        local _, tr = common.run(s[1], assert(common.request("redis",
                                                             "GET k")))
        assert.same({ '["GET", "ns:k"]' }, tr[#tr].requests)
        assert.matches('got %["GET", "ns:k"%]', trace.format(tr))
    end)

    it("records a raising element as an error, and the chain still answers",
       function()
        local s = sources({ { function() error("boom") end, name = "bad" },
                            { "null" } })
        local reply, tr = common.run(s[1], assert(common.request("redis",
                                                                 "PING")))
        assert.equal("error", tr[1].result)
        assert.matches("boom", tr[1].error)
        assert.is_true(common.is_error(reply))
        local sum = trace.summary(tr, true)
        assert.equal("bad", sum.failed.element)
    end)

    it("survives serialisation (the repl's live mode)", function()
        local s = redis_sources()
        local _, tr = common.run(s[1], assert(common.request("redis",
            { "SET", "user:\n\"x\"", "v" })))
        local back = assert(trace.deserialize(trace.serialize(tr)))
        assert.equal(trace.format(tr), trace.format(back))
    end)
end)

describe("route-test cases", function()
    it("pass when the path matches, with TAP and no failure", function()
        local failed, out = run({ cases = {
            { "GET user:1", route = "route1", sink = "cache",
              path = { "query_type_filter", "router", "cache" } },
            { "GET k", route = "default", sink = "main", sent = "GET ns:k",
              reply = "+DRY", filtered = false, error = false },
            { "DEBUG SLEEP 0", filtered = true, sink = false,
              answered_by = "query_type_filter", error = "not allowed" },
        } }, redis_sources())
        assert.equal(0, failed)
        assert.equal("1..3\nok 1 - GET user:1\nok 2 - GET k\n"
                     .. "ok 3 - DEBUG SLEEP 0", out)
    end)

    it("fail with expected and got for every key that differs", function()
        local failed, out = run({ cases = {
            { "GET user:1", sink = "cache" },
            { "SET user:2 x", name = "sets go to main", sink = "main",
              route = "default" },
            { "DEBUG SLEEP 0", sink = "main" },
            { "GET k", sent = "GET k" },
        } }, redis_sources())
        assert.equal(3, failed)
        assert.matches("ok 1 - GET user:1\n", out, 1, true)
        assert.matches('not ok 2 - sets go to main\n# route: expected '
                       .. '"default", got "src/route1"\n# sink: expected '
                       .. '"main", got "cache"\n# reached sink "cache" in '
                       .. 'chain src/route1, reply +DRY\n', out, 1, true)
        assert.matches('not ok 3 - DEBUG SLEEP 0\n# sink: expected "main", '
                       .. 'got "no sink"\n# filtered by "query_type_filter"',
                       out, 1, true)
        assert.matches('not ok 4 - GET k\n# sent: expected "[\\"GET\\", '
                       .. '\\"k\\"]", got "[\\"GET\\", \\"ns:k\\"]"', out, 1,
                       true)
        assert.matches("# 3 of 4 cases failed$", out)
    end)

    it("route CQL statements with values by keyspace, after a dry USE",
       function()
        local s = sources({ { "router",
            routes = { { match = { keyspace = "hot" },
                         chain = { { "cassandra", name = "hot_node",
                                     remote = "127.0.0.1:1" } } } },
            default = { { "cassandra", name = "main_node",
                          remote = "127.0.0.1:1" } } } }, "cassandra")
        local failed, out = run({ cases = {
            { cql = "SELECT * FROM hot.t WHERE id = ?", values = { 1 },
              sink = "hot_node", reply = "RESULT Void",
              sent = "SELECT * FROM hot.t WHERE id = ?" },
            { "SELECT * FROM t", sink = "main_node" },
            { "USE hot", reply = "RESULT Set_keyspace hot" },
            { "SELECT * FROM t", sink = "hot_node" },
        } }, s)
        assert.equal(0, failed, out)
    end)
end)

describe("the Redis command splitter", function()
    it("takes quotes and escapes as redis-cli does", function()
        assert.same({ "SET", "a b", "c\nd", "it's" },
                    common.split([[SET "a b" "c\nd" 'it\'s']]))
        assert.same({ "X", "\1" }, common.split([[X "\x01"]]))
        assert.is_nil(common.split([[SET "a]]))
    end)
end)
