-- The config c/test/fuzz-chain.c runs a worker on: a Redis and a Cassandra
-- source on the loopback ports it chose (SHOTOVER_FUZZ_REDIS,
-- SHOTOVER_FUZZ_CQL), each chain reading every request through the message
-- API first (`inspect`, with the CQL decoders of t/fuzz/cql.lua), then the
-- transforms that read requests, ending in sinks without a backend, so
-- that every byte the client sent is answered by the chain itself.
local cql = require "cql"

local pcall = pcall

-- Every accessor on each request, every reply of the rest of the chain
-- decoded; errors they raise on bad input are the chain's business (an
-- error reply), so they are caught here.
local function inspect(batch, chain)
    for i = 1, batch.n do
        local m = batch[i]
        pcall(m.describe, m)
        if m:protocol() == "cassandra" then
            cql.request(m, false)
        else
            pcall(m.command, m)
            pcall(m.key, m)
            pcall(m.keys, m)
            pcall(m.args, m)
            pcall(m.command_is, m, "GET")
        end
    end
    local resp = chain:next(batch)
    for i = 1, resp.n do
        local r = resp[i]
        if r ~= nil then
            pcall(r.describe, r)
            if r:protocol() == "redis" then
                pcall(r.decode, r)
            end
        end
    end
    return resp
end

local MIB = 1024 * 1024

return {
    workers = 1,
    sources = {
        { name = "redis", protocol = "redis",
          listen = os.getenv("SHOTOVER_FUZZ_REDIS"),
          max_bulk_len = MIB, max_elements = 4096, max_inline_len = 4096,
          chain = {
              inspect,
              { "query_counter", name = "fuzz_redis" },
              { "query_type_filter", deny = { "pubsub" } },
              { "key_namespace", prefix = "fz:", allow_scripts = true },
              { "tee", name = "fuzz_redis_tee", behavior = "log_mismatch",
                chain = { { "null" } } },
              { "router",
                routes = {
                    { match = { key_prefix = "user:" },
                      chain = { { "debug_returner", simple = "OK" } } },
                    { match = { command = { "INCR", "DECR" } },
                      chain = { { "debug_returner", integer = 1 } } },
                    { match = { key_pattern = "'k' [0-9]+" },
                      chain = { { "debug_returner", error = "ERR fuzz" } } },
                },
                default = { { "parallel_map", parallelism = 2,
                              chain = { { "null" } } } } },
          } },
        { name = "cassandra", protocol = "cassandra",
          listen = os.getenv("SHOTOVER_FUZZ_CQL"),
          max_frame_size = MIB,
          chain = {
              inspect,
              { "query_counter", name = "fuzz_cql" },
              { "query_type_filter", deny = { "dcl" } },
              { "tee", name = "fuzz_cql_tee", behavior = "log_mismatch",
                chain = { { "null" } } },
              { "router",
                routes = {
                    { match = { kind = "select", keyspace = "fx" },
                      chain = { { "null" } } },
                    { match = { class = "schema_change" },
                      chain = { { "debug_returner", error = "fuzz",
                                  error_code = "INVALID" } } },
                },
                default = { { "parallel_map", parallelism = 2,
                              chain = { { "null" } } } } },
          } },
    },
}
