-- TLS on Cassandra sources and sinks: a real Cassandra 5.0 node with
-- client encryption on (its native port speaks only TLS), the DataStax
-- Python driver with an SSL context through a TLS cassandra source and
-- shotover's cassandra sink speaking TLS to the node; a client certificate
-- (mTLS) and its subject in the audit trail; a driver that does not trust
-- shotover's CA refused (logged, counted) while another driver is served;
-- a sink that does not trust the node's CA answering with an error that
-- names the sink and the reason.  (cqlsh is not used: it ships only in
-- Cassandra's binary tarball, which these tests do not fetch, and Debian
-- does not package it.)
local h = require("harness")
local cassandra = require("cassandra")
local certs = require("certs")

local function errors_metric(A, label)
    return h.metric(A, "shotover_tls_handshake_errors_total{" .. label .. "}") or 0
end

describe("cassandra through TLS sources and TLS sinks", function()
    local c, node, s, A, P, PM, PW, audit_file

    setup(function()
        c = certs.make()
        node = cassandra.start{ tls = { cert = c.server.cert, key = c.server.key,
                                        ca = c.ca.cert } }
        node:python([[
c, s = connect(ssl_context=tls_context(ARGS[0]))
s.execute("CREATE KEYSPACE tls WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE tls.t (k text PRIMARY KEY, v text, b blob)")
]], { args = { c.ca.cert } })
        A, P, PM, PW = h.free_port(), h.free_port(), h.free_port(), h.free_port()
        audit_file = h.tmpdir("audit") .. "/audit.jsonl"
        local sink = string.format('{ "cassandra", remote = "127.0.0.1:%d", '
                                   .. 'tls = { ca = %q } }', node.port, c.ca.cert)
        s = h.shotover({ config = string.format([[
return {
  workers = 2,
  admin = { listen = "127.0.0.1:%d" },
  sources = {
    { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q },
      chain = { %s } },
    { name = "cql-mtls", protocol = "cassandra", listen = "127.0.0.1:%d",
      tls = { cert = %q, key = %q, ca = %q },
      chain = { { "audit", file = %q }, %s } },
    { name = "wrongca", protocol = "cassandra", listen = "127.0.0.1:%d",
      chain = { { "cassandra", name = "wrongca", remote = "127.0.0.1:%d",
                  tls = { ca = %q } } } },
  },
}]], A, P, c.server.cert, c.server.key, sink,
            PM, c.server.cert, c.server.key, c.ca.cert, audit_file, sink,
            PW, node.port, c.other_ca.cert) })
        for _, port in ipairs({ P, PM, PW }) do
            h.wait_until(function()
                if not s:alive() then
                    error("shotover exited; log:\n" .. s:log(), 0)
                end
                local conn = h.try_connect(port, 1)
                if conn then conn:close() end
                return conn ~= nil
            end, 15, "shotover to listen on " .. port)
        end
    end)
    teardown(h.cleanup)

    it("serves the driver with an SSL context: queries, prepared statements, 1 MB blobs", function()
        local out = cassandra.python([[
c, s = connect(ssl_context=tls_context(ARGS[0]))
print("version", s.execute("SELECT release_version FROM system.local").one()[0])
s.execute("INSERT INTO tls.t (k, v) VALUES ('a', 'over tls')")
print("read", s.execute("SELECT v FROM tls.t WHERE k = 'a'").one().v)
ins = s.prepare("INSERT INTO tls.t (k, v, b) VALUES (?, ?, ?)")
big = bytes((i * 7 + i // 251) % 256 for i in range(1024 * 1024))
s.execute(ins, ("big", "blob", big))
got = s.execute("SELECT b FROM tls.t WHERE k = 'big'").one().b
print("big", len(got), got == big)
for f in [s.execute_async(ins, ("row%d" % i, "v%d" % i, b"x" * (i * 50)))
          for i in range(300)]:
    f.result()
futs = [s.execute_async("SELECT v, b FROM tls.t WHERE k = %s", ("row%d" % i,))
        for i in range(300)]
bad = 0
for i, f in enumerate(futs):
    r = f.result().one()
    if r is None or r.v != "v%d" % i or len(r.b or b"") != i * 50:
        bad += 1
print("rows bad", bad)
]], { port = P, args = { c.ca.cert }, timeout = 120 })
        assert.matches("version " .. node.version, out, 1, true)
        assert.matches("read over tls", out, 1, true)
        assert.matches("big 1048576 True", out, 1, true)
        assert.matches("rows bad 0", out, 1, true)
        -- what the node holds, read straight from it
        local direct = node:python([[
c, s = connect(ssl_context=tls_context(ARGS[0]))
print("direct", s.execute("SELECT v FROM tls.t WHERE k = 'a'").one().v)
]], { args = { c.ca.cert } })
        assert.matches("direct over tls", direct, 1, true)
        -- shotover presents its own certificate, not the node's
        local served = assert(certs.served(P))
        assert.equal(c.server.serial, served.serial)
    end)

    it("refuses a driver that does not trust its CA, logs and counts it, and serves others", function()
        local before = errors_metric(A, 'source="cql"')
        certs.logged_failure(s, "cql", function()
            local out = cassandra.python([[
good_c, good = connect(ssl_context=tls_context(ARGS[0]))
good.execute("INSERT INTO tls.t (k, v) VALUES ('before', 'ok')")
try:
    connect(ssl_context=tls_context(ARGS[1]))
    print("wrong CA connected")
except Exception as e:
    print("wrong CA refused", "CERTIFICATE_VERIFY_FAILED" in str(e))
print("still", good.execute("SELECT v FROM tls.t WHERE k = 'before'").one().v)
]], { port = P, args = { c.ca.cert, c.other_ca.cert }, timeout = 120 })
            assert.matches("wrong CA refused True", out, 1, true)
            assert.matches("still ok", out, 1, true)
        end)
        h.wait_until(function()
            return errors_metric(A, 'source="cql"') >= before + 1
        end, 10, "the handshake error metric")
        assert.is_true(s:alive())
    end)

    it("takes a client certificate and audits its subject; refuses a driver without one", function()
        local before = errors_metric(A, 'source="cql-mtls"')
        local why = certs.logged_failure(s, "cql-mtls", function()
            local out = cassandra.python([[
c, s = connect(ssl_context=tls_context(ARGS[0], ARGS[1], ARGS[2]))
s.execute("INSERT INTO tls.t (k, v) VALUES ('mtls', 'with cert')")
print("mtls", s.execute("SELECT v FROM tls.t WHERE k = 'mtls'").one().v)
try:
    connect(ssl_context=tls_context(ARGS[0]))
    print("no cert connected")
except Exception as e:
    print("no cert refused")
print("still", s.execute("SELECT v FROM tls.t WHERE k = 'mtls'").one().v)
]], { port = PM, args = { c.ca.cert, c.client.cert, c.client.key }, timeout = 120 })
            assert.matches("mtls with cert", out, 1, true)
            assert.matches("no cert refused", out, 1, true)
            assert.matches("still with cert", out, 1, true)
        end)
        assert.matches("peer did not return a certificate", why, 1, true)
        local line
        h.wait_until(function()
            for l in (h.read_file(audit_file) or ""):gmatch("[^\n]+") do
                if l:find("INSERT INTO tls.t", 1, true) then line = l end
            end
            return line
        end, 10, "the audit line of the INSERT")
        assert.matches('"tls_subject":"CN=app1,O=shotover-test"', line, 1, true)
        assert.matches('"source":"cql-mtls"', line, 1, true)
        h.wait_until(function()
            return errors_metric(A, 'source="cql-mtls"') >= before + 1
        end, 10, "the handshake error metric")
    end)

    it("answers an error naming the sink when the node's CA is not the one given", function()
        local before = errors_metric(A, 'sink="wrongca"')
        -- raw CQL: the STARTUP's own answer
        local conn = cassandra.connect(PW, { no_startup = true })
        local r = conn:request(cassandra.op.STARTUP,
                               cassandra.string_map({ CQL_VERSION = "3.0.0" }))
        assert.equal(cassandra.op.ERROR, r.opcode, tostring(r.opname))
        assert.is_true(r.code == 0x1001 or r.code == 0x0000,
                       string.format("error code 0x%04x", r.code))
        assert.matches('sink "wrongca"', r.message, 1, true)
        assert.matches("certificate verify failed", r.message, 1, true)
        -- the driver gets it too
        local out = cassandra.python([[
try:
    c, s = connect()
    print("connected through a sink that cannot verify")
except Exception as e:
    errs = getattr(e, "errors", {}) or {}
    print("refused", " | ".join(str(v) for v in errs.values()) or str(e))
]], { port = PW, timeout = 60 })
        assert.matches("refused", out, 1, true)
        assert.matches('sink "wrongca"', out, 1, true)
        h.wait_until(function()
            for l in s:log():gmatch("[^\n]+") do
                if l:find("wrongca", 1, true)
                   and l:find("certificate verify failed", 1, true) then
                    return true
                end
            end
        end, 10, "the log to say why the sink failed")
        h.wait_until(function()
            return errors_metric(A, 'sink="wrongca"') >= before + 1
        end, 10, "the sink's handshake error metric")
        -- the other sources are unaffected
        local ok = cassandra.python([[
c, s = connect(ssl_context=tls_context(ARGS[0]))
print("ok", s.execute("SELECT v FROM tls.t WHERE k = 'a'").one().v)
]], { port = P, args = { c.ca.cert } })
        assert.matches("ok over tls", ok, 1, true)
    end)
end)
