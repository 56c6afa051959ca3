/*
 * sh_server.h -- the process: worker threads, their listening sockets
 * (one SO_REUSEPORT socket per source per worker), signals, the admin
 * endpoint's start, and stopping everything in order.  The top of the
 * core: it may call every layer below it, and nothing calls it.
 */
#ifndef SH_SERVER_H
#define SH_SERVER_H

#include "sh_core.h"
#include "sh_notify.h"       /* the server tells systemd it is ready */

/* Run until SIGTERM or SIGINT, then drain for at most drain_timeout_ms
 * (a second signal stops at once); SH_OK for exit status 0. */
int sh_workers_run(const char *conf_path, int nworkers,
    const char *admin_host, int admin_port, const char *admin_token,
    sh_tls_ctx_t *admin_tls,
    uint32_t drain_timeout_ms);

#endif /* SH_SERVER_H */
