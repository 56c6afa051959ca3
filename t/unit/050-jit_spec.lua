-- The hot path stays JIT-friendly: loops over a batch reading commands and
-- keys through the message API, the router's batch loop and scatter's
-- sorting of a batch, compile to looping traces, query_counter aborts no trace, audit's lines compile, and nothing in them hits
-- an operation the JIT does not support (NYI).  Each check runs in a process of its own
-- with jit.v logging the trace events (t/lib/jit_watch.lua).
package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;" .. package.path
local jw = require "jit_watch"

describe("the message API under the JIT", function()
    it("compiles a hot loop over a batch without aborting", function()
        local log = jw.run([[
local message = require "shotover.message"
local b = message.new_batch(0)
for i = 1, 16 do
    b:push(message.command({ i % 2 == 0 and "GET" or "SET", "key" .. i, "v" }))
end
local function hot(batch)
    local gets, bytes = 0, 0
    for i = 1, #batch do
        local m = batch[i]
        if m:command_is("GET") then
            gets = gets + 1
        end
        local _, n = m:arg_view(2)
        bytes = bytes + n + m.len
    end
    return gets, bytes
end
local gets
for _ = 1, 2000 do
    gets = hot(b)
end
assert(gets == 8)
]])
        assert.is_true(jw.traces(log, "jitcheck.lua") >= 1,
                       "the hot loop was never compiled:\n" .. log)
        assert.are.same({}, jw.nyi(log, { "jitcheck.lua", "message.lua" }))
    end)

    it("runs query_counter and a router's batch loop compiled",
       function()
        local log = jw.run([[
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local conf = assert(config.check({ sources = { {
    name = "j", protocol = "redis", listen = "127.0.0.1:1",
    chain = {
        { "query_counter", name = "jit" },
        { "router",
          routes = {
              { match = { command = { "FLUSHALL", "KEYS" } },
                chain = { { "null" } } },
              { match = { key_prefix = { "session:", "cache:" } },
                chain = { { "null" } } },
              { match = { key_pattern = "'user:' [0-9]+" },
                chain = { { "null" } } },
          },
          default = { function(batch) return batch end } },
    } } } }))
local ch = chain.build(conf.sources[1].chain, { name = "j", protocol = "redis" })
local ctx = ch:context(nil)
-- @hot
local b = message.new_batch(0)
for i = 1, 16 do
    b:push(message.command({ i % 2 == 0 and "GET" or "set", "key:" .. i, "v" }))
end
local resp
for _ = 1, 2000 do
    resp = ch:run(ctx, b)
end
assert(resp.n == 16)
]])
        assert.is_true(jw.traces(log, "router.lua") >= 1,
                       "the router's batch loop never compiled:\n" .. log)
        -- query_counter counts Redis requests in C (one FFI call a batch);
        -- its Lua is compiled into whichever trace calls it and never
        -- aborts one for what it does.  A trace that starts at its entry
        -- may still stop where the router's loop begins ("inner loop in
        -- root trace"): that is the JIT choosing where traces start, which
        -- depends on hot-counter collisions that vary from run to run, and
        -- the loop then gets its own trace
        for line in log:gmatch("[^\n]+") do
            if line:find("^%[TRACE %-%-%-.*query_counter%.lua")
               and not line:find("loop in root trace", 1, true) then
                error("a trace aborted in query_counter:\n" .. log)
            end
        end
        -- after the batch loop, handing the batch on returns to the
        -- chain's frame; that tail runs once per batch, interpreted
        local nyi = {}
        for _, line in ipairs(jw.nyi(log, { "router.lua", "query_counter.lua",
                                            "router matcher" })) do
            if not line:find("return to lower frame", 1, true) then
                nyi[#nyi + 1] = line
            end
        end
        assert.are.same({}, nyi)
    end)
    it("finds keys and classes, filters and namespaces compiled", function()
        local log = jw.run([[
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local conf = assert(config.check({ sources = { {
    name = "j", protocol = "redis", listen = "127.0.0.1:1",
    chain = {
        { "query_type_filter", allow = { "read", "write", "read_write",
                                         "connection" } },
        { "key_namespace", prefix = "t1:" },
        function(batch) return batch end,
    } } } }))
local ch = chain.build(conf.sources[1].chain, { name = "j", protocol = "redis" })
local ctx = ch:context(nil)
-- @hot
local cmds = { { "GET", "k" }, { "SET", "k", "v" }, { "EXPIRE", "k", "1" },
               { "HGET", "h", "f" }, { "PING" }, { "INCR", "n" },
               { "LPUSH", "l", "a" }, { "ZADD", "z", "1", "m" } }
local resp
for _ = 1, 2000 do
    local b = message.new_batch(0)
    for i = 1, 16 do
        b:push(message.command(cmds[i % #cmds + 1]))
    end
    resp = ch:run(ctx, b)
end
assert(resp.n == 16)
assert(resp[1]:arg(2) == "t1:k")
]])
        assert.is_true(jw.traces(log, "keys.lua") >= 1,
                       "key positions never compiled:\n" .. log)
        local nyi = {}
        for _, line in ipairs(jw.nyi(log, { "keys.lua",
                                            "query_type_filter.lua",
                                            "key_namespace.lua" })) do
            if not line:find("return to lower frame", 1, true) then
                nyi[#nyi + 1] = line
            end
        end
        assert.are.same({}, nyi)
    end)

    it("sorts a batch for scatter compiled", function()
        local log = jw.run([[
local message = require "shotover.message"
local scatter = require "shotover.transforms.scatter"
local mode_of = scatter.mode_of
local cmds = { { "GET", "k" }, { "SET", "k", "v" }, { "MGET", "a", "b" },
               { "INCR", "n" }, { "PING" }, { "HSET", "h", "f", "v" },
               { "TTL", "k" }, { "DEL", "a", "b" } }
local b = message.new_batch(0)
for i = 1, 16 do
    b:push(message.command(cmds[i % #cmds + 1]))
end
local function hot(batch)
    local sum = 0
    for i = 1, batch.n do
        local mode = mode_of(batch[i])
        if mode ~= nil then
            sum = sum + mode
        end
    end
    return sum
end
local sum
for _ = 1, 2000 do
    sum = hot(b)
end
assert(sum > 0)
]])
        assert.is_true(jw.traces(log, "jitcheck.lua") >= 1,
                       "the batch loop was never compiled:\n" .. log)
        local nyi = {}
        for _, line in ipairs(jw.nyi(log, { "scatter.lua", "keys.lua" })) do
            if not line:find("return to lower frame", 1, true) then
                nyi[#nyi + 1] = line
            end
        end
        assert.are.same({}, nyi)
    end)

    it("runs the audit transform's lines compiled, with no NYI", function()
        local log = jw.run([[
local testing = require "shotover.testing"
local t = testing.build({ { "audit", file = "/dev/null" },
                          { "debug_returner", simple = "OK" } })
local b = testing.batch({ "SET", "k1", "v" }, { "GET", "k2" },
                        { "MSET", "a", "1", "b", "2" },
                        { "HSET", "h", "f", "v" })
-- @hot
for _ = 1, 3000 do t:run(b) end
]])
        assert.is_true(jw.traces(log, "audit.lua") >= 1,
                       "audit's line building was never compiled:\n" .. log)
        assert.are.same({}, jw.nyi(log, { "audit.lua" }))
    end)
end)
