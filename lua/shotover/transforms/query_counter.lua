-- query_counter: counts requests by Redis command or CQL statement kind into
-- shotover_query_count_total{name=..., query=...}, then passes them on.
-- Label values stay bounded: Redis commands Redis knows (others count as
-- "other"), CQL statement kinds or opcode names; never keys or query text.
local ffi = require "ffi"
local base = require "shotover.ffi"
local metrics = require "shotover.metrics"
local command_ids = require "shotover.redis.command_ids"
local protocols = require "shotover.protocols"

local C = base.C
-- resolved once at load: a symbol first looked up inside a trace being
-- recorded aborts that trace ("symbol not in cache")
local count_ids = C.sh_ffi_batch_count_ids
local by_id = protocols.by_id
local PROTO_REDIS = C.SH_PROTO_REDIS
local command_name = command_ids.name
local add = metrics.add

local _M = { name = "query_counter", version = "0.1.0", schema = {},
             capabilities = { lanes = true } }

local mt = { __index = {} }

-- the ids a Redis request can have, from 0 (not a Redis command)
local ID_SLOTS = command_ids.count + 1

function _M.new(conf)
    return setmetatable({ name = conf.name or "query_counter", series = {},
                          counts = {},
                          id_counts = ffi.new("uint32_t[?]", ID_SLOTS),
                          id_series = ffi.new("sh_metric_t *[?]", ID_SLOTS),
                          missing = ffi.new("uint16_t[?]", ID_SLOTS),
                          nmissing = ffi.new("uint32_t[1]") }, mt)
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

-- Counts are summed per batch and added to the shared series once per
-- distinct query (an atomic add per series, not per request).  Redis
-- requests are counted and added by C (sh_ffi_batch_count_ids), by the
-- command id the codec gave them (sh_frame_t.cmd_id): no Lua per request
-- or per id; Lua only registers the series of an id the first time it is
-- seen.  Other frames (CQL) are counted here by their protocol's label.
-- Nothing here yields, so the per-instance scratch arrays are safe to
-- share between connections.

-- Count the requests of batch C did not count (all but Redis), by the
-- label their protocol gives (query_label in shotover.protocols.*).
local function count_others(self, batch, chain)
    local counts = self.counts
    for i = 1, batch.n do
        local m = batch[i]
        if m.proto ~= PROTO_REDIS then
            local q = by_id(m.proto).query_label(m, chain)
            counts[q] = (counts[q] or 0) + 1
        end
    end
    for q, k in pairs(counts) do
        add(series(self, q), k)
        counts[q] = nil
    end
end

-- The ids C found without a series: register them, add and clear their
-- counts (the first batch each command is seen in).
local function add_missing(self)
    local id_counts, id_series, missing = self.id_counts, self.id_series,
                                          self.missing
    for j = 0, self.nmissing[0] - 1 do
        local id = missing[j]
        local m = series(self, command_name(id) or "other")
        id_series[id] = m
        add(m, id_counts[id])
        id_counts[id] = 0
    end
end

function mt.__index.transform(self, batch, chain)
    local rest = count_ids(batch, self.id_counts, self.id_series, ID_SLOTS,
                           self.missing, self.nmissing)
    if self.nmissing[0] > 0 then
        add_missing(self)
    end
    if rest > 0 then
        count_others(self, batch, chain)
    end
    return chain:next(batch)
end

return _M
