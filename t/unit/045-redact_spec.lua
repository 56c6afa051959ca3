-- shotover.redact: every credential form of both protocols, in requests
-- and in the replies that carry one, is shown as <redacted> by every
-- rendering (show, log, describe), and error text is scrubbed of what the
-- request carried.
local redact = require "shotover.redact"
local message = require "shotover.message"
local cq = require "shotover.cql.request"
local session = require "shotover.cql.session"

local MARK = redact.MARK
local STYLES = { "show", "log", "describe" }

local function cmd(...) return assert(message.command({ ... })) end
local function resp(s) return assert(message.frame_from_resp(s)) end
local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end

-- m rendered every way: the secret never, the marker in at least one;
-- m:describe() too, which has no request to go by (so not for an error
-- echoing its request's secret: only the request tells what to scrub)
local function hidden(m, secret, req, styles, echo)
    local seen = false
    for _, style in ipairs(styles or STYLES) do
        local text = redact.message(m, req, style)
        assert.is_nil(text:find(secret, 1, true),
                      style .. " shows the secret: " .. text)
        seen = seen or text:find(MARK, 1, true) ~= nil
    end
    if not echo then
        assert.is_nil(m:describe():find(secret, 1, true), m:describe())
    end
    assert.is_true(seen, "no " .. MARK .. " in " .. redact.message(m, req))
end

describe("redaction of Redis requests", function()
    local CASES = {
        { { "AUTH", "pw-a1" }, '["AUTH", "<redacted>"]' },
        { { "auth", "alice", "pw-a2" }, '["auth", "alice", "<redacted>"]' },
        { { "HELLO", "3", "AUTH", "alice", "pw-h1", "SETNAME", "c" },
          '["HELLO", "3", "AUTH", "alice", "<redacted>", "SETNAME", "c"]' },
        { { "hello", "2", "auth", "default", "pw-h2" } },
        { { "MIGRATE", "10.0.0.1", "6379", "", "0", "5000", "COPY", "AUTH",
            "pw-m1", "KEYS", "a", "b" },
          '["MIGRATE", "10.0.0.1", "6379", "", "0", "5000", "COPY", "AUTH", '
          .. '"<redacted>", "KEYS", "a", "b"]' },
        { { "MIGRATE", "h", "6379", "k", "0", "5000", "AUTH2", "bob", "pw-m2" },
          '["MIGRATE", "h", "6379", "k", "0", "5000", "AUTH2", "bob", '
          .. '"<redacted>"]' },
        { { "CONFIG", "SET", "maxmemory", "1mb", "requirepass", "pw-c1" },
          '["CONFIG", "SET", "maxmemory", "1mb", "requirepass", "<redacted>"]' },
        { { "config", "set", "MasterAuth", "pw-c2" } },
        { { "CONFIG", "SET", "tls-key-file-pass", "pw-c3" } },
        { { "CONFIG", "SET", "tls-client-key-file-pass", "pw-c4" } },
        { { "SENTINEL", "SET", "mymaster", "auth-pass", "pw-s1" } },
        { { "SENTINEL", "CONFIG", "SET", "sentinel-pass", "pw-s2" } },
        { { "ACL", "SETUSER", "bob", "on", ">pw-acl1", "~*", "+@all" },
          '["ACL", "SETUSER", "bob", "on", "><redacted>", "~*", "+@all"]' },
        { { "ACL", "SETUSER", "bob", "<pw-acl2" } },
        { { "ACL", "SETUSER", "bob", "#" .. ("ab"):rep(32) } },
        { { "ACL", "SETUSER", "bob", "!" .. ("cd"):rep(32) } },
        { { "ACL", "DRYRUN", "bob", "AUTH", "pw-dry" },
          '["ACL", "DRYRUN", "bob", "AUTH", "<redacted>"]' },
    }

    it("hides the password of every form and keeps the rest", function()
        for _, c in ipairs(CASES) do
            local m = cmd(unpack(c[1]))
            local secret = c[1][#c[1]]
            if c[1][1] == "MIGRATE" and c[1][10] == "KEYS" then
                secret = "pw-m1"
            elseif c[1][1] == "CONFIG" and c[1][3] == "maxmemory" then
                secret = "pw-c1"
            elseif c[1][1] == "HELLO" then
                secret = "pw-h1"
            elseif c[1][1] == "ACL" and c[1][5] == ">pw-acl1" then
                secret = "pw-acl1"
            end
            secret = secret:gsub("^[><#!]", "")
            hidden(m, secret)
            if c[2] then
                assert.are.equal(c[2], redact.message(m))
            end
            assert.is_true(#redact.secrets(m) > 0)
        end
    end)

    it("shows requests without credentials as they are", function()
        for _, args in ipairs({ { "GET", "password" }, { "SET", "k", "v" },
                                { "SET", "big", ("v"):rep(1024 * 1024) },
                                { "CONFIG", "GET", "requirepass" },
                                { "CONFIG", "SET", "maxmemory", "1mb" },
                                { "ACL", "SETUSER", "bob", "on", "~*" } }) do
            local m = cmd(unpack(args))
            local raw = require("shotover.protocols").get("redis").describe(m)
            assert.are.equal(raw, redact.message(m))
            assert.are.equal(raw, m:describe())
            assert.are.same({}, redact.secrets(m))
        end
    end)

    it("leaves nothing of a secret longer than the rendering's limit, nor "
       .. "of one with quotes and control bytes", function()
        local long = ("x"):rep(8185) .. "TAIL-SECRET"
        local m = cmd("AUTH", long)
        assert.is_nil(redact.message(m):find("x", 1, true))
        local odd = 'p"w\\\r\n\0q'
        m = cmd("AUTH", "u", odd)
        assert.are.equal('["AUTH", "u", "<redacted>"]', redact.message(m))
    end)
end)

describe("redaction of Redis replies", function()
    local get_all = cmd("CONFIG", "GET", "*")

    it("hides a secret parameter's value in CONFIG GET, RESP2 and RESP3",
       function()
        local r2 = resp("*6\r\n" .. bulk("requirepass") .. bulk("pw-r1")
                        .. bulk("maxclients") .. bulk("10000")
                        .. bulk("masterauth") .. bulk("pw-r2"))
        hidden(r2, "pw-r1", get_all)
        hidden(r2, "pw-r2", get_all)
        assert.are.equal('["requirepass", "<redacted>", "maxclients", '
                         .. '"10000", "masterauth", "<redacted>"]',
                         redact.message(r2, get_all))
        local r3 = resp("%2\r\n" .. bulk("requirepass") .. bulk("pw-r3")
                        .. bulk("maxclients") .. ":10000\r\n")
        hidden(r3, "pw-r3", cmd("config", "get", "requirepass", "maxclients"))
        assert.are.equal('{"requirepass": "<redacted>", "maxclients": :10000}',
                         redact.message(r3, get_all))
        local tls = resp("*2\r\n" .. bulk("tls-key-file-pass")
                         .. bulk("pw-r4"))
        hidden(tls, "pw-r4", get_all)
        local sentinel = resp("*2\r\n" .. bulk("sentinel-pass")
                              .. bulk("pw-r5"))
        hidden(sentinel, "pw-r5", cmd("SENTINEL", "CONFIG", "GET", "*"))
    end)

    it("hides what looks like a CONFIG GET reply when the request is not "
       .. "known, and nothing of other requests' replies", function()
        local r = resp("*2\r\n" .. bulk("requirepass") .. bulk("pw-r6"))
        hidden(r, "pw-r6", nil)
        -- an LRANGE whose values happen to be these words is data
        assert.are.equal('["requirepass", "pw-r6"]',
                         redact.message(r, cmd("LRANGE", "l", "0", "-1")))
    end)

    it("hides ACL GETUSER's passwords and ACL LIST's hashes", function()
        local h = ("0f"):rep(32)
        local gu = resp("*4\r\n" .. bulk("flags") .. "*1\r\n" .. bulk("on")
                        .. bulk("passwords") .. "*1\r\n" .. bulk(h))
        hidden(gu, h, cmd("ACL", "GETUSER", "bob"))
        hidden(gu, h, nil)
        assert.are.equal('["flags", ["on"], "passwords", ["<redacted>"]]',
                         redact.message(gu, cmd("ACL", "GETUSER", "bob")))
        local list = resp("*2\r\n" .. bulk("user default on nopass ~* +@all")
                          .. bulk("user bob on #" .. h .. " ~k* +get"))
        hidden(list, h, cmd("ACL", "LIST"))
        hidden(list, h, nil)
        assert.are.equal('["user default on nopass ~* +@all", '
                         .. '"user bob on #<redacted> ~k* +get"]',
                         redact.message(list, cmd("ACL", "LIST")))
    end)

    it("scrubs an error reply that echoes its request's secret", function()
        local req = cmd("ACL", "SETUSER", "bob", "#not-a-hash-pw")
        local e = resp("-ERR Error in ACL SETUSER modifier '#not-a-hash-pw'"
                       .. ": Syntax error\r\n")
        hidden(e, "not-a-hash-pw", req, nil, true)
        local ok = resp("+OK\r\n")
        assert.are.equal("+OK", redact.message(ok, cmd("AUTH", "x")))
    end)

    it("scrubs text of every secret of a batch's requests", function()
        local b = message.new_batch(0)
        b:push(cmd("GET", "k"))
        b:push(cmd("AUTH", "alice", "pw-batch"))
        assert.are.equal("element failed on <redacted>",
                         redact.scrub("element failed on pw-batch", b))
        assert.are.equal("x <redacted> y",
                         redact.scrub("x pw-one y", cmd("AUTH", "pw-one")))
        assert.are.equal("x <redacted> y",
                         redact.scrub("x pw-two y",
                                      { cmd("AUTH", "pw-two") }))
        assert.are.equal("plain", redact.scrub("plain", nil))
    end)
end)

describe("redaction of CQL", function()
    local STATEMENTS = {
        { "CREATE ROLE alice WITH PASSWORD = 'pw-q1' AND LOGIN = true",
          "CREATE ROLE alice WITH PASSWORD = '<redacted>' AND LOGIN = true",
          "pw-q1" },
        { "ALTER ROLE alice WITH password='pw-q2'",
          "ALTER ROLE alice WITH password='<redacted>'", "pw-q2" },
        { "CREATE USER bob WITH PASSWORD 'pw-q3' NOSUPERUSER",
          "CREATE USER bob WITH PASSWORD '<redacted>' NOSUPERUSER", "pw-q3" },
        { "alter user bob with password 'it''s-pw-q4'",
          "alter user bob with password '<redacted>'", "it's-pw-q4" },
        { "CREATE ROLE r WITH HASHED PASSWORD = '$2a$10$pw-q5'",
          "CREATE ROLE r WITH HASHED PASSWORD = '<redacted>'", "$2a$10$pw-q5" },
        { "CREATE ROLE r WITH PASSWORD = $$pw-q6$$",
          "CREATE ROLE r WITH PASSWORD = '<redacted>'", "pw-q6" },
        { "ALTER ROLE r WITH PASSWORD = 'pw-q7", -- unterminated
          "ALTER ROLE r WITH PASSWORD = '<redacted>'", "pw-q7" },
        { "ALTER ROLE r WITH /* c */ PASSWORD -- x\n = 'pw-q8'",
          "ALTER ROLE r WITH /* c */ PASSWORD -- x\n = '<redacted>'", "pw-q8" },
    }

    it("hides the literal after PASSWORD in QUERY and PREPARE text", function()
        for _, c in ipairs(STATEMENTS) do
            local text, secrets, hides = redact.statement(c[1])
            assert.are.equal(c[2], text)
            assert.is_false(hides)
            local found = false
            for _, s in ipairs(secrets) do
                found = found or s == c[3]
            end
            assert.is_true(found, c[3])
            hidden(cq.query(c[1]), c[3], nil, { "show", "log" })
            hidden(cq.prepare(c[1]), c[3], nil, { "show", "log" })
        end
    end)

    it("leaves statements that set no password as they are", function()
        for _, q in ipairs({ "SELECT password FROM ks.users WHERE id = 1",
                             "CREATE ROLE r WITH LOGIN = true",
                             "INSERT INTO t (k, \"password\") VALUES (1, 2)" })
        do
            assert.are.equal(q, (redact.statement(q)))
            assert.are.equal("QUERY " .. string.format("%q", q),
                             redact.message(cq.query(q)))
        end
    end)

    it("hides the bound values of a statement whose password is a marker",
       function()
        local q = cq.query("ALTER ROLE r WITH PASSWORD = ?", { "pw-v1" })
        hidden(q, "pw-v1", nil, { "show", "log" })
        assert.are.equal('QUERY "ALTER ROLE r WITH PASSWORD = ?" '
                         .. '[<redacted>]', redact.message(q))
        assert.are.same({ "pw-v1" }, redact.secrets(q))
        local named = cq.query("ALTER ROLE r WITH PASSWORD = :p", { "pw-v2" })
        hidden(named, "pw-v2", nil, { "show", "log" })
        -- values of other statements are data, shown as they are
        local other = cq.query("INSERT INTO t (k) VALUES (?)", { "v" })
        assert.are.equal('QUERY "INSERT INTO t (k) VALUES (?)" ["v"]',
                         redact.message(other))
    end)

    it("hides the bound values of an EXECUTE of such a statement, and of "
       .. "one prepared elsewhere", function()
        local id = "pw-stmt-id-0001"
        local be16 = function(n) return string.char(math.floor(n / 256),
                                                    n % 256) end
        local be32 = function(n) return "\0\0" .. be16(n) end
        local str = function(s) return be16(#s) .. s end
        local prep = cq.prepare("ALTER ROLE r WITH PASSWORD = ?",
                                { stream = 7 })
        local body = be32(4) .. str(id) .. be32(1) .. be32(1) .. be32(0)
                     .. str("system_auth") .. str("roles") .. str("p")
                     .. be16(0x0D) .. be32(4) .. be32(0)
        local result = assert(message.frame_from_cql("\132\0\0\7\8"
                                                     .. be32(#body) .. body))
        local qb, rb = message.new_batch(0), message.new_batch(0)
        qb:push(prep)
        rb:push(result)
        session.learn({}, qb, rb)
        local ex = cq.execute(id, { "pw-v3" })
        assert.is_table(session.prepared(ex))
        hidden(ex, "pw-v3", nil, { "show" })
        local elsewhere = cq.execute("unknown-id-0002", { "pw-v4" })
        hidden(elsewhere, "pw-v4", nil, { "show" })
    end)

    it("hides an AUTH_RESPONSE's token", function()
        local token = "\0cassandra\0pw-sasl"
        local ar = cq.envelope(0x0F, "\0\0\0" .. string.char(#token) .. token)
        hidden(ar, "pw-sasl")
        assert.are.equal("AUTH_RESPONSE <redacted>", redact.message(ar))
        local secrets = redact.secrets(ar)
        assert.are.equal(token, secrets[1])
        assert.are.equal("pw-sasl", secrets[2])
    end)

    it("scrubs an ERROR that echoes its request's password", function()
        local req = cq.query("CREATE ROLE r WITH PASSWORD = 'pw-e1' LOGN")
        local err = require("shotover.cql.reply").error(req, "SYNTAX_ERROR",
            "line 1:30 no viable alternative at input 'pw-e1'")
        hidden(err, "pw-e1", req, { "show" }, true)
        assert.matches("^ERROR 0x2000 ", redact.message(err, req))
    end)
end)

describe("redaction of anything else", function()
    it("shows no message of a protocol it has no rules for", function()
        local protocols = require "shotover.protocols"
        local p = protocols.get("redis")
        local saved = p.name
        local m = cmd("AUTH", "pw-x")
        p.name = "mystery"
        local ok, text = pcall(redact.message, m)
        p.name = saved
        assert.is_true(ok)
        assert.are.equal("(a mystery message of " .. m.len
                         .. " bytes: not shown)", text)
    end)

    it("shows no message and no reply slot as such", function()
        assert.are.equal("(none)", redact.message(nil))
    end)
end)
