-- Replies nested deeper, or longer, than requests may be: Redis returns
-- whatever a Lua script builds.  Such a reply is decoded (the reply reader's stack grows
-- with it) and reaches its client, and the shared pipelined connection it
-- came on keeps serving every other client of the worker.
local h = require("harness")

local function nested_script(levels)
    return string.format("local t={} local c=t for i=1,%d do local n={} "
                         .. "c[1]=n c=n end c[1]=1 return t", levels - 1)
end

-- the depth of a decoded reply, and its innermost value
local function depth(v)
    local d = 0
    while type(v) == "table" and v[1] ~= nil and v.err == nil do
        d = d + 1
        v = v[1]
    end
    return d, v
end

describe("a reply longer than a request may be", function()
    local env
    setup(function() env = h.start_pair({ workers = 1 }) end)
    teardown(h.cleanup)

    it("(1.2 Mi elements) reaches its client, and the shared connection "
       .. "serves on", function()
        local big, other = h.connect(env.port), h.connect(env.port)
        big:send(h.resp_command("EVAL", "local t={} for i=1,1200000 do "
                                .. "t[i]=i%10 end return t", "0"))
        local v = big:read_reply(60)
        assert.equal(1200000, #v)
        assert.equal(9, v[1199999])
        assert.same(h.status("PONG"), other:cmd("PING"))
    end)
end)

describe("a reply nested deeper than 32 levels", function()
    local env
    setup(function() env = h.start_pair({ workers = 1 }) end)
    teardown(h.cleanup)

    for _, levels in ipairs({ 40, 1000 }) do
        it("(" .. levels .. " levels) reaches its client while another "
           .. "client's pipeline on the same connection gets every reply",
           function()
            local deep, other = h.connect(env.port), h.connect(env.port)
            local cmds = {}
            for i = 1, 200 do
                cmds[#cmds + 1] = h.resp_command("SET", "dr:" .. i,
                                                 tostring(i))
                cmds[#cmds + 1] = h.resp_command("GET", "dr:" .. i)
            end
            other:send(table.concat(cmds, "", 1, 200))
            deep:send(h.resp_command("EVAL", nested_script(levels), "0"))
            other:send(table.concat(cmds, "", 201, 400))
            local d, inner = depth(deep:read_reply())
            assert.equal(levels, d)
            assert.equal(1, inner)
            for i = 1, 200 do
                assert.same(h.status("OK"), other:read_reply())
                assert.equal(tostring(i), other:read_reply())
            end
            -- (before, the reply dropped the shared connection: the
            -- pipeline's replies became backend errors)
        end)
    end
end)
