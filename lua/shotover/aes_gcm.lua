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

local ffi_string, ffi_new, ffi_gc = ffi.string, ffi.new, ffi.gc
local pcall, error, tostring = pcall, error, tostring

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

local crypto
local function lib()
    if crypto == nil then
        local ok, l = pcall(ffi.load, "crypto")
        if not ok then
            ok, l = pcall(ffi.load, "libcrypto.so.3")
        end
        if not ok then
            error("AES-GCM needs OpenSSL's libcrypto: " .. tostring(l), 0)
        end
        crypto = l
    end
    return crypto
end
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

return _M
