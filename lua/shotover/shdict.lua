-- Shared dicts from Lua: named key/value stores in C that every worker
-- shares (OpenResty's lua_shared_dict, across threads).  open(name) from
-- any worker gives the same dict; it holds at most `capacity` entries, the
-- least recently used going first.  See c/sh_shdict.c.
--
--   local shdict = require "shotover.shdict"
--   local d = shdict.open("cache", 10000)
--   d:set("k", "v", 30)            -- a time to live in seconds, optional
--   d:get("k")                      --> "v" (nil when absent)
--   d:incr("hits", 1, 0)            --> 1
--   d:gcra("k", now_ns, interval_ns, tolerance_ns, cost)
--                                   --> true | false, retry_after_ns
local ffi = require "ffi"
local base = require "shotover.ffi"

local C = base.C
local ffi_string = ffi.string
local tonumber = tonumber
local error = error
local type = type
local setmetatable = setmetatable

local OK, AGAIN, DECLINED = base.OK, base.AGAIN, base.DECLINED
local UINT64_MAX = 0xffffffffffffffffULL

local _M = { _VERSION = "0.1.0" }

local dict_out = ffi.new("sh_shdict_t *[1]")
local err_out = ffi.new("const char *[1]")
local len_out = ffi.new("size_t[1]")
local i64_out = ffi.new("int64_t[1]")
local u64_out = ffi.new("uint64_t[3]")
local buf_cap = 4096
local buf = ffi.new("uint8_t[?]", buf_cap)

local Dict = {}
Dict.__index = Dict

local dicts = {}      -- this Lua state's wrappers, by name

-- The dict called name (made with room for `capacity` entries, default
-- 10000, when no worker made it yet; the first capacity given wins).
function _M.open(name, capacity)
    local d = dicts[name]
    if d then
        return d
    end
    if type(name) ~= "string" then
        error('bad "name" argument: expected a string', 2)
    end
    if C.sh_ffi_shdict_open(name, capacity or 10000, dict_out, err_out)
       ~= OK
    then
        return nil, ffi_string(err_out[0])
    end
    d = setmetatable({ name = name, d = dict_out[0] }, Dict)
    dicts[name] = d
    return d
end

-- The value of key as a string, or nil when absent.
function Dict:get(key)
    local rc = C.sh_ffi_shdict_get(self.d, key, #key, buf, buf_cap, len_out)
    if rc == AGAIN then
        local n = tonumber(len_out[0])
        local big = ffi.new("uint8_t[?]", n)
        rc = C.sh_ffi_shdict_get(self.d, key, #key, big, n, len_out)
        if rc == OK then
            return ffi_string(big, len_out[0])
        end
    end
    if rc == OK then
        return ffi_string(buf, len_out[0])
    elseif rc == DECLINED or rc == AGAIN then
        return nil
    end
    return nil, "shared dict: bad key"
end

-- Set key to value (a string or number), for ttl seconds (nil: until
-- evicted or deleted).  true, or nil and an error.
function Dict:set(key, value, ttl)
    if type(value) ~= "string" then
        value = tostring(value)
    end
    local ns = ttl and ttl > 0 and ttl * 1e9 or 0
    if C.sh_ffi_shdict_set(self.d, key, #key, value, #value, ns, err_out)
       ~= OK
    then
        return nil, ffi_string(err_out[0])
    end
    return true
end

-- Add delta (default 1) to the integer at key, which starts at init
-- (default 0) when absent.  The new value, or nil and an error.
function Dict:incr(key, delta, init)
    if C.sh_ffi_shdict_incr(self.d, key, #key, delta or 1, init or 0,
                            i64_out, err_out) ~= OK
    then
        return nil, ffi_string(err_out[0])
    end
    return tonumber(i64_out[0])
end

-- true when key was there
function Dict:delete(key)
    return C.sh_ffi_shdict_delete(self.d, key, #key) == OK
end

function Dict:flush()
    C.sh_ffi_shdict_flush(self.d)
end

-- { count, capacity, evictions }
function Dict:stats()
    C.sh_ffi_shdict_stats(self.d, u64_out, u64_out + 1, u64_out + 2)
    return { count = tonumber(u64_out[0]), capacity = tonumber(u64_out[1]),
             evictions = tonumber(u64_out[2]) }
end

-- One GCRA step of `cost` units (see c/sh_shdict.c): true when allowed;
-- false and the nanoseconds until it would pass (math.huge: never) when
-- limited.  now_ns nil or 0: the core's monotonic clock.
function Dict:gcra(key, now_ns, interval_ns, tolerance_ns, cost)
    local rc = C.sh_ffi_shdict_gcra(self.d, key, #key, now_ns or 0,
                                    interval_ns, tolerance_ns, cost or 1,
                                    u64_out)
    if rc == OK then
        return true
    elseif rc == DECLINED then
        local r = u64_out[0]
        return false, r == UINT64_MAX and math.huge or tonumber(r)
    end
    error("shared dict " .. self.name .. ": gcra on a bad key or interval, "
          .. "or the key holds another kind of value", 2)
end

return _M
