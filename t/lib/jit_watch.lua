-- JIT checks for the unit specs, in a process of their own: `code` runs in
-- a fresh `shotover lua` with jit.v logging every trace event to a file
-- (from its `-- @hot` line on, when it has one), and the log comes back
-- as text.  (Watching traces with jit.attach inside the
-- busted process proved unsafe: handlers left attached and, now and then, a
-- crashed VM.)
local M = {}

local PRELOAD = [[
for _, m in ipairs({ "shotover.message", "shotover.chain", "shotover.config",
                     "shotover.protocols", "shotover.redis.keys",
                     "shotover.cql.message", "shotover.transforms.router",
                     "shotover.transforms.query_counter",
                     "shotover.transforms.query_type_filter",
                     "shotover.transforms.key_namespace" }) do
    require(m)
end
]]

function M.run(code)
    local bin = assert(os.getenv("SHOTOVER_BIN"), "SHOTOVER_BIN is not set")
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir) == 0 or true)
    local script, log = dir .. "/jitcheck.lua", dir .. "/jit.log"
    local f = assert(io.open(script, "w"))
    -- the modules the checks use are loaded before the log starts: what
    -- their loading compiles (a load-time loop whose trace runs on into a
    -- module's function definitions and aborts there) is not the hot path
    -- and would make the checks depend on when the JIT got warm
    -- code may mark where its hot part starts with a `-- @hot` line: what
    -- comes before (building a chain) is set-up, not logged
    local start = 'require("jit.v").start(' .. string.format("%q", log) .. ")\n"
    local at = code:find("-- @hot", 1, true)
    if at then
        code = code:sub(1, at - 1) .. start .. code:sub(at + 7)
        start = ""
    end
    f:write(PRELOAD, start, code, '\nrequire("jit.v").off()\n')
    f:close()
    local p = io.popen(bin .. " lua " .. script .. " 2>&1; echo \"exit $?\"")
    local out = p:read("*a")
    p:close()
    local lf = io.open(log)
    local text = lf and lf:read("*a") or ""
    if lf then
        lf:close()
    end
    os.execute("rm -rf " .. dir)
    assert(out:match("exit 0\n$"), "the JIT check script failed:\n" .. out)
    return text
end

-- The compiled traces that start in file `name` (e.g. "router.lua"): a
-- root loop, or a trace that links into another (the JIT may make an inner
-- loop the root and the outer loop a trace linking to it).
function M.traces(log, name)
    local n = 0
    local pat = "^%[TRACE%s+%d+ [^%]]-" .. name:gsub("%p", "%%%0") .. ":%d+"
    for line in log:gmatch("[^\n]+") do
        if line:find(pat) then
            n = n + 1
        end
    end
    return n
end

-- The NYI aborts of traces that start in or pass through one of `names`.
function M.nyi(log, names)
    local out = {}
    for line in log:gmatch("[^\n]+") do
        if line:find("NYI", 1, true) then
            for _, name in ipairs(names) do
                if line:find(name, 1, true) then
                    out[#out + 1] = line
                    break
                end
            end
        end
    end
    return out
end

return M
