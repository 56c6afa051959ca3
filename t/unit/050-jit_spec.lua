-- The hot path stays JIT-friendly: a loop over a batch reading commands and
-- keys through the message API compiles to a trace, and nothing aborts.
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
        local started, aborted = 0, {}
        local function on_trace(what, tr, func, pc, otr, oex)
            local fi = require("jit.util").funcinfo(func)
            if fi.source == info.source
               and fi.linedefined == info.linedefined
            then
                if what == "start" then
                    started = started + 1
                elseif what == "abort" then
                    aborted[#aborted + 1] = tostring(oex or otr)
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
        assert.is_true(started >= 1, "no trace started in the hot loop")
        assert.are.same({}, aborted)
    end)
end)
