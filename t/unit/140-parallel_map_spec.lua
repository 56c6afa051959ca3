-- parallel_map: a batch is cut into consecutive chunks, one per copy of the
-- sub-chain, replies put back in request order; the first copy rotates per
-- connection; a Redis client that pinned state stays on copy 1.
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

local function check(elements, protocol)
    return config.check({ sources = { {
        name = "p", protocol = protocol or "redis", listen = "127.0.0.1:1",
        chain = elements } } })
end

local function batch_of(n, cmd)
    local b = message.new_batch(0)
    for i = 1, n do
        b:push(assert(message.command({ cmd or "GET", "k" .. i })))
    end
    return b
end

-- each copy answers "<copy>:<key>"; copies are told apart by their chain name
local seen
local function build(n)
    seen = {}
    local conf = assert(check({ { "parallel_map", parallelism = n, chain = {
        function(batch, c)
            local r = message.new_batch(batch.n)
            local copy = c.chain.name:match("copy(%d+)$")
            for i = 1, batch.n do
                seen[#seen + 1] = copy .. ":" .. batch[i]:key()
                r:set(i, reply.bulk(copy .. ":" .. batch[i]:key()))
            end
            return r
        end } } }))
    return chain.build(conf.sources[1].chain, { name = "p", protocol = "redis" })
end

local function bulks(resp)
    local t = {}
    for i = 1, resp.n do
        t[i] = resp[i]:raw():match("\r\n(.-)\r\n")
    end
    return t
end

describe("parallel_map", function()
    it("cuts a batch into one chunk per copy, replies in request order",
       function()
        local ch = build(3)
        local resp = ch:run(ch:context(nil), batch_of(7))
        assert.same({ "1:k1", "1:k2", "1:k3", "2:k4", "2:k5", "2:k6", "3:k7" },
                    bulks(resp))
    end)

    it("turns the first copy per batch, so one-request batches spread",
       function()
        local ch = build(3)
        local ctx = ch:context(nil)
        local got = {}
        for _ = 1, 4 do
            got[#got + 1] = bulks(ch:run(ctx, batch_of(1)))[1]
        end
        assert.same({ "1:k1", "2:k1", "3:k1", "1:k1" }, got)
    end)

    it("keeps a client that pinned state (MULTI) on copy 1", function()
        local ch = build(3)
        local ctx = ch:context(nil)
        ch:run(ctx, batch_of(1))                       -- copy 1
        ch:run(ctx, batch_of(1, "MULTI"))              -- pins: copy 1
        local resp = ch:run(ctx, batch_of(6))
        assert.same({ "1:k1", "1:k2", "1:k3", "1:k4", "1:k5", "1:k6" },
                    bulks(resp))
    end)

    it("refuses unordered replies for Redis, and checks its copy chain",
       function()
        local _, errs = check({ { "parallel_map", ordered = false,
                                  chain = { { "null" } } } })
        assert.matches("ordered = false needs a cassandra source", errs[1])
        assert.truthy(check({ { "parallel_map", ordered = false,
                                chain = { { "null" } } } }, "cassandra"))
        _, errs = check({ { "parallel_map", chain = { { "tee",
            chain = { { "null" } } } } } })
        assert.matches("sources%[1%]%.chain%[1%]%.chain%[1%]: the chain must end",
                       errs[1])
        _, errs = check({ { "parallel_map", parallelism = 0,
                            chain = { { "null" } } } })
        assert.matches("parallelism: must be at least 1", errs[1])
    end)
end)
