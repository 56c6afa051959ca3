-- request_throttling and the shared dict under it: the GCRA step with an
-- injected clock, the dict shared by name through the FFI, and the
-- transform's decisions per request (Redis errors, CQL OVERLOADED on the
-- request's stream, a BATCH costing its statements, the handshake free).
local ffi = require "ffi"
local base = require "shotover.ffi"
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local shdict = require "shotover.shdict"

local C = base.C
local SEC = 1e9

local seq = 0
local function unique(prefix)
    seq = seq + 1
    return prefix .. seq
end

describe("a shared dict", function()
    it("is the same dict for the same name, whoever opens it", function()
        local a = assert(shdict.open(unique("same"), 10))
        local out = ffi.new("sh_shdict_t *[1]")
        local err = ffi.new("const char *[1]")
        -- a second open straight through the FFI, as another worker would
        assert.are.equal(0, C.sh_ffi_shdict_open(a.name, 99, out, err))
        assert.is_true(out[0] == a.d)
        assert.are.equal(10, a:stats().capacity)  -- the first capacity won
        assert.is_nil(shdict.open("", 10))
    end)

    it("gets, sets, increments and deletes", function()
        local d = assert(shdict.open(unique("basics"), 100))
        assert.is_nil(d:get("k"))
        assert.is_true(d:set("k", "v"))
        assert.are.equal("v", d:get("k"))
        local big = string.rep("x", 10000)        -- over the scratch buffer
        assert.is_true(d:set("big", big))
        assert.are.equal(big, d:get("big"))
        assert.are.equal(3, d:incr("n", 3))
        assert.are.equal(1, d:incr("n", -2))
        assert.are.equal("1", d:get("n"))
        local v, err = d:incr("k", 1)
        assert.is_nil(v)
        assert.are.equal("shared dict value is not an integer", err)
        assert.is_true(d:delete("k"))
        assert.is_false(d:delete("k"))
        local _, e2 = d:set("k", string.rep("x", 1024 * 1024 + 1))
        assert.matches("at most 1048576 bytes", e2)
        d:flush()
        assert.are.equal(0, d:stats().count)
    end)

    it("forgets the least recently used entries when full", function()
        local d = assert(shdict.open(unique("lru"), 3))
        d:set("a", 1)
        d:set("b", 2)
        d:set("c", 3)
        d:get("a")
        d:set("d", 4)
        assert.is_nil(d:get("b"))
        assert.are.equal("1", d:get("a"))
        assert.are.same({ count = 3, capacity = 3, evictions = 1 },
                        d:stats())
    end)
end)

describe("a GCRA step", function()
    local d = assert(shdict.open(unique("gcra"), 100))
    local t0 = 5000 * SEC
    local iv = 0.25 * SEC                         -- 4 per second

    it("lets a burst through, then refuses with a retry time", function()
        local ok = 0
        for _ = 1, 10 do
            ok = ok + (d:gcra("k", t0, iv, 4 * iv, 1) and 1 or 0)
        end
        assert.are.equal(4, ok)
        local allowed, retry = d:gcra("k", t0, iv, 4 * iv, 1)
        assert.is_false(allowed)
        assert.are.equal(iv, retry)
        -- half an interval later: still half an interval to go
        allowed, retry = d:gcra("k", t0 + iv / 2, iv, 4 * iv, 1)
        assert.is_false(allowed)
        assert.are.equal(iv / 2, retry)
    end)

    it("refills at the rate, never past the burst", function()
        assert.is_true(d:gcra("k", t0 + iv, iv, 4 * iv, 1))
        assert.is_false(d:gcra("k", t0 + iv, iv, 4 * iv, 1))
        local ok = 0
        for _ = 1, 10 do
            ok = ok + (d:gcra("k", t0 + 3600 * SEC, iv, 4 * iv, 1) and 1 or 0)
        end
        assert.are.equal(4, ok)
    end)

    it("charges costs, and never passes a cost over the burst", function()
        assert.is_true(d:gcra("c", t0, iv, 4 * iv, 3))
        local allowed, retry = d:gcra("c", t0, iv, 4 * iv, 3)
        assert.is_false(allowed)
        assert.are.equal(2 * iv, retry)
        assert.is_true(d:gcra("c", t0, iv, 4 * iv, 1))
        allowed, retry = d:gcra("c2", t0, iv, 4 * iv, 5)
        assert.is_false(allowed)
        assert.are.equal(math.huge, retry)
        assert.is_true(d:gcra("c", t0, iv, 4 * iv, 0))
    end)

    it("raises on a key that holds a plain value", function()
        d:set("plain", "x")
        assert.has_error(function() d:gcra("plain", t0, iv, 4 * iv, 1) end)
    end)
end)

local function build(protocol, elements)
    local conf = assert(config.check({ sources = { {
        name = "t", protocol = protocol, listen = "127.0.0.1:1",
        chain = elements } } }))
    return chain.build(conf.sources[1].chain, { name = "t", protocol = protocol })
end

local function redis_batch(n, cmd)
    local b = message.new_batch(0)
    for _ = 1, n do
        b:push(assert(message.command(cmd or { "INCR", "n" })))
    end
    return b
end

local function replies(resp)
    local out = {}
    for i = 1, resp.n do
        out[i] = resp[i]:raw():match("^%-ERR shotover: request throttled")
                 and "throttled" or resp[i]:raw()
    end
    return out
end

-- a rate slow enough that nothing refills while a spec runs
local SLOW = 0.001

describe("request_throttling on redis", function()
    it("decides per request in order; the allowed ones go on", function()
        local name = unique("r")
        local ch = build("redis", { { "request_throttling", name = name,
            max_requests_per_second = SLOW, burst = 3 },
            { "debug_returner", simple = "OK" } })
        local ctx = ch:context(nil)
        assert.are.same({ "+OK\r\n", "+OK\r\n", "+OK\r\n", "throttled",
                          "throttled" }, replies(ch:run(ctx, redis_batch(5))))
        assert.are.same({ "throttled", "throttled" },
                        replies(ch:run(ctx, redis_batch(2))))
        local raw = ch:run(ctx, redis_batch(1))[1]:raw()
        assert.are.equal("-ERR shotover: request throttled (" .. name
                         .. ": over 0.001 requests per second)\r\n", raw)
    end)

    it("shares one bucket between instances of the same name", function()
        local name = unique("shared")
        local el = { "request_throttling", name = name,
                     max_requests_per_second = SLOW, burst = 4 }
        -- two workers each build their own instance
        local w1 = build("redis", { el, { "debug_returner", simple = "OK" } })
        local w2 = build("redis", { el, { "debug_returner", simple = "OK" } })
        local other = build("redis", { { "request_throttling",
            name = unique("other"), max_requests_per_second = SLOW,
            burst = 4 }, { "debug_returner", simple = "OK" } })
        assert.are.same({ "+OK\r\n", "+OK\r\n", "+OK\r\n" },
                        replies(w1:run(w1:context(nil), redis_batch(3))))
        assert.are.same({ "+OK\r\n", "throttled", "throttled" },
                        replies(w2:run(w2:context(nil), redis_batch(3))))
        assert.are.same({ "+OK\r\n", "+OK\r\n", "+OK\r\n" },
                        replies(other:run(other:context(nil), redis_batch(3))))
    end)

    it("with key = \"connection\" gives each connection a bucket", function()
        local ch = build("redis", { { "request_throttling",
            name = unique("perconn"), key = "connection",
            max_requests_per_second = SLOW, burst = 2 },
            { "debug_returner", simple = "OK" } })
        local a, b = ch:context(nil), ch:context(nil)
        assert.are.same({ "+OK\r\n", "+OK\r\n", "throttled" },
                        replies(ch:run(a, redis_batch(3))))
        assert.are.same({ "+OK\r\n", "+OK\r\n", "throttled" },
                        replies(ch:run(b, redis_batch(3))))
    end)

    it("lets everything through under the limit", function()
        local ch = build("redis", { { "request_throttling",
            name = unique("fast"), max_requests_per_second = 1e6 },
            { "debug_returner", simple = "OK" } })
        local ctx = ch:context(nil)
        for _ = 1, 10 do
            local got = replies(ch:run(ctx, redis_batch(50)))
            assert.are.equal("+OK\r\n", got[50])
        end
    end)
end)

-- CQL v4 frames by hand ----------------------------------------------------

local function be16(n) return string.char(math.floor(n / 256) % 256, n % 256) end
local function be32(n)
    return string.char(math.floor(n / 2^24) % 256, math.floor(n / 2^16) % 256,
                       math.floor(n / 256) % 256, n % 256)
end
local function cql(stream, opcode, body)
    return assert(message.frame_from_cql(string.char(4, 0) .. be16(stream)
        .. string.char(opcode) .. be32(#body) .. body))
end
local function query(stream)
    local q = "SELECT * FROM ks.t"
    return cql(stream, 0x07, be32(#q) .. q .. be16(1) .. "\0")
end
local function batch_of(stream, k)
    local body = { "\1", be16(k) }
    for i = 1, k do
        local q = "INSERT INTO ks.t (k) VALUES (" .. i .. ")"
        body[#body + 1] = "\0" .. be32(#q) .. q .. be16(0)
    end
    body[#body + 1] = be16(1) .. "\0"
    return cql(stream, 0x0D, table.concat(body))
end
local STARTUP = be16(1) .. be16(11) .. "CQL_VERSION" .. be16(5) .. "3.0.0"

local function cql_batch(...)
    local b = message.new_batch(0)
    for _, f in ipairs({ ... }) do
        b:push(f)
    end
    return b
end

-- "ok" for a RESULT/READY/SUPPORTED, else the ERROR code, with the stream
local function outcome(f)
    if f.rtype ~= 0 then
        return "ok " .. f:stream()
    end
    local b = f:body()
    return string.format("0x%04x %d", b:byte(3) * 256 + b:byte(4), f:stream())
end

local function outcomes(resp)
    local out = {}
    for i = 1, resp.n do
        out[i] = outcome(resp[i])
    end
    return out
end

describe("request_throttling on cassandra", function()
    local ch, ctx

    before_each(function()
        ch = build("cassandra", { { "request_throttling", name = unique("c"),
            max_requests_per_second = SLOW, burst = 6 },
            { "debug_returner", null = true } })
        ctx = ch:context(nil)
    end)

    it("counts a BATCH's statements and answers OVERLOADED", function()
        assert.are.equal(4, batch_of(1, 4):batch_size())
        assert.are.same({ "ok 1", "ok 2", "0x1001 3", "ok 4", "0x1001 5" },
                        outcomes(ch:run(ctx, cql_batch(batch_of(1, 4),
                            query(2), batch_of(3, 2), query(4), query(5)))))
        local resp = ch:run(ctx, cql_batch(query(9)))
        assert.matches("request throttled", resp[1]:body())
    end)

    it("never passes a BATCH bigger than the burst", function()
        assert.are.same({ "0x1001 7", "ok 8" },
                        outcomes(ch:run(ctx, cql_batch(batch_of(7, 7),
                                                       query(8)))))
    end)

    it("never throttles the handshake", function()
        for i = 1, 6 do
            ch:run(ctx, cql_batch(query(i)))
        end
        assert.are.same({ "0x1001 1" }, outcomes(ch:run(ctx,
            cql_batch(query(1)))))
        local got = outcomes(ch:run(ctx, cql_batch(cql(10, 0x05, ""),
            cql(11, 0x01, STARTUP), cql(12, 0x0B, be16(0)),
            cql(13, 0x0F, be32(0)))))
        assert.are.same({ "ok 10", "ok 11", "ok 12" },
                        { got[1], got[2], got[3] })
        -- AUTH_RESPONSE went on: debug_returner answers it a protocol error
        assert.are.equal("0x000a 13", got[4])
    end)
end)

describe("request_throttling config", function()
    local function check(el)
        return config.check({ sources = { { name = "t", protocol = "redis",
            listen = "127.0.0.1:1", chain = { el, { "null" } } } } })
    end

    it("needs a positive rate and takes documented defaults", function()
        local _, errs = check({ "request_throttling" })
        assert.are.same({ "sources[1].chain[1].max_requests_per_second: "
                          .. "required" }, errs)
        _, errs = check({ "request_throttling", max_requests_per_second = 0 })
        assert.matches("must be above 0", errs[1])
        _, errs = check({ "request_throttling", max_requests_per_second = 5,
                          key = "user" })
        assert.matches("key: expected one of", errs[1])
        local conf = assert(check({ "request_throttling",
                                    max_requests_per_second = 2.5 }))
        local el = conf.sources[1].chain[1]
        assert.are.equal("global", el.key)
        assert.are.equal("throttle", el.dict)
        local inst = require("shotover.transforms.request_throttling")
            .new(el, {})
        assert.are.equal(400000000, inst.interval)
        assert.are.equal(3 * 400000000, inst.tolerance)  -- burst ceil(2.5)
    end)
end)

describe("request_throttling under the JIT", function()
    it("compiles its per-batch path without NYI aborts", function()
        package.path = os.getenv("SHOTOVER_SRC") .. "/t/lib/?.lua;"
                       .. package.path
        local jw = require "jit_watch"
        local log = jw.run([[
local message = require "shotover.message"
local mod = require("shotover.transforms.request_throttling")
local inst = mod.new({ name = "jit", key = "global", dict = "throttle",
                       dict_capacity = 10000,
                       max_requests_per_second = 1e9 }, {})
local b = message.new_batch(0)
for _ = 1, 16 do
    b:push(assert(message.command({ "GET", "k" })))
end
local fake = { next = function(_, batch) return batch end }
for _ = 1, 2000 do
    assert(inst:transform(b, fake) == b)
end
]])
        assert.is_true(jw.traces(log, "request_throttling.lua") >= 1,
                       "the per-batch path never compiled:\n" .. log)
        assert.are.same({}, jw.nyi(log, { "request_throttling.lua" }))
    end)
end)
