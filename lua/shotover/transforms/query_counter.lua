-- query_counter: counts requests by Redis command or CQL statement kind into
-- shotover_query_count_total{name=..., query=...}, then passes them on.
-- Label values stay bounded: Redis commands Redis knows (others count as
-- "other"), CQL statement kinds or opcode names; never keys or query text.
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local commands = require "shotover.redis.commands"

local upper = string.upper
local add = metrics.add

local _M = { name = "query_counter", version = "0.1.0", schema = {} }

local mt = { __index = {} }

function _M.new(conf)
    return setmetatable({ name = conf.name or "query_counter", series = {},
                          counts = {} }, mt)
end

local function series(self, query)
    local m = self.series[query]
    if m == nil then
        m = metrics.counter("shotover_query_count_total",
                            "requests seen by a query_counter, by command "
                            .. "or statement kind",
                            { name = self.name, query = query })
        self.series[query] = m
    end
    return m
end

local function query_of(m, chain)
    if m.proto == 1 then
        local cmd = upper(m:arg(1) or "")
        return commands[cmd] and cmd or "other"
    end
    local op = m.rtype
    if op == 0x07 or op == 0x09 or op == 0x0A then  -- QUERY PREPARE EXECUTE
        local ast = m:statement(chain.conn)
        if ast then
            return op == 0x09 and "prepare " .. ast.kind or ast.kind
        end
        return "unparsed"
    end
    return m:opcode_name()
end

-- counts are summed per batch and added to the shared series once per
-- distinct query (an atomic add per series, not per request)
function mt.__index.transform(self, batch, chain)
    local counts = self.counts
    for i = 1, batch.n do
        local q = query_of(batch[i], chain)
        counts[q] = (counts[q] or 0) + 1
    end
    for q, k in pairs(counts) do
        add(series(self, q), k)
        counts[q] = nil
    end
    return chain:next(batch)
end

return _M
