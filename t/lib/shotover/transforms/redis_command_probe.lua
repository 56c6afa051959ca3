-- redis_command_probe: a test sink for a Cassandra source whose backend is
-- Redis.  The text of each CQL QUERY is a Redis command ("GET k") sent
-- through its sub-chain of protocol "redis"; the reply, read as a Lua
-- value (shotover.redis.decode), comes back as a RESULT Rows of one text
-- cell ("string:v", "number:1", "error:ERR ...", "null").  The handshake
-- is answered here.  It shows what such a chain can and cannot send.
--   { "redis_command_probe", redis = { { "redis", remote = "..." } } }
local message = require "shotover.message"
local decode = require "shotover.redis.decode"
local cql_reply = require "shotover.cql.reply"
local C = require("shotover.ffi").C

local _M = {
    name = "redis_command_probe",
    version = "0.1.0",
    capabilities = { sink = true, lanes = true, subchains = true },
    protocols = { "cassandra" },
    schema = { redis = { type = "table", required = true } },
}

local mt = { __index = {} }

function _M.subchains(conf)
    return { { chain = conf.redis, path = ".redis", protocol = "redis" } }
end

function _M.new(conf, env)
    return setmetatable({
        redis = env.build_chain(conf.redis, "redis", "redis"),
    }, mt)
end

local function show(v)
    if v == decode.NULL then
        return "null"
    elseif decode.is_error(v) then
        return "error:" .. v.message
    end
    return type(v) .. ":" .. tostring(v)
end

function mt.__index.transform(self, batch, chain)
    local resp = message.new_batch(batch.n)
    for i = 1, batch.n do
        local req = batch[i]
        resp:set(i, cql_reply.without_backend(req, function(q)
            local args = {}
            local text = q.rtype == C.SH_CQL_QUERY and q:query() or "PING"
            for w in text:gmatch("%S+") do
                args[#args + 1] = w
            end
            local b = message.new_batch(0)
            b:push(assert(message.command(args)))
            local r = chain:run_sub(self.redis, b)[1]
            local v, err = r:decode()
            return cql_reply.rows(q, { columns = { { "reply", "text" } },
                rows = { { v == nil and "undecodable:" .. err or show(v) } } })
        end))
    end
    return resp
end

return _M
