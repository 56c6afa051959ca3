-- Parking: how a transform holds the requests of one batch until later
-- batches of the same connection have come (coalesce).
--
-- The plain runner (worker.lua) runs each batch straight through the chain
-- in the connection's coroutine.  A chain with an element that parks is run
-- by this module instead: each batch C hands over runs in an invocation, a
-- coroutine of its own with its own chain context (they share the session
-- table `chain.conn`), so a transform can park that invocation, with the
-- whole stack of transforms above it, and the connection's coroutine yields
-- MORE to C, which resumes it with the next batch, when the timer fires, or
-- at EOF.  Every transform above the parking one still sees its own batch
-- and returns its own responses; once every invocation of the group has
-- its responses, they go to C as one set (in the order the batches came)
-- and the coroutine yields DONE.  See docs/architecture.md.
--
-- A parking transform:
--   park.available(chain)       false outside this runner (do not park)
--   v = park.park(chain, holder) parks; returns what park.wake gave, or
--                                "time" / "eof" when the holder's deadline
--                                passed or the client closed: the woken
--                                invocation then does the work (a flush)
--   park.current(chain)         the running invocation, to wake later
--   park.wake(chain, inv, v)    makes a parked invocation go on with v
--   park.release(chain, holder) the holder holds nothing any more
-- A holder is the transform's per-connection table; `holder.deadline`
-- (ns on the now_ns clock, or nil) arms the connection's timer.
local base = require "shotover.ffi"
local message = require "shotover.message"
local metrics = require "shotover.metrics"

local C = base.C
local DONE, MORE = base.YIELD_DONE, base.YIELD_MORE
local WAKE_BATCH, WAKE_EOF = base.WAKE_BATCH, base.WAKE_EOF
local yield = coroutine.yield
local resume = coroutine.resume
local create = coroutine.create
local pairs = pairs
local tostring = tostring
local ceil = math.ceil
local new_batch = message.new_batch
local error_reply = message.error_reply
local core = require "shotover.core"
local now_ns = metrics.now_ns
local core_add, core_since = core.add, core.since

local _M = { _VERSION = "0.1.0" }

local KEY = {}      -- chain.conn[KEY]: the connection's runner state
local PARKED = {}   -- an invocation yields this to park
local RESULT = {}   -- and this with its responses when it is done

function _M.available(chain)
    return chain.conn[KEY] ~= nil
end

function _M.current(chain)
    return chain.conn[KEY].current
end

function _M.park(chain, holder)
    local rs = chain.conn[KEY]
    holder.inv = rs.current           -- the one a timer or EOF wakes
    rs.holders[holder] = true
    return yield(PARKED)
end

local function wake(rs, inv, value)
    inv.value = value
    inv.parked = false
    rs.nready = rs.nready + 1
    rs.ready[rs.nready] = inv
end

function _M.wake(chain, inv, value)
    wake(chain.conn[KEY], inv, value)
end

function _M.release(chain, holder)
    chain.conn[KEY].holders[holder] = nil
    holder.inv = nil
end

local function new_inv(ch, c, conn)
    local ctx = ch:context(c)
    ctx.conn = conn
    local inv = { ctx = ctx }
    inv.co = create(function(batch)
        while true do
            batch = yield(RESULT, ch:run(ctx, batch))
        end
    end)
    return inv
end

-- Resume invocation inv with arg until it parks or is done; whatever else
-- it yields (WAIT: backends pending) goes on to C, and C's resume back.
local function drive(rs, inv, arg)
    local co = inv.co
    rs.current = inv
    local ok, what, resp = resume(co, arg)
    while ok and what ~= PARKED and what ~= RESULT do
        rs.current = nil
        yield(what)
        rs.current = inv
        ok, what, resp = resume(co)
    end
    rs.current = nil
    if not ok then
        error("park: an invocation died: " .. tostring(what), 0)
    end
    if what == PARKED then
        inv.parked = true
    else
        inv.resp = resp
        inv.done = true
    end
end

-- The responses of every invocation of the group, in order, as one batch.
local function combine(segs, nseg)
    local total = 0
    for i = 1, nseg do
        total = total + segs[i].batch.n
    end
    local one = segs[1]
    if nseg == 1 and one.resp ~= nil and one.resp.n == total then
        return one.resp
    end
    local out, k = new_batch(total), 0
    for s = 1, nseg do
        local seg = segs[s]
        local b, r = seg.batch, seg.resp
        local n = b.n
        if r == nil or r.n ~= n then
            for i = 1, n do
                out:set(k + i, error_reply(b[i], "shotover: chain returned "
                                           .. "the wrong number of responses"))
            end
        else
            for i = 1, n do
                out:set(k + i, r[i])
            end
        end
        k = k + n
    end
    return out
end

-- Arm the connection's timer for the earliest holder deadline, or stop it.
local function arm(rs, c, io)
    local min
    for holder in pairs(rs.holders) do
        local d = holder.deadline
        if d ~= nil and (min == nil or d < min) then
            min = d
        end
    end
    if min ~= nil then
        local ms = ceil((min - now_ns()) / 1e6)
        io.timer(c, ms < 1 and 1 or ms)
        rs.armed = true
    elseif rs.armed then
        io.timer_stop(c)
        rs.armed = false
    end
end

-- What the runner asks of the C core about connection c; specs pass their
-- own to drive a chain without one.
local C_IO = {
    wake_reason = C.sh_ffi_conn_wake_reason,
    batch = function(c) return C.sh_ffi_conn_batch(c)[0] end,
    timer = C.sh_ffi_conn_timer,
    timer_stop = C.sh_ffi_conn_timer_stop,
}

-- The body of a connection's coroutine for a chain that parks (the plain
-- one is in worker.lua).  Never returns.
function _M.run(c, ch, io)
    io = io or C_IO
    local conn = {}
    local rs = { holders = {}, ready = {}, nready = 0, current = nil,
                 armed = false }
    conn[KEY] = rs
    local pool, npool = {}, 0
    local segs, nseg = {}, 0
    -- the epilogue below runs interpreted after waits: shotover.core's
    -- classic calls on metric ids, as in worker.lua (no ids: a spec's chain)
    local requests_id = ch.m_requests and metrics.id(ch.m_requests)
    local latency_id = ch.m_latency and metrics.id(ch.m_latency)
    while true do
        local reason = io.wake_reason(c)
        if reason == WAKE_BATCH then
            local inv
            if npool > 0 then
                inv = pool[npool]
                pool[npool] = nil
                npool = npool - 1
            else
                inv = new_inv(ch, c, conn)
            end
            inv.batch = io.batch(c)
            inv.n, inv.t0 = inv.batch.n, now_ns()
            nseg = nseg + 1
            segs[nseg] = inv
            drive(rs, inv, inv.batch)
        else
            -- the timer fired or the client is gone: due holders flush
            local now = now_ns()
            for holder in pairs(rs.holders) do
                if reason == WAKE_EOF
                   or (holder.deadline ~= nil and holder.deadline <= now)
                then
                    local inv = holder.inv
                    rs.holders[holder] = nil
                    wake(rs, inv, reason == WAKE_EOF and "eof" or "time")
                end
            end
        end
        -- invocations a flush handed their responses to go on, in order
        local i = 1
        while i <= rs.nready do
            local inv = rs.ready[i]
            rs.ready[i] = nil
            drive(rs, inv, inv.value)
            inv.value = nil
            i = i + 1
        end
        rs.nready = 0
        local done = true
        for s = 1, nseg do
            if not segs[s].done then
                done = false
                break
            end
        end
        if done then
            local resp = combine(segs, nseg)
            local total = 0
            for s = 1, nseg do
                local inv = segs[s]
                local n = inv.n
                total = total + n
                -- each request waited as long as its batch did
                if latency_id then
                    core_since(latency_id, inv.t0, n)
                end
                inv.batch, inv.resp, inv.done = nil, nil, false
                segs[s] = nil
                npool = npool + 1
                pool[npool] = inv
            end
            nseg = 0
            if requests_id then
                core_add(requests_id, total)
            end
            arm(rs, c, io)
            yield(DONE, resp)
        else
            arm(rs, c, io)
            yield(MORE)
        end
    end
end

return _M
