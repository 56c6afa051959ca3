-- LuaRocks: the shotover rockspec installs with `luarocks make`, and a
-- third-party transform shipped as its own rock (examples/transform,
-- shotover-transform-key_prefix) is found the ways docs/install.md says --
-- from a --tree DIR named in SHOTOVER_LUA_PATH or in LUA_PATH (`luarocks
-- path`), and from the user's tree (--local) with no setting at all -- and
-- acts on real traffic to a real redis-server.
local h = require("harness")

local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC is not set")
local EXAMPLE = src .. "/examples/transform"
local ROCKSPEC = "shotover-transform-key_prefix-0.1.0-1.rockspec"

-- luarocks ARGS... run in `dir` with HOME = home: the result of h.run
local function luarocks(dir, home, args)
    local argv = { "env", "-C", dir, "HOME=" .. home, "luarocks", "--lua-version=5.1" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return h.run(argv, { timeout = 120 })
end

local function lua_path(tree)
    return tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua"
end

describe("LuaRocks", function()
    local redis, home

    setup(function()
        redis = h.redis_server()
        home = h.tmpdir("home")
    end)
    teardown(h.cleanup)

    -- a shotover in front of redis with chain key_prefix(prefix) -> redis,
    -- its environment set by `env` (a list of VAR=VALUE or -u VAR); checks
    -- that a SET through it lands on the prefixed key
    local function prefixes_keys(env, prefix)
        local port = h.free_port()
        local wrap = { "env" }
        for _, e in ipairs(env) do wrap[#wrap + 1] = e end
        h.shotover({
            config = h.config({ listen = port, remote = redis.port, chain = string.format(
                '{ "key_prefix", prefix = %q }, { "redis", remote = "%%REMOTE%%" }', prefix) }),
            port = port, wrap = wrap })
        assert.equal("OK", h.cli(port, "set", "k", "v"))
        assert.equal("v", h.cli(port, "get", "k"))
        assert.equal("v", redis:cli("get", prefix .. "k"))
        assert.equal("", redis:cli("get", "k"))
    end

    it("installs the shotover rockspec with luarocks make, every module listed", function()
        local tree = h.tmpdir("tree-shotover")
        local r = luarocks(src, home, { "--tree", tree, "make",
            "rockspec/shotover-0.1.0-1.rockspec" })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        local listed = h.run({ "sh", "-c", "cd " .. src .. "/lua && find . -name '*.lua' | sort" }).stdout
        local n = 0
        for f in listed:gmatch("%./([^\n]+)") do
            n = n + 1
            assert.truthy(h.read_file(tree .. "/share/lua/5.1/" .. f), f .. " not installed")
        end
        assert.is_true(n > 20)
        r = luarocks(src, home, { "--tree", tree, "list", "--porcelain" })
        assert.truthy(r.stdout:find("^shotover\t0%.1%.0%-1\tinstalled"), r.stdout)
    end)

    it("lists every module of the example transform in its rockspec", function()
        local text = h.read_file(EXAMPLE .. "/" .. ROCKSPEC)
        local files = h.run({ "sh", "-c", "cd " .. EXAMPLE .. " && find lua -name '*.lua' | sort" }).stdout
        for f in files:gmatch("[^\n]+") do
            local mod = f:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/", ".")
            assert.truthy(text:find(string.format('["%s"] =\n            "%s"', mod, f), 1, true)
                or text:find(string.format('["%s"] = "%s"', mod, f), 1, true),
                f .. " is not in " .. ROCKSPEC)
        end
    end)

    describe("a transform rock in a --tree", function()
        local tree

        setup(function()
            tree = h.tmpdir("tree")
            local r = luarocks(EXAMPLE, home, { "--tree", tree, "make", ROCKSPEC })
            assert(r.code == 0, "luarocks make failed: " .. r.stdout .. r.stderr)
        end)

        it("is unknown to shotover while its tree is not on the path", function()
            local conf = h.write_file(h.tmpfile("conf") .. ".lua", h.config({ listen = h.free_port(),
                chain = '{ "key_prefix", prefix = "x:" }, { "null" }' }))
            local r = h.run({ "env", "HOME=" .. home, h.shotover_bin(), "check", "-c", conf })
            assert.equal(1, r.code, r.stdout .. r.stderr)
            assert.truthy(r.stderr:find('unknown transform "key_prefix"', 1, true), r.stderr)
        end)

        it("acts on traffic with the tree in SHOTOVER_LUA_PATH", function()
            prefixes_keys({ "HOME=" .. home, "SHOTOVER_LUA_PATH=" .. lua_path(tree) }, "tree:")
        end)

        it("acts on traffic with the tree in LUA_PATH, as luarocks path gives it", function()
            local r = luarocks(home, home, { "--tree", tree, "path", "--lr-path" })
            assert.equal(0, r.code, r.stderr)
            prefixes_keys({ "HOME=" .. home, "LUA_PATH=" .. h.chomp(r.stdout) .. ";;" }, "lrpath:")
        end)
    end)

    it("acts on traffic from the user's tree (--local) with no path set", function()
        local user = h.tmpdir("user")
        local r = luarocks(EXAMPLE, user, { "--local", "make", ROCKSPEC })
        assert.equal(0, r.code, r.stdout .. r.stderr)
        assert.truthy(h.read_file(user .. "/.luarocks/share/lua/5.1/shotover/transforms/key_prefix.lua"))
        prefixes_keys({ "-u", "SHOTOVER_LUA_PATH", "-u", "LUA_PATH", "HOME=" .. user }, "local:")
    end)
end)
