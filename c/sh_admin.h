/*
 * sh_admin.h -- the admin HTTP endpoint (metrics, health, readiness, log
 * level, switches), served from the main thread; the routes that change
 * something need the configured bearer token, or a loopback peer.
 */
#ifndef SH_ADMIN_H
#define SH_ADMIN_H

#include <uv.h>

int sh_admin_start(uv_loop_t *loop, const char *host, int port,
    const char *token, char *err, size_t errlen);
void sh_admin_set_ready(int ready);
/* What POST /reload calls: SH_OK, or SH_ERROR with why in out (the
 * config's problems, one per line). */
typedef int (*sh_admin_reload_fn)(const char *why, char *out, size_t outlen);
void sh_admin_set_reload(sh_admin_reload_fn fn);
void sh_admin_stop(void);

#endif /* SH_ADMIN_H */
