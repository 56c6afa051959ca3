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

local _M = {
    _VERSION = "0.1.0",
    C = core(),
    OK = 0, ERROR = -1, AGAIN = -2, DECLINED = -5,
    PROTO_REDIS = 1, PROTO_CQL = 2,
    YIELD_WAIT = 0, YIELD_DONE = 1, YIELD_MORE = 2, YIELD_SLEEP = 3,
    WAKE_BATCH = 0, WAKE_TIMER = 1, WAKE_EOF = 2,
    frame_ptr = ffi.typeof("sh_frame_t *"),
    batch_ptr = ffi.typeof("sh_batch_t *"),
    conn_ptr = ffi.typeof("sh_conn_t *"),
    worker_ptr = ffi.typeof("sh_worker_t *"),
}

return _M
