-- The CQL message API over envelopes captured from a real Cassandra 5.0
-- (t/fixtures/cql): header fields, bodies (decompressed for v4 LZ4 and
-- Snappy sessions), query text, consistency, prepared ids.
local bit = require "bit"
local message = require "shotover.message"

local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

-- the envelopes of a v3/v4 capture; compressed ones are marked with the
-- session's algorithm as the connection would (1 lz4, 2 snappy)
local function envelopes(name, algo)
    local d = assert(io.open(src .. "/t/fixtures/cql/" .. name, "rb")):read("*a")
    local out, i = {}, 1
    while i + 9 <= #d do
        local len = d:byte(i + 5) * 2^24 + d:byte(i + 6) * 2^16
                    + d:byte(i + 7) * 2^8 + d:byte(i + 8)
        local f = assert(message.frame_from_cql(d:sub(i, i + 8 + len)))
        if algo and bit.band(f.data[1], 1) ~= 0 then
            f.cmd = algo
        end
        out[#out + 1] = f
        i = i + 9 + len
    end
    assert(i == #d + 1, name .. ": trailing bytes")
    return out
end

local function queries(name, algo, suffix)
    local q = {}
    for _, f in ipairs(envelopes(name, algo)) do
        local text = f:query()
        if text then
            q[#q + 1] = suffix and text:gsub(suffix, "") or text
        end
    end
    return q
end

describe("a CQL message", function()
    local v4 = envelopes("v4.c2s")

    it("reads its header: opcode, stream, version, direction", function()
        assert.are.equal("OPTIONS", v4[1]:opcode_name())
        assert.are.equal("STARTUP", v4[2]:opcode_name())
        assert.are.equal(1, v4[2]:stream())
        assert.are.equal(4, v4[2]:version())
        assert.is_false(v4[2]:is_response())
        local resp = envelopes("v4.s2c")
        assert.is_true(resp[1]:is_response())
        assert.are.equal("SUPPORTED", resp[1]:opcode_name())
    end)

    it("gives the text and consistency of QUERY requests", function()
        local seen = 0
        for _, f in ipairs(v4) do
            if f:opcode_name() == "QUERY" then
                seen = seen + 1
                assert.is_string(f:query())
                assert.is_truthy(({ ONE = true, LOCAL_ONE = true,
                                    QUORUM = true, LOCAL_QUORUM = true,
                                    SERIAL = true, ALL = true })
                                 [f:consistency()])
            end
        end
        assert.is_true(seen > 10)
        assert.matches("^CREATE KEYSPACE fx_v4 ", queries("v4.c2s")[1])
    end)

    it("gives the query of PREPARE and the id and consistency of EXECUTE",
       function()
        local prepared, executed, markers = 0, 0, 0
        for _, f in ipairs(v4) do
            if f:opcode_name() == "PREPARE" then
                prepared = prepared + 1
                assert.matches("^%a", f:query())
                markers = markers + (f:query():find("?", 1, true) and 1 or 0)
            elseif f:opcode_name() == "EXECUTE" then
                executed = executed + 1
                assert.are.equal(16, #f:prepared_id())
                assert.is_string(f:consistency())
                assert.is_nil(f:query())
            end
        end
        assert.is_true(prepared > 0 and executed > 0 and markers > 0)
    end)

    it("decompresses LZ4 and Snappy bodies to the same queries", function()
        local plain = queries("v4.c2s", nil, "fx_v4")
        local lz4 = queries("v4-lz4.c2s", 1, "fx_v4_lz4")
        local snappy = queries("v4-snappy.c2s", 2, "fx_v4_snappy")
        assert.is_true(#plain > 10)
        assert.are.same(plain, lz4)
        assert.are.same(plain, snappy)
    end)

    it("refuses a compressed body when no compression was negotiated",
       function()
        for _, f in ipairs(envelopes("v4-lz4.c2s")) do
            if bit.band(f.data[1], 1) ~= 0 then
                assert.has_error(function() f:body() end,
                    "cql body: compressed body, but no compression was "
                    .. "negotiated")
                return
            end
        end
        error("no compressed frame in the capture")
    end)

    it("describes itself", function()
        assert.are.equal("CQL v4 STARTUP stream 1, " .. v4[2].len .. " bytes",
                         v4[2]:describe())
    end)
end)

describe("CQL message setters", function()
    local function first(name, algo, opcode)
        for _, f in ipairs(envelopes(name, algo)) do
            if f:opcode_name() == opcode then
                return f
            end
        end
    end

    it("rewrite the query of a QUERY and mark it modified", function()
        local f = first("v4.c2s", nil, "QUERY")
        local cons = f:consistency()
        f:set_query("SELECT now() FROM system.local")
        assert.is_true(f:is_modified())
        assert.are.equal("SELECT now() FROM system.local", f:query())
        assert.are.equal(cons, f:consistency())
        assert.are.equal(f.len - 9, #f:body())
    end)

    it("recompress a compressed body the way the connection does", function()
        for algo, name in pairs({ [1] = "v4-lz4.c2s", [2] = "v4-snappy.c2s" })
        do
            for _, f in ipairs(envelopes(name, algo)) do
                if f:opcode_name() == "QUERY" and bit.band(f.data[1], 1) ~= 0
                then
                    f:set_query("SELECT key FROM system.local")
                    assert.are.equal(1, bit.band(f.data[1], 1))
                    assert.are.equal("SELECT key FROM system.local", f:query())
                    break
                end
            end
        end
    end)

    it("change consistency and bound values of an EXECUTE", function()
        local f = first("v3.c2s", nil, "EXECUTE")
        local before = f:values()
        f:set_consistency("LOCAL_QUORUM")
        assert.are.equal("LOCAL_QUORUM", f:consistency())
        f:set_value(1, "\0\0\0\42")
        f:set_value(2, nil)
        local v = f:values()
        assert.are.equal("\0\0\0\42", v[1])
        assert.is_nil(v[2])
        assert.are.equal(before[3], v[3])
        assert.has_error(function() f:set_consistency("SOMETIMES") end,
                         "set_consistency: unknown consistency SOMETIMES")
    end)
end)

describe("CQL responses", function()
    local resp = envelopes("v4.s2c")

    it("give ERROR code and message, RESULT and EVENT schema changes",
       function()
        local errors, changes, events = {}, 0, 0
        for _, f in ipairs(resp) do
            local e = f:error_info()
            if e then
                errors[#errors + 1] = e
            end
            local sc = f:schema_change()
            if sc then
                changes = changes + 1
                assert.is_truthy(({ CREATED = true, UPDATED = true,
                                    DROPPED = true })[sc.change])
                assert.is_string(sc.keyspace)
            end
        end
        for _, name in ipairs({ "v4.control.s2c" }) do
            for _, f in ipairs(envelopes(name)) do
                local ev = f:event()
                if ev then
                    events = events + 1
                    assert.are.equal("SCHEMA_CHANGE", ev.type)
                    assert.is_string(ev.keyspace)
                end
            end
        end
        assert.is_true(#errors >= 2)
        local syntax = false
        for _, e in ipairs(errors) do
            syntax = syntax or e.code == 0x2000
        end
        assert.is_true(syntax, "no syntax error among the captured errors")
        assert.is_true(changes >= 3)
        assert.is_true(events >= 1)
    end)
end)

-- Bodies whose length fields lie: every decoder checks a length against
-- the body before it reads (c/test/fuzz-cql.c found them reading past it:
-- the FFI reads whatever memory follows).  A request that does not read
-- is refused by the node; the transforms classifying it are not failed.
describe("CQL bodies whose lengths lie", function()
    local char = string.char
    local band, rshift = bit.band, bit.rshift
    local session = require "shotover.cql.session"
    local cassandra = require("shotover.protocols").get("cassandra")

    local function be16(n)
        return char(band(rshift(n, 8), 255), band(n, 255))
    end
    local function be32(n)
        return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                    band(rshift(n, 8), 255), band(n, 255))
    end
    local function str(s)
        return be16(#s) .. s
    end
    local OP = { ERROR = 0, QUERY = 7, RESULT = 8, PREPARE = 9, EXECUTE = 10,
                 EVENT = 12, BATCH = 13 }
    local function env(op, body, response)
        return assert(message.frame_from_cql(char(response and 0x84 or 4, 0)
                                             .. be16(3) .. char(OP[op])
                                             .. be32(#body) .. body))
    end

    it("refuse a query string longer than the body, or negative", function()
        local long = env("QUERY", be32(1000) .. "SELECT")
        assert.has_error(function() long:query() end,
                         "cql body: query string runs past the body")
        local neg = env("QUERY", be32(0xfffffff0) .. "SELECT")
        assert.has_error(function() neg:query() end,
                         "cql body: query string runs past the body")
        assert.has_error(function() neg:consistency() end,
                         "cql: a query string runs past the body")
    end)

    it("refuse a prepared id or a value longer than the body", function()
        local ex = env("EXECUTE", be16(500) .. "abc")
        assert.has_error(function() ex:prepared_id() end,
                         "cql: a prepared id runs past the body")
        assert.has_error(function() ex:values() end,
                         "cql: a prepared id runs past the body")
        assert.is_nil(session.prepared(ex))
        local q = "SELECT * FROM t WHERE k = ?"
        local v = env("QUERY", be32(#q) .. q .. be16(1) .. char(1) .. be16(1)
                               .. be32(100) .. "x")
        assert.has_error(function() v:values() end,
                         "cql: a [value] runs past the body")
        assert.has_error(function() v:set_value(1, "y") end,
                         "cql: a value runs past the body")
    end)

    local rows_head = be32(2) .. be32(1) .. be32(1) .. str("ks") .. str("t")
                      .. str("c") .. be16(9)            -- one int column

    it("refuse rows their body cannot hold, and cells of the wrong size",
       function()
        local many = env("RESULT", rows_head .. be32(0x7fffffff), true)
        assert.has_error(function() many:rows() end,
                         "cql body: 2147483647 rows of 1 columns in 0 bytes")
        local short = env("RESULT", rows_head .. be32(1) .. be32(2) .. "\0\1",
                          true)
        assert.has_error(function() short:rows() end, "cql: int of 2 bytes")
        local empty = env("RESULT", rows_head .. be32(1) .. be32(0), true)
        assert.is_nil(empty:rows()[1].c)
        assert.are.equal("RESULT Rows", cassandra.show(short))
    end)

    it("refuse an event address longer than the body", function()
        local ev = env("EVENT", str("STATUS_CHANGE") .. str("UP") .. char(200)
                                .. "abc", true)
        assert.has_error(function() ev:event() end,
                         "cql: an address runs past the body")
    end)

    it("teach the session nothing when a RESULT does not read", function()
        local ks = env("RESULT", be32(3) .. be16(50) .. "ks", true)
        local q = "SELECT 1"
        local prep = env("PREPARE", be32(#q) .. q)
        local state = {}
        local qb, rb = message.new_batch(1), message.new_batch(1)
        qb:set(1, prep)
        rb:set(1, ks)
        session.learn(state, qb, rb)
        assert.is_nil(state.keyspace)
        assert.are.equal("RESULT", cassandra.show(ks))
        local id = env("RESULT", be32(4) .. be16(16) .. "short", true)
        rb:set(1, id)
        session.learn(state, qb, rb)
    end)

    it("leave a request that does not read to the node", function()
        local chain = { conn = {} }
        local q = env("QUERY", be32(1000) .. "SELECT")
        local ast, err = q:statement()
        assert.is_nil(ast)
        assert.are.equal("cql body: query string runs past the body", err)
        assert.are.equal("other", cassandra.query_class(q, chain))
        assert.are.equal("unparsed", cassandra.query_label(q, chain))
        local b = env("BATCH", "\0\0")
        assert.are.equal("other", cassandra.query_class(b, chain))
        assert.are.equal(1, cassandra.cost(b))
        local ex = env("EXECUTE", be16(500) .. "abc")
        assert.is_false(cassandra.query_class(ex, chain))
        local r = cassandra.unknown_reply(ex, "not prepared here")
        assert.are.equal("ERROR", r:opcode_name())
        assert.are.equal(0x000A, r:error_info().code)    -- PROTOCOL_ERROR
    end)
end)
