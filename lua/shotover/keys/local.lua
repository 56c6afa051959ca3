-- The local key manager: key-encryption keys (KEKs) held by shotover
-- itself, from a file, an environment variable or the config.  A data key
-- is 32 random bytes wrapped with AES-256-GCM under the current KEK:
--
--   wrapped = 0x01 | nonce (12) | encrypted data key (32) | tag (16)
--
-- with associated data "shotover.keys.local:" .. kek_id, so a wrapped key
-- only unwraps under the KEK of the id it was made for.  Old KEKs
-- (old_keks, old_kek_files, by id) keep unwrapping what they wrapped:
-- rotation is a new kek with a new kek_id and the old one moved to
-- old_keks.
--
-- A KEK is 32 bytes: a file holds them raw, as 64 hex digits or as
-- base64 (44 characters); kek, kek_env and old_keks take hex or base64.
-- Errors name the config path and never the key.
local aes_gcm = require "shotover.aes_gcm"
local password = require "shotover.password"

local fmt = string.format
local type, pairs, tonumber = type, pairs, tonumber
local char, byte, sub = string.char, string.byte, string.sub
local getenv = os.getenv

local _M = { _VERSION = "0.1.0" }

local WRAP_VERSION = 1
local KEY_LEN = 32

_M.schema = {
    kek_file = { type = "string",
                 doc = "a file holding the current KEK (32 bytes: raw, hex "
                       .. "or base64)" },
    kek_env = { type = "string",
                doc = "an environment variable holding the current KEK "
                      .. "(hex or base64)" },
    kek = { type = "string", secret = true,
            doc = "the current KEK inline (hex or base64); prefer kek_file "
                  .. "or kek_env" },
    kek_id = { type = "string", default = "1",
               doc = "the current KEK's id, stored with each value (1 to "
                     .. "255 bytes); a new KEK needs a new id" },
    old_keks = { type = "table", secret = true,
                 doc = "{ [id] = KEK } of earlier KEKs (hex or base64), "
                       .. "kept to unwrap what they wrapped" },
    old_kek_files = { type = "table",
                      doc = "{ [id] = path } of files holding earlier "
                            .. "KEKs" },
}

-- 32 key bytes from text s (hex or base64; raw too when `raw`), or nil.
local function decode(s, raw)
    if raw and #s == KEY_LEN then
        return s
    end
    s = s:gsub("^%s+", ""):gsub("%s+$", "")
    if #s == 2 * KEY_LEN and not s:find("[^%x]") then
        return (s:gsub("%x%x", function(h)
            return char(tonumber(h, 16))
        end))
    end
    local b = password.b64decode(s)
    if b and #b == KEY_LEN then
        return b
    end
    return nil
end
_M.decode = decode

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- The KEK one source gives: bytes, or nil and a message (never the key).
local function load_one(what, v)
    if what == "kek_file" then
        local s, err = read_file(v)
        if not s then
            return nil, "cannot read the KEK file: " .. tostring(err)
        end
        local k = decode(s, true)
        if not k then
            return nil, fmt("the KEK file %s holds %d bytes that are not a "
                            .. "32-byte key (raw, 64 hex digits or base64)",
                            v, #s)
        end
        return k
    elseif what == "kek_env" then
        local s = getenv(v)
        if s == nil or s == "" then
            return nil, fmt("environment variable %s is not set", v)
        end
        return decode(s) or nil, fmt("environment variable %s does not "
                                     .. "hold a 32-byte key in hex or "
                                     .. "base64", v)
    end
    return decode(v) or nil, "not a 32-byte key in hex or base64"
end

local SOURCES = { "kek_file", "kek_env", "kek" }

-- All KEKs of conf: { [id] = key bytes }, the current id, and the
-- errors (each "path.key: message").
local function load_all(conf, path)
    local errs, keks = {}, {}
    local function err(...)
        errs[#errs + 1] = fmt(...)
    end
    local given = {}
    for _, what in ipairs(SOURCES) do
        if conf[what] ~= nil then
            given[#given + 1] = what
        end
    end
    if #given ~= 1 then
        err("%s: give exactly one of kek_file, kek_env and kek%s", path,
            #given > 1 and " (got " .. table.concat(given, ", ") .. ")"
            or "")
    end
    local id = conf.kek_id or "1"
    if type(id) ~= "string" or #id < 1 or #id > 255 then
        err("%s.kek_id: expected 1 to 255 bytes", path)
    end
    if #given == 1 then
        local k, e = load_one(given[1], conf[given[1]])
        if k then
            keks[id] = k
        else
            err("%s.%s: %s", path, given[1], e)
        end
    end
    for _, field in ipairs({ "old_keks", "old_kek_files" }) do
        for oid, v in pairs(conf[field] or {}) do
            local where = fmt("%s.%s[%q]", path, field, tostring(oid))
            if type(oid) ~= "string" or #oid < 1 or #oid > 255 then
                err("%s: ids are strings of 1 to 255 bytes", where)
            elseif oid == id then
                err("%s: the id of the current KEK (kek_id) cannot name an "
                    .. "old one", where)
            elseif type(v) ~= "string" then
                err("%s: expected a %s", where, field == "old_keks"
                    and "key in hex or base64" or "file name")
            elseif keks[oid] ~= nil then
                err("%s: id given twice", where)
            else
                local k, e = load_one(field == "old_keks" and "kek"
                                      or "kek_file", v)
                if k then
                    keks[oid] = k
                else
                    err("%s: %s", where, e)
                end
            end
        end
    end
    return keks, id, errs
end

function _M.check(conf, path)
    local _, _, errs = load_all(conf, path)
    return errs
end

local KM = {}
KM.__index = KM

function _M.new(conf, path)
    local keks, id, errs = load_all(conf, path)
    if #errs > 0 then
        error(errs[1], 2)
    end
    local aes = {}
    for kid, k in pairs(keks) do
        aes[kid] = aes_gcm.new(k)
    end
    return setmetatable({ kek_id = id, aes = aes }, KM)
end

local function aad(kek_id)
    return "shotover.keys.local:" .. kek_id
end

function KM:data_key(_ctx)
    local dek = aes_gcm.random(KEY_LEN)
    local nonce = aes_gcm.random(12)
    local ct, tag = self.aes[self.kek_id]:seal(nonce, dek, aad(self.kek_id))
    return dek, char(WRAP_VERSION) .. nonce .. ct .. tag, self.kek_id
end

function KM:unwrap(wrapped, kek_id, _ctx)
    local k = self.aes[kek_id]
    if k == nil then
        return nil, fmt("no KEK with id %q is configured", kek_id)
    end
    if #wrapped ~= 1 + 12 + KEY_LEN + 16
       or byte(wrapped, 1) ~= WRAP_VERSION then
        return nil, "not a data key wrapped by the local key manager"
    end
    local dek = k:open(sub(wrapped, 2, 13), sub(wrapped, 14, 13 + KEY_LEN),
                       sub(wrapped, 14 + KEY_LEN), aad(kek_id))
    if dek == nil then
        return nil, fmt("the data key does not unwrap under KEK %q", kek_id)
    end
    return dek
end

return _M
