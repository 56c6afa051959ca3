-- Connection state, differentially: scripted scenarios on one or more
-- connections ("a", "b", ...) run against a redis-server directly and
-- through shotover (workers = 1, in front of a second redis-server of the
-- same build), and the raw bytes each connection receives must be the same,
-- step by step (t/lib/redis_diff.lua runs and compares them; its header
-- says what a step can be).  Client tracking and its pushes, transactions,
-- SELECT/RESET, pub/sub, blocking commands, CLIENT REPLY, CLIENT
-- subcommands, scripts, errors, CLIENT KILL and CLIENT PAUSE, in RESP2 and
-- RESP3.
--
-- Each server is emptied (FLUSHALL, SCRIPT FLUSH, FUNCTION FLUSH) before
-- each scenario runs on it, and every scenario has connections of its own.
-- Two servers rather than one: direct CLIENT KILL filters would otherwise
-- kill shotover's backend connections.
--
-- Differences from Redis that are by design are few and marked with
-- `shotover = { reply = prefix, why = ... }`: through shotover the reply must
-- then start with that prefix.
local h = require("harness")
local diff = require("redis_diff")

local INTS, HELLO, FIELDS = diff.mask.ints, diff.mask.hello, diff.mask.client_fields
local MONITOR = diff.mask.monitor

-- the named connections switch to RESP3 first
local function hello3(...)
    local out = {}
    for i, c in ipairs({ ... }) do out[i] = { c, "HELLO", "3", mask = HELLO } end
    return out
end

-- steps: the lists given, one after the other
local function steps(...)
    local out = {}
    for _, list in ipairs({ ... }) do
        for _, st in ipairs(list) do out[#out + 1] = st end
    end
    return out
end

-- the same scenario in RESP2 and in RESP3 (`conns` switched by HELLO 3);
-- fn(resp) gives the steps, for the few that differ by protocol
local function both(name, conns, fn)
    return {
        { name = name .. " (RESP2)", steps = fn(2) },
        { name = name .. " (RESP3)", steps = steps(hello3(unpack(conns)), fn(3)) },
    }
end

local KILL_WHY = "CLIENT KILL filters that can match other clients (TYPE normal/master/replica, "
    .. "USER, ADDR/LADDR of shotover, MAXAGE) could close backend connections shotover "
    .. "shares among its clients"

---------------------------------------------------------------------------
-- the catalogue
---------------------------------------------------------------------------

local SCENARIOS = {

-- 1. RESP3 client tracking, default mode --------------------------------

{ name = "tracking RESP3 default: own HDEL gives the reply, then the invalidate push",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "HSET", "myhash", "f", "1" },
    { "a", "HGET", "myhash", "f" },
    { "a", "HDEL", "myhash", "f", n = 2 },      -- :1, >2 invalidate [myhash]
    { "a", "HSET", "myhash", "f", "2" },        -- not read since: no push
  }) },

{ name = "tracking RESP3 default: a pipelined HGET, HDEL, PING",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "HSET", "myhash", "f", "1" },
    { "a", pipe = { { "HGET", "myhash", "f" }, { "HDEL", "myhash", "f" }, { "PING" } }, n = 4 },
  }) },

{ name = "tracking RESP3 default: the push of a write in MULTI comes after EXEC's reply",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "HSET", "myhash", "f", "1" },
    { "a", "HGET", "myhash", "f" },
    { "a", "MULTI" },
    { "a", "HSET", "myhash", "f", "2" },
    { "a", "EXEC", n = 2 },
  }) },

{ name = "tracking RESP3 default: another connection's write, then PING (push before +PONG)",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "HSET", "myhash", "f", "1" },
    { "a", "HGET", "myhash", "f" },
    { "b", "HSET", "myhash", "f", "2" },
    { "a", "PING", n = 2 },
    { "b", "HSET", "myhash", "f", "3" },         -- no longer tracked
    { "a", "PING" },
  }) },

{ name = "tracking RESP3 default: FLUSHALL from another connection invalidates everything (null)",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "GET", "k" },
    { "b", "FLUSHALL" },
    { "a", "PING", n = 2 },                       -- >2 invalidate _, +PONG
    { "a", "CLIENT", "TRACKING", "on", "BCAST" },  -- can't switch BCAST on
  }) },

-- 2. RESP3 tracking modes -------------------------------------------------

{ name = "tracking RESP3 BCAST PREFIX user:",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:" },
    { "b", "SET", "user:1", "x" },
    { "b", "SET", "other", "x" },
    { "a", "PING", n = 2 },
    { "a", "SET", "user:2", "y", n = 2 },         -- own write, broadcast too
    { "a", "CLIENT", "TRACKINGINFO" },
  }) },

{ name = "tracking RESP3 OPTIN with CLIENT CACHING yes",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on", "OPTIN" },
    { "a", "CLIENT", "CACHING", "yes" },
    { "a", "GET", "k1" },                         -- tracked
    { "a", "GET", "k2" },                         -- not tracked
    { "b", "SET", "k2", "x" },
    { "a", "PING" },
    { "b", "SET", "k1", "x" },
    { "a", "PING", n = 2 },
  }) },

{ name = "tracking RESP3 OPTOUT with CLIENT CACHING no",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on", "OPTOUT" },
    { "a", "CLIENT", "CACHING", "no" },
    { "a", "GET", "k1" },                         -- not tracked
    { "a", "GET", "k2" },                         -- tracked
    { "b", "SET", "k1", "x" },
    { "a", "PING" },
    { "b", "SET", "k2", "x" },
    { "a", "PING", n = 2 },
  }) },

{ name = "tracking RESP3 NOLOOP: no push for the connection's own write",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on", "NOLOOP" },
    { "a", "GET", "k" },
    { "a", "SET", "k", "mine" },
    { "a", "GET", "k" },
    { "b", "SET", "k", "theirs" },
    { "a", "PING", n = 2 },
  }) },

{ name = "tracking RESP3 REDIRECT to another RESP3 connection (it gets the push)",
  steps = steps(hello3("a", "b"), {
    { "b", "CLIENT", "ID", save = "id_b", mask = INTS },
    { "a", "CLIENT", "TRACKING", "on", "REDIRECT", "$id_b" },
    { "a", "GET", "k" },
    { "c", "SET", "k", "v" },
    { "b", "PING", n = 2 },                       -- >2 invalidate [k], +PONG
    { "a", "PING" },                              -- nothing for a
  }) },

{ name = "tracking RESP3 REDIRECT whose target went away: tracking-redir-broken",
  steps = steps(hello3("a"), {
    { "b", "CLIENT", "ID", save = "id_b", mask = INTS },
    { "a", "CLIENT", "TRACKING", "on", "REDIRECT", "$id_b" },
    { "a", "GET", "k" },
    { "b", close = true },
    { gone = "id_b" },
    { "c", "SET", "k", "v" },
    { "a", "PING", n = 2, mask = INTS },          -- >2 tracking-redir-broken :id
  }) },

-- 3. RESP2 tracking with REDIRECT ------------------------------------------

{ name = "tracking RESP2 REDIRECT to a subscriber of __redis__:invalidate",
  steps = {
    { "b", "CLIENT", "ID", save = "id_b", mask = INTS },
    { "b", "SUBSCRIBE", "__redis__:invalidate" },
    { "a", "CLIENT", "TRACKING", "on", "REDIRECT", "$id_b" },
    { "a", "GET", "k" },
    { "c", "SET", "k", "v" },
    { "b", read = 1 },                            -- message __redis__:invalidate [k]
    { "a", "CLIENT", "GETREDIR", mask = INTS },
    { "a", "CLIENT", "TRACKINGINFO", mask = INTS },
    { "a", "CLIENT", "TRACKING", "off" },
    { "a", "CLIENT", "GETREDIR" },                -- -1
  } },

{ name = "tracking RESP2 REDIRECT to a client id that does not exist",
  steps = {
    { "a", "CLIENT", "TRACKING", "on", "REDIRECT", "999999" },
    { "a", "CLIENT", "TRACKINGINFO" },
  } },

{ name = "tracking RESP2 without REDIRECT",
  steps = {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "GET", "k" },
    { "b", "SET", "k", "v" },
    { "a", "PING" },
  } },

-- 4. transactions -----------------------------------------------------------

both("MULTI/EXEC, DISCARD, EXEC and DISCARD without MULTI", { "a" }, function()
    return {
        { "a", "MULTI" },
        { "a", "SET", "k", "1" },
        { "a", "INCR", "k" },
        { "a", "EXEC" },
        { "a", "MULTI" },
        { "a", "SET", "k", "5" },
        { "a", "DISCARD" },
        { "a", "GET", "k" },
        { "a", "EXEC" },
        { "a", "DISCARD" },
        { "a", pipe = { { "MULTI" }, { "INCR", "k" }, { "GET", "k" }, { "EXEC" } } },
    }
end),

both("WATCH, another connection writes, EXEC is nil", { "a" }, function()
    return {
        { "a", "SET", "k", "0" },
        { "a", "WATCH", "k" },
        { "b", "SET", "k", "theirs" },
        { "a", "MULTI" },
        { "a", "SET", "k", "mine" },
        { "a", "EXEC" },                          -- *-1 / _
        { "a", "GET", "k" },
        { "a", "WATCH", "k" },
        { "a", "UNWATCH" },
        { "b", "SET", "k", "again" },
        { "a", "MULTI" },
        { "a", "INCR", "n" },
        { "a", "EXEC" },
    }
end),

both("blocking commands inside MULTI do not block", { "a" }, function()
    return {
        { "a", "MULTI" },
        { "a", "BLPOP", "l", "0" },
        { "a", "XREAD", "BLOCK", "0", "STREAMS", "s", "$" },
        { "a", "EXEC" },                          -- nils, at once
    }
end),

both("EXECABORT after a wrong-arity command in MULTI, nested MULTI", { "a" }, function()
    return {
        { "a", "MULTI" },
        { "a", "GET" },
        { "a", "SET", "k", "v" },
        { "a", "EXEC" },                          -- -EXECABORT
        { "a", "GET", "k" },
        { "a", "MULTI" },
        { "a", "MULTI" },                         -- nested: error, still in MULTI
        { "a", "SET", "k", "w" },
        { "a", "EXEC" },
        { "a", "MULTI" },
        { "a", "WATCH", "k" },                    -- WATCH inside MULTI: error
        { "a", "DISCARD" },
    }
end),

-- 5. SELECT and RESET --------------------------------------------------------

both("SELECT 2, then RESET goes back to db 0", { "a" }, function()
    return {
        { "a", "SELECT", "2" },
        { "a", "SET", "k", "in2" },
        { "a", "GET", "k" },
        { "b", "GET", "k" },                      -- db 0
        { "a", "CLIENT", "SETNAME", "before-reset" },
        { "a", "RESET" },                         -- +RESET
        { "a", "GET", "k" },
        { "a", "CLIENT", "GETNAME" },
        { "a", "SELECT", "2" },
        { "a", "GET", "k" },
        { "a", "SELECT", "16" },                  -- out of range
    }
end),

both("RESET in subscribe mode", { "a" }, function()
    return {
        { "a", "SUBSCRIBE", "ch" },
        { "a", "RESET" },
        { "a", "GET", "k" },
        { "b", "PUBLISH", "ch", "nobody" },       -- :0
        { "a", "PING" },
    }
end),

{ name = "RESET after CLIENT TRACKING (back to RESP2, tracking off)",
  steps = steps(hello3("a"), {
    { "a", "CLIENT", "TRACKING", "on" },
    { "a", "GET", "k" },
    { "a", "RESET" },
    { "a", "CLIENT", "TRACKINGINFO" },
    { "b", "SET", "k", "v" },
    { "a", "GET", "k" },                          -- a RESP2 reply, no push
  }) },

{ name = "RESET inside MULTI and after WATCH",
  steps = {
    { "a", "WATCH", "k" },
    { "a", "MULTI" },
    { "a", "SET", "k", "v" },
    { "a", "RESET" },
    { "a", "EXEC" },                              -- EXEC without MULTI
    { "a", "GET", "k" },
  } },

{ name = "a pipeline that changes connection state midway (SELECT, HELLO)",
  steps = {
    { "a", pipe = { { "SET", "k", "v0" }, { "SELECT", "1" }, { "GET", "k" }, { "SET", "k", "v1" },
                    { "SELECT", "0" }, { "GET", "k" } } },
    { "b", "GET", "k" },
    { "a", pipe = { { "PING" }, { "HELLO", "3" }, { "GET", "nokey" }, { "HELLO", "2" },
                    { "GET", "nokey" } }, mask = HELLO },
    { "a", pipe = { { "SELECT", "1" }, { "MULTI" }, { "GET", "k" }, { "EXEC" }, { "RESET" },
                    { "GET", "k" } } },
  } },

-- 6. pub/sub -----------------------------------------------------------------

both("SUBSCRIBE, PSUBSCRIBE, PUBLISH, PING, UNSUBSCRIBE all", { "a" }, function(resp)
    local s = {
        { "a", "SUBSCRIBE", "ch1", "ch2", n = 2 },
        { "a", "PSUBSCRIBE", "ch*" },
        { "b", "PUBLISH", "ch1", "hello" },       -- :2 (channel and pattern)
        { "a", read = 2 },                        -- message, pmessage
        { "b", "PUBLISH", "ch2", "bin\r\n\0x" },
        { "a", read = 2 },
        { "a", "PING" },                          -- RESP2: *2 pong ""
        { "a", "PING", "hi" },
        -- one reply per channel, in the server's hash-table order, whose
        -- seed is random: the names are masked, the counts compared
        { "a", "UNSUBSCRIBE", n = 2, mask = { { "ch[12]", "chN" } } },
        { "a", "PUNSUBSCRIBE" },
        { "a", "UNSUBSCRIBE" },                   -- none left: one reply
        { "b", "PUBLISH", "ch1", "late" },         -- :0
    }
    if resp == 2 then
        s[#s + 1] = { "a", "GET", "k" }           -- back to normal commands
    end
    return s
end),

both("subscribe mode: commands allowed and refused", { "a" }, function()
    return {
        { "a", "SUBSCRIBE", "ch" },
        { "a", "GET", "k" },                      -- RESP2: refused; RESP3: fine
        { "a", "SUBSCRIBE", "ch", "ch2", n = 2 },  -- ch again: count unchanged
        { "a", "UNSUBSCRIBE", "nosuch" },
        { "a", "PUNSUBSCRIBE", "p1", "p2", n = 2 },
    }
end),

both("SSUBSCRIBE and SPUBLISH on a non-cluster server", { "a" }, function()
    return {
        { "a", "SSUBSCRIBE", "sch" },
        { "b", "SPUBLISH", "sch", "shard-msg" },
        { "a", read = 1 },                        -- smessage
        { "a", "SUNSUBSCRIBE", "sch" },
        { "b", "SPUBLISH", "sch", "late" },
    }
end),

both("SUBSCRIBE pipelined with other commands", { "a" }, function()
    return {
        { "a", pipe = { { "GET", "k" }, { "SUBSCRIBE", "ch" }, { "PING" } } },
        { "b", "PUBLISH", "ch", "m" },
        { "a", pipe = { { "PING" }, { "UNSUBSCRIBE", "ch" }, { "PING" } }, n = 4 },
    }
end),

{ name = "pub/sub RESP3: ordinary commands between messages",
  steps = steps(hello3("a"), {
    { "a", "SUBSCRIBE", "ch" },
    { "a", "SET", "k", "v" },
    { "b", "PUBLISH", "ch", "m1" },
    { "a", "GET", "k", n = 2 },                   -- the message, then $1 v
    { "a", pipe = { { "GET", "k" }, { "PING" } } },
  }) },

-- 7. blocking commands ----------------------------------------------------------

both("BLPOP woken by LPUSH from another connection", { "a" }, function()
    return {
        { "a", "BLPOP", "l", "0", n = 0 },
        { blocked = 1 },
        { "b", "LPUSH", "l", "x" },
        { "a", read = 1 },
        { "a", "LLEN", "l" },
    }
end),

both("XREADGROUP BLOCK 0, FLUSHALL from another connection", { "a" }, function()
    return {
        { "a", "XGROUP", "CREATE", "s", "g", "$", "MKSTREAM" },
        { "a", "XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">", n = 0 },
        { blocked = 1 },
        { "b", "FLUSHALL" },
        { "a", read = 1 },                        -- -UNBLOCKED ...
    }
end),

both("CLIENT UNBLOCK, TIMEOUT and ERROR", { "a" }, function()
    return {
        { "a", "CLIENT", "ID", save = "id_a", mask = INTS },
        { "a", "BLPOP", "l", "0", n = 0 },
        { blocked = 1 },
        { "b", "CLIENT", "UNBLOCK", "$id_a" },     -- :1
        { "a", read = 1 },                        -- nil
        { "a", "BRPOP", "l", "0", n = 0 },
        { blocked = 1 },
        { "b", "CLIENT", "UNBLOCK", "$id_a", "ERROR" },
        { "a", read = 1 },                        -- -UNBLOCKED ...
        { "b", "CLIENT", "UNBLOCK", "$id_a" },     -- not blocked: :0
    }
end),

both("BLPOP with a 0.1 s timeout times out; pipelined BLPOPs", { "a" }, function()
    return {
        { "a", "BLPOP", "l", "0.1" },
        { "a", pipe = { { "RPUSH", "l", "x" }, { "BLPOP", "l", "0.1" },
                        { "BLPOP", "l", "0.1" }, { "PING" } } },
        { "a", "BLMOVE", "l", "m", "LEFT", "RIGHT", "0.1" },
        { "a", "BZPOPMIN", "z", "0.1" },
    }
end),

both("commands pipelined behind a BLPOP that blocks wait for it", { "a" }, function()
    return {
        { "a", pipe = { { "BLPOP", "l", "0" }, { "PING" }, { "ECHO", "after" } }, n = 0 },
        { blocked = 1 },
        { "b", "RPUSH", "l", "x" },
        { "a", read = 3 },
    }
end),

both("WAIT 1 with no replica, XREAD BLOCK 100 on an empty stream", { "a" }, function()
    return {
        { "a", "WAIT", "1", "100", took_at_least = 0.05 },
        { "a", "XADD", "s", "1-1", "f", "v" },
        { "a", "XREAD", "BLOCK", "100", "STREAMS", "s", "$", took_at_least = 0.05 },
        { "a", "XREAD", "BLOCK", "100", "STREAMS", "s", "0" },
    }
end),

{ name = "MONITOR sees another connection's commands",
  final_mask = MONITOR,                            -- a's own final PING shows
  steps = {
    { "a", "MONITOR" },
    { "b", "SET", "k", "v" },
    { "a", read = 1, mask = MONITOR },
    { "b", "SELECT", "3" },
    { "b", "EVAL", "return redis.call('SET', 'k', 'v')", "0" },
    { "a", read = 3, mask = MONITOR },             -- SELECT, EVAL, and SET in [3 lua]
  } },

-- 8. CLIENT REPLY ----------------------------------------------------------

both("CLIENT REPLY OFF, SKIP, ON", { "a" }, function()
    return {
        { "a", "CLIENT", "REPLY", "OFF", n = 0 },
        { "a", "SET", "k", "1", n = 0 },
        { "a", "GET", "k", n = 0 },
        { "a", "INCR", "k", n = 0 },
        { "a", "CLIENT", "REPLY", "ON" },         -- +OK
        { "a", "GET", "k" },                      -- 2
        { "a", "CLIENT", "REPLY", "SKIP", n = 0 },
        { "a", "INCR", "k", n = 0 },              -- skipped
        { "a", "GET", "k" },                      -- 3
        { "a", pipe = { { "CLIENT", "REPLY", "SKIP" }, { "PING" }, { "ECHO", "x" } }, n = 1 },
        { "a", pipe = { { "CLIENT", "REPLY", "OFF" }, { "PING" }, { "CLIENT", "REPLY", "ON" },
                        { "ECHO", "back" } }, n = 2 },
        { "a", "CLIENT", "REPLY", "MAYBE" },      -- syntax error
    }
end),

-- 9. CLIENT subcommands and friends -----------------------------------------

both("CLIENT SETNAME/GETNAME, SETINFO, NO-EVICT, NO-TOUCH, READONLY, READWRITE, WAIT", { "a" }, function()
    return {
        { "a", "CLIENT", "GETNAME" },
        { "a", "CLIENT", "SETNAME", "conn-a" },
        { "a", "CLIENT", "GETNAME" },
        { "a", "CLIENT", "SETNAME", "has space" },
        { "a", "CLIENT", "SETINFO", "lib-name", "x" },
        { "a", "CLIENT", "NO-EVICT", "on" },
        { "a", "CLIENT", "NO-EVICT", "maybe" },
        { "a", "CLIENT", "NO-TOUCH", "on" },
        { "a", "READONLY" },
        { "a", "READWRITE" },
        { "a", "WAIT", "0", "0" },
        { "a", "CLIENT", "NOSUCH" },
    }
end),

both("CLIENT ID, CLIENT INFO and CLIENT LIST ID (by shape)", { "a" }, function()
    return {
        { "a", "CLIENT", "SETNAME", "shape" },
        { "a", "CLIENT", "ID", save = "id_a", mask = INTS },
        { "a", "CLIENT", "INFO", mask = FIELDS },
        { "a", "CLIENT", "LIST", "ID", "$id_a", mask = FIELDS },
        { "b", "CLIENT", "LIST", "ID", "$id_a", mask = FIELDS },
        { "a", "CLIENT", "LIST", "ID", "notanumber" },
    }
end),

{ name = "HELLO: SETNAME, back to 2, AUTH without a password",
  steps = {
    { "a", "HELLO", "3", "SETNAME", "via-hello", mask = HELLO },
    { "a", "CLIENT", "GETNAME" },
    { "a", "HELLO", "2", mask = HELLO },
    { "a", "HELLO", mask = HELLO },
    { "a", "HELLO", "3", "AUTH", "default", "nopass", mask = HELLO },
    { "a", "HELLO", "3", "AUTH", "default" },       -- syntax error
  } },

-- 10. scripts and functions ---------------------------------------------------

both("EVAL, SCRIPT LOAD + EVALSHA, NOSCRIPT, FUNCTION LOAD + FCALL, EVAL_RO", { "a" }, function()
    return {
        { "a", "EVAL", "return {1, 'two', {3}}", "0" },
        { "a", "EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "k", "v" },
        { "a", "SCRIPT", "LOAD", "return 'loaded'", save = "sha" },
        { "a", "EVALSHA", "$sha", "0" },
        { "b", "EVALSHA", "$sha", "0" },
        { "a", "SCRIPT", "EXISTS", "$sha", "ffffffffffffffffffffffffffffffffffffffff" },
        { "a", "EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0" },
        { "a", "FUNCTION", "LOAD",
          "#!lua name=mylib\nredis.register_function('echo1', function(keys, args) return args[1] end)" },
        { "a", "FCALL", "echo1", "0", "hello" },
        { "a", "FCALL_RO", "echo1", "0", "ro" },   -- not flagged no-writes
        { "a", "EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k" },
        { "a", "EVAL_RO", "return redis.call('SET', KEYS[1], 'x')", "1", "k" },
        { "a", "EVAL", "return redis.error_reply('MY failure')", "0" },
        { "a", "EVAL", "return {err = 'x'}", "0" },
        { "a", "EVAL", "return", "0" },
        { "a", "SCRIPT", "KILL" },                -- NOTBUSY
        { "a", "FUNCTION", "KILL" },
    }
end),

both("RESP2/RESP3 reply types (map, set, double, boolean, big number)", { "a" }, function()
    return {
        { "a", "HSET", "h", "f", "v" },
        { "a", "HGETALL", "h" },
        { "a", "SADD", "s", "x" },
        { "a", "SMEMBERS", "s" },
        { "a", "ZADD", "z", "1.5", "m" },
        { "a", "ZSCORE", "z", "m" },
        { "a", "ZRANGE", "z", "0", "-1", "WITHSCORES" },
        { "a", "CONFIG", "GET", "maxmemory-policy" },
        { "a", "EVAL", "return true", "0" },
        { "a", "EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", "h" },
        { "a", "EVAL", "return {double = 3.5}", "0" },
        { "a", "EVAL", "return {big_number = '123456789012345678901234567890'}", "0" },
        { "a", "XADD", "st", "1-1", "f", "v" },
        { "a", "XINFO", "STREAM", "st" },
    }
end),

-- 11. errors -----------------------------------------------------------------

both("unknown command, wrong arity, AUTH without a password, HELLO 4", { "a" }, function()
    return {
        { "a", "NOSUCHCOMMAND", "x", "y" },
        { "a", "GET" },
        { "a", "SET", "k" },
        { "a", "AUTH", "secret" },
        { "a", "AUTH", "default", "secret" },
        { "a", "HELLO", "4" },
        { "a", "HELLO", "x" },
        { "a", "SELECT", "x" },
        { "a", "PING" },
    }
end),

{ name = "QUIT: +OK, then the connection closes",
  steps = {
    { "a", "SET", "k", "v" },
    { "a", "QUIT" },
    { "a", closed = true },
    { "b", "GET", "k" },
  } },

-- 13. CLIENT PAUSE ----------------------------------------------------------

{ name = "CLIENT PAUSE 200 WRITE holds another connection's SET until it ends",
  steps = {
    { "b", "SET", "k", "before" },
    { "a", "CLIENT", "PAUSE", "200", "WRITE" },
    { "b", "GET", "k" },                          -- reads go on
    { "b", "SET", "k", "after", took_at_least = 0.1 },
    { "b", "GET", "k" },
    { "a", "CLIENT", "UNPAUSE" },
  } },

-- 12. CLIENT KILL (last: they close connections) ----------------------------

{ name = "CLIENT KILL ID of another connection closes it",
  steps = {
    { "a", "CLIENT", "ID", save = "id_a", mask = INTS },
    { "a", "SET", "k", "v" },
    { "b", "CLIENT", "KILL", "ID", "$id_a" },      -- :1
    { "a", closed = true },
    { "b", "CLIENT", "KILL", "ID", "$id_a" },      -- gone: :0
  } },

{ name = "CLIENT KILL ID of itself with SKIPME no: :1, then closed",
  steps = {
    { "a", "CLIENT", "ID", save = "id_a", mask = INTS },
    { "a", "CLIENT", "KILL", "ID", "$id_a", "SKIPME", "no" },
    { "a", closed = true },
  } },

{ name = "CLIENT KILL ID of itself (SKIPME yes by default): :0",
  steps = {
    { "a", "CLIENT", "ID", save = "id_a", mask = INTS },
    { "a", "CLIENT", "KILL", "ID", "$id_a" },
  } },

{ name = "CLIENT KILL TYPE pubsub closes the subscriber",
  steps = {
    { "b", "SUBSCRIBE", "ch" },
    { "a", "CLIENT", "KILL", "TYPE", "pubsub" },  -- :1
    { "b", closed = true },
    { "c", "PUBLISH", "ch", "nobody" },
  } },

{ name = "CLIENT KILL TYPE normal: refused through shotover",
  steps = {
    { "b", "PING" },
    { "a", "CLIENT", "KILL", "TYPE", "normal",
      shotover = { reply = "-ERR shotover:", why = KILL_WHY, kept = { "b" } } },
  } },

{ name = "CLIENT KILL USER default: refused through shotover",
  steps = {
    { "b", "PING" },
    { "a", "CLIENT", "KILL", "USER", "default",
      shotover = { reply = "-ERR shotover:", why = KILL_WHY, kept = { "b" } } },
  } },

{ name = "CLIENT KILL MAXAGE 0: refused through shotover (a syntax error for Redis 7.0)",
  steps = {
    { "b", "PING" },
    { "a", "CLIENT", "KILL", "MAXAGE", "0",
      shotover = { reply = "-ERR shotover:", why = KILL_WHY } },
  } },

{ name = "CLIENT KILL LADDR of the server: refused through shotover",
  steps = {
    { "b", "PING" },
    { "a", "CLIENT", "KILL", "LADDR", "$addr",
      shotover = { reply = "-ERR shotover:", why = KILL_WHY, kept = { "b" } } },
  } },

}

-- both() gives pairs: flatten
do
    local flat = {}
    for _, s in ipairs(SCENARIOS) do
        if s.name then flat[#flat + 1] = s else
            for _, v in ipairs(s) do flat[#flat + 1] = v end
        end
    end
    SCENARIOS = flat
end

---------------------------------------------------------------------------

describe("connection state through shotover and straight to redis-server", function()
    local env, direct, proxy

    setup(function()
        local r = h.redis_server()
        env = h.start_pair({ workers = 1 })
        direct = diff.side({ name = "redis-server", port = r.port, server_port = r.port })
        proxy = diff.side({ name = "shotover", port = env.port, server_port = env.redis.port })
    end)
    teardown(h.cleanup)

    it("compares bytes (a difference is seen)", function()
        local sc = { name = "self-check", steps = { { "a", "ECHO", "x" } } }
        local d = { recs = { { bytes = "$1\r\nx\r\n" } }, final = {} }
        local p = { recs = { { bytes = "$1\r\ny\r\n" } }, final = {} }
        local problems = diff.compare(sc, d, p)
        assert.equal(1, #problems)
        assert.truthy(problems[1]:find('"$1\\13\\nx\\13\\n"', 1, true), problems[1])
        assert.same({}, diff.compare(sc, d, d))
    end)

    for _, sc in ipairs(SCENARIOS) do
        it(sc.name, function()
            diff.check(sc, direct, proxy, env.port)
        end)
    end

    it("kept shotover serving", function()
        assert.is_true(env.proxy:alive())
        diff.prepare(proxy, env.port)
    end)
end)
