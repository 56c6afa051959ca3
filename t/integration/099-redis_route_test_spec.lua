-- shotover route-test and shotover repl as processes, on a Redis config
-- with a query_type_filter and a router: TAP and exit codes for a good and
-- a bad case file, the repl dry, and the repl live against real
-- redis-servers (the requests really reach them).
local h = require("harness")

local function config(p_main, p_cache, listen)
    return string.format([[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "query_type_filter", deny = { "other" } },
    { "router",
      routes = { { match = { key_prefix = "user:" },
                   chain = { { "redis", name = "cache",
                               remote = "127.0.0.1:%d" } } } },
      default = { { "redis", name = "main", remote = "127.0.0.1:%d" } } } } } } }
]], listen, p_cache, p_main)
end

describe("shotover route-test", function()
    local conf

    setup(function()
        -- ports nobody listens on: route-test never connects
        conf = h.write_file(h.tmpfile("conf") .. ".lua",
                            config(h.free_port(), h.free_port(), h.free_port()))
    end)
    teardown(h.cleanup)

    it("exits 0 with TAP when every case takes its expected path", function()
        local cases = h.write_file(h.tmpfile("cases") .. ".lua", [[
return { source = "redis", cases = {
  { "GET user:1", route = "route1", sink = "cache" },
  { "SET other 1", route = "default", sink = "main", reply = "+DRY" },
  { "DEBUG SLEEP 0", filtered = true, error = "not allowed" },
} }
]])
        local r = h.shotover_cmd({ "route-test", "-c", conf, cases })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal("1..3\nok 1 - GET user:1\nok 2 - SET other 1\n"
                     .. "ok 3 - DEBUG SLEEP 0\n", r.stdout)
    end)

    it("exits 1 and says expected and got for a case that differs",
       function()
        local cases = h.write_file(h.tmpfile("cases") .. ".lua", [[
return { cases = {
  { "GET user:1", sink = "cache" },
  { "GET session:1", sink = "cache" },
} }
]])
        local r = h.shotover_cmd({ "route-test", "-c", conf, cases })
        assert.equal(1, r.code, r.stdout .. r.stderr)
        assert.matches("ok 1 - GET user:1\nnot ok 2 - GET session:1\n"
                       .. '# sink: expected "cache", got "main"\n', r.stdout,
                       1, true)
        assert.matches("redis/default[1] main (redis, dry): answered +DRY",
                       r.stdout, 1, true)
    end)

    it("exits 2 on a case file with an unknown key", function()
        local cases = h.write_file(h.tmpfile("cases") .. ".lua",
            'return { cases = { { "GET k", snik = "main" } } }')
        local r = h.shotover_cmd({ "route-test", "-c", conf, cases })
        assert.equal(2, r.code)
        assert.matches('cases[1]: unknown key "snik"', r.stderr, 1, true)
    end)
end)

describe("shotover repl", function()
    local main, cache, conf

    setup(function()
        main, cache = h.redis_server(), h.redis_server()
        conf = h.write_file(h.tmpfile("conf") .. ".lua",
                            config(main.port, cache.port, h.free_port()))
    end)
    teardown(h.cleanup)

    it("shows the path and the dry reply with --dry, contacting nobody",
       function()
        local r = h.shotover_cmd({ "repl", "-c", conf, "--dry" },
                                 { stdin = "SET user:1 a\n= 1 + 1\n",
                                   timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches("redis/route1[1] cache (redis, dry): answered +DRY",
                       r.stdout, 1, true)
        assert.matches("\n=> +DRY\nredis> = 1 + 1\n2\n", r.stdout, 1, true)
        assert.equal("", h.cli(cache.port, "get", "user:1"))
    end)

    it("sends to the real backends live and shows their replies", function()
        local r = h.shotover_cmd({ "repl", "-c", conf },
                                 { stdin = "SET user:1 hello\nGET user:1\n"
                                           .. "SET plain x\nDEBUG SLEEP 0\n",
                                   timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches('redis/route1[1] cache (redis): answered "hello"\n'
                       .. '=> "hello"\n', r.stdout, 1, true)
        assert.matches("redis/default[1] main (redis): answered +OK",
                       r.stdout, 1, true)
        assert.matches("query_type_filter: answered -ERR", r.stdout, 1, true)
        assert.equal("hello", h.cli(cache.port, "get", "user:1"))
        assert.equal("x", h.cli(main.port, "get", "plain"))
        assert.equal("", h.cli(main.port, "get", "user:1"))
    end)
end)
