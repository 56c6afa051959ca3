-- authenticate: password hashes (PBKDF2-HMAC-SHA256 against RFC test
-- vectors), config errors with their paths, and Redis AUTH / HELLO AUTH
-- answered at shotover with NOAUTH before, never forwarded.
local testing = require "shotover.testing"
local password = require "shotover.password"
local message = require "shotover.message"

local function hex(s)
    return (s:gsub(".", function(c)
        return string.format("%02x", c:byte())
    end))
end

-- cheap hashes for specs (the minimum iterations)
local ALICE = password.hash("alice-pw", 1000)
local DEFAULT = password.hash("default-pw", 1000)

describe("password hashes", function()
    it("are PBKDF2-HMAC-SHA256 (RFC 7914's and common test vectors)",
       function()
        assert.equal("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805"
                     .. "987cb70be17b", hex(password.pbkdf2("password",
                                                            "salt", 1)))
        assert.equal("c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a496"
                     .. "3873aa98134a", hex(password.pbkdf2("password",
                                                            "salt", 4096)))
    end)

    it("round-trip through their string with a fresh salt each", function()
        local a, b = password.hash("pw", 1000), password.hash("pw", 1000)
        assert.matches("^pbkdf2%-sha256%$1000%$[%w+/=]+%$[%w+/=]+$", a)
        assert.not_equal(a, b)
        local h = assert(password.parse(a))
        assert.is_true(password.verify(h, "pw"))
        assert.is_false(password.verify(h, "pW"))
        assert.is_false(password.verify(h, ""))
    end)

    it("base64 round-trips every length and refuses bad text", function()
        for _, s in ipairs({ "", "f", "fo", "foo", "foob", "fooba",
                             "foobar", "\0\255\128" }) do
            assert.equal(s, password.b64decode(password.b64encode(s)))
        end
        assert.equal("Zm9vYg==", password.b64encode("foob"))
        assert.is_nil(password.b64decode("Zm9"))
        assert.is_nil(password.b64decode("Z=9v"))
        assert.is_nil(password.b64decode("Zm9!"))
    end)

    it("compare in constant time but correctly", function()
        assert.is_true(password.equal("abc", "abc"))
        assert.is_false(password.equal("abc", "abd"))
        assert.is_false(password.equal("abc", "ab"))
    end)

    it("refuse malformed strings without showing them", function()
        local _, e = password.parse("hunter2")
        assert.matches("expected \"pbkdf2%-sha256%$ITERATIONS", e)
        assert.not_matches("hunter2", e)
        _, e = password.parse("pbkdf2-sha256$10$c2FsdHNhbHQ=$"
                              .. password.b64encode(("x"):rep(32)))
        assert.matches("iterations must be between 1000", e)
        _, e = password.parse("pbkdf2-sha256$1000$c2FsdHNhbHQ=$eA==")
        assert.matches("the hash must be base64 of 32 bytes", e)
        _, e = password.parse("pbkdf2-sha256$1000$c2E=$"
                              .. password.b64encode(("x"):rep(32)))
        assert.matches("the salt must be base64 of at least 8 bytes", e)
    end)
end)

describe("authenticate config", function()
    it("reports every problem with its path, never a hash", function()
        local ok, errs = testing.check({
            { "authenticate", users = { alice = { hash = "plaintext!" },
                                        bob = "x",
                                        carol = { hash = ALICE, pw = 1 },
                                        dave = {} } },
            { "null" } })
        assert.is_nil(ok)
        table.sort(errs)
        assert.same({
            'chain[1].users.alice.hash: expected "pbkdf2-sha256$ITERATIONS'
                .. '$SALT$HASH" (make one with tools/hash-password.lua)',
            "chain[1].users.bob: expected { hash = \"...\" }, got a string",
            'chain[1].users.carol: unknown key "pw"',
            "chain[1].users.dave.hash: required",
        }, errs)
        ok, errs = testing.check({ { "authenticate", users = {
            alice = { hash = ALICE } }, max_failures = 0 }, { "null" } })
        assert.is_nil(ok)
        assert.same({ "chain[1].max_failures: must be at least 1, got 0" },
                    errs)
        ok, errs = testing.check({ { "authenticate", users = {} },
                                   { "null" } })
        assert.is_nil(ok)
        assert.same({ "chain[1].users: give at least one user" }, errs)
        ok, errs = testing.check({ { "authenticate" }, { "null" } })
        assert.is_nil(ok)
        assert.matches("chain%[1%]%.users: required", errs[1])
    end)

    it("checks the cassandra sink's username and password go together",
       function()
        local ok, errs = testing.check({ { "cassandra",
            remote = "127.0.0.1:9042", username = "proxy" } },
            { protocol = "cassandra" })
        assert.is_nil(ok)
        assert.same({ "chain[1]: username and password: give both (the "
                      .. "node's login) or neither" }, errs)
    end)
end)

describe("authenticate on redis", function()
    local seen            -- what reached the element after authenticate
    local function recorder(batch)
        local resp = message.new_batch(batch.n)
        for i = 1, batch.n do
            local m = batch[i]
            seen[#seen + 1] = table.concat(m:args(), " ")
            resp:set(i, assert(message.frame_from_resp("+FWD\r\n")))
        end
        return resp
    end
    local t

    before_each(function()
        seen = {}
        t = testing.build({
            { "authenticate", users = { alice = { hash = ALICE },
                                        default = { hash = DEFAULT } },
              dict = "authn-unit-" .. tostring(math.random(1e9)) },
            recorder })
    end)

    it("answers NOAUTH until authenticated and forwards nothing before",
       function()
        assert.same({ "NOAUTH Authentication required.",
                      "NOAUTH Authentication required.",
                      "FWD" },
                    t:replies({ "GET", "k" }, { "PING" }, { "QUIT" }))
        assert.same({ "QUIT" }, seen)
        assert.is_nil(t.ctx.conn.user)
    end)

    it("checks AUTH user pass at shotover and never forwards it", function()
        assert.same({ "NOAUTH Authentication required.", "OK", "FWD" },
                    t:replies({ "GET", "k" }, { "AUTH", "alice", "alice-pw" },
                              { "GET", "k" }))
        assert.same({ "GET k" }, seen)
        assert.equal("alice", t.ctx.conn.user)
    end)

    it("takes AUTH pass as the default user", function()
        assert.same({ "OK", "FWD" }, t:replies({ "AUTH", "default-pw" },
                                                { "SET", "k", "v" }))
        assert.equal("default", t.ctx.conn.user)
    end)

    it("answers WRONGPASS to a wrong password or unknown user", function()
        local wrong = "WRONGPASS invalid username-password pair or user is "
                      .. "disabled."
        assert.same({ wrong, wrong, wrong,
                      "NOAUTH Authentication required." },
                    t:replies({ "AUTH", "alice", "default-pw" },
                              { "AUTH", "mallory", "alice-pw" },
                              { "AUTH", "alice-pw" }, { "GET", "k" }))
        assert.same({}, seen)
        assert.is_nil(t.ctx.conn.user)
        assert.same({ "ERR wrong number of arguments for 'auth' command" },
                    t:replies({ "AUTH", "a", "b", "c" }))
    end)

    it("a failed AUTH after a good one keeps the first user", function()
        t:replies({ "AUTH", "alice", "alice-pw" })
        assert.matches("^WRONGPASS", t:replies({ "AUTH", "alice", "x" })[1])
        assert.equal("alice", t.ctx.conn.user)
    end)

    it("checks HELLO AUTH and forwards the HELLO without it", function()
        assert.matches("^NOAUTH HELLO must be called", t:replies(
            { "HELLO", "3" })[1])
        assert.matches("^WRONGPASS", t:replies(
            { "HELLO", "3", "AUTH", "alice", "nope" })[1])
        assert.same({}, seen)
        assert.same({ "FWD" }, t:replies({ "HELLO", "3", "auth", "alice",
                                           "alice-pw", "SETNAME", "app" }))
        assert.same({ "HELLO 3 SETNAME app" }, seen)
        assert.equal("alice", t.ctx.conn.user)
        -- once authenticated, HELLO without AUTH goes on as it is
        assert.same({ "FWD" }, t:replies({ "HELLO", "2" }))
        assert.same({ "HELLO 3 SETNAME app", "HELLO 2" }, seen)
        assert.matches("^ERR Syntax error in HELLO option 'BOGUS'",
                       t:replies({ "HELLO", "3", "BOGUS" })[1])
    end)

    it("RESET forgets the user", function()
        t:replies({ "AUTH", "alice", "alice-pw" })
        assert.same({ "FWD", "NOAUTH Authentication required." },
                    t:replies({ "RESET" }, { "GET", "k" }))
        assert.is_nil(t.ctx.conn.user)
    end)

    it("each connection authenticates on its own", function()
        t:replies({ "AUTH", "alice", "alice-pw" })
        t:reconnect()
        assert.same({ "NOAUTH Authentication required." },
                    t:replies({ "GET", "k" }))
    end)

    it("locks an address out after max_failures failures, even for the "
       .. "right password", function()
        local lt = testing.build({
            { "authenticate", users = { alice = { hash = ALICE } },
              max_failures = 3, lockout_seconds = 60,
              dict = "authn-unit-lock" },
            recorder })
        for _ = 1, 3 do
            assert.matches("^WRONGPASS", lt:replies(
                { "AUTH", "alice", "guess" })[1])
        end
        local locked = "^ERR shotover: too many failed authentication "
                       .. "attempts"
        assert.matches(locked, lt:replies({ "AUTH", "alice", "guess" })[1])
        lt:reconnect()
        assert.matches(locked, lt:replies({ "AUTH", "alice", "alice-pw" })[1])
        assert.is_nil(lt.ctx.conn.user)
    end)
end)

describe("authenticate on cassandra", function()
    local request = require "shotover.cql.request"
    local function auth_response(user, pass, stream)
        local tok = "\0" .. user .. "\0" .. pass
        return request.envelope(0x0F, string.char(0, 0, 0, #tok) .. tok,
                                { stream = stream })
    end

    it("asks for a login the node did not ask for, checks it, and answers "
       .. "UNAUTHORIZED before it", function()
        local t = testing.build({
            { "authenticate", users = { alice = { hash = ALICE } },
              dict = "authn-unit-cql" },
            { "cassandra", remote = "127.0.0.1:9042" } },
            { protocol = "cassandra" })
        local resp = t:run(request.startup({ stream = 1 }))
        -- the dry sink answered READY: the client is asked to log in
        assert.same({ "AUTHENTICATE" }, testing.texts(resp))
        assert.truthy(resp[1]:raw():find(
            "org.apache.cassandra.auth.PasswordAuthenticator", 1, true))
        local r
        r = t:replies(request.query("SELECT * FROM ks.t", nil, { stream = 2 }))
        assert.matches("^ERROR 0x2100 .*log in first", r[1])
        r = t:replies(auth_response("alice", "wrong", 3))
        assert.matches("^ERROR 0x0100 Provided username and/or password "
                       .. "are incorrect", r[1])
        assert.is_nil(t.ctx.conn.user)
        r = t:replies(auth_response("alice", "alice-pw", 4))
        assert.matches("^AUTH_SUCCESS", r[1])
        assert.equal("alice", t.ctx.conn.user)
        r = t:replies(request.query("SELECT * FROM ks.t", nil, { stream = 5 }))
        assert.same({ "RESULT Void" }, r)
    end)
end)
