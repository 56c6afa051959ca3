-- Capabilities: what a transform module declares it may do, read in one
-- place (config.capabilities) by validation and by chain.build.
local config = require "shotover.config"
local chain = require "shotover.chain"

-- a transform module shotover.transforms.NAME made of fields
local function module_of(name, fields)
    local mod = { name = name, new = function() return {} end }
    for k, v in pairs(fields) do
        mod[k] = v
    end
    package.loaded["shotover.transforms." .. name] = mod
    return mod
end

local function check(elements, protocol)
    return config.check({ sources = { { name = "s",
        protocol = protocol or "redis", listen = "127.0.0.1:1",
        chain = elements } } })
end

describe("capabilities", function()
    it("fills every key in, false unless declared", function()
        local caps = assert(config.capabilities(module_of("caps_none", {})))
        assert.are.same({ sink = false, lanes = false, holds_batches = false,
                          subchains = false }, caps)
        caps = assert(config.capabilities(module_of("caps_sink",
            { capabilities = { sink = true, lanes = true } })))
        assert.is_true(caps.sink)
        assert.is_true(caps.lanes)
        assert.is_false(caps.holds_batches)
    end)

    it("treats inline functions as passing on and allowing lanes",
       function()
        assert.are.same({ sink = false, lanes = true, holds_batches = false,
                          subchains = false },
                        config.capabilities(function() end))
    end)

    it("refuses a declaration it cannot trust, with the module's name",
       function()
        local cases = {
            { { capabilities = { sink = true, terminal = true } },
              "capabilities.terminal: unknown capability" },
            { { capabilities = { lanes = "yes" } },
              "capabilities.lanes: expected a boolean" },
            { { capabilities = true }, "capabilities: expected a table" },
            { { terminal = true }, "terminal: declare it in capabilities" },
            { { lanes = true }, "lanes: declare it in capabilities" },
            { { capabilities = { subchains = true } },
              "capabilities.subchains: needs a subchains(conf) function" },
            { { subchains = function() return {} end },
              "subchains(conf): declare capabilities.subchains = true" },
            { { capabilities = { holds_batches = true, lanes = true } },
              "capabilities: holds_batches needs one batch at a time" },
        }
        for i, case in ipairs(cases) do
            local name = "caps_bad" .. i
            module_of(name, case[1])
            local ok, errs = check({ { name }, { "null" } })
            assert.is_nil(ok)
            assert.matches("sources[1].chain[1]: module "
                           .. "shotover.transforms." .. name .. ": "
                           .. case[2], errs[1], 1, true)
        end
    end)

    it("makes a sink end its chain, and only a sink", function()
        module_of("caps_pass", { capabilities = { lanes = true } })
        local ok, errs = check({ { "null" }, { "caps_pass" } })
        assert.is_nil(ok)
        assert.are.same({
            'sources[1].chain[1]: "null" is a sink and must be the last '
            .. "element of its chain",
            'sources[1].chain[2]: the chain must end in a sink '
            .. '("caps_pass" passes requests on)' }, errs)
    end)

    it("gives a built chain parks and lanes from declarations, sub-chains "
       .. "included", function()
        local function build(elements, protocol)
            local conf = assert(check(elements, protocol))
            return chain.build(conf.sources[1].chain, { name = "t",
                protocol = protocol or "redis" })
        end
        local sink = { "null" }
        local plain = build({ { "query_counter" }, sink })
        assert.is_false(plain.parks)
        assert.is_true(plain.lanes)
        local coalesced = build({ { "coalesce", max_requests = 2 }, sink })
        assert.is_true(coalesced.parks)
        assert.is_false(coalesced.lanes)
        local routed = build({ { "router", routes = { { match = {
            command = "GET" }, chain = { { "coalesce", max_requests = 2 },
            sink } } }, default = { sink } } })
        assert.is_true(routed.parks)
        assert.is_false(routed.lanes)
        local teed = build({ { "tee", chain = { sink } }, sink })
        assert.is_false(teed.parks)
        assert.is_false(teed.lanes)
        local inline = build({ function(b, c) return c:next(b) end, sink })
        assert.is_false(inline.parks)
        assert.is_true(inline.lanes)
    end)
end)
