-- Cassandra: schema changes are refused, statements on the "audit" keyspace
-- go to a second node, the rest to the first; statements are counted by
-- kind.
--
--   (a Cassandra node on 9042, and one on 9043 for audit)
--   build/shotover run -c examples/cassandra.lua
--   drivers connect to 127.0.0.1:7004
return {
    workers = 2,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        {
            name = "cql",
            protocol = "cassandra",
            listen = "127.0.0.1:7004",
            chain = {
                { "query_counter", name = "cql" },
                { "query_type_filter", deny = { "schema_change" } },
                { "router",
                  routes = {
                      { match = { keyspace = "audit" },
                        chain = { { "cassandra", name = "audit",
                                    remote = "127.0.0.1:9043" } } },
                  },
                  default = { { "cassandra", name = "main",
                                remote = "127.0.0.1:9042" } } },
            },
        },
    },
}
