-- request_throttling in front of a real redis-server, two workers: the
-- limit is one bucket in the shared dict, so connections spread over both
-- workers get the burst between them, not a burst each; throttled requests
-- get an error, never reach Redis, and are counted on /metrics.
--
-- No timing assertions: the rate is so slow (one request per 100 s) that
-- the bucket cannot refill during the spec, and the bound still allows for
-- the measured elapsed time: burst <= allowed <= burst + elapsed * rate.
local h = require("harness")

local RATE = 0.01

local function http_get(port, path)
    local _, text = h.http("GET", port, path)
    return text
end

local series = h.metric

describe("request_throttling in front of redis", function()
    local redis, proxy, P, P2, A

    setup(function()
        redis = h.redis_server()
        P, P2, A = h.free_port(), h.free_port(), h.free_port()
        local remote = "127.0.0.1:" .. redis.port
        proxy = h.shotover({ config = h.config({
            listen = P, remote = redis.port, workers = 2,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = string.format([[
                { "request_throttling", name = "shared",
                  max_requests_per_second = %s, burst = 5 },
                { "redis", remote = %q }]], RATE, remote),
            extra_sources = string.format([[
                { name = "pipe", protocol = "redis", listen = "127.0.0.1:%d",
                  chain = {
                    { "request_throttling", name = "pipe",
                      max_requests_per_second = %s, burst = 3 },
                    { "redis", remote = %q } } },]], P2, RATE, remote),
        }) })
        -- ready without a request (a PING would take from the bucket):
        -- every worker is listening once the process says it runs
        proxy:wait_log("running with 2 workers", 15)
    end)
    teardown(h.cleanup)

    it("gives connections on both workers one burst between them",
       function()
        local conns = {}
        for i = 1, 20 do
            conns[i] = h.connect(P)
        end
        local t0 = h.now()
        local allowed, throttled = 0, 0
        for _, c in ipairs(conns) do
            local v = c:cmd("INCR", "n")
            if type(v) == "number" then
                allowed = allowed + 1
            else
                assert.are.same({ err = "ERR shotover: request throttled "
                    .. "(shared: over 0.01 requests per second)" }, v)
                throttled = throttled + 1
            end
        end
        local elapsed = h.now() - t0
        for _, c in ipairs(conns) do
            c:close()
        end
        assert.are.equal(20, allowed + throttled)
        assert.is_true(allowed >= 5, "allowed " .. allowed)
        assert.is_true(allowed <= 5 + math.floor(elapsed * RATE),
                       string.format("allowed %d in %.1f s", allowed,
                                     elapsed))
        -- the throttled ones never reached Redis
        assert.are.equal(tostring(allowed), redis:cli("get", "n"))
        local text = http_get(A, "/metrics")
        assert.are.equal(throttled, series(text,
            'shotover_throttled_requests_total{name="shared"}'))
    end)

    it("decides each request of a pipeline in order", function()
        local c = h.connect(P2)
        local cmds = {}
        for i = 1, 8 do
            cmds[i] = h.resp_command("INCR", "p")
        end
        assert(c:send(table.concat(cmds)))
        local got = c:read_replies(8)
        c:close()
        assert.are.same({ 1, 2, 3 }, { got[1], got[2], got[3] })
        for i = 4, 8 do
            assert.matches("^ERR shotover: request throttled", got[i].err)
        end
        assert.are.equal("3", redis:cli("get", "p"))
        assert.are.equal(5, series(http_get(A, "/metrics"),
            'shotover_throttled_requests_total{name="pipe"}'))
    end)
end)

describe("request_throttling keyed per client address or per connection",
         function()
    local redis, PC, PN

    setup(function()
        redis = h.redis_server()
        PC, PN = h.free_port(), h.free_port()
        local remote = "127.0.0.1:" .. redis.port
        local proxy = h.shotover({ config = h.config({
            listen = PC, remote = redis.port, workers = 2,
            chain = string.format([[
                { "request_throttling", name = "per_client", key = "client",
                  max_requests_per_second = %s, burst = 3 },
                { "redis", remote = %q }]], RATE, remote),
            extra_sources = string.format([[
                { name = "conn", protocol = "redis", listen = "127.0.0.1:%d",
                  chain = {
                    { "request_throttling", name = "per_conn",
                      key = "connection",
                      max_requests_per_second = %s, burst = 3 },
                    { "redis", remote = %q } } },]], PN, RATE, remote),
        }) })
        proxy:wait_log("running with 2 workers", 15)
    end)
    teardown(h.cleanup)

    local function allowed(port, key)
        local n = 0
        for _ = 1, 4 do
            local c = h.connect(port)
            for _ = 1, 2 do
                if type(c:cmd("INCR", key)) == "number" then
                    n = n + 1
                end
            end
            c:close()
        end
        return n
    end

    it("gives all connections from one address one bucket (client)",
       function()
        -- eight requests over four connections from 127.0.0.1, spread
        -- over two workers: the address's burst of 3, no more
        assert.are.equal(3, allowed(PC, "c"))
        assert.are.equal("3", h.cli(redis.port, "get", "c"))
        -- another address (all of 127/8 is loopback) has its own bucket
        local r = h.run({ "python3", "-c", string.format([[
import socket
s = socket.create_connection(("127.0.0.1", %d), source_address=("127.0.0.2", 0))
s.sendall(b"*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n")
buf = b""
while buf.count(b"\r\n") < 2:
    buf += s.recv(4096)
print(buf.decode().replace("\r\n", "|"))
]], PC) }, { timeout = 20 })
        assert.are.equal(0, r.code, r.stderr)
        assert.are.equal(":4|:5|\n", r.stdout)
    end)

    it("gives each connection its own bucket (connection)", function()
        assert.are.equal(8, allowed(PN, "k"))
    end)
end)
