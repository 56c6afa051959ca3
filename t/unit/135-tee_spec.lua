-- tee: every request also goes through the sub-chain; replies compared as
-- configured; which side answers is a switch.  Run dry (no worker): the
-- sub-chains here answer with debug_returner or inline functions.
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local unit = require "unit"
local config = require "shotover.config"
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

local function check(elements)
    return config.check({ sources = { {
        name = "t", protocol = "redis", listen = "127.0.0.1:1",
        chain = elements } } })
end

local function build(elements)
    return unit.build(elements, "redis", "t")
end

local batch_of = unit.redis_batch

-- a sink that answers each GET with the key it was given, prefixed, and
-- records what it saw
local function echo(prefix, seen)
    return function(batch)
        local r = message.new_batch(batch.n)
        for i = 1, batch.n do
            seen[#seen + 1] = batch[i]:command() .. " " .. (batch[i]:key() or "")
            r:set(i, reply.bulk(prefix .. (batch[i]:key() or "")))
        end
        return r
    end
end

local function bulks(resp)
    local t = {}
    for i = 1, resp.n do
        t[i] = resp[i]:raw():match("\r\n(.-)\r\n") or resp[i]:raw()
    end
    return t
end

describe("tee", function()
    it("sends every request down both chains; the client gets the main "
       .. "replies", function()
        local main, copy = {}, {}
        local ch = build({ { "tee", chain = { { echo("t:", copy) } } },
                           { echo("m:", main) } })
        local resp = ch:run(ch:context(nil), batch_of({ "GET", "a" },
                                                        { "GET", "b" }))
        assert.same({ "m:a", "m:b" }, bulks(resp))
        assert.same({ "GET a", "GET b" }, main)
        assert.same({ "GET a", "GET b" }, copy)
    end)

    it("answers from the tee when its result_source switch says so",
       function()
        local ch = build({ { "tee", chain = { { echo("t:", {}) } } },
                           { echo("m:", {}) } })
        local tee = ch.elements[1].inst
        local ctx = ch:context(nil)
        assert.same({ "m:a" }, bulks(ch:run(ctx, batch_of({ "GET", "a" }))))
        tee.switch[0] = 1                   -- what PUT /switches/... does
        assert.same({ "t:a" }, bulks(ch:run(ctx, batch_of({ "GET", "a" }))))
        tee.switch[0] = 0
        local ch2 = build({ { "tee", name = "other", result_source = "tee",
                              chain = { { echo("t:", {}) } } },
                            { echo("m:", {}) } })
        assert.same({ "t:b" }, bulks(ch2:run(ch2:context(nil),
                                             batch_of({ "GET", "b" }))))
    end)

    it("fails only the requests whose replies differ with fail_on_mismatch",
       function()
        local ch = build({ { "tee", name = "strict",
                             behavior = "fail_on_mismatch",
                             chain = { function(batch)
                                 local r = message.new_batch(batch.n)
                                 for i = 1, batch.n do
                                     local k = batch[i]:key()
                                     r:set(i, reply.bulk(k == "b" and "x" or k))
                                 end
                                 return r
                             end } },
                           { echo("", {}) } })
        local resp = ch:run(ch:context(nil), batch_of({ "GET", "a" },
                                                        { "GET", "b" },
                                                        { "GET", "c" }))
        assert.equal("$1\r\na\r\n", resp[1]:raw())
        assert.equal('-ERR shotover: tee "strict": the replies differ (main '
                     .. '"b", tee "x")\r\n', resp[2]:raw())
        assert.equal("$1\r\nc\r\n", resp[3]:raw())
    end)

    it("sends only mismatching requests to the mismatch chain", function()
        local seen = {}
        local ch = build({ { "tee", behavior = "subchain_on_mismatch",
                             chain = { function(batch)
                                 local r = message.new_batch(batch.n)
                                 for i = 1, batch.n do
                                     local k = batch[i]:key()
                                     r:set(i, reply.bulk(k == "b" and "x" or k))
                                 end
                                 return r
                             end },
                             mismatch_chain = { { echo("", seen) } } },
                           { echo("", {}) } })
        local resp = ch:run(ch:context(nil), batch_of({ "GET", "a" },
                                                        { "GET", "b" }))
        assert.same({ "a", "b" }, bulks(resp))   -- the client is unaffected
        assert.same({ "GET b" }, seen)
    end)

    it("does not copy requests whose replies stream (SUBSCRIBE)", function()
        local copy = {}
        local ch = build({ { "tee", chain = { { echo("t:", copy) } } },
                           { echo("m:", {}) } })
        local resp = ch:run(ch:context(nil), batch_of({ "GET", "a" },
                                                        { "SUBSCRIBE", "ch" },
                                                        { "GET", "b" }))
        assert.same({ "m:a", "m:ch", "m:b" }, bulks(resp))
        assert.same({ "GET a", "GET b" }, copy)
    end)

    it("keeps the client's replies when the tee chain fails", function()
        local ch = build({ { "tee", chain = { function() error("boom") end } },
                           { echo("m:", {}) } })
        assert.same({ "m:a" }, bulks(ch:run(ch:context(nil),
                                            batch_of({ "GET", "a" }))))
    end)

    it("checks its config and its sub-chains with their paths", function()
        local _, errs = check({ { "tee", behavior = "subchain_on_mismatch",
                                  chain = { { "null" } } },
                                { "null" } })
        assert.matches('sources%[1%]%.chain%[1%]%.mismatch_chain: required',
                       errs[1])
        _, errs = check({ { "tee", behavior = "fail_on_mismatch",
                            wait = false, chain = { { "null" } } },
                          { "null" } })
        assert.matches("needs wait = true", errs[1])
        _, errs = check({ { "tee", chain = { { "nosuch" } } }, { "null" } })
        assert.matches('sources%[1%]%.chain%[1%]%.chain%[1%]: ', errs[1])
        _, errs = check({ { "tee", behavior = "loud", chain = { { "null" } } },
                          { "null" } })
        assert.matches('chain%[1%]%.behavior: expected one of', errs[1])
        _, errs = check({ { "tee", chain = { { "null" } } } })
        assert.matches("must end in a sink", errs[1])
        -- every problem, its sub-chain's too
        _, errs = check({ { "tee", behavior = "fail_on_mismatch", wait = false,
                            mismatch_chain = { { "null" } },
                            chain = { { "debug_printer" } } },
                          { "null" } })
        assert.are.same({
            'sources[1].chain[1].mismatch_chain: only used by behavior = '
            .. '"subchain_on_mismatch"',
            'sources[1].chain[1]: behavior = "fail_on_mismatch" needs wait = '
            .. 'true: an asynchronous tee compares after the client has its '
            .. 'reply',
            'sources[1].chain[1].chain[1]: the chain must end in a sink '
            .. '("debug_printer" passes requests on)',
        }, errs)
    end)
end)
