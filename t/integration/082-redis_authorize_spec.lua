-- authenticate and authorize in front of a real redis-server: rules per
-- user and role allowing and denying by command, class and key prefix with
-- Redis' own NOPERM, nothing denied reaching redis, the audit line's user
-- and deciding rule, and route-test showing which rule decided.
local h = require("harness")
local password = require("shotover.password")
local OK = h.status("OK")

local function chain_text(audit, alice, root)
    return string.format([[
        { "audit", file = %q },
        { "authenticate", users = { alice = { hash = %q },
                                    root = { hash = %q } } },
        { "authorize", roles = { admins = { "root" } }, rules = {
            { role = "admins", allow = true },
            { user = "alice", deny = true, classes = { "admin" } },
            { user = "alice", allow = true, key_prefixes = { "app:" },
              classes = { "read", "write", "read_write" } },
            { user = "alice", allow = true, commands = { "PING", "ECHO" } },
        } },
        { "redis", remote = "%%REMOTE%%", password = "backend-pw" },
    ]], audit, alice, root)
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

local function backend(redis, ...)
    local args = { ... }
    args[#args + 1] = { pre = { "--no-auth-warning", "-a", "backend-pw" } }
    return (h.cli(redis.port, unpack(args)))
end

describe("authorize in front of redis", function()
    local redis, P, file, alice, root

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "backend-pw" } })
        P = h.free_port()
        file = h.tmpdir("authz") .. "/audit.jsonl"
        alice = password.hash("alice-pw", 1000)
        root = password.hash("root-pw", 1000)
        h.shotover({ config = h.config({ listen = P, remote = redis.port,
            chain = chain_text(file, alice, root) }), port = P })
    end)
    teardown(h.cleanup)

    it("allows a user's rules and refuses the rest with NOPERM, reaching "
       .. "redis only when allowed", function()
        assert.equal("OK", backend(redis, "set", "secret:1", "s"))
        local c = h.connect(P)
        assert.same(OK, c:cmd("AUTH", "alice", "alice-pw"))
        assert.same(OK, c:cmd("SET", "app:1", "v"))
        assert.equal("v", c:cmd("GET", "app:1"))
        assert.equal("hi", c:cmd("ECHO", "hi"))
        assert.same(h.err("NOPERM User alice has no permissions to run the "
            .. "'get' command (shotover: authorize: denied by default)"),
            c:cmd("GET", "secret:1"))
        assert.same(h.err("NOPERM User alice has no permissions to run the "
            .. "'mget' command (shotover: authorize: denied by default)"),
            c:cmd("MGET", "app:1", "secret:1"))
        assert.same(h.err("NOPERM User alice has no permissions to run the "
            .. "'flushall' command (shotover: authorize: denied by "
            .. "rules[2])"), c:cmd("FLUSHALL"))
        assert.same(h.err("NOPERM User alice has no permissions to run the "
            .. "'keys' command (shotover: authorize: denied by rules[2])"),
            c:cmd("KEYS", "*"))
        assert.same(h.err("NOPERM User alice has no permissions to run the "
            .. "'set' command (shotover: authorize: denied by default)"),
            c:cmd("SET", "secret:1", "overwritten"))
        -- nothing denied reached redis
        assert.equal("s", backend(redis, "get", "secret:1"))
        assert.equal("v", backend(redis, "get", "app:1"))
        -- a role's member may do what alice may not
        local r = h.connect(P)
        assert.same(OK, r:cmd("AUTH", "root", "root-pw"))
        assert.equal("s", r:cmd("GET", "secret:1"))
    end)

    it("writes the user and the deciding rule in the audit line", function()
        local c = h.connect(P)
        assert.truthy(c:send(h.resp_command("AUTH", "alice", "alice-pw")
            .. h.resp_command("SET", "app:audited", "x")
            .. h.resp_command("DEBUG", "SLEEP", "0")))
        assert.same(OK, c:read_reply())
        assert.same(OK, c:read_reply())
        assert.matches("^NOPERM", c:read_reply().err)
        local set, dbg
        h.wait_until(function()
            set = lines_with(file, '"statement":"SET app:audited ?"')
            dbg = lines_with(file, '"statement":"DEBUG')
            return #set == 1 and #dbg == 1
        end, 5, "the audit lines")
        assert.matches('"user":"alice"', set[1])
        assert.matches('"decision":"allowed by rules%[3%]","outcome":"ok"',
                       set[1])
        assert.matches('"user":"alice"', dbg[1])
        assert.matches('"decision":"denied by rules%[2%]","outcome":"NOPERM"',
                       dbg[1])
        assert.is_nil(h.read_file(file):find("alice-pw", 1, true))
    end)

    it("route-test shows which rule decided", function()
        local dir = h.tmpdir("authz-rt")
        local conf = h.write_file(dir .. "/conf.lua", h.config({ listen = 1,
            remote = redis.port,
            chain = chain_text(dir .. "/audit.jsonl", alice, root) }))
        local cases = h.write_file(dir .. "/cases.lua", [[
            return { cases = {
                { "GET app:1", error = "NOAUTH" },
                { "AUTH alice alice-pw", answered_by = "authenticate" },
                { "GET app:1", sink = "redis" },
                { "FLUSHALL", filtered = true, error = "NOPERM" },
                { "GET other:1", filtered = true, error = "denied by default" },
            } }
        ]])
        local r = h.run({ h.shotover_bin(), "route-test", "-c", conf, cases,
                          "-v" })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.matches("authorize: forwarded %(allowed by rules%[3%]%)",
                       r.stdout)
        assert.matches("authorize: answered [^\n]*%(denied by rules%[2%]%)",
                       r.stdout)
        assert.is_nil(r.stdout:find("alice-pw", 1, true))
    end)
end)
