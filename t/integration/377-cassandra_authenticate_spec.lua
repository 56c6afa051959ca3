-- authenticate in front of real Cassandra nodes: drivers log in at shotover
-- with SASL PLAIN (v4 plain, LZ4, Snappy, v5 LZ4); a node with
-- PasswordAuthenticator is logged into with the sink's own credentials
-- (its system_views.clients shows them, never the client's user); a node
-- without logins still gets only clients shotover let in; wrong
-- credentials get AUTH_ERROR, which the driver raises as
-- AuthenticationFailed; the audit line's user.
local h = require("harness")
local cassandra = require("cassandra")
local password = require("shotover.password")

local function chain(file)
    return string.format([[
        { "audit", file = %q },
        { "authenticate", users = { alice = { hash = %q } },
          max_failures = 100 },]],
        file, password.hash("alice-pw", 1000))
end

local LOGIN = [[
def attempt(label, **kw):
    try:
        c, s = connect(**kw)
        print(label, 'ok', s.execute("SELECT release_version FROM system.local").one()[0])
        c.shutdown()
    except Exception as e:
        print(label, 'refused', type(e).__name__, str(e)[:400].replace('\n', ' '))
]]

describe("authenticate in front of a node with PasswordAuthenticator",
         function()
    local node, P, file

    setup(function()
        node = cassandra.start{ auth = true }
        file = h.tmpdir("authn-cql") .. "/audit.jsonl"
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = chain(file),
            sink = 'username = "cassandra", password = "cassandra",' }
    end)
    teardown(h.cleanup)

    for _, sess in ipairs({ { 4, "False" }, { 4, "'lz4'" },
                            { 4, "'snappy'" }, { 5, "'lz4'" } }) do
        it("logs a v" .. sess[1] .. " " .. sess[2] .. " driver in at "
           .. "shotover and the node in with the sink's login", function()
            local out = cassandra.python(LOGIN .. [[
pv, comp = int(ARGS[0]), eval(ARGS[1])
attempt('alice', protocol_version=pv, compression=comp, user='alice', password='alice-pw')
attempt('wrong', protocol_version=pv, compression=comp, user='alice', password='nope')
attempt('node-login', protocol_version=pv, compression=comp, user='cassandra', password='cassandra')
c, s = connect(protocol_version=pv, compression=comp, user='alice', password='alice-pw')
print('users', sorted(set(r.username for r in s.execute("SELECT username FROM system_views.clients") if r.username)))
]], { port = P, args = sess, timeout = 120 })
            assert.matches("alice ok ", out, 1, true)
            assert.matches("wrong refused [^\n]*AuthenticationFailed", out)
            assert.matches("Provided username and/or password are incorrect",
                           out, 1, true)
            -- the node's own login is no login of shotover's
            assert.matches("node%-login refused [^\n]*AuthenticationFailed",
                           out)
            assert.matches("users ['cassandra']", out, 1, true)
        end)
    end

    it("puts the user in the audit line and no password in the trail",
       function()
        cassandra.python([[
c, s = connect(user='alice', password='alice-pw')
s.execute("SELECT cluster_name FROM system.local")
]], { port = P })
        local got
        h.wait_until(function()
            got = {}
            for l in (h.read_file(file) or ""):gmatch("[^\n]+") do
                if l:find("cluster_name", 1, true) then
                    got[#got + 1] = l
                end
            end
            return #got >= 1
        end, 10, "the SELECT's audit line")
        assert.matches('"user":"alice"', got[1])
        local trail = h.read_file(file)
        assert.is_nil(trail:find("alice-pw", 1, true))
        assert.is_nil(trail:find('"cassandra"', 1, true))
    end)
end)

describe("authenticate in front of a node without logins", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = cassandra.start_proxy{ remote = node.port,
            chain = chain(h.tmpdir("authn-cql") .. "/audit.jsonl") }
    end)
    teardown(h.cleanup)

    it("still lets in only the users it knows", function()
        local out = cassandra.python(LOGIN .. [[
attempt('none', user=None)
attempt('wrong', user='alice', password='nope')
attempt('alice', user='alice', password='alice-pw')
attempt('alice-v5', protocol_version=5, compression='lz4', user='alice', password='alice-pw')
]], { port = P, timeout = 120 })
        assert.matches("none refused [^\n]*requires authentication", out)
        assert.matches("wrong refused [^\n]*AuthenticationFailed", out)
        assert.matches("alice ok ", out, 1, true)
        assert.matches("alice-v5 ok ", out, 1, true)
    end)
end)
