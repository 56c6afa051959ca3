-- The runner: the one module that owns the yield protocol with the C core,
-- and the only Lua code that calls the run functions of the FFI
-- (sh_ffi_run_*).  When the C side renames or splits them, this file is
-- the one to change.
--
-- The protocol.  C starts a run's coroutine (a client connection's main
-- run, a lane, a shadow: see c/sh_conn.h) with the function `body`
-- returns, passing the sh_run_t and its session (whose session table the
-- runs of one client share) as light userdata, and resumes it each time a
-- batch is ready (sh_ffi_run_batch).  The coroutine yields:
--   WAIT          backends are pending (Ctx:wait); C resumes it once every
--                 one of them has answered
--   SLEEP         another batch of the same client must go first (lanes,
--                 Ctx:sleep); resumed after a Ctx:notify, or spuriously
--   MORE          a parking chain holds the batch (park.lua); resumed with
--                 a reason (WAKE_BATCH: the next batch, WAKE_TIMER,
--                 WAKE_EOF)
--   DONE, resp    the batch is done: resp (a batch, or nil) goes to the
--                 client, or nowhere for a shadow
-- Every one of those yields is in this file: the loops below yield DONE
-- and MORE, `wait`/`sleep` (which chain.lua installs as Ctx methods) yield
-- WAIT and SLEEP, and `pass` forwards what a nested coroutine (a spawned
-- task, a parked invocation) yielded.
--
-- Three bodies, one loop each: a plain chain (one batch per pass), a
-- parking chain (park.lua's invocations; yields MORE while some are
-- parked), and a shadow run (the handler a transform registered
-- with add_handler runs each batch).  A plain or parking chain runs each
-- batch with `run(chain, ctx, batch)`, Chain.run unless the caller of
-- `body` passes its own (the repl's tracing runner, shotover.cli.live): a
-- hook costs the plain path nothing, it is the function the loop calls.
local ffi = require "ffi"
local base = require "shotover.ffi"
local metrics = require "shotover.metrics"
local core = require "shotover.core"

local C = base.C
local WAIT, SLEEP = base.YIELD_WAIT, base.YIELD_SLEEP
local DONE, MORE = base.YIELD_DONE, base.YIELD_MORE
local WAKE_BATCH, WAKE_EOF = base.WAKE_BATCH, base.WAKE_EOF
local yield = coroutine.yield
local cast = ffi.cast
local ceil = math.ceil
local tonumber = tonumber
local run_ptr = base.run_ptr
local uintptr_t = ffi.typeof("uintptr_t")
local now_ns = metrics.now_ns
local core_add, core_since, session = core.add, core.since, core.session
local conn_batch = C.sh_ffi_run_batch
local outstanding = C.sh_ffi_run_outstanding
local conn_notify = C.sh_ffi_run_notify
local conn_handler = C.sh_ffi_run_handler
local conn_source = C.sh_ffi_run_source
local conn_gen = C.sh_ffi_run_gen
local conn_await = C.sh_ffi_run_await
local AGAIN = base.AGAIN

local _M = { _VERSION = "0.1.0" }

local park                  -- shotover.park, loaded by the first parking chain

-- The code resumed after a yield stays in the interpreter: LuaJIT would
-- otherwise "stitch" traces across the yield and across each classic C
-- call of the epilogues below it (shotover.core), and every stitch is a
-- trace exit, dearer than interpreting those few lines (callgrind: three
-- stitches cost more than the whole interpreted epilogue path).  Calling a
-- function the JIT may not compile aborts the recording of such a trace,
-- and after a few aborts LuaJIT stops trying.
local resumed = function() end
jit.off(resumed)

-- Yields made on behalf of a chain context (chain.lua installs these as
-- Ctx:wait, Ctx:sleep and Ctx:notify, so they cost no extra call).

-- Wait (yield the connection's coroutine) until every backend this
-- connection sent to has answered.  C resumes the coroutine only once all
-- of them have, so one yield is enough; a loop here would also be taken
-- for a hot loop by the JIT, whose traces cannot cross the yield.
function _M.wait(ctx)
    if outstanding(ctx.c) > 0 then
        yield(WAIT)
        resumed()
    end
end

-- Wait until batch b (one Lua made for the purpose) was settled n times
-- (sh_ffi_batch_settle, from a watch handler: the kafka transform's
-- delivery reports), and every backend answered too.  No-op when n is 0.
function _M.await(ctx, b, n)
    if n > 0 and conn_await(ctx.c, b, n) == AGAIN then
        yield(WAIT)
        resumed()
    end
end

-- Lanes: a batch that must wait for another batch of its client loops on
-- `while cond do chain:sleep() end`; the other calls chain:notify() when
-- cond may have changed (C wakes the client's sleeping batches).  No-ops
-- without a connection (dry runs).
function _M.sleep(ctx)
    if ctx.c ~= nil then
        yield(SLEEP)
        resumed()
    end
end

function _M.notify(ctx)
    if ctx.c ~= nil then
        conn_notify(ctx.c)
    end
end

-- Pass on to C (or to the coroutine above) what a nested coroutine
-- yielded, and return what the resume brings back.
function _M.pass(...)
    return yield(...)
end

-- The C core's side of a connection, as the parking loop uses it; specs
-- pass their own table to drive a chain without a connection.
local C_IO = {
    batch = function(c) return conn_batch(c)[0] end,
    wake_reason = C.sh_ffi_run_wake_reason,
    timer = C.sh_ffi_run_timer,
    timer_stop = C.sh_ffi_run_timer_stop,
}

-- The loop of a plain chain and of a shadow: one batch per pass, run as
-- run(a, b, batch).  The epilogue runs interpreted after a wait: classic C
-- calls on plain numbers (shotover.core; metric id 0 counts nothing), no
-- table, closure or string per batch, and C takes resp from the yield.
local function loop(c, run, a, b, requests_id, latency_id)
    while true do
        local t0 = now_ns()
        local batch = conn_batch(c)[0]
        local n = batch.n
        local resp = run(a, b, batch)
        core_add(requests_id, n)
        -- each request of the batch waited as long as the batch
        core_since(latency_id, t0, n)
        yield(DONE, resp)
    end
end

-- The loop of a parking chain: each batch runs in an invocation of
-- park.lua's group g; DONE once every invocation of the group has its
-- responses (joined in batch order), MORE while some are parked.
local function loop_parking(c, g, io, requests_id, latency_id)
    local armed = false
    while true do
        local reason = io.wake_reason(c)
        if reason == WAKE_BATCH then
            g:take(io.batch(c), now_ns())
        else
            -- the timer fired or the client is gone: due holders flush
            g:expire(reason == WAKE_EOF, now_ns())
        end
        local resp = g:settle()
        local deadline = g:deadline()
        if deadline ~= nil then
            local ms = ceil((deadline - now_ns()) / 1e6)
            io.timer(c, ms < 1 and 1 or ms)
            armed = true
        elseif armed then
            io.timer_stop(c)
            armed = false
        end
        if resp ~= nil then
            local segs, nseg, total = g.segs, g.nseg, 0
            for s = 1, nseg do
                local inv = segs[s]
                total = total + inv.n
                -- each request waited as long as its batch did
                core_since(latency_id, inv.t0, inv.n)
            end
            core_add(requests_id, total)
            g:recycle()
            yield(DONE, resp)
        else
            yield(MORE)
        end
    end
end

-- The subject of run c's client certificate (mTLS), or nil.
local subject_buf = ffi.new("char[1024]")

local function tls_subject(c)
    if C.sh_ffi_run_tls_subject(c, subject_buf, 1024) ~= base.OK then
        return nil
    end
    return ffi.string(subject_buf)
end

-- The C path (sh_ffi_run_direct): the sink of a chain that is only that
-- sink hands its pool to the C core once the batches C can take need
-- nothing more of Lua (the redis sink at once, the cassandra sink once
-- the client's session is open on its node); those batches then never
-- enter Lua.  A no-op on a context that is not eligible (ctx.direct,
-- set by serve) or was handed over already.
function _M.direct(ctx)
    if ctx.direct then
        ctx.direct = nil
        local ch = ctx.chain
        C.sh_ffi_run_direct(ctx.c, ch.direct.pool, ch.direct.proto,
                            ch.m_requests, ch.m_latency,
                            ch.elements[1].m_latency, ch.m_direct)
    end
end

-- The body of client connection c (nil in specs) running chain ch, whose
-- session table is conn (a new one if nil).  run(ch, ctx, batch) runs one
-- batch (default Chain.run); io replaces the C core for a parking chain
-- (specs).  Never returns.
function _M.serve(c, ch, conn, run, io)
    local hooked = run ~= nil
    run = run or ch.run
    -- no ids (a spec's chain): 0 counts nothing
    local requests_id = ch.m_requests and metrics.id(ch.m_requests) or 0
    local latency_id = ch.m_latency and metrics.id(ch.m_latency) or 0
    conn = conn or {}
    if c ~= nil and conn.tls_subject == nil then
        conn.tls_subject = tls_subject(c)   -- its client certificate's
    end
    if ch.parks then                -- a chain that holds requests
        park = park or require "shotover.park"
        return loop_parking(c, park.group(ch, c, conn, run), io or C_IO,
                            requests_id, latency_id)
    end
    local ctx = ch:context(c, conn)
    if ch.direct ~= nil and c ~= nil and not hooked then
        -- a chain that is only a sink: batches go to C once the sink
        -- calls runner.direct (a hooked runner, the repl's tracing, keeps
        -- every batch in Lua)
        ctx.direct = true
        if ch.direct.proto == base.PROTO_REDIS then
            _M.direct(ctx)              -- from the next batch on
        end
    end
    return loop(c, run, ch, ctx, requests_id, latency_id)
end

-- Handlers run the coroutines of shadow runs: a transform adds
-- one per worker with add_handler(open) and gets its number, which it
-- gives shadow().  When a shadow's coroutine starts, open(c) returns
-- (run, a, b); each batch is then run(a, b, batch), and what that returns
-- is the shadow's responses (written nowhere).
local handlers = {}

function _M.add_handler(open)
    handlers[#handlers + 1] = open
    return #handlers
end

-- The function every connection's coroutine starts with (the worker
-- returns it to C): a shadow goes to its handler, a client connection to
-- its source's chain in the configuration it was accepted in,
-- gens[gen][i] (a reload adds configurations; a connection keeps its
-- own).  run as in serve.
function _M.body(gens, run)
    return function(clud, sess)
        local c = cast(run_ptr, clud)
        local h = conn_handler(c)
        if h ~= 0 then
            local hrun, a, b = handlers[h](c)
            return loop(c, hrun, a, b, 0, 0)
        end
        return _M.serve(c, gens[conn_gen(c)][conn_source(c)], session(sess),
                        run)
    end
end

-- Shadow connections (see sh_ffi.h): client c's live shadow for handler h
-- and false, or a new one and true (its sinks start a session of their
-- own: seed it), or nil when none can be made.  Ask each time, never keep
-- the pointer.
local shadow_out = ffi.new("sh_run_t *[1]")

function _M.shadow(c, h)
    local rc = C.sh_ffi_run_shadow(c, h, shadow_out)
    if rc == base.ERROR then
        return nil
    end
    return shadow_out[0], rc == base.DECLINED
end

-- Is run c a shadow (it then has no shadows of its own)?
function _M.is_shadow(c)
    return conn_handler(c) ~= 0
end

-- Queue request req on shadow s, paired with frame paired (or nil), and
-- how many requests s has queued.
function _M.push(s, req, paired)
    return C.sh_ffi_run_push(s, req, paired)
end

function _M.queued(s)
    return C.sh_ffi_run_queued(s)
end

-- In a shadow's handler: the frames its current batch was paired with.
function _M.paired(c)
    return C.sh_ffi_run_paired(c)[0]
end

-- A connection's identity, for the few transforms that need it: a number
-- (a key for tables, unique while c lives), and the client's address.
function _M.key(c)
    return tonumber(cast(uintptr_t, c))
end

-- The structured log fields of connection c into f (sh_log_fields_t): its
-- source, connection id and client address (written to buf, cap bytes).
function _M.log_fields(c, f, buf, cap)
    return C.sh_ffi_run_log_fields(c, f, buf, cap)
end

local peer_buf = ffi.new("char[64]")

function _M.peer(c)
    if c == nil or C.sh_ffi_run_peer(c, peer_buf, 64) ~= 0 then
        return nil
    end
    return ffi.string(peer_buf)
end

return _M
