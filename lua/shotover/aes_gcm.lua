-- AES-256-GCM (NIST SP 800-38D) through OpenSSL's libcrypto EVP interface,
-- loaded with ffi.load as shotover.password does (the binary does not link
-- it).  For the protect transform's envelopes and the local key manager's
-- wrapped data keys.
--
--   local aes = aes_gcm.new(key)          -- key: 32 bytes
--   local ct, tag = aes:seal(nonce, plaintext, aad)  -- nonce: 12 bytes
--   local pt = aes:open(nonce, ct, tag, aad)         -- nil when forged
--
-- One key object keeps one EVP context per direction with its key
-- schedule: each seal or open sets only the nonce (EVP's Init with a NULL
-- cipher and key), which is what makes a small value cheap.  Output goes
-- through one growing scratch buffer per worker.
--
-- Not supported: nonces other than 96 bits, tags shorter than 128 bits,
-- streaming.
local ffi = require "ffi"
local bit = require "bit"

local ffi_string, ffi_new, ffi_gc = ffi.string, ffi.new, ffi.gc
local pcall, error = pcall, error

local _M = { _VERSION = "0.1.0", KEY_LEN = 32, NONCE_LEN = 12,
             TAG_LEN = 16 }

-- each declaration alone: another module may have declared some already
-- (shotover.password declares RAND_bytes), and a second identical cdef of
-- a function is an error
for _, decl in ipairs({
    "typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;",
    "typedef struct evp_cipher_st EVP_CIPHER;",
    "typedef struct engine_st ENGINE;",
    "EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);",
    "void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *c);",
    "const EVP_CIPHER *EVP_aes_256_gcm(void);",
    [[int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type,
        ENGINE *impl, const unsigned char *key, const unsigned char *iv);]],
    [[int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out,
        int *outl, const unsigned char *in, int inl);]],
    "int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, "
        .. "int *outl);",
    [[int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type,
        ENGINE *impl, const unsigned char *key, const unsigned char *iv);]],
    [[int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out,
        int *outl, const unsigned char *in, int inl);]],
    "int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, "
        .. "int *outl);",
    "int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, "
        .. "void *ptr);",
    "int RAND_bytes(unsigned char *buf, int num);",
}) do
    pcall(ffi.cdef, decl)
end

local CTRL_GCM_GET_TAG, CTRL_GCM_SET_TAG = 0x10, 0x11
local KEY_LEN, NONCE_LEN, TAG_LEN = 32, 12, 16

local lib = require "shotover.libcrypto"
_M.lib = lib

local outl = ffi_new("int[1]")
local tagbuf = ffi_new("unsigned char[16]")
local scratch, scratch_len = nil, 0

local function buffer(n)
    if n > scratch_len then
        scratch_len = n < 4096 and 4096 or n * 2
        scratch = ffi_new("unsigned char[?]", scratch_len)
    end
    return scratch
end

-- n random bytes from OpenSSL's CSPRNG.
function _M.random(n)
    local b = ffi_new("unsigned char[?]", n)
    if lib().RAND_bytes(b, n) ~= 1 then
        error("aes_gcm: RAND_bytes failed", 2)
    end
    return ffi_string(b, n)
end

local Key = {}
Key.__index = Key

local function context(init, key)
    local L = lib()
    local c = L.EVP_CIPHER_CTX_new()
    if c == nil then
        error("aes_gcm: out of memory", 3)
    end
    c = ffi_gc(c, L.EVP_CIPHER_CTX_free)
    if init(c, L.EVP_aes_256_gcm(), nil, key, nil) ~= 1 then
        error("aes_gcm: cannot set the key", 3)
    end
    return c
end

-- A key object for a 32-byte key.
function _M.new(key)
    if type(key) ~= "string" or #key ~= KEY_LEN then
        error("aes_gcm: a key is 32 bytes", 2)
    end
    return setmetatable({ key = key }, Key)
end

-- ciphertext, tag (16 bytes) of plaintext under nonce (12 bytes) with
-- associated data aad ("" for none).
function Key:seal(nonce, plaintext, aad)
    local L = lib()
    local c = self.enc
    if c == nil then
        c = context(L.EVP_EncryptInit_ex, self.key)
        self.enc = c
    end
    if #nonce ~= NONCE_LEN then
        error("aes_gcm: a nonce is 12 bytes", 2)
    end
    if L.EVP_EncryptInit_ex(c, nil, nil, nil, nonce) ~= 1 then
        error("aes_gcm: cannot set the nonce", 2)
    end
    if #aad > 0 and L.EVP_EncryptUpdate(c, nil, outl, aad, #aad) ~= 1 then
        error("aes_gcm: associated data refused", 2)
    end
    local n = #plaintext
    local out = buffer(n + 16)
    local len = 0
    if n > 0 then
        if L.EVP_EncryptUpdate(c, out, outl, plaintext, n) ~= 1 then
            error("aes_gcm: encryption failed", 2)
        end
        len = outl[0]
    end
    if L.EVP_EncryptFinal_ex(c, out + len, outl) ~= 1 then
        error("aes_gcm: encryption failed", 2)
    end
    len = len + outl[0]
    if L.EVP_CIPHER_CTX_ctrl(c, CTRL_GCM_GET_TAG, TAG_LEN, tagbuf) ~= 1 then
        error("aes_gcm: no tag", 2)
    end
    return ffi_string(out, len), ffi_string(tagbuf, TAG_LEN)
end

-- The plaintext of ciphertext ct (a string, or a pointer with ct_len)
-- with tag under nonce and aad, or nil when it does not authenticate
-- (another key, nonce, aad, or any bit changed).
function Key:open(nonce, ct, tag, aad, ct_len)
    local L = lib()
    local c = self.dec
    if c == nil then
        c = context(L.EVP_DecryptInit_ex, self.key)
        self.dec = c
    end
    if #nonce ~= NONCE_LEN or #tag ~= TAG_LEN then
        return nil
    end
    if L.EVP_DecryptInit_ex(c, nil, nil, nil, nonce) ~= 1 then
        return nil
    end
    if #aad > 0 and L.EVP_DecryptUpdate(c, nil, outl, aad, #aad) ~= 1 then
        return nil
    end
    local n = ct_len or #ct
    local out = buffer(n + 16)
    local len = 0
    if n > 0 then
        if L.EVP_DecryptUpdate(c, out, outl, ct, n) ~= 1 then
            return nil
        end
        len = outl[0]
    end
    ffi.copy(tagbuf, tag, TAG_LEN)
    if L.EVP_CIPHER_CTX_ctrl(c, CTRL_GCM_SET_TAG, TAG_LEN, tagbuf) ~= 1 then
        return nil
    end
    if L.EVP_DecryptFinal_ex(c, out + len, outl) ~= 1 then
        return nil
    end
    return ffi_string(out, len + outl[0])
end

local u8p = ffi.typeof("const unsigned char *")
local voidp = ffi.typeof("void *")
local cast, copy = ffi.cast, ffi.copy
local band, rshift = bit.band, bit.rshift
local floor = math.floor

-- One envelope in one string, built in the scratch buffer (no
-- intermediate strings): head .. nonce .. ciphertext .. tag, the nonce
-- being prefix (4 bytes) and counter (a 64-bit big-endian integer), the
-- associated data head then aad.  For shotover.envelope's hot path.
function Key:seal_envelope(head, prefix, counter, plaintext, aad)
    local L = lib()
    local c = self.enc
    if c == nil then
        c = context(L.EVP_EncryptInit_ex, self.key)
        self.enc = c
    end
    local h, n = #head, #plaintext
    local out = buffer(h + NONCE_LEN + n + TAG_LEN)
    copy(out, head, h)
    local np = out + h
    copy(np, prefix, 4)
    local hi = floor(counter / 2^32)
    local lo = counter - hi * 2^32
    for i = 0, 3 do
        np[4 + i] = band(rshift(hi, 24 - 8 * i), 255)
        np[8 + i] = band(rshift(lo, 24 - 8 * i), 255)
    end
    if L.EVP_EncryptInit_ex(c, nil, nil, nil, np) ~= 1
       or L.EVP_EncryptUpdate(c, nil, outl, out, h) ~= 1
       or (#aad > 0 and L.EVP_EncryptUpdate(c, nil, outl, aad, #aad) ~= 1)
    then
        error("aes_gcm: cannot start a seal", 2)
    end
    local cp = np + NONCE_LEN
    local len = 0
    if n > 0 then
        if L.EVP_EncryptUpdate(c, cp, outl, plaintext, n) ~= 1 then
            error("aes_gcm: encryption failed", 2)
        end
        len = outl[0]
    end
    if L.EVP_EncryptFinal_ex(c, cp + len, outl) ~= 1
       or L.EVP_CIPHER_CTX_ctrl(c, CTRL_GCM_GET_TAG, TAG_LEN,
                                cp + len + outl[0]) ~= 1 then
        error("aes_gcm: encryption failed", 2)
    end
    return ffi_string(out, h + NONCE_LEN + len + outl[0] + TAG_LEN)
end

-- The plaintext of envelope s whose nonce starts at 0-based offset at,
-- followed by ct_len bytes of ciphertext and the tag; associated data
-- the first `head` bytes of s, then aad.  nil when it does not
-- authenticate.
function Key:open_envelope(s, head, at, ct_len, aad)
    local L = lib()
    local c = self.dec
    if c == nil then
        c = context(L.EVP_DecryptInit_ex, self.key)
        self.dec = c
    end
    local p = cast(u8p, s)
    if L.EVP_DecryptInit_ex(c, nil, nil, nil, p + at) ~= 1
       or L.EVP_DecryptUpdate(c, nil, outl, p, head) ~= 1
       or (#aad > 0 and L.EVP_DecryptUpdate(c, nil, outl, aad, #aad) ~= 1)
    then
        return nil
    end
    local out = buffer(ct_len + 16)
    local len = 0
    if ct_len > 0 then
        if L.EVP_DecryptUpdate(c, out, outl, p + at + NONCE_LEN,
                               ct_len) ~= 1 then
            return nil
        end
        len = outl[0]
    end
    if L.EVP_CIPHER_CTX_ctrl(c, CTRL_GCM_SET_TAG, TAG_LEN,
                             cast(voidp, p + at + NONCE_LEN + ct_len)) ~= 1
       or L.EVP_DecryptFinal_ex(c, out + len, outl) ~= 1 then
        return nil
    end
    -- s is used after p: the GC keeps it until then
    if #s < at then
        return nil
    end
    return ffi_string(out, len + outl[0])
end

return _M
