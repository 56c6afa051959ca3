-- null: a sink that sends nothing anywhere.  Each protocol answers with its
-- "nothing" (fixed_reply("null") in shotover.protocols.*): Redis requests
-- get a null reply; CQL requests get a RESULT Void (with the handshake
-- accepted, so a client can connect).  For measuring the proxy's own cost
-- and for tests.
local message = require "shotover.message"
local protocols = require "shotover.protocols"

local constant_batch = message.constant_batch
local new_batch = message.new_batch
local by_id = protocols.by_id

local _M = { name = "null", version = "0.1.0", schema = {},
             capabilities = { sink = true, lanes = true } }

local mt = { __index = {} }

-- the protocol's null reply: make(req), and the one frame every slot
-- shares when it does not depend on the request
local function maker(self, proto)
    local m = self.makers[proto]
    if m == nil then
        local make, shared = proto.fixed_reply("null")
        m = { make = make, shared = shared }
        self.makers[proto] = m
    end
    return m.make, m.shared
end

function _M.new(conf, env)                        -- luacheck: no unused
    local self = setmetatable({ makers = {} }, mt)
    local proto = protocols.of_env(env)
    if proto then
        maker(self, proto)              -- made once, at start
    end
    return self
end

function mt.__index.transform(self, batch)
    local n = batch.n
    if n == 0 then
        return new_batch(0)
    end
    local make, shared = maker(self, by_id(batch[1].proto))
    if shared then
        return constant_batch(n, shared)
    end
    local resp = new_batch(n)
    for i = 1, n do
        resp:set(i, make(batch[i]))
    end
    return resp
end

return _M
