-- Cassandra: a two-node ring behind shotover.  The `cassandra` sink is given
-- contact points instead of one node: it learns the ring, sends each request
-- to a replica of its partition, fails over to the other replica, and shows
-- drivers the shotover instances (shotover_nodes) instead of the nodes, so
-- they connect only to shotover.  One process serves both instances here
-- (two sources, each finding itself in shotover_nodes by its listen
-- address); in production each instance runs on its own host with the same
-- shotover_nodes list.
--
--   (Cassandra nodes on 127.0.0.2:9042 and 127.0.0.3:9042)
--   build/shotover run -c examples/cassandra_ring.lua
--   drivers connect to 127.0.0.1:7005 (and learn 127.0.0.1:7006)
local function ring()
    return { { "cassandra",
               contact_points = { "127.0.0.2:9042", "127.0.0.3:9042" },
               shotover_nodes = {
                   { address = "127.0.0.1:7005", dc = "dc1", rack = "r1" },
                   { address = "127.0.0.1:7006", dc = "dc1", rack = "r2" },
               } } }
end

return {
    workers = 2,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        { name = "cql-a", protocol = "cassandra", listen = "127.0.0.1:7005",
          chain = ring() },
        { name = "cql-b", protocol = "cassandra", listen = "127.0.0.1:7006",
          chain = ring() },
    },
}
