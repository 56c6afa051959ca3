-- null: a sink that answers every request with a null reply and sends
-- nothing anywhere.  For measuring the proxy's own cost and for tests.
local message = require "shotover.message"
local reply = require "shotover.redis.reply"

local constant_batch = message.constant_batch

local _M = { name = "null", version = "0.1.0", terminal = true, schema = {} }

local mt = { __index = {} }

function _M.check_config(conf, ctx)
    if ctx and ctx.protocol == "cassandra" then
        return nil, "null answers in Redis replies only, for now; it cannot "
                    .. "serve a cassandra source"
    end
    return true
end

function _M.new(conf)
    -- one shared reply, referenced by every response slot
    return setmetatable({ null = reply.null() }, mt)
end

function mt.__index.transform(self, batch)
    return constant_batch(batch.n, self.null)
end

return _M
