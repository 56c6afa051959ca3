-- Helpers the unit specs share: a chain built from `elements` the way a
-- source's chain is (validated by config first), and a batch of Redis
-- commands.
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"

local M = {}

-- config.check's answer for a source of `protocol` (default redis) whose
-- chain is elements
function M.check(elements, protocol)
    return config.check({ sources = { {
        name = "s", protocol = protocol or "redis", listen = "127.0.0.1:1",
        chain = elements } } })
end

-- elements built as chain `name` (default "test") of a `protocol` source
function M.build(elements, protocol, name)
    local conf = assert(M.check(elements, protocol))
    return chain.build(conf.sources[1].chain,
                       { name = name or "test", protocol = protocol or "redis" })
end

-- a batch of Redis requests, one per command table ({ "GET", "k" }, ...)
function M.redis_batch(...)
    local b = message.new_batch(0)
    for _, cmd in ipairs({ ... }) do
        b:push(assert(message.command(cmd)))
    end
    return b
end

return M
