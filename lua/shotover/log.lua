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

local ffi = require "ffi"
local fields_buf = ffi.new("sh_log_fields_t")
local client_buf = ffi.new("char[80]")

-- Log with structured fields (JSON logs carry them as keys; text logs show
-- the message only): fields.run, a connection's sh_run_t (its source,
-- connection id and client address), and any of fields.source, .chain,
-- .element, .element_index.
function _M.with(level, fields, fmt, ...)
    if level > C.sh_ffi_log_level() then
        return
    end
    local msg = select("#", ...) > 0 and string_format(fmt, ...) or fmt
    local f = fields_buf
    if fields.run ~= nil then
        -- required here: the runner logs through this module
        require("shotover.runner").log_fields(fields.run, f, client_buf, 80)
    else
        ffi.fill(f, ffi.sizeof(f))
    end
    -- the strings stay referenced by `fields` while C copies them out
    if fields.source then f.source = fields.source end
    f.chain = fields.chain
    f.element = fields.element
    f.element_index = fields.element_index or 0
    C.sh_ffi_log_fields(level, msg, #msg, f)
end

function _M.error(fmt, ...) log(1, fmt, ...) end
function _M.warn(fmt, ...) log(2, fmt, ...) end
function _M.info(fmt, ...) log(3, fmt, ...) end
function _M.debug(fmt, ...) log(4, fmt, ...) end

-- Are logs JSON (--log-format json)?
function _M.json()
    return C.sh_ffi_log_json() ~= 0
end

function _M.enabled(level)
    return level <= C.sh_ffi_log_level()
end

return _M
