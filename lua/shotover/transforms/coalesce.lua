-- coalesce: holds a connection's requests until max_requests of them have
-- come or the oldest has waited max_wait_ms (a real timer: a client that
-- sends less and waits gets its replies), then sends them on as one batch.
-- Requests of several client batches reach the rest of the chain together;
-- each batch still gets its own responses, in order.  Built on the parking
-- runner (shotover.park, the MORE yield).  See docs/transforms/coalesce.md.
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local park = require "shotover.park"
local protocols = require "shotover.protocols"

local by_id = protocols.by_id
local pcall = pcall
local error = error
local tostring = tostring
local setmetatable = setmetatable
local new_batch = message.new_batch
local error_reply = message.error_reply
local now_ns = metrics.now_ns
local add = metrics.add
local fmt = string.format

local DEFAULT_WAIT_MS = 100

local _M = {
    name = "coalesce",
    version = "0.1.0",
    -- the parking runner runs its chain; one batch at a time
    capabilities = { holds_batches = true },
    schema = {
        max_requests = { type = "integer", min = 1, max = 1000000 },
        max_wait_ms = { type = "integer", min = 1, max = 3600000 },
    },
}

local mt = { __index = {} }
local methods = mt.__index

function _M.check_config(conf)
    if conf.max_requests == nil and conf.max_wait_ms == nil then
        return nil, "give max_requests, max_wait_ms or both"
    end
    return true
end

function _M.new(conf, env)
    return setmetatable({
        name = conf.name or "coalesce",
        max_requests = conf.max_requests or math.huge,
        wait_ns = (conf.max_wait_ms or DEFAULT_WAIT_MS) * 1e6,
        series = {},
        proto = protocols.of_env(env),
    }, mt)
end

local function count(self, reason, n)
    local s = self.series[reason]
    if s == nil then
        s = {
            metrics.counter("shotover_coalesce_flushes_total",
                            "batches a coalesce sent on, by what made it",
                            { name = self.name, reason = reason }),
            metrics.counter("shotover_coalesce_requests_total",
                            "requests a coalesce sent on, by what made it",
                            { name = self.name, reason = reason }),
        }
        self.series[reason] = s
    end
    add(s[1], 1)
    add(s[2], n)
end

-- "pass": run it through now (a handshake a driver waits for), "now":
-- flush with it (SUBSCRIBE and the like, blocking commands, QUIT), nil:
-- hold it.  See passthrough and urgent in shotover.protocols.*.
local function kind(batch, proto)
    local passthrough, urgent = proto.passthrough, proto.urgent
    for i = 1, batch.n do
        local f = batch[i]
        if passthrough(f) then
            return "pass"
        elseif urgent(f) then
            return "now"
        end
    end
    return nil
end

local function slice(resp, first, n, total)
    if first == 0 and n == total then
        return resp
    end
    local b = new_batch(n)
    for i = 1, n do
        b:set(i, resp[first + i])
    end
    return b
end

local function error_slice(frames, first, n, msg)
    local b = new_batch(n)
    for i = 1, n do
        b:set(i, error_reply(frames[first + i], msg))
    end
    return b
end

-- Send everything held (the caller's batch `me` included) on as one batch;
-- the other parked batches get their share of the responses, the caller's
-- share is returned.
local function flush(self, st, chain, me, reason)
    park.release(chain, st)
    local frames, n, waiters, nw = st.frames, st.n, st.waiters, st.nw
    st.frames, st.n, st.waiters, st.nw, st.deadline = {}, 0, {}, 0, nil
    local b = new_batch(n)
    for i = 1, n do
        b:set(i, frames[i])
    end
    count(self, reason, n)
    local ok, resp = pcall(chain.next, chain, b)
    if ok and (resp == nil or resp.n ~= n) then
        ok, resp = false, fmt("returned %s responses for %d requests",
                              resp and tostring(resp.n) or "no", n)
    end
    if not ok then
        local msg = fmt("shotover: %s: the coalesced batch failed: %s",
                        self.name, tostring(resp))
        for i = 1, nw do
            local w = waiters[i]
            if w ~= me then
                park.wake(chain, w.inv, error_slice(frames, w.first, w.n,
                                                    msg))
            end
        end
        error(resp, 0)
    end
    for i = 1, nw do
        local w = waiters[i]
        if w ~= me then
            park.wake(chain, w.inv, slice(resp, w.first, w.n, n))
        end
    end
    return slice(resp, me.first, me.n, n)
end

function methods.transform(self, batch, chain)
    local n = batch.n
    if n == 0 or not park.available(chain) then
        return chain:next(batch)       -- REPL, specs: nothing to wait for
    end
    local k = kind(batch, self.proto or by_id(batch[1].proto))
    if k == "pass" then
        return chain:next(batch)
    end
    local conn = chain.conn
    local st = conn[self]
    if st == nil then
        st = { frames = {}, n = 0, waiters = {}, nw = 0, deadline = nil }
        conn[self] = st
    end
    local first, frames = st.n, st.frames
    for i = 1, n do
        frames[first + i] = batch[i]
    end
    st.n = first + n
    local me = { first = first, n = n, inv = nil }
    if st.n >= self.max_requests then
        return flush(self, st, chain, me, "count")
    elseif k == "now" then
        return flush(self, st, chain, me, "command")
    end
    if st.deadline == nil then
        st.deadline = now_ns() + self.wait_ns
    end
    me.inv = park.current(chain)
    st.nw = st.nw + 1
    st.waiters[st.nw] = me
    local v = park.park(chain, st)
    if type(v) == "string" then
        -- the timer fired ("time") or the client is gone ("eof"): the
        -- latest parked batch sends everything on
        return flush(self, st, chain, me, v)
    end
    return v
end

return _M
