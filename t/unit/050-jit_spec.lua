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
        local function on_trace(what, tr, func, pc, otr, oex)
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
        jit.flush()
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
end)
