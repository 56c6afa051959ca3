-- The hot path stays JIT-friendly: a loop over a batch reading commands and
-- keys through the message API compiles to a trace, and nothing in it hits
-- an operation the JIT does not support (NYI).
local message = require "shotover.message"

describe("the message API under the JIT", function()
    it("compiles a hot loop over a batch without aborting", function()
        local b = message.new_batch(0)
        for i = 1, 16 do
            b:push(message.command({ i % 2 == 0 and "GET" or "SET", "key" .. i,
                                     "v" }))
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

        local info = debug.getinfo(hot, "S")
        local traceerr = require("jit.vmdef").traceerr
        local compiled, nyi = 0, {}
        local starts = {}
        local function on_trace_body(what, tr, func, pc, otr, oex)
            local fi = require("jit.util").funcinfo(func)
            local ours = fi.source == info.source
                         and fi.linedefined == info.linedefined
            if what == "start" then
                starts[tr] = ours
            elseif what == "stop" and starts[tr] then
                compiled = compiled + 1
            elseif what == "abort" and starts[tr] then
                -- warm-up aborts (leaving the loop, retries) are normal;
                -- what must never happen is an unsupported operation
                local msg = string.format(traceerr[otr] or tostring(otr),
                                          oex)
                if msg:find("NYI", 1, true) then
                    nyi[#nyi + 1] = msg
                end
            end
        end
        -- the handler must never raise: a raising vmevent handler stays
        -- attached and fails every later trace event of the run (and no
        -- jit.flush(): flushing traces mid-run made the VM hand the
        -- handler odd arguments)
        local function on_trace(...)
            pcall(on_trace_body, ...)
        end
        jit.attach(on_trace, "trace")
        local gets
        for _ = 1, 2000 do
            gets = hot(b)
        end
        jit.attach(on_trace)
        assert.are.equal(8, gets)
        assert.is_true(compiled >= 1, "the hot loop was never compiled")
        assert.are.same({}, nyi)
    end)

    it("runs query_counter and a router over a batch in compiled loops",
       function()
        local chain = require "shotover.chain"
        local config = require "shotover.config"
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
        local ch = chain.build(conf.sources[1].chain,
                               { name = "j", protocol = "redis" })
        local ctx = ch:context(nil)
        local b = message.new_batch(0)
        for i = 1, 16 do
            b:push(message.command({ i % 2 == 0 and "GET" or "set",
                                     "key:" .. i, "v" }))
        end

        local traceerr = require("jit.vmdef").traceerr
        local funcinfo = require("jit.util").funcinfo
        local ours = { ["@" .. package.searchpath("shotover.transforms.router",
                                                  package.path)] = "router",
                       ["@" .. package.searchpath(
                           "shotover.transforms.query_counter",
                           package.path)] = "query_counter",
                       ["=router matcher"] = "matcher" }
        local starts, loops, nyi = {}, {}, {}
        local function on_trace_body(what, tr, func, pc, otr, oex)
            if what == "start" then
                starts[tr] = ours[funcinfo(func).source]
            elseif what == "stop" and starts[tr] then
                local info = require("jit.util").traceinfo(tr)
                if info and info.link == tr then     -- a looping trace
                    loops[starts[tr]] = true
                end
            elseif what == "abort" and starts[tr] then
                local msg = string.format(traceerr[otr] or tostring(otr),
                                          oex)
                -- after the batch loop, handing the batch on returns to the
                -- chain's frame; that tail runs once per batch, interpreted
                if msg:find("NYI", 1, true)
                   and not msg:find("return to lower frame", 1, true) then
                    nyi[#nyi + 1] = starts[tr] .. ": " .. msg
                end
            end
        end
        -- the handler must never raise: a raising vmevent handler stays
        -- attached and fails every later trace event of the run (and no
        -- jit.flush(): flushing traces mid-run made the VM hand the
        -- handler odd arguments)
        local function on_trace(...)
            pcall(on_trace_body, ...)
        end
        jit.attach(on_trace, "trace")
        local resp
        for _ = 1, 2000 do
            resp = ch:run(ctx, b)
        end
        jit.attach(on_trace)
        assert.are.equal(16, resp.n)
        assert.are.same({}, nyi)
        assert.is_true(loops.router, "the router's batch loop never compiled")
        assert.is_true(loops.query_counter,
                       "query_counter's batch loop never compiled")
    end)
end)
