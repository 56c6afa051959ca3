-- The one FFI seam: declarations generated from c/sh_ffi.h (compiled into
-- the binary and preloaded as "shotover.cdef"), resolved against the
-- shotover executable itself, which exports the C core's symbols.  Lua code
-- runs inside shotover: as a worker, or as `shotover lua SCRIPT` (specs).
local ffi = require "ffi"

ffi.cdef(require "shotover.cdef")

local function core()
    local ok = pcall(function() return ffi.C.sh_ffi_log_level end)
    if not ok then
        error("shotover.ffi: the C core is not here: run Lua inside "
              .. "shotover (`shotover lua SCRIPT`)", 2)
    end
    return ffi.C
end

local C = core()

-- Constants come from the header (enums in sh_ffi.h), never copied as
-- numbers; these are plain Lua numbers, cheap to compare in traces.
local _M = {
    _VERSION = "0.1.0",
    C = C,
    OK = C.SH_OK, ERROR = C.SH_ERROR, AGAIN = C.SH_AGAIN,
    DECLINED = C.SH_DECLINED,
    PROTO_REDIS = C.SH_PROTO_REDIS, PROTO_CQL = C.SH_PROTO_CQL,
    YIELD_WAIT = C.SH_YIELD_WAIT, YIELD_DONE = C.SH_YIELD_DONE,
    YIELD_MORE = C.SH_YIELD_MORE, YIELD_SLEEP = C.SH_YIELD_SLEEP,
    WAKE_BATCH = C.SH_WAKE_BATCH, WAKE_TIMER = C.SH_WAKE_TIMER,
    WAKE_EOF = C.SH_WAKE_EOF,
    frame_ptr = ffi.typeof("sh_frame_t *"),
    batch_ptr = ffi.typeof("sh_batch_t *"),
    run_ptr = ffi.typeof("sh_run_t *"),
    worker_ptr = ffi.typeof("sh_worker_t *"),
}

return _M
