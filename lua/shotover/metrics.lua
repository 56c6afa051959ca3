-- Metrics from Lua: series in the C registry every worker shares, exposed
-- on the admin endpoint's /metrics.  Label values are escaped here; keep
-- them bounded (no keys or query text in a label).
local ffi = require "ffi"
local base = require "shotover.ffi"

local C = base.C
local concat = table.concat
local sort = table.sort
local gsub = string.gsub
local fmt = string.format

local _M = { _VERSION = "0.1.0", COUNTER = 1, GAUGE = 2, HISTOGRAM = 3 }

local out = ffi.new("sh_metric_t *[1]")
local err = ffi.new("const char *[1]")

local function escape(v)
    return (gsub(tostring(v), '[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"',
                                           ["\n"] = "\\n" }))
end

-- labels { source = "redis" } as `source="redis"`, keys sorted
function _M.labels(t)
    local keys, parts = {}, {}
    for k in pairs(t or {}) do
        keys[#keys + 1] = k
    end
    sort(keys)
    for i, k in ipairs(keys) do
        parts[i] = fmt('%s="%s"', k, escape(t[k]))
    end
    return concat(parts, ",")
end

local function register(kind, name, help, labels)
    if C.sh_ffi_metric_register(kind, name, help, _M.labels(labels), out,
                                err) ~= 0
    then
        error("metrics: " .. name .. ": " .. ffi.string(err[0]), 3)
    end
    return out[0]
end

function _M.counter(name, help, labels)
    return register(1, name, help, labels)
end

function _M.gauge(name, help, labels)
    return register(2, name, help, labels)
end

function _M.histogram(name, help, labels)
    return register(3, name, help, labels)
end

_M.add = C.sh_ffi_metric_add                 -- (metric, delta)
_M.observe = C.sh_ffi_metric_observe         -- (metric, ns, count)
_M.now_ns = C.sh_ffi_now_ns                  -- a number (double)

-- The id of series m, for shotover.core's since(id, t0, count) and
-- add(id, delta): classic C functions that code running in the interpreter
-- (after a yield) calls far more cheaply than the FFI ones above.
function _M.id(m)
    return tonumber(C.sh_ffi_metric_id(m))
end

-- A counter's or gauge's value, as a number.
function _M.value(m)
    return tonumber(C.sh_ffi_metric_value(m))
end

return _M
