-- Routing: keys under "cache:" go to a second redis-server, pub/sub is
-- refused, everything else goes to the main one; every request is counted.
--
--   redis-server --port 6380 --daemonize yes    (./dev run starts this one)
--   redis-server --port 6381 --daemonize yes
--   build/shotover run -c examples/routing.lua
return {
    workers = 1,
    admin = { listen = "127.0.0.1:9001" },
    sources = {
        {
            name = "redis",
            protocol = "redis",
            listen = "127.0.0.1:7001",
            chain = {
                { "query_counter", name = "all" },
                { "query_type_filter", deny = { "pubsub" } },
                { "router",
                  routes = {
                      { match = { key_prefix = "cache:" },
                        chain = { { "redis", name = "cache",
                                    remote = "127.0.0.1:6381" } } },
                  },
                  default = { { "redis", name = "main",
                                remote = "127.0.0.1:6380" } } },
            },
        },
    },
}
