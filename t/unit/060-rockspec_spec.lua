-- The rockspec lists every Lua module under lua/, and nothing else.
local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

local function rockspec()
    local p = io.popen("ls " .. src .. "/rockspec/*.rockspec")
    local path = p:read("*l")
    p:close()
    local env = {}
    local chunk = assert(loadfile(path))
    setfenv(chunk, env)
    chunk()
    return env, path
end

local function lua_files()
    local files = {}
    local p = io.popen("cd " .. src .. " && find lua -name '*.lua' | sort")
    for line in p:lines() do
        files[#files + 1] = line
    end
    p:close()
    return files
end

describe("the rockspec", function()
    local spec, path = rockspec()

    it("is a builtin build with busted tests", function()
        assert.are.equal("builtin", spec.build.type)
        assert.are.equal("busted", spec.test.type)
        assert.matches("shotover%-" .. spec.version:gsub("%-", "%%-")
                       .. "%.rockspec$", path)
    end)

    it("lists every file under lua/ under its module name", function()
        local listed = {}
        for mod, file in pairs(spec.build.modules) do
            listed[file] = mod
        end
        local files = lua_files()
        assert.is_true(#files > 0)
        for _, file in ipairs(files) do
            local mod = file:gsub("^lua/", ""):gsub("%.lua$", "")
                            :gsub("/init$", ""):gsub("/", ".")
            assert.are.equal(mod, listed[file],
                             file .. " is missing from " .. path)
        end
    end)

    it("lists no file that does not exist", function()
        for mod, file in pairs(spec.build.modules) do
            local f = io.open(src .. "/" .. file)
            assert.is_truthy(f, mod .. ": " .. file .. " does not exist")
            f:close()
        end
    end)
end)
