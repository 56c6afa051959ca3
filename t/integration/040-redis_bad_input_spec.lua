-- Bad input: malformed RESP, over-limit frames, a raising inline transform,
-- and the `shotover check` / CLI contract.
local h = require("harness")
local OK = h.status("OK")

describe("malformed requests through shotover", function()
    local env, P, R

    setup(function()
        env = h.start_pair({ workers = 1 })
        P, R = env.port, env.redis.port
    end)
    teardown(h.cleanup)

    -- Each frame gets the same answer from shotover as from redis-server
    -- itself (sent straight to the backend): Redis's own error text, then
    -- the connection is closed.
    local cases = {
        { "a non-numeric bulk length", "*1\r\n$x\r\n", "invalid bulk length" },
        { "a negative bulk length", "*1\r\n$-1\r\n", "invalid bulk length" },
        { "a non-numeric multibulk length", "*abc\r\n", "invalid multibulk length" },
        { "an array element that is not a bulk", "*1\r\nfoo\r\n", "expected '$', got 'f'" },
        { "an inline command with unbalanced quotes", 'SET a "b\r\n', "unbalanced quotes in request" },
        { "a bulk longer than 512 MB", "*2\r\n$3\r\nGET\r\n$600000000\r\n", "invalid bulk length" },
        { "an inline line over 64 KB without a newline", string.rep("a", 70000), "too big inline request" },
        { "a multibulk count line over 64 KB", "*" .. string.rep("1", 70000), "too big mbulk count string" },
        { "a bulk length line over 64 KB", "*1\r\n$" .. string.rep("1", 70000), "too big bulk count string" },
    }
    for _, case in ipairs(cases) do
        local what, frame, msg = case[1], case[2], case[3]
        it("answers " .. what .. " as redis does, then closes the connection", function()
            local want = "-ERR Protocol error: " .. msg .. "\r\n"
            -- the reference: redis-server's own answer
            local rdata, rclosed = h.raw(R, frame)
            assert.equal(want, rdata, "redis-server itself answered differently")
            assert.is_true(rclosed)
            local data, closed = h.raw(P, frame)
            assert.equal(want, data)
            assert.is_true(closed, "shotover left the connection open")
        end)
    end

    it("answers the good requests before a malformed frame, then the error, then closes", function()
        local frame = h.resp_command("SET", "bad:before", "1") .. h.resp_command("PING") .. "*1\r\n$x\r\n"
        local data, closed = h.raw(P, frame)
        assert.equal("+OK\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n", data)
        assert.is_true(closed)
        assert.equal("1", h.cli(R, "get", "bad:before"))
    end)

    it("answers a malformed frame split across writes the same way", function()
        local c = h.connect(P)
        c:send("*2\r\n$3\r\nGET\r\n")
        assert.is_true(c:silent(0.1), "replied to half a command")
        c:send("$z\r\n")
        local closed, data = c:wait_closed(5)
        assert.is_true(closed)
        assert.equal("-ERR Protocol error: invalid bulk length\r\n", data)
    end)

    it("skips a zero or negative multibulk count as redis does, keeping the connection", function()
        -- redis-server 7.0 reads "*0", "*-1" and "*-5" as an empty command:
        -- no reply, nothing closed, the next command is answered
        for _, head in ipairs({ "*-5\r\n", "*-1\r\n", "*0\r\n" }) do
            local frame = head .. h.resp_command("PING")
            local rdata, rclosed = h.raw(R, frame)
            assert.equal("+PONG\r\n", rdata, "redis-server itself answered differently")
            assert.is_false(rclosed)
            local data, closed = h.raw(P, frame)
            assert.equal("+PONG\r\n", data, "for " .. string.format("%q", head))
            assert.is_false(closed)
        end
    end)

    it("keeps other connections working while one sends garbage", function()
        local keep = h.connect(P)
        assert.same(OK, keep:cmd("SET", "bad:keep", "before"))
        -- a pipeline in flight on the good connection while garbage arrives
        keep:send(h.resp_command("GET", "bad:keep"))
        for i = 1, 5 do
            local data, closed = h.raw(P, "*1\r\n$x\r\n" .. string.rep("garbage\0\255", i))
            assert.equal("-ERR Protocol error: invalid bulk length\r\n", data)
            assert.is_true(closed)
        end
        assert.equal("before", keep:read_reply())
        assert.same(OK, keep:cmd("SET", "bad:keep", "after"))
        assert.equal("after", keep:cmd("GET", "bad:keep"))
        assert.equal("after", h.cli(P, "get", "bad:keep"))
        assert.is_true(env.proxy:alive())
    end)

    it("survives a client that disconnects in the middle of a frame or a reply", function()
        for _ = 1, 5 do
            local c = h.connect(P)
            c:send("*3\r\n$3\r\nSET\r\n$7\r\nbad:mid\r\n$100\r\nonly-a-few")
            c:close()
        end
        -- replies nobody reads: a big value, then the client goes away
        assert.same(OK, h.connect(P):cmd("SET", "bad:large", string.rep("L", 1024 * 1024)))
        for _ = 1, 5 do
            local c = h.connect(P)
            c:send(string.rep(h.resp_command("GET", "bad:large"), 20))
            c:close()
        end
        assert.equal("PONG", h.cli(P, "ping"))
        assert.is_true(env.proxy:alive())
        assert.equal("0", h.cli(R, "exists", "bad:mid"))
    end)
end)

describe("clients that vanish with replies in flight", function()
    local env, P

    setup(function()
        env = h.start_pair({ workers = 1, sink = "connections = 2," })
        P = env.port
    end)
    teardown(h.cleanup)

    it("do not shift the replies of clients sharing the backend connections", function()
        local R = env.redis.port
        assert.same(h.status("OK"), h.connect(R):cmd("SET", "vanish:big", string.rep("B", 256 * 1024)))
        local steady = h.connect(P)
        for round = 1, 10 do
            -- a client queues many replies and leaves before reading any
            local gone = h.connect(P)
            gone:send(string.rep(h.resp_command("GET", "vanish:big"), 50))
            -- while the steady client pipelines its own counter
            local cmds = {}
            for _ = 1, 20 do cmds[#cmds + 1] = h.resp_command("INCR", "vanish:ctr") end
            steady:send(table.concat(cmds))
            gone:close()
            local replies = steady:read_replies(20, 10)
            for i = 1, 20 do
                assert.equal((round - 1) * 20 + i, replies[i], "round " .. round .. " reply " .. i)
            end
        end
        assert.equal("200", h.cli(R, "get", "vanish:ctr"))
        assert.is_true(env.proxy:alive())
    end)
end)

describe("source limits in shotover", function()
    local env, P

    setup(function()
        env = h.start_pair({ workers = 1, source = "max_bulk_len = 64, max_elements = 8," })
        P = env.port
    end)
    teardown(h.cleanup)

    it("accepts a bulk of exactly max_bulk_len bytes", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "lim:k", string.rep("a", 64)))
        assert.equal(string.rep("a", 64), c:cmd("GET", "lim:k"))
    end)

    it("answers a bulk over max_bulk_len with a protocol error and closes, from its header alone", function()
        local c = h.connect(P)
        -- only the header is sent: the proxy must not wait for the payload
        c:send("*3\r\n$3\r\nSET\r\n$5\r\nlim:x\r\n$65\r\n")
        local closed, data = c:wait_closed(5)
        assert.is_true(closed, "connection still open; got " .. string.format("%q", data))
        assert.equal("-ERR Protocol error: invalid bulk length\r\n", data)
        -- redis-cli sees the same
        local out = h.cli(P, "set", "lim:y", string.rep("b", 65))
        assert.matches("Protocol error", out, 1, true)
        assert.equal("", h.cli(P, "get", "lim:y"))
    end)

    it("accepts an array of exactly max_elements and rejects one more", function()
        local c = h.connect(P)
        assert.equal(6, c:cmd("RPUSH", "lim:list", "1", "2", "3", "4", "5", "6"))  -- 8 elements
        local data, closed = h.raw(P, h.resp_command("RPUSH", "lim:list", "1", "2", "3", "4", "5", "6", "7"))
        assert.matches("^%-ERR Protocol error: [^\r\n]+\r\n$", data)
        assert.is_true(closed)
        assert.equal(6, h.connect(P):cmd("LLEN", "lim:list"))
    end)

    it("keeps serving other clients after limit violations", function()
        assert.equal("PONG", h.cli(P, "ping"))
        assert.is_true(env.proxy:alive())
    end)
end)

describe("an inline transform that raises", function()
    local R, P, PB, PF, proxy

    setup(function()
        local redis = h.redis_server()
        R = redis.port
        P, PB, PF = h.free_port(), h.free_port(), h.free_port()
        local remote = "127.0.0.1:" .. R
        local config = string.format([[
return {
  workers = 1,
  sources = {
    { name = "plain", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis", remote = %q } } },
    { name = "boomer", protocol = "redis", listen = "127.0.0.1:%d",
      chain = {
        function(batch, chain) error("boom") end,
        { "redis", remote = %q },
      } },
    { name = "flaky", protocol = "redis", listen = "127.0.0.1:%d",
      chain = {
        (function()
          local calls = 0
          return function(batch, chain)
            calls = calls + 1
            if calls %% 2 == 1 then error("boom-odd") end
            return chain:next(batch)
          end
        end)(),
        { "redis", remote = %q },
      } },
  },
}
]], P, remote, PB, remote, PF, remote)
        proxy = h.shotover({ config = config, port = P })
    end)
    teardown(h.cleanup)

    it("answers every request of the batch with an ERR reply that mentions the error", function()
        local c = h.connect(PB)
        c:send(h.resp_command("SET", "boom:k", "v") .. h.resp_command("GET", "boom:k")
            .. h.resp_command("PING"))
        local replies = c:read_replies(3, 10)
        for i = 1, 3 do
            assert.is_table(replies[i])
            assert.is_string(replies[i].err, "reply " .. i .. " is not an error")
            assert.matches("^ERR", replies[i].err)
            assert.matches("boom", replies[i].err, 1, true)
        end
        -- none of them reached redis
        assert.equal("0", h.cli(R, "exists", "boom:k"))
    end)

    it("keeps the connection usable after the transform raised", function()
        local c = h.connect(PB)
        for _ = 1, 3 do
            local v = c:cmd("PING")
            assert.is_table(v)
            assert.matches("^ERR.*boom", v.err)
        end
        assert.is_false(c.eof)
        -- redis-cli sees the error text too
        local out = h.cli(PB, "get", "boom:k")
        assert.matches("^ERR.*boom", out)
    end)

    it("serves the next batch normally on the same connection when the transform stops raising", function()
        local c = h.connect(PF)
        -- odd calls raise, even calls pass: one request per batch
        local v1 = c:cmd("SET", "flaky:k", "one")
        assert.is_table(v1)
        assert.matches("^ERR.*boom%-odd", v1.err)
        assert.same(OK, c:cmd("SET", "flaky:k", "two"))
        local v3 = c:cmd("GET", "flaky:k")
        assert.matches("^ERR.*boom%-odd", v3.err)
        assert.equal("two", c:cmd("GET", "flaky:k"))
        assert.equal("two", h.cli(R, "get", "flaky:k"))
    end)

    it("logs the error with the source name", function()
        local c = h.connect(PB)
        c:cmd("PING")
        proxy:wait_log("boomer", 5)
        local found = false
        for line in proxy:log():gmatch("[^\n]+") do
            if line:find("boomer", 1, true) and line:find("boom", 1, true) then found = true end
        end
        if not found then
            -- a traceback may put the name and the message on separate lines
            local log = proxy:log()
            found = log:find("boomer", 1, true) and log:find("boom", 1, true) and true
        end
        assert.is_true(found, "log does not mention source boomer and the error; log:\n" .. proxy:log_tail(20))
    end)

    it("does not disturb other sources of the same proxy", function()
        assert.equal("OK", h.cli(P, "set", "plain:k", "v"))
        assert.equal("v", h.cli(P, "get", "plain:k"))
        assert.is_true(proxy:alive())
    end)
end)

describe("shotover check and the command line", function()
    teardown(h.cleanup)

    local function write_config(text)
        local path = h.tmpfile("config") .. ".lua"
        h.write_file(path, text)
        return path
    end

    local function good_config(port)
        return h.config({ listen = port, remote = h.free_port() })
    end

    it("exits 0 for a valid config and does not bind its port", function()
        local port = h.free_port()
        local occupied = h.occupy(port)   -- a bind by check would fail
        local r = h.shotover_cmd({ "check", "-c", write_config(good_config(port)) })
        occupied.close()
        assert.is_false(r.timed_out, "check did not return")
        assert.equal(0, r.code, "stdout: " .. r.stdout .. "\nstderr: " .. r.stderr)
    end)

    it("exits 1 and prints every error of a bad config on its own line with its path", function()
        local text = string.format([[
return {
  workers = 1,
  sources = {
    { name = "one", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis", remote = 6380 } } },
    { name = "two", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis", remote = "127.0.0.1:6380", connect_timeout_ms = "soon" } } },
    { name = "three", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "no_such_transform" } } },
  },
}
]], h.free_port(), h.free_port(), h.free_port())
        local r = h.shotover_cmd({ "check", "-c", write_config(text) })
        assert.equal(1, r.code, "stdout: " .. r.stdout .. "\nstderr: " .. r.stderr)
        local lines = {}
        for l in (r.stdout .. "\n" .. r.stderr):gmatch("[^\n]+") do lines[#lines + 1] = l end
        local function has(pred, what)
            for _, l in ipairs(lines) do if pred(l) then return true end end
            error("no line " .. what .. " in:\n" .. table.concat(lines, "\n"), 2)
        end
        has(function(l) return l == 'sources[1].chain[1].remote: expected "host:port", got 6380' end,
            'sources[1].chain[1].remote: expected "host:port", got 6380')
        has(function(l) return l:find("^sources%[2%]%.chain%[1%]%.connect_timeout_ms: .+") end,
            "sources[2].chain[1].connect_timeout_ms: ...")
        has(function(l) return l:find("^sources%[3%]%.chain%[1%][%.%w_]*: .+") end,
            "sources[3].chain[1]...: ...")
    end)

    it("exits 1 for a config that is not valid Lua", function()
        local path = write_config("return { workers = 1, sources = { ")
        local r = h.shotover_cmd({ "check", "-c", path })
        assert.equal(1, r.code, "stdout: " .. r.stdout .. "\nstderr: " .. r.stderr)
        assert.is_true(#(r.stdout .. r.stderr) > 0, "no message")
    end)

    it("exits non-zero and names the file when the config does not exist", function()
        local path = h.root() .. "/no-such-config.lua"
        local r = h.shotover_cmd({ "check", "-c", path })
        assert.is_true(r.code == 1 or r.code == 2, "exit " .. tostring(r.code))
        assert.matches("no-such-config.lua", r.stdout .. r.stderr, 1, true)
    end)

    it("exits 2 on usage errors", function()
        local r = h.shotover_cmd({ "check" })
        assert.equal(2, r.code, "check without -c")
        r = h.shotover_cmd({ "frobnicate" })
        assert.equal(2, r.code, "unknown subcommand")
        r = h.shotover_cmd({ "check", "-c" })
        assert.equal(2, r.code, "-c without a file")
        r = h.shotover_cmd({ "check", "--no-such-option", "-c", "x.lua" })
        assert.equal(2, r.code, "unknown option")
    end)

    it("refuses to run a bad config, with the same error", function()
        local path = write_config(string.format([[
return { workers = 1, sources = {
  { name = "one", protocol = "redis", listen = "127.0.0.1:%d",
    chain = { { "redis", remote = 6380 } } } } }
]], h.free_port()))
        local r = h.shotover_cmd({ "run", "-c", path }, { timeout = 10 })
        assert.is_false(r.timed_out, "run kept running with a bad config")
        assert.equal(1, r.code)
        assert.matches('sources[1].chain[1].remote: expected "host:port", got 6380',
            r.stdout .. r.stderr, 1, true)
    end)

    it("exits 1 from run, naming the address, when the listen port is taken", function()
        local port = h.free_port()
        local occupied = h.occupy(port)
        local r = h.shotover_cmd({ "run", "-c", write_config(good_config(port)) }, { timeout = 10 })
        occupied.close()
        assert.is_false(r.timed_out, "run kept running without its port")
        assert.equal(1, r.code)
        assert.matches("127.0.0.1:" .. port, r.stdout .. r.stderr, 1, true)
    end)

    it("prints its version", function()
        local r = h.shotover_cmd({ "--version" })
        assert.equal(0, r.code)
        assert.matches("^shotover %d+%.%d+%.%d+[ \n]", r.stdout .. "\n")
    end)

    it("prints help naming its subcommands", function()
        local r = h.shotover_cmd({ "--help" })
        assert.equal(0, r.code)
        local text = r.stdout .. r.stderr
        assert.matches("run", text, 1, true)
        assert.matches("check", text, 1, true)
    end)
end)
