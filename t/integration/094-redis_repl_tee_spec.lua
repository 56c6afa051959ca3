-- shotover repl in live mode runs the connection loop `shotover run` runs,
-- shadows included: an asynchronous tee's copy goes to the tee's backend,
-- once, and the main backend sees each request once.  With a waiting tee
-- in front of a router, the trace nests each side under the tee although
-- both wait for their backends at once, and says which reply the client
-- did not get.
local h = require("harness")

local function config(p_main, p_tee, listen)
    return string.format([[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "tee", wait = false,
      chain = { { "redis", name = "copy", remote = "127.0.0.1:%d" } } },
    { "redis", name = "main", remote = "127.0.0.1:%d" } } } } }
]], listen, p_tee, p_main)
end

describe("shotover repl with an asynchronous tee", function()
    local main, copy, conf

    setup(function()
        main, copy = h.redis_server(), h.redis_server()
        conf = h.write_file(h.tmpfile("conf") .. ".lua",
                            config(main.port, copy.port, h.free_port()))
    end)
    teardown(h.cleanup)

    it("sends each request once to the main backend and once to the tee's",
       function()
        -- the repl waits a little before quitting, so the shadow has run
        local r = h.shotover_cmd({ "repl", "-c", conf },
                                 { stdin = "INCR k\nINCR k\n"
                                           .. "lua os.execute('sleep 0.5')\n",
                                   timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches("redis[2] main (redis): answered :1\n=> :1\n",
                       r.stdout, 1, true)
        assert.matches("redis[2] main (redis): answered :2\n=> :2\n",
                       r.stdout, 1, true)
        assert.equal("2", h.cli(main.port, "get", "k"))
        h.wait_until(function()
            return h.cli(copy.port, "get", "k") == "2"
        end, 5, "the tee's backend to have k = 2")
    end)
end)

describe("shotover repl with a waiting tee in front of a router", function()
    local main, copy, conf

    setup(function()
        main, copy = h.redis_server(), h.redis_server()
        conf = h.write_file(h.tmpfile("conf") .. ".lua", string.format([[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "tee", chain = { { "redis", name = "copy", remote = "127.0.0.1:%d" } } },
    { "router",
      routes = { { match = { key_prefix = "user:" },
                   chain = { { "redis", name = "cache",
                               remote = "127.0.0.1:%d" } } } },
      default = { { "redis", name = "main",
                    remote = "127.0.0.1:%d" } } } } } } }
]], h.free_port(), copy.port, main.port, main.port))
    end)
    teardown(h.cleanup)

    it("shows the route that answered the client, the copy as not", function()
        local r = h.shotover_cmd({ "repl", "-c", conf },
                                 { stdin = "SET user:1 a\n", timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches("    redis/tee[1] copy (redis): answered +OK "
                       .. "(not the client's reply)\n"
                       .. "    redis[2] router: forwarded\n"
                       .. "      redis/route1[1] cache (redis): answered +OK\n"
                       .. "=> +OK\n", r.stdout, 1, true)
        assert.equal("a", h.cli(copy.port, "get", "user:1"))
    end)
end)
