-- coalesce and the parking runner, driven without a client connection: a
-- fake C side hands the runner batches, timer firings and EOF, and records
-- what it yields (MORE, DONE) and the responses it sets.
local chain = require "shotover.chain"
local config = require "shotover.config"
local message = require "shotover.message"
local runner = require "shotover.runner"
local base = require "shotover.ffi"

local function check(elements)
    return config.check({ sources = { { name = "c", protocol = "redis",
        listen = "127.0.0.1:1", chain = elements } } })
end

-- an inline sink that answers each request with its own key as a status,
-- and records the size of every batch it sees
local seen
local function echo_sink(batch)
    seen[#seen + 1] = batch.n
    local resp = message.new_batch(batch.n)
    for i = 1, batch.n do
        resp:set(i, assert(message.frame_from_resp("+" .. batch[i]:key()
                                                   .. "\r\n")))
    end
    return resp
end

local function build(elements)
    local conf = assert(check(elements))
    return chain.build(conf.sources[1].chain, { name = "c",
        protocol = "redis" })
end

local function batch_of(...)
    local b = message.new_batch(0)
    for _, key in ipairs({ ... }) do
        b:push(assert(message.command({ "GET", key })))
    end
    return b
end

-- A fake connection: feed(reason, batch) resumes the runner as C would and
-- returns what it yielded; the responses it yielded with DONE are in
-- conn.resp.
local function connection(ch)
    local conn = { timer = nil }
    local io = {
        wake_reason = function() return conn.reason end,
        batch = function() return conn.batch end,
        timer = function(_, ms) conn.timer = ms end,
        timer_stop = function() conn.timer = nil end,
    }
    local co = coroutine.create(function() runner.serve(nil, ch, nil, nil, io) end)
    function conn.feed(reason, batch)
        conn.reason, conn.batch, conn.resp = reason, batch, nil
        local ok, what, resp = coroutine.resume(co)
        assert(ok, what)
        conn.resp = resp
        return what
    end
    return conn
end

local function keys(resp)
    local t = {}
    for i = 1, resp.n do
        t[i] = resp[i]:line()
    end
    return t
end

describe("coalesce config", function()
    it("needs max_requests, max_wait_ms or both", function()
        local ok, errs = check({ { "coalesce" }, { "null" } })
        assert.is_nil(ok)
        assert.are.same({ "sources[1].chain[1]: give max_requests, "
                          .. "max_wait_ms or both" }, errs)
        assert.truthy(check({ { "coalesce", max_requests = 10 },
                              { "null" } }))
        assert.truthy(check({ { "coalesce", max_wait_ms = 5 },
                              { "null" } }))
        ok, errs = check({ { "coalesce", max_requests = 0 }, { "null" } })
        assert.is_nil(ok)
        assert.matches("max_requests", errs[1])
    end)

    it("makes its chain use the parking runner, and only it", function()
        assert.is_true(build({ { "coalesce", max_requests = 2 },
                               { "null" } }).parks)
        assert.is_false(build({ { "null" } }).parks)
    end)
end)

describe("coalesce", function()
    before_each(function() seen = {} end)

    it("passes batches straight on outside the parking runner", function()
        local ch = build({ { "coalesce", max_requests = 10 }, { echo_sink } })
        local resp = ch:run(ch:context(nil), batch_of("a", "b"))
        assert.are.same({ "a", "b" }, keys(resp))
        assert.are.same({ 2 }, seen)
    end)

    it("holds batches until max_requests, then answers them all in order",
       function()
        local ch = build({ { "coalesce", max_requests = 5,
                             max_wait_ms = 60000 }, { echo_sink } })
        local conn = connection(ch)
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_BATCH,
                                                batch_of("a", "b")))
        assert.truthy(conn.timer)            -- armed for the deadline
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_BATCH,
                                                batch_of("c")))
        assert.are.same({}, seen)
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_BATCH,
                                                batch_of("d", "e", "f")))
        assert.are.same({ 6 }, seen)         -- one batch to the sink
        assert.are.same({ "a", "b", "c", "d", "e", "f" }, keys(conn.resp))
        assert.is_nil(conn.timer)            -- nothing held: stopped
        -- the next group starts afresh
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_BATCH,
                                                batch_of("g")))
    end)

    it("sends what it holds on when the timer fires", function()
        local ch = build({ { "coalesce", max_requests = 100,
                             max_wait_ms = 1 }, { echo_sink } })
        local conn = connection(ch)
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_BATCH,
                                                batch_of("a")))
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_BATCH,
                                                batch_of("b", "c")))
        -- a timer that fires early (or spuriously) flushes nothing: the
        -- runner checks the deadline, so wait until it has passed
        local deadline = os.clock() + 0.01
        while os.clock() < deadline do end
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_TIMER))
        assert.are.same({ 3 }, seen)
        assert.are.same({ "a", "b", "c" }, keys(conn.resp))
    end)

    it("sends what it holds on at EOF", function()
        local ch = build({ { "coalesce", max_requests = 100,
                             max_wait_ms = 60000 }, { echo_sink } })
        local conn = connection(ch)
        conn.feed(base.WAKE_BATCH, batch_of("a"))
        assert.equal(base.YIELD_MORE, conn.feed(base.WAKE_TIMER))
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_EOF))
        assert.are.same({ "a" }, keys(conn.resp))
    end)

    it("lets transforms before it see their own batches", function()
        local before = {}
        local ch = build({
            { function(batch, ctx)
                before[#before + 1] = batch.n
                local resp = ctx:next(batch)
                assert(resp.n == batch.n)
                return resp
            end },
            { "coalesce", max_requests = 3, max_wait_ms = 60000 },
            { echo_sink } })
        local conn = connection(ch)
        conn.feed(base.WAKE_BATCH, batch_of("a"))
        conn.feed(base.WAKE_BATCH, batch_of("b"))
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_BATCH,
                                                batch_of("c")))
        assert.are.same({ 1, 1, 1 }, before)
        assert.are.same({ 3 }, seen)
        assert.are.same({ "a", "b", "c" }, keys(conn.resp))
    end)

    it("fails every held request when the batch sent on fails", function()
        local ch = build({ { "coalesce", max_requests = 2,
                             max_wait_ms = 60000 },
                           { function() error("backend on fire") end } })
        local conn = connection(ch)
        conn.feed(base.WAKE_BATCH, batch_of("a"))
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_BATCH,
                                                batch_of("b")))
        assert.equal(2, conn.resp.n)
        for i = 1, 2 do
            assert.matches("backend on fire", conn.resp[i]:raw())
        end
    end)

    it("sends a blocking command on at once, with what it holds",
       function()
        local ch = build({ { "coalesce", max_requests = 100,
                             max_wait_ms = 60000 }, { echo_sink } })
        local conn = connection(ch)
        conn.feed(base.WAKE_BATCH, batch_of("a"))
        local b = message.new_batch(0)
        b:push(assert(message.command({ "BLPOP", "q", "0" })))
        assert.equal(base.YIELD_DONE, conn.feed(base.WAKE_BATCH, b))
        assert.are.same({ "a", "q" }, keys(conn.resp))
    end)
end)
