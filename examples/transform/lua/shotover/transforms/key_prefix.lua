-- key_prefix: an example third-party transform (a rock would ship it as
-- shotover-transform-key_prefix).  Puts `prefix` in front of every key of
-- every Redis request (the arguments Redis' key specs say are keys: all
-- of MSET's and DEL's, EVAL's numkeys, XREAD's after STREAMS; never
-- PING's argument or AUTH's password), then passes the batch on.  (The
-- built-in key_namespace also takes the prefix off keys in replies.)  Its
-- specs, in spec/key_prefix_spec.lua, run with `shotover lua busted` from
-- the directory above: see "Testing a transform" in docs/lua-api.md.
local setmetatable = setmetatable

local _M = {
    name = "key_prefix",
    version = "0.1.0",
    schema = {
        prefix = { type = "string", required = true },
    },
    -- it keeps nothing across chain:next(): fine with CQL lanes
    capabilities = { lanes = true },
}

local mt = { __index = {} }

local positions = {}                    -- reused: no table per request

function _M.check_config(conf, ctx)
    if ctx and ctx.protocol ~= "redis" then
        return nil, "key_prefix needs a redis source"
    end
    if conf.prefix == "" then
        return nil, "prefix: give a non-empty prefix"
    end
    return true
end

function _M.new(conf)
    return setmetatable({ prefix = conf.prefix }, mt)
end

function mt.__index.transform(self, batch, chain)
    for i = 1, #batch do
        local m = batch[i]
        for k = 1, m:key_positions(positions) do
            local a = positions[k]
            m:set_arg(a, self.prefix .. m:arg(a))
        end
    end
    return chain:next(batch)
end

return _M
