-- The config reference, shotover.lua(5): docs/shotover.lua.5.md is what
-- docs/gen-config.lua writes from the schemas the code checks configs
-- against (so it cannot drift from them), and the man page built from it
-- renders without a warning.
local unit = require "unit"

describe("the config reference", function()
    local src = os.getenv("SHOTOVER_SRC") or "."
    local bin = assert(os.getenv("SHOTOVER_BIN"), "SHOTOVER_BIN is not set")
    local build = os.getenv("SHOTOVER_BUILD")
    if not build or build == "" then build = bin:gsub("/[^/]+$", "") end

    local sh, read = unit.sh, unit.read

    it("is what docs/gen-config.lua writes from the schemas now", function()
        local tmp = os.tmpname()
        local out, ok = sh(string.format("%s lua %s/docs/gen-config.lua %s 2>&1",
                                         bin, src, tmp))
        assert.is_true(ok, out)
        local fresh = read(tmp)
        os.remove(tmp)
        assert.equal(fresh, read(src .. "/docs/shotover.lua.5.md"),
            "docs/shotover.lua.5.md is stale: run build/shotover lua "
            .. "docs/gen-config.lua docs/shotover.lua.5.md")
    end)

    it("names every key of every config table and built-in transform", function()
        local page = read(src .. "/docs/shotover.lua.5.md")
        local s = require("shotover.config").schemas()
        for _, t in pairs(s) do
            for k in pairs(t) do
                assert.truthy(page:find("- `" .. k .. "` -- ", 1, true), k)
            end
        end
        for _, n in ipairs({ "redis", "cassandra", "router", "tee",
                             "key_namespace", "query_type_filter" }) do
            local mod = require("shotover.transforms." .. n)
            assert.truthy(page:find("## " .. n:upper():gsub("_", " "), 1, true), n)
            for k in pairs(mod.schema or {}) do
                assert.truthy(page:find("- `" .. k .. "` -- ", 1, true), n .. "." .. k)
            end
        end
    end)

    it("is built into shotover.lua.5, which renders without a warning", function()
        local page = build .. "/shotover.lua.5"
        local out, ok = sh("groff -man -Tutf8 -ww -z " .. page .. " 2>&1")
        assert.is_true(ok, out)
        assert.equal("", out)
        out, ok = sh("man --warnings -l " .. page .. " 2>&1 >/dev/null")
        assert.is_true(ok, out)
        assert.equal("", out)
        out = sh("man -l " .. page .. " 2>/dev/null")
        assert.matches("shotover.lua %- shotover's configuration file", out)
        assert.matches("drain_timeout", out)
    end)
end)
