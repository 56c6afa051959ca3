-- What a driver behind shotover gets when the Cassandra node goes away,
-- freezes, or was never there: errors it understands, within the timeouts,
-- never a hang; and service again when the node returns.
local h = require("harness")
local cassandra = require("cassandra")

local function start_proxy(remote_port, opts)
    return cassandra.start_proxy{ remote = remote_port, sink = opts }
end

describe("shotover when the cassandra node stops and restarts", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = start_proxy(node.port, "request_timeout_ms = 3000")
        cassandra.python([[
c, s = connect()
s.execute("CREATE KEYSPACE IF NOT EXISTS fx WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE IF NOT EXISTS fx.t (k int PRIMARY KEY, v int)")
]], { port = P })
    end)
    teardown(h.cleanup)

    it("gives a running client errors while it is down and service after",
       function()
        -- a client that keeps writing, printing each outcome, until stopf
        local stopf = h.tmpdir("stopflag") .. "/stop"
        local proc, out = cassandra.python_spawn([[
import time
from cassandra.policies import ConstantReconnectionPolicy
c, s = connect(request_timeout=10)
ins = s.prepare("INSERT INTO fx.t (k, v) VALUES (?, ?)")
i = 0
deadline = time.time() + 150
while time.time() < deadline:
    i += 1
    t0 = time.time()
    try:
        s.execute(ins, (i, i))
        print('ok', i, flush=True)
    except Exception as e:
        print('err', round(time.time() - t0, 2), type(e).__name__, str(e)[:200], flush=True)
    if os.path.exists(ARGS[0]):
        break
    time.sleep(0.05)
print('done', flush=True)
]], { port = P, args = { stopf } })
        local function lines() return h.read_file(out) or "" end
        h.wait_until(function() return select(2, lines():gsub("ok ", "")) >= 5 end,
                     60, "the client to write through the proxy")
        node:stop(30)
        h.wait_until(function() return lines():find("\nerr ", 1, true) ~= nil end,
                     60, "the client to see an error while the node is down")
        -- no request may hang: every error came within the timeouts
        for secs in lines():gmatch("\nerr ([%d%.]+) ") do
            assert.is_true(tonumber(secs) < 12, "an error took " .. secs .. " s")
        end
        node:start()
        local errs_at_restart = select(2, lines():gsub("\nerr ", ""))
        local oks_at_restart = select(2, lines():gsub("\nok ", ""))
        h.wait_until(function()
            return select(2, lines():gsub("\nok ", "")) >= oks_at_restart + 5
        end, 90, "the client to write again after the node returned")
        assert.is_true(errs_at_restart >= 1)
        h.write_file(stopf, "")
        h.wait_until(function() return lines():find("\ndone", 1, true) ~= nil end,
                     30, "the client to finish")
        proc:stop(5)
    end)
end)

describe("shotover when the cassandra node freezes", function()
    local node, P

    setup(function()
        node = cassandra.start{ auth = false }
        local _
        _, P = start_proxy(node.port, "request_timeout_ms = 2000")
    end)
    teardown(function()
        if node and node.paused then node:resume() end
        h.cleanup()
    end)

    it("fails the request with OVERLOADED after request_timeout_ms", function()
        local flag = h.tmpdir("flag") .. "/go"
        local proc, out = cassandra.python_spawn([[
import time
c, s = connect(request_timeout=60)
print('connected', flush=True)
while not os.path.exists(ARGS[0]):
    time.sleep(0.05)
t0 = time.time()
try:
    s.execute("SELECT release_version FROM system.local")
    print('no error', flush=True)
except Exception as e:
    print('err', round(time.time() - t0, 2), str(e)[:400], flush=True)
]], { port = P, args = { flag } })
        h.wait_until(function()
            return (h.read_file(out) or ""):find("connected", 1, true) ~= nil
        end, 60, "the client to connect")
        node:pause()
        h.write_file(flag, "")
        h.wait_until(function()
            return (h.read_file(out) or ""):find("err ", 1, true) ~= nil
        end, 30, "the client to get an error")
        node:resume()
        local text = h.read_file(out)
        local secs = tonumber(text:match("err ([%d%.]+)"))
        assert.is_true(secs >= 1.5 and secs < 10, "error after " .. secs .. " s")
        assert.matches("code=1001", text, 1, true)      -- OVERLOADED
        assert.matches("timed out after 2000ms", text, 1, true)
        proc:stop(5)
    end)
end)

describe("shotover when no cassandra node is there", function()
    local P

    setup(function()
        local _
        _, P = start_proxy(h.free_port(), "connect_timeout_ms = 1000")
    end)
    teardown(h.cleanup)

    it("fails the driver's connection quickly instead of hanging", function()
        local t0 = h.now()
        local out = cassandra.python([[
try:
    c, s = connect()
    print('connected')
except Exception as e:
    print('err', type(e).__name__, str(e)[:300])
]], { port = P, timeout = 60 })
        assert.matches("err NoHostAvailable", out, 1, true)
        assert.matches("unavailable", out, 1, true)
        assert.is_true(h.now() - t0 < 30)
    end)
end)
