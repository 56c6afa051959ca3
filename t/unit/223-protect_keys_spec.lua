-- AES-256-GCM, the envelope and the local key manager: round trips;
-- a changed tag, ciphertext, header or identity (another row, column)
-- fails; nonces never repeat; KEK rotation (old KEKs still open, new
-- values name the new id); config errors with their paths, never the key.
local aes_gcm = require "shotover.aes_gcm"
local envelope = require "shotover.envelope"
local keys = require "shotover.keys"

local KEK1 = string.rep("11", 32)
local KEK2 = string.rep("22", 32)

local function flip(s, i)
    return s:sub(1, i - 1) .. string.char(bit.bxor(s:byte(i), 1))
           .. s:sub(i + 1)
end

local function km(conf)
    local errs = keys.check(conf, "km")
    assert.same({}, errs)
    return keys.new(conf, "km")
end

local function tmpfile(content)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(content)
    f:close()
    return path
end

describe("aes_gcm", function()
    it("round-trips, and refuses any changed bit, nonce or aad", function()
        local k = aes_gcm.new(string.rep("k", 32))
        local nonce = string.rep("n", 12)
        for _, pt in ipairs({ "", "x", string.rep("abc", 1000) }) do
            local ct, tag = k:seal(nonce, pt, "aad")
            assert.equal(#pt, #ct)
            assert.equal(16, #tag)
            assert.equal(pt, k:open(nonce, ct, tag, "aad"))
            assert.is_nil(k:open(nonce, ct, flip(tag, 1), "aad"))
            assert.is_nil(k:open(nonce, ct, tag, "aae"))
            assert.is_nil(k:open(flip(nonce, 12), ct, tag, "aad"))
            if #ct > 0 then
                assert.is_nil(k:open(nonce, flip(ct, #ct), tag, "aad"))
            end
            assert.is_nil(aes_gcm.new(string.rep("j", 32))
                          :open(nonce, ct, tag, "aad"))
        end
    end)

    it("matches a NIST GCM test vector (AES-256, 96-bit IV)", function()
        -- gcmEncryptExtIV256.rsp, Count = 0 of Keylen 256 PTlen 128
        local function unhex(h)
            return (h:gsub("%x%x", function(x)
                return string.char(tonumber(x, 16))
            end))
        end
        local k = aes_gcm.new(unhex("31bdadd96698c204aa9ce1448ea94ae1"
                                    .. "fb4a9a0b3c9d773b51bb1822666b8f22"))
        local ct, tag = k:seal(unhex("0d18e06c7c725ac9e362e1ce"),
                               unhex("2db5168e932556f8089a0622981d017d"), "")
        assert.equal(unhex("fa4362189661d163fcd6a56d8bf0405a"), ct)
        assert.equal(unhex("d636ac1bbedd5cc3ee727dc2ab4a9489"), tag)
    end)
end)

describe("the local key manager", function()
    it("takes the KEK from a file (raw, hex, base64), env or inline", function()
        local ffi = require "ffi"
        pcall(ffi.cdef, "int setenv(const char *, const char *, int);")
        ffi.C.setenv("SHOTOVER_TEST_KEK", KEK2, 1)
        local raw = tmpfile(string.rep("\7", 32))
        local hex = tmpfile(KEK1 .. "\n")
        local b64 = tmpfile(require("shotover.password")
                            .b64encode(string.rep("\7", 32)))
        for _, conf in ipairs({ { "local", kek_file = raw },
                                { "local", kek_file = hex },
                                { "local", kek_file = b64 },
                                { "local", kek_env = "SHOTOVER_TEST_KEK" },
                                { "local", kek = KEK1 } }) do
            local m = km(conf)
            local dek, wrapped, id = m:data_key()
            assert.equal(32, #dek)
            assert.equal("1", id)
            assert.equal(dek, m:unwrap(wrapped, id))
        end
        os.remove(raw); os.remove(hex); os.remove(b64)
    end)

    it("unwraps with old KEKs by id, and refuses unknown ids", function()
        local old = km({ "local", kek = KEK1, kek_id = "v1" })
        local dek1, w1, id1 = old:data_key()
        assert.equal("v1", id1)
        local new = km({ "local", kek = KEK2, kek_id = "v2",
                         old_keks = { v1 = KEK1 } })
        local dek2, w2, id2 = new:data_key()
        assert.equal("v2", id2)
        assert.equal(dek1, new:unwrap(w1, "v1"))
        assert.equal(dek2, new:unwrap(w2, "v2"))
        -- a wrapped key is bound to its KEK id
        local none, err = new:unwrap(w1, "v2")
        assert.is_nil(none)
        assert.matches('does not unwrap under KEK "v2"', err, 1, true)
        none, err = old:unwrap(w2, "v2")
        assert.is_nil(none)
        assert.matches('no KEK with id "v2"', err, 1, true)
    end)

    it("reports config errors with their paths, never the key", function()
        local secret = "not-a-key-" .. string.rep("z", 20)
        local cases = {
            { {}, "km%[1%]: expected the key manager kind" },
            { { "vault" }, 'km%[1%]: unknown key manager kind "vault"' },
            { { "local" }, "km: give exactly one of kek_file, kek_env and "
                           .. "kek" },
            { { "local", kek = KEK1, kek_env = "X" },
              "km: give exactly one of .*%(got kek_env, kek%)" },
            { { "local", kek = secret }, "km.kek: not a 32%-byte key" },
            { { "local", kek = 5 }, "km.kek: expected a string, got a "
                                    .. "number" },
            { { "local", kek_file = "/nonexistent/kek" },
              "km.kek_file: cannot read the KEK file" },
            { { "local", kek_env = "SHOTOVER_NO_SUCH_VAR" },
              "km.kek_env: environment variable SHOTOVER_NO_SUCH_VAR is "
              .. "not set" },
            { { "local", kek = KEK1, old_keks = { ["1"] = KEK2 } },
              'km.old_keks%["1"%]: the id of the current KEK' },
            { { "local", kek = KEK1, old_keks = { v0 = secret } },
              'km.old_keks%["v0"%]: not a 32%-byte key' },
            { { "local", kek = KEK1, old_kek_files = { v0 = "/nonexistent" } },
              'km.old_kek_files%["v0"%]: cannot read' },
            { { "local", kek = KEK1, kek_id = string.rep("i", 256) },
              "km.kek_id: expected 1 to 255 bytes" },
            { { "local", kek = KEK1, colour = "red" }, "km.colour: unknown "
                                                       .. "key" },
        }
        for _, c in ipairs(cases) do
            local errs = keys.check(c[1], "km")
            local all = table.concat(errs, "\n")
            assert.matches(c[2], all)
            assert.is_nil(all:find(secret, 1, true))
        end
    end)
end)

describe("envelopes", function()
    local id_a = envelope.identity("ks", "t", "secret", "\0\0\0\1a")

    it("round-trip, self-describing, and each tampered part fails", function()
        local ring = envelope.keyring(km({ "local", kek = KEK1,
                                            kek_id = "k1" }))
        local s = assert(ring:seal("hello", id_a))
        local hlen, kid = envelope.header(s)
        assert.equal("k1", kid)
        assert.equal(1, s:byte(1))
        assert.equal(hlen + 12 + 5 + 16, #s)
        assert.equal("hello", ring:open(s, id_a))
        -- a fresh keyring (another worker) opens it through the KEK
        local other = envelope.keyring(km({ "local", kek = KEK1,
                                             kek_id = "k1" }))
        assert.equal("hello", other:open(s, id_a))
        for _, i in ipairs({ #s, #s - 16, hlen + 1, hlen + 13, 3, 2 + 2 + 3 }) do
            local bad, err = other:open(flip(s, i), id_a)
            assert.is_nil(bad, "byte " .. i)
            assert.is_string(err)
        end
        -- another row, another column, another table
        for _, id in ipairs({
            envelope.identity("ks", "t", "secret", "\0\0\0\1b"),
            envelope.identity("ks", "t", "other", "\0\0\0\1a"),
            envelope.identity("ks", "u", "secret", "\0\0\0\1a"),
            envelope.identity("kt", "t", "secret", "\0\0\0\1a") }) do
            local bad, err = other:open(s, id)
            assert.is_nil(bad)
            assert.matches("does not authenticate", err)
        end
        local bad, err = other:open("\2garbage-garbage-garbage-garbage", id_a)
        assert.is_nil(bad)
        assert.matches("format version 2", err)
    end)

    it("never repeats a nonce, and rotates DEKs by use count", function()
        local ring = envelope.keyring(km({ "local", kek = KEK1 }), 3600, 100)
        local seen = {}
        local headers = {}
        for _ = 1, 450 do
            local s = ring:seal("v", id_a)
            local hlen = envelope.header(s)
            local nonce = s:sub(hlen + 1, hlen + 12)
            local key = s:sub(1, hlen) .. nonce
            assert.is_nil(seen[key])
            seen[key] = true
            headers[s:sub(1, hlen)] = true
            assert.equal("v", ring:open(s, id_a))
        end
        local n = 0
        for _ in pairs(headers) do
            n = n + 1
        end
        assert.equal(5, n)                  -- 100 uses per DEK
        assert.equal(5, ring.rotations)
        -- two workers: two DEKs, two random prefixes
        local r2 = envelope.keyring(km({ "local", kek = KEK1 }))
        local a, b = ring:seal("v", id_a), r2:seal("v", id_a)
        assert.not_equal(a:sub(1, envelope.header(a)),
                         b:sub(1, envelope.header(b)))
    end)

    it("rotates DEKs when their time is up", function()
        local ring = envelope.keyring(km({ "local", kek = KEK1 }), 0)
        local a = ring:seal("v", id_a)
        local b = ring:seal("v", id_a)
        assert.not_equal(a:sub(1, envelope.header(a)),
                         b:sub(1, envelope.header(b)))
    end)

    it("after a KEK rotation: old values open, new ones name the new id",
       function()
        local old = envelope.keyring(km({ "local", kek = KEK1,
                                          kek_id = "2025" }))
        local s1 = old:seal("before", id_a)
        local new = envelope.keyring(km({ "local", kek = KEK2,
                                          kek_id = "2026",
                                          old_keks = { ["2025"] = KEK1 } }))
        local s2 = new:seal("after", id_a)
        assert.equal("2026", select(2, envelope.header(s2)))
        assert.equal("before", new:open(s1, id_a))
        assert.equal("after", new:open(s2, id_a))
        -- without the old KEK, an old value is an error, not garbage
        local bare = envelope.keyring(km({ "local", kek = KEK2,
                                           kek_id = "2026" }))
        local pt, err = bare:open(s1, id_a)
        assert.is_nil(pt)
        assert.matches('no KEK with id "2025"', err, 1, true)
    end)
end)
