-- The redis sink's username/password: shotover authenticates its own
-- backend connections; clients' own AUTH stays theirs.
local h = require("harness")
local OK = h.status("OK")

describe("a redis sink with a password", function()
    local redis, P, proxy -- luacheck: ignore proxy (holds the running proxy)

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "s3cret" } })
        P = h.free_port()
        proxy = h.shotover({ config = h.config({ listen = P, remote = redis.port,
            sink = 'password = "s3cret",' }), port = P })
    end)
    teardown(h.cleanup)

    it("authenticates its connections so clients need no AUTH", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "auth:k", "v"))
        assert.equal("v", c:cmd("GET", "auth:k"))
        assert.equal("v", h.cli(redis.port, "get", "auth:k", { pre = { "--no-auth-warning", "-a", "s3cret" } }))
    end)

    it("authenticates dedicated connections too (MULTI, SELECT, BLPOP)", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SELECT", "1"))
        assert.same(OK, c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("SET", "auth:tx", "1"))
        assert.same({ OK }, c:cmd("EXEC"))
        assert.same({ "auth:none", "x" }, (function()
            local b = h.connect(P)
            assert.equal(1, b:cmd("RPUSH", "auth:none", "x"))
            return b:cmd("BLPOP", "auth:none", "1")
        end)())
    end)

    it("keeps working after redis restarts, authenticating the new connections", function()
        redis:stop(h.SIGKILL)
        redis:start()
        local c = h.connect(P)
        h.wait_until(function()
            local v = c:cmd("SET", "auth:after", "yes")
            return v.status == "OK", v.err
        end, 10, "SET to succeed after the restart", 0.05)
        assert.equal("yes", c:cmd("GET", "auth:after"))
    end)
end)

describe("a redis sink with an ACL username and password", function()
    local redis, P

    setup(function()
        -- each word its own argument: redis quotes arguments with spaces
        redis = h.redis_server({ args = { "--user", "default", "off",
            "--user", "proxy", "on", ">pw-proxy", "~*", "&*", "+@all" } })
        P = h.free_port()
        h.shotover({ config = h.config({ listen = P, remote = redis.port,
            sink = 'username = "proxy", password = "pw-proxy",' }), port = P })
    end)
    teardown(h.cleanup)

    it("authenticates as that user", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "acl:k", "v"))
        assert.equal("proxy", c:cmd("ACL", "WHOAMI"))
    end)
end)

describe("a redis sink with a wrong password", function()
    local redis, P, proxy

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "right" } })
        P = h.free_port()
        proxy = h.shotover({ config = h.config({ listen = P, remote = redis.port,
            sink = 'password = "wrong", connect_timeout_ms = 500,' }), port = P })
    end)
    teardown(h.cleanup)

    it("answers requests with errors quickly instead of hanging or running them unauthenticated", function()
        local c = h.connect(P)
        for i = 1, 3 do
            local t0 = h.now()
            local v = c:cmd("SET", "wrongpw:k", "v")
            assert.is_table(v, "request " .. i)
            assert.is_string(v.err, "request " .. i .. " did not fail")
            assert.is_true(h.now() - t0 < 2, "request " .. i .. " took " .. (h.now() - t0) .. " s")
        end
        assert.equal("0", h.cli(redis.port, "exists", "wrongpw:k",
            { pre = { "--no-auth-warning", "-a", "right" } }))
        assert.is_true(proxy:alive())
    end)
end)

describe("a redis sink without a password in front of a redis that needs one", function()
    local redis, P

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "client-pw" } })
        P = h.free_port()
        h.shotover({ config = h.config({ listen = P, remote = redis.port }), port = P })
    end)
    teardown(h.cleanup)

    it("passes redis's NOAUTH through and lets a client AUTH for itself only", function()
        local a, b = h.connect(P), h.connect(P)
        local v = a:cmd("GET", "k")
        assert.is_table(v)
        assert.matches("^NOAUTH", v.err)
        assert.same(OK, a:cmd("AUTH", "client-pw"))
        assert.same(OK, a:cmd("SET", "self:k", "mine"))
        assert.equal("mine", a:cmd("GET", "self:k"))
        -- the other client did not authenticate: still refused
        local w = b:cmd("GET", "self:k")
        assert.is_table(w)
        assert.matches("^NOAUTH", w.err)
        local n = h.connect(P):cmd("GET", "self:k")
        assert.is_table(n)
        assert.matches("^NOAUTH", n.err)
    end)
end)
