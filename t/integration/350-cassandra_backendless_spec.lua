-- null and debug_returner on a cassandra source: no node at all, yet a CQL
-- client completes its handshake and gets protocol-correct answers on the
-- streams it used.
local h = require("harness")
local cassandra = require("cassandra")

local function proxy(chain)
    local _, port = cassandra.start_proxy{ chain = chain, no_sink = true }
    return port
end

describe("cql sinks without a backend", function()
    teardown(h.cleanup)

    it("null accepts the handshake and answers queries with RESULT Void",
       function()
        local c = cassandra.connect(proxy('{ "null" }'))
        local r = c:query("SELECT * FROM anything")
        assert.are.equal("void", r.result)
        c:close()
    end)

    it("debug_returner answers with the configured error on each stream",
       function()
        local P = proxy('{ "debug_returner", error = "maintenance", '
                        .. 'error_code = "OVERLOADED" }')
        local c = cassandra.connect(P)
        for _ = 1, 3 do
            local r = c:query("SELECT 1", { may_fail = true })
            assert.are.equal(0x1001, r.code)
            assert.are.equal("maintenance", r.message)
        end
        c:close()
    end)

    it("lets the DataStax driver see the configured error", function()
        local P = proxy('{ "debug_returner", error = "maintenance" }')
        local out = cassandra.python([[
try:
    c, s = connect(protocol_version=4)
    print('connected')
except Exception as e:
    print('err', str(e)[:300])
]], { port = P })
        -- the driver's control connection queries system tables: it gets
        -- the configured SERVER_ERROR and reports it
        assert.matches("maintenance", out, 1, true)
    end)
end)
