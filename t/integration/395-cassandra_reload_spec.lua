-- Reloading the config under a running DataStax driver workload: the
-- driver's connections, its session (USE keyspace, prepared statements)
-- and every request survive, with zero errors.
local h = require("harness")
local cassandra = require("cassandra")

local WORKLOAD = [[
import time
stop = ARGS[0]
c, s = connect(protocol_version=4)
s.execute("CREATE KEYSPACE IF NOT EXISTS rl WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE IF NOT EXISTS rl.t (k int PRIMARY KEY, v text)")
s.set_keyspace('rl')                      # USE: the connection's state
ins = s.prepare("INSERT INTO t (k, v) VALUES (?, ?)")
sel = s.prepare("SELECT v FROM t WHERE k = ?")
errors = ops = i = 0
print('running', flush=True)
while not os.path.exists(stop):
    try:
        fs = [s.execute_async(ins, (i * 8 + j, 'v%d' % (i * 8 + j))) for j in range(8)]
        for f in fs:
            f.result()
        assert s.execute(sel, (i * 8,)).one().v == 'v%d' % (i * 8)
        ops += 9
    except Exception as e:
        errors += 1
        print('error', repr(e), flush=True)
    i += 1
    if i % 20 == 0:
        print('ops', ops, flush=True)
print('done errors', errors, 'ops', ops, flush=True)
c.shutdown()
]]

local function config(port, node_port, extra)
    return string.format([[
return {
  workers = 2,
  sources = {
    { name = "cql", protocol = "cassandra", listen = "127.0.0.1:%d",
      chain = { %s { "cassandra", remote = "127.0.0.1:%d" } } },
  },
}
]], port, extra or "", node_port)
end

-- the last "ops N" the workload printed
local function ops(out)
    local n = 0
    for v in (h.read_file(out) or ""):gmatch("ops (%d+)") do n = tonumber(v) end
    return n
end

describe("reloading the config under a DataStax driver workload", function()
    local node

    setup(function() node = cassandra.start{ auth = false } end)
    teardown(h.cleanup)

    it("loses no request, connection or session", function()
        local P = h.free_port()
        local s = h.shotover({ config = config(P, node.port) })
        h.wait_until(function()
            local c = h.try_connect(P, 1)
            if c then c:close() end
            return c ~= nil
        end, 15, "shotover to listen")
        s:wait_log("running with", 15)   -- signals are handled from here
        local stop = h.tmpfile("stop")
        local proc, out = cassandra.python_spawn(WORKLOAD, { port = P, args = { stop } })
        h.wait_until(function() return ops(out) > 0 end, 60, "the workload to run")
        for i = 1, 3 do
            local before = ops(out)
            local reloaded = select(2, s:log():gsub("reloaded ", ""))
            h.write_file(s.config_path, config(P, node.port,
                i % 2 == 1 and '{ "query_counter", name = "q" },' or nil))
            assert.is_true(s.proc:kill(h.SIGHUP))
            h.wait_until(function()
                return select(2, s:log():gsub("reloaded ", "")) >= reloaded + 2
            end, 15, "both workers to reload")
            h.wait_until(function() return ops(out) > before + 100 end, 30,
                "the workload to go on after reload " .. i)
            assert.is_true(proc:alive())
        end
        h.write_file(stop, "stop")
        local st = proc:wait(60)
        assert.is_table(st, "the workload ends")
        local text = h.read_file(out)
        assert.equal(0, st.code, text)
        assert.matches("done errors 0 ops %d+", text)
        assert.is_nil(text:find("error ", 1, true), text)
    end)
end)
