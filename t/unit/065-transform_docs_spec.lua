-- Every transform under lua/shotover/transforms has a doc,
-- docs/transforms/NAME.md, that names each key of its schema as code
-- (`key` or `key = ...`), and declares its capabilities; every doc there
-- is a transform's.
local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")
local config = require "shotover.config"

local function names(dir, ext)
    local out = {}
    local p = io.popen("ls " .. src .. "/" .. dir)
    for file in p:lines() do
        local name = file:match("^(.+)%." .. ext .. "$")
        if name then
            out[#out + 1] = name
        end
    end
    p:close()
    table.sort(out)
    return out
end

local function read(path)
    local f = io.open(src .. "/" .. path)
    if f == nil then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- is key named as code in doc: `key`, `key = ...` or `key=...`
local function documented(doc, key)
    return doc:find("`" .. key .. "`", 1, true) ~= nil
           or doc:find("`" .. key .. " =", 1, true) ~= nil
           or doc:find("`" .. key .. "=", 1, true) ~= nil
end

describe("the transform docs", function()
    local transforms = names("lua/shotover/transforms", "lua")

    it("cover some transforms", function()
        assert.is_true(#transforms >= 12)
    end)

    for _, name in ipairs(transforms) do
        local path = "docs/transforms/" .. name .. ".md"
        local mod = require("shotover.transforms." .. name)

        it(name .. " has a doc titled with its name", function()
            local doc = read(path)
            assert.is_truthy(doc, path .. " is missing")
            assert.matches("^# `" .. name .. "`", doc)
        end)

        it(name .. "'s doc names every key of its schema", function()
            local doc = read(path) or ""
            local missing = {}
            for key in pairs(mod.schema or {}) do
                if not documented(doc, key) then
                    missing[#missing + 1] = key
                end
            end
            table.sort(missing)
            assert.are.same({}, missing, path .. " does not name them")
        end)

        it(name .. " declares its capabilities", function()
            assert.are.equal("table", type(mod.capabilities),
                             name .. ": no capabilities table")
            assert.is_truthy(config.capabilities(mod))
        end)
    end

    it("are each a transform's", function()
        local known = {}
        for _, name in ipairs(transforms) do
            known[name] = true
        end
        for _, doc in ipairs(names("docs/transforms", "md")) do
            assert.is_true(known[doc], "docs/transforms/" .. doc .. ".md: "
                                       .. "no such transform")
        end
    end)
end)
