/*
 * sh_cql_pool.h -- the `cassandra` sink's connections to one node, per
 * worker: one per client connection (its session), attached to it.  Lua
 * makes and uses pools through sh_ffi.h; the server closes what is left
 * when a worker stops.
 */
#ifndef SH_CQL_POOL_H
#define SH_CQL_POOL_H

#include "sh_worker.h"

void sh_cql_pools_close(sh_worker_t *w);

#endif /* SH_CQL_POOL_H */
