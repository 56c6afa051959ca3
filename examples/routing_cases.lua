-- Cases for `shotover route-test -c examples/routing.lua
-- examples/routing_cases.lua`: the path each request must take.
return {
    cases = {
        { "SET cache:user:1 x", sink = "cache" },
        { "GET cache:user:1", sink = "cache" },
        { "GET user:1", sink = "main" },
        { "INCR visits", sink = "main" },
        { "SUBSCRIBE news", filtered = true },
        { "PUBLISH news hi", filtered = true },
    },
}
