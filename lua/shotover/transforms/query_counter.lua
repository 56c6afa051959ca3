-- query_counter: counts requests by Redis command or CQL statement kind into
-- shotover_query_count_total{name=..., query=...}, then passes them on.
-- Label values stay bounded: Redis commands Redis knows (others count as
-- "other"), CQL statement kinds or opcode names; never keys or query text.
local metrics = require "shotover.metrics"
local command_ids = require "shotover.redis.command_ids"

local new_tab = require "table.new"

local command_name = command_ids.name
local add = metrics.add

local _M = { name = "query_counter", version = "0.1.0", schema = {} }

local mt = { __index = {} }

-- the ids a Redis request can have, from 0 (not a Redis command)
local ID_SLOTS = 512

function _M.new(conf)
    local id_counts = new_tab(ID_SLOTS, 1)
    for id = 0, ID_SLOTS - 1 do
        id_counts[id] = 0
    end
    return setmetatable({ name = conf.name or "query_counter", series = {},
                          counts = {}, cql = false, by_id = {},
                          id_counts = id_counts, touched = {}, nt = 0 }, mt)
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

-- the label of CQL request m
local function query_of(m, chain)
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

-- Counts are summed per batch and added to the shared series once per
-- distinct query (an atomic add per series, not per request).  Redis
-- requests are counted in an array by the command id the codec gave them
-- (sh_frame_t.cmd_id; no string per request); `touched` lists the `nt` ids
-- seen, so the adds visit only those.  Nothing here yields, so the
-- per-instance scratch tables are safe to share between connections.
--
-- Why the small functions: the first pass of a loop and the code after it
-- run in LuaJIT's interpreter on every batch, where each FFI access is
-- slow; a function called per request or per batch gets its own compiled
-- trace, which the interpreter enters.

-- Count request m.  The state stays consistent if a later request raises
-- (touched[1..nt] are exactly the ids with a count): the next batch's flush
-- adds them.
local function count(self, m, chain)
    if m.proto == 1 then
        local id = m.cmd_id
        local id_counts = self.id_counts
        local k = id_counts[id]
        if k == nil or k == 0 then
            local nt = self.nt + 1
            self.touched[nt] = id
            self.nt = nt
            id_counts[id] = 1
        else
            id_counts[id] = k + 1
        end
    else
        local counts = self.counts
        local q = query_of(m, chain)
        counts[q] = (counts[q] or 0) + 1
        self.cql = true
    end
end

-- Add the counts gathered so far to the series and clear them.
local function flush(self)
    local by_id, id_counts, touched = self.by_id, self.id_counts, self.touched
    for j = 1, self.nt do
        local id = touched[j]
        local m = by_id[id]
        if m == nil then
            m = series(self, command_name(id) or "other")
            by_id[id] = m
        end
        add(m, id_counts[id])
        id_counts[id] = 0
    end
    self.nt = 0
    if self.cql then
        local counts = self.counts
        for q, k in pairs(counts) do
            add(series(self, q), k)
            counts[q] = nil
        end
        self.cql = false
    end
end

function mt.__index.transform(self, batch, chain)
    for i = 1, batch.n do
        count(self, batch[i], chain)
    end
    flush(self)
    return chain:next(batch)
end

return _M
