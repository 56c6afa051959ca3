-- route-test and traces with a tee in front of a router: the path that
-- decides is the one whose reply the client gets, and the records of a
-- tee's copy, which runs interleaved with the main chain, keep their own
-- parents.
local base = require "shotover.ffi"
local config = require "shotover.config"
local common = require "shotover.cli.common"
local route_test = require "shotover.cli.route_test"
local trace = require "shotover.trace"

local function sources(name, result_source, copy)
    local conf = assert(config.check({ sources = { {
        name = "src", protocol = "redis", listen = "127.0.0.1:1", chain = {
            { "tee", name = name, result_source = result_source,
              chain = copy or { { "redis", name = "copy",
                                  remote = "127.0.0.1:1" } } },
            { "router",
              routes = { { match = { key_prefix = "user:" },
                           chain = { { "redis", name = "cache",
                                       remote = "127.0.0.1:1" } } } },
              default = { { "redis", name = "main",
                            remote = "127.0.0.1:1" } } } } } } }))
    return common.build_dry(conf)
end

local function run(file, srcs)
    local lines = {}
    local failed = route_test.run_cases(file, srcs, function(l)
        lines[#lines + 1] = l
    end, true)
    return failed, table.concat(lines, "\n")
end

-- common.run in a coroutine, resuming it whenever something in the chain
-- yields (as C resumes a connection once its backends answered)
local function run_resumed(src, f)
    local co = coroutine.create(common.run)
    local ok, a, b = coroutine.resume(co, src, f)
    while ok and coroutine.status(co) ~= "dead" do
        ok, a, b = coroutine.resume(co)
    end
    assert(ok, a)
    return a, b
end

local function find(tr, element)
    for _, rec in ipairs(tr) do
        if rec.element == element then
            return rec
        end
    end
end

describe("route-test with a tee in front of a router", function()
    it("reports the route the client's reply came from, not the copy's",
       function()
        local failed, out = run({ cases = {
            { "GET user:1", route = "route1", sink = "cache" },
            { "GET k", route = "default", sink = "main", reply = "+DRY" },
        } }, sources("tee_main", "main"))
        assert.equal(0, failed, out)
        assert.matches("src/tee[1] copy (redis, dry): answered +DRY "
                       .. "(not the client's reply)", out, 1, true)
        assert.matches("src/route1[1] cache (redis, dry): answered +DRY\n",
                       out .. "\n", 1, true)
    end)

    it("reports the tee's side when the tee's replies answer the client",
       function()
        local failed, out = run({ cases = {
            { "GET user:1", route = "tee", sink = "copy" },
        } }, sources("tee_tee", "tee"))
        assert.equal(0, failed, out)
        assert.matches("src/route1[1] cache (redis, dry): answered +DRY "
                       .. "(not the client's reply)", out, 1, true)
    end)
end)

describe("a trace of interleaved sub-chains", function()
    it("gives each record the parent that handed it the batch", function()
        -- the copy yields before its sink, as it would waiting for a
        -- backend: the main chain runs meanwhile
        local s = sources("tee_wait", "main", {
            { function(batch, chain)
                coroutine.yield(base.YIELD_SLEEP)
                return chain:next(batch)
            end, name = "slow" },
            { "redis", name = "copy", remote = "127.0.0.1:1" } })
        local reply, tr = run_resumed(s[1], assert(common.request("redis",
                                                                 "GET user:1")))
        assert.equal("+DRY", trace.show(reply))
        local tee, slow, copy = find(tr, "tee_wait"), find(tr, "slow"),
                                find(tr, "copy")
        local router, cache = find(tr, "router"), find(tr, "cache")
        assert.same({ 0, 1, 2, 1, 2 }, { tee.depth, slow.depth, copy.depth,
                                         router.depth, cache.depth })
        assert.equal(tee.seq, slow.parent)
        assert.equal(slow.seq, copy.parent)
        assert.equal(tee.seq, router.parent)
        assert.equal(router.seq, cache.parent)
        local sum = trace.summary(tr, false)
        assert.equal(cache, sum.answered)
        assert.equal("src/route1", sum.route)
    end)
end)
