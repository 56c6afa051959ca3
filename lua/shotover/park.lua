-- Parking: how a transform holds the requests of one batch until later
-- batches of the same connection have come (coalesce).
--
-- The plain loop (runner.lua) runs each batch straight through the chain in
-- the connection's coroutine.  A chain with an element that parks is run by
-- runner.lua's parking loop over a group of this module instead: each batch
-- C hands over runs in an invocation, a coroutine of its own with its own
-- chain context (they share the session table `chain.conn`), so a transform
-- can park that invocation, with the whole stack of transforms above it,
-- and the connection's coroutine yields MORE to C, which resumes it with
-- the next batch, when the timer fires, or at EOF.  Every transform above
-- the parking one still sees its own batch and returns its own responses;
-- once every invocation of the group has its responses, they go to C as
-- one set (in the order the batches came) and the coroutine yields DONE.
-- The loop that yields MORE and DONE, reads why C resumed it and arms the
-- timer is runner.lua's; this module keeps the invocations.  See
-- docs/architecture.md.
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
local message = require "shotover.message"
local runner = require "shotover.runner"

local resume = coroutine.resume
local create = coroutine.create
local yield = coroutine.yield
local pairs = pairs
local tostring = tostring
local setmetatable = setmetatable
local new_batch = message.new_batch
local error_reply = message.error_reply
local pass = runner.pass

local _M = { _VERSION = "0.1.0" }

local KEY = {}      -- chain.conn[KEY]: the connection's group
local PARKED = {}   -- an invocation yields this to park
local RESULT = {}   -- and this with its responses when it is done

function _M.available(chain)
    return chain.conn[KEY] ~= nil
end

function _M.current(chain)
    return chain.conn[KEY].current
end

function _M.park(chain, holder)
    local g = chain.conn[KEY]
    holder.inv = g.current            -- the one a timer or EOF wakes
    g.holders[holder] = true
    return yield(PARKED)
end

local function wake(g, inv, value)
    inv.value = value
    inv.parked = false
    g.nready = g.nready + 1
    g.ready[g.nready] = inv
end

function _M.wake(chain, inv, value)
    wake(chain.conn[KEY], inv, value)
end

function _M.release(chain, holder)
    chain.conn[KEY].holders[holder] = nil
    holder.inv = nil
end

-- A group: the invocations of one connection since its last DONE.  The
-- runner's parking loop calls take (a new batch), expire (the timer fired
-- or EOF), settle (the responses of the whole group once every invocation
-- is done, else nil), deadline (when to wake it) and, after DONE, recycle;
-- g.segs[1..g.nseg] are the invocations of the group, in batch order, each
-- with its batch's size n and start time t0.
local Group = {}
Group.__index = Group

function _M.group(ch, c, conn, run)
    local g = setmetatable({ ch = ch, c = c, conn = conn, run = run,
                             holders = {}, ready = {}, nready = 0,
                             current = nil, pool = {}, npool = 0,
                             segs = {}, nseg = 0 }, Group)
    conn[KEY] = g
    return g
end

local function new_inv(g)
    local ch, run = g.ch, g.run
    local ctx = ch:context(g.c, g.conn)
    local inv = { ctx = ctx }
    inv.co = create(function(batch)
        while true do
            batch = yield(RESULT, run(ch, ctx, batch))
        end
    end)
    return inv
end

-- Resume invocation inv with arg until it parks or is done; whatever else
-- it yields (WAIT: backends pending) goes on to C, and C's resume back.
local function drive(g, inv, arg)
    local co = inv.co
    g.current = inv
    local ok, what, resp = resume(co, arg)
    while ok and what ~= PARKED and what ~= RESULT do
        g.current = nil
        local back = pass(what)
        g.current = inv
        ok, what, resp = resume(co, back)
    end
    g.current = nil
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

function Group:take(batch, now)
    local inv
    local npool = self.npool
    if npool > 0 then
        inv = self.pool[npool]
        self.pool[npool] = nil
        self.npool = npool - 1
    else
        inv = new_inv(self)
    end
    inv.batch, inv.n, inv.t0 = batch, batch.n, now
    self.nseg = self.nseg + 1
    self.segs[self.nseg] = inv
    drive(self, inv, batch)
end

-- Wake the holders whose deadline has passed (all of them at EOF): each
-- woken invocation then does the work (a flush).
function Group:expire(eof, now)
    for holder in pairs(self.holders) do
        if eof or (holder.deadline ~= nil and holder.deadline <= now) then
            local inv = holder.inv
            self.holders[holder] = nil
            wake(self, inv, eof and "eof" or "time")
        end
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

-- Let the invocations a flush handed their responses go on, in order;
-- then the group's responses when every invocation is done, else nil.
function Group:settle()
    local i = 1
    while i <= self.nready do
        local inv = self.ready[i]
        self.ready[i] = nil
        drive(self, inv, inv.value)
        inv.value = nil
        i = i + 1
    end
    self.nready = 0
    local segs = self.segs
    for s = 1, self.nseg do
        if not segs[s].done then
            return nil
        end
    end
    return combine(segs, self.nseg)
end

-- The earliest holder deadline (ns on the now_ns clock), or nil.
function Group:deadline()
    local min
    for holder in pairs(self.holders) do
        local d = holder.deadline
        if d ~= nil and (min == nil or d < min) then
            min = d
        end
    end
    return min
end

-- After DONE: the invocations go back to the pool for the next group.
function Group:recycle()
    local segs = self.segs
    for s = 1, self.nseg do
        local inv = segs[s]
        inv.batch, inv.resp, inv.done = nil, nil, false
        segs[s] = nil
        self.npool = self.npool + 1
        self.pool[self.npool] = inv
    end
    self.nseg = 0
end

return _M
