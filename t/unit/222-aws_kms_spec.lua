-- aws_kms: the key manager end to end against the KMS stand-in
-- (t/lib/kms_standin.py: HTTPS, SigV4 checked with the same secret, KMS's
-- JSON API and error bodies; no real KMS is reachable here), blocking
-- calls (no chain context); the thread-pool path while a request waits is
-- t/integration/088-redis_aws_kms_async_spec.lua.  Also its config errors,
-- a wrong secret (KMS's error type in the message), an unknown key, a
-- closed port, a timeout, an untrusted or misnamed certificate.
local ffi = require "ffi"
local h = require "harness"
local kms = require "kms"
local aws_kms = require "shotover.keys.aws_kms"

pcall(ffi.cdef, "int setenv(const char *name, const char *value, "
                .. "int overwrite);")
pcall(ffi.cdef, "int unsetenv(const char *name);")

local PATH = "sources[1].chain[2].key_manager"

local standin

local function conf(over)
    local c = { "aws_kms", region = kms.REGION, key_id = "alias/shotover",
                endpoint = standin.endpoint, ca = standin.ca,
                access_key_id = kms.ACCESS_KEY,
                secret_access_key = kms.SECRET, timeout_ms = 3000 }
    for k, v in pairs(over or {}) do
        c[k] = v ~= false and v or nil
    end
    return c
end

local function new(over)
    local c = conf(over)
    local errs = aws_kms.check(c, PATH)
    assert.are.same({}, errs)
    return assert(aws_kms.new(c, PATH))
end

describe("aws_kms", function()
    setup(function()
        standin = kms.start()
    end)
    teardown(h.cleanup)

    it("reports config problems with their paths", function()
        local e = table.concat(aws_kms.check(conf({
            endpoint = "http://kms", region = "EU West",
            secret_access_key = false, ca = "/nonexistent/ca.pem" }), PATH),
            "\n")
        assert.matches(PATH .. '.endpoint: expected "https://HOST[:PORT]", '
                       .. 'got "http://kms"', e, 1, true)
        assert.matches(PATH .. ".region: expected a region name", e, 1, true)
        assert.matches(PATH .. ": give both access_key_id and "
                       .. "secret_access_key", e, 1, true)
        assert.matches(PATH .. ".ca: /nonexistent/ca.pem", e, 1, true)
        ffi.C.unsetenv("AWS_ACCESS_KEY_ID")
        e = table.concat(aws_kms.check(conf({ access_key_id = false,
                                               secret_access_key = false }),
                                       PATH), "\n")
        assert.matches(PATH .. ": no credentials", e, 1, true)
        assert.are.same({}, aws_kms.check(conf(), PATH))
    end)

    it("reads endpoints and KMS's JSON", function()
        assert.are.same({ "kms.eu-west-1.amazonaws.com", 443 },
                        { aws_kms.parse_endpoint(
                            "https://kms.eu-west-1.amazonaws.com") })
        assert.are.same({ "::1", 8443 },
                        { aws_kms.parse_endpoint("https://[::1]:8443/") })
        assert.is_nil(aws_kms.parse_endpoint("https://a:99999"))
        assert.are.same({ KeyId = "k", n = 3, ok = true,
                          list = { "a", "\"\n\226\130\172" } },
                        aws_kms.json_decode('{"KeyId":"k", "n": 3, "ok":'
                            .. 'true, "list": ["a", "\\"\\n\\u20ac"]}'))
        assert.is_nil(aws_kms.json_decode('{"a": 1,}'))
        assert.is_nil(aws_kms.json_decode('{"a": 1} x'))
    end)

    it("gets a data key from KMS and back, blocking without a chain",
       function()
        local km = new()
        local dek, wrapped, kek_id = km:data_key(nil)
        assert.are.equal(32, #dek)
        -- the key's ARN, not the alias the config names
        assert.are.equal(kms.KEY1, kek_id)
        assert.is_true(#wrapped > 32)
        assert.is_nil(wrapped:find(dek, 1, true))
        assert.are.equal(dek, km:unwrap(wrapped, kek_id, nil))
        local dek2, wrapped2 = km:data_key(nil)
        assert.are_not.equal(dek, dek2)
        assert.are.equal(dek2, km:unwrap(wrapped2, kek_id, nil))
    end)

    it("unwraps data keys of the previous key after rotation", function()
        local dek, wrapped, kek_id = new():data_key()
        local rotated = new({ key_id = kms.KEY2 })
        local dek2, _, kek_id2 = rotated:data_key()
        assert.are.equal(kms.KEY2, kek_id2)
        assert.are_not.equal(dek, dek2)
        assert.are.equal(dek, rotated:unwrap(wrapped, kek_id))
        -- a blob named as another key's is refused by KMS
        local none, err, kind = rotated:unwrap(wrapped, kms.KEY2)
        assert.is_nil(none)
        assert.are.equal("IncorrectKeyException", kind)
        assert.matches(PATH .. ": KMS Decrypt: IncorrectKeyException", err,
                       1, true)
        none, err = rotated:unwrap("garbage", kek_id)
        assert.is_nil(none)
        assert.matches("InvalidCiphertextException", err, 1, true)
    end)

    it("takes credentials from the environment", function()
        ffi.C.setenv("AWS_ACCESS_KEY_ID", kms.ACCESS_KEY, 1)
        ffi.C.setenv("AWS_SECRET_ACCESS_KEY", kms.SECRET, 1)
        local ok, err = pcall(function()
            local km = new({ access_key_id = false,
                             secret_access_key = false })
            local dek, wrapped, kek_id = km:data_key()
            assert.are.equal(dek, km:unwrap(wrapped, kek_id))
        end)
        ffi.C.unsetenv("AWS_ACCESS_KEY_ID")
        ffi.C.unsetenv("AWS_SECRET_ACCESS_KEY")
        assert(ok, err)
    end)

    it("signs and sends a session token", function()
        local st = kms.start({ session_token = "FQoGZXIvYXdzE/token" })
        local over = { endpoint = st.endpoint, ca = st.ca,
                       session_token = "FQoGZXIvYXdzE/token" }
        local km = new(over)
        local dek, wrapped, kek_id = km:data_key()
        assert.are.equal(dek, km:unwrap(wrapped, kek_id))
        over.session_token = false
        local none, err, kind = new(over):data_key()
        assert.is_nil(none)
        assert.are.equal("UnrecognizedClientException", kind)
        assert.matches("KMS GenerateDataKey: UnrecognizedClientException",
                       err, 1, true)
    end)

    it("carries KMS's error type for a wrong secret or an unknown key",
       function()
        local dek, err, kind = new({ secret_access_key = "wrong" }):data_key()
        assert.is_nil(dek)
        assert.are.equal("InvalidSignatureException", kind)
        assert.matches(PATH .. ": KMS GenerateDataKey: "
                       .. "InvalidSignatureException: The request signature "
                       .. "we calculated does not match", err, 1, true)
        assert.is_nil(err:find("wrong", 1, true))
        dek, err, kind = new({ access_key_id = "AKIDUNKNOWN" }):data_key()
        assert.is_nil(dek)
        assert.matches("UnrecognizedClientException: The security token", err,
                       1, true)
        assert.are.equal("UnrecognizedClientException", kind)
        dek, err = new({ key_id = "alias/nope" }):data_key()
        assert.is_nil(dek)
        assert.matches(PATH .. ": KMS GenerateDataKey: NotFoundException: "
                       .. "Key 'alias/nope' does not exist", err, 1, true)
    end)

    it("says a closed port is refused", function()
        local port = h.free_port()
        local dek, err = new({ endpoint = "https://127.0.0.1:" .. port })
                             :data_key()
        assert.is_nil(dek)
        assert.matches(PATH .. ": KMS GenerateDataKey at 127.0.0.1:" .. port
                       .. ": ECONNREFUSED: connecting to 127.0.0.1:" .. port,
                       err, 1, true)
    end)

    it("gives up on an endpoint that does not answer in time", function()
        local bh = h.blackhole()
        local t0 = h.now()
        local dek, err = new({ endpoint = "https://127.0.0.1:" .. bh.port,
                               timeout_ms = 300 }):data_key()
        assert.is_nil(dek)
        assert.matches("ETIMEDOUT: handshake with 127.0.0.1:" .. bh.port
                       .. ": timed out", err, 1, true)
        assert.is_true(h.now() - t0 < 2)
        -- and a KMS that answers too late
        local slow = kms.start({ delay_ms = 1500 })
        dek, err = new({ endpoint = slow.endpoint, ca = slow.ca,
                         timeout_ms = 300 }):data_key()
        assert.is_nil(dek)
        assert.matches("ETIMEDOUT: reading from 127.0.0.1:" .. slow.port,
                       err, 1, true)
    end)

    it("refuses a certificate it does not trust or of another name",
       function()
        local other = kms.cert("other-ca")
        local dek, err = new({ ca = other }):data_key()
        assert.is_nil(dek)
        assert.matches(PATH .. ": KMS GenerateDataKey at 127.0.0.1:"
                       .. standin.port .. ": TLS: the certificate of "
                       .. "127.0.0.1:" .. standin.port .. " is not trusted",
                       err, 1, true)
        -- the system's store does not know the stand-in's certificate
        dek, err = new({ ca = false }):data_key()
        assert.is_nil(dek)
        assert.matches("is not trusted", err, 1, true)
        -- trusted, but issued for 127.0.0.1, not localhost
        dek, err = new({ endpoint = "https://localhost:" .. standin.port })
                       :data_key()
        assert.is_nil(dek)
        assert.matches("is not trusted: hostname mismatch", err, 1, true)
    end)
end)
