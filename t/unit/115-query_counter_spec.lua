-- query_counter: Redis requests are counted by command (any case; names
-- Redis does not have as "other"), CQL requests by opcode or statement
-- kind, into shotover_query_count_total{name, query}, and passed on.  The
-- counts are read back from the metrics registry.
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local message = require "shotover.message"
local metrics = require "shotover.metrics"

-- the count of series {name = name, query = query} (0 when never counted)
local function count(name, query)
    return metrics.value(metrics.counter("shotover_query_count_total",
        "requests seen by a query_counter, by command or statement kind",
        { name = name, query = query }))
end

local function build(name, protocol, sink)
    return unit.build({ { "query_counter", name = name }, sink }, protocol,
                      "q")
end

local batch_of = unit.redis_batch

describe("query_counter", function()
    it("counts Redis requests by command, unknown ones as other", function()
        local ch = build("qc1", "redis", { "debug_returner", simple = "OK" })
        local resp = ch:run(ch:context(nil), batch_of(
            { "GET", "a" }, { "set", "a", "1" }, { "get", "b" },
            { "JSON.GET", "a" }, { "GETX" }, { "Set", "b", "2" }))
        assert.are.equal(6, resp.n)
        assert.are.equal("OK", resp[1]:line())
        assert.are.equal(2, count("qc1", "GET"))
        assert.are.equal(2, count("qc1", "SET"))
        assert.are.equal(2, count("qc1", "other"))
        assert.are.equal(0, count("qc1", "DEL"))
    end)

    it("adds up across batches, with a series made the first time",
       function()
        local ch = build("qc2", "redis", { "debug_returner", simple = "OK" })
        local ctx = ch:context(nil)
        ch:run(ctx, batch_of({ "PING" }, { "get", "a" }))
        assert.are.equal(1, count("qc2", "PING"))
        assert.are.equal(1, count("qc2", "GET"))
        for _ = 1, 50 do
            ch:run(ctx, batch_of({ "get", "a" }, { "get", "b" }))
        end
        ch:run(ch:context(nil), batch_of({ "DEL", "a" }, { "PING" }))
        assert.are.equal(2, count("qc2", "PING"))
        assert.are.equal(101, count("qc2", "GET"))
        assert.are.equal(1, count("qc2", "DEL"))
        -- another counter's name is another series
        assert.are.equal(0, count("qc1", "PING"))
    end)

    it("counts CQL messages by opcode or statement kind", function()
        local cql = build("cql", "cassandra", { "null" })
        local b = message.new_batch(0)
        for stream = 1, 2 do    -- OPTIONS, v4, no body
            b:push(assert(message.frame_from_cql(
                "\4\0\0" .. string.char(stream) .. "\5\0\0\0\0")))
        end
        assert.are.equal(2, cql:run(cql:context(nil), b).n)
        assert.are.equal(2, count("cql", "OPTIONS"))
    end)
end)
