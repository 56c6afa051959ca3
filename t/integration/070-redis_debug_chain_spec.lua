-- Chain elements other than the redis sink, each on its own source of one
-- shotover: debug_returner's fixed replies, null, debug_printer, and an
-- inline pass-through function.
local h = require("harness")
local OK = h.status("OK")

-- three requests in one write: a batch of several frames
local PIPE = h.resp_command("PING") .. h.resp_command("SET", "dbg:k", "v")
    .. h.resp_command("GET", "dbg:k")

describe("debug chain elements", function()
    local R, proxy
    local ports = {}
    local names = { "ok", "err", "int", "bulk", "nul", "null", "printer", "inline" }

    setup(function()
        local redis = h.redis_server()
        R = redis.port
        for _, n in ipairs(names) do ports[n] = h.free_port() end
        local remote = string.format("%q", "127.0.0.1:" .. R)
        local function src(name, chain)
            return string.format('    { name = %q, protocol = "redis", listen = "127.0.0.1:%d",\n      chain = { %s } },\n',
                name, ports[name], chain)
        end
        local config = "return {\n  workers = 1,\n  sources = {\n"
            .. src("ok", '{ "debug_returner", simple = "OK" }')
            .. src("err", '{ "debug_returner", error = "ERR nope" }')
            .. src("int", '{ "debug_returner", integer = 5 }')
            .. src("bulk", '{ "debug_returner", bulk = "x" }')
            .. src("nul", '{ "debug_returner", null = true }')
            .. src("null", '{ "null" }')
            .. src("printer", '{ "debug_printer" }, { "redis", remote = ' .. remote .. ' }')
            .. src("inline", 'function(batch, chain) return chain:next(batch) end, { "redis", remote = ' .. remote .. ' }')
            .. "  },\n}\n"
        proxy = h.shotover({ config = config, port = ports.ok })
        for _, n in ipairs(names) do proxy:wait_ready(ports[n], 10) end
    end)
    teardown(h.cleanup)

    -- send PIPE on a new connection; the raw bytes of the three replies
    local function pipe_replies(port)
        local c = h.connect(port)
        c:send(PIPE)
        local raws = {}
        for i = 1, 3 do
            local _, raw = c:read_reply(5)
            raws[i] = raw
        end
        assert.is_true(c:silent(0.1), "more replies than requests")
        return raws, c
    end

    it("answers every request with +OK from debug_returner simple = \"OK\"", function()
        local raws, c = pipe_replies(ports.ok)
        assert.same({ "+OK\r\n", "+OK\r\n", "+OK\r\n" }, raws)
        c:send("PING\r\n")   -- inline
        local _, raw = c:read_reply()
        assert.equal("+OK\r\n", raw)
        assert.equal("0", h.cli(R, "exists", "dbg:k"))
    end)

    it("answers every request with the error from debug_returner error = \"ERR nope\", keeping the connection", function()
        local raws, c = pipe_replies(ports.err)
        assert.same({ "-ERR nope\r\n", "-ERR nope\r\n", "-ERR nope\r\n" }, raws)
        local _, raw = c:raw(h.resp_command("GET", "x"))
        assert.equal("-ERR nope\r\n", raw)
        -- redis-cli prints an error reply followed by an empty line
        assert.matches("^ERR nope\n?$", (h.cli(ports.err, "get", "x")))
    end)

    it("answers every request with :5 from debug_returner integer = 5", function()
        local raws = pipe_replies(ports.int)
        assert.same({ ":5\r\n", ":5\r\n", ":5\r\n" }, raws)
        assert.equal("5", h.cli(ports.int, "incr", "x"))
    end)

    it("answers every request with a bulk from debug_returner bulk = \"x\"", function()
        local raws = pipe_replies(ports.bulk)
        assert.same({ "$1\r\nx\r\n", "$1\r\nx\r\n", "$1\r\nx\r\n" }, raws)
        assert.equal("x", h.cli(ports.bulk, "get", "anything"))
    end)

    it("answers every request with a null from debug_returner null = true", function()
        local raws = pipe_replies(ports.nul)
        assert.same({ "$-1\r\n", "$-1\r\n", "$-1\r\n" }, raws)
        assert.equal("(nil)", h.cli(ports.nul, "get", "k", { pre = { "--no-raw" } }))
    end)

    it("answers every request with a null from the null element", function()
        local raws = pipe_replies(ports.null)
        assert.same({ "$-1\r\n", "$-1\r\n", "$-1\r\n" }, raws)
        assert.equal("(nil)", h.cli(ports.null, "get", "k", { pre = { "--no-raw" } }))
        assert.equal("(nil)", h.cli(ports.null, "set", "k", "v", { pre = { "--no-raw" } }))
        assert.equal("0", h.cli(R, "exists", "k"))
    end)

    it("answers a 1,000-request pipeline with 1,000 fixed replies", function()
        local c = h.connect(ports.int)
        c:send(string.rep(h.resp_command("GET", "k"), 1000))
        local replies = c:read_replies(1000, 20)
        for i = 1, 1000 do assert.equal(5, replies[i]) end
        assert.is_true(c:silent(0.1))
    end)

    it("logs requests and replies with debug_printer and passes them on to redis", function()
        -- the reply token exists only in redis, so seeing it in the log
        -- means the reply was printed
        assert.equal("OK", h.cli(R, "set", "dbg:printed", "reply-token-4f2a"))
        local c = h.connect(ports.printer)
        assert.same(OK, c:cmd("SET", "dbg:request-token-9c1e", "value-token-77d0"))
        assert.equal("reply-token-4f2a", c:cmd("GET", "dbg:printed"))
        -- passed on: the write is in the real redis
        assert.equal("value-token-77d0", h.cli(R, "get", "dbg:request-token-9c1e"))
        proxy:wait_log("dbg:request-token-9c1e", 5)
        proxy:wait_log("value-token-77d0", 5)
        proxy:wait_log("reply-token-4f2a", 5)
        -- at info level, which the default log level shows
        for _, token in ipairs({ "dbg:request-token-9c1e", "reply-token-4f2a" }) do
            for line in proxy:log():gmatch("[^\n]+") do
                if line:find(token, 1, true) then
                    assert.matches("info", line:lower(), 1, true)
                end
            end
        end
    end)

    it("passes requests through an inline function that calls chain:next", function()
        local c = h.connect(ports.inline)
        assert.same(OK, c:cmd("SET", "dbg:inline", "through"))
        assert.equal("through", c:cmd("GET", "dbg:inline"))
        assert.equal("through", h.cli(R, "get", "dbg:inline"))
        c:send(string.rep(h.resp_command("INCR", "dbg:inline-ctr"), 100))
        local replies = c:read_replies(100, 10)
        for i = 1, 100 do assert.equal(i, replies[i]) end
    end)

    it("does not print requests of sources without debug_printer", function()
        assert.equal("OK", h.cli(ports.inline, "set", "dbg:quiet-token-1b9e", "v"))
        assert.equal("v", h.cli(R, "get", "dbg:quiet-token-1b9e"))
        assert.is_nil(proxy:log():find("dbg:quiet-token-1b9e", 1, true))
    end)

    it("is still running after all of the above", function()
        assert.is_true(proxy:alive(), proxy.proc:describe())
    end)
end)
