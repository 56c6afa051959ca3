-- protect on CQL, in front of a fake node that records what it was sent
-- and answers canned rows: literals and bound values of INSERT, UPDATE and
-- BATCH go out sealed (and open to their plaintext, bound to their row
-- and column), RESULT Rows come back opened, a moved or changed value is
-- an error, and what cannot work on ciphertext is refused before it
-- reaches the node.  Config errors with their paths.
local testing = require "shotover.testing"
local message = require "shotover.message"
local reply = require "shotover.cql.reply"
local schema = require "shotover.cql.schema"
local keys = require "shotover.keys"
local envelope = require "shotover.envelope"
local parser = require "shotover.cql.parser"

local KEK = string.rep("ab", 32)
local KM = { "local", kek = KEK, kek_id = "test-1" }

local function be32(n)
    return reply.be32(n)
end

local function key_bytes(k)
    return be32(#k) .. k
end

-- a keyring of its own, as another worker would have
local function opener()
    local conf = { "local", kek = KEK, kek_id = "test-1" }
    assert.same({}, keys.check(conf, "km"))
    return envelope.keyring(keys.new(conf, "km"))
end

local function unhex(h)
    return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- schema.learn rows of system_schema.columns
local function learn(tab, cols)
    local rows = {}
    for i, c in ipairs(cols) do
        rows[i] = { column_name = c[1], kind = c[2], position = c[3] or -1,
                    type = c[4] }
    end
    schema.learn("pks", tab, rows)
end

-- learnt before each test: other specs teach the (per worker) schema
-- tables of their own
local function learn_all()
    learn("t", { { "k", "partition_key", 0, "text" },
                 { "secret", "regular", -1, "blob" },
                 { "note", "regular", -1, "text" } })
    learn("c", { { "a", "partition_key", 0, "text" },
                 { "b", "partition_key", 1, "int" },
                 { "secret", "regular", -1, "blob" } })
    learn("wrong", { { "k", "partition_key", 0, "text" },
                     { "secret", "regular", -1, "text" } })
end

-- the fake node: sent[i] = { query, values (bytes) } of each request;
-- SELECTs answered by rows_for(m) (a reply.rows spec)
local function fake(sent, rows_for)
    return function(batch)
        local resp = message.new_batch(batch.n)
        for i = 1, batch.n do
            local m = batch[i]
            local rec = { op = m:opcode_name() }
            if m.rtype == reply.OPCODE.RESULT then
                rec = {}
            end
            if rec.op == "QUERY" then
                rec.query = m:query()
                rec.values = m:values(true)
            elseif rec.op == "BATCH" then
                rec.children = m:batch_children(true)
            end
            sent[#sent + 1] = rec
            local r
            local spec = rec.query and rows_for and rows_for(m)
            if spec then
                r = reply.rows(m, spec)
            else
                r = reply.void(m)
            end
            resp:set(i, r)
        end
        return resp
    end
end

local function build(sent, rows_for, extra)
    local el = { "protect", columns = { "pks.t.secret", "pks.c.secret",
                                        "pks.wrong.secret" },
                 key_manager = KM }
    for k, v in pairs(extra or {}) do
        el[k] = v
    end
    return testing.build({ el, fake(sent, rows_for) }, "cassandra")
end

local function err_of(r)
    local e = r:error_info()
    return e and e.message, e and e.code
end

describe("protect on writes", function()
    before_each(learn_all)
    it("seals a literal in INSERT, bound to its row and column", function()
        local sent = {}
        local t = build(sent)
        local resp = t:run(testing.cql("INSERT INTO pks.t (k, secret, note) "
                                       .. "VALUES ('row1', 0xcafe01, 'n')"))
        assert.equal("RESULT", resp[1]:opcode_name())
        local q = sent[1].query
        assert.is_nil(q:find("cafe01", 1, true))
        local hexed = q:match("VALUES %('row1', 0x(%x+), 'n'%)$")
        assert.truthy(hexed, q)
        local env = unhex(hexed)
        assert.equal("test-1", select(2, envelope.header(env)))
        local ring = opener()
        assert.equal("\202\254\1", ring:open(env, envelope.identity(
            "pks", "t", "secret", key_bytes("row1"))))
        assert.is_nil(ring:open(env, envelope.identity(
            "pks", "t", "secret", key_bytes("row2"))))
        assert.is_nil(ring:open(env, envelope.identity(
            "pks", "t", "note", key_bytes("row1"))))
    end)

    it("seals bound values of a QUERY, and a composite key's", function()
        local sent = {}
        local t = build(sent)
        t:run(testing.cql("UPDATE pks.c SET secret = ? WHERE a = ? AND b = ?",
                          { { type = "blob", value = "plain-bytes" }, "x", 7 }))
        local v = sent[1].values[1]
        assert.not_equal("plain-bytes", v)
        assert.equal("plain-bytes", opener():open(v, envelope.identity(
            "pks", "c", "secret", key_bytes("x") .. key_bytes("\0\0\0\7"))))
        assert.equal("x", sent[1].values[2])
        -- v5 (flags an [int]), with a null and an unset around it
        t:run(testing.cql("UPDATE pks.c SET note = ?, secret = ? WHERE a = ? "
                          .. "AND b = ?", { testing.cql_request.NULL,
                          { type = "blob", value = "v5-bytes" }, "y", 8 },
                          { version = 5 }))
        v = sent[2].values[2]
        assert.is_nil(sent[2].values[1])
        assert.equal("v5-bytes", opener():open(v, envelope.identity(
            "pks", "c", "secret", key_bytes("y") .. key_bytes("\0\0\0\8"))))
        assert.equal("y", sent[2].values[3])
    end)

    it("leaves nulls, other tables and other columns alone", function()
        local sent = {}
        local t = build(sent)
        local q1 = "INSERT INTO pks.t (k, secret, note) VALUES ('a', null, "
                   .. "'0xcafe')"
        local q2 = "INSERT INTO pks.other (k, secret) VALUES ('a', 0xcafe)"
        t:run(testing.batch(testing.cql(q1), testing.cql(q2)))
        assert.equal(q1, sent[1].query)
        assert.equal(q2, sent[2].query)
    end)

    it("seals literals and bound values in BATCH children", function()
        local sent = {}
        local t = build(sent)
        local req = require "shotover.cql.request"
        local ins = "INSERT INTO pks.t (k, secret) VALUES (?, ?)"
        local lit = "INSERT INTO pks.t (k, secret) VALUES ('b2', 0x0102)"
        local body = string.char(0) .. reply.be16(3)
            .. string.char(0) .. be32(#ins) .. ins .. reply.be16(2)
            .. reply.cell("text", "b1") .. reply.cell("blob", "bound-1")
            .. string.char(0) .. be32(#lit) .. lit .. reply.be16(0)
            .. string.char(0) .. be32(#"INSERT INTO pks.t (k, note) VALUES ('b3', 'x')")
            .. "INSERT INTO pks.t (k, note) VALUES ('b3', 'x')" .. reply.be16(0)
            .. reply.be16(1) .. string.char(0)
        local resp = t:run(req.envelope(req.OP.QUERY + 6, body))
        assert.equal("RESULT", resp[1]:opcode_name(),
                     tostring(err_of(resp[1])))
        local ch = sent[1].children
        assert.equal(3, #ch)
        local ring = opener()
        assert.equal("b1", ch[1].values[1])
        assert.equal("bound-1", ring:open(ch[1].values[2], envelope.identity(
            "pks", "t", "secret", key_bytes("b1"))))
        local hexed = ch[2].query:match("0x(%x+)%)$")
        assert.equal("\1\2", ring:open(unhex(hexed), envelope.identity(
            "pks", "t", "secret", key_bytes("b2"))))
        assert.equal("INSERT INTO pks.t (k, note) VALUES ('b3', 'x')",
                     ch[3].query)
    end)
end)

describe("protect behind audit", function()
    before_each(learn_all)

    it("leaves no protected value in the audit trail", function()
        local file = os.tmpname()
        local sent = {}
        local t = testing.build({
            { "audit", file = file },
            { "protect", columns = { "pks.t.secret" }, key_manager = KM },
            fake(sent) }, "cassandra")
        t:run(testing.cql("INSERT INTO pks.t (k, secret) VALUES ('a', "
                          .. "0xfeedface01)"))
        t:run(testing.cql("INSERT INTO pks.t (k, secret) VALUES (?, ?)",
                          { "b", { type = "blob", value = "bound-plain" } }))
        local f = assert(io.open(file))
        local trail = f:read("*a")
        f:close()
        os.remove(file)
        assert.matches("INSERT INTO pks.t (k, secret) VALUES (?, ?)", trail,
                       1, true)
        assert.is_nil(trail:lower():find("feedface01", 1, true))
        assert.is_nil(trail:find("bound-plain", 1, true))
        assert.equal(2, #sent)
    end)
end)

describe("protect on reads", function()
    before_each(learn_all)
    local ring = opener()
    local function sealed(k, v, col)
        return ring:seal(v, envelope.identity("pks", "t", col or "secret",
                                              key_bytes(k)))
    end

    it("opens values by the key in the row or in WHERE", function()
        local sent = {}
        local t = build(sent, function(m)
            local q = m:query()
            if q:find("SELECT k,") then
                return { keyspace = "pks", table = "t",
                         columns = { { "k", "text" }, { "secret", "blob" } },
                         rows = { { "r1", sealed("r1", "one") },
                                  { "r2", sealed("r2", "two") },
                                  { "r3", nil } } }
            end
            return { keyspace = "pks", table = "t",
                     columns = { { "secret", "blob" } },
                     rows = { { sealed("r9", "nine") } } }
        end)
        local r = t:run(testing.cql("SELECT k, secret FROM pks.t"))[1]
        assert.equal("RESULT", r:opcode_name(), tostring(err_of(r)))
        local got = r:rows()
        assert.equal("one", got[1].secret)
        assert.equal("two", got[2].secret)
        assert.is_nil(got[3].secret)
        r = t:run(testing.cql("SELECT secret FROM pks.t WHERE k = 'r9'"))[1]
        assert.equal("nine", r:rows()[1].secret)
    end)

    it("opens a composite key's values, one key column selected", function()
        local sent = {}
        local sealed_c = ring:seal("comp", envelope.identity("pks", "c",
            "secret", key_bytes("x") .. key_bytes("\0\0\0\7")))
        local t = build(sent, function()
            return { keyspace = "pks", table = "c",
                     columns = { { "b", "int" }, { "secret", "blob" } },
                     rows = { { 7, sealed_c } } }
        end)
        -- b alone in the row: the key comes from WHERE
        local r = t:run(testing.cql("SELECT b, secret FROM pks.c WHERE "
                                    .. "a = 'x' AND b = 7"))[1]
        assert.equal("comp", r:rows()[1].secret, tostring(err_of(r)))
    end)

    it("fails a request whose value was moved or changed", function()
        local sent = {}
        local moved = sealed("r1", "one")
        local t = build(sent, function()
            return { keyspace = "pks", table = "t",
                     columns = { { "k", "text" }, { "secret", "blob" } },
                     rows = { { "r2", moved } } }
        end)
        local r = t:run(testing.cql("SELECT k, secret FROM pks.t"))[1]
        local msg, code = err_of(r)
        assert.equal(reply.CODE.READ_FAILURE, code)
        assert.matches("a value of pks.t.secret: the value does not "
                       .. "authenticate", msg, 1, true)
        assert.is_nil(msg:find("one", 1, true))
    end)

    it("opens the row an INSERT IF NOT EXISTS finds", function()
        local sent = {}
        local t = build(sent, function(m)
            if m:query():find("IF NOT EXISTS", 1, true) then
                return { keyspace = "pks", table = "t",
                         columns = { { "[applied]", "boolean" },
                                     { "k", "text" }, { "note", "text" },
                                     { "secret", "blob" } },
                         rows = { { false, "r1", "n", sealed("r1", "old") } } }
            end
        end)
        local r = t:run(testing.cql("INSERT INTO pks.t (k, note) VALUES "
                                    .. "('r1', 'x') IF NOT EXISTS"))[1]
        assert.equal("RESULT", r:opcode_name(), tostring(err_of(r)))
        local row = r:rows()[1]
        assert.is_false(row["[applied]"])
        assert.equal("old", row.secret)
    end)

    it("refuses a read that has no partition key to open with", function()
        local sent = {}
        local t = build(sent, function() error("not sent") end)
        local r = t:run(testing.cql("SELECT secret FROM pks.t"))[1]
        local msg, code = err_of(r)
        assert.equal(reply.CODE.INVALID, code)
        assert.matches("needs the partition key: select its column(s) (k) "
                       .. "or restrict them by equality in WHERE", msg, 1,
                       true)
        assert.equal(0, #sent)
    end)
end)

describe("protect refuses", function()
    before_each(learn_all)
    local cases = {
        { "SELECT k FROM pks.t WHERE secret = 0x01 ALLOW FILTERING",
          "pks.t.secret is encrypted: a WHERE restriction on it cannot match" },
        { "DELETE FROM pks.t WHERE k = 'a' IF secret = 0x01",
          "an IF condition on it cannot be checked" },
        { "INSERT INTO pks.wrong (k, secret) VALUES ('a', 'x')",
          "pks.wrong.secret is configured as protected but its type is text; "
          .. "a protected column must be a blob" },
        { "INSERT INTO pks.t (k, secret) VALUES ('a', textAsBlob('x'))",
          "the value for pks.t.secret must be a blob literal (0x...) or a "
          .. "bind marker, not a call of textasblob" },
        { "INSERT INTO pks.t (k, secret) VALUES ('a', '4111-secret')",
          "bind marker, not a string literal: the column is encrypted" },
        { "UPDATE pks.t SET secret = secret + 0x01 WHERE k = 'a'",
          "only \"secret = value\" can set it" },
        { "UPDATE pks.t SET secret = 0x01 WHERE k IN ('a', 'b')",
          "needs its whole partition key by equality (k)" },
        { "INSERT INTO pks.t JSON '{\"k\": \"a\"}'", "INSERT JSON into pks.t" },
        { "SELECT blobAsText(secret) FROM pks.t WHERE k = 'a'",
          "select it as a column" },
    }
    for _, c in ipairs(cases) do
        it(c[1], function()
            local sent = {}
            local t = build(sent)
            local r = t:run(testing.cql(c[1]))[1]
            local msg, code = err_of(r)
            assert.equal(reply.CODE.INVALID, code, tostring(msg))
            assert.matches(c[2], msg, 1, true)
            assert.is_nil(msg:find("4111", 1, true))    -- never the value
            assert.equal(0, #sent)
        end)
    end

    it("a PREPARE that could not work, before the node sees it", function()
        local sent = {}
        local t = build(sent)
        local r = t:run(testing.cql_request.prepare(
            "SELECT k FROM pks.t WHERE secret = ? ALLOW FILTERING"))[1]
        local msg, code = err_of(r)
        assert.equal(reply.CODE.INVALID, code)
        assert.matches("WHERE restriction", msg, 1, true)
        assert.equal(0, #sent)
    end)

    it("a BATCH of a statement not prepared here: UNPREPARED", function()
        local sent = {}
        local t = build(sent)
        local req = require "shotover.cql.request"
        local body = string.char(0) .. reply.be16(1) .. string.char(1)
            .. reply.be16(4) .. "\9\8\7\6" .. reply.be16(0)
            .. reply.be16(1) .. string.char(0)
        local r = t:run(req.envelope(req.OP.QUERY + 6, body))[1]
        local msg, code = err_of(r)
        assert.equal(reply.CODE.UNPREPARED, code)
        assert.matches("not prepared here", msg, 1, true)
        assert.equal("\0\4\9\8\7\6", r:body():sub(-6))
        assert.equal(0, #sent)
    end)

    it("an EXECUTE of a statement not prepared here: UNPREPARED", function()
        local sent = {}
        local t = build(sent)
        local r = t:run(testing.cql_request.execute("\1\2\3\4", {}))[1]
        local _, code = err_of(r)
        assert.equal(reply.CODE.UNPREPARED, code)
        assert.equal(0, #sent)
    end)
end)

describe("protect config", function()
    it("names the path of each problem", function()
        local errs = testing.errors({
            { "protect", columns = { "pks.t", 5 },
              key_manager = { "local", kek = "short" } },
            { "null" } }, "cassandra")
        assert.matches('chain[1].columns[1]: expected "keyspace.table.column"'
                       .. ', got "pks.t"', errs, 1, true)
        assert.matches("chain[1].columns[2]: expected", errs, 1, true)
        assert.matches("chain[1].key_manager.kek: not a 32-byte key", errs, 1,
                       true)
        assert.is_nil(errs:find("short", 1, true))
        errs = testing.errors({
            { "protect", columns = { "ks.t.c" },
              key_manager = { "local", kek = KEK,
                              old_keks = { ["2025-01"] = "nope" } } },
            { "null" } }, "cassandra")
        assert.matches('chain[1].key_manager.old_keks["2025-01"]: not a '
                       .. '32-byte key', errs, 1, true)
        errs = testing.errors({
            { "protect", columns = { "pks.t.c" } }, { "null" } },
            "cassandra")
        assert.matches("chain[1].key_manager: required", errs, 1, true)
        errs = testing.errors({
            { "protect", columns = { "pks.t.c" }, key_manager = KM },
            { "null" } }, "redis")
        assert.matches('does not support protocol "redis"', errs, 1, true)
    end)

    it("parses literals with their offsets", function()
        local q = "INSERT INTO t (k, v) VALUES ('a', 0x01) USING TTL 5"
        local ast = parser.parse(q)
        assert.equal(30, ast.values[1].at)
        assert.equal(35, ast.values[2].at)
        assert.equal("0x01", q:sub(35, 38))
        q = "UPDATE t SET v = 0xab WHERE k = 'x' AND c IN (1, 2)"
        ast = parser.parse(q)
        assert.equal("0xab", q:sub(ast.assignments[1].value.at,
                                   ast.assignments[1].value.at + 3))
        assert.equal("'x'", q:sub(ast.where[1].value.at,
                                  ast.where[1].value.at + 2))
        assert.equal("2", q:sub(ast.where[2].values[2].at,
                                ast.where[2].values[2].at))
    end)
end)

describe("protect when the key manager fails", function()
    before_each(learn_all)

    it("answers SERVER_ERROR and sends nothing", function()
        local sent = {}
        local t = build(sent)
        -- a key manager that has no data key to give
        local el = t.chain.elements[1].inst
        el.ring.km = { data_key = function() return nil, "KMS unreachable" end }
        el.ring:rotate()
        local r = t:run(testing.cql("INSERT INTO pks.t (k, secret) VALUES "
                                    .. "('a', 0x01)"))[1]
        local msg, code = err_of(r)
        assert.equal(reply.CODE.SERVER_ERROR, code)
        assert.matches("cannot encrypt pks.t.secret: the key manager gave no "
                       .. "data key: KMS unreachable", msg, 1, true)
        assert.equal(0, #sent)
    end)
end)
