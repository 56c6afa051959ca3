-- The authenticate transform in front of a real redis-server whose own
-- password is not the clients': AUTH / HELLO AUTH checked at shotover and
-- never forwarded, NOAUTH before, WRONGPASS, the backend reached with the
-- sink's credentials, the lockout after max_failures failures on every
-- worker, and the audit line's user.
local h = require("harness")
local password = require("shotover.password")
local OK = h.status("OK")
local WRONGPASS = h.err("WRONGPASS invalid username-password pair or user "
                        .. "is disabled.")
local NOAUTH = h.err("NOAUTH Authentication required.")

-- a hash made by tools/hash-password.lua, as an operator would
local function tool_hash(pw)
    local r = h.run({ h.shotover_bin(), "lua",
                      os.getenv("SHOTOVER_SRC") .. "/tools/hash-password.lua",
                      "1000" }, { stdin = pw .. "\n" })
    assert(r.code == 0, r.stderr)
    local s = h.chomp(r.stdout)
    assert(s:match("^pbkdf2%-sha256%$1000%$"), s)
    return s
end

local function config(o)
    return h.config({ listen = o.port, remote = o.remote, workers = 2,
        extra = string.format('admin = { listen = "127.0.0.1:%d" },', o.admin),
        chain = string.format([[
            { "audit", file = %q },
            { "authenticate", users = {
                alice = { hash = %q }, default = { hash = %q } },
              max_failures = %d, lockout_seconds = %s, dict = %q },
            { "redis", remote = "%%REMOTE%%", password = "backend-pw" },
        ]], o.audit, o.alice, o.default, o.max_failures or 5,
            tostring(o.lockout or 30), o.dict or "authenticate") })
end

local function lines_with(path, needle)
    local out = {}
    for l in (h.read_file(path) or ""):gmatch("[^\n]+") do
        if l:find(needle, 1, true) then
            out[#out + 1] = l
        end
    end
    return out
end

describe("authenticate in front of a redis with its own password", function()
    local redis, P, A, file

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "backend-pw" } })
        P, A = h.free_port(), h.free_port()
        file = h.tmpdir("authn") .. "/audit.jsonl"
        h.shotover({ config = config({ port = P, admin = A,
            remote = redis.port, audit = file, alice = tool_hash("alice-pw"),
            default = password.hash("default-pw", 1000),
            -- the specs below fail a few times from one address
            max_failures = 50 }), port = P })
    end)
    teardown(h.cleanup)

    it("answers NOAUTH before AUTH and lets nothing reach redis", function()
        local c = h.connect(P)
        assert.same(NOAUTH, c:cmd("SET", "authn:early", "x"))
        assert.same(NOAUTH, c:cmd("PING"))
        assert.same(h.err("NOAUTH HELLO must be called with the client "
            .. "already authenticated, otherwise the HELLO <proto> AUTH "
            .. "<user> <pass> option can be used to authenticate the client "
            .. "and select the RESP protocol version at the same time"),
            c:cmd("HELLO", "3"))
        assert.equal("0", (h.cli(redis.port, "exists", "authn:early",
            { pre = { "--no-auth-warning", "-a", "backend-pw" } })))
    end)

    it("takes the right passwords, with redis-cli too, and refuses wrong "
       .. "ones", function()
        local c = h.connect(P)
        assert.same(WRONGPASS, c:cmd("AUTH", "alice", "default-pw"))
        assert.same(WRONGPASS, c:cmd("AUTH", "nobody", "alice-pw"))
        assert.same(NOAUTH, c:cmd("GET", "authn:k"))
        assert.same(OK, c:cmd("AUTH", "alice", "alice-pw"))
        assert.same(OK, c:cmd("SET", "authn:k", "v1"))
        assert.equal("v1", c:cmd("GET", "authn:k"))
        local d = h.connect(P)
        assert.same(OK, d:cmd("AUTH", "default-pw"))
        assert.equal("v1", d:cmd("GET", "authn:k"))
        -- redis-cli authenticating itself (it sends AUTH user pass)
        assert.equal("v1", h.cli(P, "get", "authn:k", { pre = {
            "--no-auth-warning", "--user", "alice", "--pass", "alice-pw" } }))
        local out = h.cli(P, "get", "authn:k", { pre = { "--no-auth-warning",
            "--user", "alice", "--pass", "wrong" } })
        assert.matches("NOAUTH", out)
    end)

    it("reaches redis with the sink's password, never the clients'",
       function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("AUTH", "alice", "alice-pw"))
        assert.same(OK, c:cmd("SET", "authn:owner", "alice"))
        -- the client's password is no password of redis's
        local _, _, err = h.cli(redis.port, "get", "authn:owner",
            { pre = { "--no-auth-warning", "-a", "alice-pw" } })
        local out = h.cli(redis.port, "get", "authn:owner",
            { pre = { "--no-auth-warning", "-a", "alice-pw" } })
        assert.matches("WRONGPASS", out .. err)
        assert.equal("alice", h.cli(redis.port, "get", "authn:owner",
            { pre = { "--no-auth-warning", "-a", "backend-pw" } }))
        -- redis saw none of the clients' AUTHs: its ACL LOG records every
        -- failed one, and holds only the one made just above directly
        local log = h.cli(redis.port, "acl", "log",
            { pre = { "--no-auth-warning", "-a", "backend-pw" } })
        assert.is_nil(log:find("alice\n", 1, true))
        local nentries = select(2, log:gsub("\nreason\n", "\n"))
            + (log:find("^reason\n") and 1 or 0)
        assert.is_true(nentries <= 1, log)
    end)

    it("checks HELLO 3 AUTH and forwards the HELLO without it", function()
        local c = h.connect(P)
        assert.same(WRONGPASS, c:cmd("HELLO", "3", "AUTH", "alice", "nope"))
        local hello = c:cmd("HELLO", "3", "AUTH", "alice", "alice-pw")
        assert.is_table(hello.map, "a RESP3 map from redis")
        local fields = {}
        for i = 1, #hello.map, 2 do
            fields[hello.map[i]] = hello.map[i + 1]
        end
        assert.equal("redis", fields.server)
        assert.equal(3, fields.proto)
        assert.same(OK, c:cmd("SET", "authn:resp3", "x"))
        assert.equal("x", c:cmd("GET", "authn:resp3"))
    end)

    it("takes a pipeline in order: NOAUTH before the AUTH, served after",
       function()
        local c = h.connect(P)
        assert.truthy(c:send(h.resp_command("GET", "authn:k")
            .. h.resp_command("AUTH", "alice", "alice-pw")
            .. h.resp_command("GET", "authn:k")))
        assert.same(NOAUTH, c:read_reply())
        assert.same(OK, c:read_reply())
        assert.equal("v1", c:read_reply())
    end)

    it("puts the user in the audit line and no password in the trail",
       function()
        local c = h.connect(P)
        assert.same(WRONGPASS, c:cmd("AUTH", "alice", "guess-audit"))
        assert.same(OK, c:cmd("AUTH", "alice", "alice-pw"))
        assert.same(OK, c:cmd("SET", "authn:audited", "x"))
        local got
        h.wait_until(function()
            got = lines_with(file, '"statement":"SET authn:audited ?"')
            return #got == 1
        end, 5, "the SET's audit line")
        assert.matches('"user":"alice"', got[1])
        assert.matches('"decision":"allowed","outcome":"ok"', got[1])
        local refused = lines_with(file, '"outcome":"WRONGPASS"')
        assert.is_true(#refused >= 1)
        assert.matches('"user":null', refused[1])
        local trail = h.read_file(file)
        for _, pw in ipairs({ "alice-pw", "guess-audit", "default-pw",
                              "backend-pw" }) do
            assert.is_nil(trail:find(pw, 1, true), pw .. " in the trail")
        end
        assert.is_true(h.metric(A, 'shotover_auth_total{name="authenticate",'
                                   .. 'result="ok"}') >= 3)
    end)
end)

describe("authenticate's lockout", function()
    local redis, P, A

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "backend-pw" } })
        P, A = h.free_port(), h.free_port()
        h.shotover({ config = config({ port = P, admin = A,
            remote = redis.port, audit = h.tmpdir("authn") .. "/a.jsonl",
            alice = password.hash("alice-pw", 1000),
            default = password.hash("default-pw", 1000),
            max_failures = 3, lockout = 2, dict = "authn-lockout" }),
            port = P })
    end)
    teardown(h.cleanup)

    it("locks the address out after max_failures failures, on every "
       .. "connection, until lockout_seconds pass", function()
        local locked = "ERR shotover: too many failed authentication "
                       .. "attempts from this address, try again later"
        -- failures from several connections (on both workers) add up
        for i = 1, 3 do
            local c = h.connect(P)
            assert.same(WRONGPASS, c:cmd("AUTH", "alice", "guess" .. i))
        end
        local t0 = h.now()
        -- the right password is refused now, on any connection, unchecked
        for _ = 1, 4 do
            local c = h.connect(P)
            assert.same(h.err(locked), c:cmd("AUTH", "alice", "alice-pw"))
            assert.same(NOAUTH, c:cmd("GET", "k"))
        end
        -- until the lockout ends
        local c = h.connect(P)
        h.wait_until(function()
            local r = c:cmd("AUTH", "alice", "alice-pw")
            return r.status == "OK", r.err
        end, 10, "the lockout to end", 0.05)
        local waited = h.now() - t0
        assert.is_true(waited >= 1.5, "unlocked after " .. waited .. " s")
        assert.same(OK, c:cmd("SET", "authn:after", "1"))
        assert.is_true(h.metric(A, 'shotover_auth_total{name="authenticate",'
                                   .. 'result="locked_out"}') >= 4)
        assert.equal(3, h.metric(A, 'shotover_auth_total{name='
                                    .. '"authenticate",result="failed"}'))
    end)
end)
