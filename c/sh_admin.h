/*
 * sh_admin.h -- the admin HTTP endpoint (metrics, health, readiness, log
 * level), served from the main thread.
 */
#ifndef SH_ADMIN_H
#define SH_ADMIN_H

#include <uv.h>

int sh_admin_start(uv_loop_t *loop, const char *host, int port, char *err,
    size_t errlen);
void sh_admin_set_ready(int ready);
void sh_admin_stop(void);

#endif /* SH_ADMIN_H */
