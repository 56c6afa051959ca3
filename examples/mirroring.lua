-- Mirroring: every request also goes to a shadow redis-server, without the
-- client waiting for it; replies that differ are logged and counted.  Which
-- side answers can be flipped live through the admin endpoint.
--
--   redis-server --port 6380 --daemonize yes
--   redis-server --port 6381 --daemonize yes
--   build/shotover run -c examples/mirroring.lua
return {
    workers = 1,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        {
            name = "redis",
            protocol = "redis",
            listen = "127.0.0.1:7002",
            chain = {
                { "tee", name = "shadow", behavior = "log_mismatch",
                  wait = false, buffer_size = 1024,
                  chain = { { "redis", remote = "127.0.0.1:6381" } } },
                { "redis", remote = "127.0.0.1:6380" },
            },
        },
    },
}
