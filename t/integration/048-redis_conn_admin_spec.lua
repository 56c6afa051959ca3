-- Commands that act beyond the client's own connection, through shotover:
-- WAIT counts the replicas that acknowledged the client's writes even when
-- they went over a shared connection; CLIENT PAUSE makes other clients wait
-- rather than time out; CLIENT KILL closes the clients it names and never a
-- connection shotover shares; a client whose dedicated backend connection
-- is lost is closed, not silently moved to a new connection without its
-- state.
local h = require("harness")
local OK = h.status("OK")
-- a script that keeps Redis busy for a second
local BUSY_1S = "local s = redis.call('TIME') repeat local n = redis.call('TIME') "
    .. "until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 1000000 return 1"

-- the replica's view of its link to the master
local function link_up(replica)
    return (h.cli(replica.port, "info", "replication"))
        :find("master_link_status:up", 1, true) ~= nil
end

-- the connections shotover shares (CLIENT SETNAME shotover), from CLIENT LIST
local function shared_conns(redis_port)
    local out = {}
    for _, e in ipairs(h.client_list(redis_port)) do
        if e.name == "shotover" then out[#out + 1] = e end
    end
    return out
end

describe("WAIT through shotover", function()
    local master, replica, P

    setup(function()
        master = h.redis_server()
        replica = h.redis_server({ args = { "--replicaof", "127.0.0.1",
                                            tostring(master.port) } })
        h.wait_until(function() return link_up(replica) end, 20,
            "the replica to be in sync")
        P = h.free_port()
        h.shotover({ config = h.config({ listen = P, remote = master.port }),
                     port = P })
    end)
    teardown(h.cleanup)

    it("counts a write the client made on a shared connection before WAIT pinned it, as directly", function()
        -- a replica that acknowledges nothing: WAIT 1 must not count it
        replica.proc:kill(h.SIGSTOP)
        local direct = h.connect(master.port)
        assert.same(OK, direct:cmd("SET", "w:direct", "1"))
        assert.equal(0, direct:cmd("WAIT", "1", "200"))

        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "w:proxy", "1"))    -- a shared connection
        -- WAIT pins the client to a new connection that wrote nothing: Redis
        -- alone would count every replica at once
        assert.equal(0, c:cmd("WAIT", "1", "200"))
        replica.proc:kill(h.SIGCONT)
        h.wait_until(function() return link_up(replica) end, 20, "the replica to be back")
        assert.same(OK, c:cmd("SET", "w:proxy", "2"))
        assert.equal(1, c:cmd("WAIT", "1", "10000"))
        assert.equal("2", h.cli(replica.port, "get", "w:proxy"))
        c:close()
        direct:close()
    end)
end)

describe("CLIENT PAUSE through shotover", function()
    local env, P

    setup(function()
        env = h.start_pair({ workers = 1, sink = "request_timeout_ms = 300," })
        P = env.port
    end)
    teardown(h.cleanup)

    it("holds other clients' requests on shared connections for the pause, never failing them with a timeout", function()
        local a = h.connect(P)
        assert.same(h.NULL, a:cmd("GET", "p:k"))        -- its shared connection is up
        local b = h.connect(P)
        assert.same(OK, b:cmd("CLIENT", "PAUSE", "1200", "WRITE"))
        -- four times the request timeout: answered once the pause ends
        assert.same(OK, a:cmd("SET", "p:k", "v"))
        assert.equal("v", a:cmd("GET", "p:k"))
        -- and timeouts work again afterwards
        assert.same(OK, b:cmd("CLIENT", "PAUSE", "1", "WRITE"))
        local v = a:cmd("EVAL", BUSY_1S, "0")
        assert.is_table(v, "a 1 s script against a 300 ms timeout")
        assert.matches("timed out after 300ms", v.err)
        a:close()
        b:close()
    end)
end)

describe("CLIENT KILL through shotover", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 2 })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("closes the client it names by ID, as directly", function()
        local a = h.connect(P)
        local id = a:cmd("CLIENT", "ID")
        assert.same(OK, a:cmd("SELECT", "3"))
        local b = h.connect(P)
        assert.equal(1, b:cmd("CLIENT", "KILL", "ID", tostring(id)))
        assert.is_true((a:wait_closed(10)), "the killed client's connection closes")
        -- the killer carries on
        assert.equal("PONG", b:cmd("PING").status)
        b:close()
    end)

    it("a client that kills itself gets the reply, then the close", function()
        local a = h.connect(P)
        local id = a:cmd("CLIENT", "ID")
        a:send(h.resp_command("CLIENT", "KILL", "ID", tostring(id), "SKIPME", "no"))
        assert.equal(1, a:read_reply())
        assert.is_true((a:wait_closed(10)))
    end)

    it("never closes a connection shotover shares, on any worker, while its clients keep working", function()
        -- clients over both workers, each with a shared connection
        local users = {}
        for i = 1, 12 do
            users[i] = h.connect(P)
            assert.same(OK, users[i]:cmd("SET", "k:" .. i, tostring(i)))
        end
        local shared = shared_conns(R)
        assert.is_true(#shared >= 1, "shared connections named shotover")
        local killer = h.connect(P)
        local function refused(...)
            local v = killer:cmd("CLIENT", "KILL", ...)
            assert.is_table(v, "CLIENT KILL " .. table.concat({ ... }, " "))
            assert.matches("^ERR shotover: CLIENT KILL matches connection id=%d+ addr=", v.err)
        end
        for _, e in ipairs(shared) do
            refused("ID", e.id)
            refused("ADDR", e.addr)
            refused(e.addr)                             -- the old form
            refused("ID", e.id, "TYPE", "normal", "SKIPME", "yes")
        end
        refused("TYPE", "normal")
        refused("USER", "default")
        refused("MAXAGE", "0")
        refused("SKIPME", "no")
        -- nothing of shotover's matches these: Redis answers
        assert.equal(0, killer:cmd("CLIENT", "KILL", "TYPE", "pubsub"))
        assert.equal(0, killer:cmd("CLIENT", "KILL", "ID", "999999"))
        assert.matches("^ERR No such user", killer:cmd("CLIENT", "KILL", "USER", "nobody").err)
        assert.matches("^ERR", killer:cmd("CLIENT", "KILL", "TYPE", "bogus").err)
        -- every shared connection is still there, and every client works
        local after = {}
        for _, e in ipairs(shared_conns(R)) do after[e.id] = true end
        for _, e in ipairs(shared) do
            assert.is_true(after[e.id], "shared connection " .. e.id .. " survived")
        end
        for i = 1, 12 do
            assert.equal(tostring(i), users[i]:cmd("GET", "k:" .. i))
            users[i]:close()
        end
        killer:close()
    end)

    it("kills subscribers by TYPE pubsub, whose shotover connections close", function()
        local s = h.connect(P)
        s:send(h.resp_command("SUBSCRIBE", "kill:ch"))
        assert.same({ "subscribe", "kill:ch", 1 }, s:read_reply())
        local b = h.connect(P)
        assert.equal(1, b:cmd("CLIENT", "KILL", "TYPE", "pubsub"))
        assert.is_true((s:wait_closed(10)))
        b:close()
    end)
end)

describe("a pinned client whose backend connection is lost", function()
    local env, P

    setup(function()
        env = h.start_pair({ workers = 1 })
        P = env.port
    end)
    teardown(h.cleanup)

    it("is closed rather than carried on over a new connection without its database", function()
        local a = h.connect(P)
        assert.same(OK, a:cmd("SELECT", "2"))
        assert.same(OK, a:cmd("SET", "lost:k", "in db 2"))
        local other = h.connect(P)
        assert.same(OK, other:cmd("SET", "lost:k", "in db 0"))
        env.redis:stop()
        env.redis:start()
        assert.is_true((a:wait_closed(10)), "the pinned client is closed")
        -- a client without state reconnects by itself
        h.wait_until(function()
            local v = other:cmd("PING")
            return type(v) == "table" and v.status == "PONG"
        end, 10, "the shared connection to come back")
        other:close()
    end)
end)
