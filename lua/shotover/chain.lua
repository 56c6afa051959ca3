-- Chains: build the transform instances of a chain, and run a batch through
-- them.  Each client connection gets a context (`chain` in a transform's
-- signature) whose `next` hands the batch to the following element; the
-- context also carries the connection (`chain.c`) and its session table
-- (`chain.conn`), which lives as long as the client connection.
local base = require "shotover.ffi"
local config = require "shotover.config"
local message = require "shotover.message"
local metrics = require "shotover.metrics"
local log = require "shotover.log"
local protocols = require "shotover.protocols"

local C = base.C
local WAIT, SLEEP = base.YIELD_WAIT, base.YIELD_SLEEP
local yield = coroutine.yield
local resume = coroutine.resume
local cocreate = coroutine.create
local status = coroutine.status
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring
local fmt = string.format
local new_batch = message.new_batch
local core = require "shotover.core"
local add, now_ns = metrics.add, metrics.now_ns
local core_since = core.since

local _M = { _VERSION = "0.1.0" }

local Chain = {}
Chain.__index = Chain

local Ctx = {}
Ctx.__index = Ctx

-- Build a validated chain config into instances.  env: { worker = cdata or
-- nil (dry), protocol = "redis", name = chain name, path = config path }.
-- A transform builds its sub-chains with env.build_chain(elements, name
-- [, protocol]): they share this env, and have this chain's protocol
-- unless given another (a Redis sub-chain inside a Cassandra chain, say;
-- its subchains(conf) entry names the same protocol, so `check` checks
-- the sub-chain for it).
function _M.build(elements, env)
    local els = {}
    for i, el in ipairs(elements) do
        local e = { index = i }
        if type(el[1]) == "function" then
            e.inline = el[1]
            e.name = el.name or "inline function"
        else
            local mod = assert(config.load_transform(el[1]))
            e.name = el.name or el[1]
            e.kind, e.terminal = el[1], mod.terminal    -- for traces
            e.inst = mod.new(el, setmetatable({
                -- lets a transform build its sub-chains with this env
                build_chain = function(elements, name, protocol)
                    local sub = {}
                    for k, v in pairs(env) do
                        sub[k] = v
                    end
                    sub.name = (env.name or "chain") .. "/" .. name
                    sub.source = env.source or env.name
                    -- what the client connection speaks, whatever the
                    -- sub-chain's protocol
                    sub.client_protocol = env.client_protocol or env.protocol
                    if protocol ~= nil then
                        sub.protocol = protocols.get(protocol).name
                    end
                    return _M.build(elements, sub)
                end,
            }, { __index = env }))
        end
        -- per transform: time spent (its own work and everything after
        -- it) per request, which counts the requests too; failures it
        -- raised
        local labels = { source = env.source or env.name or "chain",
                         chain = env.name or "chain", transform = e.name }
        e.m_errors = metrics.counter("shotover_transform_errors_total",
            "requests failed by an element raising an error", labels)
        e.m_latency = metrics.histogram(
            "shotover_transform_duration_seconds",
            "time from handing a batch to a chain element to its responses",
            labels)
        e.m_latency_id = metrics.id(e.m_latency)
        els[i] = e
    end
    return setmetatable({ elements = els, n = #els, name = env.name,
                          protocol = env.protocol }, Chain)
end

-- A coroutine's context; c is the sh_conn_t* (nil when dry), conn the
-- connection's session table (shotover.core.session; a new one if nil).
function Chain:context(c, conn)
    return setmetatable({ c = c, conn = conn or {}, elements = self.elements,
                          i = 0, chain = self }, Ctx)
end

-- Hand batch to the next element and return its responses.
function Ctx:next(batch)
    local i = self.i + 1
    local el = self.elements[i]
    if el == nil then
        error("next() called by the last element of the chain", 2)
    end
    -- tracing (shotover route-test, repl): one nil check when off
    if self.trace ~= nil then
        return require("shotover.trace").next(self, el, i, batch)
    end
    self.i = i
    -- The code below the call runs in the interpreter whenever the element
    -- waited for a backend (a JIT trace cannot cross the coroutine's yield),
    -- so it is one classic C call on plain numbers (shotover.core): the
    -- clock is a double and n is read before.  The histogram's count is
    -- the request count.
    local n, t0 = batch.n, now_ns()
    local resp
    if el.inline then
        resp = el.inline(batch, self)
    else
        resp = el.inst:transform(batch, self)
    end
    core_since(el.m_latency_id, t0, n)
    self.i = i - 1
    return resp
end

-- Hand on the requests of batch that `answered` (request index -> reply)
-- does not answer, and return replies for all of batch in request order:
-- for elements that answer some requests themselves (filters, limits).
function Ctx:next_except(batch, answered)
    local n = batch.n
    local pass = new_batch(0)
    for i = 1, n do
        if answered[i] == nil then
            pass:push(batch[i])
        end
    end
    local sub = pass.n > 0 and self:next(pass) or nil
    local resp, k = new_batch(n), 0
    for i = 1, n do
        local r = answered[i]
        if r == nil then
            k = k + 1
            r = sub[k]
        end
        resp:set(i, r)
    end
    return resp
end

-- Run a sub-chain (built with env.build_chain) over batch for this
-- connection: it shares the connection and its session table; its context
-- is made once per connection.
function Ctx:sub_context(sub)
    local subs = self.subs
    if subs == nil then
        subs = {}
        self.subs = subs
    end
    local ctx = subs[sub]
    if ctx == nil then
        ctx = sub:context(self.c)
        ctx.conn = self.conn
        subs[sub] = ctx
    end
    ctx.trace = self.trace          -- a traced request is traced throughout
    return ctx
end

function Ctx:run_sub(sub, batch)
    local ctx = self:sub_context(sub)
    ctx.i = 0
    return ctx:next(batch)
end

-- The code resumed after a yield stays in the interpreter: LuaJIT would
-- otherwise "stitch" traces across the yield and across each classic C
-- call of the epilogues below it (shotover.core), and every stitch is a
-- trace exit, dearer than interpreting those few lines (callgrind: three
-- stitches cost more than the whole interpreted epilogue path).  Calling a
-- function the JIT may not compile aborts the recording of such a trace,
-- and after a few aborts LuaJIT stops trying.
local resumed = function() end
jit.off(resumed)

-- Wait (yield the connection's coroutine) until every backend this
-- connection sent to has answered.  C resumes the coroutine only once all
-- of them have, so one yield is enough; a loop here would also be taken
-- for a hot loop by the JIT, whose traces cannot cross the yield.
function Ctx:wait()
    if C.sh_ffi_conn_outstanding(self.c) > 0 then
        yield(WAIT)
        resumed()
    end
end

-- Lanes: the batches of one CQL client may run at once (sh_conn.c), each in
-- its own coroutine, sharing chain.conn.  A batch that must wait for
-- another one (say, until it has opened a session on a backend) loops on
-- `while cond do chain:sleep() end`; the other calls chain:notify() when
-- cond may have changed.  A no-op without a connection (dry runs).
function Ctx:sleep()
    if self.c ~= nil then
        yield(SLEEP)
        resumed()
    end
end

function Ctx:notify()
    if self.c ~= nil then
        C.sh_ffi_conn_notify(self.c)
    end
end

-- Concurrency inside one connection.  spawn runs fn(...) in a coroutine of
-- its own until it first waits for a backend, and returns a task; the
-- caller goes on (typically sending elsewhere) and later calls join, which
-- waits and returns what fn returned, raising what it raised.  Backends
-- answer into the connection and C resumes it only once all of them have,
-- so one wait serves every task sending at the time.  Yields other than
-- WAIT (none in today's elements) are passed up and their results down.
local function step(task, ...)
    local ok, a = resume(task.co, ...)
    if not ok then
        task.done, task.err = true, a
    elseif status(task.co) == "dead" then
        task.done, task.res = true, a
    else
        task.yielded = a
    end
    return task
end

function Ctx:spawn(fn, ...)
    return step({ co = cocreate(fn), done = false }, ...)
end

-- Wait for every task of the list, calling done(k, result, a, b, c) for
-- each as it finishes (in the order they finish); raises the first error.
-- (a, b, c spare callers a closure per batch, which the JIT cannot compile.)
function Ctx:join_each(tasks, done, a, b, c)
    local left, err = #tasks, nil
    local seen = {}
    while true do
        for k, task in ipairs(tasks) do
            if task.done and not seen[k] then
                seen[k] = true
                left = left - 1
                if task.err ~= nil then
                    err = err or task.err
                else
                    done(k, task.res, a, b, c)
                end
            end
        end
        if left == 0 then
            break
        end
        local y
        for _, task in ipairs(tasks) do
            if not task.done then
                y = task.yielded
                break
            end
        end
        if y == WAIT then
            self:wait()
            for _, task in ipairs(tasks) do
                if not task.done and task.yielded == WAIT then
                    step(task)
                end
            end
        else
            -- another yield: pass it up for the first task that made it
            for _, task in ipairs(tasks) do
                if not task.done then
                    step(task, yield(task.yielded))
                    break
                end
            end
        end
    end
    if err ~= nil then
        error(err, 0)
    end
end

function Ctx:join(task)
    while not task.done do
        local y = task.yielded
        if y == WAIT then
            self:wait()
            step(task)
        else
            step(task, yield(y))
        end
    end
    if task.err ~= nil then
        error(task.err, 0)
    end
    return task.res
end

-- Run one batch through the chain.  A raising element fails the requests of
-- this batch only, each with an error reply; the connection stays up.
function Chain:run(ctx, batch)
    ctx.i = 0
    local ok, resp = pcall(ctx.next, ctx, batch)
    local failed = ctx.i
    ctx.i = 0
    if ok then
        if resp ~= nil then
            return resp
        end
        failed = 1
        resp = "returned no responses"
    end
    local el = self.elements[failed] or self.elements[1]
    local msg = tostring(resp)
    if self.m_errors then
        add(self.m_errors, batch.n)
    end
    add(el.m_errors, batch.n)
    log.error('chain "%s": element %d (%s) failed: %s', self.name, el.index,
              el.name, msg)
    return message.error_batch(batch, fmt('shotover: chain "%s" element %d '
                                        .. '(%s) failed: %s', self.name,
                                        el.index, el.name, msg))
end

return _M
