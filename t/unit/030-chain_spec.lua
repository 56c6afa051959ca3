-- The chain runner: order, responses, and what a raising element gets.
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

local function build(elements)
    return unit.build(elements, "redis", "test")
end

local batch_of = unit.redis_batch

describe("the chain runner", function()
    it("runs elements in config order and returns replies in reverse",
       function()
        local order = {}
        local ch = build({
            function(batch, c)
                order[#order + 1] = "a in"
                local r = c:next(batch)
                order[#order + 1] = "a out"
                return r
            end,
            function(batch, c)
                order[#order + 1] = "b in"
                local r = c:next(batch)
                order[#order + 1] = "b out"
                return r
            end,
            { "debug_returner", simple = "OK" },
        })
        local resp = ch:run(ch:context(nil), batch_of({ "PING" }))
        assert.are.same({ "a in", "b in", "b out", "a out" }, order)
        assert.are.equal("+OK\r\n", resp[1]:raw())
    end)

    it("gives one response per request, in request order", function()
        local ch = build({
            function(batch)
                local r = message.new_batch(#batch)
                for i = 1, #batch do
                    r:set(i, reply.bulk(batch[i]:key()))
                end
                return r
            end,
        })
        local resp = ch:run(ch:context(nil),
                            batch_of({ "GET", "k1" }, { "GET", "k2" },
                                     { "GET", "k3" }))
        assert.are.equal(3, #resp)
        for i = 1, 3 do
            assert.are.equal("k" .. i, resp[i]:raw():match("\r\n(.-)\r\n"))
        end
    end)

    it("lets a transform change a request before the sink sees it", function()
        local seen
        local ch = build({
            function(batch, c)
                batch[1]:set_arg(2, "prefixed:" .. batch[1]:arg(2))
                return c:next(batch)
            end,
            function(batch)
                seen = batch[1]:raw()
                local r = message.new_batch(1)
                r:set(1, reply.simple("OK"))
                return r
            end,
        })
        ch:run(ch:context(nil), batch_of({ "GET", "k" }))
        assert.are.equal("*2\r\n$3\r\nGET\r\n$10\r\nprefixed:k\r\n", seen)
    end)

    it("fails only the batch of a raising element, naming chain and element",
       function()
        local calls = 0
        local ch = build({
            { "debug_printer" },
            { function(batch, c)
                calls = calls + 1
                if calls == 1 then
                    error("boom")
                end
                return c:next(batch)
            end, name = "flaky" },
            { "debug_returner", simple = "OK" },
        })
        local ctx = ch:context(nil)
        local resp = ch:run(ctx, batch_of({ "GET", "a" }, { "GET", "b" }))
        assert.are.equal(2, #resp)
        for i = 1, 2 do
            assert.is_true(resp[i]:is_error())
            assert.matches('^%-ERR shotover: chain "test" element 2 %(flaky%) '
                           .. 'failed: .*boom', resp[i]:raw())
        end
        -- the same connection context carries on with the next batch
        resp = ch:run(ctx, batch_of({ "GET", "a" }))
        assert.are.equal("+OK\r\n", resp[1]:raw())
    end)

    it("answers with an error when an element returns nothing", function()
        local ch = build({ function() end })
        local resp = ch:run(ch:context(nil), batch_of({ "PING" }))
        assert.matches("returned no responses", resp[1]:raw(), 1, true)
    end)

    it("keeps per-connection state in chain.conn, apart per connection",
       function()
        local ch = build({
            function(batch, c)
                c.conn.n = (c.conn.n or 0) + 1
                local r = message.new_batch(#batch)
                r:set(1, reply.integer(c.conn.n))
                return r
            end,
        })
        local a, b = ch:context(nil), ch:context(nil)
        ch:run(a, batch_of({ "PING" }))
        local ra = ch:run(a, batch_of({ "PING" }))
        local rb = ch:run(b, batch_of({ "PING" }))
        assert.are.equal(":2\r\n", ra[1]:raw())
        assert.are.equal(":1\r\n", rb[1]:raw())
    end)
end)
