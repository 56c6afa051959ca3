-- query_counter: Redis requests are counted by command (any case; names
-- Redis does not have as "other"), once per series per batch, and passed on.
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local metrics = require "shotover.metrics"

describe("query_counter", function()
    local added, made = {}, {}
    local real_add, real_counter = metrics.add, metrics.counter
    local ch

    setup(function()
        -- record the series it makes and what it adds to them
        metrics.counter = function(name, help, labels)
            if name ~= "shotover_query_count_total" then
                -- the chain's own per-transform series stay real
                return real_counter(name, help, labels)
            end
            local m = { name = name, labels = labels }
            made[#made + 1] = m
            return m
        end
        metrics.add = function(m, k)
            added[#added + 1] = { m.labels.query, tonumber(k) }
        end
        package.loaded["shotover.transforms.query_counter"] = nil
        local conf = assert(config.check({ sources = { {
            name = "q", protocol = "redis", listen = "127.0.0.1:1",
            chain = { { "query_counter", name = "qc" },
                      { "debug_returner", simple = "OK" } } } } }))
        ch = chain.build(conf.sources[1].chain,
                         { name = "q", protocol = "redis" })
    end)

    teardown(function()
        metrics.add, metrics.counter = real_add, real_counter
        package.loaded["shotover.transforms.query_counter"] = nil
    end)

    local function batch_of(...)
        local b = message.new_batch(0)
        for _, cmd in ipairs({ ... }) do
            b:push(assert(message.command(cmd)))
        end
        return b
    end

    it("adds each Redis command's count once per batch, in first-seen order",
       function()
        local ctx = ch:context(nil)
        local resp = ch:run(ctx, batch_of({ "GET", "a" }, { "set", "a", "1" },
                                          { "get", "b" }, { "JSON.GET", "a" },
                                          { "GETX" }, { "Set", "b", "2" }))
        assert.are.equal(6, resp.n)
        assert.are.same({ { "GET", 2 }, { "SET", 2 }, { "other", 2 } }, added)
        for _, m in ipairs(made) do
            assert.are.equal("shotover_query_count_total", m.name)
            assert.are.equal("qc", m.labels.name)
        end
        assert.are.equal(3, #made)
    end)

    it("counts CQL messages by opcode or statement kind", function()
        added = {}
        local conf = assert(config.check({ sources = { {
            name = "c", protocol = "cassandra", listen = "127.0.0.1:1",
            chain = { { "query_counter", name = "cql" }, { "null" } } } } }))
        local cql = chain.build(conf.sources[1].chain,
                                { name = "c", protocol = "cassandra" })
        local b = message.new_batch(0)
        for stream = 1, 2 do    -- OPTIONS, v4, no body
            b:push(assert(message.frame_from_cql(
                "\4\0\0" .. string.char(stream) .. "\5\0\0\0\0")))
        end
        assert.are.equal(2, cql:run(cql:context(nil), b).n)
        assert.are.same({ { "OPTIONS", 2 } }, added)
    end)

    it("starts each batch from zero and reuses its series", function()
        added = {}
        ch:run(ch:context(nil), batch_of({ "PING" }, { "get", "a" }))
        ch:run(ch:context(nil), batch_of({ "get", "a" }))
        assert.are.same({ { "PING", 1 }, { "GET", 1 }, { "GET", 1 } }, added)
        assert.are.equal(5, #made)      -- PING's is the only new one here
    end)
end)
