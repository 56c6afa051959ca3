-- examples/redis-multi/servers: the example's servers, through the test
-- harness (t/lib), until Enter.
local root = assert(os.getenv("SHOTOVER_SRC"), "run it with ./servers")
package.path = root .. "/t/lib/?.lua;" .. package.path

io.stdout:setvbuf("line")
local h = require "harness"
local rc = require "redis_cluster"

local eu = h.redis_server{ port = 6380 }
print("eu: redis-server on 127.0.0.1:" .. eu.port)
local us = h.redis_server{ port = 6381 }
print("us: redis-server on 127.0.0.1:" .. us.port)
local cl = rc.start{ masters = 3, replicas = 1 }
print("ap: a Redis Cluster; point the config at it with")
print("export SHOTOVER_EXAMPLE_AP=" .. table.concat(cl:seeds(), ","))
print("press Enter to stop them")
io.read("*l")
h.cleanup()
