/*
 * sh_admin.h -- the admin HTTP endpoint (metrics, health, readiness, log
 * level, switches), served from the main thread; the routes that change
 * something need the configured bearer token, or a loopback peer.
 */
#ifndef SH_ADMIN_H
#define SH_ADMIN_H

#include <uv.h>

#include "sh_tls.h"

/* tls: the endpoint's TLS context (the endpoint owns the reference), or
 * NULL for plain HTTP */
int sh_admin_start(uv_loop_t *loop, const char *host, int port,
    const char *token, sh_tls_ctx_t *tls, char *err, size_t errlen);
void sh_admin_set_ready(int ready);
/* A reload's admin.tls for new admin connections (the endpoint owns the
 * reference); SH_DECLINED when TLS was turned on or off (a restart's
 * business: the endpoint keeps what it has). */
int sh_admin_set_tls(sh_tls_ctx_t *tls);
/* What POST /reload calls: SH_OK, or SH_ERROR with why in out (the
 * config's problems, one per line). */
typedef int (*sh_admin_reload_fn)(const char *why, char *out, size_t outlen);
void sh_admin_set_reload(sh_admin_reload_fn fn);
void sh_admin_stop(void);

#endif /* SH_ADMIN_H */
