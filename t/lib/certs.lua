-- t/lib/certs.lua -- certificates for the TLS specs and the TLS benchmark,
-- made with the openssl command line (Debian's OpenSSL 3.0) into a temp dir
-- of the harness: nothing is checked in, nothing outlives the spec.
--
--   local certs = require("certs")
--   local c = certs.make()          -- or certs.make(dir)
--   c.ca.cert                       -- the test CA (PEM)
--   c.server.cert, c.server.key     -- signed by it: SAN IP:127.0.0.1,
--                                   -- IP:127.0.0.2, IP:127.0.0.3, DNS:localhost
--   c.server.pem                    -- key + cert in one file (HAProxy's crt)
--   c.client.cert, c.client.key     -- CN=app1,O=shotover-test (clientAuth)
--   c.client2 ...                   -- CN=app2,O=shotover-test
--   c.node                          -- server and client use (both EKUs),
--                                   -- the server SANs: a Redis Cluster
--                                   -- node, whose bus always checks the
--                                   -- peer's certificate as a client's
--   c.server2                       -- another server cert from the same CA
--                                   -- (same SANs, another serial: a reload)
--   c.expired_server, c.expired_client   -- valid 2020-01-01 .. 2020-02-01
--   c.other_ca.cert                 -- an unrelated CA
--   c.other.cert, c.other.key       -- signed by other_ca, CN=intruder,
--                                   -- O=elsewhere: server and client use,
--                                   -- the server SANs (a "wrong CA" either way)
-- Every entry: cert, key, pem (key then cert), subject (RFC 2253, as
-- shotover reports it), serial (hex, upper case, as openssl prints it).
-- Keys are ECDSA P-256 in PKCS#8 PEM (what Java's PEM reader, Cassandra's
-- PEMBasedSslContextFactory, takes as well as OpenSSL); P-256, not RSA: an
-- RSA key takes a noticeable fraction of a second to make, and a spec
-- file makes a dozen.
--
-- certs.serial(path), certs.fingerprint(path) (SHA-256, "AB:CD:..."),
-- certs.subject(path) (RFC 2253): what openssl reads from a PEM cert.
-- certs.served(port, host, opts): the certificate a TLS server on
-- host:port presents (openssl s_client), as { serial, fingerprint,
-- subject } or nil and the s_client output.

local h = require("harness")

local M = {}

local function openssl(args, what, opts)
    local argv = { "openssl" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local r = h.run(argv, opts or { timeout = 60 })
    if r.code ~= 0 or r.timed_out then
        error(string.format("openssl %s (%s) failed (%s):\n%s%s", args[1],
            what or "", tostring(r.code), r.stderr, r.stdout), 3)
    end
    return r.stdout
end

local CA_CONF = [[
[ ca ]
default_ca = the_ca

[ the_ca ]
dir = %s
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
preserve = yes
unique_subject = no
copy_extensions = none
default_days = 3650
email_in_dn = no

[ policy_any ]
organizationName = optional
commonName = supplied

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, DNS:localhost

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth

[ both_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, DNS:localhost
]]

local function new_key(path)
    openssl({ "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", path }, path)
    return path
end

-- a self-signed CA in dir/NAME: { dir, cert, key, conf }
local function new_ca(dir, name, subj)
    local d = dir .. "/" .. name
    h.run({ "mkdir", "-p", d .. "/newcerts" })
    h.write_file(d .. "/index.txt", "")
    -- a random first serial: two runs never serve the same serial
    local hex = {}
    for i = 1, 8 do hex[i] = string.format("%02X", math.random(0, 255)) end
    hex[1] = string.format("%02X", math.random(16, 127))
    h.write_file(d .. "/serial", table.concat(hex) .. "\n")
    local ca = { dir = d, key = new_key(d .. "/ca.key"), cert = d .. "/ca.pem",
                 conf = h.write_file(d .. "/ca.cnf", CA_CONF:format(d)) }
    openssl({ "req", "-x509", "-new", "-key", ca.key, "-out", ca.cert,
              "-days", "3650", "-subj", subj, "-sha256",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign" }, name)
    return ca
end

-- a key and a cert signed by ca: { cert, key, pem, subject, serial }.
-- opts.ext: server_ext / client_ext / both_ext; opts.startdate/enddate
-- (YYYYMMDDHHMMSSZ) for certificates valid at another time
local function issue(ca, dir, name, subj, opts)
    local e = { key = new_key(dir .. "/" .. name .. ".key"),
                cert = dir .. "/" .. name .. ".pem" }
    local csr = dir .. "/" .. name .. ".csr"
    openssl({ "req", "-new", "-key", e.key, "-out", csr, "-subj", subj }, name)
    local args = { "ca", "-batch", "-notext", "-config", ca.conf,
                   "-cert", ca.cert, "-keyfile", ca.key, "-in", csr,
                   "-out", e.cert, "-extfile", ca.conf,
                   "-extensions", opts.ext }
    if opts.startdate then
        args[#args + 1] = "-startdate"; args[#args + 1] = opts.startdate
        args[#args + 1] = "-enddate"; args[#args + 1] = opts.enddate
    end
    openssl(args, name)
    os.remove(csr)
    e.pem = h.write_file(dir .. "/" .. name .. "-combined.pem",
        h.read_file(e.key) .. h.read_file(e.cert))
    e.subject = M.subject(e.cert)
    e.serial = M.serial(e.cert)
    return e
end

function M.subject(path)
    local out = openssl({ "x509", "-in", path, "-noout", "-subject",
                          "-nameopt", "RFC2253" }, path)
    return (out:match("^subject=%s*(.-)%s*$"))
end

function M.serial(path)
    return (openssl({ "x509", "-in", path, "-noout", "-serial" }, path)
        :match("^serial=(%x+)"))
end

function M.fingerprint(path)
    return (openssl({ "x509", "-in", path, "-noout", "-fingerprint", "-sha256" }, path)
        :match("Fingerprint=([%x:]+)"))
end

-- make(dir): every certificate above in dir (default a new harness temp
-- dir)
function M.make(dir)
    dir = dir or h.tmpdir("certs")
    math.randomseed(os.time() + h.now() * 1000)
    local c = { dir = dir }
    c.ca = new_ca(dir, "ca", "/O=shotover-test/CN=shotover test CA")
    c.server = issue(c.ca, dir, "server", "/O=shotover-test/CN=localhost",
                     { ext = "server_ext" })
    c.node = issue(c.ca, dir, "node", "/O=shotover-test/CN=redis-node",
                   { ext = "both_ext" })
    c.server2 = issue(c.ca, dir, "server2", "/O=shotover-test/CN=localhost",
                      { ext = "server_ext" })
    c.client = issue(c.ca, dir, "client", "/O=shotover-test/CN=app1",
                     { ext = "client_ext" })
    c.client2 = issue(c.ca, dir, "client2", "/O=shotover-test/CN=app2",
                      { ext = "client_ext" })
    local past = { startdate = "20200101000000Z", enddate = "20200201000000Z" }
    c.expired_server = issue(c.ca, dir, "expired-server",
        "/O=shotover-test/CN=localhost",
        { ext = "server_ext", startdate = past.startdate, enddate = past.enddate })
    c.expired_client = issue(c.ca, dir, "expired-client",
        "/O=shotover-test/CN=expired",
        { ext = "client_ext", startdate = past.startdate, enddate = past.enddate })
    c.other_ca = new_ca(dir, "other-ca", "/O=elsewhere/CN=unrelated CA")
    c.other = issue(c.other_ca, dir, "other", "/O=elsewhere/CN=intruder",
                    { ext = "both_ext" })
    return c
end

-- the certificate served on host:port (TLS; opts.servername: SNI,
-- opts.cert/key: a client certificate to present)
function M.served(port, host, opts)
    opts = opts or {}
    local argv = { "openssl", "s_client", "-connect",
                   (host or "127.0.0.1") .. ":" .. port, "-showcerts" }
    if opts.servername then
        argv[#argv + 1] = "-servername"; argv[#argv + 1] = opts.servername
    end
    if opts.cert then
        argv[#argv + 1] = "-cert"; argv[#argv + 1] = opts.cert
        argv[#argv + 1] = "-key"; argv[#argv + 1] = opts.key
    end
    local r = h.run(argv, { stdin = "", timeout = 10 })
    local pem = r.stdout:match("(%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-"
                               .. "%-%-%-%-%-END CERTIFICATE%-%-%-%-%-)")
    if not pem then return nil, r.stdout .. r.stderr end
    local path = h.write_file(h.tmpfile("served") .. ".pem", pem .. "\n")
    local info = { serial = M.serial(path), fingerprint = M.fingerprint(path),
                   subject = M.subject(path) }
    os.remove(path)
    return info
end

-- The handshake failures shotover logged for source `name` (a client on
-- 127.0.0.1, any port): OpenSSL's reason of each line, in order.
function M.handshake_failures(s, name)
    local out = {}
    local pat = 'source "' .. name:gsub("%p", "%%%0") .. '": TLS handshake with '
                .. '127%.0%.0%.1:%d+ failed: (.+)$'
    for l in s:log():gmatch("[^\n]+") do
        local why = l:match(pat)
        if why then out[#out + 1] = why end
    end
    return out
end

-- Failed handshakes are logged at most once a second (the next line
-- counts the ones held back), while the metric counts each: run `attempt`
-- (a client whose handshake fails) until a line for it appears, at most
-- 4 times; returns OpenSSL's reason in that line.
function M.logged_failure(s, name, attempt)
    local n = #M.handshake_failures(s, name)
    for _ = 1, 4 do
        attempt()
        local ok, why = pcall(h.wait_until, function()
            return M.handshake_failures(s, name)[n + 1]
        end, 2, "a handshake failure line")
        if ok then return why end
    end
    error("no handshake failure of source " .. name .. " logged after 4 tries", 2)
end

return M
