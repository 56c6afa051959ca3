-- Typed bound values: a captured v4 session from a real Cassandra 5.0 is
-- replayed through the session tracker (PREPARE + RESULT Prepared teach the
-- types), then the EXECUTEs' values are decoded, every CQL type included.
local message = require "shotover.message"
local session = require "shotover.cql.session"

local src = assert(os.getenv("SHOTOVER_SRC"), "SHOTOVER_SRC not set")

local function envelopes(name)
    local d = assert(io.open(src .. "/t/fixtures/cql/" .. name, "rb")):read("*a")
    local out, i = {}, 1
    while i + 9 <= #d do
        local len = d:byte(i + 5) * 2^24 + d:byte(i + 6) * 2^16
                    + d:byte(i + 7) * 2^8 + d:byte(i + 8)
        out[#out + 1] = assert(message.frame_from_cql(d:sub(i, i + 8 + len)))
        i = i + 9 + len
    end
    return out
end

-- replay: each request meets the next response on its stream
local function replay(name)
    local reqs, resps = envelopes(name .. ".c2s"), envelopes(name .. ".s2c")
    local by_stream, state, executes = {}, {}, {}
    for _, r in ipairs(resps) do
        if r.argc >= 0 then
            by_stream[r.argc] = by_stream[r.argc] or {}
            table.insert(by_stream[r.argc], r)
        end
    end
    for _, q in ipairs(reqs) do
        local r = table.remove(by_stream[q.argc] or {}, 1)
        if r then
            local qb, rb = message.new_batch(1), message.new_batch(1)
            qb:set(1, q)
            rb:set(1, r)
            session.learn(state, qb, rb)
        end
        if q:opcode_name() == "EXECUTE" then
            executes[#executes + 1] = q
        end
    end
    return state, executes
end

local function by_name(msg)
    local st = assert(session.prepared(msg))
    local vals, out = msg:values(), {}
    for k, col in ipairs(st.columns) do
        out[col.name] = vals[k]
    end
    return out, st
end

describe("bound values of a prepared EXECUTE", function()
    local state, executes = replay("v4")

    local function find(prefix)
        for _, e in ipairs(executes) do
            local st = session.prepared(e)
            if st and st.query:sub(1, #prefix) == prefix then
                return e
            end
        end
        error("no EXECUTE of " .. prefix)
    end

    it("are decoded by the types the PREPARE returned", function()
        local v, st = by_name(find("INSERT INTO alltypes"))
        assert.are.equal("fx_v4", st.keyspace)
        assert.are.equal(1, v.k)
        assert.are.equal("héllo ✓", v.t)
        assert.are.equal(-123456, v.i)
        assert.is_true(v.bi == -4611686018427387904LL)
        assert.are.equal("12345678-1234-5678-1234-567812345678", v.u)
        assert.matches("^%x+%-%x+%-1%x+%-", v.tu)        -- a version 1 uuid
        assert.are.equal("\0\1\254\255", v.b)
        assert.is_true(v.bo)
        assert.are.equal(3.141592653589793, v.d)
        assert.are.equal(1.5, v.f)
        assert.are.equal(4, v.dec.scale)
        assert.are.equal("192.0.2.7", v.ip)
        assert.are.same({ 1, 2, 3 }, v.l)
        table.sort(v.s)
        assert.are.same({ "a", "b" }, v.s)
        assert.are.same({ { "x", 1 }, { "y", -2 } }, v.m)
        assert.are.same({ 7, "seven" }, v.tup)
        assert.is_nil(v.a)                                 -- bound as null
        assert.are.equal("plain ascii", v.asc_col)
        assert.are.equal(19782, v.dt)                      -- 2024-02-29
        assert.is_true(v.tm == 45296789123456LL)
        assert.are.equal(-32768, v.si)
        assert.are.equal(127, v.ti)
        assert.are.same({ 1.0, -2.5, 3.25 }, v.v)          -- vector<float, 3>
    end)

    it("give the partition key of the statement", function()
        assert.are.same({ 1 }, find("INSERT INTO alltypes"):partition_key())
        local e = find("INSERT INTO paged")
        assert.are.same({ 1 }, e:partition_key())
        local v = e:values()
        assert.are.equal("number", type(v[2]))
        assert.matches("^row %d+$", v[3])
        assert.are.equal(3600, v[4])
    end)

    it("are known to a worker that did not see the PREPARE (shared dict)",
       function()
        -- a fresh copy of the module is another worker's Lua state: empty
        -- local memory, the same shared dict in C
        package.loaded["shotover.cql.session"] = nil
        local other = require "shotover.cql.session"
        package.loaded["shotover.cql.session"] = session
        assert.are_not.equal(session, other)
        local n = 0
        for _, e in ipairs(executes) do
            local here = assert(session.prepared(e))
            local there = assert(other.prepared(e))
            assert.are.equal(here.query, there.query)
            assert.are.equal(here.keyspace, there.keyspace)
            assert.are.same(here.pk, there.pk)
            assert.are.same(here.columns, there.columns)
            assert.are.same(here.result_columns, there.result_columns)
            n = n + 1
        end
        assert.is_true(n > 5)
    end)

    it("are bytes when the PREPARE was not seen", function()
        -- the v3 session was never replayed: its prepared ids are unknown
        for _, m in ipairs(envelopes("v3.c2s")) do
            if m:opcode_name() == "EXECUTE" then
                assert.is_nil(session.prepared(m))
                local v = m:values()
                assert.is_true(#v >= 1)
                for k = 1, #v do
                    assert.are.equal("string", type(v[k]))
                end
                assert.is_nil(m:partition_key())
                return
            end
        end
        error("no EXECUTE in the v3 capture")
    end)

    it("tracked the session's keyspace", function()
        assert.are.equal("fx_v4", state.keyspace)
    end)
end)

describe("rows of a RESULT", function()
    local _, _ = replay("v4")
    local reqs, resps = envelopes("v4.c2s"), envelopes("v4.s2c")

    -- the request each response answers (same stream, in order)
    local function pairs_of()
        local by, out = {}, {}
        for _, q in ipairs(reqs) do
            by[q.argc] = by[q.argc] or {}
            table.insert(by[q.argc], q)
        end
        for _, r in ipairs(resps) do
            if r.argc >= 0 then
                out[#out + 1] = { table.remove(by[r.argc] or {}, 1), r }
            end
        end
        return out
    end

    it("are decoded by their metadata, over several pages", function()
        local pages, rows, states = 0, {}, 0
        for _, pr in ipairs(pairs_of()) do
            local q, r = pr[1], pr[2]
            if q and q:opcode_name() == "QUERY"
               and q:query():find("^SELECT c, v, TTL%(v%)")
            then
                pages = pages + 1
                assert.are.equal(6, q:page_size())
                local res = r:rows(q)
                if res.paging_state then
                    states = states + 1
                end
                for _, row in ipairs(res) do
                    rows[#rows + 1] = row.c
                end
            end
        end
        assert.is_true(pages >= 4)
        assert.is_true(states >= 3)
        table.sort(rows)
        assert.are.equal(20, #rows)
        assert.are.equal(0, rows[1])
        assert.are.equal(19, rows[20])
    end)

    it("of a prepared SELECT use the prepared result metadata", function()
        for _, pr in ipairs(pairs_of()) do
            local q, r = pr[1], pr[2]
            local st = q and session.prepared(q)
            if st and st.query:find("^SELECT %* FROM alltypes") then
                local res = r:rows(q)
                assert.are.equal(1, #res)
                assert.are.equal("héllo ✓", res[1].t)
                assert.are.same({ 1, 2, 3 }, res[1].l)
                return
            end
        end
        error("no prepared SELECT of alltypes")
    end)
end)

describe("CQL value decoding limits", function()
    local types = require "shotover.cql.types"
    local ffi = require "ffi"

    local function view(s)
        local buf = ffi.new("uint8_t[?]", #s)
        ffi.copy(buf, s, #s)
        return buf
    end

    it("refuses a collection count its bytes cannot hold", function()
        local list_of_int = { name = "list", elem = { name = "int" } }
        -- [bytes] of 8: count 2^30, then one element
        local b = view("\0\0\0\8\64\0\0\0\0\0\0\4")
        assert.has_error(function() types.value(list_of_int, b, 0, 12) end,
                         "cql: collection of 1073741824 elements in 8 bytes")
        local map = { name = "map", key = { name = "int" },
                      value = { name = "int" } }
        assert.has_error(function()
            types.value(map, view("\0\0\0\4\0\0\0\9"), 0, 8)
        end, "cql: map of 9 entries in 4 bytes")
    end)

    it("refuses types nested without end", function()
        -- list<list<list<...>>> 20 deep
        local s = string.rep("\0\32", 20) .. "\0\9"
        assert.has_error(function() types.read_type(view(s), 0, #s) end,
                         "cql: types nested deeper than 16")
    end)

    it("refuses a vector whose bytes do not match its dimension", function()
        local vec = { name = "vector", elem = { name = "float" }, dim = 3 }
        assert.has_error(function()
            types.value(vec, view("\0\0\0\8" .. string.rep("\0", 8)), 0, 12)
        end, "cql: vector of 3 elements in 8 bytes")
    end)
end)

describe("the statement of a CQL message", function()
    local state, executes = replay("v4")

    it("is parsed from a QUERY, and cached per text", function()
        for _, m in ipairs(envelopes("v4.c2s")) do
            if m:opcode_name() == "QUERY"
               and m:query():find("^SELECT c, v, TTL")
            then
                local ast, ks = m:statement({ keyspace = "fx_v4" })
                assert.are.equal("select", ast.kind)
                assert.are.equal("read", ast.class)
                assert.are.equal("paged", ast.table)
                assert.are.equal("fx_v4", ks)     -- unqualified: from USE
                assert.are.equal(ast, (m:statement()))   -- the same table
                return
            end
        end
        error("no paged SELECT")
    end)

    it("of an EXECUTE is its prepared statement: a prepared INSERT writes",
       function()
        for _, e in ipairs(executes) do
            local st = session.prepared(e)
            if st and st.query:find("^INSERT INTO paged") then
                local ast, ks = e:statement()
                assert.are.equal("insert", ast.kind)
                assert.are.equal("write", ast.class)
                assert.are.equal("paged", ast.table)
                assert.are.equal("fx_v4", ks)     -- keyspace at prepare time
                assert.are.same({ marker = 1 }, ast.values[1])
                return
            end
        end
        error("no prepared INSERT")
    end)

    it("is nil with a reason for messages without one", function()
        local opts = envelopes("v4.c2s")[1]
        local ast, err = opts:statement()
        assert.is_nil(ast)
        assert.are.equal("not a statement", err)
        assert.is_truthy(state.keyspace)
    end)
end)

describe("the children of a BATCH", function()
    replay("v4")

    it("are its statements with their values", function()
        for _, m in ipairs(envelopes("v4.c2s")) do
            if m:opcode_name() == "BATCH" then
                local b = m:batch_children()
                assert.is_truthy(({ logged = true, unlogged = true,
                                    counter = true })[b.type])
                assert.is_true(#b >= 2)
                local queries = 0
                for _, child in ipairs(b) do
                    assert.is_truthy(child.query or child.id)
                    queries = queries + (child.query and 1 or 0)
                    assert.are.equal("table", type(child.values))
                end
                assert.are.equal(#b, queries)  -- every one known by its text
                return
            end
        end
        error("no BATCH in the capture")
    end)
end)
