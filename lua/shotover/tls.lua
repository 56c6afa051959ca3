-- TLS settings of sources and sinks: their schemas, their checks (which
-- load the files, so a bad certificate is a config error naming its key),
-- and the C contexts made from them (c/sh_tls.c).  See docs/tls.md.
local ffi = require "ffi"
local base = require "shotover.ffi"
local schema = require "shotover.schema"

local C = base.C
local fmt = string.format
local open = io.open
local concat = table.concat
local ipairs, type, tostring = ipairs, type, tostring

local _M = { _VERSION = "0.1.0" }

local VERSIONS = { "1.2", "1.3" }

local common = {
    cert = { type = "string",
        doc = "Certificate file (PEM; its chain after it)." },
    key = { type = "string",
        doc = "Private key file of cert (PEM, unencrypted)." },
    min_version = { type = "enum", values = VERSIONS, default = "1.2",
        doc = "Oldest protocol version accepted: `\"1.2\"` or `\"1.3\"`." },
    ciphers = { type = "string",
        doc = "TLS 1.2 cipher list, OpenSSL syntax (default: OpenSSL's)." },
    ciphersuites = { type = "string",
        doc = "TLS 1.3 cipher suites, OpenSSL syntax (default: "
              .. "OpenSSL's)." },
}

local function with(extra)
    local t = {}
    for k, v in pairs(common) do t[k] = v end
    for k, v in pairs(extra) do t[k] = v end
    return t
end

-- a source's `tls`
_M.source_schema = with({
    cert = { type = "string", required = true, doc = common.cert.doc },
    key = { type = "string", required = true, doc = common.key.doc },
    ca = { type = "string",
        doc = "CA file (PEM): clients must show a certificate it signed "
              .. "(mTLS); its subject is the connection's `tls_subject`." },
    verify_client = { type = "enum", values = { "required", "optional" },
        doc = "With `ca`: whether a client without a certificate is "
              .. "refused (`\"required\"`, the default) or let in without "
              .. "a subject." },
})

-- a sink's `tls`
_M.sink_schema = with({
    ca = { type = "string",
        doc = "CA file (PEM) the server's certificate must chain to "
              .. "(default: the system's store)." },
    server_name = { type = "string",
        doc = "The name checked in the server's certificate and sent as "
              .. "SNI (default: the host it connects to, a name or an "
              .. "address)." },
    verify = { type = "boolean", default = true,
        doc = "Check the server's certificate and name; false is for "
              .. "tests only (logged as a warning)." },
})

local err_buf = ffi.new("char[512]")
local ctx_out = ffi.new("sh_tls_ctx_t *[1]")

-- The C context of settings t (checked), a source's (server) or a sink's;
-- nil, "key: why" when OpenSSL refuses them.
local function make(t, server)
    local verify
    if server then
        verify = t.ca and (t.verify_client == "optional" and 1 or 2) or 0
    else
        verify = t.verify == false and 0 or 1
    end
    local conf = ffi.new("sh_tls_conf_t", {
        server = server and 1 or 0, verify = verify,
        cert = t.cert, key = t.key, ca = t.ca,
        min_version = t.min_version or "1.2",
        ciphers = t.ciphers, ciphersuites = t.ciphersuites,
        server_name = t.server_name,
    })
    if C.sh_ffi_tls_ctx_new(conf, ctx_out, err_buf, 512) ~= 0 then
        return nil, ffi.string(err_buf)
    end
    return ffi.gc(ctx_out[0], C.sh_ffi_tls_ctx_unref)
end

-- Check `tls` settings t (prefix: "tls" or "sources[1].tls"); returns a
-- list of "prefix.key: why" (empty when they are good), loading every
-- file so that a certificate OpenSSL refuses is found at load time.
function _M.check(t, prefix, server)
    local errs = {}
    if type(t) ~= "table" then
        return { fmt("%s: expected a table, got %s", prefix, schema.show(t)) }
    end
    schema.check(t, server and _M.source_schema or _M.sink_schema, prefix,
                 errs)
    if #errs == 0 then
        if server and t.verify_client and not t.ca then
            errs[1] = prefix .. ".verify_client: needs ca (the CA client "
                      .. "certificates are checked against)"
        elseif not server and (t.cert == nil) ~= (t.key == nil) then
            errs[1] = prefix .. (t.cert and ".key" or ".cert")
                      .. ": a client certificate needs both cert and key"
        else
            local ok, e = make(t, server)
            if not ok then
                errs[1] = prefix .. "." .. e
            end
        end
    end
    return errs
end

-- A sink's check_config tail: true, or nil and the list of problems of
-- its `tls` (keys relative to the element).
function _M.check_sink(conf)
    if conf.tls == nil then
        return true
    end
    local errs = _M.check(conf.tls, "tls", false)
    if #errs > 0 then
        return nil, errs
    end
    return true
end

-- A kafka transform's `tls`: librdkafka does its own TLS, so its keys
-- are the ones librdkafka has (ca, cert, key, verify, ciphers).
_M.kafka_schema = {
    ca = _M.sink_schema.ca, cert = common.cert, key = common.key,
    verify = _M.sink_schema.verify, ciphers = common.ciphers,
}

function _M.check_kafka(t, prefix)
    local errs = {}
    if type(t) ~= "table" then
        return { fmt("%s: expected a table, got %s", prefix, schema.show(t)) }
    end
    schema.check(t, _M.kafka_schema, prefix, errs)
    if #errs == 0 and (t.cert == nil) ~= (t.key == nil) then
        errs[1] = prefix .. (t.cert and ".key" or ".cert")
                  .. ": a client certificate needs both cert and key"
    end
    for _, k in ipairs({ "ca", "cert", "key" }) do
        local f = type(t[k]) == "string" and open(t[k], "rb")
        if f then
            f:close()
        elseif type(t[k]) == "string" then
            errs[#errs + 1] = fmt("%s.%s: cannot read \"%s\"", prefix, k,
                                  t[k])
        end
    end
    return errs
end

-- Checked kafka `tls` t as librdkafka properties, added to props (a
-- security.protocol of the config's own, e.g. sasl_ssl, stays).
function _M.kafka_properties(t, props)
    if t == nil then
        return props
    end
    props["security.protocol"] = props["security.protocol"] or "ssl"
    props["ssl.ca.location"] = t.ca
    props["ssl.certificate.location"] = t.cert
    props["ssl.key.location"] = t.key
    props["ssl.cipher.suites"] = t.ciphers
    if t.verify == false then
        props["enable.ssl.certificate.verification"] = "false"
        props["ssl.endpoint.identification.algorithm"] = "none"
    else
        props["ssl.endpoint.identification.algorithm"] = "https"
    end
    return props
end

-- The context of checked settings t: made once per settings table (a
-- configuration's), shared by every pool and listener made from them.
local made = setmetatable({}, { __mode = "k" })

function _M.context(t, server, who)
    if t == nil then
        return nil
    end
    local ctx = made[t]
    if ctx == nil then
        local e
        ctx, e = make(t, server)
        if ctx == nil then
            error("tls." .. e, 0)
        end
        made[t] = ctx
        if not server and t.verify == false then
            require("shotover.log").warn("sink %q: tls.verify is false: "
                .. "its server's certificate is not checked",
                tostring(who or "?"))
        end
    end
    return ctx
end

-- A source-side context of checked settings t handed over to C as a
-- number (the admin endpoint's: the main thread's C code owns its one
-- reference), or nil without t.
function _M.handover(t)
    if t == nil then
        return nil
    end
    local ctx = assert(make(t, true))
    return tonumber(ffi.cast("uintptr_t", ffi.gc(ctx, nil)))
end

-- What tells settings t apart for a pool: the settings and the files'
-- contents, so a reload after new certificates were written to the same
-- paths makes new connections with them.
function _M.identity(t)
    if t == nil then
        return ""
    end
    local parts = {}
    for _, k in ipairs({ "ca", "cert", "key", "server_name", "min_version",
                         "ciphers", "ciphersuites" }) do
        local v = t[k]
        if v ~= nil then
            parts[#parts + 1] = k .. "=" .. tostring(v)
            if k == "ca" or k == "cert" or k == "key" then
                local f = open(v, "rb")
                if f then
                    parts[#parts + 1] = f:read("*a")
                    f:close()
                end
            end
        end
    end
    parts[#parts + 1] = "verify=" .. tostring(t.verify)
    return concat(parts, "\0")
end

return _M
