-- shotover's default config: a Redis source on the standard port in front of
-- a redis-server on 6380 (`./dev run` starts one there when none is running).
return {
    workers = "auto",
    sources = {
        {
            name = "redis",
            protocol = "redis",
            listen = "127.0.0.1:6379",
            chain = {
                { "redis", remote = "127.0.0.1:6380" },
            },
        },
    },
}
