-- The worker side of `shotover repl` in live mode.  The repl starts the
-- config's worker in its own process (sh_ffi_workers_start) with two
-- environment variables: SHOTOVER_REPL_LISTEN, the loopback address each
-- source listens on instead of its own (comma separated, in source order,
-- so a repl never takes the port of a running proxy), and
-- SHOTOVER_REPL_TRACE, a file to which every batch's trace is appended as
-- one line (shotover.trace's serialize) before its replies go out.  The
-- repl sends a request, reads the reply, then reads the trace.
local ffi = require "ffi"
local base = require "shotover.ffi"
local trace = require "shotover.trace"
local core = require "shotover.core"

local C = base.C
local DONE = base.YIELD_DONE
local yield = coroutine.yield
local cast = ffi.cast

local _M = { _VERSION = "0.1.0" }

-- the address source i listens on
function _M.listen(i)
    local list = os.getenv("SHOTOVER_REPL_LISTEN") or ""
    local k = 0
    for addr in list:gmatch("[^,]+") do
        k = k + 1
        if k == i then
            return addr
        end
    end
    return nil
end

-- The connection runner: worker.lua's, with a trace per batch.
function _M.runner(chains)
    local out = assert(io.open(os.getenv("SHOTOVER_REPL_TRACE"), "a"))
    return function(clud, client)
        local c = cast(base.conn_ptr, clud)
        local ch = chains[C.sh_ffi_conn_source(c)]
        local ctx = ch:context(c, core.session(client))
        while true do
            local batch = C.sh_ffi_conn_batch(c)[0]
            local tr = {}
            ctx.trace = tr
            local resp = ch:run(ctx, batch)
            ctx.trace = nil
            tr.stack = nil
            tr.replies = {}
            for i = 1, resp.n do
                tr.replies[i] = trace.show(resp[i])
            end
            out:write(trace.serialize(tr), "\n")
            out:flush()
            yield(DONE, resp)
        end
    end
end

return _M
