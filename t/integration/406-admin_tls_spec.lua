-- The admin endpoint over HTTPS (admin.tls): curl with the test CA reads
-- metrics and health; plain HTTP on the port is refused and logged; with
-- admin.tls.ca only a client certificate of that CA gets in; a SIGHUP
-- serves the certificate the files hold now.
local h = require("harness")
local certs = require("certs")

local function curl(port, path, args)
    local argv = { "curl", "-s", "-w", "\n%{http_code}" }
    for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
    argv[#argv + 1] = string.format("https://127.0.0.1:%d%s", port, path)
    local r = h.run(argv, { timeout = 10 })
    local body, code = (r.stdout or ""):match("^(.*)\n(%d+)$")
    return tonumber(code), body, r
end

local function start(c, tls)
    local A = h.free_port()
    local env = h.start_pair({
        extra = string.format('admin = { listen = "127.0.0.1:%d", tls = %s },',
                              A, tls) })
    return env, A
end

describe("the admin endpoint over TLS", function()
    local c, env, A, cert_file

    setup(function()
        c = certs.make()
        -- a file of our own, replaced before the reload
        cert_file = h.tmpfile("admin-cert")
        h.write_file(cert_file, h.read_file(c.server.cert))
        env, A = start(c, string.format("{ cert = %q, key = %q }", cert_file,
                                        c.server.key))
    end)
    teardown(h.cleanup)

    it("serves metrics and health to a client that trusts its CA", function()
        local code, body = curl(A, "/metrics", { "--cacert", c.ca.cert })
        assert.equal(200, code)
        assert.matches("shotover_connections", body)
        code, body = curl(A, "/health", { "--cacert", c.ca.cert })
        assert.equal(200, code)
        assert.equal("ok\n", body)
    end)

    it("refuses plain HTTP on its port and says why in the log", function()
        local r = h.run({ "curl", "-s", "-m", "5",
                          string.format("http://127.0.0.1:%d/health", A) },
                        { timeout = 10 })
        assert.not_equal(0, r.code)
        assert.not_matches("^ok", r.stdout or "")
        h.wait_until(function()
            return env.proxy:log():find("admin endpoint: TLS handshake "
                                        .. "failed: [^\n]*http request") ~= nil
        end, 5, "the handshake failure in the log")
        -- and it serves on
        assert.equal(200, (curl(A, "/health", { "--cacert", c.ca.cert })))
    end)

    it("serves the certificate its file holds after a SIGHUP", function()
        local before = certs.served(A, "127.0.0.1")
        assert.equal(c.server.serial, before.serial)
        h.write_file(cert_file, h.read_file(c.server2.cert))
        -- server2 has its own key: the config names it
        local conf = h.read_file(env.proxy.config_path)
        local i, j = conf:find(c.server.key, 1, true)
        h.write_file(env.proxy.config_path,
                     conf:sub(1, i - 1) .. c.server2.key .. conf:sub(j + 1))
        assert.is_true(env.proxy.proc:kill(h.SIGHUP))
        h.wait_until(function()
            local now = certs.served(A, "127.0.0.1")
            return now ~= nil and now.serial == c.server2.serial
        end, 10, "the new certificate served")
        assert.equal(200, (curl(A, "/health", { "--cacert", c.ca.cert })))
    end)
end)

describe("the admin endpoint with client certificates", function()
    local c, A

    setup(function()
        c = certs.make()
        local _
        _, A = start(c, string.format("{ cert = %q, key = %q, ca = %q }",
                                      c.server.cert, c.server.key, c.ca.cert))
    end)
    teardown(h.cleanup)

    it("lets in a client certificate of its CA and no other", function()
        assert.equal(200, (curl(A, "/health", { "--cacert", c.ca.cert,
            "--cert", c.client.cert, "--key", c.client.key })))
        local code = curl(A, "/health", { "--cacert", c.ca.cert })
        assert.not_equal(200, code)
        code = curl(A, "/health", { "--cacert", c.ca.cert,
                                    "--cert", c.other.cert,
                                    "--key", c.other.key })
        assert.not_equal(200, code)
    end)
end)
