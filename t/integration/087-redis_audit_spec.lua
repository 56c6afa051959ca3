-- The audit transform in front of a real redis-server: a line per request
-- with its fields, values redacted, a client's AUTH password never in the
-- file; rotation (rename, SIGHUP: the next lines in a new file, none lost);
-- fail_closed refusing while the file cannot be written and serving once
-- it can; fail_closed = false serving and counting.
local h = require("harness")
local OK = h.status("OK")

local function lines(path)
    local out = {}
    for l in (h.read_file(path) or ""):gmatch("[^\n]+") do
        out[#out + 1] = l
    end
    return out
end

-- the lines of path whose statement is `stmt`
local function with_statement(path, stmt)
    local out = {}
    local needle = '"statement":"' .. stmt .. '"'
    for _, l in ipairs(lines(path)) do
        if l:find(needle, 1, true) then
            out[#out + 1] = l
        end
    end
    return out
end

local function count(s, needle)
    local n, i = 0, 1
    while true do
        local a, b = s:find(needle, i, true)
        if not a then return n end
        n, i = n + 1, b + 1
    end
end

describe("the audit transform in front of redis", function()
    local redis, P, A, proxy, dir, file

    setup(function()
        redis = h.redis_server({ args = { "--requirepass", "s3cret-pw" } })
        P, A = h.free_port(), h.free_port()
        dir = h.tmpdir("audit")
        file = dir .. "/audit.jsonl"
        proxy = h.shotover({ config = h.config({ listen = P,
            remote = redis.port,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = string.format([[
                { "audit", file = %q },
                { "redis", remote = "%%REMOTE%%", password = "s3cret-pw" },
            ]], file) }), port = P })
    end)
    teardown(h.cleanup)

    it("writes one line per request with its fields, values redacted", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("SET", "audit:k", "topsecret-value"))
        assert.equal("topsecret-value", c:cmd("GET", "audit:k"))
        local e = c:cmd("INCR", "audit:k")
        assert.truthy(e.err)
        local got = with_statement(file, "SET audit:k ?")
        assert.equal(1, #got)
        local l = got[1]
        assert.matches('^{"time":"%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ"', l)
        assert.matches('"source":"redis"', l)
        assert.matches('"client":"127%.0%.0%.1:%d+"', l)
        assert.matches('"user":null,"tls_subject":null', l)
        assert.matches('"decision":"allowed","outcome":"ok","latency_us":%d+}$', l)
        assert.equal(1, #with_statement(file, "GET audit:k"))
        local incr = with_statement(file, "INCR audit:k")
        assert.equal(1, #incr)
        assert.matches('"outcome":"ERR"', incr[1])
        assert.is_nil(h.read_file(file):find("topsecret", 1, true))
        assert.is_true(h.metric(A, 'shotover_audit_records_total{name="audit"}') >= 3)
    end)

    it("never writes a client's AUTH password, right or wrong", function()
        local c = h.connect(P)
        assert.same(OK, c:cmd("AUTH", "s3cret-pw"))
        local e = c:cmd("AUTH", "default", "wrong-pw-xyz")
        assert.truthy(e.err)
        local s = h.read_file(file)
        assert.is_nil(s:find("s3cret", 1, true))
        assert.is_nil(s:find("wrong-pw", 1, true))
        assert.equal(1, #with_statement(file, "AUTH ?"))
        local wrong = with_statement(file, "AUTH ? ?")
        assert.equal(1, #wrong)
        assert.matches('"outcome":"WRONGPASS"', wrong[1])
    end)

    it("goes on in a new file after a rename and SIGHUP, losing nothing", function()
        local c = h.connect(P)
        for i = 1, 50 do
            assert.same(OK, c:cmd("SET", "rot:" .. i, "v"))
        end
        local rotated = file .. ".1"
        assert(os.rename(file, rotated))
        -- the connection keeps writing while the reload comes
        for i = 51, 60 do
            assert.same(OK, c:cmd("SET", "rot:" .. i, "v"))
        end
        local before = count(proxy:log(), "reloaded ")
        assert.is_true(proxy.proc:kill(h.SIGHUP))
        h.wait_until(function()
            return count(proxy:log(), "reloaded ") > before
        end, 15, "the worker to reload")
        local d = h.connect(P)          -- a connection on the new chains
        for i = 61, 100 do
            local conn = i % 2 == 0 and c or d
            assert.same(OK, conn:cmd("SET", "rot:" .. i, "v"))
        end
        local old, new = h.read_file(rotated), h.read_file(file)
        assert.truthy(new, "a new file at the path")
        for i = 1, 100 do
            local needle = '"statement":"SET rot:' .. i .. ' ?"'
            local n_old, n_new = count(old, needle), count(new, needle)
            assert.equal(1, n_old + n_new, "rot:" .. i .. " once in all")
            if i <= 60 then
                assert.equal(1, n_old, "rot:" .. i .. " in the old file")
            else
                assert.equal(1, n_new, "rot:" .. i .. " in the new file")
            end
        end
    end)
end)

describe("the audit transform when its file cannot be written", function()
    local redis, PC, PO, A, dir

    setup(function()
        redis = h.redis_server()
        PC, PO, A = h.free_port(), h.free_port(), h.free_port()
        dir = h.tmpdir("audit-missing") .. "/not-yet"
        local chain = [[
            { "audit", name = %q, file = %q, fail_closed = %s },
            { "redis", remote = "127.0.0.1:%d" },
        ]]
        h.shotover({ config = h.config({ listen = PC, name = "closed",
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = chain:format("closed", dir .. "/closed.jsonl", "true", redis.port),
            extra_sources = string.format(
                '{ name = "open", protocol = "redis", listen = "127.0.0.1:%d",'
                .. ' chain = { %s } },', PO,
                chain:format("open", dir .. "/open.jsonl", "false", redis.port)) }),
            port = PC })
        h.wait_until(function()
            return h.try_connect(PO, 1) ~= nil
        end, 15, "the second source to listen")
    end)
    teardown(h.cleanup)

    it("refuses with fail_closed = true, and serves once it can write", function()
        local c = h.connect(PC)
        local e = c:cmd("SET", "closed:k", "v")
        assert.truthy(e.err)
        assert.matches("^ERR shotover: audit: the audit trail cannot be written", e.err)
        assert.equal("0", h.cli(redis.port, "exists", "closed:k"))
        assert.is_true(h.metric(A, 'shotover_audit_refused_total{name="closed"}') >= 1)
        assert(os.execute("mkdir -p " .. dir))
        assert.same(OK, c:cmd("SET", "closed:k", "v"))
        assert.equal("1", h.cli(redis.port, "exists", "closed:k"))
        -- the refusal's line waited in the buffer: both are there
        local got = with_statement(dir .. "/closed.jsonl", "SET closed:k ?")
        assert.equal(2, #got)
        assert.matches('"decision":"refused: audit trail unavailable",'
                       .. '"outcome":"ERR"', got[1])
        assert.matches('"decision":"allowed","outcome":"ok"', got[2])
    end)

    it("serves with fail_closed = false and counts the failed writes", function()
        os.execute("rm -rf " .. dir)
        local c = h.connect(PO)
        assert.same(OK, c:cmd("SET", "open:k", "v"))
        assert.equal("1", h.cli(redis.port, "exists", "open:k"))
        assert.is_true(h.metric(A, 'shotover_audit_write_errors_total{name="open"}') >= 1)
        assert.is_nil(h.read_file(dir .. "/open.jsonl"))
    end)
end)
