-- Logging through the C core: one line per message, text or JSON.
local base = require "shotover.ffi"

local C = base.C
local select = select
local string_format = string.format

local _M = { _VERSION = "0.1.0", ERROR = 1, WARN = 2, INFO = 3, DEBUG = 4 }

local function log(level, fmt, ...)
    if level > C.sh_ffi_log_level() then
        return
    end
    local msg = select("#", ...) > 0 and string_format(fmt, ...) or fmt
    C.sh_ffi_log(level, msg, #msg)
end

function _M.error(fmt, ...) log(1, fmt, ...) end
function _M.warn(fmt, ...) log(2, fmt, ...) end
function _M.info(fmt, ...) log(3, fmt, ...) end
function _M.debug(fmt, ...) log(4, fmt, ...) end

function _M.enabled(level)
    return level <= C.sh_ffi_log_level()
end

return _M
