-- key_prefix: an example third-party transform (a rock would ship it as
-- shotover-transform-key_prefix).  Puts `prefix` in front of the first key
-- of every Redis request, then passes the batch on.  Its specs, in
-- spec/key_prefix_spec.lua, run with `shotover lua busted` from the
-- directory above: see "Testing a transform" in docs/lua-api.md.
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
        if m:nargs() >= 2 then
            m:set_arg(2, self.prefix .. m:arg(2))
        end
    end
    return chain:next(batch)
end

return _M
