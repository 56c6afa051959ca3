-- t/lib/softhsm.lua -- a SoftHSM2 token (Debian's softhsm2, a real PKCS#11
-- library) for the key-manager specs: its own token directory in a temp
-- dir of the harness, SOFTHSM2_CONF set in this process (for
-- softhsm2-util and the spec's own C_Initialize) and so inherited by the
-- shotover it starts, and an AES KEK made on it through the pkcs11 key
-- manager's own FFI (C_GenerateKey: non-extractable).
local ffi = require "ffi"
local h = require "harness"

pcall(ffi.cdef, "int setenv(const char *name, const char *value, "
                .. "int overwrite);")

local M = { MODULE = "/usr/lib/softhsm/libsofthsm2.so" }

-- A new token labelled `label` with user PIN `pin`, holding an AES key
-- labelled `key_label` (the KEK).
function M.token(label, pin, key_label)
    local dir = h.tmpdir("softhsm")
    local conf = h.write_file(dir .. "/softhsm2.conf",
        "directories.tokendir = " .. dir .. "\n"
        .. "objectstore.backend = file\nlog.level = ERROR\n")
    assert(ffi.C.setenv("SOFTHSM2_CONF", conf, 1) == 0)
    local r = h.run({ "softhsm2-util", "--init-token", "--free",
                      "--label", label, "--pin", pin, "--so-pin", "13579" })
    assert(r.code == 0, r.stdout .. r.stderr)
    local pkcs11 = require "shotover.keys.pkcs11"
    local s = assert(pkcs11.open({ module = M.MODULE, token_label = label,
                                   pin = pin }, "setup"))
    assert(s:generate_key(key_label))
    s:close()
end

return M
