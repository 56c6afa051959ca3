-- null: a sink that sends nothing anywhere.  Redis requests get a null
-- reply; CQL requests get a RESULT Void (with the handshake accepted, so a
-- client can connect).  For measuring the proxy's own cost and for tests.
local message = require "shotover.message"
local reply = require "shotover.redis.reply"
local cql_reply = require "shotover.cql.reply"

local constant_batch = message.constant_batch
local new_batch = message.new_batch
local without_backend = cql_reply.without_backend
local void = cql_reply.void

local _M = { name = "null", version = "0.1.0", schema = {},
             capabilities = { sink = true, lanes = true } }

local mt = { __index = {} }

function _M.new(conf)
    -- one shared Redis reply, referenced by every response slot
    return setmetatable({ null = reply.null() }, mt)
end

function mt.__index.transform(self, batch)
    local n = batch.n
    if n > 0 and batch[1].proto == 2 then
        local resp = new_batch(n)
        for i = 1, n do
            resp:set(i, without_backend(batch[i], void))
        end
        return resp
    end
    return constant_batch(n, self.null)
end

return _M
