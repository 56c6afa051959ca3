-- sigv4: AWS's published Signature Version 4 test vectors
-- (t/fixtures/sigv4/, see its README): for each case the canonical
-- request, the string to sign and the Authorization header (so the
-- signature) must be the suite's byte for byte.
local sigv4 = require "shotover.keys.sigv4"

local DIR = (os.getenv("SHOTOVER_SRC") or ".") .. "/t/fixtures/sigv4/"
local CASES = {
    "get-vanilla",
    "post-vanilla",
    "get-vanilla-query-order-key-case",
    "get-header-value-trim",
    "post-x-www-form-urlencoded",
    "get-vanilla-with-session-token",
}

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

-- the suite's .req: "METHOD TARGET HTTP/1.1", "Name:value" lines, a blank
-- line, the body
local function parse_req(text)
    local head, body = text:match("^(.-)\n\n(.*)$")
    local lines = {}
    for l in (head .. "\n"):gmatch("(.-)\n") do
        lines[#lines + 1] = l
    end
    local method, target = lines[1]:match("^(%S+) (%S+) HTTP/1%.1$")
    local path, query = target:match("^([^?]*)%??(.*)$")
    local headers = {}
    for i = 2, #lines do
        local name, value = lines[i]:match("^([^:]+):(.*)$")
        headers[#headers + 1] = { name, value }
    end
    return { method = method, path = path, query = query,
             headers = headers, body = body }
end

local function sign(name)
    local r = parse_req(slurp(DIR .. name .. ".req"))
    r.region, r.service = "us-east-1", "service"
    r.access_key = "AKIDEXAMPLE"
    r.secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    r.amz_date = "20150830T123600Z"
    -- the suite gives a session token in the case's context, not the
    -- request: here NAME.token
    local f = io.open(DIR .. name .. ".token", "rb")
    if f then
        r.session_token = f:read("*a"):match("^token\n(.*)$")
        f:close()
    end
    return sigv4.sign(r)
end

describe("sigv4", function()
    for _, name in ipairs(CASES) do
        it("signs the suite's " .. name .. " as the suite does", function()
            local s = sign(name)
            assert.are.equal(slurp(DIR .. name .. ".creq"),
                             s.canonical_request)
            assert.are.equal(slurp(DIR .. name .. ".sts"), s.string_to_sign)
            assert.are.equal(slurp(DIR .. name .. ".authz"), s.authorization)
        end)
    end

    it("derives the signing key of AWS's documented example", function()
        -- the IAM user guide's example (secret, 20150830, us-east-1, iam)
        assert.are.equal(
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9",
            sigv4.hex(sigv4.signing_key(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830",
                "us-east-1", "iam")))
    end)

    it("signs a session token and sends what it signed", function()
        local s = sigv4.sign({
            method = "POST", path = "/", region = "us-east-1",
            service = "kms", access_key = "AKID", secret_key = "secret",
            session_token = "TOKEN", amz_date = "20150830T123600Z",
            headers = { { "Host", "kms.us-east-1.amazonaws.com" } },
            body = "{}",
        })
        assert.are.equal("host;x-amz-date;x-amz-security-token",
                         s.signed_headers)
        local sent = {}
        for _, h in ipairs(s.headers) do
            sent[h[1]] = h[2]
        end
        assert.are.equal("TOKEN", sent["X-Amz-Security-Token"])
        assert.are.equal("20150830T123600Z", sent["X-Amz-Date"])
        assert.are.equal(s.authorization, sent.Authorization)
    end)

    it("encodes query names and values as RFC 3986 wants", function()
        assert.are.equal("a=b%20c&a=b~&k%2Fx=%2A",
                         sigv4.canonical_query("k/x=*&a=b%20c&a=b~"))
    end)
end)
