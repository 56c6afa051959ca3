-- pkcs11: the key manager against a real PKCS#11 module, SoftHSM2
-- (Debian's softhsm2): a token made in a temporary directory with
-- softhsm2-util, KEKs made on it through the key manager's own FFI
-- (C_GenerateKey, non-extractable), data keys wrapped and unwrapped on the
-- token, rotation, and the errors of a wrong PIN, a missing key, a missing
-- module or token, each naming its config path.
local ffi = require "ffi"
local pkcs11 = require "shotover.keys.pkcs11"

pcall(ffi.cdef, "int setenv(const char *name, const char *value, "
                .. "int overwrite);")

local MODULE = "/usr/lib/softhsm/libsofthsm2.so"
local PATH = "sources[1].chain[1].key_manager"
local PIN = "4321"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/tokens"))
local conf_file = dir .. "/softhsm2.conf"
local f = assert(io.open(conf_file, "w"))
f:write("directories.tokendir = ", dir, "/tokens\n",
        "objectstore.backend = file\nlog.level = ERROR\n")
f:close()
-- SoftHSM2 reads it at C_Initialize, which runs once for this process
assert(ffi.C.setenv("SOFTHSM2_CONF", conf_file, 1) == 0)
local init = io.popen("SOFTHSM2_CONF=" .. conf_file .. " softhsm2-util "
                      .. "--init-token --free --label shotover-test --pin "
                      .. PIN .. " --so-pin 98765 2>&1")
local init_out = init:read("*a")
init:close()

local function conf(over)
    local c = { "pkcs11", module = MODULE, token_label = "shotover-test",
                pin = PIN, key_label = "kek-1" }
    for k, v in pairs(over or {}) do
        c[k] = v ~= false and v or nil
    end
    return c
end

local opened = {}
local function new(c)
    local km, err = pkcs11.new(c, PATH)
    opened[#opened + 1] = km
    return km, err
end

-- made once: the first KEK, then a second for rotation
local function setup_keys()
    local s = assert(pkcs11.open(conf(), PATH))
    if s:find_key("kek-1") == nil then
        assert(s:generate_key("kek-1"))
        assert(s:generate_key("kek-2"))
    end
    s:close()
end

describe("pkcs11", function()
    setup(function()
        assert.matches("initialized", init_out)
        setup_keys()
    end)
    -- closing every session logs the token out, so each test starts
    -- logged out (a login shared with an open session would hide a
    -- wrong PIN)
    after_each(function()
        for _, km in ipairs(opened) do
            km:close()
        end
        opened = {}
    end)
    teardown(function()
        os.execute("rm -rf " .. dir)
    end)

    it("reports config problems with their paths", function()
        local e = table.concat(pkcs11.check(
            conf({ token_label = false, pin = false,
                   old_key_labels = { "" } }), PATH), "\n")
        assert.matches(PATH .. ": give exactly one of slot and token_label",
                       e, 1, true)
        assert.matches(PATH .. ": give exactly one of pin, pin_env and "
                       .. "pin_file", e, 1, true)
        assert.matches(PATH .. ".old_key_labels[1]: expected a label", e, 1,
                       true)
        assert.are.same({}, pkcs11.check(conf(), PATH))
        assert.are.equal(1, #pkcs11.check(conf({ slot = 0 }), PATH))
    end)

    it("wraps data keys on the token and unwraps them", function()
        local km = assert(new(conf()))
        local dek, wrapped, kek_id = km:data_key(nil)
        assert.are.equal(32, #dek)
        assert.are.equal("kek-1", kek_id)
        assert.are.equal(12 + 32 + 16, #wrapped)
        assert.is_nil(wrapped:find(dek, 1, true))
        assert.are.equal(dek, km:unwrap(wrapped, kek_id, nil))
        local dek2, wrapped2 = km:data_key(nil)
        assert.are_not.equal(dek, dek2)
        assert.are_not.equal(wrapped:sub(1, 12), wrapped2:sub(1, 12))
        -- another worker's session on the same token unwraps it too
        local km2 = assert(new(conf()))
        assert.are.equal(dek, km2:unwrap(wrapped, kek_id, nil))
    end)

    it("keeps the KEK on the token: not extractable, private", function()
        local km = assert(new(conf()))
        local extractable, private = km:key_flags("kek-1")
        assert.is_false(extractable)
        assert.is_true(private)
    end)

    it("refuses a tampered wrapped key or one under another KEK", function()
        local km = assert(new(conf()))
        local _, wrapped, kek_id = km:data_key()
        local last = wrapped:sub(-1)
        local bad = wrapped:sub(1, -2)
                    .. string.char((last:byte() + 1) % 256)
        local dek, err = km:unwrap(bad, kek_id)
        assert.is_nil(dek)
        assert.matches(PATH .. ': unwrapping a data key under "kek-1" '
                       .. "failed: CKR_", err, 1, true)
        -- the label is bound as additional data: the same bytes under
        -- another KEK do not decrypt
        local km2 = assert(new(conf({ key_label = "kek-2",
                                      old_key_labels = { "kek-1" } })))
        assert.is_nil(km2:unwrap(wrapped, "kek-2"))
        dek, err = km:unwrap(wrapped, "kek-9")
        assert.is_nil(dek)
        assert.matches('key "kek-9" is neither key_label nor one of '
                       .. "old_key_labels", err, 1, true)
    end)

    it("unwraps under an old key label after rotation", function()
        local before = assert(new(conf()))
        local dek, wrapped, kek_id = before:data_key()
        local after = assert(new(conf({ key_label = "kek-2",
                                        old_key_labels = { "kek-1" } })))
        assert.are.equal(dek, after:unwrap(wrapped, kek_id))
        local dek2, wrapped2, kek_id2 = after:data_key()
        assert.are.equal("kek-2", kek_id2)
        assert.are.equal(dek2, after:unwrap(wrapped2, kek_id2))
        -- the old label dropped: the old wrapped keys are refused
        local dropped = assert(new(conf({ key_label = "kek-2" })))
        local none, err = dropped:unwrap(wrapped, kek_id)
        assert.is_nil(none)
        assert.matches('key "kek-1" is neither', err, 1, true)
    end)

    it("reads the PIN from pin_env or pin_file", function()
        assert(ffi.C.setenv("SHOTOVER_TEST_HSM_PIN", PIN, 1) == 0)
        assert(new(conf({ pin = false, pin_env = "SHOTOVER_TEST_HSM_PIN" })))
        local pf = dir .. "/pin"
        local pfh = assert(io.open(pf, "w"))
        pfh:write(PIN, "\n")
        pfh:close()
        assert(new(conf({ pin = false, pin_file = pf })))
        local km, err = new(conf({ pin = false, pin_env = "SHOTOVER_NO_PIN" }))
        assert.is_nil(km)
        assert.matches(PATH .. ".pin_env: environment variable "
                       .. "SHOTOVER_NO_PIN is not set", err, 1, true)
        km, err = new(conf({ pin = false, pin_file = dir .. "/nothing" }))
        assert.is_nil(km)
        assert.matches(PATH .. ".pin_file: ", err, 1, true)
    end)

    it("says a wrong PIN is wrong, without showing it", function()
        local km, err = new(conf({ pin = "0000" }))
        assert.is_nil(km)
        assert.are.equal(PATH .. ".pin: login to the token failed: "
                         .. "CKR_PIN_INCORRECT", err)
    end)

    it("names a missing key, token or module", function()
        local km, err = new(conf({ key_label = "nope" }))
        assert.is_nil(km)
        assert.are.equal(PATH .. '.key_label: no AES secret key labelled '
                         .. '"nope" on the token', err)
        km, err = new(conf({ old_key_labels = { "kek-2", "gone" } }))
        assert.is_nil(km)
        assert.matches(PATH .. '.old_key_labels[2]: no AES secret key '
                       .. 'labelled "gone"', err, 1, true)
        km, err = new(conf({ token_label = "other" }))
        assert.is_nil(km)
        assert.matches(PATH .. '.token_label: no token labelled "other" '
                       .. '(tokens: "shotover-test")', err, 1, true)
        km, err = new(conf({ module = dir .. "/libmissing.so" }))
        assert.is_nil(km)
        assert.matches(PATH .. ".module: cannot load " .. dir
                       .. "/libmissing.so", err, 1, true)
        km, err = new(conf({ module = "libcrypto.so.3" }))
        assert.is_nil(km)
        assert.matches(PATH .. ".module: libcrypto.so.3 is not a PKCS#11 "
                       .. "module", err, 1, true)
    end)

    it("finds the token by slot id too", function()
        local km = assert(new(conf()))
        local slot = km.slot
        local by_slot = assert(new(conf({ token_label = false,
                                          slot = tonumber(slot) })))
        local dek, wrapped, kek_id = km:data_key()
        assert.are.equal(dek, by_slot:unwrap(wrapped, kek_id))
    end)
end)
