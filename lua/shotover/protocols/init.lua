-- The protocol registry.  A protocol is one Lua module,
-- shotover.protocols.<name>, beside its codec in the C core; everything on
-- the Lua side that differs between protocols (message methods, replies,
-- dry answers, how transforms classify requests, how a frame is shown) is
-- in that module, and code that must tell protocols apart looks the table
-- up here once (per chain or connection) instead of testing numbers.  An
-- unknown protocol raises: nothing is ever taken for Redis by default.
--
-- This module loads no protocol at require time: shotover.message attaches
-- its frame methods table here, and protocol modules load on first use, so
-- message, protocols and their reply builders may require each other in
-- any order.
local type = type
local pcall = pcall
local require = require
local tostring = tostring
local error = error
local pairs = pairs
local fmt = string.format

local _M = { _VERSION = "0.1.0" }

-- the protocols of today's C core, in the order of their SH_PROTO_* ids
_M.BUILTIN = { "redis", "cassandra" }

local by_name = {}
local by_id = {}
local frame_methods          -- shotover.message's metatype __index table

local REQUIRED = { "name", "id", "install", "error_reply", "show",
                   "dry", "query_class", "query_label", "passthrough",
                   "streams", "cost" }

local function register(p, modname)
    for _, k in pairs(REQUIRED) do
        if p[k] == nil then
            return nil, fmt("module %s is not a protocol (no %s)", modname,
                            k)
        end
    end
    if by_id[p.id] and by_id[p.id] ~= p then
        return nil, fmt("protocol %q: id %d is already %q's", p.name, p.id,
                        by_id[p.id].name)
    end
    by_name[p.name] = p
    by_id[p.id] = p
    if frame_methods then
        p.install(frame_methods)
    end
    return p
end

-- The protocol named `name`, or nil and a message (config validation).
function _M.find(name)
    local p = by_name[name]
    if p then
        return p
    end
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
        return nil, fmt("unknown protocol %s", tostring(name))
    end
    local modname = "shotover.protocols." .. name
    local ok, mod = pcall(require, modname)
    if not ok then
        if tostring(mod):find("module '" .. modname .. "' not found", 1, true)
        then
            return nil, fmt("unknown protocol %q (no module %s)", name,
                            modname)
        end
        return nil, fmt("protocol %q failed to load: %s", name, tostring(mod))
    end
    if type(mod) ~= "table" then
        return nil, fmt("module %s is not a protocol", modname)
    end
    return register(mod, modname)
end

-- The protocol named `name`; raises when there is none.
function _M.get(name)
    local p, err = _M.find(name)
    if not p then
        error(err, 2)
    end
    return p
end

-- The protocol of a frame's `proto` field (ffi.C.SH_PROTO_*); raises for an
-- id no loaded protocol has.
function _M.by_id(id)
    local p = by_id[id]
    if p then
        return p
    end
    for _, name in pairs(_M.BUILTIN) do
        _M.find(name)
    end
    p = by_id[id]
    if not p then
        error(fmt("unknown protocol id %s", tostring(id)), 2)
    end
    return p
end

-- The protocol of message m.
function _M.of(m)
    return _M.by_id(m.proto)
end

-- The protocol a chain element serves, for its new(conf, env): the one
-- of the chain it is built in (env.protocol), nil when built outside one
-- (then the element takes the protocol of the messages it gets).
function _M.of_env(env)
    return env and env.protocol and _M.get(env.protocol) or nil
end

-- Called once by shotover.message: every protocol's methods go on every
-- message (they share one FFI metatype), those of the built-in protocols
-- now, others' when they are first loaded.
function _M.attach(methods)
    frame_methods = methods
    for _, p in pairs(by_name) do
        p.install(methods)
    end
    for _, name in pairs(_M.BUILTIN) do
        _M.get(name)
    end
end

return _M
