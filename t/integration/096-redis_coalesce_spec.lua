-- coalesce in front of a real redis-server: requests of separate client
-- batches reach the sink as one batch, a client that sends fewer than
-- max_requests and waits still gets its replies (the timer), EOF flushes,
-- replies stay correct and in order.
local h = require("harness")

local function http_get(port, path)
    local r = h.run({ "curl", "-s", "http://127.0.0.1:" .. port .. path },
                    { timeout = 10 })
    return r.stdout
end

local function series(text, name)
    local v = text:match("\n" .. name:gsub("[%-%.%[%]%(%)%+%*%?%^%$]", "%%%0")
                         .. " (%S+)")
    return tonumber(v)
end

-- an element behind coalesce that logs the size of each batch it passes on
local function recorder(tag)
    return string.format([[
        { function(batch, chain)
            require("shotover.log").info("%s saw a batch of %%d", batch.n)
            return chain:next(batch)
          end, name = "recorder" },]], tag)
end

describe("coalesce in front of redis", function()
    local proxy, P, Q, R, A

    setup(function()
        R = h.redis_server().port
        P, Q, A = h.free_port(), h.free_port(), h.free_port()
        -- P: flushes at 100 requests or after 50 ms; Q: only at 5 requests
        -- (its timer is an hour away), so what Q answers was counted
        proxy = h.shotover({ port = P, config = h.config({ listen = P,
            remote = R,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = '{ "coalesce", max_requests = 100, max_wait_ms = 50 },'
                .. recorder("P") .. '{ "redis", remote = "%REMOTE%" }',
            extra_sources = string.format([[
    { name = "q", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "coalesce", name = "five", max_requests = 5,
                  max_wait_ms = 3600000 }, %s
                { "redis", remote = "127.0.0.1:%d" } } },]], Q,
                recorder("Q"), R) }) })
        h.wait_until(function()
            local c = h.try_connect(Q, 1)
            if c then c:close() end
            return c ~= nil
        end, 10, "source q to listen")
    end)
    teardown(h.cleanup)

    it("answers a client that sends one request and waits", function()
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SET", "t", "1"))
        assert.equal("1", c:cmd("GET", "t"))
        c:close()
        assert.equal("1", h.cli(R, "get", "t"))
    end)

    it("holds separate batches until max_requests and sends them as one",
       function()
        local c = h.connect(Q)
        for i = 1, 4 do
            assert.is_true(c:send(h.resp_command("INCR", "q:n")))
            -- nothing can come back before the fifth: the timer is an hour
            assert.is_true(c:silent(0.1))
        end
        assert.is_true(c:send(h.resp_command("INCR", "q:n")))
        assert.same({ 1, 2, 3, 4, 5 }, c:read_replies(5, 10))
        proxy:wait_log("Q saw a batch of 5")
        assert.is_nil(proxy:log():find("Q saw a batch of [1-4]%f[^%d]"))
        c:close()
    end)

    it("answers held requests when the client half-closes", function()
        local r = h.run({ "python3", "-c", string.format([[
import socket
s = socket.create_connection(("127.0.0.1", %d))
s.sendall(b"*2\r\n$4\r\nINCR\r\n$5\r\neof:n\r\n" * 2)
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    data += d
print(repr(data))
]], Q) }, { timeout = 20 })
        assert.equal("b':1\\r\\n:2\\r\\n'\n", r.stdout)
    end)

    it("keeps pipelined replies of concurrent clients in order", function()
        local conns = {}
        for k = 1, 4 do
            local c = h.connect(P)
            local reqs = {}
            for i = 1, 150 do
                reqs[#reqs + 1] = h.resp_command("SET", "p" .. k .. ":" .. i,
                                                 "v" .. i)
                reqs[#reqs + 1] = h.resp_command("GET", "p" .. k .. ":" .. i)
            end
            assert.is_true(c:send(table.concat(reqs)))
            conns[k] = c
        end
        for k = 1, 4 do
            local replies = conns[k]:read_replies(300, 20)
            for i = 1, 150 do
                assert.same(h.status("OK"), replies[2 * i - 1])
                assert.equal("v" .. i, replies[2 * i])
            end
            conns[k]:close()
        end
    end)

    it("sends a blocking command on at once", function()
        local c = h.connect(Q)
        assert.is_true(c:send(h.resp_command("BLPOP", "q:list", "10")))
        h.wait_until(function()
            return h.cli(R, "client", "list"):find("cmd=blpop", 1, true)
        end, 10, "BLPOP to reach redis")
        assert.equal("1", h.cli(R, "rpush", "q:list", "x"))
        assert.same({ "q:list", "x" }, c:read_reply(10))
        c:close()
    end)

    it("counts flushes by reason", function()
        local text = http_get(A, "/metrics")
        local function flushes(name, reason)
            return series(text, string.format(
                'shotover_coalesce_flushes_total{name="%s",reason="%s"}',
                name, reason)) or 0
        end
        assert.is_true(flushes("five", "count") >= 1)
        assert.is_true(flushes("coalesce", "time") >= 1)
        assert.equal(1, flushes("five", "eof"))
        assert.equal(1, flushes("five", "command"))
    end)
end)
