-- The audit transform's kafka output in front of a real redis-server and a
-- real Kafka broker (t/lib/kafka.lua): a record per request, read back
-- with kcat, values redacted; with fail_closed, the broker killed makes
-- requests refused once Kafka failed a record, and served again once it
-- is back (the refusals' own records delivered).
local h = require("harness")
local kafka = require("kafka")

local function count_with(recs, needle)
    local n = 0
    for _, r in ipairs(recs) do
        if r.value and r.value:find(needle, 1, true) then n = n + 1 end
    end
    return n
end

describe("the audit transform's kafka output", function()
    local k, R, P, A

    setup(function()
        k = kafka.start()
        R = h.redis_server()
        k:create_topic("audit", 1)
        P, A = h.free_port(), h.free_port()
        h.shotover({ port = P, config = h.config({ listen = P,
            remote = R.port,
            extra = string.format('admin = { listen = "127.0.0.1:%d" },', A),
            chain = string.format([[
                { "audit", fail_closed = true, kafka = { brokers = %q,
                  topic = "audit", timeout_ms = 3000 } },
                { "redis", remote = "%%REMOTE%%" },
            ]], k:brokers()) }) })
    end)
    teardown(h.cleanup)

    it("sends a record per request, values redacted", function()
        local c = h.connect(P)
        assert.same(h.status("OK"), c:cmd("SET", "ka:k", "topsecret"))
        assert.equal("topsecret", c:cmd("GET", "ka:k"))
        local recs
        h.wait_until(function()
            recs = k:consume("audit", nil, 10, { to_end = true })
            return count_with(recs, '"statement":"GET ka:k"') == 1
        end, 20, "the GET's record")
        assert.equal(1, count_with(recs, '"statement":"SET ka:k ?","decision":'
                                   .. '"allowed","outcome":"ok"'))
        assert.equal(0, count_with(recs, "topsecret"))
        for _, r in ipairs(recs) do
            assert.matches('^{"time":"[^"]+","source":"redis","client":'
                           .. '"127%.0%.0%.1:%d+"', r.value)
        end
    end)

    it("refuses requests while Kafka fails its records, and serves once "
       .. "it is back", function()
        local c = h.connect(P)
        k:kill()
        -- served until Kafka's failure is known (timeout_ms)
        local refused
        h.wait_until(function()
            local r = c:cmd("SET", "ka:down", "v")
            refused = r.err
            return refused ~= nil
        end, 20, "a request refused while Kafka is down", 0.2)
        assert.matches("^ERR shotover: audit: the audit trail cannot be "
                       .. "written %(kafka: ", refused)
        assert.is_true(h.metric(A, 'shotover_audit_refused_total{name="audit"}') >= 1)
        k:start()
        h.wait_until(function()
            return c:cmd("SET", "ka:up", "v").status == "OK"
        end, 60, "requests served once Kafka is back", 0.2)
        local recs = k:consume("audit", nil, 10, { to_end = true })
        assert.is_true(count_with(recs, '"statement":"SET ka:up ?","decision":'
                                  .. '"allowed","outcome":"ok"') >= 1)
    end)
end)
