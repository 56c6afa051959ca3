-- The admin endpoint's routes that change something (PUT /log-level, PUT
-- /switches/NAME) need the configured bearer token, and without one answer
-- loopback clients only; the read-only routes stay open.  Against a
-- running shotover, with curl.
local h = require("harness")

local TOKEN = "tok-Zq8w3N_e7v.Kp2~x+/y=="
local FILE_TOKEN = "file-token-4d2c9e1b7a6f0358"

-- curl: status code, body and headers of one request
local function curl(method, host, port, path, opts)
    opts = opts or {}
    local hdr = h.tmpfile("hdr")
    local argv = { "curl", "-s", "-X", method, "-D", hdr, "-w", "\n%{http_code}",
                   string.format("http://%s:%d%s", host, port, path) }
    if opts.body then
        table.insert(argv, 2, "--data")
        table.insert(argv, 3, opts.body)
    end
    for _, line in ipairs(opts.headers or {}) do
        table.insert(argv, 2, "-H")
        table.insert(argv, 3, line)
    end
    local r = h.run(argv, { timeout = 10 })
    local text, code = r.stdout:match("^(.*)\n(%d+)$")
    local headers = h.read_file(hdr) or ""
    os.remove(hdr)
    return tonumber(code), text, headers
end

-- a non-loopback address of this machine, or nil
local function outside_address()
    local r = h.run({ "hostname", "-I" }, { timeout = 5 })
    for a in (r.stdout or ""):gmatch("%S+") do
        if a:match("^%d+%.%d+%.%d+%.%d+$") and not a:match("^127%.") then
            return a
        end
    end
    return nil
end

local function start(admin)
    local A = h.free_port()
    local env = h.start_pair({
        extra = string.format('admin = { listen = "%s:%d", %s },',
                              admin.host or "127.0.0.1", A, admin.extra or ""),
        chain = [[{ "tee", name = "side", chain = { { "null" } } },
                  { "redis", remote = "%REMOTE%" }]] })
    return env, A
end

describe("the admin endpoint with a token", function()
    local env, A

    setup(function()
        env, A = start({ extra = string.format("token = %q", TOKEN) })
    end)
    teardown(h.cleanup)

    local function put_level(headers)
        return curl("PUT", "127.0.0.1", A, "/log-level",
                    { body = "debug", headers = headers })
    end

    it("refuses a PUT without the token: 401 and WWW-Authenticate", function()
        local code, body, hdr = put_level()
        assert.equal(401, code)
        assert.matches('WWW-Authenticate: Bearer realm="shotover"\r\n', hdr,
                       1, true)
        assert.matches("Bearer TOKEN", body, 1, true)
        local _
        code, _, hdr = curl("PUT", "127.0.0.1", A, "/switches/side.result_source",
                            { body = "tee" })
        assert.equal(401, code)
        assert.matches("WWW-Authenticate: Bearer", hdr, 1, true)
        -- another scheme is no token either
        code = put_level({ "Authorization: Basic " .. TOKEN })
        assert.equal(401, code)
    end)

    it("refuses a wrong token with error=\"invalid_token\", a prefix of the "
       .. "right one too", function()
        for _, wrong in ipairs({ "wrong-token-0123456789", TOKEN:sub(1, -2),
                                 TOKEN .. "x", "" }) do
            local code, _, hdr = put_level({ "Authorization: Bearer " .. wrong })
            assert.equal(401, code, wrong)
            if wrong ~= "" then
                assert.matches('error="invalid_token"', hdr, 1, true)
            end
        end
        -- two Authorization headers: a bad request
        local code = put_level({ "Authorization: Bearer " .. TOKEN,
                                 "Authorization: Bearer " .. TOKEN })
        assert.equal(400, code)
    end)

    it("takes the right token, the scheme in any case", function()
        local code, body = put_level({ "Authorization: Bearer " .. TOKEN })
        assert.equal(200, code)
        assert.equal("log level debug\n", body)
        code = curl("PUT", "127.0.0.1", A, "/log-level",
                    { body = "info", headers = { "Authorization: bEaReR  " .. TOKEN } })
        assert.equal(200, code)
        code, body = curl("PUT", "127.0.0.1", A, "/switches/side.result_source",
                          { body = "tee", headers = { "Authorization: Bearer " .. TOKEN } })
        assert.equal(200, code, body)
        local _, list = curl("GET", "127.0.0.1", A, "/switches")
        assert.matches("side.result_source tee", list, 1, true)
    end)

    it("keeps the read-only routes open", function()
        assert.equal(200, (curl("GET", "127.0.0.1", A, "/health")))
        assert.equal(200, (curl("GET", "127.0.0.1", A, "/ready")))
        assert.equal(200, (curl("GET", "127.0.0.1", A, "/metrics")))
        assert.equal(200, (curl("GET", "127.0.0.1", A, "/switches")))
    end)

    it("logs refusals without the token or what was sent", function()
        local log = env.proxy:log()
        assert.matches("admin: PUT /log-level from 127.0.0.1 refused: no "
                       .. "bearer token", log, 1, true)
        assert.matches("refused: wrong bearer token", log, 1, true)
        assert.is_nil(log:find(TOKEN, 1, true))
        assert.is_nil(log:find("wrong-token-0123456789", 1, true))
        assert.is_nil(log:find(TOKEN:sub(1, -2), 1, true))
    end)
end)

describe("the admin endpoint with a token file", function()
    teardown(h.cleanup)

    it("reads the token from the file, trailing newline and all", function()
        local path = h.write_file(h.tmpfile("token"), FILE_TOKEN .. "\n")
        local _, A = start({ extra = string.format("token_file = %q", path) })
        local code = curl("PUT", "127.0.0.1", A, "/log-level",
                          { body = "info", headers = { "Authorization: Bearer " .. FILE_TOKEN } })
        assert.equal(200, code)
        code = curl("PUT", "127.0.0.1", A, "/log-level", { body = "info" })
        assert.equal(401, code)
    end)

    it("reports token problems with their config path, never the token",
       function()
        local function check(admin)
            local conf = h.write_file(h.tmpfile("conf") .. ".lua", h.config({
                listen = h.free_port(), chain = '{ "null" }',
                extra = "admin = { " .. admin .. " }," }))
            local r = h.shotover_cmd({ "check", "-c", conf })
            assert.equal(1, r.code, r.stdout .. r.stderr)
            return r.stdout .. r.stderr
        end
        local out = check('token = "short-secret-1"')
        assert.matches("admin.token: a bearer token is 16 to 1024 characters",
                       out, 1, true)
        assert.is_nil(out:find("short-secret-1", 1, true))
        out = check('token = "has spaces in it, secret-2"')
        assert.matches("admin.token: a bearer token", out, 1, true)
        assert.is_nil(out:find("secret-2", 1, true))
        out = check("token = 12345678901234567890")
        assert.matches("admin.token: expected a string, got a number", out,
                       1, true)
        assert.is_nil(out:find("12345678901234567890", 1, true))
        out = check('token_file = "/nonexistent/token"')
        assert.matches("admin.token_file: cannot read it: /nonexistent/token",
                       out, 1, true)
        local bad = h.write_file(h.tmpfile("token"), "two words-secret-3\n")
        out = check(string.format("token_file = %q", bad))
        assert.matches("admin.token_file: " .. string.format("%q", bad)
                       .. " does not hold one token", out, 1, true)
        assert.is_nil(out:find("secret-3", 1, true))
        out = check(string.format('token = %q, token_file = %q', TOKEN, bad))
        assert.matches("admin.token_file: give admin.token or "
                       .. "admin.token_file, not both", out, 1, true)
        assert.is_nil(out:find(TOKEN, 1, true))
    end)
end)

describe("the admin endpoint without a token", function()
    local env, A, outside

    setup(function()
        outside = outside_address()
        env, A = start({ host = "0.0.0.0" })
    end)
    teardown(h.cleanup)

    it("takes PUTs from loopback clients, as before", function()
        local code, body = curl("PUT", "127.0.0.1", A, "/log-level",
                                { body = "info" })
        assert.equal(200, code, body)
        assert.matches("has no admin.token: PUT routes answer loopback "
                       .. "clients only", env.proxy:log(), 1, true)
    end)

    it("refuses PUTs from other addresses with 403, and serves their GETs",
       function()
        if not outside then
            pending("this machine has no non-loopback IPv4 address")
            return
        end
        local code, body = curl("PUT", outside, A, "/log-level",
                                { body = "debug" })
        assert.equal(403, code)
        assert.matches("loopback clients only", body, 1, true)
        code = curl("PUT", outside, A, "/switches/side.result_source",
                    { body = "tee" })
        assert.equal(403, code)
        assert.equal(200, (curl("GET", outside, A, "/health")))
        assert.equal(200, (curl("GET", outside, A, "/metrics")))
        assert.matches("refused: not a loopback client and no admin.token",
                       env.proxy:log(), 1, true)
    end)
end)
