-- OpenSSL's libcrypto for the Lua modules that call it through the FFI
-- (password hashes, AES-GCM, SigV4): loaded once, on first use, by the
-- name the development package gives it or the runtime package's
-- versioned one.  Each module declares the functions it calls (ffi.cdef
-- in a pcall: several may declare the same).  The binary links the same
-- library for TLS.
local ffi = require "ffi"

local crypto

return function()
    if crypto == nil then
        local ok, l = pcall(ffi.load, "crypto")
        if not ok then
            ok, l = pcall(ffi.load, "libcrypto.so.3")
        end
        if not ok then
            error("OpenSSL's libcrypto cannot be loaded: " .. tostring(l), 0)
        end
        crypto = l
    end
    return crypto
end
