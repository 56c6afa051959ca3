-- shotover repl's own commands, live against a real redis-server: .reload
-- re-reads the config in place (its new chain answers, an invalid one is
-- refused and the old one stays); a mistyped dot-command is refused by the
-- repl and never reaches the backend; `=` pretty-prints Lua values.
local h = require("harness")

local function config(chain, listen)
    return string.format([[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:%d", chain = { %s } } } }
]], listen, chain)
end

describe("shotover repl commands", function()
    local main, conf, listen

    setup(function()
        main = h.redis_server()
        listen = h.free_port()
        conf = h.tmpfile("conf") .. ".lua"
    end)
    teardown(h.cleanup)

    before_each(function()
        h.write_file(conf, config(string.format(
            '{ "redis", name = "main", remote = "127.0.0.1:%d" }', main.port),
            listen))
    end)

    -- a repl line that writes the config file anew
    local function rewrite(text)
        text = text:gsub("\n", " ")
        return string.format("lua local f = io.open(%q, 'w') f:write(%q) "
                             .. "f:close()\n", conf, text)
    end

    it("reloads the config in place, live", function()
        local r = h.shotover_cmd({ "repl", "-c", conf }, { timeout = 30,
            stdin = "SET k v\n"
                .. rewrite(config('{ "debug_returner", simple = "NEW" }',
                                  listen))
                .. ".reload\nGET k\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("redis[1] main (redis): answered +OK", r.stdout, 1,
                       true)
        assert.matches("redis> .reload\nreloaded " .. conf .. ": 1 source, "
                       .. "current redis\n", r.stdout, 1, true)
        assert.matches("redis> GET k\n  redis[1] debug_returner: answered "
                       .. "+NEW\n", r.stdout, 1, true)
        assert.equal("v", h.cli(main.port, "get", "k"))
    end)

    it("keeps the config when the new one is invalid", function()
        local r = h.shotover_cmd({ "repl", "-c", conf }, { timeout = 30,
            stdin = rewrite(config('{ "nosuchtransform" }', listen))
                .. ".reload\nPING\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("redis> .reload\nerror: [^\n]*nosuchtransform",
                       r.stdout)
        assert.matches("(the config is unchanged)", r.stdout, 1, true)
        assert.matches("redis> PING\n  redis[1] main (redis): answered +PONG",
                       r.stdout, 1, true)
    end)

    it("reloads with --dry too", function()
        local r = h.shotover_cmd({ "repl", "-c", conf, "--dry" },
            { timeout = 30, stdin = "GET k\n"
                .. rewrite(config('{ "debug_returner", simple = "NEW" }',
                                  listen))
                .. ".reload\nGET k\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("main (redis, dry): answered +DRY", r.stdout, 1, true)
        assert.matches("debug_returner: answered +NEW", r.stdout, 1, true)
    end)

    it("refuses an unknown dot-command without sending it", function()
        h.cli(main.port, "config", "resetstat")
        local r = h.shotover_cmd({ "repl", "-c", conf }, { timeout = 30,
            stdin = ".relaod\n.quiet now\nPING\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches("redis> .relaod\nerror: unknown repl command .relaod "
                       .. "(.help lists them)\n", r.stdout, 1, true)
        assert.matches("error: unknown repl command .quiet", r.stdout, 1,
                       true)
        assert.matches("answered +PONG", r.stdout, 1, true)
        local stats = h.cli(main.port, "info", "commandstats")
        assert.is_nil(stats:find("relaod", 1, true))
        assert.matches("total_error_replies:0",
                       h.cli(main.port, "info", "stats"), 1, true)
    end)

    it("pretty-prints Lua values", function()
        local r = h.shotover_cmd({ "repl", "-c", conf, "--dry" },
            { timeout = 30, stdin = "= { 1, 'a', b = { c = true } }\n"
                                    .. "= source.name, nil, 3\n" })
        assert.equal(0, r.code, r.stderr)
        assert.matches('\n{ 1, "a", b = { c = true } }\n', r.stdout, 1, true)
        assert.matches('\n"redis"\tnil\t3\n', r.stdout, 1, true)
    end)
end)

-- Tab completion needs a terminal: the repl runs on a pseudo-terminal
-- (Python's pty), gets "PIN<Tab>" and Enter, ".rel<Tab>" and Enter.
describe("shotover repl on a terminal", function()
    teardown(h.cleanup)

    it("completes command names and dot-commands with Tab", function()
        local dir = h.tmpdir("home")
        local conf = h.write_file(dir .. "/conf.lua", [[
return { workers = 1, sources = { { name = "redis", protocol = "redis",
  listen = "127.0.0.1:1", chain = { { "redis", remote = "127.0.0.1:1" } } } } }
]])
        local py = [[
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.environ["HOME"] = sys.argv[3]
    os.execv(sys.argv[1], [sys.argv[1], "repl", "-c", sys.argv[2], "--dry"])
out = b""
def rd(t):
    global out
    end = time.time() + t
    while time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
rd(2)
for s in (b"PIN\t", b"\n", b".rel\t", b"\n", b".quit\n"):
    os.write(fd, s)
    rd(0.7)
sys.stdout.write(out.decode("utf-8", "replace"))
]]
        local r = h.run({ "python3", "-c", py, h.shotover_bin(), conf, dir },
                        { timeout = 30 })
        assert.equal(0, r.code, r.stderr)
        assert.matches('got ["PING"]', r.stdout, 1, true)
        assert.matches("reloaded " .. conf, r.stdout, 1, true)
    end)
end)
