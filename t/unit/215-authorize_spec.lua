-- authorize: rules per user and role on Redis commands, classes and key
-- prefixes and on CQL keyspaces and tables, first match wins, default
-- deny; the protocols' own errors, chain.decisions, the trace's note, and
-- config errors with their paths.
local testing = require "shotover.testing"

-- an element that says who the client is, as authenticate does
local function as(user)
    return function(batch, chain)
        chain.conn.user = user
        return chain:next(batch)
    end
end

local RULES = {
    roles = { admins = { "root" } },
    rules = {
        { role = "admins", allow = true },
        { user = "alice", deny = true, classes = { "admin" } },
        { user = "alice", allow = true, commands = { "get", "SET", "MGET" },
          key_prefixes = { "app:", "shared:" } },
        { user = "alice", allow = true, classes = { "connection" } },
        { allow = true, commands = { "PING" } },
    },
}

local function chain_for(user, protocol)
    local el = { "authorize", roles = RULES.roles, rules = RULES.rules }
    return testing.build({ as(user), el,
                           { "debug_returner", simple = "OK" } },
                         { protocol = protocol })
end

local function perm(user, cmd, decision)
    return string.format("NOPERM User %s has no permissions to run the '%s' "
                         .. "command (shotover: authorize: %s)", user, cmd,
                         decision)
end

describe("authorize on redis", function()
    it("lets the first matching rule decide, and denies by default",
       function()
        local t = chain_for("alice")
        assert.same({ "OK", "OK", perm("alice", "get", "denied by default"),
                      perm("alice", "flushall", "denied by rules[2]"),
                      "OK", perm("alice", "hset", "denied by default") },
                    t:replies({ "GET", "app:1" }, { "SET", "shared:x", "1" },
                              { "GET", "other:1" }, { "FLUSHALL" },
                              { "ECHO", "hi" }, { "HSET", "app:h", "f", "v" }))
        assert.same({ "allowed by rules[3]", "allowed by rules[3]",
                      "denied by default", "denied by rules[2]",
                      "allowed by rules[4]", "denied by default" },
                    t.ctx.decisions)
    end)

    it("needs every key of an allow rule's request under its prefixes",
       function()
        local t = chain_for("alice")
        assert.same({ "OK", perm("alice", "mget", "denied by default") },
                    t:replies({ "MGET", "app:1", "shared:2" },
                              { "MGET", "app:1", "secret:2" }))
    end)

    it("a deny of a class refuses a command in it among others", function()
        -- CLIENT KILL is connection and admin: rules[2] denies admin
        local t = chain_for("alice")
        assert.same({ perm("alice", "client", "denied by rules[2]") },
                    t:replies({ "CLIENT", "KILL", "ID", "1" }))
    end)

    it("matches roles and rules for anyone", function()
        local root = chain_for("root")
        assert.same({ "OK", "OK" }, root:replies({ "FLUSHALL" },
                                                 { "GET", "secret:1" }))
        assert.same({ "allowed by rules[1]", "allowed by rules[1]" },
                    root.ctx.decisions)
        local bob = chain_for("bob")
        assert.same({ "OK", perm("bob", "get", "denied by default") },
                    bob:replies({ "PING" }, { "GET", "app:1" }))
        local nobody = chain_for(nil)
        assert.same({ "OK", perm("(not authenticated)", "get",
                                 "denied by default") },
                    nobody:replies({ "PING" }, { "GET", "app:1" }))
    end)

    it("shows the deciding rule in a trace", function()
        local t = chain_for("alice")
        local _, tr = t:trace({ "GET", "app:1" })
        assert.matches("authorize: forwarded %(allowed by rules%[3%]%)",
                       testing.format_trace(tr))
        _, tr = t:trace({ "FLUSHALL" })
        assert.matches("authorize: answered .*%(denied by rules%[2%]%)",
                       testing.format_trace(tr))
    end)
end)

describe("authorize after authenticate", function()
    it("gives audit the decisions by its own request indexes", function()
        local password = require "shotover.password"
        local seen
        -- what audit does: clear, hand on, read chain.decisions by index
        local function audit_like(batch, chain)
            chain.decisions = nil
            local resp = chain:next(batch)
            seen = {}
            for i = 1, batch.n do
                seen[i] = chain.decisions and chain.decisions[i] or "-"
            end
            return resp
        end
        local t = testing.build({ audit_like,
            { "authenticate", users = { alice = {
                hash = password.hash("pw", 1000) } },
              dict = "authz-unit" },
            { "authorize", rules = RULES.rules, roles = RULES.roles },
            { "debug_returner", simple = "OK" } })
        local r = t:replies({ "AUTH", "alice", "pw" }, { "GET", "app:1" },
                            { "AUTH", "alice", "bad" }, { "FLUSHALL" })
        assert.same({ "OK", "OK" }, { r[1], r[2] })
        assert.matches("^WRONGPASS", r[3])
        assert.matches("^NOPERM", r[4])
        assert.same({ "-", "allowed by rules[3]", "-", "denied by rules[2]" },
                    seen)
    end)
end)

describe("authorize on cassandra", function()
    local rules = {
        { user = "alice", deny = true, tables = { "app.secrets" } },
        { user = "alice", allow = true, keyspaces = { "app" },
          classes = { "read", "write" } },
    }
    local function build()
        return testing.build({ as("alice"), { "authorize", rules = rules },
                               { "cassandra", remote = "127.0.0.1:9042" } },
                             { protocol = "cassandra" })
    end

    it("allows and denies by keyspace and table, UNAUTHORIZED when denied",
       function()
        local t = build()
        local r = t:replies(testing.cql("SELECT * FROM app.users"),
                            testing.cql("SELECT * FROM app.secrets"),
                            testing.cql("SELECT * FROM other.users"),
                            testing.cql("DROP TABLE app.users"))
        assert.not_matches("^ERROR", r[1])
        assert.matches("^ERROR 0x2100 .*denied by rules%[1%]", r[2])
        assert.matches("^ERROR 0x2100 .*denied by default", r[3])
        assert.matches("^ERROR 0x2100 .*denied by default", r[4])
        assert.same({ "allowed by rules[2]", "denied by rules[1]",
                      "denied by default", "denied by default" },
                    t.ctx.decisions)
    end)

    it("a BATCH passes an allow rule only if every statement does",
       function()
        local t = build()
        local r = t:replies(testing.cql("BEGIN BATCH INSERT INTO app.a (k) "
            .. "VALUES (1); INSERT INTO app.secrets (k) VALUES (1); "
            .. "APPLY BATCH"))
        assert.matches("^ERROR 0x2100 .*denied by rules%[1%]", r[1])
    end)
end)

describe("authorize config", function()
    it("reports every problem with its path", function()
        local ok, errs = testing.check({
            { "authorize", roles = { ops = { "carol", 3 } }, rules = {
                { user = "alice" },
                { role = "nope", allow = true, classes = { "reads" } },
                { user = "a", role = "ops", deny = true, keyspaces = {} },
                { allow = true, prefix = "x" },
                "bad",
            } },
            { "null" } })
        assert.is_nil(ok)
        table.sort(errs)
        assert.same({
            "chain[1].roles.ops[2]: expected a user name, got 3",
            "chain[1].rules[1]: give exactly one of allow = true and deny "
                .. "= true",
            'chain[1].rules[2].classes[1]: unknown query type "reads"',
            'chain[1].rules[2].role: unknown role "nope"',
            "chain[1].rules[3].keyspaces: expected a non-empty list",
            "chain[1].rules[3]: give at most one of user and role",
            'chain[1].rules[4]: unknown key "prefix" (one of user, role, '
                .. "allow, deny, classes, commands, key_prefixes, keyspaces, "
                .. "tables)",
            'chain[1].rules[5]: expected a table, got "bad"',
        }, errs)
    end)
end)
