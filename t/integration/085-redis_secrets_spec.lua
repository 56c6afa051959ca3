-- Secrets never reach a log, nor any other text shotover prints: every
-- credential form of both protocols goes through every printing path --
-- debug_printer, tees that log mismatches (one to a second redis-server
-- whose answers differ, one to a debug_returner, so every request
-- mismatches), a tee that fails on mismatch, a chain element that raises
-- with the request in its message, the debug log level, the repl's traces
-- (live and dry), route-test's output -- and the password of the redis
-- sink's own backend comes back through CONFIG GET.  Each output must hold
-- the marker and none of the secrets.
local h = require("harness")
local cassandra = require("cassandra")

local MARK = "<redacted>"
local SINK_PW = "sinkpw-backend-5d1c"          -- requirepass of both redis
local MAIN_MA = "masterauth-main-77e0"
local TEE_MA = "masterauth-tee-31bb"

-- every client-sent secret, by the request carrying it
local REDIS_FORMS = {
    { "AUTH", "cli-auth-a1f0" },
    { "AUTH", "default", "cli-auth-b2e1" },
    { "HELLO", "2", "AUTH", "default", "cli-hello-c3d2" },
    { "MIGRATE", "127.0.0.1", "1", "", "0", "100", "AUTH", "cli-mig-d4c3",
      "KEYS", "sec:nokey" },
    { "MIGRATE", "127.0.0.1", "1", "", "0", "100", "AUTH2", "u",
      "cli-mig2-e5b4", "KEYS", "sec:nokey" },
    { "CONFIG", "SET", "tls-key-file-pass", "cli-tls-f6a5" },
    { "CONFIG", "SET", "requirepass", SINK_PW },      -- unchanged, but sent
    { "ACL", "SETUSER", "secuser", "on", ">cli-acl-0796", "~*", "+@all" },
    { "ACL", "SETUSER", "secuser", "#cli-bad-hash-1887" },   -- error echo
    { "ACL", "DRYRUN", "secuser", "AUTH", "cli-dry-2978" },
    { "SENTINEL", "SET", "m", "auth-pass", "cli-sent-3a69" }, -- echoed by
                                                -- redis' unknown command
    { "CONFIG", "GET", "requirepass" },
    { "CONFIG", "GET", "masterauth" },
    { "CONFIG", "GET", "*" },
    { "ACL", "GETUSER", "secuser" },
    { "ACL", "LIST" },
    { "CONFIG", "SET", "masterauth", "cli-ma-4b5a" },  -- last: both alike
}
local RAISE = { "AUTH", "boom", "cli-raise-5c4b" }   -- the inline raises
local INLINE = "AUTH cli-inline-6d3c\r\n"

local CQL_SECRETS = { "cqlpw-auth-7e2d", "cqlpw-q1-8f1e", "cqlpw-q2-901f",
                      "cqlpw-v-a210", "cqlpw-ex-b301" }

local function secrets(extra)
    local t = { SINK_PW, MAIN_MA, TEE_MA, "cli-inline-6d3c" }
    for _, f in ipairs(REDIS_FORMS) do
        local last = f[#f]
        if last:find("^cli%-") or last:find("^#cli%-") then
            t[#t + 1] = last:gsub("^[>#]", "")
        end
    end
    for _, f in ipairs(REDIS_FORMS) do
        for _, a in ipairs(f) do
            if a:find("^>cli") then t[#t + 1] = a:sub(2) end
            if a:find("^cli%-") then t[#t + 1] = a end
        end
    end
    t[#t + 1] = RAISE[3]
    for _, s in ipairs(CQL_SECRETS) do t[#t + 1] = s end
    for _, s in ipairs(extra or {}) do t[#t + 1] = s end
    return t
end

local function assert_clean(what, text, extra)
    for _, s in ipairs(secrets(extra)) do
        local at = text:find(s, 1, true)
        assert.is_nil(at, string.format("%s shows secret %q: ...%s...", what,
            s, at and text:sub(math.max(1, at - 120), at + 40) or ""))
    end
    assert.is_truthy(text:find(MARK, 1, true), what .. " shows no " .. MARK)
end

local function config(p, main, tee)
    local function redis(port, extra)
        return string.format('{ "redis", remote = "127.0.0.1:%d", password = %q%s }',
                             port, SINK_PW, extra or "")
    end
    return string.format([[
local function raiser(batch, chain)
    for i = 1, batch.n do
        local m = batch[i]
        if m.proto == 1 and m:command() == "AUTH" and m:arg(2) == "boom" then
            error("cannot take " .. table.concat(m:args(), " "))
        end
    end
    return chain:next(batch)
end
return { workers = 1, sources = {
  { name = "redis", protocol = "redis", listen = "127.0.0.1:%d", chain = {
      { "debug_printer" },
      raiser,
      { "tee", name = "real", behavior = "log_mismatch", chain = { %s } },
      { "tee", name = "fake", behavior = "log_mismatch",
        chain = { { "debug_returner", simple = "DIFFERENT" } } },
      %s } },
  { name = "failing", protocol = "redis", listen = "127.0.0.1:%d", chain = {
      { "tee", name = "strict", behavior = "fail_on_mismatch",
        chain = { %s } },
      %s } },
  { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d", chain = {
      { "debug_printer" },
      { "tee", name = "cqltee", behavior = "log_mismatch",
        chain = { { "debug_returner", error = "different" } } },
      { "debug_returner", null = true } } },
} }
]], p.redis, redis(tee, ', name = "tee_sink"'), redis(main), p.failing,
        redis(tee, ', name = "strict_sink"'), redis(main), p.cql)
end

describe("secrets in what shotover prints", function()
    local main, tee, proxy, conf, P, acl_hash

    setup(function()
        main = h.redis_server({ args = { "--requirepass", SINK_PW,
                                         "--masterauth", MAIN_MA } })
        tee = h.redis_server({ args = { "--requirepass", SINK_PW,
                                        "--masterauth", TEE_MA } })
        P = { redis = h.free_port(), failing = h.free_port(),
              cql = h.free_port() }
        local text = config(P, main.port, tee.port)
        conf = h.write_file(h.tmpfile("conf") .. ".lua", text)
        proxy = h.shotover({ config = text, port = P.redis,
                             args = { "--log-level", "debug" } })
        proxy:wait_ready(P.failing)
    end)
    teardown(h.cleanup)

    it("keeps them out of the log: debug_printer, tee mismatches, a raising "
       .. "element, at debug level", function()
        local c = h.connect(P.redis)
        for _, f in ipairs(REDIS_FORMS) do
            c:cmd(unpack(f))
        end
        -- the element's error goes back to the client, scrubbed too
        local r = c:cmd(unpack(RAISE))
        assert.is_table(r)
        assert.matches("cannot take AUTH boom " .. MARK, r.err, 1, true)
        c:send(INLINE)
        c:read_reply(5)
        assert.equal("PONG", c:cmd("PING").status)
        -- the ACL hash of the password set above, as redis stores it
        acl_hash = h.cli(main.port, "acl", "getuser", "secuser",
                         { pre = { "--no-auth-warning", "-a", SINK_PW } })
                   :match(("%x"):rep(64))
        assert.is_string(acl_hash)
        proxy:wait_log('replies differ for ["CONFIG", "GET", "masterauth"]', 5)
        proxy:wait_log('["AUTH", "default", "' .. MARK .. '"]', 5)
        local log = proxy:log()
        -- every path wrote: debug_printer, both tees, the raising element
        assert.matches("debug_printer: reply", log, 1, true)
        assert.matches('tee "real": replies differ', log, 1, true)
        assert.matches('tee "fake": replies differ', log, 1, true)
        assert.matches("element 2 (inline function) failed", log, 1, true)
        assert.matches('["requirepass", "' .. MARK .. '"]', log, 1, true)
        -- error replies echoing the request's secret
        assert.matches("'auth-pass' '" .. MARK .. "'", log, 1, true)
        assert.matches("modifier '" .. MARK .. "'", log, 1, true)
        assert_clean("the log", log, { acl_hash })
    end)

    it("keeps them out of a tee's fail_on_mismatch error", function()
        local c = h.connect(P.failing)
        -- the two servers' ports differ
        local r = c:cmd("CONFIG", "GET", "port", "requirepass", "masterauth")
        assert.is_table(r)
        assert.is_string(r.err)
        assert.matches('the replies differ (main [', r.err, 1, true)
        assert.matches('"requirepass", "' .. MARK .. '"', r.err, 1, true)
        assert.matches('"masterauth", "' .. MARK .. '"', r.err, 1, true)
        assert_clean("the error reply", r.err)
    end)

    it("keeps them out of CQL logs: AUTH_RESPONSE, PASSWORD literals, bound "
       .. "values", function()
        local cq = cassandra.connect(P.cql, { no_startup = true })
        local M = cassandra
        cq:request(M.op.STARTUP, M.string_map({ CQL_VERSION = "3.0.0" }))
        cq:request(M.op.AUTH_RESPONSE,
                   M.bytes("\0cassandra\0" .. CQL_SECRETS[1]))
        cq:query("CREATE ROLE r1 WITH PASSWORD = '" .. CQL_SECRETS[2]
                 .. "' AND LOGIN = true", { may_fail = true })
        cq:request(M.op.PREPARE, M.long_string(
            "ALTER USER u WITH PASSWORD '" .. CQL_SECRETS[3] .. "'"))
        cq:execute("never-prepared-id", { CQL_SECRETS[5] })
        proxy:wait_log("ALTER USER u WITH PASSWORD '" .. MARK .. "'", 5)
        proxy:wait_log("EXECUTE stream", 5)
        proxy:wait_log('tee "cqltee": replies differ', 5)
        assert_clean("the log", proxy:log(), { acl_hash })
    end)

    it("keeps them out of the repl's output, live and dry", function()
        local lines = {}
        for _, f in ipairs(REDIS_FORMS) do
            local q = {}
            for k, a in ipairs(f) do
                q[k] = a == "" and '""' or a
            end
            lines[#lines + 1] = table.concat(q, " ")
        end
        lines[#lines + 1] = table.concat(RAISE, " ")
        local stdin = table.concat(lines, "\n") .. "\n.source cql\n"
            .. "CREATE ROLE r WITH PASSWORD = '" .. CQL_SECRETS[2] .. "'\n"
            .. "ALTER ROLE r WITH PASSWORD = ? -- values: '"
            .. CQL_SECRETS[4] .. "'\n"
        local r = h.run({ "env", "SHOTOVER_REPL_LOG=1", h.shotover_bin(),
                          "repl", "-c", conf }, { stdin = stdin, timeout = 60 })
        assert.equal(0, r.code, r.stderr)
        assert.matches('redis[1] debug_printer: forwarded',
                       r.stdout, 1, true)
        assert.matches('["requirepass", "' .. MARK .. '"]', r.stdout, 1, true)
        assert_clean("the live repl's output", r.stdout .. r.stderr,
                     { acl_hash })
        local d = h.run({ h.shotover_bin(), "repl", "--dry", "-c", conf },
                        { stdin = stdin, timeout = 60 })
        assert.equal(0, d.code, d.stderr)
        assert.matches("[" .. MARK .. "]", d.stdout, 1, true)
        assert_clean("the dry repl's output", d.stdout .. d.stderr)
    end)

    it("keeps them out of route-test's output", function()
        local cases = { "return { cases = {" }
        for _, f in ipairs(REDIS_FORMS) do
            local q = {}
            for k, a in ipairs(f) do q[k] = string.format("%q", a) end
            cases[#cases + 1] = "  { redis = { " .. table.concat(q, ", ")
                                .. " }, source = \"redis\", path = {} },"
        end
        cases[#cases + 1] = string.format(
            "  { redis = \"AUTH %s\", source = \"redis\" },", "cli-auth-a1f0")
        cases[#cases + 1] = string.format(
            "  { cql = \"CREATE ROLE r WITH PASSWORD = '%s'\", "
            .. "source = \"cql\", sent = \"x\" },", CQL_SECRETS[2])
        cases[#cases + 1] = string.format(
            "  { cql = \"ALTER ROLE r WITH PASSWORD = ?\", values = { %q }, "
            .. "source = \"cql\" },", CQL_SECRETS[4])
        cases[#cases + 1] = "} }"
        local path = h.write_file(h.tmpfile("cases") .. ".lua",
                                  table.concat(cases, "\n"))
        local r = h.shotover_cmd({ "route-test", "-v", "-c", conf, path },
                                 { timeout = 60 })
        assert.equal(1, r.code, r.stdout .. r.stderr)   -- path = {} fails
        assert.matches("AUTH " .. MARK, r.stdout, 1, true)
        assert_clean("route-test's output", r.stdout .. r.stderr)
    end)

    it("is still running", function()
        assert.is_true(proxy:alive(), proxy.proc:describe())
    end)
end)
