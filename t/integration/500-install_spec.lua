-- `cmake --install` into a fresh prefix gives a shotover that runs from
-- there alone: the binary finds its modules beside itself
-- (bin/../share/shotover/lua), not in the source tree it was built from,
-- whatever the working directory, and serves with the installed config.
local h = require("harness")

-- the build directory the binary under test comes from
local function build_dir()
    local b = os.getenv("SHOTOVER_BUILD")
    if b and b ~= "" then return b end
    return (h.shotover_bin():gsub("/[^/]+$", ""))
end

describe("an installed shotover", function()
    local prefix, cwd, home, bin, etc

    -- argv running the installed binary from `cwd`, with nothing pointing
    -- at the source tree: no LUA_PATH, no SHOTOVER_LUA_PATH, an empty HOME
    local function installed(args)
        local argv = { "env", "-C", cwd, "-u", "LUA_PATH", "-u", "LUA_CPATH",
            "-u", "SHOTOVER_LUA_PATH", "-u", "SHOTOVER_LUA_CPATH",
            "HOME=" .. home, bin }
        for _, a in ipairs(args) do argv[#argv + 1] = a end
        return argv
    end

    setup(function()
        prefix = h.tmpdir("prefix")
        cwd = h.tmpdir("cwd")
        home = h.tmpdir("home")
        local r = h.run({ "cmake", "--install", build_dir(), "--prefix", prefix },
            { timeout = 60 })
        assert(r.code == 0, "cmake --install failed: " .. r.stdout .. r.stderr)
        bin = prefix .. "/bin/shotover"
        etc = prefix .. "/etc/shotover/shotover.lua"
    end)
    teardown(h.cleanup)

    it("has its binary, modules, default config, man page and systemd unit under the prefix", function()
        for _, f in ipairs({ bin, etc,
            prefix .. "/share/shotover/lua/shotover/config.lua",
            prefix .. "/share/shotover/lua/shotover/transforms/redis.lua",
            prefix .. "/share/shotover/lua/shotover/protocols/init.lua",
            prefix .. "/share/shotover/lua/shotover/cdef.lua",
            prefix .. "/share/man/man1/shotover.1",
            prefix .. "/lib/systemd/system/shotover.service" }) do
            assert.truthy(h.read_file(f), f .. " is not installed")
        end
    end)

    it("loads its modules from the prefix, and never from the source tree", function()
        local script = h.write_file(cwd .. "/where.lua", [[
            print(package.searchpath("shotover.config", package.path))
            print(package.path)
        ]])
        local r = h.run(installed({ "lua", script }))
        assert.equal(0, r.code, r.stderr)
        local found, path = r.stdout:match("^([^\n]*)\n([^\n]*)\n$")
        assert.equal(prefix .. "/share/shotover/lua/shotover/config.lua", found)
        local src = os.getenv("SHOTOVER_SRC") or "/nonexistent"
        assert.falsy(path:find(src, 1, true), "source tree on the path: " .. path)
        assert.falsy(path:find(build_dir(), 1, true), "build tree on the path: " .. path)
    end)

    it("has a systemd unit that systemd-analyze verifies, naming the installed files", function()
        local unit = prefix .. "/lib/systemd/system/shotover.service"
        local text = h.read_file(unit)
        assert.truthy(text:find("\nExecStart=" .. bin .. " run -c " .. etc .. "\n", 1, true), text)
        assert.truthy(text:find("\nType=notify\n", 1, true))
        for _, want in ipairs({ "DynamicUser=yes", "ProtectSystem=strict",
            "NoNewPrivileges=yes", "LimitNOFILE=" }) do
            assert.truthy(text:find("\n" .. want, 1, true), "the unit lacks " .. want)
        end
        -- verify also runs `man shotover(1)` for Documentation=: the
        -- installed page, through MANPATH
        local r = h.run({ "env", "MANPATH=" .. prefix .. "/share/man",
            "systemd-analyze", "verify", unit })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal("", r.stdout .. r.stderr)
    end)

    it("checks the installed config", function()
        local r = h.run(installed({ "check", "-c", etc }))
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal(etc .. ": ok\n", r.stdout)
    end)

    it("serves a GET with the installed config pointed at a real redis-server", function()
        local redis = h.redis_server()
        assert.equal("OK", redis:cli("set", "installed", "yes"))
        local port = h.free_port()
        -- the installed config, on free ports and one worker
        local text = h.read_file(etc)
        local n1, n2, n3
        text, n1 = text:gsub("127%.0%.0%.1:6379", "127.0.0.1:" .. port)
        text, n2 = text:gsub("127%.0%.0%.1:6380", "127.0.0.1:" .. redis.port)
        text, n3 = text:gsub('workers = "auto"', "workers = 1")
        assert.same({ 1, 1, 1 }, { n1, n2, n3 }, "the default config changed shape")
        local conf = h.write_file(cwd .. "/shotover.lua", text)
        local log = cwd .. "/shotover.log"
        local p = h.spawn(installed({ "run", "-c", conf }),
            { stdout = log, stderr = "stdout" })
        h.wait_until(function()
            assert(p:alive(), "shotover exited: " .. (h.read_file(log) or ""))
            local out, code = h.cli(port, "get", "installed", { timeout = 2 })
            return code == 0 and out == "yes", out
        end, 15, "the installed shotover to serve GET")
        local st = p:stop(5)
        assert.equal(0, st.code, h.read_file(log))
    end)
end)
