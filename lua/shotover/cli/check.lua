-- `shotover check -c FILE`: validate a config as `run` would, and look up
-- every host it names (blocking: nothing else runs here), listen addresses
-- and the sinks' remotes alike.  Prints every problem to stderr, one per
-- line with its path, or "FILE: ok" to stdout.  Exit 0 valid, 1 invalid.
local config = require "shotover.config"

local concat = table.concat

local _M = { _VERSION = "0.1.0" }

-- args: { FILE } (main.c parsed the command line)
function _M.main(args)
    local path = args[1]
    local called, conf, errs = pcall(config.load, path, { resolve = "all" })
    if not called then
        -- a bug, not a bad config: still "invalid" (exit 1), as before
        io.stderr:write("shotover: ", tostring(conf), "\n")
        return 1
    end
    if not conf then
        io.stderr:write(concat(errs, "\n"), "\n")
        return 1
    end
    io.stdout:write(path, ": ok\n")
    return 0
end

return _M
