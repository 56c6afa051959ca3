-- Basic Redis traffic through shotover to a real redis-server: strings,
-- hashes, binary and large values, pipelines, inline commands, RESP3, and
-- more than one worker.
local h = require("harness")
local NULL, OK = h.NULL, h.status("OK")

-- every byte value, then a varying tail, so offsets and lengths both show
local function pattern(n)
    local block = {}
    for i = 0, 255 do block[#block + 1] = string.char(i) end
    block = table.concat(block)
    local parts, len, i = {}, 0, 0
    while len < n do
        i = i + 1
        local piece = block .. string.format("%08d\r\n", i)
        parts[#parts + 1] = piece
        len = len + #piece
    end
    return table.concat(parts):sub(1, n)
end

describe("a shotover with one worker in front of redis", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1 })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("answers PING with PONG from redis-cli and a raw connection", function()
        local out, code = h.cli(P, "ping")
        assert.equal(0, code)
        assert.equal("PONG", out)
        assert.same(h.status("PONG"), h.connect(P):cmd("PING"))
    end)

    it("sets, gets, deletes and increments strings that land in the real redis", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "b:str", "hello"))
        assert.equal("hello", c:cmd("GET", "b:str"))
        assert.equal("hello", h.cli(R, "get", "b:str"))
        assert.equal(1, c:cmd("DEL", "b:str"))
        assert.equal(NULL, c:cmd("GET", "b:str"))
        assert.equal("0", h.cli(R, "exists", "b:str"))
        assert.equal(1, c:cmd("INCR", "b:ctr"))
        assert.equal(42, c:cmd("INCRBY", "b:ctr", "41"))
        assert.equal("42", h.cli(R, "get", "b:ctr"))
        -- and the same through redis-cli processes
        assert.equal("OK", h.cli(P, "set", "b:cli", "v1"))
        assert.equal("v1", h.cli(P, "get", "b:cli"))
        assert.equal("43", h.cli(P, "incr", "b:ctr"))
    end)

    it("passes redis error replies through unchanged", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "b:notint", "abc"))
        assert.same(h.err("ERR value is not an integer or out of range"), c:cmd("INCR", "b:notint"))
        assert.equal(1, c:cmd("HSET", "b:hash-type", "f", "v"))
        local v = c:cmd("GET", "b:hash-type")
        assert.is_table(v)
        assert.matches("^WRONGTYPE ", v.err)
        -- the connection is still fine after error replies
        assert.same(h.status("PONG"), c:cmd("PING"))
    end)

    it("handles MSET and MGET with a missing key", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("MSET", "b:m1", "one", "b:m2", "two", "b:m3", "three"))
        assert.same({ "one", "two", NULL, "three" },
            c:cmd("MGET", "b:m1", "b:m2", "b:missing", "b:m3"))
        assert.equal("two", h.cli(R, "get", "b:m2"))
    end)

    it("handles HSET and HGETALL", function()
        local c = h.connect(P)
        assert.equal(3, c:cmd("HSET", "b:h", "f1", "v1", "f2", "v2", "f3", "v3"))
        assert.same({ "f1", "v1", "f2", "v2", "f3", "v3" }, c:cmd("HGETALL", "b:h"))
        assert.same({}, c:cmd("HGETALL", "b:no-such-hash"))
        assert.equal("v2", h.cli(R, "hget", "b:h", "f2"))
        assert.equal("f1\nv1\nf2\nv2\nf3\nv3", h.cli(P, "hgetall", "b:h"))
    end)

    it("keeps binary values with CR, LF and NUL bytes intact over RESP", function()
        local c = h.connect(P)
        local vals = {
            "a\r\nb\0c",
            "\r\n",
            "\0",
            "",
            "$3\r\nfoo\r\n*1\r\n+OK\r\n-ERR x\r\n:1\r\n",
            pattern(1000),
        }
        for i, v in ipairs(vals) do
            local key = "b:bin\0\r\n" .. i
            assert.same(OK, c:cmd("SET", key, v))
            assert.equal(v, c:cmd("GET", key))
            -- the real redis holds the same bytes under the same binary key
            local direct = h.connect(R)
            assert.equal(v, direct:cmd("GET", key))
            direct:close()
        end
    end)

    it("keeps binary values intact through redis-cli -x on stdin", function()
        local v = "x\r\ny\0z\r\n\255\254\n"
        local out, code = h.cli(P, "-x", "set", "b:binx", { stdin = v })
        assert.equal(0, code)
        assert.equal("OK", out)
        local r = h.run({ "redis-cli", "-p", tostring(P), "--raw", "get", "b:binx" })
        assert.equal(0, r.code)
        assert.equal(v .. "\n", r.stdout)   -- --raw adds one newline
        assert.equal(v, h.connect(R):cmd("GET", "b:binx"))
        assert.equal(tostring(#v), h.cli(P, "strlen", "b:binx"))
    end)

    it("writes and reads back a 5 MB value", function()
        local big = pattern(5 * 1024 * 1024)
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "b:big", big))
        assert.equal(tostring(#big), h.cli(R, "strlen", "b:big"))
        local got = c:cmd("GET", "b:big")
        assert.equal(#big, #got)
        assert.is_true(got == big, "5 MB value differs after the round trip")
        -- through redis-cli -x on stdin, read back on the backend
        local out, code = h.cli(P, "-x", "set", "b:big2", { stdin = big, timeout = 60 })
        assert.equal(0, code)
        assert.equal("OK", out)
        local direct = h.connect(R):cmd("GET", "b:big2")
        assert.is_true(direct == big, "5 MB value written by redis-cli -x differs on the backend")
        -- and the reply to another connection is not disturbed by a big one in flight
        local c2 = h.connect(P)
        c:send(h.resp_command("GET", "b:big"))
        assert.same(h.status("PONG"), c2:cmd("PING"))
        assert.is_true(c:read_reply(30) == big)
    end)

    it("answers a 1,000-command pipeline sent in one write, in order", function()
        local c = h.connect(P)
        local cmds = {}
        for i = 1, 1000 do cmds[i] = h.resp_command("INCR", "b:pipe-ctr") end
        assert.is_true(c:send(table.concat(cmds)))
        local replies = c:read_replies(1000, 30)
        for i = 1, 1000 do
            if replies[i] ~= i then
                error(string.format("reply %d is %s, expected %d", i, tostring(replies[i]), i))
            end
        end
        assert.is_true(c:silent(0.2), "no reply beyond the 1000 expected")
        assert.equal("1000", h.cli(R, "get", "b:pipe-ctr"))
    end)

    it("answers a 1,000-command mixed pipeline split at odd byte boundaries, in order", function()
        local c = h.connect(P)
        local cmds = {}
        for i = 1, 500 do
            cmds[#cmds + 1] = h.resp_command("SET", "b:pl:" .. i, "value-" .. i .. "\r\n")
            cmds[#cmds + 1] = h.resp_command("GET", "b:pl:" .. i)
        end
        local data = table.concat(cmds)
        local step = 7
        for off = 1, #data, step do
            assert.is_true(c:send(data:sub(off, off + step - 1)))
        end
        local replies = c:read_replies(1000, 30)
        for i = 1, 500 do
            assert.same(OK, replies[2 * i - 1])
            assert.equal("value-" .. i .. "\r\n", replies[2 * i])
        end
    end)

    it("answers a 1,000-command redis-cli --pipe run with no errors", function()
        local lines = {}
        for i = 1, 1000 do lines[i] = h.resp_command("SET", "b:mass:" .. i, "m" .. i) end
        local r = h.run({ "redis-cli", "-p", tostring(P), "--pipe" },
            { stdin = table.concat(lines), timeout = 30 })
        assert.equal(0, r.code)
        assert.matches("errors: 0, replies: 1000", r.stdout, 1, true)
        assert.equal("m1000", h.cli(R, "get", "b:mass:1000"))
        assert.equal("m1", h.cli(R, "get", "b:mass:1"))
    end)

    it("accepts inline commands over a raw socket", function()
        local c = h.connect(P)
        c:send("PING\r\n")
        local _, raw = c:read_reply()
        assert.equal("+PONG\r\n", raw)
        c:send("SET b:inline hello\r\nGET b:inline\r\n")
        local _, r1 = c:read_reply()
        local _, r2 = c:read_reply()
        assert.equal("+OK\r\n", r1)
        assert.equal("$5\r\nhello\r\n", r2)
        -- quoting, escapes and a bare LF terminator, as redis accepts them
        c:send('SET b:inline2 "a b\\x41\\n"\n')
        assert.same(OK, c:read_reply())
        c:send("GET b:inline2\n")
        assert.equal("a bA\n", c:read_reply())
        -- empty lines between inline commands are skipped, as redis does
        c:send("\r\n\r\nPING\r\n\n")
        local _, rp = c:read_reply()
        assert.equal("+PONG\r\n", rp)
        -- inline and RESP mixed in one write
        c:send("PING\r\n" .. h.resp_command("GET", "b:inline") .. "ECHO hi\r\n")
        assert.same({ h.status("PONG"), "hello", "hi" }, c:read_replies(3))
        assert.equal("hello", h.cli(R, "get", "b:inline"))
    end)

    it("speaks RESP3 to redis-cli -3, printing hgetall as a map", function()
        assert.equal(2, h.connect(P):cmd("HSET", "b:h3", "f1", "v1", "f2", "v2"))
        local out, code = h.cli(P, "hgetall", "b:h3", { pre = { "-3", "--no-raw" } })
        assert.equal(0, code)
        assert.equal('1# "f1" => "v1"\n2# "f2" => "v2"', out)
        -- RESP2 shows the same hash as a flat array
        out = h.cli(P, "hgetall", "b:h3", { pre = { "--no-raw" } })
        assert.equal('1) "f1"\n2) "v1"\n3) "f2"\n4) "v2"', out)
    end)

    it("speaks RESP3 after HELLO 3 on one connection while another stays on RESP2", function()
        local c3 = h.connect(P)
        local hello = c3:cmd("HELLO", "3")
        assert.is_table(hello.map, "HELLO 3 answers a map")
        local fields = {}
        for i = 1, #hello.map, 2 do fields[hello.map[i]] = hello.map[i + 1] end
        assert.equal(3, fields.proto)
        assert.equal(2, c3:cmd("HSET", "b:h3b", "a", "1", "b", "2"))
        local v, raw = c3:cmd("HGETALL", "b:h3b")
        assert.same({ map = { "a", "1", "b", "2" } }, v)
        assert.equal("%2\r\n", raw:sub(1, 4))
        local _, rawnull = c3:cmd("GET", "b:none")
        assert.equal("_\r\n", rawnull)
        -- a RESP2 client at the same time still gets arrays and $-1
        local c2 = h.connect(P)
        local _, raw2 = c2:cmd("HGETALL", "b:h3b")
        assert.equal("*4\r\n", raw2:sub(1, 4))
        local _, raw2null = c2:cmd("GET", "b:none")
        assert.equal("$-1\r\n", raw2null)
        -- and the RESP3 connection keeps RESP3 after the RESP2 traffic
        local _, raw3 = c3:cmd("HGETALL", "b:h3b")
        assert.equal("%2\r\n", raw3:sub(1, 4))
    end)

    it("serves 20 concurrent connections without mixing their replies", function()
        local conns = {}
        for i = 1, 20 do conns[i] = h.connect(P) end
        for i, c in ipairs(conns) do
            local cmds = {}
            for j = 1, 50 do
                cmds[#cmds + 1] = h.resp_command("SET", "b:cc:" .. i .. ":" .. j, i .. "/" .. j)
                cmds[#cmds + 1] = h.resp_command("GET", "b:cc:" .. i .. ":" .. j)
            end
            assert.is_true(c:send(table.concat(cmds)))
        end
        for i, c in ipairs(conns) do
            local replies = c:read_replies(100, 20)
            for j = 1, 50 do
                assert.same(OK, replies[2 * j - 1])
                assert.equal(i .. "/" .. j, replies[2 * j])
            end
        end
        -- all twenty share the one pipelined backend connection of the
        -- worker (connections = 1 by default): redis saw their ECHOs on
        -- exactly one connection
        for _, c in ipairs(conns) do c:send(h.resp_command("ECHO", "shared")) end
        for _, c in ipairs(conns) do assert.equal("shared", c:read_reply()) end
        assert.equal(1, h.clients_by_last_cmd(R, "echo"))
    end)

    it("is still running after all of the above", function()
        assert.is_true(env.proxy:alive(), "shotover exited: " .. env.proxy.proc:describe())
    end)
end)

describe("a shotover with two workers in front of redis", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 2 })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("serves many short redis-cli connections", function()
        for i = 1, 20 do
            local out, code = h.cli(P, "set", "w2:" .. i, "v" .. i)
            assert.equal(0, code)
            assert.equal("OK", out)
        end
        for i = 1, 20 do
            assert.equal("v" .. i, h.cli(P, "get", "w2:" .. i))
            assert.equal("v" .. i, h.cli(R, "get", "w2:" .. i))
        end
    end)

    it("serves 32 concurrent pipelining connections in order", function()
        local conns = {}
        for i = 1, 32 do conns[i] = h.connect(P) end
        for i, c in ipairs(conns) do
            local cmds = {}
            for _ = 1, 100 do cmds[#cmds + 1] = h.resp_command("INCR", "w2:ctr:" .. i) end
            assert.is_true(c:send(table.concat(cmds)))
        end
        for i, c in ipairs(conns) do
            local replies = c:read_replies(100, 20)
            for j = 1, 100 do assert.equal(j, replies[j]) end
            assert.equal("100", h.cli(R, "get", "w2:ctr:" .. i))
        end
        -- both workers served some of them, each over its own one shared
        -- backend connection
        for _, c in ipairs(conns) do c:send(h.resp_command("ECHO", "w2")) end
        for _, c in ipairs(conns) do assert.equal("w2", c:read_reply()) end
        assert.equal(2, h.clients_by_last_cmd(R, "echo"))
    end)

    it("keeps a MULTI/EXEC transaction together with two workers", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("MULTI"))
        assert.same(h.status("QUEUED"), c:cmd("INCR", "w2:tx"))
        assert.same(h.status("QUEUED"), c:cmd("INCR", "w2:tx"))
        assert.same({ 1, 2 }, c:cmd("EXEC"))
    end)
end)

describe("a shotover with four shared backend connections per worker", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1, sink = "connections = 4," })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    it("keeps each client's pipeline in order across the connections", function()
        local conns = {}
        for i = 1, 8 do conns[i] = h.connect(P) end
        for round = 1, 3 do
            for i, c in ipairs(conns) do
                local cmds = {}
                for _ = 1, 250 do cmds[#cmds + 1] = h.resp_command("INCR", "c4:" .. i) end
                assert.is_true(c:send(table.concat(cmds)))
            end
            for i, c in ipairs(conns) do
                local replies = c:read_replies(250, 20)
                for j = 1, 250 do
                    assert.equal((round - 1) * 250 + j, replies[j], "client " .. i .. " reply " .. j)
                end
            end
        end
        for i = 1, 8 do assert.equal("750", h.cli(R, "get", "c4:" .. i)) end
        -- at most the four configured connections carried them
        local n = #h.client_list(R)
        assert.is_true(n >= 1 and n <= 4, n .. " backend connections")
    end)

    it("answers a write followed by a read of the same key with the new value", function()
        local c = h.connect(P)
        for i = 1, 200 do
            c:send(h.resp_command("SET", "c4:rw", tostring(i)) .. h.resp_command("GET", "c4:rw"))
            local r = c:read_replies(2, 5)
            assert.same(OK, r[1])
            assert.equal(tostring(i), r[2])
        end
        -- the same with the read sent as its own write, before the reply
        -- to the write came back
        for i = 1, 200 do
            c:send(h.resp_command("SET", "c4:rw2", tostring(i)))
            c:send(h.resp_command("GET", "c4:rw2"))
            local r = c:read_replies(2, 5)
            assert.same(OK, r[1])
            assert.equal(tostring(i), r[2])
        end
    end)
end)

describe("a shotover with workers = \"auto\"", function()
    teardown(h.cleanup)

    it("starts and proxies requests", function()
        local env = h.start_pair({ workers = "auto" })
        assert.equal("OK", h.cli(env.port, "set", "auto:k", "v"))
        assert.equal("v", h.cli(env.redis.port, "get", "auto:k"))
    end)
end)

describe("shotover shutdown", function()
    teardown(h.cleanup)

    it("exits promptly on SIGTERM without crashing, even with clients connected", function()
        local env = h.start_pair({ workers = 2 })
        local c = h.connect(env.port)
        assert.same(h.status("PONG"), c:cmd("PING"))
        local t0 = h.now()
        env.proxy.proc:kill(h.SIGTERM)
        local s = env.proxy.proc:wait(5)
        assert.is_not_nil(s, "shotover still running 5 s after SIGTERM")
        assert.is_true(h.now() - t0 < 5)
        -- either it handles SIGTERM and exits 0, or SIGTERM's default ends it;
        -- any other signal (SIGSEGV, SIGABRT) or exit status is a bug
        local clean = s.code == 0 or s.signal == h.SIGTERM
        assert.is_true(clean, "shotover ended with " .. h.status_string(s)
            .. "; log:\n" .. env.proxy:log_tail(20))
        -- and the port is released
        assert.is_nil(h.try_connect(env.port, 1))
    end)
end)
