-- Worker start-up, called by the C core once per worker thread: load the
-- config, build each source's chain (instances per worker), listen, and
-- hand C the function each client connection's coroutine runs.
local ffi = require "ffi"
local base = require "shotover.ffi"
local config = require "shotover.config"
local chain = require "shotover.chain"
local schema = require "shotover.schema"
local metrics = require "shotover.metrics"
local runner = require "shotover.runner"
local pools = require "shotover.pools"

local C = base.C
local cast = ffi.cast
local fmt = string.format
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

-- the configurations in use: gens[gen][source index] is a chain; a
-- connection runs the configuration it was accepted in (sh_conn_t.gen)
local gens = {}
local current = 0           -- the newest
local repl_live             -- shotover.cli.live under `shotover repl`
local load


function _M.init(wlud, path, id)
    local w = cast(base.worker_ptr, wlud)
    -- developers: SHOTOVER_JIT_V=FILE logs JIT trace events (jit.v);
    -- SHOTOVER_JIT_V=dump:FILE dumps traces (jit.dump, mode from
    -- SHOTOVER_JIT_DUMP_MODE, default "bi")
    local jitv = os.getenv("SHOTOVER_JIT_V")
    if jitv then
        local dump = jitv:match("^dump:(.+)$")
        if dump then
            require("jit.dump").start(os.getenv("SHOTOVER_JIT_DUMP_MODE")
                                      or "bi", dump .. "." .. id)
        else
            require("jit.v").start(jitv .. "." .. id)
        end
    end
    -- developers: SHOTOVER_JIT_P=MODE:FILE samples the worker with LuaJIT's
    -- profiler (jit.p, e.g. "vf:/tmp/prof"); written when the worker exits
    local jitp = os.getenv("SHOTOVER_JIT_P")
    if jitp then
        local mode, file = jitp:match("^([^:]*):(.+)$")
        require("jit.p").start(mode or "vf", (file or jitp) .. "." .. id)
    end
    local repl = os.getenv("SHOTOVER_REPL_TRACE")
                 and require("shotover.cli.live")
    repl_live = repl
    load(w, path, id, 1)
    -- the body of every connection's coroutine (shotover.runner)
    return runner.body(gens, repl and repl.run())
end

-- Load the config at path as configuration gen of worker w: build each
-- source's chain, listen (C keeps a listener already on the address), and
-- close the listeners the config no longer has.  Every chain is built
-- before anything listens, so a chain that fails to build changes nothing.
load = function(w, path, id, gen)
    local conf, errs = config.load(path)
    if not conf then
        error(concat(errs, "\n"), 0)
    end
    local err = ffi.new("const char *[1]")
    local repl = repl_live
    local chains = {}
    pools.begin(gen)
    local ok, e = pcall(function()
        for i, src in ipairs(conf.sources) do
            -- ch.parks: an element holds batches (declared capabilities)
            local ch = chain.build(src.chain, {
                worker = w, protocol = src.protocol, name = src.name,
                source = src.name, listen = src.listen,
                path = fmt("sources[%d].chain", i), worker_id = id,
            })
            local labels = { source = src.name }
            ch.m_requests = metrics.counter("shotover_requests_total",
                "requests run through a source's chain", labels)
            ch.m_errors = metrics.counter("shotover_chain_errors_total",
                "requests failed by a raising chain element", labels)
            ch.m_latency = metrics.histogram(
                "shotover_request_duration_seconds",
                "time a request spent in its source's chain", labels)
            -- a chain that is only a sink runs most batches in C
            -- (shotover.runner.direct)
            local el = ch.n == 1 and ch.elements[1]
            local inst = el and el.inst
            local pool, proto
            if inst and inst.direct_pool then
                pool, proto = inst:direct_pool()
            end
            if pool ~= nil then
                ch.direct = { pool = pool, proto = proto }
                ch.m_direct = metrics.counter(
                    "shotover_direct_batches_total",
                    "batches of a chain that is only a sink, run by the "
                    .. "C core without entering Lua", labels)
            end
            chains[i] = ch
        end
    end)
    pools.finish()
    if not ok then
        pools.release(gen)
        error(e, 0)
    end
    gens[gen] = chains
    -- (`shotover repl` runs workers in-process: its listen addresses, and
    -- a batch runner that traces every batch: shotover.cli.live)
    C.sh_ffi_worker_busy_poll(w, conf.busy_poll_us)
    C.sh_ffi_worker_uring(w, conf.io_uring and 1 or 0)
    C.sh_ffi_sources_begin(w)
    local failed = {}
    for i, src in ipairs(conf.sources) do
        local host, port = schema.parse_hostport(repl and repl.listen(i)
                                                  or src.listen)
        local sc = ffi.new("sh_source_conf_t", {
            name = src.name, host = host, port = port,
            proto = require("shotover.protocols").get(src.protocol).id,
            index = i,
            -- for CQL the C reader's body limit travels in max_bulk_len
            max_bulk_len = src.protocol == "cassandra" and src.max_frame_size
                           or src.max_bulk_len,
            max_elements = src.max_elements,
            max_inline_len = src.max_inline_len,
            max_write_queue = src.max_write_queue,
            max_batch = src.max_batch,
            lanes = src.lanes,
            share_listen = src.share_listen and 1 or 0,
            gen = gen,
            tls = require("shotover.tls").context(src.tls, true),
        })
        if C.sh_ffi_source_listen(w, sc, err) ~= 0 then
            failed[#failed + 1] = fmt("sources[%d].listen: %s", i,
                                      ffi.string(err[0]))
        end
    end
    if #failed > 0 and gen == 1 then
        error(concat(failed, "\n"), 0)
    end
    -- a listener that failed keeps nothing of the old one open either:
    -- the config asked for this address, not the previous one
    C.sh_ffi_sources_prune(w)
    current = gen
    if #failed > 0 then
        error(concat(failed, "\n"), 0)
    end
end

-- SIGHUP or POST /reload, once the main thread found the config valid:
-- new connections get new chains; the connections there are keep theirs
-- until they leave, so a pinned Redis connection, a transaction or a CQL
-- session stays as it was.  Sinks with unchanged settings keep their
-- pools (shotover.pools).
function _M.reload(wlud, path, id)
    local w = cast(base.worker_ptr, wlud)
    load(w, path, id, current + 1)
end

-- Drop the configurations no connection runs any more, with the pools
-- only they held; returns how many old ones are still in use.
function _M.collect(wlud)
    local w = cast(base.worker_ptr, wlud)
    local left = 0
    for g in pairs(gens) do
        if g ~= current then
            if C.sh_ffi_worker_gen_conns(w, g) == 0
               and C.sh_ffi_worker_shadows(w) == 0
            then
                gens[g] = nil
                pools.release(g)
            else
                left = left + 1
            end
        end
    end
    if left == 0 then
        collectgarbage()                 -- the old chains' memory
    end
    return left
end

-- A watch (shotover.watch) is readable: its handler reads what came.
function _M.on_watch(_, token)
    require("shotover.watch").dispatch(token)
end

-- The worker stops (its clients are gone or being closed): what a watch's
-- owner holds in flight is flushed before the watches close.
function _M.stop()
    require("shotover.watch").stop_all()
end

return _M
