-- TLS settings: what the config check says about them (every file is
-- loaded by OpenSSL at check time, so a bad one names its key), and the
-- kafka transform's librdkafka properties.
local config = require "shotover.config"
local tls = require "shotover.tls"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function sh(cmd)
    assert(os.execute("cd " .. dir .. " && " .. cmd .. " >/dev/null 2>&1"),
           cmd)
end

setup(function()
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key "
       .. "-out ca.pem -days 2 -subj /CN=unit-ca")
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key "
       .. "-out other.pem -days 2 -subj /CN=other")
end)

teardown(function()
    os.execute("rm -rf " .. dir)
end)

local function check(src_tls, sink_tls)
    local ok, errs = config.check({
        sources = { {
            name = "r", protocol = "redis", listen = "127.0.0.1:1",
            tls = src_tls,
            chain = { { "redis", remote = "127.0.0.1:2", tls = sink_tls } },
        } },
    })
    if ok then
        return {}
    end
    return errs
end

local function p(name)
    return dir .. "/" .. name
end

describe("tls settings", function()
    it("pass with a certificate and key, and for a sink with a CA",
       function()
        assert.same({}, check({ cert = p("ca.pem"), key = p("ca.key"),
                                ca = p("ca.pem") },
                              { ca = p("ca.pem") }))
    end)

    it("name the key and OpenSSL's reason when a file is refused",
       function()
        local errs = check({ cert = p("missing.pem"), key = p("ca.key") },
                           { ca = p("ca.key") })
        assert.equal(2, #errs)
        assert.matches('^sources%[1%]%.tls%.cert: cannot use ".-missing%.pem": '
                       .. '.*No such file', errs[1])
        assert.matches('^sources%[1%]%.chain%[1%]%.tls%.ca: cannot use '
                       .. '".-ca%.key"', errs[2])
    end)

    it("find a key that is not the certificate's", function()
        local errs = check({ cert = p("ca.pem"), key = p("other.key") })
        assert.equal(1, #errs)
        assert.matches("^sources%[1%]%.tls%.key: .*key values mismatch",
                       errs[1])
    end)

    it("check types, versions and pairs", function()
        local errs = check({ cert = p("ca.pem"), key = p("ca.key"),
                             min_version = "1.1", verify_client = "always",
                             ciphrs = "x" },
                           { cert = p("ca.pem") })
        table.sort(errs)
        assert.same({
            'sources[1].chain[1].tls.key: a client certificate needs both '
                .. 'cert and key',
            'sources[1].tls.ciphrs: unknown key',
            'sources[1].tls.min_version: expected one of "1.2", "1.3", '
                .. 'got "1.1"',
            'sources[1].tls.verify_client: expected one of "required", '
                .. '"optional", got "always"',
        }, errs)
        errs = check({ cert = p("ca.pem"), key = p("ca.key"),
                       verify_client = "optional" })
        assert.same({ "sources[1].tls.verify_client: needs ca (the CA "
                      .. "client certificates are checked against)" }, errs)
        errs = check({ cert = p("ca.pem") })
        assert.same({ "sources[1].tls.key: required" }, errs)
    end)

    it("give a cipher list OpenSSL does not know back as an error",
       function()
        local errs = check({ cert = p("ca.pem"), key = p("ca.key"),
                             ciphers = "NO-SUCH-CIPHER" })
        assert.equal(1, #errs)
        assert.matches("^sources%[1%]%.tls%.ciphers: ", errs[1])
    end)

    it("tell pools apart by the files' contents", function()
        local t = { ca = p("ca.pem") }
        local a = tls.identity(t)
        assert.equal(a, tls.identity({ ca = p("ca.pem") }))
        sh("cp other.pem ca2.pem")
        assert.not_equal(a, tls.identity({ ca = p("ca2.pem") }))
        sh("cp ca.pem ca2.pem")
        local b = tls.identity({ ca = p("ca2.pem") })
        sh("cp other.pem ca2.pem")
        assert.not_equal(b, tls.identity({ ca = p("ca2.pem") }))
    end)
end)

describe("kafka tls", function()
    it("becomes librdkafka's ssl properties", function()
        local props = tls.kafka_properties({ ca = "ca.pem", cert = "c.pem",
                                             key = "c.key" }, {})
        assert.same({
            ["security.protocol"] = "ssl",
            ["ssl.ca.location"] = "ca.pem",
            ["ssl.certificate.location"] = "c.pem",
            ["ssl.key.location"] = "c.key",
            ["ssl.endpoint.identification.algorithm"] = "https",
        }, props)
        props = tls.kafka_properties({ ca = "ca.pem", verify = false },
                                     { ["security.protocol"] = "sasl_ssl" })
        assert.equal("sasl_ssl", props["security.protocol"])
        assert.equal("false", props["enable.ssl.certificate.verification"])
    end)

    it("checks its keys and files with their paths", function()
        local errs = tls.check_kafka({ ca = p("nope.pem"), cert = "x",
                                       min_version = "1.3" }, "tls")
        table.sort(errs)
        assert.same({ 'tls.ca: cannot read "' .. p("nope.pem") .. '"',
                      'tls.cert: cannot read "x"',
                      "tls.min_version: unknown key" }, errs)
    end)
end)
