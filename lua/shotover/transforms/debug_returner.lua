-- debug_returner: a sink that answers every request with one fixed reply,
-- configured by exactly one of simple, error, integer, bulk or null.
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

local constant_batch = message.constant_batch

local KINDS = { "simple", "error", "integer", "bulk", "null" }

local _M = {
    name = "debug_returner",
    version = "0.1.0",
    terminal = true,
    schema = {
        simple = { type = "string" },
        error = { type = "string" },
        integer = { type = "integer" },
        bulk = { type = "string" },
        null = { type = "boolean" },
    },
}

local mt = { __index = {} }

function _M.check_config(conf, ctx)
    if ctx and ctx.protocol == "cassandra" then
        return nil, "debug_returner answers in Redis replies only, for now; "
                    .. "it cannot serve a cassandra source"
    end
    local n = 0
    for _, k in ipairs(KINDS) do
        if conf[k] ~= nil and conf[k] ~= false then
            n = n + 1
        end
    end
    if n ~= 1 then
        return nil, "give exactly one of simple, error, integer, bulk, null"
    end
    return true
end

function _M.new(conf)
    local f
    for _, k in ipairs(KINDS) do
        local v = conf[k]
        if v ~= nil and v ~= false then
            f = k == "null" and reply.null() or reply[k](v)
        end
    end
    return setmetatable({ reply = f }, mt)
end

function mt.__index.transform(self, batch)
    return constant_batch(batch.n, self.reply)
end

return _M
