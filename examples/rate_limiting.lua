-- Rate limiting: at most 5 requests a second (bursts of 5) across all
-- workers; the rest get an error at once.
--
--   redis-server --port 6380 --daemonize yes
--   build/shotover run -c examples/rate_limiting.lua
return {
    workers = 2,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        {
            name = "redis",
            protocol = "redis",
            listen = "127.0.0.1:7003",
            chain = {
                { "request_throttling", name = "five",
                  max_requests_per_second = 5, burst = 5 },
                { "redis", remote = "127.0.0.1:6380" },
            },
        },
    },
}
