-- A sink of another protocol inside a chain: a Cassandra source whose
-- chain holds a Redis sub-chain ending in a real redis-server.  The test
-- transform redis_statement_counter (t/lib/shotover/transforms) INCRs a
-- counter per statement kind of each CQL QUERY through that sub-chain,
-- reads the integer replies as Lua values with shotover.redis.decode, and
-- records what it read in Redis too; the CQL requests go on to a real
-- Cassandra node.  The spec checks the counters with redis-cli and that
-- the driver still gets the right answers.
local h = require("harness")
local cassandra = require("cassandra")

-- GET from the real redis-server with redis-cli: the value only
local function get(redis, key)
    local out = redis:cli("GET", key)
    return out
end

describe("a redis sub-chain in a cassandra chain", function()
    local node, redis, P

    setup(function()
        node = cassandra.start{ auth = false }
        redis = h.redis_server()
        local _
        _, P = cassandra.start_proxy{ remote = node.port, chain = string.format([[
            { "redis_statement_counter", prefix = "cql:",
              redis = { { "redis", remote = "127.0.0.1:%d" } } },]],
            redis.port) }
    end)
    teardown(h.cleanup)

    it("passes shotover check with the sub-chain checked as redis", function()
        -- the same chain with the sink in the Cassandra chain is refused
        local dir = h.tmpdir("check")
        local path = dir .. "/bad.lua"
        h.write_file(path, string.format([[
return { sources = { { name = "cql", protocol = "cassandra",
    listen = "127.0.0.1:1", chain = {
        { "redis", remote = "127.0.0.1:%d" },
    } } } }
]], redis.port))
        local r = h.run({ os.getenv("SHOTOVER_BIN"), "check", "-c", path },
                        { timeout = 20 })
        assert.are_not.equal(0, r.code)
        assert.matches('sources[1].chain[1]: transform "redis" does not '
                       .. 'support protocol "cassandra"',
                       r.stdout .. r.stderr, 1, true)
    end)

    for _, v in ipairs({ 4, 5 }) do
        it("counts each CQL statement kind in redis over protocol v" .. v
           .. " and the driver still gets its answers", function()
            local ks = "rs" .. v
            local before = {}
            for _, kind in ipairs({ "insert", "update", "delete", "select",
                                    "create_keyspace" }) do
                before[kind] = tonumber(get(redis, "cql:" .. kind)) or 0
            end
            local out = cassandra.python(string.format([[
c, s = connect(protocol_version=%d)
s.execute("CREATE KEYSPACE %s WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}")
s.execute("CREATE TABLE %s.t (k int PRIMARY KEY, v text)")
for i in range(3):
    s.execute("INSERT INTO %s.t (k, v) VALUES (%%d, 'v%%d')" %% (i, i))
s.execute("UPDATE %s.t SET v = 'changed' WHERE k = 1")
s.execute("DELETE FROM %s.t WHERE k = 2")
rows = sorted((r.k, r.v) for r in s.execute("SELECT k, v FROM %s.t"))
print('rows', rows)
print('one', s.execute("SELECT v FROM %s.t WHERE k = 0").one().v)
c.shutdown()
]], v, ks, ks, ks, ks, ks, ks, ks), { port = P, timeout = 120 })
            -- the CQL answers are the node's
            assert.matches("rows [(0, 'v0'), (1, 'changed')]", out, 1, true)
            assert.matches("one v0", out, 1, true)
            -- the counters are in the real redis-server
            local function count(kind)
                return tonumber(get(redis, "cql:" .. kind)) or 0
            end
            assert.are.equal(before.insert + 3, count("insert"))
            assert.are.equal(before.update + 1, count("update"))
            assert.are.equal(before.delete + 1, count("delete"))
            assert.are.equal(before.create_keyspace + 1,
                             count("create_keyspace"))
            -- the driver's own queries (system.local, system.peers ...)
            -- are selects too
            assert.is_true(count("select") >= before.select + 2)
            -- what the transform decoded from each INCR reply: a Lua
            -- number, the counter's value then
            assert.are.equal("number:" .. count("insert"),
                             get(redis, "cql:insert:seen"))
            assert.are.equal("number:" .. count("delete"),
                             get(redis, "cql:delete:seen"))
            assert.matches("^number:%d+$", get(redis, "cql:select:seen"))
        end)
    end
end)

describe("a redis sub-chain serving a CQL client connection", function()
    local redis, P

    setup(function()
        redis = h.redis_server()
        local _
        _, P = cassandra.start_proxy{ no_sink = true, chain = string.format([[
            { "redis_command_probe",
              redis = { { "redis", remote = "127.0.0.1:%d" } } },]],
            redis.port) }
    end)
    teardown(h.cleanup)

    -- the probe runs each QUERY's text as a Redis command and answers with
    -- one row holding the decoded reply
    local function ask(c, text)
        local r = c:request(cassandra.op.QUERY, cassandra.query_body(text))
        assert.are.equal("rows", r.result, text)
        return r.rows[1][1]
    end

    it("gives the CQL client the replies of a real redis-server, decoded", function()
        redis:cli("SET", "k", "v")
        local c = cassandra.connect(P)
        assert.are.equal("string:v", ask(c, "GET k"))
        assert.are.equal("number:1", ask(c, "INCR n"))
        assert.are.equal("number:2", ask(c, "INCR n"))
        assert.are.equal("null", ask(c, "GET nosuchkey"))
        assert.matches("^error:ERR unknown command 'NOSUCHCOMMAND'",
                       ask(c, "NOSUCHCOMMAND a"))
        assert.matches("^error:WRONGTYPE", ask(c, "HGET k f"))
        assert.are.equal("2", (redis:cli("GET", "n")))
        c:close()
    end)

    it("refuses what the C core would apply to the CQL connection itself", function()
        local c = cassandra.connect(P)
        -- QUIT would close the client connection, SUBSCRIBE and MONITOR
        -- would have their replies written into its CQL stream, and so
        -- would RESP3 pushes after HELLO 3
        for _, cmd in ipairs({ "QUIT", "SUBSCRIBE ch", "PSUBSCRIBE c*",
                               "MONITOR", "HELLO 3" }) do
            assert.matches("^error:ERR shotover: %u+ is not allowed in a "
                           .. "redis sub%-chain of a cassandra connection",
                           ask(c, cmd))
        end
        -- the connection is still up, and nothing but CQL came on it
        assert.are.equal("string:PONG", ask(c, "PING"))
        assert.are.equal("0", (redis:cli("PUBLISH", "ch", "hello")))
        h.sleep(0.3)
        assert.are.equal("string:PONG", ask(c, "PING"))
        assert.are.equal("", c.conn:buffer())
        c:close()
    end)
end)
