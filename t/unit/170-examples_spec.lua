-- Every config under examples/ is valid, and every case file there passes
-- route-test against its config: the README's commands keep working.
local function shotover(args)
    local bin = assert(os.getenv("SHOTOVER_BIN"), "SHOTOVER_BIN is not set")
    local src = os.getenv("SHOTOVER_SRC") or "."
    local p = io.popen("cd " .. src .. " && " .. bin .. " " .. args .. " 2>&1; echo \"exit $?\"")
    local out = p:read("*a")
    p:close()
    return out
end

describe("examples/", function()
    local src = os.getenv("SHOTOVER_SRC") or "."
    local configs = {}
    for name in io.popen("ls " .. src .. "/examples"):lines() do
        if name:match("%.lua$") and not name:match("_cases%.lua$") then
            configs[#configs + 1] = name
        end
    end

    it("has configs", function()
        assert.is_true(#configs >= 4)
    end)

    -- a walkthrough directory's config, run from the source root as its
    -- README does
    it("cassandra-encryption/shotover.lua passes shotover check", function()
        local path = "examples/cassandra-encryption/shotover.lua"
        assert.equal(path .. ": ok\nexit 0\n",
                     shotover("check -c " .. path))
    end)

    for _, name in ipairs(configs) do
        it(name .. " passes shotover check", function()
            assert.equal("examples/" .. name .. ": ok\nexit 0\n",
                         shotover("check -c examples/" .. name))
        end)
        local cases = name:gsub("%.lua$", "_cases.lua")
        local f = io.open(src .. "/examples/" .. cases)
        if f then
            f:close()
            it(cases .. " passes route-test", function()
                local out = shotover("route-test -c examples/" .. name
                                     .. " examples/" .. cases)
                assert.matches("exit 0\n$", out)
                assert.not_matches("not ok", out)
            end)
        end
    end
end)
