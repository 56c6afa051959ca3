-- Three Redis "regions" active-active behind one endpoint: every request
-- goes to all three at once (scatter); a write is answered once two
-- regions acknowledged it, a read once two regions agree, and a region that
-- answered a read differently (a stale or missing key: say it was down and
-- came back empty) gets the agreed value copied back in the background.
-- Walkthrough: examples/redis-multi/README.md.
--
--   eu: a redis-server on 127.0.0.1:6380
--   us: a redis-server on 127.0.0.1:6381
--   ap: a Redis Cluster (its nodes found from 127.0.0.1:7000)
--
-- `examples/redis-multi/servers` starts all of them.  SHOTOVER_EXAMPLE_EU,
-- _US, _AP (a comma-separated list of cluster nodes), _LISTEN and _ADMIN
-- move them (the integration spec runs this file on free ports that way).
local function at(name, default)
    return os.getenv("SHOTOVER_EXAMPLE_" .. name) or default
end

local nodes = {}
for n in at("AP", "127.0.0.1:7000"):gmatch("[^,]+") do
    nodes[#nodes + 1] = n
end

return {
    admin = { listen = at("ADMIN", "127.0.0.1:9001") },
    sources = {
        { name = "multi", protocol = "redis",
          listen = at("LISTEN", "127.0.0.1:7010"),
          chain = {
              { "scatter", write_quorum = 2, read_quorum = 2,
                timeout_ms = 1000,
                regions = {
                    { name = "eu", chain = {
                        { "redis", remote = at("EU", "127.0.0.1:6380") } } },
                    { name = "us", chain = {
                        { "redis", remote = at("US", "127.0.0.1:6381") } } },
                    -- a cluster takes a little longer (MOVED, a failover)
                    { name = "ap", timeout_ms = 2000, chain = {
                        { "redis_cluster", nodes = nodes } } },
                } },
          } },
    },
}
