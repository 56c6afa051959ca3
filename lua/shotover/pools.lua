-- Backend pools across configurations.  A reload builds new chains; a sink
-- whose settings did not change must keep its backend connections (no
-- reconnect, a pinned client's dedicated connection found where it was),
-- so sinks get their pools here: by a key made of their module and
-- settings, the n-th sink with the same key in a configuration gets the
-- same pool as the n-th in the previous one.  A configuration holds a
-- reference on each pool it got; a pool is freed when no configuration in
-- use holds it (shotover.worker.collect).
local _M = { _VERSION = "0.1.0" }

local pairs, type, tostring = pairs, type, tostring
local sort, concat = table.sort, table.concat

local cache = {}        -- key -> { pool = cdata, refs = n, free = fn }
local held = {}         -- configuration -> { key, ... }
local building          -- the configuration being built, or nil
local seen              -- key -> times used while building it

-- A key for settings t: every key and value, sorted (secrets included:
-- a changed password is a changed pool).
local function canon(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = tostring(k) end
    sort(keys)
    local out = {}
    for i, k in ipairs(keys) do
        local v = t[k]
        if type(v) == "table" then v = canon(v) end
        out[i] = k .. "=" .. tostring(v)
    end
    return "{" .. concat(out, ",") .. "}"
end

-- Start building configuration gen (pools got now are its).
function _M.begin(gen)
    building, seen = gen, {}
    held[gen] = held[gen] or {}
end

function _M.finish()
    building, seen = nil, nil
end

-- The pool for a sink of module `module` with settings conf: made with
-- make() the first time, freed with free(pool) once unused.
function _M.get(module, conf, make, free)
    local key = module .. canon(conf)
    if seen then
        local n = (seen[key] or 0) + 1
        seen[key] = n
        key = key .. "#" .. n
    end
    local e = cache[key]
    if e == nil then
        e = { pool = make(), refs = 0, free = free }
        cache[key] = e
    end
    if building then
        e.refs = e.refs + 1
        local h = held[building]
        h[#h + 1] = key
    end
    return e.pool
end

-- Configuration gen is no longer used: free the pools only it held.
function _M.release(gen)
    local h = held[gen]
    if h == nil then return end
    held[gen] = nil
    for _, key in ipairs(h) do
        local e = cache[key]
        e.refs = e.refs - 1
        if e.refs == 0 then
            cache[key] = nil
            e.free(e.pool)
        end
    end
end

-- how many pools are alive (for specs)
function _M.count()
    local n = 0
    for _ in pairs(cache) do n = n + 1 end
    return n
end

return _M
