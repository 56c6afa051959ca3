-- `shotover check` and `shotover run` on bad configs: the exact lines they
-- print, with paths, and their exit codes.  `run` must say what is wrong
-- as `check` does (no Lua traceback) and exit non-zero.
local h = require("harness")

-- getaddrinfo's reason for a name under .invalid (RFC 6761: never resolves)
local REASON = "Name or service not known"
local NOTE = " (`run` starts anyway: requests to it fail until the name "
             .. "resolves)"

local function conf_file(text)
    return h.write_file(h.tmpfile("conf") .. ".lua", text)
end

-- a config of one Redis source whose chain is `chain` (Lua source text)
local function redis_conf(chain, o)
    o = o or {}
    return conf_file(string.format([[
return {
    %s
    sources = { { name = "r", protocol = "redis", listen = %q,
                  chain = { %s } } },
}]], o.top or "", o.listen or ("127.0.0.1:" .. h.free_port()), chain))
end

local function check(path)
    return h.shotover_cmd({ "check", "-c", path })
end

-- run a config that must not start: it exits by itself
local function run(path)
    return h.shotover_cmd({ "run", "-c", path }, { timeout = 20 })
end

-- check and run both refuse the config at path, with exactly `want`
local function both_refuse(path, want)
    for _, r in ipairs({ check(path), run(path) }) do
        assert.are.equal(1, r.code)
        assert.are.equal(want, r.stderr)
    end
end

describe("shotover check and run on bad configs", function()
    teardown(h.cleanup)

    it("check reports a remote that does not resolve; run starts anyway",
       function()
        local path = redis_conf([[{ "redis", remote = "nohost.invalid:6379" }]])
        local r = check(path)
        assert.are.equal(1, r.code)
        assert.are.equal("", r.stdout)
        assert.are.equal('sources[1].chain[1].remote: cannot resolve '
                         .. '"nohost.invalid": ' .. REASON .. NOTE .. "\n",
                         r.stderr)
        -- run keeps what docs/transforms/redis.md promises: it starts, and
        -- requests get the resolver's error
        local port = h.free_port()
        local s = h.shotover({ port = port, config = string.format([[
return { sources = { { name = "r", protocol = "redis", listen = "127.0.0.1:%d",
    chain = { { "redis", remote = "nohost.invalid:6379" } } } } }]], port)
        })
        local out = h.cli(port, "GET", "k")
        assert.matches('cannot resolve "nohost.invalid"', out, 1, true)
        s:stop()
    end)

    it("check and run report a listen address that does not resolve",
       function()
        local path = redis_conf([[{ "null" }]],
                                { listen = "nohost.invalid:16379" })
        local want = 'sources[1].listen: cannot resolve "nohost.invalid": '
                     .. REASON
        local r = check(path)
        assert.are.equal(1, r.code)
        assert.are.equal(want .. "\n", r.stderr)
        r = run(path)
        assert.are.equal(1, r.code)
        assert.are.equal(want .. "\n", r.stderr)
    end)

    it("check and run report an admin address that does not resolve",
       function()
        local path = redis_conf([[{ "null" }]], {
            top = 'admin = { listen = "nohost.invalid:9001" },' })
        local want = 'admin.listen: cannot resolve "nohost.invalid": '
                     .. REASON .. "\n"
        both_refuse(path, want)
    end)

    it("check and run list every problem of a router, not only the first",
       function()
        local path = redis_conf([[{ "router", routes = {
            { match = { key_pattern = "'a' [" }, chain = { { "null" } } },
            { match = { colour = "red" }, chain = { { "null" } } },
            { chain = { { "null" } } } },
          default = { { "null" } } }]])
        local want = table.concat({
            "sources[1].chain[1].routes[1].match.key_pattern: bad LPeg re "
            .. "pattern \"'a' [\": pattern error near '['",
            "sources[1].chain[1].routes[2].match.colour: unknown rule "
            .. "(command, key, key_prefix, key_pattern, kind, class, "
            .. "keyspace, table)",
            "sources[1].chain[1].routes[3]: give match = { ... } or when = "
            .. "function(msg, chain)",
        }, "\n") .. "\n"
        both_refuse(path, want)
    end)

    it("check and run refuse an unknown command and a rule of another "
       .. "protocol", function()
        local path = redis_conf([[{ "router", routes = {
            { match = { command = "GTE" }, chain = { { "null" } } },
            { match = { keyspace = "ks" }, chain = { { "null" } } } },
          default = { { "null" } } }]])
        local want = 'sources[1].chain[1].routes[1].match.command: unknown '
                     .. 'Redis command "GTE" (did you mean "GET"?)\n'
                     .. "sources[1].chain[1].routes[2].match.keyspace: a "
                     .. "cassandra rule, and this router's requests are "
                     .. "redis (its rules: command, key, key_prefix, "
                     .. "key_pattern)\n"
        both_refuse(path, want)
    end)

    it("run with JSON logs gives each problem as a JSON error line",
       function()
        local path = redis_conf([[{ "router", routes = {
            { match = { colour = "red" }, chain = { { "null" } } } },
          default = { { "null" } } }]], { listen = "nohost.invalid:1" })
        local r = h.shotover_cmd({ "run", "--log-format", "json", "-c",
                                   path })
        assert.are.equal(1, r.code)
        local lines = {}
        for line in r.stderr:gmatch("[^\n]+") do
            lines[#lines + 1] = line:gsub('^{"time":"[^"]+",', "{")
        end
        assert.are.same({
            '{"level":"error","msg":"sources[1].chain[1].routes[1].match.'
            .. 'colour: unknown rule (command, key, key_prefix, key_pattern, '
            .. 'kind, class, keyspace, table)"}',
            '{"level":"error","msg":"sources[1].listen: cannot resolve '
            .. '\\"nohost.invalid\\": ' .. REASON .. '"}',
        }, lines)
    end)

    it("run logs a failure to listen on one line, its traceback escaped",
       function()
        local port = h.free_port()
        local busy = h.occupy(port)
        local path = redis_conf([[{ "null" }]],
                                { listen = "127.0.0.1:" .. port })
        local r = run(path)
        assert.are.equal(1, r.code)
        local found = false
        for line in r.stderr:gmatch("[^\n]+") do
            -- every line is one log message
            assert.matches("^%d+%-%d+%-%d+T[%d:.]+Z %[%a+%] ", line)
            if line:find("cannot listen", 1, true) then
                found = true
                assert.matches("%[error%] worker 0: sources%[1%]%.listen: "
                               .. "cannot listen on 127%.0%.0%.1:" .. port
                               .. ": the address is already in use "
                               .. "%(.*%)%; stop it, or set share_listen = "
                               .. "true .*\\nstack traceback:\\n\\t", line)
            end
        end
        assert.is_true(found, r.stderr)
        -- JSON: one object per line, the line breaks escaped too
        r = h.shotover_cmd({ "run", "--log-format", "json", "-c", path })
        assert.are.equal(1, r.code)
        found = false
        for line in r.stderr:gmatch("[^\n]+") do
            assert.matches('^{"time":"[^"]+","level":"%a+","msg":".*"}$', line)
            found = found or line:find("on purpose\\u000astack",
                                       1, true) ~= nil
        end
        assert.is_true(found, r.stderr)
        busy.close()
    end)

    it("check passes a config whose hosts all resolve", function()
        local path = redis_conf([[{ "redis", remote = "localhost:6379" }]])
        local r = check(path)
        assert.are.equal(0, r.code)
        assert.are.equal(path .. ": ok\n", r.stdout)
        assert.are.equal("", r.stderr)
    end)
end)
