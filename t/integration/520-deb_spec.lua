-- The Debian package (CPack, `./dev package`) of the binary under test:
-- dpkg installs it with its declared dependencies, it lays shotover out
-- under /usr with the config in /etc/shotover, /usr/bin/shotover serves a
-- GET from a real redis-server with nothing but what the package put
-- there, and dpkg removes it all again.  Needs root (CI and ./dev test run
-- as root); it refuses to touch a shotover package it did not install.
local h = require("harness")

local function build_dir()
    local b = os.getenv("SHOTOVER_BUILD")
    if b and b ~= "" then return b end
    return (h.shotover_bin():gsub("/[^/]+$", ""))
end

local function installed()
    local r = h.run({ "dpkg-query", "-W", "-f=${Status}", "shotover" })
    return r.stdout:find("install ok installed", 1, true) ~= nil
end

local FILES = {
    "/usr/bin/shotover",
    "/etc/shotover/shotover.lua",
    "/usr/share/shotover/lua/shotover/config.lua",
    "/usr/share/shotover/lua/shotover/cdef.lua",
    "/usr/share/man/man1/shotover.1",
    "/usr/lib/systemd/system/shotover.service",
}

describe("the Debian package", function()
    local deb, cwd

    -- the installed binary, from a fresh directory, with no Lua path set
    local function usr_bin(args)
        local argv = { "env", "-C", cwd, "-u", "LUA_PATH", "-u", "LUA_CPATH",
            "-u", "SHOTOVER_LUA_PATH", "-u", "SHOTOVER_LUA_CPATH",
            "HOME=" .. cwd, "/usr/bin/shotover" }
        for _, a in ipairs(args) do argv[#argv + 1] = a end
        return argv
    end

    setup(function()
        local r = h.run({ "id", "-u" })
        assert(h.chomp(r.stdout) == "0", "this spec installs a package: it needs root")
        assert(not installed(), "a shotover package is installed already: "
            .. "not touching it (dpkg -r shotover first)")
        cwd = h.tmpdir("cwd")
        local out = h.tmpdir("deb")
        r = h.run({ "env", "-C", build_dir(), "cpack", "-G", "DEB", "-B", out },
            { timeout = 300 })
        assert(r.code == 0, "cpack failed: " .. r.stdout .. r.stderr)
        deb = h.chomp(h.run({ "sh", "-c", "ls " .. out .. "/shotover_*.deb" }).stdout)
        assert(deb:find("%.deb$"), "no package in " .. out)
        -- removed even when a test fails
        h.defer(function() h.run({ "dpkg", "-P", "shotover" }, { timeout = 120 }) end)
    end)
    teardown(h.cleanup)

    it("declares the libraries the binary links", function()
        local r = h.run({ "dpkg-deb", "-f", deb, "Depends" })
        assert.equal(0, r.code, r.stderr)
        for _, lib in ipairs({ "libc6", "libuv1", "libluajit", "liblz4-1",
            "libsnappy1v5", "zlib1g", "libhttp-parser2.9" }) do
            assert.truthy(r.stdout:find(lib, 1, true), "no " .. lib .. " in " .. r.stdout)
        end
        r = h.run({ "dpkg-deb", "-I", deb, "conffiles" })
        assert.equal("/etc/shotover/shotover.lua\n", r.stdout)
    end)

    it("installs with dpkg -i, under /usr with the config in /etc/shotover", function()
        local r = h.run({ "dpkg", "-i", deb }, { timeout = 120 })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        for _, f in ipairs(FILES) do
            assert.truthy(h.read_file(f), f .. " is not installed")
        end
        local unit = h.read_file("/usr/lib/systemd/system/shotover.service")
        assert.truthy(unit:find("\nExecStart=/usr/bin/shotover run -c /etc/shotover/shotover.lua\n",
            1, true), unit)
        r = h.run({ "systemd-analyze", "verify", "/usr/lib/systemd/system/shotover.service" })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.equal("", r.stdout .. r.stderr)
        r = h.run({ "man", "-w", "shotover" })
        assert.equal("/usr/share/man/man1/shotover.1\n", r.stdout)
    end)

    it("checks its config and serves a GET from a real redis-server", function()
        local r = h.run(usr_bin({ "check", "-c", "/etc/shotover/shotover.lua" }))
        assert.equal(0, r.code, r.stdout .. r.stderr)
        local redis = h.redis_server()
        assert.equal("OK", redis:cli("set", "packaged", "yes"))
        local port = h.free_port()
        local text = h.read_file("/etc/shotover/shotover.lua")
            :gsub("127%.0%.0%.1:6379", "127.0.0.1:" .. port)
            :gsub("127%.0%.0%.1:6380", "127.0.0.1:" .. redis.port)
            :gsub('workers = "auto"', "workers = 1")
        local conf = h.write_file(cwd .. "/shotover.lua", text)
        local log = cwd .. "/shotover.log"
        local p = h.spawn(usr_bin({ "run", "-c", conf }), { stdout = log, stderr = "stdout" })
        h.wait_until(function()
            assert(p:alive(), "shotover exited: " .. (h.read_file(log) or ""))
            local out, code = h.cli(port, "get", "packaged", { timeout = 2 })
            return code == 0 and out == "yes", out
        end, 15, "/usr/bin/shotover to serve GET")
        local st = p:stop(5)
        assert.equal(0, st.code, h.read_file(log))
    end)

    it("is removed with everything it installed by dpkg -P", function()
        local r = h.run({ "dpkg", "-P", "shotover" }, { timeout = 120 })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.is_false(installed())
        for _, f in ipairs(FILES) do
            assert.is_nil(h.read_file(f), f .. " is still there")
        end
    end)
end)
