-- Logs name where a message comes from: JSON logs (--log-format json) carry
-- the source, the client connection's id and address, the chain and the
-- chain element as keys of the line's object; text logs keep the message
-- alone, one line each.
local h = require("harness")

local CONFIG = [[
local function boom(batch, chain)
    if batch[1]:command_is("GET") then
        error("boom\non two lines")
    end
    return chain:next(batch)
end
return { sources = { { name = "logs", protocol = "redis",
    listen = "127.0.0.1:%d",
    chain = {
        { "tee", behavior = "ignore", wait = true,
          chain = { { function() error("copy failed") end, name = "bad_copy" },
                    { "null" } } },
        { "router", routes = {
            { match = { key_prefix = "r:" },
              chain = { { "null" }, } } },
          default = { { boom, name = "boomer" }, { "null" } } },
    } } } }
]]

-- the first line of s holding needle (plain)
local function line_with(s, needle)
    for line in s:gmatch("[^\n]+") do
        if line:find(needle, 1, true) then
            return line
        end
    end
    error("no line with " .. needle .. " in:\n" .. s, 2)
end

describe("log lines", function()
    teardown(h.cleanup)

    it("carry the source, connection, client, chain and element in JSON",
       function()
        local port = h.free_port()
        local s = h.shotover({ port = port, args = { "--log-format", "json" },
                               config = string.format(CONFIG, port) })
        local c = h.connect(port)
        c:cmd("SET", "r:x", "v")            -- the tee's copy fails alone
        local v = c:cmd("GET", "k")
        assert.matches("boom", v.err, 1, true)
        -- an error in a route's chain fails the source chain's element
        -- that holds it: the router
        s:wait_log("(router) failed", 5)
        local line = line_with(s:log(), "(router) failed")
        assert.matches('^{"time":"[^"]+","level":"error","msg":"chain '
                       .. '\\"logs\\": element 2 %(router%) failed: '
                       .. '[^"]*boom\\u000aon two lines",'
                       .. '"source":"logs","conn":%d+,'
                       .. '"client":"127%.0%.0%.1:%d+",'
                       .. '"chain":"logs","element":"router",'
                       .. '"element_index":2}$', line)
        local conn = line:match('"conn":(%d+)')
        -- a tee's copy that fails: the tee is the element; the same client
        -- connection's line has the same id
        line = line_with(s:log(), 'copy failed","source":"logs","conn":'
                                  .. conn .. ',')
        assert.matches('^{"time":"[^"]+","level":"error","msg":"tee '
                       .. '\\"tee\\": the tee chain failed: [^"]*copy '
                       .. 'failed","source":"logs","conn":' .. conn
                       .. ',"client":"127%.0%.0%.1:%d+","element":"tee"}$',
                       line)
        -- a line without a connection has no such keys
        line = line_with(s:log(), "listening on")
        assert.is_nil(line:find('"conn"', 1, true))
        s:stop()
    end)

    it("keep the message alone and on one line in text", function()
        local port = h.free_port()
        local s = h.shotover({ port = port,
                               config = string.format(CONFIG, port) })
        local c = h.connect(port)
        c:cmd("GET", "k")
        s:wait_log("(router) failed", 5)
        local line = line_with(s:log(), "(router) failed")
        assert.matches('^%d+%-%d+%-%d+T[%d:.]+Z %[error%] chain '
                       .. '"logs": element 2 %(router%) failed: '
                       .. '.-boom\\non two lines$', line)
        s:stop()
    end)
end)
