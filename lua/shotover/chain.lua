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
local runner = require "shotover.runner"
local redact = require "shotover.redact"

local WAIT = base.YIELD_WAIT
local pass_up = runner.pass
local resume = coroutine.resume
local cocreate = coroutine.create
local status = coroutine.status
local pcall = pcall
local setmetatable = setmetatable
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

-- What a validated chain config may do, from its modules' declared
-- capabilities (config.capabilities), sub-chains included: parks (an
-- element holds batches: the source's chain needs the parking runner) and
-- lanes (every element allows a client's batches to run at once).
local function declared(elements)
    local parks, lanes = false, true
    for _, el in ipairs(elements) do
        local mod = el[1]
        if type(mod) ~= "function" then
            mod = assert(config.load_transform(mod))
        end
        local caps = assert(config.capabilities(mod))
        parks = parks or caps.holds_batches
        lanes = lanes and caps.lanes
        if caps.subchains then
            for _, sub in ipairs(mod.subchains(el)) do
                local p, l = declared(sub.chain)
                parks, lanes = parks or p, lanes and l
            end
        end
    end
    return parks, lanes
end

-- Build a validated chain config into instances.  env: { worker = cdata or
-- nil (dry), protocol = "redis", name = chain name, path = config path }.
-- A transform builds its sub-chains with env.build_chain(elements, name
-- [, protocol]): they share this env, and have this chain's protocol
-- unless given another (a Redis sub-chain inside a Cassandra chain, say;
-- its subchains(conf) entry names the same protocol, so `check` checks
-- the sub-chain for it).
-- The chain's parks and lanes come from declarations (see declared), never
-- from what new() does.
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
            -- for traces
            e.kind, e.terminal = el[1], config.capabilities(mod).sink
            e.inst = mod.new(el, setmetatable({
                -- lets a transform build its sub-chains with this env
                build_chain = function(sub_elements, name, protocol)
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
                    return _M.build(sub_elements, sub)
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
    local parks, lanes = declared(elements)
    return setmetatable({ elements = els, n = #els, name = env.name,
                          source = env.source or env.name,
                          protocol = env.protocol, parks = parks,
                          lanes = lanes }, Chain)
end

-- A coroutine's context; c is the sh_run_t* (nil when dry), conn the
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
    return _M.except(batch, answered, Ctx.next, self)
end

-- The same for any hand-on: fn(a, rest, b) gets the requests `answered`
-- leaves, in order, and returns their replies (a sink refusing some
-- requests itself hands the rest to its backend this way).
function _M.except(batch, answered, fn, a, b)
    local n = batch.n
    local pass = new_batch(0)
    for i = 1, n do
        if answered[i] == nil then
            pass:push(batch[i])
        end
    end
    local sub = pass.n > 0 and fn(a, pass, b) or nil
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
        ctx.up = self               -- a trace's parent for its first element
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

-- Waiting: the yields to C are runner.lua's, installed as methods so that
-- they cost no extra call (the code after a yield runs interpreted).
--   chain:wait()    until every backend this connection sent to answered
--                   (one yield: C resumes only once all of them have)
--   chain:await(b, n) until batch b was settled n times (Lua's own events,
--                   sh_ffi_batch_settle) and every backend answered
--   chain:sleep()   lanes: a batch that must wait for another batch of its
--                   client loops on `while cond do chain:sleep() end`...
--   chain:notify()  ...and the other calls this when cond may have changed
-- sleep and notify are no-ops without a connection (dry runs).
Ctx.wait = runner.wait
Ctx.await = runner.await
Ctx.sleep = runner.sleep
Ctx.notify = runner.notify

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
                    step(task, pass_up(task.yielded))
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
            step(task, pass_up(y))
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
    -- the message may echo a request: never with its credentials
    local msg = redact.scrub(resp, batch)
    if self.m_errors then
        add(self.m_errors, batch.n)
    end
    add(el.m_errors, batch.n)
    log.with(log.ERROR, { run = ctx.c, source = self.source,
                          chain = self.name, element = el.name,
                          element_index = el.index },
             'chain "%s": element %d (%s) failed: %s', self.name, el.index,
             el.name, msg)
    return message.error_batch(batch, fmt('shotover: chain "%s" element %d '
                                        .. '(%s) failed: %s', self.name,
                                        el.index, el.name, msg))
end

return _M
