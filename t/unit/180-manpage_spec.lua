-- The man page shotover(1) is made at build time from docs/shotover.1.md,
-- the page the docs show: it is the build's output of that source, renders
-- without a groff warning, and names every command and option that
-- `shotover --help` prints.
local unit = require "unit"

describe("the man page", function()
    local src = os.getenv("SHOTOVER_SRC") or "."
    local bin = assert(os.getenv("SHOTOVER_BIN"), "SHOTOVER_BIN is not set")
    local build = os.getenv("SHOTOVER_BUILD")
    if not build or build == "" then build = bin:gsub("/[^/]+$", "") end
    local page = build .. "/shotover.1"

    local sh, read = unit.sh, unit.read

    it("is what docs/md2man.lua makes of docs/shotover.1.md now", function()
        local tmp = os.tmpname()
        local out, ok = sh(string.format("luajit %s/docs/md2man.lua "
            .. "%s/docs/shotover.1.md %s %s/c/sh_core.h 2>&1",
            src, src, tmp, src))
        assert.is_true(ok, out)
        local fresh = read(tmp)
        os.remove(tmp)
        assert.equal(fresh, read(page), "build/shotover.1 is stale: rebuild")
    end)

    it("renders without a warning, with groff and with man", function()
        local out, ok = sh("groff -man -Tutf8 -ww -z " .. page .. " 2>&1")
        assert.is_true(ok, out)
        assert.equal("", out)
        out, ok = sh("MANWIDTH=80 man --warnings -l " .. page
                     .. " 2>&1 >/dev/null")
        assert.is_true(ok, out)
        assert.equal("", out)
    end)

    it("names every command and option shotover --help prints", function()
        local help = sh(bin .. " --help")
        -- one long line, no hyphenation: names are whole
        local text = sh("groff -man -Tascii -rLL=2000n -rHY=0 " .. page
                        .. " 2>/dev/null | col -bx")
        local commands = text:match("\nCOMMANDS\n(.-)\nOPTIONS\n")
        assert.truthy(commands, "no COMMANDS section")
        local n = 0
        for cmd in help:gmatch("shotover (%w[%w-]*)") do
            n = n + 1
            assert.truthy(commands:find("\n%s+" .. cmd:gsub("%-", "%%-") .. "%s"),
                "COMMANDS does not describe " .. cmd)
        end
        assert.is_true(n >= 5, "too few commands in --help: " .. help)
        for opt in help:gmatch("%-%-?[%w][%w-]*") do
            assert.truthy(text:find(opt, 1, true), "the page lacks " .. opt)
        end
    end)
end)
