-- Descriptors a worker watches (c/sh_watch.c): a pipe that a library's own
-- threads write a byte to when they have something for this worker (the
-- kafka transform's producers), read on the worker's loop.  Each watch has
-- a token; when it is readable C calls shotover.worker.on_watch, which
-- lands in dispatch(token) and the handler registered for it.  At worker
-- stop, every `stop` function registered runs first (flush what is in
-- flight), then C closes the watches.  Module state is per worker (each
-- worker has its own Lua state).
local ffi = require "ffi"
local base = require "shotover.ffi"
local log = require "shotover.log"

local C = base.C
local pcall = pcall

local _M = { _VERSION = "0.1.0" }

local handlers = {}       -- token -> function
local stops = {}          -- token -> function, run at worker stop
local last = 0            -- the last token given
local wfd_out = ffi.new("int[1]")
local err_out = ffi.new("const char *[1]")

-- A pipe worker w's loop watches: on_readable() runs each time something
-- was written to it, stop() (optional) once at worker stop.  Returns the
-- token and the pipe's write end (a descriptor number), or raises.
function _M.pipe(w, on_readable, stop)
    last = last + 1
    if C.sh_ffi_watch_pipe(w, last, wfd_out, err_out) ~= 0 then
        error("watch: pipe: " .. ffi.string(err_out[0]), 0)
    end
    handlers[last], stops[last] = on_readable, stop
    return last, wfd_out[0]
end

-- Call token's handler every ms milliseconds as well (for deadlines).
function _M.tick(w, token, ms)
    C.sh_ffi_watch_tick(w, token, ms)
end

-- Stop watching token (its pipe closes).
function _M.close(w, token)
    handlers[token], stops[token] = nil, nil
    C.sh_ffi_watch_close(w, token)
end

function _M.dispatch(token)
    local fn = handlers[token]
    if fn ~= nil then
        fn()
    end
end

-- Worker stop: every stop function, each on its own (one that raises is
-- logged and the others still run).
function _M.stop_all()
    local tokens = {}
    for token in pairs(stops) do tokens[#tokens + 1] = token end
    table.sort(tokens)
    for _, token in ipairs(tokens) do
        local fn = stops[token]          -- (an earlier one may have gone)
        local ok, err = true, nil
        if fn ~= nil then
            ok, err = pcall(fn)
        end
        if not ok then
            log.error("watch %d: at stop: %s", token, tostring(err))
        end
    end
    handlers, stops = {}, {}
end

return _M
