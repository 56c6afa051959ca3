-- shotover repl in live mode with a subscriber: a published message is
-- shown as pushed, and every command still gets its own reply and trace
-- (the repl once read one reply per command, so one push shifted every
-- later command's reply and trace by one).
local h = require("harness")

local function config(p_main, listen)
    return string.format([[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:%d", chain = {
    { "redis", name = "main", remote = "127.0.0.1:%d" } } } } }
]], listen, p_main)
end

describe("shotover repl with a subscriber", function()
    local main, conf, publish

    setup(function()
        main = h.redis_server()
        conf = h.write_file(h.tmpfile("conf") .. ".lua",
                            config(main.port, h.free_port()))
        -- a repl line that publishes from another client, then lets the
        -- message reach the repl's connection
        publish = string.format("lua os.execute('redis-cli -p %d publish ch "
                                .. "hello >/dev/null; sleep 0.3')\n",
                                main.port)
    end)
    teardown(h.cleanup)

    it("shows a published message as pushed and each command's own reply",
       function()
        local r = h.shotover_cmd({ "repl", "-c", conf },
                                 { stdin = "SUBSCRIBE ch\n" .. publish
                                           .. "PING\nPING x\n",
                                   timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches('got ["SUBSCRIBE", "ch"]\n=> ["subscribe", "ch", :1]\n',
                       r.stdout, 1, true)
        assert.matches('redis> PING\n<- pushed ["message", "ch", "hello"]\n'
                       .. '  redis[1] main (redis): answered (no reply)\n'
                       .. '      got ["PING"]\n=> ["pong", ""]\n',
                       r.stdout, 1, true)
        assert.matches('redis> PING x\n'
                       .. '  redis[1] main (redis): answered (no reply)\n'
                       .. '      got ["PING", "x"]\n=> ["pong", "x"]\n',
                       r.stdout, 1, true)
    end)

    it("shows a RESP3 push as pushed, apart from the next reply", function()
        local r = h.shotover_cmd({ "repl", "-c", conf },
                                 { stdin = "HELLO 3\nSUBSCRIBE ch\n" .. publish
                                           .. "PING\n",
                                   timeout = 20 })
        assert.equal(0, r.code, r.stderr)
        assert.matches('redis> PING\n<- pushed >["message", "ch", "hello"]\n',
                       r.stdout, 1, true)
        assert.matches('got ["PING"]\n=> +PONG\n', r.stdout, 1, true)
    end)
end)
