-- Batching: each connection's requests are held until 16 have come or 2 ms
-- have passed, then sent on as one batch, spread over four copies of the
-- sink (four backend connections) that run at once.
--
--   redis-server --port 6380 --daemonize yes
--   build/shotover run -c examples/batching.lua
return {
    workers = 1,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        {
            name = "redis",
            protocol = "redis",
            listen = "127.0.0.1:7005",
            chain = {
                { "coalesce", name = "batcher", max_requests = 16,
                  max_wait_ms = 2 },
                { "parallel_map", parallelism = 4,
                  chain = { { "redis", remote = "127.0.0.1:6380" } } },
            },
        },
    },
}
