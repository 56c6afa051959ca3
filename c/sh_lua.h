/*
 * sh_lua.h -- the only code that enters Lua: a LuaJIT state per worker,
 * coroutines C resumes (the cosocket model: Lua never gets a C callback;
 * it yields, and C resumes it), the shotover.core module, and the
 * `check`, `lua` and Lua-written subcommands.
 */
#ifndef SH_LUA_H
#define SH_LUA_H

#include "sh_buf.h"
#include "sh_worker.h"

/* A coroutine C resumes: L NULL and ref LUA_NOREF (-2) until started. */
typedef struct sh_lua_co_s {
    lua_State *L;            /* the coroutine, NULL until started */
    int ref;                 /* registry ref keeping it alive */
} sh_lua_co_t;

#define SH_LUA_CO_INIT { NULL, -2 }

/* Make w's Lua state and call shotover.worker.init (which builds the
 * chains and listens); SH_ERROR with the message in err. */
int sh_lua_worker_init(sh_worker_t *w, char *err, size_t errlen);
int sh_lua_worker_reload(sh_worker_t *w, char *err, size_t errlen);
int sh_lua_worker_collect(sh_worker_t *w);
/* a watch of w is readable (shotover.worker.on_watch); w stops
 * (shotover.worker.stop: what Lua holds in flight is flushed) */
void sh_lua_worker_watch(sh_worker_t *w, int token);
void sh_lua_worker_stop(sh_worker_t *w);
int sh_lua_resume(sh_worker_t *w, sh_lua_co_t *co, void *run, void *client,
    sh_cycle_t *cycle, sh_batch_t **resp, const char **err);
void sh_lua_co_release(sh_worker_t *w, sh_lua_co_t *co);
/* close a state made here (its allocator's free lists go too) */
void sh_lua_close(lua_State *L);
/* collect L in full and give its idle memory back to malloc */
void sh_lua_release_memory(lua_State *L);
/* forget client's session table (shotover.core.session) */
void sh_lua_session_release(lua_State *L, void *client);

/* A Lua state with the workers' runtime (module path, FFI declarations,
 * shotover.core) and nothing loaded yet, or NULL: for the fuzz targets,
 * which drive the Lua side without a worker. */
lua_State *sh_lua_state_new(void);

/* What the C side needs of a config (sh_lua_check). */
typedef struct sh_lua_conf_s {
    int workers;             /* 0: "auto" */
    char admin_host[256];    /* the admin endpoint, admin_port 0 if none */
    int admin_port;
    char admin_token[1025];  /* its bearer token, "" if none (config.lua
                                bounds a token to 1024) */
    uint32_t drain_timeout_ms; /* how long a SIGTERM drain may take */
    sh_tls_ctx_t *admin_tls; /* admin.tls's context (the caller owns the
                                reference), or NULL */
} sh_lua_conf_t;

int sh_lua_check(const char *conf_path, sh_lua_conf_t *out, char *err,
    size_t errlen);
int sh_lua_script(int argc, char **argv);
int sh_lua_cli(const char *module, int argc, char **argv);

#endif /* SH_LUA_H */
