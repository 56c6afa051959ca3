-- The worker side of `shotover repl` in live mode.  The repl starts the
-- config's worker in its own process (sh_ffi_workers_start) with two
-- environment variables: SHOTOVER_REPL_LISTEN, the loopback address each
-- source listens on instead of its own (comma separated, in source order,
-- so a repl never takes the port of a running proxy), and
-- SHOTOVER_REPL_TRACE, a file to which every batch's trace is appended as
-- one line (shotover.trace's serialize) before its replies go out.  The
-- repl sends a request, waits for its batch's trace, then reads frames
-- until the one that is the reply (see Live:run in shotover.cli.repl:
-- pub/sub messages, RESP3 pushes and CQL events come unasked).
local trace = require "shotover.trace"

local getenv = os.getenv

local _M = { _VERSION = "0.1.0" }

-- the address source i listens on
function _M.listen(i)
    local list = getenv("SHOTOVER_REPL_LISTEN") or ""
    local k = 0
    for addr in list:gmatch("[^,]+") do
        k = k + 1
        if k == i then
            return addr
        end
    end
    return nil
end

-- The batch runner the worker hands shotover.runner (run(chain, ctx,
-- batch), in place of Chain.run): the same connection loop as `shotover
-- run`, shadows and parking included, with a trace of every batch of a
-- client connection.
function _M.run()
    local out = assert(io.open(getenv("SHOTOVER_REPL_TRACE"), "a"))
    return function(ch, ctx, batch)
        local tr = {}
        ctx.trace = tr
        local resp = ch:run(ctx, batch)
        ctx.trace = nil
        trace.finish(tr, resp, batch)
        out:write(trace.serialize(tr), "\n")
        out:flush()
        return resp
    end
end

return _M
