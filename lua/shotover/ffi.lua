-- The one FFI seam: declarations generated from c/sh_ffi.h, and the C
-- library they live in (the shotover executable itself, or the shared core
-- library when specs run under plain LuaJIT).
local ffi = require "ffi"

ffi.cdef(require "shotover.cdef")

local function core()
    local ok = pcall(function() return ffi.C.sh_ffi_log_level end)
    if ok then
        return ffi.C
    end
    local path = os.getenv("SHOTOVER_CORE_LIB")
    if not path then
        error("shotover.ffi: not inside shotover and SHOTOVER_CORE_LIB "
              .. "is not set", 2)
    end
    return ffi.load(path)
end

local _M = {
    _VERSION = "0.1.0",
    C = core(),
    OK = 0, ERROR = -1, AGAIN = -2, DECLINED = -5,
    PROTO_REDIS = 1, PROTO_CQL = 2,
    YIELD_WAIT = 0, YIELD_DONE = 1,
    frame_ptr = ffi.typeof("sh_frame_t *"),
    batch_ptr = ffi.typeof("sh_batch_t *"),
    conn_ptr = ffi.typeof("sh_conn_t *"),
    worker_ptr = ffi.typeof("sh_worker_t *"),
}

return _M
