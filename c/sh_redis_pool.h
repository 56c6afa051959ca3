/*
 * sh_redis_pool.h -- the `redis` sink's connections to one Redis server,
 * per worker (pipelined shared connections, dedicated ones for clients
 * with connection state).  Lua makes, uses and frees pools through
 * sh_ffi.h; the server closes what is left when a worker stops.
 */
#ifndef SH_REDIS_POOL_H
#define SH_REDIS_POOL_H

#include "sh_worker.h"

void sh_redis_pools_close(sh_worker_t *w);

#endif /* SH_REDIS_POOL_H */
