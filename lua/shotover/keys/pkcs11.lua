-- The pkcs11 key manager: data keys wrapped by an AES key-encryption key
-- (KEK) that never leaves a PKCS#11 token (an HSM, or SoftHSM2), through
-- LuaJIT's FFI to the module's C_GetFunctionList (PKCS#11 v2.40, the
-- declarations below are our own).
--
--   key_manager = { "pkcs11", module = "/usr/lib/softhsm/libsofthsm2.so",
--                   token_label = "shotover", pin_env = "HSM_PIN",
--                   key_label = "kek-2026", old_key_labels = { "kek-2025" } }
--
-- data_key makes 32 random bytes (OpenSSL's RAND_bytes) and encrypts them
-- on the token with CKM_AES_GCM under the KEK labelled key_label: wrapped
-- is the 12-byte IV followed by the ciphertext and its 16-byte tag, the
-- label is the additional data, and kek_id is the label.  unwrap finds the
-- KEK by that label (key_label or one of old_key_labels) and decrypts on
-- the token: rotation is a new key on the token, its label as key_label
-- and the old one moved to old_key_labels.
--
-- Each worker (a key manager made with new) opens its own session and
-- logs in (the login is the token's, shared by the process's sessions);
-- C_Initialize is called once per process with CKF_OS_LOCKING_OK (the
-- workers are threads: the other workers get CKR_CRYPTOKI_ALREADY_
-- INITIALIZED, which is fine).  Nothing finalizes the library: it lives
-- as long as the process.
--
-- Not supported: CKM_AES_KEY_WRAP_PAD, keys found by CKA_ID, KEKs other
-- than AES, re-login after a token is removed and put back.  Token calls
-- are made on the worker's thread: fast for SoftHSM2 and local HSMs, a
-- pause of the worker for a network HSM (calls are rare: protect caches
-- data keys).
local ffi = require "ffi"
local password = require "shotover.password"
local shdict = require "shotover.shdict"

local fmt = string.format
local ipairs, pcall, tostring, type = ipairs, pcall, tostring, type
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

_M.IV_LEN = 12
_M.TAG_LEN = 16
_M.DEK_LEN = 32

_M.schema = {
    module = { type = "string", required = true,
               doc = "path of the PKCS#11 module (a shared library)" },
    slot = { type = "integer", min = 0,
             doc = "slot id of the token (or give token_label)" },
    token_label = { type = "string",
                    doc = "label of the token (or give slot)" },
    pin = { type = "string", secret = true,
            doc = "user PIN (or pin_env, pin_file); never logged" },
    pin_env = { type = "string",
                doc = "environment variable holding the user PIN" },
    pin_file = { type = "string",
                 doc = "file holding the user PIN (trailing newline "
                       .. "ignored)" },
    key_label = { type = "string", required = true,
                  doc = "CKA_LABEL of the current KEK, an AES secret key "
                        .. "on the token" },
    old_key_labels = { type = "table",
                       doc = "labels of earlier KEKs, still used to "
                             .. "unwrap" },
}

-- PKCS#11 v2.40 (pkcs11t.h, pkcs11f.h): CK_ULONG is unsigned long, and
-- the function list holds 68 pointers in the standard's order.
for _, decl in ipairs({
[[
typedef unsigned long sh_ck_ulong;
typedef struct { unsigned char major, minor; } sh_ck_version;
typedef struct {
    sh_ck_ulong type; void *pValue; sh_ck_ulong ulValueLen;
} sh_ck_attribute;
typedef struct {
    sh_ck_ulong mechanism; void *pParameter; sh_ck_ulong ulParameterLen;
} sh_ck_mechanism;
typedef struct {
    unsigned char *pIv; sh_ck_ulong ulIvLen; sh_ck_ulong ulIvBits;
    unsigned char *pAAD; sh_ck_ulong ulAADLen; sh_ck_ulong ulTagBits;
} sh_ck_gcm_params;
typedef struct {
    void *CreateMutex, *DestroyMutex, *LockMutex, *UnlockMutex;
    sh_ck_ulong flags; void *pReserved;
} sh_ck_c_initialize_args;
typedef struct {
    unsigned char label[32]; unsigned char manufacturerID[32];
    unsigned char model[16]; unsigned char serialNumber[16];
    sh_ck_ulong flags, ulMaxSessionCount, ulSessionCount,
        ulMaxRwSessionCount, ulRwSessionCount, ulMaxPinLen, ulMinPinLen,
        ulTotalPublicMemory, ulFreePublicMemory, ulTotalPrivateMemory,
        ulFreePrivateMemory;
    sh_ck_version hardwareVersion, firmwareVersion;
    unsigned char utcTime[16];
} sh_ck_token_info;
typedef struct sh_ck_function_list {
    sh_ck_version version;
    sh_ck_ulong (*C_Initialize)(void *);
    sh_ck_ulong (*C_Finalize)(void *);
    void *C_GetInfo;
    void *C_GetFunctionList;
    sh_ck_ulong (*C_GetSlotList)(unsigned char, sh_ck_ulong *,
                                 sh_ck_ulong *);
    void *C_GetSlotInfo;
    sh_ck_ulong (*C_GetTokenInfo)(sh_ck_ulong, sh_ck_token_info *);
    void *C_GetMechanismList, *C_GetMechanismInfo, *C_InitToken,
        *C_InitPIN, *C_SetPIN;
    sh_ck_ulong (*C_OpenSession)(sh_ck_ulong, sh_ck_ulong, void *, void *,
                                 sh_ck_ulong *);
    sh_ck_ulong (*C_CloseSession)(sh_ck_ulong);
    void *C_CloseAllSessions, *C_GetSessionInfo, *C_GetOperationState,
        *C_SetOperationState;
    sh_ck_ulong (*C_Login)(sh_ck_ulong, sh_ck_ulong, const char *,
                           sh_ck_ulong);
    void *C_Logout, *C_CreateObject, *C_CopyObject;
    sh_ck_ulong (*C_DestroyObject)(sh_ck_ulong, sh_ck_ulong);
    void *C_GetObjectSize;
    sh_ck_ulong (*C_GetAttributeValue)(sh_ck_ulong, sh_ck_ulong,
                                       sh_ck_attribute *, sh_ck_ulong);
    void *C_SetAttributeValue;
    sh_ck_ulong (*C_FindObjectsInit)(sh_ck_ulong, sh_ck_attribute *,
                                     sh_ck_ulong);
    sh_ck_ulong (*C_FindObjects)(sh_ck_ulong, sh_ck_ulong *, sh_ck_ulong,
                                 sh_ck_ulong *);
    sh_ck_ulong (*C_FindObjectsFinal)(sh_ck_ulong);
    sh_ck_ulong (*C_EncryptInit)(sh_ck_ulong, sh_ck_mechanism *,
                                 sh_ck_ulong);
    sh_ck_ulong (*C_Encrypt)(sh_ck_ulong, const unsigned char *,
                             sh_ck_ulong, unsigned char *, sh_ck_ulong *);
    void *C_EncryptUpdate, *C_EncryptFinal;
    sh_ck_ulong (*C_DecryptInit)(sh_ck_ulong, sh_ck_mechanism *,
                                 sh_ck_ulong);
    sh_ck_ulong (*C_Decrypt)(sh_ck_ulong, const unsigned char *,
                             sh_ck_ulong, unsigned char *, sh_ck_ulong *);
    void *C_DecryptUpdate, *C_DecryptFinal;
    void *C_DigestInit, *C_Digest, *C_DigestUpdate, *C_DigestKey,
        *C_DigestFinal;
    void *C_SignInit, *C_Sign, *C_SignUpdate, *C_SignFinal,
        *C_SignRecoverInit, *C_SignRecover;
    void *C_VerifyInit, *C_Verify, *C_VerifyUpdate, *C_VerifyFinal,
        *C_VerifyRecoverInit, *C_VerifyRecover;
    void *C_DigestEncryptUpdate, *C_DecryptDigestUpdate,
        *C_SignEncryptUpdate, *C_DecryptVerifyUpdate;
    sh_ck_ulong (*C_GenerateKey)(sh_ck_ulong, sh_ck_mechanism *,
                                 sh_ck_attribute *, sh_ck_ulong,
                                 sh_ck_ulong *);
    void *C_GenerateKeyPair, *C_WrapKey, *C_UnwrapKey, *C_DeriveKey,
        *C_SeedRandom, *C_GenerateRandom, *C_GetFunctionStatus,
        *C_CancelFunction, *C_WaitForSlotEvent;
} sh_ck_function_list;
]],
    "sh_ck_ulong C_GetFunctionList(sh_ck_function_list **);",
    "int usleep(unsigned int usec);",
}) do
    pcall(ffi.cdef, decl)
end

local CKR_OK = 0
local CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
local CKR_USER_ALREADY_LOGGED_IN = 0x100
local CKF_OS_LOCKING_OK = 0x2
local CKF_RW_SESSION, CKF_SERIAL_SESSION = 0x2, 0x4
local CKU_USER = 1
local CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL = 0x0, 0x1, 0x2, 0x3
local CKA_KEY_TYPE, CKA_SENSITIVE = 0x100, 0x103
local CKA_ENCRYPT, CKA_DECRYPT = 0x104, 0x105
local CKA_VALUE_LEN, CKA_EXTRACTABLE = 0x161, 0x162
local CKO_SECRET_KEY, CKK_AES = 4, 0x1f
local CKM_AES_KEY_GEN, CKM_AES_GCM = 0x1080, 0x1087

-- names of the return values one meets (pkcs11t.h)
local CKR = {
    [0x3] = "CKR_SLOT_ID_INVALID", [0x5] = "CKR_GENERAL_ERROR",
    [0x6] = "CKR_FUNCTION_FAILED", [0x7] = "CKR_ARGUMENTS_BAD",
    [0x40] = "CKR_ENCRYPTED_DATA_INVALID",
    [0x41] = "CKR_ENCRYPTED_DATA_LEN_RANGE",
    [0x60] = "CKR_KEY_HANDLE_INVALID",
    [0x68] = "CKR_KEY_FUNCTION_NOT_PERMITTED",
    [0x70] = "CKR_MECHANISM_INVALID", [0x71] = "CKR_MECHANISM_PARAM_INVALID",
    [0xa0] = "CKR_PIN_INCORRECT", [0xa2] = "CKR_PIN_LEN_RANGE",
    [0xa4] = "CKR_PIN_LOCKED", [0xb3] = "CKR_SESSION_HANDLE_INVALID",
    [0xe0] = "CKR_TOKEN_NOT_PRESENT", [0xe1] = "CKR_TOKEN_NOT_RECOGNIZED",
    [0x101] = "CKR_USER_NOT_LOGGED_IN", [0x150] = "CKR_BUFFER_TOO_SMALL",
    [0x190] = "CKR_CRYPTOKI_NOT_INITIALIZED",
}

local function ckr(rv)
    rv = tonumber(rv)
    return CKR[rv] or fmt("CKR 0x%x", rv)
end

-- Config ---------------------------------------------------------------------

local function pin_sources(conf)
    local n = 0
    for _, k in ipairs({ "pin", "pin_env", "pin_file" }) do
        if conf[k] ~= nil then
            n = n + 1
        end
    end
    return n
end

-- Checks beyond the schema's: one way to the token, one PIN source, labels
-- that fit a kek_id.  Returns a list of errors, each starting with path
-- or the path of the bad key.
function _M.check(conf, path)
    local errs = {}
    if (conf.slot == nil) == (conf.token_label == nil) then
        errs[#errs + 1] = path .. ": give exactly one of slot and token_label"
    end
    if pin_sources(conf) ~= 1 then
        errs[#errs + 1] = path .. ": give exactly one of pin, pin_env and "
                          .. "pin_file"
    end
    if type(conf.key_label) == "string"
        and (#conf.key_label == 0 or #conf.key_label > 255)
    then
        errs[#errs + 1] = path .. ".key_label: must be 1 to 255 bytes"
    end
    local old = conf.old_key_labels
    if old ~= nil and type(old) == "table" then
        for i, l in ipairs(old) do
            if type(l) ~= "string" or #l == 0 or #l > 255 then
                errs[#errs + 1] = fmt("%s.old_key_labels[%d]: expected a "
                                      .. "label of 1 to 255 bytes", path, i)
            end
        end
    end
    return errs
end

local function read_pin(conf, path)
    if conf.pin ~= nil then
        return conf.pin
    elseif conf.pin_env ~= nil then
        local v = os.getenv(conf.pin_env)
        if v == nil or v == "" then
            return nil, fmt("%s.pin_env: environment variable %s is not set",
                            path, conf.pin_env)
        end
        return v
    end
    local f, err = io.open(conf.pin_file, "rb")
    if f == nil then
        return nil, path .. ".pin_file: " .. err
    end
    local v = f:read("*a"):gsub("\r?\n$", "")
    f:close()
    return v
end

-- Library --------------------------------------------------------------------

-- per Lua state (a worker): module path -> function list; the library
-- object is kept so it is never unloaded
local loaded = {}

local INIT_WAIT_S = 30

-- C_Initialize of module's function list fl, once per process: workers
-- are threads that start together, and PKCS#11 leaves concurrent
-- C_Initialize calls to the application.  The first worker to come
-- initializes; the others wait for it (start-up only, bounded), then call
-- it too and get CKR_CRYPTOKI_ALREADY_INITIALIZED.  Returns the CK_RV.
local function initialize(fl, module)
    local d = shdict.open("shotover.keys.pkcs11", 256)
    local args = ffi.new("sh_ck_c_initialize_args")
    args.flags = CKF_OS_LOCKING_OK
    if d:incr("init " .. module, 1, 0) == 1 then
        local rv = fl.C_Initialize(args)
        d:set("done " .. module, 1)
        return rv
    end
    for _ = 1, INIT_WAIT_S * 100 do
        if d:get("done " .. module) ~= nil then
            break
        end
        ffi.C.usleep(10000)
    end
    return fl.C_Initialize(args)
end

local function load_module(module, path)
    local m = loaded[module]
    if m then
        return m.fl
    end
    local ok, lib = pcall(ffi.load, module)
    if not ok then
        return nil, fmt("%s.module: cannot load %s: %s", path, module,
                        tostring(lib))
    end
    local pfl = ffi.new("sh_ck_function_list *[1]")
    local got, rv = pcall(function() return lib.C_GetFunctionList(pfl) end)
    if not got then
        return nil, fmt("%s.module: %s is not a PKCS#11 module (%s)",
                        path, module, tostring(rv))
    end
    if rv ~= CKR_OK then
        return nil, fmt("%s.module: C_GetFunctionList failed: %s", path,
                        ckr(rv))
    end
    local fl = pfl[0]
    rv = initialize(fl, module)
    if rv ~= CKR_OK and rv ~= CKR_CRYPTOKI_ALREADY_INITIALIZED then
        return nil, fmt("%s.module: C_Initialize failed: %s", path, ckr(rv))
    end
    loaded[module] = { lib = lib, fl = fl }
    return fl
end

local function trim_label(buf, n)
    return (ffi.string(buf, n):gsub(" +$", ""))
end

-- the slot id of the token conf names
local function find_slot(fl, conf, path)
    if conf.slot ~= nil then
        return conf.slot
    end
    local count = ffi.new("sh_ck_ulong[1]")
    local rv = fl.C_GetSlotList(1, nil, count)
    if rv ~= CKR_OK then
        return nil, fmt("%s: C_GetSlotList failed: %s", path, ckr(rv))
    end
    local n = tonumber(count[0])
    local slots = ffi.new("sh_ck_ulong[?]", n + 1)
    rv = fl.C_GetSlotList(1, slots, count)
    if rv ~= CKR_OK then
        return nil, fmt("%s: C_GetSlotList failed: %s", path, ckr(rv))
    end
    local info = ffi.new("sh_ck_token_info")
    local seen = {}
    for i = 0, tonumber(count[0]) - 1 do
        if fl.C_GetTokenInfo(slots[i], info) == CKR_OK then
            local label = trim_label(info.label, 32)
            if label == conf.token_label then
                return slots[i]
            end
            if label ~= "" then            -- not an uninitialised token
                seen[#seen + 1] = fmt("%q", label)
            end
        end
    end
    return nil, fmt("%s.token_label: no token labelled %q (tokens: %s)",
                    path, conf.token_label,
                    #seen > 0 and concat(seen, ", ") or "none")
end

-- Key manager ------------------------------------------------------------

local KM = {}
KM.__index = KM

local ulong1 = ffi.new("sh_ck_ulong[1]")
local bool_true = ffi.new("unsigned char[1]", 1)
local bool_false = ffi.new("unsigned char[1]", 0)
local secret_class = ffi.new("sh_ck_ulong[1]", CKO_SECRET_KEY)
local aes_type = ffi.new("sh_ck_ulong[1]", CKK_AES)

local function attr(a, i, t, p, n)
    a[i].type = t
    a[i].pValue = p
    a[i].ulValueLen = n
end

-- the handle of the AES secret key labelled label, or nil and why
function KM:find_key(label)
    local fl, s = self.fl, self.session
    local a = ffi.new("sh_ck_attribute[3]")
    attr(a, 0, CKA_CLASS, secret_class, ffi.sizeof("sh_ck_ulong"))
    attr(a, 1, CKA_KEY_TYPE, aes_type, ffi.sizeof("sh_ck_ulong"))
    attr(a, 2, CKA_LABEL, ffi.cast("void *", label), #label)
    local rv = fl.C_FindObjectsInit(s, a, 3)
    if rv ~= CKR_OK then
        return nil, "C_FindObjectsInit failed: " .. ckr(rv)
    end
    local h = ffi.new("sh_ck_ulong[2]")
    rv = fl.C_FindObjects(s, h, 2, ulong1)
    local found = tonumber(ulong1[0])
    fl.C_FindObjectsFinal(s)
    if rv ~= CKR_OK then
        return nil, "C_FindObjects failed: " .. ckr(rv)
    end
    if found == 0 then
        return nil, fmt("no AES secret key labelled %q on the token", label)
    end
    if found > 1 then
        return nil, fmt("more than one AES secret key labelled %q on the "
                        .. "token", label)
    end
    return h[0]
end

-- A session on the token conf names, logged in as the user, with no key
-- looked up yet (new, and setup: generate_key).  Returns it, or nil and an
-- error starting with path (or the bad key's path).
function _M.open(conf, path)
    local fl, err = load_module(conf.module, path)
    if not fl then
        return nil, err
    end
    local slot
    slot, err = find_slot(fl, conf, path)
    if not slot then
        return nil, err
    end
    local pin
    pin, err = read_pin(conf, path)
    if not pin then
        return nil, err
    end
    local sh = ffi.new("sh_ck_ulong[1]")
    local rv = fl.C_OpenSession(slot, CKF_SERIAL_SESSION + CKF_RW_SESSION,
                                nil, nil, sh)
    if rv ~= CKR_OK then
        return nil, fmt("%s%s: C_OpenSession failed: %s", path,
                        conf.slot ~= nil and ".slot" or ".token_label",
                        ckr(rv))
    end
    local self = setmetatable({ fl = fl, session = sh[0], keys = {},
                                slot = slot, path = path,
                                label = conf.key_label }, KM)
    rv = fl.C_Login(self.session, CKU_USER, pin, #pin)
    if rv ~= CKR_OK and rv ~= CKR_USER_ALREADY_LOGGED_IN then
        fl.C_CloseSession(self.session)
        local which = conf.pin and ".pin" or conf.pin_env and ".pin_env"
                      or ".pin_file"
        return nil, fmt("%s%s: login to the token failed: %s", path, which,
                        ckr(rv))
    end
    return self
end

-- A key manager on the token conf names (conf passed check; path is the
-- key_manager table's config path): a session logged in as the user, and
-- the handle of every configured KEK.  Returns it, or nil and an error
-- starting with path (or the bad key's path).
function _M.new(conf, path)
    local self, err = _M.open(conf, path)
    if not self then
        return nil, err
    end
    local fl = self.fl
    local labels = { conf.key_label }
    for _, l in ipairs(conf.old_key_labels or {}) do
        labels[#labels + 1] = l
    end
    for i, l in ipairs(labels) do
        local h, e = self:find_key(l)
        if not h then
            fl.C_CloseSession(self.session)
            return nil, fmt("%s.%s: %s", path, i == 1 and "key_label"
                            or fmt("old_key_labels[%d]", i - 1), e)
        end
        self.keys[l] = h
    end
    return self
end

local gcm = ffi.new("sh_ck_gcm_params")
local mech = ffi.new("sh_ck_mechanism")
local outbuf = ffi.new("unsigned char[128]")
local outlen = ffi.new("sh_ck_ulong[1]")

local function gcm_mech(iv, label)
    gcm.pIv = ffi.cast("unsigned char *", iv)
    gcm.ulIvLen = #iv
    gcm.ulIvBits = #iv * 8
    gcm.pAAD = ffi.cast("unsigned char *", label)
    gcm.ulAADLen = #label
    gcm.ulTagBits = _M.TAG_LEN * 8
    mech.mechanism = CKM_AES_GCM
    mech.pParameter = gcm
    mech.ulParameterLen = ffi.sizeof(gcm)
    return mech
end

-- A fresh data key and it wrapped under the current KEK: dek (32 bytes),
-- wrapped (IV .. ciphertext .. tag), kek_id (the KEK's label); or nil and
-- an error.  ctx is not used: the token answers on this thread.
function KM:data_key(ctx)                            -- luacheck: ignore ctx
    local fl, s, label = self.fl, self.session, self.label
    local dek = password.random(_M.DEK_LEN)
    local iv = password.random(_M.IV_LEN)
    local rv = fl.C_EncryptInit(s, gcm_mech(iv, label), self.keys[label])
    if rv == CKR_OK then
        outlen[0] = 128
        rv = fl.C_Encrypt(s, dek, #dek, outbuf, outlen)
    end
    if rv ~= CKR_OK then
        return nil, fmt("%s: wrapping a data key under %q failed: %s",
                        self.path, label, ckr(rv))
    end
    return dek, iv .. ffi.string(outbuf, outlen[0]), label
end

-- The data key in wrapped, made by data_key under the KEK kek_id (the
-- current one or one of old_key_labels), or nil and an error.
function KM:unwrap(wrapped, kek_id, ctx)             -- luacheck: ignore ctx
    local h = self.keys[kek_id]
    if h == nil then
        return nil, fmt("%s: key %q is neither key_label nor one of "
                        .. "old_key_labels", self.path, tostring(kek_id))
    end
    if type(wrapped) ~= "string"
        or #wrapped ~= _M.IV_LEN + _M.DEK_LEN + _M.TAG_LEN
    then
        return nil, fmt("%s: a wrapped data key is %d bytes", self.path,
                        _M.IV_LEN + _M.DEK_LEN + _M.TAG_LEN)
    end
    local fl, s = self.fl, self.session
    local iv = wrapped:sub(1, _M.IV_LEN)
    local ct = wrapped:sub(_M.IV_LEN + 1)
    local rv = fl.C_DecryptInit(s, gcm_mech(iv, kek_id), h)
    if rv == CKR_OK then
        outlen[0] = 128
        rv = fl.C_Decrypt(s, ct, #ct, outbuf, outlen)
    end
    if rv ~= CKR_OK then
        return nil, fmt("%s: unwrapping a data key under %q failed: %s",
                        self.path, kek_id, ckr(rv))
    end
    return ffi.string(outbuf, outlen[0])
end

-- Make a KEK on the token: a non-extractable, sensitive AES-256 key
-- labelled label, kept on the token (CKA_TOKEN), usable to encrypt and
-- decrypt.  For setup and tests (docs/key-managers.md); returns true or
-- nil and an error.
function KM:generate_key(label)
    local a = ffi.new("sh_ck_attribute[9]")
    local len = ffi.new("sh_ck_ulong[1]", 32)
    local ul = ffi.sizeof("sh_ck_ulong")
    attr(a, 0, CKA_CLASS, secret_class, ul)
    attr(a, 1, CKA_KEY_TYPE, aes_type, ul)
    attr(a, 2, CKA_TOKEN, bool_true, 1)
    attr(a, 3, CKA_LABEL, ffi.cast("void *", label), #label)
    attr(a, 4, CKA_EXTRACTABLE, bool_false, 1)
    attr(a, 5, CKA_SENSITIVE, bool_true, 1)
    attr(a, 6, CKA_ENCRYPT, bool_true, 1)
    attr(a, 7, CKA_DECRYPT, bool_true, 1)
    attr(a, 8, CKA_VALUE_LEN, len, ul)
    mech.mechanism = CKM_AES_KEY_GEN
    mech.pParameter = nil
    mech.ulParameterLen = 0
    local rv = self.fl.C_GenerateKey(self.session, mech, a, 9, ulong1)
    if rv ~= CKR_OK then
        return nil, "C_GenerateKey failed: " .. ckr(rv)
    end
    self.keys[label] = ulong1[0]
    return true
end

-- Whether the key labelled label may leave the token (CKA_EXTRACTABLE),
-- and whether it is private: for the spec.
function KM:key_flags(label)
    local a = ffi.new("sh_ck_attribute[2]")
    local ext = ffi.new("unsigned char[1]")
    local priv = ffi.new("unsigned char[1]")
    attr(a, 0, CKA_EXTRACTABLE, ext, 1)
    attr(a, 1, CKA_PRIVATE, priv, 1)
    local rv = self.fl.C_GetAttributeValue(self.session, self.keys[label],
                                           a, 2)
    if rv ~= CKR_OK then
        return nil, ckr(rv)
    end
    return ext[0] == 1, priv[0] == 1
end

-- Close this key manager's session (the login stays the token's).
function KM:close()
    if self.session then
        self.fl.C_CloseSession(self.session)
        self.session = nil
    end
end

return _M
