-- t/lib/kms.lua -- the KMS stand-in (t/lib/kms_standin.py) for specs: a
-- certificate for 127.0.0.1 made with openssl, the stand-in started on a
-- free loopback port, stopped by h.cleanup.  No real KMS is reachable from
-- the test machines; the stand-in checks SigV4 signatures and implements
-- GenerateDataKey and Decrypt (see its header).
local h = require "harness"

local _M = {}

_M.ACCESS_KEY = "AKIDSHOTOVERTEST"
_M.SECRET = "shotover/test+secret/KEY"
_M.REGION = "eu-west-1"
_M.KEY1 = "arn:aws:kms:eu-west-1:111122223333:key/"
          .. "1234abcd-12ab-34cd-56ef-1234567890ab"
_M.KEY2 = "arn:aws:kms:eu-west-1:111122223333:key/"
          .. "0987dcba-09fe-87dc-65ba-ab0987654321"

-- A self-signed certificate (its own CA) for 127.0.0.1: cert, key paths.
function _M.cert(name)
    local dir = h.tmpdir(name or "kms-cert")
    local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    local r = h.run({ "openssl", "req", "-x509", "-newkey", "ec",
                      "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-subj", "/CN=shotover kms stand-in", "-days", "2",
                      "-addext", "subjectAltName=IP:127.0.0.1",
                      "-keyout", key, "-out", cert })
    assert(r.code == 0, "openssl req: " .. r.stderr)
    return cert, key
end

-- Start a stand-in: o.delay_ms, o.session_token, o.cert/o.key (default a
-- new certificate).  Returns { port, ca (its certificate), endpoint,
-- proc, log (its stderr: a "received TARGET" line per request) }, once it
-- listens.
function _M.start(o)
    o = o or {}
    local cert, key = o.cert, o.key
    if not cert then
        cert, key = _M.cert()
    end
    local out = h.tmpfile("kms-standin.out")
    local src = os.getenv("SHOTOVER_SRC") or "."
    local argv = { "python3", src .. "/t/lib/kms_standin.py",
                   "--cert", cert, "--key", key,
                   "--access-key", _M.ACCESS_KEY, "--secret", _M.SECRET,
                   "--region", _M.REGION,
                   "--key-id", _M.KEY1, "--key-id", _M.KEY2,
                   "--alias", "shotover=" .. _M.KEY1,
                   "--delay-ms", tostring(o.delay_ms or 0) }
    if o.session_token then
        argv[#argv + 1] = "--session-token"
        argv[#argv + 1] = o.session_token
    end
    local proc = h.spawn(argv, { stdout = out, stderr = out .. ".err" })
    local port
    h.wait_until(function()
        if not proc:alive() then
            error("kms_standin exited: " .. (h.read_file(out .. ".err")
                                              or ""), 0)
        end
        port = tonumber(((h.read_file(out) or ""):match("PORT (%d+)")))
        return port ~= nil
    end, 10, "the KMS stand-in to listen")
    return { port = port, ca = cert, proc = proc, log = out .. ".err",
             endpoint = "https://127.0.0.1:" .. port }
end

return _M
