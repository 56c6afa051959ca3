-- The FFI seam: the declarations Lua loads are c/sh_ffi.h, and LuaJIT lays
-- out every struct exactly as the C compiler did.
local ffi = require "ffi"
local base = require "shotover.ffi"

local C = base.C
local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

describe("the FFI declarations", function()
    local header = read(src .. "/c/sh_ffi.h")
    local cdef = require "shotover.cdef"

    it("are the header with only its preprocessor lines removed", function()
        local expected = {}
        for line in header:gmatch("(.-)\n") do
            if not line:match("^#") then
                expected[#expected + 1] = line
            end
        end
        assert.are.equal(table.concat(expected, "\n") .. "\n", cdef)
    end)

    it("give every struct the size the C compiler gave it", function()
        local n = 0
        for name in header:gmatch("}%s*([%w_]+_t);") do
            local csize = tonumber(C.sh_ffi_sizeof(name))
            assert.is_true(csize > 0, name .. " is missing from sh_ffi_sizes.c")
            assert.are.equal(csize, ffi.sizeof(name), name)
            n = n + 1
        end
        assert.is_true(n >= 5)
    end)

    it("name only functions the core library exports", function()
        local n = 0
        for name in header:gmatch("[%w_%*]+%s+%**(sh_[%w_]+)%(") do
            assert.is_true(pcall(function() return C[name] end), name)
            n = n + 1
        end
        assert.is_true(n >= 20)
    end)

    it("give status names the way the C core spells them", function()
        assert.are.equal("AGAIN", ffi.string(C.sh_status_name(base.AGAIN)))
        assert.are.equal("DECLINED",
                         ffi.string(C.sh_status_name(base.DECLINED)))
    end)
end)
