-- debug_returner: a sink that answers every request with one fixed reply,
-- configured by exactly one of simple, error, integer, bulk or null.  For a
-- cassandra source: error (an ERROR with error_code) or null (RESULT Void),
-- with the handshake accepted.
local message = require "shotover.message"
local reply = require "shotover.redis.reply"
local cql_reply = require "shotover.cql.reply"

local constant_batch = message.constant_batch
local new_batch = message.new_batch
local without_backend = cql_reply.without_backend

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

function _M.check_config(conf, ctx)
    if ctx and ctx.protocol == "cassandra"
       and (conf.simple or conf.integer or conf.bulk)
    then
        return nil, "for a cassandra source give error or null"
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
    local self = setmetatable({ reply = f }, mt)
    -- CQL replies carry the request's stream: made per request
    if conf.error then
        local code, msg = conf.error_code, conf.error
        self.cql = function(req) return cql_reply.error(req, code, msg) end
    else
        self.cql = cql_reply.void
    end
    return self
end

function mt.__index.transform(self, batch)
    local n = batch.n
    if n > 0 and batch[1].proto == 2 then
        local resp = new_batch(n)
        for i = 1, n do
            resp:set(i, without_backend(batch[i], self.cql))
        end
        return resp
    end
    return constant_batch(n, self.reply)
end

return _M
