-- Salted password hashes for authentication at shotover: PBKDF2-HMAC-SHA256
-- (RFC 8018) through OpenSSL's libcrypto, loaded with ffi.load (the binary
-- does not link it: only the processes that check passwords map it).
--
-- A hash is one string, "pbkdf2-sha256$ITER$SALT$HASH", SALT and HASH in
-- standard base64 (with padding), HASH 32 bytes.  The config holds these,
-- never a password; tools/hash-password.lua makes one.
--
-- Not supported: other KDFs (scrypt, argon2), other digests.
local ffi = require "ffi"
local bit = require "bit"

local byte, char, sub = string.byte, string.char, string.sub
local concat = table.concat
local bor, bxor, band = bit.bor, bit.bxor, bit.band
local lshift, rshift = bit.lshift, bit.rshift
local tonumber = tonumber
local type = type

local _M = { _VERSION = "0.1.0" }

_M.PREFIX = "pbkdf2-sha256"
_M.MIN_ITERATIONS = 1000
_M.DEFAULT_ITERATIONS = 100000
local HASH_LEN = 32

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen,
                      const unsigned char *salt, int saltlen, int iter,
                      const EVP_MD *digest, int keylen, unsigned char *out);
int RAND_bytes(unsigned char *buf, int num);
]]

local lib = require "shotover.libcrypto"

-- base64 (RFC 4648, with padding) ------------------------------------------

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_DEC = {}
for i = 1, 64 do
    B64_DEC[byte(B64, i)] = i - 1
end

function _M.b64encode(s)
    local out, n = {}, #s
    for i = 1, n, 3 do
        local a, b, c = byte(s, i, i + 2)
        local v = bor(lshift(a, 16), lshift(b or 0, 8), c or 0)
        out[#out + 1] = char(byte(B64, rshift(v, 18) + 1),
                             byte(B64, band(rshift(v, 12), 63) + 1),
                             b and byte(B64, band(rshift(v, 6), 63) + 1)
                               or 61,
                             c and byte(B64, band(v, 63) + 1) or 61)
    end
    return concat(out)
end

-- the bytes, or nil when s is not base64 with padding
function _M.b64decode(s)
    local n = #s
    if n % 4 ~= 0 then
        return nil
    end
    local out = {}
    for i = 1, n, 4 do
        local v, pad = 0, 0
        for j = i, i + 3 do
            local c = byte(s, j)
            local d = B64_DEC[c]
            if c == 61 and j >= n - 1 then       -- "=" only at the end
                d, pad = 0, pad + 1
            elseif d == nil or pad > 0 then
                return nil
            end
            v = bor(lshift(v, 6), d)
        end
        local bytes = char(rshift(v, 16), band(rshift(v, 8), 255),
                           band(v, 255))
        out[#out + 1] = sub(bytes, 1, 3 - pad)
    end
    return concat(out)
end

-- hashing ------------------------------------------------------------------

local out_buf = ffi.new("unsigned char[?]", HASH_LEN)

-- the HASH_LEN-byte PBKDF2-HMAC-SHA256 of password with salt
function _M.pbkdf2(password, salt, iter)
    local l = lib()
    if l.PKCS5_PBKDF2_HMAC(password, #password, salt, #salt, iter,
                           l.EVP_sha256(), HASH_LEN, out_buf) ~= 1
    then
        error("PKCS5_PBKDF2_HMAC failed", 2)
    end
    return ffi.string(out_buf, HASH_LEN)
end

-- n random bytes from OpenSSL's CSPRNG
function _M.random(n)
    local buf = ffi.new("unsigned char[?]", n)
    if lib().RAND_bytes(buf, n) ~= 1 then
        error("RAND_bytes failed", 2)
    end
    return ffi.string(buf, n)
end

-- A new hash string of password: a fresh 16-byte salt, iter iterations
-- (default DEFAULT_ITERATIONS).
function _M.hash(password, iter)
    iter = iter or _M.DEFAULT_ITERATIONS
    local salt = _M.random(16)
    return concat({ _M.PREFIX, tostring(iter), _M.b64encode(salt),
                    _M.b64encode(_M.pbkdf2(password, salt, iter)) }, "$")
end

-- The parts of hash string s: { iter, salt, hash }, or nil and what is
-- wrong with it (never showing it: it is a secret).
function _M.parse(s)
    if type(s) ~= "string" then
        return nil, "expected a string"
    end
    local kdf, iter, salt, hash = s:match("^([^$]+)%$(%d+)%$([^$]*)%$([^$]*)$")
    if kdf ~= _M.PREFIX then
        return nil, "expected \"" .. _M.PREFIX .. "$ITERATIONS$SALT$HASH\""
                    .. " (make one with tools/hash-password.lua)"
    end
    iter = tonumber(iter)
    if iter < _M.MIN_ITERATIONS or iter > 100000000 then
        return nil, "iterations must be between " .. _M.MIN_ITERATIONS
                    .. " and 100000000"
    end
    local salt_bytes, hash_bytes = _M.b64decode(salt), _M.b64decode(hash)
    if salt_bytes == nil or #salt_bytes < 8 then
        return nil, "the salt must be base64 of at least 8 bytes"
    end
    if hash_bytes == nil or #hash_bytes ~= HASH_LEN then
        return nil, "the hash must be base64 of " .. HASH_LEN .. " bytes"
    end
    return { iter = iter, salt = salt_bytes, hash = hash_bytes }
end

-- a == b in a time that depends only on their lengths (equal here: both
-- HASH_LEN bytes), not on where they first differ
function _M.equal(a, b)
    if #a ~= #b then
        return false
    end
    local diff = 0
    for i = 1, #a do
        diff = bor(diff, bxor(byte(a, i), byte(b, i)))
    end
    return diff == 0
end

-- Does password match parsed hash h (from parse)?
function _M.verify(h, password)
    return _M.equal(_M.pbkdf2(password, h.salt, h.iter), h.hash)
end

return _M
