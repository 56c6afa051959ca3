-- The repl's own pieces: Lua values pretty-printed, CQL rows as a table,
-- bound values as a Lua list, and tab completion's candidates.  The repl
-- itself (reading lines, dot-commands, .reload) runs in
-- t/integration/099-redis_route_test_spec.lua.
local repl = require "shotover.cli.repl"
local cql_request = require "shotover.cql.request"
local cql_reply = require "shotover.cql.reply"

describe("repl pretty-printing", function()
    local pretty = repl.pretty

    it("prints scalars and strings as Lua would read them", function()
        assert.are.equal("42", pretty(42))
        assert.are.equal('"a\\nb"', pretty("a\nb"))
        assert.are.equal("nil", pretty(nil))
        assert.are.equal("true", pretty(true))
    end)

    it("prints tables as constructors, list first, keys sorted", function()
        assert.are.equal("{}", pretty({}))
        assert.are.equal('{ 1, "two", [10] = 3, a = 1, b = { c = true }, '
                         .. '["not an id"] = 2 }',
                         pretty({ 1, "two", b = { c = true }, a = 1,
                                  ["not an id"] = 2, [10] = 3 }))
    end)

    it("breaks long tables over indented lines", function()
        local t = { name = string.rep("x", 40), chain = { { "redis",
            remote = "127.0.0.1:6379", name = string.rep("y", 10) } } }
        assert.are.equal('{\n  chain = { { "redis", name = "'
            .. string.rep("y", 10) .. '", remote = "127.0.0.1:6379" } },\n'
            .. '  name = "' .. string.rep("x", 40) .. '"\n}', pretty(t))
    end)

    it("marks cycles, stops deep nesting, and hides passwords", function()
        local t = { a = 1 }
        t.self = t
        assert.are.equal("{ a = 1, self = <cycle> }", pretty(t))
        local deep = { { { { { { { { 1 } } } } } } } }
        assert.matches("{ ... }", pretty(deep), 1, true)
        assert.are.equal('{ password = "<redacted>", remote = "h:1" }',
                         pretty({ remote = "h:1", password = "s3cret" }))
    end)
end)

describe("repl CQL values", function()
    it("takes a comma list or a Lua list", function()
        local stmt, v = repl.cql_values("SELECT * FROM t WHERE k = ? AND "
                                        .. "c = ? -- values: 1, 'x'")
        assert.are.equal("SELECT * FROM t WHERE k = ? AND c = ?", stmt)
        assert.are.same({ 1, "x" }, v)
        stmt, v = repl.cql_values("INSERT INTO t (k, v) VALUES (?, ?) "
                                  .. "-- values: { 1, 'x' }")
        assert.are.equal("INSERT INTO t (k, v) VALUES (?, ?)", stmt)
        assert.are.same({ 1, "x" }, v)
        -- one typed value stays one value
        stmt, v = repl.cql_values("SELECT * FROM t WHERE k = ? -- values: "
                                  .. "{ type = 'bigint', value = 5 }")
        assert.are.same({ { type = "bigint", value = 5 } }, v)
        assert.is_truthy(stmt)
        stmt, v = repl.cql_values("SELECT 1 -- values: null")
        assert.are.equal(cql_request.NULL, v[1])
        assert.is_truthy(stmt)
        assert.is_nil((repl.cql_values("SELECT 1 -- values: {")))
    end)
end)

describe("repl CQL rows", function()
    it("shows a RESULT Rows as an aligned table", function()
        local req = cql_request.query("SELECT k, v FROM ks.t")
        local r = cql_reply.rows(req, { keyspace = "ks", table = "t",
            columns = { { "k", "int" }, { "value", "text" } },
            rows = { { 1, "one" }, { 22, nil } } })
        assert.are.same({
            " k  | value",
            "----+------",
            " 1  | one",
            " 22 | null",
            "(2 rows)",
        }, repl.rows_table(r, req))
    end)

    it("hides password columns, and shows nothing for other replies",
       function()
        local req = cql_request.query("SELECT * FROM system_auth.roles")
        local r = cql_reply.rows(req, { keyspace = "system_auth",
            table = "roles", columns = { { "role", "text" },
                                         { "salted_hash", "text" } },
            rows = { { "admin", "$2a$10$abc" } } })
        local lines = repl.rows_table(r, req)
        assert.matches("admin | <redacted>", lines[3], 1, true)
        assert.is_nil(repl.rows_table(cql_reply.ready(req), req))
        local message = require "shotover.message"
        assert.is_nil(repl.rows_table(message.frame_from_resp("+OK\r\n")))
    end)
end)

describe("repl completion", function()
    it("completes Redis command names in the case typed", function()
        assert.are.same({ "PUBLISH", "PUBSUB", "PUNSUBSCRIBE" },
                        repl.completions("PU", "redis"))
        assert.are.same({ "hello", "hexists" },
                        (function()
                            local out = {}
                            for _, w in ipairs(repl.completions("he",
                                                                "redis")) do
                                out[#out + 1] = w
                            end
                            return out
                        end)())
        assert.are.same({}, repl.completions("NOPE", "redis"))
    end)

    it("completes CQL keywords and dot-commands", function()
        assert.are.same({ "SELECT", "SET" }, repl.completions("SE",
                                                              "cassandra"))
        assert.are.same({ ".reload" }, repl.completions(".r", "redis"))
        assert.are.same({ ".source", ".sources" },
                        repl.completions(".so", "redis"))
    end)
end)
