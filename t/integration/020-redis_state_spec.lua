-- Connection state through shotover: MULTI/EXEC, WATCH, SELECT, QUIT.  Each
-- needs the proxy to keep one client's state away from every other client's.
local h = require("harness")
local NULL, OK, QUEUED = h.NULL, h.status("OK"), h.status("QUEUED")

describe("connection state through shotover", function()
    local env, P, R

    setup(function()
        -- two shared backend connections per worker: state must not leak
        -- into either of them
        env = h.start_pair({ workers = 1, sink = "connections = 2," })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("queues commands after MULTI and runs them atomically at EXEC", function()
        local a, b = h.connect(P), h.connect(P)
        assert.same(OK, a:cmd("SET", "tx:a", "10"))
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("INCR", "tx:a"))
        assert.same(QUEUED, a:cmd("SET", "tx:b", "from-a"))
        assert.same(QUEUED, a:cmd("INCR", "tx:a"))
        -- nothing ran yet: another client sees the old value, and its own
        -- commands run right away instead of joining the transaction
        assert.equal("10", b:cmd("GET", "tx:a"))
        assert.equal(NULL, b:cmd("GET", "tx:b"))
        assert.same(OK, b:cmd("SET", "tx:c", "from-b"))
        assert.equal("10", h.cli(R, "get", "tx:a"))
        -- EXEC gives exactly the three queued results, in order
        assert.same({ 11, OK, 12 }, a:cmd("EXEC"))
        assert.equal("12", b:cmd("GET", "tx:a"))
        assert.equal("from-a", b:cmd("GET", "tx:b"))
        assert.equal("from-b", h.cli(R, "get", "tx:c"))
        -- after EXEC the connection is back to normal
        assert.equal(13, a:cmd("INCR", "tx:a"))
    end)

    it("runs a pipelined MULTI ... EXEC sent in one write", function()
        local a = h.connect(P)
        a:send(h.resp_command("MULTI") .. h.resp_command("INCR", "tx:pipe")
            .. h.resp_command("INCR", "tx:pipe") .. h.resp_command("EXEC"))
        assert.same({ OK, QUEUED, QUEUED, { 1, 2 } }, a:read_replies(4))
    end)

    it("keeps order when a pipeline moves from the shared connections to a dedicated one", function()
        local a = h.connect(P)
        a:send(h.resp_command("SET", "tx:move", "1") .. h.resp_command("MULTI")
            .. h.resp_command("INCR", "tx:move") .. h.resp_command("EXEC")
            .. h.resp_command("GET", "tx:move"))
        assert.same({ OK, OK, QUEUED, { 2 }, "2" }, a:read_replies(5))
        -- the same with the stateless write still in flight as its own batch
        for i = 1, 20 do
            local c = h.connect(P)
            c:send(h.resp_command("SET", "tx:move2", "1"))
            c:send(h.resp_command("MULTI") .. h.resp_command("INCR", "tx:move2")
                .. h.resp_command("EXEC"))
            assert.same({ OK, OK, QUEUED, { 2 } }, c:read_replies(4), "round " .. i)
            c:close()
        end
        for i = 1, 20 do
            local c = h.connect(P)
            c:send(h.resp_command("SET", "tx:sel", "db0-" .. i))
            c:send(h.resp_command("SELECT", "1") .. h.resp_command("SET", "tx:sel", "db1-" .. i))
            assert.same({ OK, OK, OK }, c:read_replies(3))
            assert.equal("db0-" .. i, h.cli(R, "-n", "0", "get", "tx:sel"))
            assert.equal("db1-" .. i, h.cli(R, "-n", "1", "get", "tx:sel"))
            c:close()
        end
    end)

    it("throws the queue away on DISCARD", function()
        local a = h.connect(P)
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("SET", "tx:discarded", "x"))
        assert.same(OK, a:cmd("DISCARD"))
        assert.equal(NULL, a:cmd("GET", "tx:discarded"))
        assert.same(h.err("ERR EXEC without MULTI"), a:cmd("EXEC"))
    end)

    it("aborts a transaction with a bad command at EXEC with EXECABORT", function()
        local a = h.connect(P)
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("SET", "tx:abort", "x"))
        local e = a:cmd("NOSUCHCOMMAND", "arg")
        assert.is_table(e)
        assert.matches("^ERR unknown command", e.err)
        local ex = a:cmd("EXEC")
        assert.is_table(ex)
        assert.matches("^EXECABORT", ex.err)
        assert.equal(NULL, a:cmd("GET", "tx:abort"))
    end)

    it("aborts EXEC after WATCH when another client modifies the key", function()
        local a, b = h.connect(P), h.connect(P)
        assert.same(OK, a:cmd("SET", "w:k", "start"))
        assert.same(OK, a:cmd("WATCH", "w:k"))
        assert.equal("start", a:cmd("GET", "w:k"))
        assert.same(OK, b:cmd("SET", "w:k", "theirs"))
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("SET", "w:k", "mine"))
        local _, raw = a:cmd("EXEC")
        assert.equal("*-1\r\n", raw)   -- the null array of an aborted EXEC
        assert.equal("theirs", b:cmd("GET", "w:k"))
        assert.equal("theirs", h.cli(R, "get", "w:k"))
    end)

    it("commits EXEC after WATCH when nobody touched the key", function()
        local a, b = h.connect(P), h.connect(P)
        assert.same(OK, a:cmd("SET", "w:calm", "start"))
        assert.same(OK, a:cmd("WATCH", "w:calm"))
        -- another client's traffic on other keys does not abort it
        assert.same(OK, b:cmd("SET", "w:other", "x"))
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("SET", "w:calm", "mine"))
        assert.same({ OK }, a:cmd("EXEC"))
        assert.equal("mine", h.cli(R, "get", "w:calm"))
    end)

    it("does not abort other clients' transactions because of one client's WATCH", function()
        local a, b = h.connect(P), h.connect(P)
        assert.same(OK, a:cmd("WATCH", "w:shared"))
        assert.same(OK, a:cmd("SET", "w:shared", "a-changed-it"))
        -- b never watched anything: its EXEC must succeed
        assert.same(OK, b:cmd("MULTI"))
        assert.same(QUEUED, b:cmd("SET", "w:b", "1"))
        assert.same({ OK }, b:cmd("EXEC"))
        -- a's own watch saw its own change: EXEC aborts
        assert.same(OK, a:cmd("MULTI"))
        assert.same(QUEUED, a:cmd("SET", "w:a", "1"))
        assert.equal(NULL, a:cmd("EXEC"))
        assert.equal(NULL, a:cmd("GET", "w:a"))
    end)

    it("keeps SELECT 1 to the client that sent it", function()
        local a, b = h.connect(P), h.connect(P)
        assert.same(OK, a:cmd("SELECT", "1"))
        assert.same(OK, a:cmd("SET", "sel:k", "in-db1"))
        -- another client is still in db 0
        assert.equal(NULL, b:cmd("GET", "sel:k"))
        assert.same(OK, b:cmd("SET", "sel:b", "in-db0"))
        -- the real redis agrees on where each key went
        assert.equal("in-db1", h.cli(R, "-n", "1", "get", "sel:k"))
        assert.equal("", h.cli(R, "-n", "0", "get", "sel:k"))
        assert.equal("in-db0", h.cli(R, "-n", "0", "get", "sel:b"))
        assert.equal("", h.cli(R, "-n", "1", "get", "sel:b"))
        -- the selecting client stays in db 1 after the other's traffic
        assert.equal("in-db1", a:cmd("GET", "sel:k"))
        assert.equal(NULL, a:cmd("GET", "sel:b"))
        -- new clients start in db 0 again
        assert.equal(NULL, h.connect(P):cmd("GET", "sel:k"))
        assert.equal("", h.cli(P, "get", "sel:k"))
    end)

    it("lets redis-cli -n 2 work in db 2", function()
        assert.equal("OK", h.cli(P, "-n", "2", "set", "sel:n2", "two"))
        assert.equal("two", h.cli(P, "-n", "2", "get", "sel:n2"))
        assert.equal("two", h.cli(R, "-n", "2", "get", "sel:n2"))
        assert.equal("", h.cli(P, "get", "sel:n2"))
    end)

    it("answers QUIT with +OK and closes the connection", function()
        local c = h.connect(P)
        assert.same(h.status("PONG"), c:cmd("PING"))
        c:send(h.resp_command("QUIT"))
        local closed, data = c:wait_closed(5)
        assert.is_true(closed, "connection still open 5 s after QUIT")
        assert.equal("+OK\r\n", data)
    end)

    it("answers the commands before QUIT in a pipeline and none after it", function()
        local c = h.connect(P)
        c:send(h.resp_command("SET", "quit:k", "1") .. h.resp_command("PING")
            .. h.resp_command("QUIT") .. h.resp_command("SET", "quit:after", "1"))
        local closed, data = c:wait_closed(5)
        assert.is_true(closed, "connection still open 5 s after QUIT")
        assert.equal("+OK\r\n+PONG\r\n+OK\r\n", data)
        assert.equal("1", h.cli(R, "get", "quit:k"))
        assert.equal("0", h.cli(R, "exists", "quit:after"))
    end)

    it("accepts QUIT as an inline command", function()
        local closed, data = (function()
            local c = h.connect(P)
            c:send("QUIT\r\n")
            return c:wait_closed(5)
        end)()
        assert.is_true(closed)
        assert.equal("+OK\r\n", data)
    end)

    it("leaves no transaction, watch, database or protocol behind when a client disconnects", function()
        for round = 1, 5 do
            local a = h.connect(P)
            assert.same(OK, a:cmd("SELECT", "3"))
            assert.same(OK, a:cmd("WATCH", "gone:w"))
            assert.is_table(a:cmd("HELLO", "3").map)
            assert.same(OK, a:cmd("MULTI"))
            assert.same(QUEUED, a:cmd("SET", "gone:k", "queued-" .. round))
            a:close()   -- mid-transaction
            -- later clients start clean: RESP2, db 0, no MULTI, no WATCH
            for i = 1, 4 do
                local b = h.connect(P)
                local _, raw = b:cmd("SET", "gone:b" .. i, "x")
                assert.equal("+OK\r\n", raw)
                local _, rawnull = b:cmd("GET", "gone:k")
                assert.equal("$-1\r\n", rawnull)
                assert.same(OK, b:cmd("MULTI"))
                assert.same(QUEUED, b:cmd("SET", "gone:w", "b"))
                assert.same({ OK }, b:cmd("EXEC"))
                b:close()
            end
        end
        assert.equal("x", h.cli(R, "-n", "0", "get", "gone:b1"))
        assert.equal("0", h.cli(R, "-n", "3", "exists", "gone:k"))
        assert.equal("0", h.cli(R, "-n", "0", "exists", "gone:k"))
    end)

    it("is still running after all of the above", function()
        assert.is_true(env.proxy:alive(), "shotover exited: " .. env.proxy.proc:describe())
        assert.equal("PONG", h.cli(P, "ping"))
    end)
end)
