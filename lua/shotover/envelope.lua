-- The protect transform's envelopes: a value encrypted with AES-256-GCM
-- under a data key (DEK) that travels with it, wrapped by a key manager's
-- key-encryption key (KEK).  Self-contained: any shotover with that KEK
-- configured opens it.  Byte by byte (docs/transforms/protect.md):
--
--   0        format version, 0x01
--   1        L = length of the KEK id (1..255)
--   2        the KEK id (L bytes)
--   2+L      W = length of the wrapped DEK, 2 bytes big-endian
--   4+L      the wrapped DEK (W bytes, the key manager's own format)
--   4+L+W    nonce, 12 bytes: a random 4-byte prefix per DEK, then a
--            64-bit big-endian counter
--   16+L+W   ciphertext (as long as the plaintext)
--   end-16   GCM tag, 16 bytes
--
-- Associated data: the header (bytes 0 to 4+L+W, so the version, KEK id
-- and wrapped key are authenticated too), then the value's identity, each
-- part length-prefixed: keyspace, table, column (2-byte lengths) and the
-- partition key (4-byte length; each key column as a 4-byte length and
-- its bytes, as m:query_info() gives key_bytes).  A value copied to
-- another row, column or table does not open.
--
-- A keyring (per worker) seals with its current DEK until it is older
-- than ttl seconds or has sealed max_uses values, then asks the key
-- manager for a new one: nonces never repeat under one DEK (a fresh DEK
-- per worker and per rotation, a counter within it).  Opened DEKs are
-- cached by header for ttl seconds.
local bit = require "bit"
local aes_gcm = require "shotover.aes_gcm"

local band, rshift = bit.band, bit.rshift
local char, byte, sub = string.char, string.byte, string.sub
local time = os.time
local fmt = string.format

local _M = { _VERSION = "0.1.0", VERSION = 1, MAX_CACHED = 1024 }

local TAG_LEN, NONCE_LEN = 16, 12

local function be16(n)
    return char(band(rshift(n, 8), 255), band(n, 255))
end

local function be32(n)
    return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                band(rshift(n, 8), 255), band(n, 255))
end

-- The associated data's identity part.
function _M.identity(keyspace, tab, column, key_bytes)
    return be16(#keyspace) .. keyspace .. be16(#tab) .. tab .. be16(#column)
           .. column .. be32(#key_bytes) .. key_bytes
end

-- The header of envelope s: its length, the KEK id and the wrapped DEK;
-- nil, why when s is not an envelope this version reads.
function _M.header(s)
    local n = #s
    if n < 2 or byte(s, 1) ~= _M.VERSION then
        return nil, "not a protect envelope (format version "
                    .. (n > 0 and byte(s, 1) or "none") .. ")"
    end
    local l = byte(s, 2)
    if n < 4 + l then
        return nil, "envelope cut short"
    end
    local w = byte(s, 3 + l) * 256 + byte(s, 4 + l)
    local hlen = 4 + l + w
    if l == 0 or n < hlen + NONCE_LEN + TAG_LEN then
        return nil, "envelope cut short"
    end
    return hlen, sub(s, 3, 2 + l), sub(s, 5 + l, hlen)
end

local Ring = {}
Ring.__index = Ring

-- A keyring over key manager km: ttl (seconds) and max_uses bound each
-- DEK's life.
function _M.keyring(km, ttl, max_uses)
    return setmetatable({ km = km, ttl = ttl or 3600,
                          max_uses = max_uses or 2^32,
                          cache = {}, ncached = 0, cur = nil,
                          rotations = 0 }, Ring)
end

local function remember(self, header, aes)
    if self.ncached >= _M.MAX_CACHED then
        self.cache, self.ncached = {}, 0
    end
    if self.cache[header] == nil then
        self.ncached = self.ncached + 1
    end
    self.cache[header] = { aes = aes, expires = time() + self.ttl }
end

-- The current DEK, made anew when there is none or it is spent.
local function current(self, ctx)
    local cur = self.cur
    if cur ~= nil and cur.uses < self.max_uses and time() < cur.expires then
        return cur
    end
    local dek, wrapped, kek_id = self.km:data_key(ctx)
    if not dek then
        return nil, "the key manager gave no data key: " .. tostring(wrapped)
    end
    if #kek_id < 1 or #kek_id > 255 or #wrapped > 65535 then
        return nil, "the key manager's KEK id or wrapped key is too long"
    end
    local header = char(_M.VERSION, #kek_id) .. kek_id .. be16(#wrapped)
                   .. wrapped
    local aes = aes_gcm.new(dek)
    cur = { aes = aes, header = header, kek_id = kek_id,
            prefix = aes_gcm.random(4), uses = 0,
            expires = time() + self.ttl }
    self.cur = cur
    self.rotations = self.rotations + 1
    remember(self, header, aes)
    return cur
end

-- Force a new DEK at the next seal (after a KEK rotation, in tests).
function Ring:rotate()
    self.cur = nil
end

-- The KEK id new values are sealed under (a DEK is made if need be).
function Ring:kek_id(ctx)
    local cur, err = current(self, ctx)
    return cur and cur.kek_id, err
end

-- The envelope of plaintext with identity id (from identity()), or nil,
-- err when the key manager fails.
function Ring:seal(plaintext, id, ctx)
    local cur, err = current(self, ctx)
    if not cur then
        return nil, err
    end
    local c = cur.uses
    cur.uses = c + 1
    return cur.aes:seal_envelope(cur.header, cur.prefix, c, plaintext, id)
end

-- The plaintext of envelope s with identity id, or nil, err: not an
-- envelope, a KEK id not configured, or a value that does not
-- authenticate (changed, moved to another row or column, another key).
function Ring:open(s, id, ctx)
    local hlen, kek_id, wrapped = _M.header(s)
    if not hlen then
        return nil, kek_id
    end
    local header = sub(s, 1, hlen)
    local hit = self.cache[header]
    local aes
    if hit ~= nil and hit.expires > time() then
        aes = hit.aes
    else
        local dek, err = self.km:unwrap(wrapped, kek_id, ctx)
        if not dek then
            return nil, fmt("cannot unwrap its data key: %s", tostring(err))
        end
        aes = aes_gcm.new(dek)
        remember(self, header, aes)
    end
    local pt = aes:open_envelope(s, hlen, hlen,
                                 #s - hlen - NONCE_LEN - TAG_LEN, id)
    if pt == nil then
        return nil, "the value does not authenticate (changed, copied from "
                    .. "another row or column, or sealed under another key)"
    end
    return pt
end

return _M
