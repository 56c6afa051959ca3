-- debug_returner: a sink that answers every request with one fixed reply,
-- configured by exactly one of simple, error, integer, bulk or null.  For a
-- cassandra source: error (an ERROR with error_code) or null (RESULT Void),
-- with the handshake accepted.
local message = require "shotover.message"
local cql_reply = require "shotover.cql.reply"
local protocols = require "shotover.protocols"

local constant_batch = message.constant_batch
local new_batch = message.new_batch
local by_id = protocols.by_id
local fmt = string.format

local KINDS = { "simple", "error", "integer", "bulk", "null" }

local _M = {
    name = "debug_returner",
    version = "0.1.0",
    capabilities = { sink = true, lanes = true },
    schema = {
        simple = { type = "string" },
        error = { type = "string" },
        integer = { type = "integer" },
        bulk = { type = "string" },
        null = { type = "boolean" },
        error_code = { type = "string", default = "SERVER_ERROR",
                       check = function(v)
                           return cql_reply.CODE[v] ~= nil,
                                  "unknown CQL error code " .. v
                       end },
    },
}

local mt = { __index = {} }

-- the configured kind and its value
local function kind_of(conf)
    for _, k in ipairs(KINDS) do
        local v = conf[k]
        if v ~= nil and v ~= false then
            return k, v
        end
    end
end

function _M.check_config(conf, ctx)
    local n = 0
    for _, k in ipairs(KINDS) do
        if conf[k] ~= nil and conf[k] ~= false then
            n = n + 1
        end
    end
    if n ~= 1 then
        return nil, "give exactly one of simple, error, integer, bulk, null"
    end
    local proto = ctx and ctx.protocol and protocols.find(ctx.protocol)
    if proto and not proto.REPLY_KINDS[kind_of(conf)] then
        local kinds = {}
        for _, k in ipairs(KINDS) do
            if proto.REPLY_KINDS[k] then
                kinds[#kinds + 1] = k
            end
        end
        return nil, fmt("for a %s source give %s", proto.name,
                        table.concat(kinds, " or "))
    end
    return true
end

-- The reply is made by the protocol of the chain (fixed_reply in
-- shotover.protocols.*): Redis answers every slot with one shared frame,
-- CQL per request (its stream id), with the handshake accepted.
local function maker(self, proto)
    local m = self.makers[proto]
    if m == nil then
        local conf = self.conf
        local k, v = kind_of(conf)
        local make, shared = proto.fixed_reply(k, v, conf.error_code)
        m = { make = assert(make, shared), shared = shared }
        self.makers[proto] = m
    end
    return m.make, m.shared
end

function _M.new(conf, env)
    local self = setmetatable({ conf = conf, makers = {} }, mt)
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
