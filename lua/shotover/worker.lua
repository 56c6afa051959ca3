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

local C = base.C
local cast = ffi.cast
local fmt = string.format
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

local chains = {}


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
    local conf, errs = config.load(path)
    if not conf then
        error(concat(errs, "\n"), 0)
    end
    local err = ffi.new("const char *[1]")
    -- `shotover repl` runs workers in-process: its listen addresses, and
    -- a batch runner that traces every batch (shotover.cli.live)
    local repl = os.getenv("SHOTOVER_REPL_TRACE")
                 and require("shotover.cli.live")
    for i, src in ipairs(conf.sources) do
        -- ch.parks: an element holds batches (declared capabilities)
        local ch = chain.build(src.chain, {
            worker = w, protocol = src.protocol, name = src.name,
            source = src.name,
            path = fmt("sources[%d].chain", i), worker_id = id,
        })
        local labels = { source = src.name }
        ch.m_requests = metrics.counter("shotover_requests_total",
            "requests run through a source's chain", labels)
        ch.m_errors = metrics.counter("shotover_chain_errors_total",
            "requests failed by a raising chain element", labels)
        ch.m_latency = metrics.histogram("shotover_request_duration_seconds",
            "time a request spent in its source's chain", labels)
        chains[i] = ch
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
        })
        if C.sh_ffi_source_listen(w, sc, err) ~= 0 then
            error(fmt("sources[%d].listen: %s", i, ffi.string(err[0])), 0)
        end
    end
    -- the body of every connection's coroutine (shotover.runner)
    return runner.body(chains, repl and repl.run())
end

return _M
