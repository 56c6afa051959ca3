-- The redis_cluster sink speaking TLS to a real Redis Cluster whose nodes
-- speak only TLS (to clients, on the bus and to their masters;
-- t/lib/redis_cluster.lua with tls): keys on every master through a plain
-- source and through a TLS source, multi-key commands split over the
-- masters, 1 MB values and a long pipeline through TLS on both sides; a
-- sink that does not trust the nodes' CA answering CLUSTERDOWN, logging
-- which sink and why, and counting the handshake errors.
local h = require("harness")
local certs = require("certs")
local rc = require("redis_cluster")

local key_slot = require("shotover.transforms.redis_cluster").key_slot
local OK = h.status("OK")

local function value(n, seed)
    local parts, len, i = {}, 0, 0
    while len < n do
        local p = string.format("%s:%08d;", seed, i)
        parts[#parts + 1] = p
        len, i = len + #p, i + 1
    end
    return table.concat(parts):sub(1, n)
end

describe("the redis_cluster sink over TLS", function()
    local c, cl, A, P, PW, PT, proxy

    setup(function()
        c = certs.make()
        cl = rc.start{ masters = 3, replicas = 0,
                       tls = { cert = c.node.cert, key = c.node.key, ca = c.ca.cert } }
        A, P, PW, PT = h.free_port(), h.free_port(), h.free_port(), h.free_port()
        local seeds = string.format("%q, %q", cl:seeds()[1], cl:seeds()[2])
        proxy = h.shotover({ port = P, config = string.format([[
return {
  workers = 2,
  admin = { listen = "127.0.0.1:%d" },
  sources = {
    { name = "plain", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis_cluster", nodes = { %s }, tls = { ca = %q } } } },
    { name = "wrongca", protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis_cluster", name = "wrongca", nodes = { %s },
                  tls = { ca = %q } } } },
    { name = "both", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q },
      chain = { { "redis_cluster", nodes = { %s }, tls = { ca = %q } } } },
  },
}]], A, P, seeds, c.ca.cert, PW, seeds, c.other_ca.cert,
            PT, c.server.cert, c.server.key, seeds, c.ca.cert) })
    end)
    teardown(h.cleanup)

    it("puts keys on their slot's master, on every master", function()
        local conn = h.connect(P)
        local masters = {}
        for i = 1, 60 do
            local k = "tlsc:" .. i
            assert.same(OK, conn:cmd("SET", k, "v" .. i))
            local m = cl:master_of_slot(key_slot(k))
            masters[m] = true
            assert.equal("v" .. i, (cl:query(m, "GET", k)))
        end
        local n = 0
        for _ in pairs(masters) do n = n + 1 end
        assert.equal(3, n)
        -- a multi-key command over every master, split and joined
        local keys = {}
        for i = 1, 60 do keys[i] = "tlsc:" .. i end
        local got = conn:cmd("MGET", unpack(keys))
        for i = 1, 60 do assert.equal("v" .. i, got[i]) end
    end)

    it("carries 1 MB values and a long pipeline through a TLS source and TLS nodes", function()
        local t = h.tls_tunnel({ port = PT, ca = c.ca.cert })
        local conn = t.connect()
        local big = value(1024 * 1024, "cluster")
        assert.same(OK, conn:cmd("SET", "tlsc:big", big))
        assert.equal(big, (cl:query(cl:master_of_slot(key_slot("tlsc:big")), "GET",
                                    "tlsc:big")))
        assert.equal(big, conn:cmd("GET", "tlsc:big"))
        local out = {}
        for i = 1, 2000 do
            out[#out + 1] = h.resp_command("SET", "tlsc:p" .. i, value(64 + i % 100, "p" .. i))
            out[#out + 1] = h.resp_command("GET", "tlsc:p" .. i)
        end
        assert.is_true(conn:send(table.concat(out)))
        local replies = conn:read_replies(4000, 60)
        for i = 1, 2000 do
            assert.same(OK, replies[2 * i - 1], "SET " .. i)
            assert.equal(value(64 + i % 100, "p" .. i), replies[2 * i], "GET " .. i)
        end
    end)

    it("answers CLUSTERDOWN and logs which sink failed and why when the nodes' CA is not the one given", function()
        local v = h.connect(PW):cmd("SET", "tlsc:wrong", "x")
        assert.is_table(v, tostring(v))
        assert.is_string(v.err, "not an error reply")
        -- the reply is the sink's own for a cluster it cannot reach
        -- (CLUSTERDOWN), with the last node's error: which sink and why;
        -- so does the log
        assert.matches("^CLUSTERDOWN shotover", v.err)
        assert.matches('sink "wrongca"', v.err, 1, true)
        assert.matches("certificate verify failed", v.err, 1, true)
        h.wait_until(function()
            for l in h.read_file(proxy.log_path):gmatch("[^\n]+") do
                if l:find('sink "wrongca": TLS handshake with 127.0.0.1:', 1, true)
                   and l:find("certificate verify failed", 1, true) then
                    return true
                end
            end
        end, 10, "the log to say why the sink failed")
        h.wait_until(function()
            return (h.metric(A, 'shotover_tls_handshake_errors_total{sink="wrongca"}')
                    or 0) >= 1
        end, 10, "the sink's handshake error metric")
        assert.equal(h.NULL, (cl:query(cl:master_of_slot(key_slot("tlsc:wrong")),
                                       "GET", "tlsc:wrong")))
        -- the others carry on
        assert.same(OK, h.connect(P):cmd("SET", "tlsc:after", "1"))
    end)
end)
