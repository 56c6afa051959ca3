-- The runner owns the yield protocol with C: no other Lua file calls the
-- connection functions of the FFI or yields DONE, MORE or SLEEP, so a
-- second copy of the connection loop cannot grow back unnoticed; and a
-- hook given to the loop replaces Chain.run for every batch.
local runner = require "shotover.runner"
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local base = require "shotover.ffi"

local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

local function lua_files()
    local files = {}
    local p = io.popen("cd " .. src .. " && find lua -name '*.lua' | sort")
    for line in p:lines() do
        files[#files + 1] = line
    end
    p:close()
    return files
end

-- the lines of file that match pattern, outside comments
local function uses(file, pattern)
    local out = {}
    local n = 0
    for line in io.lines(src .. "/" .. file) do
        n = n + 1
        local code = line:gsub("%-%-.*$", "")
        if code:find(pattern) then
            out[#out + 1] = file .. ":" .. n .. ": " .. line
        end
    end
    return out
end

describe("the runner", function()
    it("is the only Lua code that calls sh_ffi_run_* functions", function()
        local found = {}
        for _, f in ipairs(lua_files()) do
            if f ~= "lua/shotover/runner.lua" then
                for _, l in ipairs(uses(f, "sh_ffi_run_")) do
                    found[#found + 1] = l
                end
            end
        end
        assert.same({}, found)
    end)

    it("is the only Lua code that yields DONE, MORE or SLEEP to C",
       function()
        local found = {}
        for _, f in ipairs(lua_files()) do
            if f ~= "lua/shotover/runner.lua" and f ~= "lua/shotover/ffi.lua"
            then
                for _, p in ipairs({ "YIELD_DONE", "YIELD_MORE",
                                     "YIELD_SLEEP" }) do
                    for _, l in ipairs(uses(f, p)) do
                        found[#found + 1] = l
                    end
                end
            end
        end
        assert.same({}, found)
    end)

    it("runs each batch of a parking chain with the hook it is given",
       function()
        local conf = assert(config.check({ sources = { { name = "c",
            protocol = "redis", listen = "127.0.0.1:1", chain = {
                { "coalesce", max_requests = 1 },
                { "debug_returner", simple = "OK" } } } } }))
        local parking = {}
        local ch = chain.build(conf.sources[1].chain, { name = "c",
            protocol = "redis", parking = parking })
        ch.parks = parking.used
        local seen = 0
        local function hook(c, ctx, batch)
            seen = seen + batch.n
            return c:run(ctx, batch)
        end
        local b = message.new_batch(0)
        b:push(assert(message.command({ "GET", "k" })))
        local io = {
            wake_reason = function() return base.WAKE_BATCH end,
            batch = function() return b end,
            timer = function() end,
            timer_stop = function() end,
        }
        local co = coroutine.create(function()
            runner.serve(nil, ch, nil, hook, io)
        end)
        local ok, what, resp = coroutine.resume(co)
        assert(ok, what)
        assert.equal(base.YIELD_DONE, what)
        assert.equal(1, resp.n)
        assert.equal(1, seen)
    end)
end)
