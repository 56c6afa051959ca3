-- busted's helper (.busted): what t/run-busted exports, for specs run as
-- `build/shotover lua busted` from the source tree.  SHOTOVER_SRC defaults
-- to the current directory and SHOTOVER_BIN to build/shotover there; set
-- either to override.
local ffi = require "ffi"

pcall(ffi.cdef, "int setenv(const char *name, const char *value, "
                .. "int overwrite);")

local function default(name, value)
    if os.getenv(name) == nil then
        ffi.C.setenv(name, value, 0)
    end
end

local cwd = assert(io.popen("pwd")):read("*l")
default("SHOTOVER_SRC", cwd)
default("SHOTOVER_BIN", (os.getenv("SHOTOVER_SRC") or cwd)
                        .. "/build/shotover")
