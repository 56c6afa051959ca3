-- Cassandra cached in Redis, every write streamed to Kafka: the application
-- connects its Cassandra driver to 127.0.0.1:9043 instead of the node, and
-- nothing else changes.  Walkthrough: examples/cass-redis-kafka/README.md.
--
--   reads of shop.products and shop.carts by partition: from Redis when
--     there (redis_cache), else from Cassandra, stored for 60 s; every
--     write to a partition drops its entries before the writer's reply
--   every write Cassandra acknowledged: a JSON record in the Kafka topic
--     shop.cdc, keyed by its partition key; the writer's reply waits for
--     Kafka's acknowledgement (wait = true)
--
-- The servers: Cassandra on 127.0.0.1:9042, Redis on 127.0.0.1:6380, Kafka
-- on 127.0.0.1:9092 (`examples/cass-redis-kafka/servers` starts all three);
-- SHOTOVER_EXAMPLE_CASSANDRA, _REDIS, _KAFKA, _LISTEN and _ADMIN move them
-- (the integration spec runs this file on free ports that way).
local function at(name, default)
    return os.getenv("SHOTOVER_EXAMPLE_" .. name) or default
end

return {
    admin = { listen = at("ADMIN", "127.0.0.1:9001") },
    sources = {
        { name = "shop", protocol = "cassandra",
          listen = at("LISTEN", "127.0.0.1:9043"),
          chain = {
              { "redis_cache", ttl_seconds = 60,
                tables = { "shop.products", "shop.carts" },
                cache_chain = {
                    { "redis", remote = at("REDIS", "127.0.0.1:6380") },
                } },
              { "kafka", brokers = at("KAFKA", "127.0.0.1:9092"),
                topic = "shop.cdc", wait = true,
                create_topics = { partitions = 3 } },
              { "cassandra", remote = at("CASSANDRA", "127.0.0.1:9042") },
          } },
    },
}
