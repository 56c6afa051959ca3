-- Key managers for the protect transform: each holds key-encryption keys
-- (KEKs) and turns out data keys (DEKs) wrapped under the current one.
-- A config names one as a list whose first item is the kind:
--
--   key_manager = { "local", kek_file = "/etc/shotover/kek.bin" }
--
-- Kinds: local (shotover.keys.local), pkcs11, aws_kms; each module
-- exports schema (key -> { type, doc, required, default, secret }),
-- check(conf, path) -> errs and new(conf, path) -> km, and km has
--
--   dek, wrapped, kek_id = km:data_key(ctx)   -- or nil, err
--   dek = km:unwrap(wrapped, kek_id, ctx)      -- or nil, err
--
-- ctx: the chain context of the request that needs the key (a kind that
-- waits on the network does so through ctx:await), nil outside a request.
local schema = require "shotover.schema"

local fmt = string.format
local type, pairs, pcall, require = type, pairs, pcall, require
local concat, sort = table.concat, table.sort

local _M = { _VERSION = "0.1.0", KINDS = { "local", "pkcs11", "aws_kms" } }

local KNOWN = {}
for _, k in ipairs(_M.KINDS) do
    KNOWN[k] = true
end

-- The module of kind `kind`, or nil, err.
function _M.module(kind)
    if not KNOWN[kind] then
        return nil, fmt("unknown key manager kind %s (one of %s)",
                        schema.show(kind), concat(_M.KINDS, ", "))
    end
    local ok, mod = pcall(require, "shotover.keys." .. kind)
    if not ok then
        local missing = tostring(mod):find("module 'shotover.keys.", 1, true)
        return nil, fmt("key manager kind %q is not available: %s", kind,
                        missing and "no module shotover.keys." .. kind
                        or tostring(mod))
    end
    return mod
end

-- Check key manager config `conf` at config path `path`: a list of error
-- strings, each starting with path (empty when it is good).  Defaults of
-- the kind's schema are filled into conf.
function _M.check(conf, path)
    local errs = {}
    if type(conf) ~= "table" then
        errs[1] = fmt('%s: expected a table like { "local", kek_file = '
                      .. '"kek.bin" }, got %s', path, schema.show(conf))
        return errs
    end
    local kind = conf[1]
    if type(kind) ~= "string" then
        errs[1] = fmt("%s[1]: expected the key manager kind (one of %s), "
                      .. "got %s", path, concat(_M.KINDS, ", "),
                      schema.show(kind))
        return errs
    end
    local mod, err = _M.module(kind)
    if not mod then
        errs[1] = fmt("%s[1]: %s", path, err)
        return errs
    end
    local opts = {}
    for k, v in pairs(conf) do
        if k ~= 1 then
            opts[k] = v
        end
    end
    schema.check(opts, mod.schema or {}, path, errs)
    for k, v in pairs(opts) do
        if conf[k] == nil then
            conf[k] = v                 -- a default filled in
        end
    end
    if #errs == 0 and mod.check then
        local more = mod.check(conf, path) or {}
        for _, e in ipairs(more) do
            errs[#errs + 1] = e
        end
    end
    sort(errs)
    return errs
end

-- A key manager for checked config conf (per worker).
function _M.new(conf, path)
    local mod = assert(_M.module(conf[1]))
    -- pkcs11 and aws_kms say why they cannot start (a token, a PIN, a
    -- module) as nil, err; local raises: either way the worker's start
    -- fails with the config path
    local km, err = mod.new(conf, path)
    if km == nil then
        error(err, 0)
    end
    return km
end

return _M
