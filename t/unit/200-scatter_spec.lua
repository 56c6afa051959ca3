-- scatter: config errors with their paths, which commands are scattered
-- and how, and quorums decided dry (no worker: the regions run one after
-- the other on the client's connection, answered by debug_returner and
-- inline sinks).  t/integration/720 runs it against real redis-servers.
local testing = require "shotover.testing"
local scatter = require "shotover.transforms.scatter"

local function errs(el)
    local _, e = testing.check({ el }, { protocol = "redis" })
    return table.concat(e or {}, "\n")
end

local function region(name, reply)
    return { name = name, chain = { { "debug_returner", bulk = reply } } }
end

describe("scatter", function()
    it("reports config problems with their paths, all at once", function()
        assert.matches("chain%[1%]%.regions: required", errs({ "scatter" }))
        assert.matches("chain%[1%]%.regions: at least one region",
                       errs({ "scatter", regions = {} }))
        local e = errs({ "scatter", write_quorum = 3, read_quorum = 4,
                         regions = { region("eu", "a"), region("eu", "b") } })
        assert.matches('chain%[1%]%.regions%[2%]%.name: duplicate region name "eu" %(also regions%[1%]%)', e)
        assert.matches("chain%[1%]%.write_quorum: 3 is more than the 2 regions", e)
        assert.matches("chain%[1%]%.read_quorum: 4 is more than the 2 regions", e)
        e = errs({ "scatter", regions = {
            { name = "eu" },
            { name = "", chain = { { "null" } } },
            { name = "ap", chain = { { "null" } }, timeout_ms = 0, ttl = 1 },
            "us" } })
        assert.matches("chain%[1%]%.regions%[1%]%.chain: required", e)
        assert.matches("chain%[1%]%.regions%[2%]%.name: required, a non%-empty string", e)
        assert.matches("chain%[1%]%.regions%[3%]%.timeout_ms: expected an integer >= 1, got 0", e)
        assert.matches("chain%[1%]%.regions%[3%]%.ttl: unknown key", e)
        assert.matches("chain%[1%]%.regions%[4%]: expected a table", e)
        -- a region's chain is checked like any chain, with its path
        e = errs({ "scatter", regions = { region("eu", "a"),
            { name = "us", chain = { { "redis", remote = 6379 } } } } })
        assert.matches('chain%[1%]%.regions%[2%]%.chain%[1%]%.remote: expected "host:port"', e)
        assert.matches('chain%[1%]%.regions%[1%]%.chain: "coalesce" holds batches',
                       errs({ "scatter", regions = { { name = "eu", chain = {
                           { "coalesce", max_requests = 10 },
                           { "redis", remote = "127.0.0.1:1" } } } } }))
        -- repairs copy the agreed value: a majority must agree
        local three = { region("eu", "a"), region("us", "a"), region("ap", "a") }
        assert.matches("chain%[1%]%.read_quorum: read repair needs a majority of the regions %(2 of 3%), or repair = false",
                       errs({ "scatter", read_quorum = 1, regions = three }))
        assert.equal("", errs({ "scatter", read_quorum = 1, repair = false,
                                regions = three }))
        assert.matches("write_quorum", errs({ "scatter", write_quorum = 0,
                                              regions = { region("eu", "a") } }))
        assert.equal("", errs({ "scatter", write_quorum = 2, read_quorum = 2,
                                timeout_ms = 200, regions = {
                                    region("eu", "a"), region("us", "a"),
                                    { name = "ap", timeout_ms = 50,
                                      chain = { { "redis_cluster",
                                                  nodes = { "h:1" } } } } } }))
    end)

    it("scatters reads and idempotent writes and refuses the rest",
       function()
        local function mode(line)
            return (scatter.mode_of(testing.redis(line)))
        end
        local m, pos = scatter.mode_of(testing.redis("GET k"))
        assert.equal(scatter.READ, m)
        assert.equal(2, pos)                    -- one key: repairable
        m, pos = scatter.mode_of(testing.redis("MGET a b"))
        assert.equal(scatter.READ, m)
        assert.is_nil(pos)                      -- several keys: not repaired
        assert.equal(scatter.READ, mode("HGETALL h"))
        assert.equal(scatter.READ, mode("XREAD COUNT 1 STREAMS s 0"))
        assert.equal(scatter.READ, mode("EVAL_RO x 1 k"))     -- read-only scripts
        for _, w in ipairs({ "SET k v", "SET k v EX 10", "DEL a b", "HSET h f v",
                             "EXPIREAT k 2000000000", "ZADD z 1 m", "SADD s m",
                             "MSET a 1 b 2", "PEXPIRE k 100" }) do
            assert.equal(scatter.WRITE, mode(w), w)
        end
        for _, a in ipairs({ "PING", "TTL k", "KEYS *", "SCAN 0", "DBSIZE",
                             "RANDOMKEY", "SRANDMEMBER s" }) do
            assert.equal(scatter.ANY, mode(a), a)
        end
        for _, r in ipairs({ "INCR k", "LPUSH l a", "APPEND k v", "ZADD z INCR 1 m",
                             "HINCRBY h f 1", "MULTI", "EXEC", "WATCH k",
                             "SUBSCRIBE c", "PUBLISH c m", "BLPOP l 0",
                             "SELECT 1", "AUTH p", "FLUSHALL", "EVAL x 0",
                             "RENAME a b", "GETSET k v", "SPOP s",
                             "XREAD BLOCK 0 STREAMS s $", "WAIT 1 0",
                             "NOSUCHCOMMAND" }) do
            assert.is_nil(mode(r), r)
        end
    end)

    it("tells a region's failure from a reply about the data", function()
        local message = require "shotover.message"
        local function failed(s)
            return scatter.failed(message.frame_from_resp(s))
        end
        assert.is_true(scatter.failed(nil))
        for _, e in ipairs({ "-ERR shotover: backend 127.0.0.1:1 unavailable\r\n",
                             "-ERR shotover scatter \"x\": nope\r\n",
                             "-CLUSTERDOWN The cluster is down\r\n",
                             "-LOADING Redis is loading the dataset in memory\r\n",
                             "-BUSY Redis is busy running a script\r\n",
                             "-READONLY You can't write against a read only replica.\r\n",
                             "-OOM command not allowed\r\n", "-TRYAGAIN\r\n",
                             "-MOVED 3999 127.0.0.1:6381\r\n" }) do
            assert.is_true(failed(e), e)
        end
        for _, v in ipairs({ "$1\r\nv\r\n", "$-1\r\n", "+OK\r\n", ":1\r\n",
                             "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                             "-ERR wrong number of arguments for 'get' command\r\n",
                             "-BUSYKEY Target key name already exists.\r\n",
                             "-ERR shotoverish\r\n" }) do
            assert.is_false(failed(v), v)
        end
    end)

    it("answers a read when read_quorum replies agree, dry", function()
        local t = testing.build({ { "scatter", read_quorum = 2, regions = {
            region("eu", "a"), region("us", "b"), region("ap", "a") } } },
            "redis")
        assert.are.same({ "a" }, t:replies("GET k"))
        t = testing.build({ { "scatter", read_quorum = 3, regions = {
            region("eu", "a"), region("us", "b"), region("ap", "a") } } },
            "redis")
        assert.are.same({ 'ERR shotover scatter "scatter": read quorum 3 of 3 '
                          .. "not reached (no 3 replies agree): eu: a reply "
                          .. "that does not agree; us: a reply that does not "
                          .. "agree" },       -- decided without ap's
                        t:replies("GET k"))
    end)

    it("answers a write once write_quorum regions acknowledged it, dry",
       function()
        local down = { name = "us", chain = { { "debug_returner",
            error = "ERR shotover: backend 127.0.0.1:1 unavailable" } } }
        local function ok(name)
            return { name = name, chain = { { "debug_returner",
                                              simple = "OK" } } }
        end
        local t = testing.build({ { "scatter", write_quorum = 2,
            regions = { ok("eu"), down, ok("ap") } } }, "redis")
        assert.are.same({ "OK", "OK" }, t:replies("SET k v", "DEL k"))
        t = testing.build({ { "scatter", write_quorum = 3,
            regions = { ok("eu"), down, ok("ap") } } }, "redis")
        assert.are.same({ 'ERR shotover scatter "scatter": write quorum 3 of '
                          .. "3 not reached: eu: acknowledged; us: ERR "
                          .. "shotover: backend "
                          .. "127.0.0.1:1 unavailable" },
                        t:replies("SET k v"))
        -- the regions' own error, when they all give the same one
        t = testing.build({ { "scatter", regions = {
            { name = "eu", chain = { { "debug_returner", error = "WRONGTYPE no" } } },
            { name = "us", chain = { { "debug_returner", error = "WRONGTYPE no" } } } } } },
            "redis")
        assert.are.same({ "WRONGTYPE no" }, t:replies("HSET k f v"))
    end)

    it("refuses what it does not scatter, in a batch with the rest, dry",
       function()
        local t = testing.build({ { "scatter", regions = {
            region("eu", "a"), region("us", "a") } } }, "redis")
        assert.are.same({ "a", 'ERR shotover scatter "scatter": INCR is not '
                          .. "sent to every region (only reads and "
                          .. "idempotent writes are): refused", "a" },
                        t:replies("GET k", "INCR n", "GET j"))
        -- the redis sinks of a dry run answer +DRY
        t = testing.build({ { "scatter", regions = {
            { name = "eu", chain = { { "redis", remote = "127.0.0.1:1" } } },
            { name = "us", chain = { { "redis", remote = "127.0.0.1:2" } } } } } },
            "redis")
        assert.are.same({ "DRY", "DRY" }, t:replies("SET k v", "GET k"))
    end)
end)
