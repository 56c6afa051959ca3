-- Helpers the unit specs share, on top of shotover.testing (what a
-- third-party transform's specs use): a chain built from `elements` the way
-- a source's chain is (validated by config first, built dry), and a batch
-- of Redis commands.
local testing = require "shotover.testing"

local M = {}

-- testing.check's answer for a source of `protocol` (default redis) whose
-- chain is elements: the validated elements, or nil and errors with paths
function M.check(elements, protocol)
    return testing.check(elements, protocol)
end

-- elements built as chain `name` (default "test") of a `protocol` source
function M.build(elements, protocol, name)
    return testing.build(elements, { protocol = protocol, name = name })
                  .chain
end

-- a batch of Redis requests, one per command table ({ "GET", "k" }, ...)
M.redis_batch = testing.batch

-- run a shell command: its output (stdout, and stderr if it says 2>&1)
-- and whether it exited 0
function M.sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    local ok, _, code = p:close()
    return out, ok == true or code == 0
end

-- a file's bytes (an error naming it when it is missing)
function M.read(path)
    local f = assert(io.open(path, "rb"), path .. " is missing")
    local s = f:read("*a")
    f:close()
    return s
end

return M
