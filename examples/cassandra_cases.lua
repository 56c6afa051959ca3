-- Cases for `shotover route-test -c examples/cassandra.lua
-- examples/cassandra_cases.lua`.
return {
    cases = {
        { cql = "SELECT * FROM shop.orders WHERE id = ?", values = { 7 },
          sink = "main" },
        { cql = "INSERT INTO audit.events (id, what) VALUES (?, ?)",
          values = { 1, "login" }, sink = "audit" },
        { cql = "USE audit", sink = "audit" },
        { cql = "SELECT * FROM events", sink = "audit" },
        { cql = "DROP TABLE shop.orders", filtered = true },
    },
}
