-- examples/cass-redis-kafka/servers: the example's servers, through the
-- test harness (t/lib), until Enter.
local root = assert(os.getenv("SHOTOVER_SRC"), "run it with ./servers")
package.path = root .. "/t/lib/?.lua;" .. package.path

io.stdout:setvbuf("line")
local h = require "harness"
local cassandra = require "cassandra"
local kafka = require "kafka"

local node = cassandra.start{ auth = false, port = 9042 }
print("cassandra " .. node.version .. " on 127.0.0.1:" .. node.port)
local redis = h.redis_server{ port = 6380 }
print("redis-server on 127.0.0.1:" .. redis.port)
local broker = kafka.start{ port = 9092 }
print("kafka " .. broker.version .. " on " .. broker:brokers())
print("press Enter to stop them")
io.read("*l")
h.cleanup()
