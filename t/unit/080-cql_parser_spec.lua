-- The CQL statement parser: for tables of statements, the AST fields the
-- transforms read (kind, class, names, values, bind markers), and for a
-- list of bad statements, an error naming the offset.
local parser = require "shotover.cql.parser"

-- expected-value markers: the field must be absent / an empty table / NaN
local NIL = setmetatable({}, { __tostring = function() return "<absent>" end })
local EMPTY = setmetatable({}, { __tostring = function() return "{}" end })
local NAN = setmetatable({}, { __tostring = function() return "NaN" end })

local function show(v)
    if type(v) == "string" then
        return string.format("%q", v)
    end
    return tostring(v)
end

-- nil when `actual` has every field of `expected` (lists: same length),
-- else where and how they differ
local function mismatch(expected, actual, path)
    if expected == NIL then
        if actual ~= nil then
            return path .. ": expected absent, got " .. show(actual)
        end
    elseif expected == NAN then
        if actual == actual then
            return path .. ": expected NaN, got " .. show(actual)
        end
    elseif expected == EMPTY then
        if type(actual) ~= "table" or next(actual) ~= nil then
            return path .. ": expected an empty table, got " .. show(actual)
        end
    elseif type(expected) ~= "table" then
        if expected ~= actual then
            return path .. ": expected " .. show(expected) .. ", got "
                   .. show(actual)
        end
    elseif type(actual) ~= "table" then
        return path .. ": expected a table, got " .. show(actual)
    else
        if #expected > 0 and #expected ~= #actual then
            return path .. ": expected " .. #expected .. " items, got "
                   .. #actual
        end
        for k, v in pairs(expected) do
            local m = mismatch(v, actual[k], path .. "." .. tostring(k))
            if m then
                return m
            end
        end
    end
    return nil
end

local function check(cases, pick)
    for _, case in ipairs(cases) do
        local sql, expected = case[1], case[2]
        local ast, err = parser.parse(sql)
        assert.is_table(ast, sql .. "\n  " .. tostring(err))
        local got = pick and pick(ast) or ast
        local problem = mismatch(expected, got, "ast")
        assert.is_nil(problem, sql .. "\n  " .. tostring(problem))
    end
end

-- builders for expected values
local function M(n, name)
    return { marker = n, name = name or NIL }
end
local function lit(ty, value, text)
    return { type = ty, value = value, text = text }
end
local function int(n)
    return lit("integer", n, tostring(n))
end
local function str(v)
    return lit("string", v, "'" .. v:gsub("'", "''") .. "'")
end
local function rel(column, op, value)
    return { column = column, op = op, value = value }
end

local SCHEMA, DCL = "schema_change", "dcl"

-- every kind of statement: kind, class and the names of what it touches
local KINDS = {
    { "SELECT * FROM ks.t",
      { kind = "select", class = "read", keyspace = "ks", table = "t" } },
    { "INSERT INTO t (a) VALUES (1)",
      { kind = "insert", class = "write", keyspace = NIL, table = "t" } },
    { "UPDATE ks.t SET a = 1 WHERE k = 1",
      { kind = "update", class = "write", keyspace = "ks", table = "t" } },
    { "DELETE FROM t WHERE k = 1",
      { kind = "delete", class = "write", table = "t" } },
    { "BEGIN BATCH APPLY BATCH",
      { kind = "batch", class = "write", batch_type = "logged",
        statements = EMPTY } },
    { "USE ks", { kind = "use", class = "use", keyspace = "ks" } },
    { "TRUNCATE ks.t",
      { kind = "truncate", class = "write", keyspace = "ks", table = "t" } },
    { "TRUNCATE TABLE t",
      { kind = "truncate", class = "write", table = "t" } },
    { "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', "
      .. "'replication_factor': 1}",
      { kind = "create_keyspace", class = SCHEMA, keyspace = "ks",
        options = { replication = { class = "SimpleStrategy",
                                    replication_factor = 1 } } } },
    { "CREATE SCHEMA IF NOT EXISTS ks WITH durable_writes = false",
      { kind = "create_keyspace", if_not_exists = true,
        options = { durable_writes = false } } },
    { "CREATE TABLE ks.t (k int PRIMARY KEY, v text)",
      { kind = "create_table", class = SCHEMA, keyspace = "ks", table = "t",
        columns = { "k", "v" }, partition_key = { "k" },
        clustering_key = EMPTY } },
    { "CREATE COLUMNFAMILY t (k int, PRIMARY KEY (k))",
      { kind = "create_table", table = "t", partition_key = { "k" } } },
    { "CREATE TABLE t2 LIKE ks.t",
      { kind = "create_table", table = "t2",
        like = { keyspace = "ks", table = "t" } } },
    { "CREATE INDEX ON ks.t (v)",
      { kind = "create_index", class = SCHEMA, keyspace = "ks",
        table = "t", name = NIL, targets = { { column = "v" } } } },
    { "CREATE CUSTOM INDEX idx ON t (v) USING 'StorageAttachedIndex'",
      { kind = "create_index", custom = true, name = "idx", table = "t",
        using_class = "StorageAttachedIndex" } },
    { "CREATE TYPE ks.address (street text, zip int)",
      { kind = "create_type", class = SCHEMA, keyspace = "ks",
        name = "address", fields = { { name = "street", type = "text" },
                                     { name = "zip", type = "int" } } } },
    { "CREATE FUNCTION ks.plus (a int, b int) CALLED ON NULL INPUT "
      .. "RETURNS int LANGUAGE java AS $$return a + b;$$",
      { kind = "create_function", class = SCHEMA, keyspace = "ks",
        name = "plus", called_on_null_input = true, returns = "int",
        language = "java", body = "return a + b;",
        arguments = { { name = "a", type = "int" },
                      { name = "b", type = "int" } } } },
    { "CREATE OR REPLACE AGGREGATE ks.average (int) SFUNC avg_state "
      .. "STYPE tuple<int, bigint> FINALFUNC avg_final INITCOND (0, 0)",
      { kind = "create_aggregate", class = SCHEMA, or_replace = true,
        keyspace = "ks", name = "average", arg_types = { "int" },
        sfunc = "avg_state", stype = "tuple<int, bigint>",
        finalfunc = "avg_final", initcond = { type = "tuple" } } },
    { "CREATE MATERIALIZED VIEW ks.by_v AS SELECT k, v FROM ks.t "
      .. "WHERE v IS NOT NULL AND k IS NOT NULL PRIMARY KEY (v, k)",
      { kind = "create_materialized_view", class = SCHEMA,
        keyspace = "ks", table = "by_v",
        base = { keyspace = "ks", table = "t" }, columns = { "k", "v" },
        partition_key = { "v" }, clustering_key = { "k" } } },
    { "CREATE TRIGGER audit ON ks.t USING 'org.example.Audit'",
      { kind = "create_trigger", class = SCHEMA, name = "audit",
        keyspace = "ks", table = "t", using_class = "org.example.Audit" } },
    { "CREATE ROLE analyst WITH PASSWORD = 'secret' AND LOGIN = true",
      { kind = "create_role", class = DCL, name = "analyst",
        options = { password = "secret", login = true } } },
    { "CREATE USER IF NOT EXISTS Alice WITH PASSWORD 'pw' NOSUPERUSER",
      { kind = "create_user", class = DCL, name = "Alice",
        if_not_exists = true,
        options = { password = "pw", superuser = false } } },
    { "ALTER KEYSPACE ks WITH durable_writes = true",
      { kind = "alter_keyspace", class = SCHEMA, keyspace = "ks",
        options = { durable_writes = true } } },
    { "ALTER TABLE ks.t ADD extra text",
      { kind = "alter_table", class = SCHEMA, keyspace = "ks", table = "t",
        action = "add", columns = { "extra" } } },
    { "ALTER TABLE t DROP (a, b)",
      { kind = "alter_table", action = "drop", columns = { "a", "b" } } },
    { "ALTER TABLE t RENAME a TO b",
      { kind = "alter_table", action = "rename",
        renames = { { from = "a", to = "b" } } } },
    { "ALTER TABLE t WITH comment = 'hello'",
      { kind = "alter_table", action = "with",
        options = { comment = "hello" } } },
    { "ALTER TABLE t ALTER v MASKED WITH mask_inner(1, null)",
      { kind = "alter_table", action = "alter", column = "v",
        mask = "mask_inner(1, null)" } },
    { "ALTER TYPE ks.address RENAME zip TO postcode",
      { kind = "alter_type", class = SCHEMA, keyspace = "ks",
        name = "address", action = "rename",
        renames = { { from = "zip", to = "postcode" } } } },
    { "ALTER ROLE analyst WITH SUPERUSER = false",
      { kind = "alter_role", class = DCL, name = "analyst",
        options = { superuser = false } } },
    { "ALTER USER alice WITH PASSWORD 'new'",
      { kind = "alter_user", class = DCL, name = "alice",
        options = { password = "new" } } },
    { "ALTER MATERIALIZED VIEW ks.by_v WITH comment = 'x'",
      { kind = "alter_materialized_view", class = SCHEMA, keyspace = "ks",
        table = "by_v" } },
    { "DROP KEYSPACE IF EXISTS ks",
      { kind = "drop_keyspace", class = SCHEMA, keyspace = "ks",
        if_exists = true } },
    { "DROP TABLE ks.t",
      { kind = "drop_table", class = SCHEMA, keyspace = "ks", table = "t" } },
    { "DROP COLUMNFAMILY t", { kind = "drop_table", table = "t" } },
    { "DROP INDEX ks.idx",
      { kind = "drop_index", class = SCHEMA, keyspace = "ks",
        name = "idx" } },
    { "DROP TYPE address",
      { kind = "drop_type", class = SCHEMA, keyspace = NIL,
        name = "address" } },
    { "DROP FUNCTION ks.plus (int, int)",
      { kind = "drop_function", class = SCHEMA, keyspace = "ks",
        name = "plus", arg_types = { "int", "int" } } },
    { "DROP AGGREGATE IF EXISTS average",
      { kind = "drop_aggregate", class = SCHEMA, name = "average",
        if_exists = true } },
    { "DROP MATERIALIZED VIEW ks.by_v",
      { kind = "drop_materialized_view", class = SCHEMA, keyspace = "ks",
        table = "by_v" } },
    { "DROP TRIGGER audit ON ks.t",
      { kind = "drop_trigger", class = SCHEMA, name = "audit",
        keyspace = "ks", table = "t" } },
    { "DROP ROLE analyst",
      { kind = "drop_role", class = DCL, name = "analyst" } },
    { "DROP USER alice", { kind = "drop_user", class = DCL, name = "alice" } },
    { "GRANT SELECT ON ks.t TO analyst",
      { kind = "grant", class = DCL, permissions = { "SELECT" },
        resource = { type = "table", keyspace = "ks", table = "t" },
        grantee = "analyst", keyspace = "ks", table = "t" } },
    { "GRANT ALL PERMISSIONS ON KEYSPACE ks TO analyst",
      { kind = "grant", permissions = { "ALL" },
        resource = { type = "keyspace", keyspace = "ks" } } },
    { "GRANT EXECUTE ON FUNCTION ks.plus(int, int) TO analyst",
      { kind = "grant", permissions = { "EXECUTE" },
        resource = { type = "function", keyspace = "ks", name = "plus",
                     arg_types = { "int", "int" } } } },
    { "REVOKE MODIFY, DROP ON ALL KEYSPACES FROM analyst",
      { kind = "revoke", class = DCL, permissions = { "MODIFY", "DROP" },
        resource = { type = "all_keyspaces" }, grantee = "analyst" } },
    { "GRANT reader TO analyst",
      { kind = "grant_role", class = DCL, role = "reader",
        grantee = "analyst" } },
    { "REVOKE reader FROM analyst",
      { kind = "revoke_role", class = DCL, role = "reader",
        grantee = "analyst" } },
    { "LIST ALL PERMISSIONS ON ks.t OF analyst NORECURSIVE",
      { kind = "list_permissions", class = DCL, permissions = { "ALL" },
        of = "analyst", norecursive = true, keyspace = "ks",
        table = "t" } },
    { "LIST ROLES OF analyst",
      { kind = "list_roles", class = DCL, of = "analyst" } },
    { "LIST USERS", { kind = "list_users", class = DCL } },
    { "LIST SUPERUSERS", { kind = "list_superusers", class = DCL } },
    { "ADD IDENTITY 'spiffe://example/x' TO ROLE 'analyst'",
      { kind = "add_identity", class = DCL,
        identity = "spiffe://example/x", role = "analyst" } },
    { "DROP IDENTITY IF EXISTS 'spiffe://example/x'",
      { kind = "drop_identity", class = DCL,
        identity = "spiffe://example/x", if_exists = true } },
    { "DESCRIBE KEYSPACES",
      { kind = "describe", class = "read", target = "keyspaces" } },
    { "DESC TABLE ks.t",
      { kind = "describe", target = "table", keyspace = "ks",
        table = "t" } },
    { "DESCRIBE FULL SCHEMA",
      { kind = "describe", target = "schema", full = true } },
    { "COMMIT SEARCH INDEX ON ks.t",
      { kind = "other", class = "other",
        keywords = { "COMMIT", "SEARCH", "INDEX" } } },
    { "rebuild search index on t ('x', [1]);",
      { kind = "other", keywords = { "REBUILD", "SEARCH", "INDEX" } } },
}

-- identifiers: unquoted fold to lower case, "quoted" keep case, "" is "
local IDENTIFIERS = {
    { "SELECT * FROM MyKs.MyTable", { keyspace = "myks", table = "mytable" } },
    { 'SELECT * FROM "MyKs"."MyTable"',
      { keyspace = "MyKs", table = "MyTable" } },
    { 'SELECT * FROM "with ""quote"""',
      { keyspace = NIL, table = 'with "quote"' } },
    { 'SELECT "Col", col, COL, "a b" FROM t',
      { columns = { "Col", "col", "col", "a b" } } },
    { 'INSERT INTO "T" ("Key", Value) VALUES (1, 2)',
      { table = "T", columns = { "Key", "value" } } },
    { 'USE "MixedCase"', { keyspace = "MixedCase" } },
    { 'SELECT * FROM "select"', { table = "select" } },
    { "SELECT key, type, values, ttl, json FROM t",
      { columns = { "key", "type", "values", "ttl", "json" } } },
    { "UPDATE ks . t SET v = 1 WHERE k = 1",
      { keyspace = "ks", table = "t" } },
    { "CREATE ROLE 'Mixed'", { name = "Mixed" } },
    { "CREATE ROLE Mixed", { name = "mixed" } },
    { 'CREATE ROLE "Mixed"', { name = "Mixed" } },
    { 'SELECT * FROM t WHERE k = :"Key" AND v = :Other',
      { where = { rel("k", "=", M(1, "Key")),
                  rel("v", "=", M(2, "other")) } } },
    { 'DELETE FROM t WHERE "" = 1', { where = { rel("", "=", int(1)) } } },
}

-- comments anywhere, keywords in any case, an optional trailing ';'
local LEXICAL = {
    { "sElEcT * fRoM T wHeRe K = 1 LiMiT 5",
      { kind = "select", table = "t", where = { rel("k", "=", int(1)) },
        limit = int(5) } },
    { "/* lead */ SELECT /* in */ a -- line\n, b // another\n"
      .. "FROM /**/ ks./**/t -- tail",
      { columns = { "a", "b" }, keyspace = "ks", table = "t" } },
    { "\n\t INSERT\nINTO t(a,b)VALUES(1,'x');",
      { kind = "insert", columns = { "a", "b" },
        values = { int(1), str("x") } } },
    { "SELECT * FROM t WHERE k = 1 ;  -- done", { kind = "select" } },
    { "UPDATE t SET c = c + 1 -- why\n WHERE k = ?",
      { assignments = { { column = "c", op = "+", value = int(1) } },
        where = { rel("k", "=", M(1)) } } },
    { "DELETE/**/FROM t WHERE k=1--x", { kind = "delete" } },
    { "begin unlogged batch insert into t (a) values (1) apply batch",
      { kind = "batch", batch_type = "unlogged" } },
    { "SELECT * FROM t WHERE k = ? /* ? in a comment */ AND v = '?'",
      { where = { rel("k", "=", M(1)), rel("v", "=", str("?")) } } },
    { "SELECT * FROM t WHERE k = 1--1\n",
      { where = { rel("k", "=", int(1)) } } },
    { "select * from t where k = :/* between */name",
      { where = { rel("k", "=", M(1, "name")) } } },
}

local SELECTS = {
    { "SELECT DISTINCT k FROM t", { distinct = true, columns = { "k" } } },
    { "SELECT JSON k, v FROM t", { json = true, columns = { "k", "v" } } },
    { "SELECT json FROM t", { json = NIL, columns = { "json" } } },
    { "SELECT distinct FROM t", { distinct = NIL, columns = { "distinct" } } },
    { "SELECT JSON * FROM t", { json = true, columns = { "*" } } },
    { "SELECT k AS key_alias, count(*) AS n, writetime(v), CAST(v AS text), "
      .. "ks.f(?, 1) FROM t",
      { columns = { "k", "count(*)", "writetime(v)", "CAST(v AS text)",
                    "ks.f(?, 1)" },
        selectors = {
            { column = "k", alias = "key_alias", text = "k" },
            { func = "count", alias = "n", text = "count(*)" },
            { func = "writetime", alias = NIL, text = "writetime(v)" },
            { column = NIL, func = NIL, text = "CAST(v AS text)" },
            { func = "f", text = "ks.f(?, 1)" } } } },
    { "SELECT a + 1, u.street, m['k'], l[0..2], -a, (int) ? FROM t",
      { columns = { "a + 1", "u.street", "m['k']", "l[0..2]", "-a",
                    "(int) ?" } } },
    { "SELECT * FROM t WHERE k = 1 AND c >= 2 AND c < 10 AND d != 'x'",
      { where = { rel("k", "=", int(1)), rel("c", ">=", int(2)),
                  rel("c", "<", int(10)), rel("d", "!=", str("x")) } } },
    { "SELECT * FROM t WHERE k IN (1, 2, ?)",
      { where = { { column = "k", op = "IN", value = NIL,
                    values = { int(1), int(2), M(1) } } } } },
    { "SELECT * FROM t WHERE k IN ?",
      { where = { { column = "k", op = "IN", value = M(1),
                    values = NIL } } } },
    { "SELECT * FROM t WHERE k IN ()",
      { where = { { column = "k", op = "IN", values = EMPTY } } } },
    { "SELECT * FROM t WHERE (c1, c2) > (?, ?)",
      { where = { { columns = { "c1", "c2" }, op = ">",
                    value = { type = "tuple", items = { M(1), M(2) },
                              text = "(?, ?)" } } } } },
    { "SELECT * FROM t WHERE (c1, c2) IN ((1, 2), (3, 4))",
      { where = { { columns = { "c1", "c2" }, op = "IN",
                    values = { { type = "tuple", items = { int(1), int(2) } },
                               { type = "tuple",
                                 items = { int(3), int(4) } } } } } } },
    { "SELECT * FROM t WHERE token(k) > token(?) AND token(k) <= 100",
      { where = { { token = true, columns = { "k" }, op = ">",
                    value = { type = "function", name = "token",
                              args = { M(1) } } },
                  { token = true, columns = { "k" }, op = "<=",
                    value = int(100) } } } },
    { "SELECT * FROM t WHERE tags CONTAINS 'x' AND m CONTAINS KEY ? "
      .. "AND m['k'] = 'v' AND n NOT CONTAINS KEY 1",
      { where = { rel("tags", "CONTAINS", str("x")),
                  rel("m", "CONTAINS KEY", M(1)),
                  { column = "m", key = str("k"), op = "=", value = str("v") },
                  rel("n", "NOT CONTAINS KEY", int(1)) } } },
    { "SELECT * FROM t WHERE v > 5 GROUP BY k, c ORDER BY c DESC, d "
      .. "PER PARTITION LIMIT 2 LIMIT ? ALLOW FILTERING",
      { group_by = { "k", "c" },
        order_by = { { column = "c", order = "desc" },
                     { column = "d", order = "asc" } },
        per_partition_limit = int(2), limit = M(1),
        allow_filtering = true } },
    { "SELECT * FROM t WHERE v IS NOT NULL AND n NOT IN (1) "
      .. "AND s LIKE 'a%' AND x BETWEEN 1 AND ?",
      { where = { { column = "v", op = "IS NOT", value = { type = "null" } },
                  { column = "n", op = "NOT IN", values = { int(1) } },
                  rel("s", "LIKE", str("a%")),
                  { column = "x", op = "BETWEEN",
                    values = { int(1), M(1) } } } } },
    { "SELECT * FROM t WHERE expr(ks.idx, 'query') AND (k = 1)",
      { where = { { op = "EXPR", index = "idx", keyspace = "ks",
                    value = str("query") },
                  rel("k", "=", int(1)) } } },
    { "SELECT * FROM t ORDER BY v ANN OF [0.5, 1.5] LIMIT 3",
      { order_by = { { column = "v", order = "asc",
                       ann = { type = "list",
                               items = { lit("float", 0.5, "0.5"),
                                         lit("float", 1.5, "1.5") } } } },
        limit = int(3) } },
    { "SELECT * FROM t", { where = NIL, limit = NIL, allow_filtering = NIL,
                           selectors = NIL, columns = { "*" } } },
}

local INSERTS = {
    { "INSERT INTO ks.t (k, v) VALUES (?, ?)",
      { columns = { "k", "v" }, values = { M(1), M(2) },
        if_not_exists = NIL, using = NIL, json = NIL } },
    { "INSERT INTO t (k, v) VALUES (1, 'a') IF NOT EXISTS",
      { values = { int(1), str("a") }, if_not_exists = true } },
    { "INSERT INTO t (k) VALUES (1) USING TTL 86400 AND TIMESTAMP "
      .. "1700000000000000",
      { using = { ttl = int(86400),
                  timestamp = lit("integer", 1700000000000000,
                                  "1700000000000000") } } },
    { "INSERT INTO t (k) VALUES (:k) USING TIMESTAMP :ts AND TTL ?",
      { values = { M(1, "k") }, using = { timestamp = M(2, "ts"),
                                          ttl = M(3) } } },
    { "INSERT INTO t JSON '{\"k\": 1}'",
      { json = true, json_value = str('{"k": 1}'), columns = NIL,
        values = NIL } },
    { "INSERT INTO t JSON ? DEFAULT UNSET IF NOT EXISTS USING TTL 5",
      { json = true, json_value = M(1), json_default = "unset",
        if_not_exists = true, using = { ttl = int(5) } } },
    { "INSERT INTO t (k, l, s, m, tu, u) VALUES (1, [1, 2], {'a'}, "
      .. "{'x': 1.5}, (1, 'b'), {street: 'Main', \"Zip\": 12345})",
      { values = {
          int(1),
          { type = "list", items = { int(1), int(2) }, text = "[1, 2]" },
          { type = "set", items = { str("a") }, text = "{'a'}" },
          { type = "map", entries = { { key = str("x"),
                                        value = lit("float", 1.5, "1.5") } },
            text = "{'x': 1.5}" },
          { type = "tuple", items = { int(1), str("b") } },
          { type = "udt", fields = { { name = "street", value = str("Main") },
                                     { name = "Zip", value = int(12345) } },
            text = "{street: 'Main', \"Zip\": 12345}" } } } },
}

local UPDATES = {
    { "UPDATE t SET v = 'x', n = null WHERE k = 1",
      { assignments = { { column = "v", op = "=", value = str("x"),
                          text = "v = 'x'" },
                        { column = "n", op = "=",
                          value = { type = "null", text = "null" } } },
        where = { rel("k", "=", int(1)) }, if_exists = NIL,
        if_conditions = NIL, using = NIL } },
    { "UPDATE t SET c = c + 1, d = d - ? WHERE k = ?",
      { assignments = { { column = "c", op = "+", value = int(1),
                          text = "c = c + 1" },
                        { column = "d", op = "-", value = M(1) } },
        where = { rel("k", "=", M(2)) } } },
    { "UPDATE t SET c += 2, d -= 1 WHERE k = 1",
      { assignments = { { column = "c", op = "+", value = int(2) },
                        { column = "d", op = "-", value = int(1) } } } },
    { "UPDATE t SET l = l + [1, 2], l2 = [0] + l2, s = s - {'a'} "
      .. "WHERE k = 1",
      { assignments = { { column = "l", op = "+",
                          value = { type = "list" } },
                        { column = "l2", op = "prepend",
                          value = { type = "list", items = { int(0) } } },
                        { column = "s", op = "-",
                          value = { type = "set" } } } } },
    { "UPDATE t SET m['k'] = ?, u.city = 'Oslo' WHERE k = ?",
      { assignments = { { column = "m", key = str("k"), op = "=",
                          value = M(1), text = "m['k'] = ?" },
                        { column = "u", field = "city", op = "=",
                          value = str("Oslo") } },
        where = { rel("k", "=", M(2)) } } },
    { "UPDATE t USING TTL 60 AND TIMESTAMP ? SET v = ? WHERE k = ?",
      { using = { ttl = int(60), timestamp = M(1) },
        assignments = { { column = "v", value = M(2) } },
        where = { rel("k", "=", M(3)) } } },
    { "UPDATE t SET v = 1 WHERE k = 1 IF EXISTS",
      { if_exists = true, if_conditions = NIL } },
    { "UPDATE t SET v = 2 WHERE k = 1 IF v = 1 AND m['a'] IN (1, 2) "
      .. "AND u.f > 3 AND s CONTAINS 'x'",
      { if_exists = NIL,
        if_conditions = { rel("v", "=", int(1)),
                          { column = "m", key = str("a"), op = "IN",
                            values = { int(1), int(2) } },
                          { column = "u", field = "f", op = ">",
                            value = int(3) },
                          rel("s", "CONTAINS", str("x")) } } },
    { "UPDATE t SET exists = 1 WHERE k = 1 IF exists = 0",
      { if_exists = NIL, if_conditions = { rel("exists", "=", int(0)) } } },
}

local DELETES = {
    { "DELETE FROM t WHERE k = ?",
      { columns = NIL, where = { rel("k", "=", M(1)) } } },
    { "DELETE v, m['k'], u.f FROM ks.t USING TIMESTAMP 123 WHERE k = 1 "
      .. "IF EXISTS",
      { columns = { "v", "m", "u" },
        targets = { { column = "v" }, { column = "m", key = str("k") },
                    { column = "u", field = "f" } },
        using = { timestamp = int(123) }, if_exists = true } },
    { "DELETE FROM t WHERE k = 1 AND c IN (1, 2) IF v = 'x'",
      { where = { rel("k", "=", int(1)),
                  { column = "c", op = "IN", values = { int(1), int(2) } } },
        if_conditions = { rel("v", "=", str("x")) } } },
}

-- bind markers count across the whole batch
local BATCHES = {
    { "BEGIN BATCH INSERT INTO t (k, v) VALUES (?, ?); UPDATE ks.u SET v = ? "
      .. "WHERE k = ?; DELETE FROM t WHERE k = :k; APPLY BATCH",
      { batch_type = "logged", using = NIL,
        statements = {
            { kind = "insert", class = "write", table = "t",
              values = { M(1), M(2) } },
            { kind = "update", class = "write", keyspace = "ks", table = "u",
              assignments = { { value = M(3) } },
              where = { rel("k", "=", M(4)) } },
            { kind = "delete", class = "write",
              where = { rel("k", "=", M(5, "k")) } } } } },
    { "BEGIN UNLOGGED BATCH USING TIMESTAMP ? INSERT INTO t (k) VALUES (?) "
      .. "INSERT INTO t (k) VALUES (?) APPLY BATCH",
      { batch_type = "unlogged", using = { timestamp = M(1) },
        statements = { { values = { M(2) } }, { values = { M(3) } } } } },
    { "BEGIN COUNTER BATCH UPDATE t SET c = c + ? WHERE k = 1; "
      .. "UPDATE t SET c = c - 1 WHERE k = 2; APPLY BATCH;",
      { batch_type = "counter",
        statements = { { assignments = { { op = "+", value = M(1) } } },
                       { assignments = { { op = "-",
                                           value = int(1) } } } } } },
}

-- literals as the value of `WHERE v = <literal>`
local LITERALS = {
    { "'it''s'", lit("string", "it's", "'it''s'") },
    { "''", lit("string", "", "''") },
    { "$$it's $ raw$$", lit("string", "it's $ raw", "$$it's $ raw$$") },
    { "42", int(42) },
    { "-7", lit("integer", -7, "-7") },
    { "12345678901234567890", lit("integer", NIL, "12345678901234567890") },
    { "3.25", lit("float", 3.25, "3.25") },
    { "-1.5e-3", lit("float", -0.0015, "-1.5e-3") },
    { "1E10", lit("float", 1e10, "1E10") },
    { "1.", lit("float", 1, "1.") },
    { "NaN", lit("float", NAN, "NaN") },
    { "-NaN", lit("float", NAN, "-NaN") },
    { "Infinity", lit("float", math.huge, "Infinity") },
    { "-infinity", lit("float", -math.huge, "-infinity") },
    { "true", lit("boolean", true, "true") },
    { "FALSE", lit("boolean", false, "FALSE") },
    { "null", { type = "null", value = NIL, text = "null" } },
    { "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47",
      lit("uuid", "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47",
          "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47") },
    { "6AB09BEC-E68E-48D9-A5F8-97E6FB4C9B47",
      lit("uuid", "6ab09bec-e68e-48d9-a5f8-97e6fb4c9b47",
          "6AB09BEC-E68E-48D9-A5F8-97E6FB4C9B47") },
    { "0xCAFE", lit("blob", "\202\254", "0xCAFE") },
    { "0x", lit("blob", "", "0x") },
    { "1h30m", lit("duration", "1h30m", "1h30m") },
    { "-3d12h", lit("duration", "-3d12h", "-3d12h") },
    { "500ms", lit("duration", "500ms", "500ms") },
    { "2\194\181s", lit("duration", "2\194\181s", "2\194\181s") },
    { "P1Y2M3DT4H", lit("duration", "P1Y2M3DT4H", "P1Y2M3DT4H") },
    { "P2W", lit("duration", "P2W", "P2W") },
    { "P0001-02-03T04:05:06",
      lit("duration", "P0001-02-03T04:05:06", "P0001-02-03T04:05:06") },
    { "[1, 2]", { type = "list", items = { int(1), int(2) },
                  text = "[1, 2]" } },
    { "[]", { type = "list", items = EMPTY, text = "[]" } },
    { "{1, 2}", { type = "set", items = { int(1), int(2) } } },
    { "{}", { type = "set", items = EMPTY } },
    { "{'a': 1, 'b': [true]}",
      { type = "map",
        entries = { { key = str("a"), value = int(1) },
                    { key = str("b"),
                      value = {
                          type = "list",
                          items = { lit("boolean", true, "true") } } } } } },
    { "{name: 'x', \"Zip\": 1, address: {city: 'y'}}",
      { type = "udt",
        fields = { { name = "name", value = str("x") },
                   { name = "Zip", value = int(1) },
                   { name = "address",
                     value = { type = "udt",
                               fields = { { name = "city",
                                            value = str("y") } } } } } } },
    { "(1, 'a', ?)", { type = "tuple", items = { int(1), str("a"), M(1) },
                       text = "(1, 'a', ?)" } },
    { "now()", { type = "function", name = "now", keyspace = NIL,
                 args = EMPTY, text = "now()" } },
    { "ks.myFunc(1, ?)", { type = "function", keyspace = "ks",
                           name = "myfunc", args = { int(1), M(1) } } },
    { "(int) ?", { type = "type_hint", cast_type = "int", value = M(1) } },
    { "CAST(1 AS text)", { type = "cast", cast_type = "text",
                           value = int(1) } },
    { "1 + 2 * 3", { type = "operation", op = "+", left = int(1),
                     right = { type = "operation", op = "*", left = int(2),
                               right = int(3) },
                     text = "1 + 2 * 3" } },
    { "- ?", { type = "negation", value = M(1), text = "- ?" } },
    { "?", M(1) },
    { ":v", M(1, "v") },
}

-- statements that must be refused: the offset the error names, and text
-- the message must contain
local REJECTED = {
    { "SELECT * FROM", 13, "expected identifier, found end of input" },
    { "SELECT * FROM ", 14 },
    { "INSERT INTO t (a) VALUES", 24, "expected '%('" },
    { "INSERT INTO t (a) VALUES (", 26 },
    { "SELECT * FROM t WHERE", 21 },
    { "SELECT * FROM t WHERE a = 'abc", 26, "unterminated string literal" },
    { 'SELECT * FROM "abc', 14, "unterminated quoted identifier" },
    { "SELECT * FROM t WHERE a = $$abc", 26, "unterminated %$%$ string" },
    { "SELECT * FROM t /* no end", 16, "unterminated comment" },
    { "SELECT * FROM t WHERE a IN (1, 2", 32, "found end of input" },
    { "SELECT * FROM t WHERE a = (1, 2))", 32, "found '%)'" },
    { "INSERT INTO t (a, b VALUES (1, 2)", 20, "found 'VALUES'" },
    { "INSERT INTO t (a, b) VALUES (1)", 28, "2 column%(s%) but 1 value" },
    { "UPDATE t SET c = d + 1 WHERE k = 1", 13, "c = c %+ <value>" },
    { "UPDATE t SET l = [1] + m WHERE k = 1", 13, "l = <value> %+ l" },
    { "UPDATE t SET a = 1", 18 },
    { "DELETE FROM t", 13, "WHERE" },
    { "SELECT * FROM t; SELECT * FROM u", 17, "expected end of input" },
    { "SELECT * FROM t LIMIT 1.5", 22 },
    { "SELECT * FROM ?", 14 },
    { "SELECT * FROM select", 14 },
    { "SELECT a b FROM t", 9, "found 'b'" },
    { "@#!", 0, "expected a CQL statement" },
    { "", 0, "empty statement" },
    { "  -- nothing\n", 13, "empty statement" },
    { "123 abc", 0, "expected a CQL statement, found '123'" },
    { "foo (bar", 4, "unclosed '%('" },
    { "foo bar)", 7, "unbalanced '%)'" },
    { "foo 'bar", 4, "unterminated string literal" },
    { "foo @ bar", 4, "unexpected '@'" },
    { "DROP TABLEE x", 5, "found 'TABLEE'" },
    { "CREATE TABLE t (a int", 21 },
    { "CREATE KEYSPACE ks", 18, "WITH" },
    { "BEGIN BATCH SELECT * FROM t APPLY BATCH", 12, "found 'SELECT'" },
    { "BEGIN BATCH INSERT INTO t (a) VALUES (1)", 40, "APPLY" },
    { "SELECT *\nFROM t\nWHERE a = 'x", 26, "line 3, column 11" },
    { "GRANT SELECT ON ks.t", 20, "TO" },
    { "USE", 3 },
    { "TRUNCATE", 8 },
    { "SELECT * FROM t WHERE a = 'x' AND", 33 },
    { "SELECT * FROM t WHERE a = [1, 2", 31 },
    { "SELECT * FROM t WHERE a = {'k': }", 32 },
    { "SELECT * FROM t WHERE a = .5", 26 },
    { "SELECT * FROM t WHERE a = " .. ("["):rep(100) .. ("]"):rep(100), 0,
      "nested too deeply" },
}

local function all_statements()
    local out = {}
    for _, cases in ipairs({ KINDS, IDENTIFIERS, LEXICAL, SELECTS, INSERTS,
                             UPDATES, DELETES, BATCHES }) do
        for _, case in ipairs(cases) do
            out[#out + 1] = case[1]
        end
    end
    for _, case in ipairs(LITERALS) do
        out[#out + 1] = "SELECT * FROM t WHERE v = " .. case[1]
    end
    return out
end

describe("the CQL parser", function()
    it("knows every kind of statement, its class and the names it touches",
       function()
        check(KINDS)
    end)

    it("normalises identifiers as Cassandra does", function()
        check(IDENTIFIERS)
    end)

    it("skips comments anywhere and reads keywords in any case", function()
        check(LEXICAL)
    end)

    it("reads SELECT columns, relations, ordering, limits and filtering",
       function()
        check(SELECTS)
    end)

    it("aligns INSERT values with columns and reads IF NOT EXISTS, USING "
       .. "and JSON", function()
        check(INSERTS)
    end)

    it("reads UPDATE assignments, conditions and USING", function()
        check(UPDATES)
    end)

    it("reads DELETE columns, elements, fields and conditions", function()
        check(DELETES)
    end)

    it("numbers bind markers across a whole BATCH and classifies its "
       .. "statements", function()
        check(BATCHES)
    end)

    it("decodes literals, keeps their text and numbers their markers",
       function()
        local cases = {}
        for i, case in ipairs(LITERALS) do
            cases[i] = { "SELECT * FROM t WHERE v = " .. case[1],
                         case[2] }
        end
        check(cases, function(ast)
            return ast.where[1].value
        end)
    end)

    it("rejects bad statements with the offset of the problem", function()
        for _, case in ipairs(REJECTED) do
            local sql, offset, text = case[1], case[2], case[3]
            local ast, err, off = parser.parse(sql)
            assert.is_nil(ast, sql)
            assert.is_string(err, sql)
            assert.are.equal(offset, off, sql .. "\n  " .. err)
            assert.matches("offset " .. offset .. " ", err, 1, true)
            if text then
                assert.matches(text, err, 1, false)
            end
        end
    end)

    it("refuses what is not a string", function()
        local ast, err = parser.parse(nil)
        assert.is_nil(ast)
        assert.matches("expected a string", err)
    end)

    it("never raises, on any prefix of any statement", function()
        for _, sql in ipairs(all_statements()) do
            for n = 0, #sql do
                local ok, ast, err = pcall(parser.parse, sql:sub(1, n))
                assert.is_true(ok, sql:sub(1, n) .. "\n  " .. tostring(ast))
                assert.is_true(type(ast) == "table" or type(err) == "string",
                               sql:sub(1, n))
            end
        end
    end)

    it("parses 10,000 statements in a loop, each as it did the first time",
       function()
        local sqls = all_statements()
        local kinds = {}
        for i, sql in ipairs(sqls) do
            kinds[i] = assert(parser.parse(sql)).kind
        end
        local n = 0
        while n < 10000 do
            for i, sql in ipairs(sqls) do
                local ast, err = parser.parse(sql)
                assert.is_table(ast, err)
                assert.are.equal(kinds[i], ast.kind)
                n = n + 1
                if n == 10000 then
                    break
                end
            end
        end
        assert.are.equal(10000, n)
    end)
end)
