-- request_throttling: a rate limit (GCRA) that every worker shares through a
-- shared dict in C.  Requests over the limit get an error and go nowhere:
-- Redis "-ERR shotover: request throttled ...", Cassandra an OVERLOADED
-- error on the request's stream.  A CQL BATCH costs one unit per
-- statement; the CQL handshake is never throttled.
-- See docs/transforms/request_throttling.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local runner = require "shotover.runner"
local metrics = require "shotover.metrics"
local shdict = require "shotover.shdict"
local protocols = require "shotover.protocols"

local C = base.C
local gcra = C.sh_ffi_shdict_gcra
local by_id = protocols.by_id
local add = metrics.add
local ceil = math.ceil
local floor = math.floor
local fmt = string.format
local tostring = tostring

local OK = base.OK

local _M = {
    name = "request_throttling",
    version = "0.1.0",
    capabilities = { lanes = true },
    schema = {
        max_requests_per_second = { type = "number", required = true,
            check = function(v)
                return v > 0 and v <= 1e9, "must be above 0 and at most 1e9"
            end },
        -- default: one second's worth, ceil(max_requests_per_second)
        burst = { type = "integer", min = 1, max = 1e9 },
        key = { type = "enum", values = { "global", "connection", "client" },
                default = "global" },
        dict = { type = "string", default = "throttle" },
        dict_capacity = { type = "integer", default = 10000, min = 1,
                          max = 16777216 },
    },
}

local mt = { __index = {} }

local retry_out = ffi.new("uint64_t[1]")

function _M.new(conf, env)
    local rate = conf.max_requests_per_second
    local burst = conf.burst or ceil(rate)
    local name = conf.name or "request_throttling"
    local d = assert(shdict.open(conf.dict, conf.dict_capacity))
    -- whole nanoseconds per request; the tolerance lets `burst` through
    local interval = floor(1e9 / rate)
    local self = {
        name = name,
        d = d.d,
        -- the dict key of the global bucket: the element's name, so
        -- elements with the same name share one limit (across sources too)
        key = name,
        per_conn = conf.key ~= "global",
        per_client = conf.key == "client",
        worker = tostring(env and env.worker_id or 0),
        nconn = 0,
        interval = interval,
        tolerance = interval * burst,
        costs = {},             -- scratch: per-request costs of a batch
        msg = fmt("shotover: request throttled (%s: over %s requests per "
                  .. "second)", name, tostring(rate)),
        m_throttled = metrics.counter("shotover_throttled_requests_total",
            "requests refused by a request_throttling element",
            { name = name }),
    }
    self.proto = protocols.of_env(env)
    return setmetatable(self, mt)
end

-- the bucket's key for this connection
local function key_of(self, chain)
    if not self.per_conn then
        return self.key
    end
    local conn = chain.conn
    local k = conn[self]
    if k == nil then
        if self.per_client then
            -- one bucket per client address, shared by its connections on
            -- every worker
            local ip = runner.peer(chain.c) or "unknown"
            k = self.key .. "@" .. ip
        else
            self.nconn = self.nconn + 1
            k = fmt("%s/%s/%d", self.key, self.worker, self.nconn)
        end
        conn[self] = k
    end
    return k
end

-- One GCRA step for the whole batch first: when it fits (the usual case)
-- the batch goes on as is, for one FFI call.  Otherwise each request is
-- decided in order; the allowed ones go on as a sub-batch and the replies
-- are put back in request order.
function mt.__index.transform(self, batch, chain)
    local n, costs, total = batch.n, self.costs, 0
    if n == 0 then
        return chain:next(batch)
    end
    -- units of work per request, by protocol: a CQL BATCH one per
    -- statement, the CQL handshake nothing, anything else one
    local proto = self.proto or by_id(batch[1].proto)
    local cost_of = proto.cost
    for i = 1, n do
        local c = cost_of(batch[i])
        costs[i] = c
        total = total + c
    end
    if total == 0 then
        return chain:next(batch)
    end
    local d, key = self.d, key_of(self, chain)
    local interval, tolerance = self.interval, self.tolerance
    if gcra(d, key, #key, 0, interval, tolerance, total, retry_out) == OK then
        return chain:next(batch)
    end
    local refused, nrefused = {}, 0
    for i = 1, n do
        local c = costs[i]
        if c > 0 and gcra(d, key, #key, 0, interval, tolerance, c,
                          retry_out) ~= OK
        then
            local m = batch[i]
            refused[i] = proto.error_reply(m, self.msg, "overloaded")
            nrefused = nrefused + 1
        end
    end
    add(self.m_throttled, nrefused)
    return chain:next_except(batch, refused)
end

return _M
