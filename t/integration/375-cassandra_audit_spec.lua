-- The audit transform in front of a real Cassandra node (with
-- PasswordAuthenticator), driven by the DataStax driver: statements
-- written with their literals as ?, bound values never written, a role's
-- password (CREATE ROLE) and the login's SASL token never in the file,
-- show_values naming a column, error outcomes by name.
local h = require("harness")
local cassandra = require("cassandra")

describe("the audit transform in front of cassandra", function()
    local node, P, file

    setup(function()
        node = cassandra.start{ auth = true }
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE au WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE au.t (k text PRIMARY KEY, v text, shown text)")
]], { port = node.port, user = node.user, password = node.password })
        file = h.tmpdir("audit-cql") .. "/audit.jsonl"
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = string.format([[
            { "audit", file = %q, show_values = { "au.t.shown" } },]], file) }
    end)
    teardown(h.cleanup)

    it("writes statements redacted, bound values and passwords never", function()
        local out = cassandra.python([[
c, s = connect()
s.execute("CREATE ROLE auditor WITH PASSWORD = 'Pw-Audit-7731' "
          "AND LOGIN = true AND SUPERUSER = true")
s.execute("INSERT INTO au.t (k, v, shown) VALUES ('lit-key-1', "
          "'lit-secret-42', 'shown-value-1')")
ins = s.prepare("INSERT INTO au.t (k, v) VALUES (?, ?)")
s.execute(ins, ('bound-key-2', 'bound-secret-99'))
try:
    s.execute("SELECT v FROM au.missing WHERE k = 'x'")
except Exception as e:
    print('missing', type(e).__name__)
c.shutdown()
c2, s2 = connect(user='auditor', password='Pw-Audit-7731')
print('as auditor', s2.execute("SELECT v FROM au.t WHERE k = 'lit-key-1'").one().v)
]], { port = P, user = node.user, password = node.password, timeout = 120 })
        assert.matches("missing InvalidRequest", out, 1, true)
        assert.matches("as auditor lit-secret-42", out, 1, true)
        local s = h.read_file(file)
        assert.truthy(s)
        for _, secret in ipairs({ "Pw-Audit-7731", "lit-secret-42",
                                  "bound-secret-99", "bound-key-2",
                                  "lit-key-1" }) do
            assert.is_nil(s:find(secret, 1, true), secret .. " in the trail")
        end
        assert.truthy(s:find('"statement":"CREATE ROLE auditor WITH PASSWORD'
                             .. ' = ? AND LOGIN = ? AND SUPERUSER = ?"', 1,
                             true))
        assert.truthy(s:find('"statement":"INSERT INTO au.t (k, v, shown) '
                             .. 'VALUES (?, ?, ?)","values":{"shown":'
                             .. '"shown-value-1"}', 1, true))
        -- the PREPARE and the EXECUTE, by the prepared statement's text
        assert.truthy(s:find('"statement":"PREPARE INSERT INTO au.t (k, v) '
                             .. 'VALUES (?, ?)"', 1, true))
        assert.truthy(s:find('"statement":"INSERT INTO au.t (k, v) VALUES '
                             .. '(?, ?)","decision":"allowed","outcome":"ok"',
                             1, true))
        assert.truthy(s:find('"statement":"SELECT v FROM au.missing WHERE '
                             .. 'k = ?","decision":"allowed","outcome":'
                             .. '"INVALID"', 1, true))
        assert.truthy(s:find('"class":"handshake","statement":"AUTH_RESPONSE"',
                             1, true))
        assert.truthy(s:find('"source":"cql","client":"127.0.0.1:', 1, true))
    end)
end)
