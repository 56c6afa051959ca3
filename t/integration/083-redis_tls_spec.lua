-- TLS on Redis sources and sinks, against real redis-servers (one of them
-- speaking only TLS) and real TLS clients (redis-cli --tls,
-- redis-benchmark --tls, openssl s_client, and t/tools/tls-tunnel, which
-- lets a spec drive a TLS connection with the harness's plain client):
-- a TLS source in front of a plain redis; client certificates (mTLS): the
-- subject for transforms, in audit lines and mapped to a user by
-- authenticate; refused handshakes (no certificate, another CA, expired,
-- plain text) logged with the client's address and OpenSSL's reason and
-- counted, while everyone else is served; sinks verifying a TLS redis
-- (the CA, expiry, the name, a client certificate); a certificate
-- reloaded on SIGHUP; 1 MB values and long pipelines through TLS both ways
-- (records are at most 16 KB: partial records on every read).
local h = require("harness")
local certs = require("certs")
local OK = h.status("OK")
local PONG = h.status("PONG")

-- every line of shotover's log that contains all the plain needles
local function log_lines(s, ...)
    local out = {}
    local needles = { ... }
    for l in s:log():gmatch("[^\n]+") do
        local all = true
        for _, n in ipairs(needles) do
            if not l:find(n, 1, true) then all = false; break end
        end
        if all then out[#out + 1] = l end
    end
    return out
end

local function metric(A, series)
    return h.metric(A, series) or 0
end

local function source_errors(A, name)
    return metric(A, 'shotover_tls_handshake_errors_total{source="' .. name .. '"}')
end

local function sink_errors(A, name)
    return metric(A, 'shotover_tls_handshake_errors_total{sink="' .. name .. '"}')
end

-- a value of n bytes that never repeats a 4 KB window (a misplaced record
-- shows up as a mismatch, not as the same bytes)
local function value(n, seed)
    local parts, i = {}, 0
    local len = 0
    while len < n do
        local p = string.format("%s:%08d;", seed, i)
        parts[#parts + 1] = p
        len = len + #p
        i = i + 1
    end
    return table.concat(parts):sub(1, n)
end

-- SET/GET pipeline of n pairs on c; every GET must return its SET's value
local function pipeline(c, n, prefix)
    local out = {}
    for i = 1, n do
        out[#out + 1] = h.resp_command("SET", prefix .. i, value(100 + i % 50, prefix .. i))
        out[#out + 1] = h.resp_command("GET", prefix .. i)
    end
    assert.is_true(c:send(table.concat(out)))
    local replies = c:read_replies(2 * n, 60)
    for i = 1, n do
        assert.same(OK, replies[2 * i - 1], "SET " .. i)
        assert.equal(value(100 + i % 50, prefix .. i), replies[2 * i], "GET " .. i)
    end
end

local function admin(A)
    return string.format('admin = { listen = "127.0.0.1:%d" },', A)
end

describe("a TLS redis source in front of a plain redis", function()
    local c, redis, P, P13, A, s, tls

    setup(function()
        c = certs.make()
        redis = h.redis_server()
        P, P13, A = h.free_port(), h.free_port(), h.free_port()
        tls = { ca = c.ca.cert }
        s = h.shotover({ port = P, tls = tls, config = string.format([[
return {
  workers = 2,
  %s
  sources = {
    { name = "redis", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q },
      chain = { { "redis", remote = "127.0.0.1:%d" } } },
    { name = "tls13", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q, min_version = "1.3" },
      chain = { { "redis", remote = "127.0.0.1:%d" } } },
  },
}]], admin(A), P, c.server.cert, c.server.key, redis.port,
            P13, c.server.cert, c.server.key, redis.port) })
    end)
    teardown(h.cleanup)

    it("serves redis-cli --tls and presents the configured certificate", function()
        assert.equal("OK", h.cli(P, "set", "tls:cli", "over tls", { tls = tls }))
        assert.equal("over tls", h.cli(P, "get", "tls:cli", { tls = tls }))
        assert.equal("over tls", redis:cli("get", "tls:cli"))
        local served = assert(certs.served(P))
        assert.equal(c.server.serial, served.serial)
        assert.equal(c.server.subject, served.subject)
        -- a client that trusts another CA refuses shotover's certificate
        local out, code = h.cli(P, "ping", { tls = { ca = c.other_ca.cert } })
        assert.are_not.equal("PONG", out)
        assert.are_not.equal(0, code)
    end)

    it("completes redis-benchmark --tls, pipelined and not, and the data lands in redis", function()
        for _, pipe in ipairs({ "1", "16" }) do
            assert.equal("OK", redis:cli("flushall"))
            assert.equal("OK", redis:cli("config", "resetstat"))
            local argv = { "redis-benchmark", "-p", tostring(P) }
            for _, a in ipairs(h.tls_args(tls)) do argv[#argv + 1] = a end
            for _, a in ipairs({ "-t", "set,get", "-n", "5000", "-c", "10",
                                 "-P", pipe, "-q" }) do
                argv[#argv + 1] = a
            end
            local r = h.run(argv, { timeout = 180 })
            local out = r.stdout .. r.stderr
            assert.is_false(r.timed_out, out:sub(-400))
            assert.equal(0, r.code, out:sub(-400))
            assert.is_true((h.benchmark_rps(out, "SET") or 0) > 0, "no SET result: " .. out:sub(-400))
            assert.is_true((h.benchmark_rps(out, "GET") or 0) > 0, "no GET result: " .. out:sub(-400))
            assert.is_true(h.cmdstat_calls(redis.port, "set") >= 5000, "-P " .. pipe)
            assert.is_true(h.cmdstat_calls(redis.port, "get") >= 5000, "-P " .. pipe)
            assert.equal("3", redis:cli("strlen", "key:__rand_int__"))
        end
    end)

    it("carries 1 MB values and a long pipeline both ways", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert })
        local conn = t.connect()
        assert.equal(c.server.serial, conn.tls_serial)
        local big = value(1024 * 1024, "up")
        assert.same(OK, conn:cmd("SET", "tls:big-up", big))
        assert.equal(big, h.connect(redis.port):cmd("GET", "tls:big-up"))
        local down = value(1024 * 1024 + 7, "down")
        assert.same(OK, h.connect(redis.port):cmd("SET", "tls:big-down", down))
        assert.equal(down, conn:cmd("GET", "tls:big-down"))
        pipeline(conn, 3000, "tls:pipe:")
        -- a pipeline of big values, replies crossing many records at once
        local out = {}
        for i = 1, 8 do
            out[#out + 1] = h.resp_command("SET", "tls:bp" .. i, value(200000, "bp" .. i))
            out[#out + 1] = h.resp_command("GET", "tls:bp" .. i)
        end
        assert.is_true(conn:send(table.concat(out)))
        local replies = conn:read_replies(16, 60)
        for i = 1, 8 do
            assert.same(OK, replies[2 * i - 1])
            assert.equal(value(200000, "bp" .. i), replies[2 * i], "big GET " .. i)
        end
    end)

    it("logs and counts plain text on the TLS port, and serves everyone else", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert })
        local good = t.connect()
        assert.same(PONG, good:cmd("PING"))
        local before = source_errors(A, "redis")
        certs.logged_failure(s, "redis", function()
            local plain = h.connect(P)
            plain:send(h.resp_command("PING"))
            local closed, got = plain:wait_closed(10)
            assert.is_true(closed, "the plain-text client was not disconnected")
            assert.is_nil(got:find("PONG", 1, true), "plain text was answered: " .. got)
        end)
        h.wait_until(function()
            return source_errors(A, "redis") >= before + 1
        end, 10, "the handshake error metric to count it")
        -- the other clients: one connected before, new ones
        assert.same(OK, good:cmd("SET", "tls:after-plain", "1"))
        assert.equal("1", good:cmd("GET", "tls:after-plain"))
        assert.equal("PONG", h.cli(P, "ping", { tls = tls }))
        assert.is_true(s:alive())
    end)

    it("refuses TLS 1.2 where min_version is 1.3 and takes 1.3", function()
        local function s_client(version)
            return h.run({ "openssl", "s_client", "-connect", "127.0.0.1:" .. P13,
                           "-CAfile", c.ca.cert, version }, { stdin = "", timeout = 10 })
        end
        local r12 = s_client("-tls1_2")
        assert.are_not.equal(0, r12.code, r12.stdout)
        local r13 = s_client("-tls1_3")
        assert.equal(0, r13.code, r13.stdout .. r13.stderr)
        assert.matches("TLSv1.3", r13.stdout, 1, true)
        assert.matches("Verify return code: 0 (ok)", r13.stdout, 1, true)
        assert.equal("PONG", h.cli(P13, "ping", { tls = tls }))
    end)
end)

describe("client certificates on a redis source", function()
    local c, redis, P, PO, A, s, audit_file

    -- the audit lines for statement stmt
    local function audit_lines(stmt)
        local out = {}
        for l in (h.read_file(audit_file) or ""):gmatch("[^\n]+") do
            if l:find('"statement":"' .. stmt .. '"', 1, true) then
                out[#out + 1] = l
            end
        end
        return out
    end

    setup(function()
        c = certs.make()
        redis = h.redis_server()
        P, PO, A = h.free_port(), h.free_port(), h.free_port()
        audit_file = h.tmpdir("audit") .. "/audit.jsonl"
        local hash = require("shotover.password").hash("app2-pw", 1000)
        s = h.shotover({ port = P,
            tls = { ca = c.ca.cert, cert = c.client.cert, key = c.client.key },
            config = string.format([[
return {
  workers = 2,
  %s
  sources = {
    { name = "mtls", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q, ca = %q },
      chain = {
        function(batch, chain)
            require("shotover.log").info("tls subject seen: %%s",
                tostring(chain.conn.tls_subject))
            return chain:next(batch)
        end,
        { "audit", file = %q },
        { "authenticate", tls_subjects = { ["CN=app1,O=shotover-test"] = "app1" },
          users = { app1 = { hash = %q }, app2 = { hash = %q } },
          max_failures = 100 },
        { "redis", remote = "127.0.0.1:%d" },
      } },
    { name = "optional", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q, ca = %q, verify_client = "optional" },
      chain = { { "audit", file = %q }, { "redis", remote = "127.0.0.1:%d" } } },
  },
}]], admin(A), P, c.server.cert, c.server.key, c.ca.cert, audit_file, hash, hash,
            redis.port, PO, c.server.cert, c.server.key, c.ca.cert, audit_file,
            redis.port) })
    end)
    teardown(h.cleanup)

    it("gives transforms the client certificate's subject", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert, cert = c.client.cert,
                                 key = c.client.key })
        local conn = t.connect()
        assert.same(OK, conn:cmd("SET", "mtls:k", "v"))
        s:wait_log("tls subject seen: CN=app1,O=shotover-test")
    end)

    it("maps app1's subject to its user: served without AUTH, audited with both", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert, cert = c.client.cert,
                                 key = c.client.key })
        local conn = t.connect()
        assert.same(OK, conn:cmd("SET", "mtls:app1", "from app1"))
        assert.equal("from app1", redis:cli("get", "mtls:app1"))
        local lines
        h.wait_until(function()
            lines = audit_lines("SET mtls:app1 ?")
            return #lines == 1
        end, 10, "the audit line of app1's SET")
        assert.matches('"tls_subject":"CN=app1,O=shotover-test"', lines[1], 1, true)
        assert.matches('"user":"app1"', lines[1], 1, true)
        assert.matches('"source":"mtls"', lines[1], 1, true)
    end)

    it("audits an unmapped subject, which must still log in", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert, cert = c.client2.cert,
                                 key = c.client2.key })
        local conn = t.connect()
        assert.same(h.err("NOAUTH Authentication required."), conn:cmd("SET", "mtls:app2", "x"))
        assert.same(OK, conn:cmd("AUTH", "app2", "app2-pw"))
        assert.same(OK, conn:cmd("SET", "mtls:app2", "from app2"))
        local lines
        h.wait_until(function()
            lines = audit_lines("SET mtls:app2 ?")
            return #lines == 2
        end, 10, "the audit lines of app2's SETs")
        for _, l in ipairs(lines) do
            assert.matches('"tls_subject":"CN=app2,O=shotover-test"', l, 1, true)
        end
        assert.matches('"user":null', lines[1], 1, true)
        assert.matches('"user":"app2"', lines[2], 1, true)
    end)

    -- a refused client: redis-cli gets no reply, the log names the source,
    -- the address and `reason`, the metric counts it, and a client
    -- connected before is still served
    local function refused(client, reason)
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert, cert = c.client.cert,
                                 key = c.client.key })
        local good = t.connect()
        assert.same(PONG, good:cmd("PING"))
        local before = source_errors(A, "mtls")
        local why = certs.logged_failure(s, "mtls", function()
            local out, code = h.cli(P, "set", "mtls:refused", "x", { tls = client })
            assert.are_not.equal("OK", out)
            assert.are_not.equal(0, code)
        end)
        assert.matches(reason, why, 1, true)
        h.wait_until(function()
            return source_errors(A, "mtls") >= before + 1
        end, 10, "the handshake error metric to count it")
        assert.equal("", redis:cli("get", "mtls:refused"))
        assert.same(OK, good:cmd("SET", "mtls:still", "served"))
        assert.equal("served", good:cmd("GET", "mtls:still"))
        assert.equal("OK", h.cli(P, "set", "mtls:new", "1", { tls = { ca = c.ca.cert,
            cert = c.client.cert, key = c.client.key } }))
    end

    it("refuses a client without a certificate", function()
        refused({ ca = c.ca.cert }, "peer did not return a certificate")
    end)

    it("refuses a certificate from another CA", function()
        refused({ ca = c.ca.cert, cert = c.other.cert, key = c.other.key },
                "certificate verify failed")
    end)

    it("refuses an expired client certificate", function()
        refused({ ca = c.ca.cert, cert = c.expired_client.cert,
                  key = c.expired_client.key }, "certificate verify failed")
    end)

    it("takes clients with and without a certificate where verify_client is optional", function()
        assert.equal("OK", h.cli(PO, "set", "opt:anon", "1", { tls = { ca = c.ca.cert } }))
        assert.equal("OK", h.cli(PO, "set", "opt:app1", "1", { tls = { ca = c.ca.cert,
            cert = c.client.cert, key = c.client.key } }))
        local anon, app1
        h.wait_until(function()
            anon = audit_lines("SET opt:anon ?")[1]
            app1 = audit_lines("SET opt:app1 ?")[1]
            return anon and app1
        end, 10, "the audit lines of the optional source")
        assert.matches('"tls_subject":null', anon, 1, true)
        assert.matches('"tls_subject":"CN=app1,O=shotover-test"', app1, 1, true)
        -- a certificate that does not verify is still refused
        local out = h.cli(PO, "ping", { tls = { ca = c.ca.cert, cert = c.other.cert,
                                              key = c.other.key } })
        assert.are_not.equal("PONG", out)
    end)
end)

describe("redis sinks speaking TLS to redis-server's tls-port", function()
    local c, tlsr, expired, mtlsr, A, s, P = nil, nil, nil, nil, nil, nil, {}
    local sinks = {
        "ok", "byname", "wrongca", "oldcert", "othername", "unchecked",
        "clientcert", "nocert",
    }

    setup(function()
        c = certs.make()
        tlsr = h.redis_server({ tls = { cert = c.server.cert, key = c.server.key,
                                        ca = c.ca.cert } })
        expired = h.redis_server({ tls = { cert = c.expired_server.cert,
            key = c.expired_server.key, ca = c.ca.cert, insecure = true } })
        mtlsr = h.redis_server({ tls = { cert = c.server.cert, key = c.server.key,
            ca = c.ca.cert, auth_clients = "yes", client = c.client } })
        A = h.free_port()
        local conf = {
            ok = { tlsr.port, string.format("{ ca = %q }", c.ca.cert) },
            byname = { tlsr.port, string.format('{ ca = %q, server_name = "localhost" }',
                                                c.ca.cert) },
            wrongca = { tlsr.port, string.format("{ ca = %q }", c.other_ca.cert) },
            oldcert = { expired.port, string.format("{ ca = %q }", c.ca.cert) },
            othername = { tlsr.port, string.format(
                '{ ca = %q, server_name = "not-this-server.example" }', c.ca.cert) },
            unchecked = { expired.port, "{ verify = false }" },
            clientcert = { mtlsr.port, string.format("{ ca = %q, cert = %q, key = %q }",
                c.ca.cert, c.client.cert, c.client.key) },
            nocert = { mtlsr.port, string.format("{ ca = %q }", c.ca.cert) },
        }
        local sources = {}
        for _, name in ipairs(sinks) do
            P[name] = h.free_port()
            sources[#sources + 1] = string.format([[
    { name = %q, protocol = "redis", listen = "127.0.0.1:%d",
      chain = { { "redis", name = %q, remote = "127.0.0.1:%d", tls = %s,
                  connect_timeout_ms = 2000 } } },]],
                name, P[name], name, conf[name][1], conf[name][2])
        end
        -- a TLS source in front of a TLS sink: TLS both ways
        P.both = h.free_port()
        sources[#sources + 1] = string.format([[
    { name = "both", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q },
      chain = { { "redis", name = "both", remote = "127.0.0.1:%d", tls = { ca = %q } } } },]],
            P.both, c.server.cert, c.server.key, tlsr.port, c.ca.cert)
        s = h.shotover({ port = P.ok, config = string.format([[
return {
  workers = 2,
  %s
  sources = {
%s
  },
}]], admin(A), table.concat(sources, "\n")) })
        s:wait_ready(P.both, 15, { ca = c.ca.cert })
        -- signals are handled once it says so (teardown's SIGTERM)
        s:wait_log("running with", 15)
    end)
    teardown(h.cleanup)

    -- the reply of one request through sink `name`'s source
    local function through(name, ...)
        return h.connect(P[name]):cmd(...)
    end

    -- the sink's error reply: names the sink, says why; the log says why too
    -- (server: the redis the sink points at, which must not get the write)
    local function sink_refused(name, reasons, server)
        local before = sink_errors(A, name)
        local v = through(name, "SET", "sink:" .. name, "x")
        assert.is_table(v, name .. ": " .. tostring(v))
        assert.is_string(v.err, name .. ": not an error reply")
        assert.matches("^ERR ", v.err)
        assert.matches('sink "' .. name .. '"', v.err, 1, true)
        assert.matches("certificate verify failed", v.err, 1, true)
        for _, reason in ipairs(reasons) do
            h.wait_until(function()
                return #log_lines(s, name, reason) > 0
            end, 10, "a log line of sink " .. name .. " saying " .. reason)
        end
        h.wait_until(function()
            return sink_errors(A, name) >= before + 1
        end, 10, "the handshake error metric of sink " .. name)
        assert.equal("", server:cli("get", "sink:" .. name))
        return v.err
    end

    it("verifies the server against the CA and reaches it", function()
        assert.same(OK, through("ok", "SET", "sink:ok", "verified"))
        assert.equal("verified", tlsr:cli("get", "sink:ok"))
        assert.equal("verified", through("ok", "GET", "sink:ok"))
    end)

    it("verifies server_name instead of the remote's host", function()
        assert.same(OK, through("byname", "SET", "sink:byname", "by name"))
        assert.equal("by name", tlsr:cli("get", "sink:byname"))
    end)

    it("answers an error naming the sink when the server's CA is not the one given", function()
        sink_refused("wrongca", { "certificate verify failed" }, tlsr)
    end)

    it("answers an error when the server's certificate has expired", function()
        sink_refused("oldcert", { "certificate verify failed", "expired" }, expired)
    end)

    it("answers an error when server_name is not the certificate's", function()
        sink_refused("othername", { "certificate verify failed", "hostname mismatch" },
                     tlsr)
    end)

    it("reaches a server it does not verify with verify = false, and warns", function()
        assert.same(OK, through("unchecked", "SET", "sink:unchecked", "unverified"))
        assert.equal("unverified", expired:cli("get", "sink:unchecked"))
        local warn = log_lines(s, "[warn]", 'sink "unchecked": tls.verify is false')
        assert.is_true(#warn > 0, "no warning about the unverified sink")
    end)

    it("presents a client certificate to a redis that requires one", function()
        assert.same(OK, through("clientcert", "SET", "sink:cc", "with cert"))
        assert.equal("with cert", mtlsr:cli("get", "sink:cc"))
        -- without one, redis refuses the connection: an error naming the sink
        local v = through("nocert", "SET", "sink:nocert", "x")
        assert.is_string(v.err, tostring(v))
        assert.matches('sink "nocert"', v.err, 1, true)
        assert.equal("", mtlsr:cli("get", "sink:nocert"))
    end)

    it("carries 1 MB values and a long pipeline through a TLS source and a TLS sink", function()
        local t = h.tls_tunnel({ port = P.both, ca = c.ca.cert })
        local conn = t.connect()
        local big = value(1024 * 1024, "both")
        assert.same(OK, conn:cmd("SET", "both:big", big))
        -- what redis holds, read straight over TLS
        local direct = h.tls_tunnel({ port = tlsr.port, ca = c.ca.cert }).connect()
        assert.equal(big, direct:cmd("GET", "both:big"))
        local down = value(1024 * 1024 + 3, "both-down")
        assert.same(OK, direct:cmd("SET", "both:down", down))
        assert.equal(down, conn:cmd("GET", "both:down"))
        assert.equal(big, conn:cmd("GET", "both:big"))
        pipeline(conn, 3000, "both:pipe:")
        -- the sinks that failed did not stop the others
        assert.same(OK, through("ok", "SET", "sink:ok2", "still"))
        assert.is_true(s:alive())
    end)
end)

describe("reloading a source's certificate on SIGHUP", function()
    local c, redis, P, s, cert_path, key_path

    setup(function()
        c = certs.make()
        redis = h.redis_server()
        P = h.free_port()
        local dir = h.tmpdir("live-cert")
        cert_path = h.write_file(dir .. "/server.pem", h.read_file(c.server.cert))
        key_path = h.write_file(dir .. "/server.key", h.read_file(c.server.key))
        s = h.shotover({ port = P, tls = { ca = c.ca.cert }, config = string.format([[
return {
  workers = 2,
  sources = {
    { name = "redis", protocol = "redis", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q },
      chain = { { "redis", remote = "127.0.0.1:%d" } } },
  },
}]], P, cert_path, key_path, redis.port) })
    end)
    teardown(h.cleanup)

    it("gives new connections the new certificate and keeps open ones", function()
        local t = h.tls_tunnel({ port = P, ca = c.ca.cert })
        local old = t.connect()
        assert.equal(c.server.serial, old.tls_serial)
        assert.same(OK, old:cmd("SET", "reload:k", "before"))
        -- the new certificate and key replace the files; then SIGHUP
        s:wait_log("running with", 15)
        local reloads = #log_lines(s, "reloaded ")
        h.write_file(key_path, h.read_file(c.server2.key))
        h.write_file(cert_path, h.read_file(c.server2.cert))
        assert.is_true(s.proc:kill(h.SIGHUP))
        h.wait_until(function()
            return #log_lines(s, "reloaded ") >= reloads + 2
        end, 15, "both workers to reload")
        local served = h.wait_until(function()
            local info = certs.served(P)
            return info and info.serial == c.server2.serial and info
        end, 10, "the new certificate to be served")
        assert.equal(certs.fingerprint(c.server2.cert), served.fingerprint)
        -- the connection opened before the reload carries on
        assert.equal("before", old:cmd("GET", "reload:k"))
        assert.same(OK, old:cmd("SET", "reload:k", "after"))
        pipeline(old, 200, "reload:pipe:")
        -- a new one sees the new certificate, and works
        local new = t.connect()
        assert.equal(c.server2.serial, new.tls_serial)
        assert.equal("after", new:cmd("GET", "reload:k"))
    end)
end)

describe("TLS settings shotover check refuses", function()
    local c

    setup(function() c = certs.make() end)
    teardown(h.cleanup)

    local function check(tls_text)
        local path = h.write_file(h.tmpfile("conf") .. ".lua", string.format([[
return {
  sources = { { name = "r", protocol = "redis", listen = "127.0.0.1:%d",
                tls = %s,
                chain = { { "null" } } } },
}]], h.free_port(), tls_text))
        return h.shotover_cmd({ "check", "-c", path })
    end

    it("names the path of a missing certificate file", function()
        local r = check(string.format('{ cert = %q, key = %q }',
            c.dir .. "/no-such.pem", c.server.key))
        assert.are_not.equal(0, r.code)
        assert.matches("sources[1].tls.cert", r.stderr, 1, true)
    end)

    it("names a key that does not belong to the certificate", function()
        local r = check(string.format('{ cert = %q, key = %q }', c.server.cert,
                                      c.client.key))
        assert.are_not.equal(0, r.code)
        assert.matches("sources[1].tls", r.stderr, 1, true)
    end)

    it("names an unknown min_version and an unknown verify_client", function()
        local r = check(string.format(
            '{ cert = %q, key = %q, min_version = "1.1", verify_client = "sometimes", ca = %q }',
            c.server.cert, c.server.key, c.ca.cert))
        assert.are_not.equal(0, r.code)
        assert.matches("sources[1].tls.min_version", r.stderr, 1, true)
        assert.matches("sources[1].tls.verify_client", r.stderr, 1, true)
    end)

    it("takes a good one", function()
        local r = check(string.format('{ cert = %q, key = %q, ca = %q }',
            c.server.cert, c.server.key, c.ca.cert))
        assert.equal(0, r.code, r.stderr)
    end)
end)
