-- redis_statement_counter: a test transform (t/lib is on the Lua path of
-- the specs and of every shotover they start) for a sink of another
-- protocol inside a chain: in a Cassandra chain, it counts each CQL QUERY
-- by statement kind in Redis, through a sub-chain of protocol "redis"
-- that ends in a redis sink.  For each QUERY it INCRs PREFIX..kind, reads
-- the integer reply as a Lua value (shotover.redis.decode), and SETs
-- PREFIX..kind..":seen" to what it read ("number:3"), so a spec can check
-- both the counters and the decoding; then it passes the batch on.
--   { "redis_statement_counter", prefix = "cql:",
--     redis = { { "redis", remote = "127.0.0.1:6379" } } }
local message = require "shotover.message"
local C = require("shotover.ffi").C

local new_batch = message.new_batch
local command = message.command
local tostring = tostring
local type = type

local OP_QUERY = C.SH_CQL_QUERY

local _M = {
    name = "redis_statement_counter",
    version = "0.1.0",
    -- its state is per batch; its redis chain is checked like any other
    capabilities = { lanes = true, subchains = true },
    protocols = { "cassandra" },        -- it reads CQL statements
    schema = {
        prefix = { type = "string", default = "cql:" },
        redis = { type = "table", required = true },
    },
}

local mt = { __index = {} }

-- the sub-chain speaks Redis whatever the source speaks
function _M.subchains(conf)
    return { { chain = conf.redis, path = ".redis", protocol = "redis" } }
end

function _M.new(conf, env)
    return setmetatable({
        prefix = conf.prefix,
        redis = env.build_chain(conf.redis, "redis", "redis"),
    }, mt)
end

function mt.__index.transform(self, batch, chain)
    local kinds = {}
    for i = 1, batch.n do
        local m = batch[i]
        if m.rtype == OP_QUERY then
            local ast = m:statement(chain.conn)
            kinds[#kinds + 1] = ast and ast.kind or "unparsed"
        end
    end
    if #kinds > 0 then
        local incr = new_batch(0)
        for _, kind in ipairs(kinds) do
            incr:push(assert(command({ "INCR", self.prefix .. kind })))
        end
        local replies = chain:run_sub(self.redis, incr)
        local seen = new_batch(0)
        local counts = chain.conn.redis_statement_counts or {}
        chain.conn.redis_statement_counts = counts
        for i, kind in ipairs(kinds) do
            local v, err = replies[i]:decode()
            counts[kind] = v
            seen:push(assert(command({ "SET", self.prefix .. kind .. ":seen",
                                       v == nil and "error:" .. err
                                       or type(v) .. ":" .. tostring(v) })))
        end
        chain:run_sub(self.redis, seen)
    end
    return chain:next(batch)
end

return _M
