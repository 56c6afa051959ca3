-- The Lua half of shotover.  These modules run inside the shotover binary
-- (which brings the C core and the FFI declarations); the rock is how they
-- are installed beside it, and how third-party transforms
-- (shotover-transform-NAME, modules shotover.transforms.NAME) are added.
rockspec_format = "3.0"
package = "shotover"
version = "0.1.0-1"
source = {
    url = "git+https://example.invalid/shotover.git",
    tag = "v0.1.0",
}
description = {
    summary = "L7 data-layer proxy for Redis and Cassandra: the Lua runtime",
    detailed = [[
Chains of transforms for the shotover proxy: config validation, the chain
runner, the message API over the C core's zero-copy frames, and the
transforms and sinks that ship with it.
]],
    license = "Apache-2.0",
}
dependencies = {
    "lua == 5.1",
}
build = {
    type = "builtin",
    modules = {
        ["shotover.chain"] = "lua/shotover/chain.lua",
        ["shotover.cli.check"] = "lua/shotover/cli/check.lua",
        ["shotover.cli.client"] = "lua/shotover/cli/client.lua",
        ["shotover.cli.common"] = "lua/shotover/cli/common.lua",
        ["shotover.cli.live"] = "lua/shotover/cli/live.lua",
        ["shotover.cli.repl"] = "lua/shotover/cli/repl.lua",
        ["shotover.cli.route_test"] = "lua/shotover/cli/route_test.lua",
        ["shotover.config"] = "lua/shotover/config.lua",
        ["shotover.cql.message"] = "lua/shotover/cql/message.lua",
        ["shotover.cql.parser"] = "lua/shotover/cql/parser.lua",
        ["shotover.cql.reply"] = "lua/shotover/cql/reply.lua",
        ["shotover.cql.request"] = "lua/shotover/cql/request.lua",
        ["shotover.cql.query_info"] = "lua/shotover/cql/query_info.lua",
        ["shotover.cql.schema"] = "lua/shotover/cql/schema.lua",
        ["shotover.cql.bound"] = "lua/shotover/cql/bound.lua",
        ["shotover.cql.session"] = "lua/shotover/cql/session.lua",
        ["shotover.cql.types"] = "lua/shotover/cql/types.lua",
        ["shotover.cql.ring"] = "lua/shotover/cql/ring.lua",
        ["shotover.cql.rows"] = "lua/shotover/cql/rows.lua",
        ["shotover.cql.peers"] = "lua/shotover/cql/peers.lua",
        ["shotover.cql.routing"] = "lua/shotover/cql/routing.lua",
        ["shotover.ffi"] = "lua/shotover/ffi.lua",
        ["shotover.kafka.json"] = "lua/shotover/kafka/json.lua",
        ["shotover.kafka.producer"] = "lua/shotover/kafka/producer.lua",
        ["shotover.kafka.rdkafka"] = "lua/shotover/kafka/rdkafka.lua",
        ["shotover.kafka.plan"] = "lua/shotover/kafka/plan.lua",
        ["shotover.kafka.record"] = "lua/shotover/kafka/record.lua",
        ["shotover.log"] = "lua/shotover/log.lua",
        ["shotover.message"] = "lua/shotover/message.lua",
        ["shotover.metrics"] = "lua/shotover/metrics.lua",
        ["shotover.park"] = "lua/shotover/park.lua",
        ["shotover.password"] = "lua/shotover/password.lua",
        ["shotover.aes_gcm"] = "lua/shotover/aes_gcm.lua",
        ["shotover.envelope"] = "lua/shotover/envelope.lua",
        ["shotover.keys"] = "lua/shotover/keys/init.lua",
        ["shotover.keys.local"] = "lua/shotover/keys/local.lua",
        ["shotover.libcrypto"] = "lua/shotover/libcrypto.lua",
        ["shotover.keys.aws_kms"] = "lua/shotover/keys/aws_kms.lua",
        ["shotover.keys.pkcs11"] = "lua/shotover/keys/pkcs11.lua",
        ["shotover.keys.sigv4"] = "lua/shotover/keys/sigv4.lua",
        ["shotover.tls"] = "lua/shotover/tls.lua",
        ["shotover.pools"] = "lua/shotover/pools.lua",
        ["shotover.protocols"] = "lua/shotover/protocols/init.lua",
        ["shotover.protocols.cassandra"] = "lua/shotover/protocols/cassandra.lua",
        ["shotover.protocols.redis"] = "lua/shotover/protocols/redis.lua",
        ["shotover.redact"] = "lua/shotover/redact.lua",
        ["shotover.redis.command_ids"] = "lua/shotover/redis/command_ids.lua",
        ["shotover.redis.command_meta"] = "lua/shotover/redis/command_meta.lua",
        ["shotover.redis.commands"] = "lua/shotover/redis/commands.lua",
        ["shotover.redis.decode"] = "lua/shotover/redis/decode.lua",
        ["shotover.redis.keys"] = "lua/shotover/redis/keys.lua",
        ["shotover.redis.query_info"] = "lua/shotover/redis/query_info.lua",
        ["shotover.redis.reply"] = "lua/shotover/redis/reply.lua",
        ["shotover.resolve"] = "lua/shotover/resolve.lua",
        ["shotover.runner"] = "lua/shotover/runner.lua",
        ["shotover.schema"] = "lua/shotover/schema.lua",
        ["shotover.shdict"] = "lua/shotover/shdict.lua",
        ["shotover.testing"] = "lua/shotover/testing.lua",
        ["shotover.trace"] = "lua/shotover/trace.lua",
        ["shotover.transforms.audit"] = "lua/shotover/transforms/audit.lua",
        ["shotover.transforms.authenticate"] = "lua/shotover/transforms/authenticate.lua",
        ["shotover.transforms.authorize"] = "lua/shotover/transforms/authorize.lua",
        ["shotover.transforms.protect"] = "lua/shotover/transforms/protect.lua",
        ["shotover.transforms.cassandra"] = "lua/shotover/transforms/cassandra.lua",
        ["shotover.transforms.coalesce"] = "lua/shotover/transforms/coalesce.lua",
        ["shotover.transforms.debug_printer"] = "lua/shotover/transforms/debug_printer.lua",
        ["shotover.transforms.debug_returner"] = "lua/shotover/transforms/debug_returner.lua",
        ["shotover.transforms.kafka"] = "lua/shotover/transforms/kafka.lua",
        ["shotover.transforms.key_namespace"] = "lua/shotover/transforms/key_namespace.lua",
        ["shotover.transforms.null"] = "lua/shotover/transforms/null.lua",
        ["shotover.transforms.parallel_map"] = "lua/shotover/transforms/parallel_map.lua",
        ["shotover.transforms.query_counter"] = "lua/shotover/transforms/query_counter.lua",
        ["shotover.transforms.query_type_filter"] = "lua/shotover/transforms/query_type_filter.lua",
        ["shotover.transforms.redis"] = "lua/shotover/transforms/redis.lua",
        ["shotover.transforms.request_throttling"] = "lua/shotover/transforms/request_throttling.lua",
        ["shotover.transforms.router"] = "lua/shotover/transforms/router.lua",
        ["shotover.transforms.scatter"] = "lua/shotover/transforms/scatter.lua",
        ["shotover.transforms.redis_cache"] = "lua/shotover/transforms/redis_cache.lua",
        ["shotover.transforms.redis_cluster"] = "lua/shotover/transforms/redis_cluster.lua",
        ["shotover.transforms.tee"] = "lua/shotover/transforms/tee.lua",
        ["shotover.watch"] = "lua/shotover/watch.lua",
        ["shotover.worker"] = "lua/shotover/worker.lua",
    },
}
test = {
    type = "busted",
}
