/*
 * sh_lua.c -- the only place C enters Lua: a LuaJIT state per worker, and a
 * coroutine per client connection that C resumes (the cosocket model).  Lua
 * never gets a C callback; it yields, and C resumes it when backends are
 * done.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sh_config.h"
#include "sh_lua.h"
#include "sh_metrics.h"

/*
 * Where require() looks, first match wins (docs/install.md says the same
 * for users):
 *
 *   1. SHOTOVER_LUA_PATH / SHOTOVER_LUA_CPATH, when set;
 *   2. the binary's own modules: SH_LUA_REL beside the executable
 *      (/proc/self/exe; ../share/shotover/lua once installed) when that
 *      directory holds shotover/config.lua, else the source and build trees
 *      compiled in (SH_LUA_PATH: a binary run from its build tree);
 *   3. LUA_PATH / LUA_CPATH, when set (";;" in them is LuaJIT's default);
 *   4. the user's LuaRocks tree, $HOME/.luarocks (share/lua/5.1 and
 *      lib/lua/5.1);
 *   5. the system LuaRocks trees, /usr/local and /usr;
 *   6. LuaJIT's default path, when LUA_PATH / LUA_CPATH is not set.
 *
 * The binary's modules come before LUA_PATH and the trees so that another
 * version of the shotover rock installed there cannot shadow the modules
 * that match this binary's C core.
 */
#define SH_LUA_SYS_PATH                                                     \
    "/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua;"   \
    "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
#define SH_LUA_SYS_CPATH                                                    \
    "/usr/local/lib/lua/5.1/?.so;/usr/lib/" SH_MULTIARCH "lua/5.1/?.so;"    \
    "/usr/lib/lua/5.1/?.so"

/*
 * sh_lua_own_dir: the installed module directory beside the executable,
 * in buf, or NULL when there is none (a build-tree or copied binary).
 */
static const char *
sh_lua_own_dir(char *buf, size_t len)
{
    char exe[PATH_MAX], probe[PATH_MAX + 64];
    const char *rel;
    ssize_t n;
    char *slash;
    int m;

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return NULL;
    }
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash == NULL) {
        return NULL;
    }
    *slash = '\0';
    /* "../" climbs out of the binary's directory: say so in the path */
    for (rel = SH_LUA_REL; strncmp(rel, "../", 3) == 0; rel += 3) {
        slash = strrchr(exe, '/');
        if (slash == NULL || slash == exe) {
            return NULL;          /* the binary in / or a relative path */
        }
        *slash = '\0';
    }
    m = snprintf(buf, len, "%s/%s", exe, rel);
    if (m < 0 || (size_t) m >= len) {
        return NULL;              /* too long: never use a cut path */
    }
    snprintf(probe, sizeof(probe), "%s/shotover/config.lua", buf);
    return access(probe, R_OK) == 0 ? buf : NULL;
}

/* add "s;" to b when s is set and not empty */
static void
sh_lua_path_add(luaL_Buffer *b, const char *s)
{
    if (s != NULL && *s != '\0') {
        luaL_addstring(b, s);
        luaL_addchar(b, ';');
    }
}

/* package[field] = the list above; own: the installed directory or NULL */
static void
sh_lua_set_one(lua_State *L, const char *field, const char *own,
    int cpath)
{
    const char *home = getenv("HOME");
    const char *env = getenv(cpath ? "LUA_CPATH" : "LUA_PATH");
    const char *base;
    luaL_Buffer b;

    lua_getglobal(L, "package");
    lua_getfield(L, -1, field);
    base = lua_tostring(L, -1);        /* LUA_PATH expanded, or default */
    luaL_buffinit(L, &b);
    sh_lua_path_add(&b, getenv(cpath ? "SHOTOVER_LUA_CPATH"
                                     : "SHOTOVER_LUA_PATH"));
    if (!cpath && own != NULL) {
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", own, own);
        luaL_addvalue(&b);
        luaL_addchar(&b, ';');
    } else if (!cpath) {
        sh_lua_path_add(&b, SH_LUA_PATH);
    }
    if (env != NULL) {
        sh_lua_path_add(&b, base);
    }
    if (home != NULL && home[0] == '/') {
        lua_pushfstring(L, cpath ? "%s/.luarocks/lib/lua/5.1/?.so"
                                 : "%s/.luarocks/share/lua/5.1/?.lua;"
                                   "%s/.luarocks/share/lua/5.1/?/init.lua",
                        home, home);
        luaL_addvalue(&b);
        luaL_addchar(&b, ';');
    }
    luaL_addstring(&b, cpath ? SH_LUA_SYS_CPATH : SH_LUA_SYS_PATH);
    if (env == NULL) {
        luaL_addchar(&b, ';');
        luaL_addstring(&b, base);
    }
    luaL_pushresult(&b);
    lua_setfield(L, -3, field);        /* package, old value, new value */
    lua_pop(L, 2);
}

static void
sh_lua_set_path(lua_State *L)
{
    static char own[PATH_MAX];
    static const char *dir;
    static int looked;

    /* the executable does not move: look once per process (the worker
     * threads make their states after the check made the first) */
    if (!looked) {
        dir = sh_lua_own_dir(own, sizeof(own));
        looked = 1;
    }
    sh_lua_set_one(L, "path", dir, 0);
    sh_lua_set_one(L, "cpath", dir, 1);
}

static int
sh_lua_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL) {
        return 1;                /* not a message: pass the object on */
    }
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg ? msg : "(error object is not a string)");
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

extern const char sh_cdef_text[];      /* generated from sh_ffi.h */

static int
sh_lua_cdef_loader(lua_State *L)
{
    lua_pushstring(L, sh_cdef_text);
    return 1;
}

/*
 * Module shotover.core: classic Lua C functions on plain numbers, for the
 * code that runs in LuaJIT's interpreter after a coroutine yield (the
 * epilogues of chain elements and of the connection runner: a JIT trace
 * cannot cross the yield).  From the interpreter an FFI call costs ~800
 * instructions (callgrind: argument conversion), these ~100.  Compiled
 * code should keep using the FFI: a classic C function ends its trace.
 */
static int
sh_lua_core_since(lua_State *L)       /* since(metric_id, t0_ns, count) */
{
    sh_metric_t *m = sh_metric_by_id((uint32_t) lua_tointeger(L, 1));

    if (m != NULL) {
        sh_metric_since(m, lua_tonumber(L, 2),
                            (uint32_t) lua_tointeger(L, 3));
    }
    return 0;
}

static int
sh_lua_core_add(lua_State *L)         /* add(metric_id, delta) */
{
    sh_metric_t *m = sh_metric_by_id((uint32_t) lua_tointeger(L, 1));

    if (m != NULL) {
        sh_ffi_metric_add(m, (int64_t) lua_tointeger(L, 2));
    }
    return 0;
}

/*
 * session(client): the session table of a client connection (chain.conn),
 * made on first use and kept until the connection closes
 * (sh_lua_session_release).  client is the light userdata a runner gets as
 * its second argument: every run of one client (lanes) shares the table.
 */
static char sh_lua_sessions_key;         /* registry key of the sessions */

static void
sh_lua_sessions(lua_State *L)
{
    lua_pushlightuserdata(L, &sh_lua_sessions_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, &sh_lua_sessions_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
}

static int
sh_lua_core_session(lua_State *L)
{
    void *client = lua_touserdata(L, 1);

    if (client == NULL) {
        return luaL_argerror(L, 1, "connection expected");
    }
    sh_lua_sessions(L);
    lua_pushlightuserdata(L, client);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, client);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    return 1;
}

void
sh_lua_session_release(lua_State *L, void *client)
{
    if (L == NULL) {
        return;
    }
    sh_lua_sessions(L);
    lua_pushlightuserdata(L, client);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int
sh_lua_core_loader(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "since", sh_lua_core_since },
        { "add", sh_lua_core_add },
        { "session", sh_lua_core_session },
        { NULL, NULL },
    };

    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}

/*
 * Lua's memory.  A worker's Lua state allocates with malloc, not LuaJIT's
 * own allocator: a burst of connections leaves the Lua heap's free memory
 * scattered among the objects that live on, and LuaJIT's allocator gives
 * a segment back only when all of it is free, while malloc_trim gives back
 * every free page (sh_worker.c).  Measured over 12 rounds of 8k
 * connections: RSS 7 MB after the first, growing to 11 MB with LuaJIT's
 * allocator; flat at 7 MB with malloc.
 *
 * In front of malloc, small objects (up to 256 bytes, in 16-byte classes)
 * are kept on per-state free lists: a batch boxes a few cdata across its
 * yields, and glibc's malloc and free cost ~125 instructions a pair there
 * (+4% per request at -P 1), a list pop and push a few.  The lists are per
 * state (one thread), hold at most 1 MiB per class (a collection frees
 * thousands of objects at once: fewer kept would send most to free()),
 * and are emptied when memory is released.
 */
#define SH_LUA_SMALL_MAX 256             /* largest size kept on lists */
#define SH_LUA_CLASSES (SH_LUA_SMALL_MAX / 16)
#ifdef __SANITIZE_ADDRESS__
#define SH_LUA_KEEP_BYTES 0              /* ASan sees every free */
#else
#define SH_LUA_KEEP_BYTES (1024 * 1024)  /* kept per class, at most */
#endif

typedef struct sh_lua_heap_s {
    void *free[SH_LUA_CLASSES];          /* linked through the first word */
    uint32_t n[SH_LUA_CLASSES];          /* objects on each list */
} sh_lua_heap_t;

static inline uint32_t
sh_lua_class(size_t size)
{
    return (uint32_t) ((size - 1) >> 4);
}

static void *
sh_lua_heap_get(sh_lua_heap_t *h, size_t size)
{
    uint32_t c;
    void *p;

    if (size > SH_LUA_SMALL_MAX) {
        return malloc(size);
    }
    c = sh_lua_class(size);
    p = h->free[c];
    if (p == NULL) {
        return malloc(((size_t) c + 1) * 16);
    }
    h->free[c] = *(void **) p;
    h->n[c]--;
    return p;
}

static void
sh_lua_heap_put(sh_lua_heap_t *h, void *p, size_t size)
{
    uint32_t c = sh_lua_class(size);

    /* (size - 1: a size of 0, never given, would index past the lists) */
    if (size - 1 >= SH_LUA_SMALL_MAX
        || h->n[c] >= SH_LUA_KEEP_BYTES / 16 / (c + 1))
    {
        free(p);
        return;
    }
    *(void **) p = h->free[c];
    h->free[c] = p;
    h->n[c]++;
}

static void
sh_lua_heap_drain(sh_lua_heap_t *h)
{
    uint32_t c;

    for (c = 0; c < SH_LUA_CLASSES; c++) {
        while (h->free[c] != NULL) {
            void *p = h->free[c];

            h->free[c] = *(void **) p;
            free(p);
        }
        h->n[c] = 0;
    }
}

static void *
sh_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sh_lua_heap_t *h = ud;
    void *q;

    if (nsize == 0) {
        if (ptr != NULL) {
            sh_lua_heap_put(h, ptr, osize);
        }
        return NULL;
    }
    if (ptr == NULL) {
        return sh_lua_heap_get(h, nsize);
    }
    if (osize > SH_LUA_SMALL_MAX && nsize > SH_LUA_SMALL_MAX) {
        return realloc(ptr, nsize);
    }
    if (osize <= SH_LUA_SMALL_MAX && nsize <= SH_LUA_SMALL_MAX
        && sh_lua_class(osize) == sh_lua_class(nsize))
    {
        return ptr;                      /* the same class: it fits */
    }
    q = sh_lua_heap_get(h, nsize);
    if (q != NULL) {
        memcpy(q, ptr, sh_min(osize, nsize));
        sh_lua_heap_put(h, ptr, osize);
    }
    return q;
}

/* Collect L in full and give its free lists back to malloc. */
void
sh_lua_release_memory(lua_State *L)
{
    void *ud;

    lua_gc(L, LUA_GCCOLLECT, 0);
    if (lua_getallocf(L, &ud) == sh_lua_alloc) {
        sh_lua_heap_drain(ud);
    }
}

void
sh_lua_close(lua_State *L)
{
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);

    lua_close(L);
    if (f == sh_lua_alloc) {
        sh_lua_heap_drain(ud);
        free(ud);
    }
}

static lua_State *
sh_lua_new(void)
{
    sh_lua_heap_t *h = sh_calloc(1, sizeof(*h));
    lua_State *L = lua_newstate(sh_lua_alloc, h);

    if (L == NULL) {
        free(h);
        L = luaL_newstate();     /* a LuaJIT built without GC64 */
    }

    if (L == NULL) {
        return NULL;
    }
    luaL_openlibs(L);
    sh_lua_set_path(L);
    /* the FFI declarations travel inside the binary */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, sh_lua_cdef_loader);
    lua_setfield(L, -2, "shotover.cdef");
    lua_pushcfunction(L, sh_lua_core_loader);
    lua_setfield(L, -2, "shotover.core");
    lua_pop(L, 2);
    return L;
}

lua_State *
sh_lua_state_new(void)
{
    return sh_lua_new();
}

/*
 * Call module.fn(args...) with a traceback handler.  On failure writes the
 * message to err and returns SH_ERROR; on success leaves nret results.
 */
static int
sh_lua_call(lua_State *L, const char *module, const char *fn, int nargs,
    int nret, char *err, size_t errlen)
{
    int base = lua_gettop(L) - nargs + 1;     /* first argument */

    lua_pushcfunction(L, sh_lua_traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, base - 1);
        return SH_ERROR;
    }
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    /* stack: args..., traceback, fn -> traceback, fn, args... */
    lua_insert(L, base);
    lua_insert(L, base);
    if (lua_pcall(L, nargs, nret, base) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, base - 1);
        return SH_ERROR;
    }
    lua_remove(L, base);
    return SH_OK;
}

int
sh_lua_worker_init(sh_worker_t *w, char *err, size_t errlen)
{
    lua_State *L = sh_lua_new();

    if (L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return SH_ERROR;
    }
    w->L = L;
    lua_pushlightuserdata(L, w);
    lua_pushstring(L, w->conf_path);
    lua_pushinteger(L, w->id);
    if (sh_lua_call(L, "shotover.worker", "init", 3, 1, err, errlen)
        != SH_OK)
    {
        return SH_ERROR;
    }
    if (!lua_isfunction(L, -1)) {
        snprintf(err, errlen, "shotover.worker.init returned no runner");
        return SH_ERROR;
    }
    w->run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return SH_OK;
}

/*
 * sh_lua_worker_reload: load w's config again (shotover.worker.reload):
 * new connections get the new chains, the connections there are keep
 * theirs.  SH_ERROR with err when it could not be applied.
 */
int
sh_lua_worker_reload(sh_worker_t *w, char *err, size_t errlen)
{
    lua_State *L = w->L;
    int top = lua_gettop(L);
    int rc;

    lua_pushlightuserdata(L, w);
    lua_pushstring(L, w->conf_path);
    lua_pushinteger(L, w->id);
    rc = sh_lua_call(L, "shotover.worker", "reload", 3, 0, err, errlen);
    lua_settop(L, top);
    return rc;
}

/* Drop the configurations no connection runs any more; returns how many
 * old ones are still in use (0: stop asking), -1 on a Lua error. */
int
sh_lua_worker_collect(sh_worker_t *w)
{
    lua_State *L = w->L;
    int top = lua_gettop(L), left = -1;
    char err[512];

    lua_pushlightuserdata(L, w);
    if (sh_lua_call(L, "shotover.worker", "collect", 1, 1, err, sizeof(err))
        == SH_OK)
    {
        left = (int) lua_tointeger(L, -1);
    } else {
        sh_log_error("worker %d: %s", w->id, err);
    }
    lua_settop(L, top);
    return left;
}

/* Call shotover.worker.NAME(w[, token]) outside any run, logging what it
 * raises: the worker goes on. */
static void
sh_lua_worker_event(sh_worker_t *w, const char *name, int token)
{
    lua_State *L = w->L;
    int top = lua_gettop(L), nargs = 1;
    char err[512];

    if (L == NULL) {
        return;
    }
    lua_pushlightuserdata(L, w);
    if (token >= 0) {
        lua_pushinteger(L, token);
        nargs = 2;
    }
    if (sh_lua_call(L, "shotover.worker", name, nargs, 0, err, sizeof(err))
        != SH_OK)
    {
        sh_log_error("worker %d: %s: %s", w->id, name, err);
    }
    lua_settop(L, top);
}

void
sh_lua_worker_watch(sh_worker_t *w, int token)
{
    sh_lua_worker_event(w, "on_watch", token);
}

void
sh_lua_worker_stop(sh_worker_t *w)
{
    sh_lua_worker_event(w, "stop", -1);
}

/*
 * A runner yields (DONE, resp): resp is an sh_batch_t reference (cdata), or
 * nil for none.  Taken from the stack rather than set through an FFI call
 * because the runner's epilogue runs in the interpreter (see shotover.core
 * above).  A cdata's payload (lua_topointer) holds the reference's pointer.
 */
#define SH_LUA_TCDATA 10                /* lua_type() of a cdata */

/*
 * sh_lua_resume: run coroutine co until it yields, starting it the first
 * time as runner(run, client) (light userdata: the run and the client
 * connection it serves).  Returns what it yielded (SH_YIELD_*), with the
 * responses of a DONE in *resp (not referenced: take one), or SH_ERROR when
 * the runner died (its message in *err, valid until the next resume).
 * While it runs, frames and batches Lua makes join `cycle`.
 */
int
sh_lua_resume(sh_worker_t *w, sh_lua_co_t *co, void *run, void *client,
    sh_cycle_t *cycle, sh_batch_t **resp, const char **err)
{
    static __thread char errbuf[512];
    lua_State *L;
    int nargs = 0, rc, v;

    *resp = NULL;
    if (co->L == NULL) {
        co->L = lua_newthread(w->L);
        co->ref = luaL_ref(w->L, LUA_REGISTRYINDEX);
        lua_rawgeti(co->L, LUA_REGISTRYINDEX, w->run_ref);
        lua_pushlightuserdata(co->L, run);
        lua_pushlightuserdata(co->L, client);
        nargs = 2;
    }
    L = co->L;
    sh_cycle_cur = cycle;
    rc = lua_resume(L, nargs);
    sh_cycle_cur = NULL;
    if (rc == LUA_YIELD) {
        v = (int) lua_tointeger(L, 1);
        if (v == SH_YIELD_DONE && lua_type(L, 2) == SH_LUA_TCDATA) {
            *resp = *(sh_batch_t *const *) lua_topointer(L, 2);
        }
        lua_settop(L, 0);
        return v;
    }
    snprintf(errbuf, sizeof(errbuf), "%s",
             rc == 0 ? "returned" : lua_tostring(L, -1));
    *err = errbuf;
    sh_lua_co_release(w, co);
    return SH_ERROR;
}

void
sh_lua_co_release(sh_worker_t *w, sh_lua_co_t *co)
{
    if (co->ref != LUA_NOREF && co->L != NULL && w->L != NULL) {
        luaL_unref(w->L, LUA_REGISTRYINDEX, co->ref);
    }
    co->ref = LUA_NOREF;
    co->L = NULL;
}

/*
 * sh_lua_check: read and validate a config without starting anything (at
 * start, and for a reload).  SH_OK with what the C side needs of it in
 * *out; SH_DECLINED when the config has problems, listed in err one per
 * line; SH_ERROR when the check itself failed (err says why).
 */
int
sh_lua_check(const char *conf_path, sh_lua_conf_t *out, char *err,
    size_t errlen)
{
    lua_State *L = sh_lua_new();
    int rc = SH_DECLINED;

    memset(out, 0, sizeof(*out));
    if (L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state");
        return SH_ERROR;
    }
    lua_pushstring(L, conf_path);
    if (sh_lua_call(L, "shotover.config", "check_file", 1, 6, err, errlen)
        != SH_OK)
    {
        rc = SH_ERROR;
    } else if (lua_isnumber(L, -6)) {
        out->workers = (int) lua_tointeger(L, -6);
        if (lua_isstring(L, -5)) {
            snprintf(out->admin_host, sizeof(out->admin_host), "%s",
                     lua_tostring(L, -5));
            out->admin_port = (int) lua_tointeger(L, -4);
        }
        if (lua_isstring(L, -3)) {
            snprintf(out->admin_token, sizeof(out->admin_token), "%s",
                     lua_tostring(L, -3));
        }
        out->drain_timeout_ms = (uint32_t) lua_tointeger(L, -2);
        /* a context Lua made and let go of: its reference is ours */
        if (lua_isnumber(L, -1)) {
            out->admin_tls = (sh_tls_ctx_t *) (uintptr_t) lua_tonumber(L, -1);
        }
        rc = SH_OK;
    } else {
        snprintf(err, errlen, "%s", lua_tostring(L, -5));
    }
    sh_lua_close(L);
    return rc;
}

/*
 * sh_lua_script: `shotover lua SCRIPT [ARGS...]` runs a Lua script in the
 * same runtime the workers have (FFI declarations, module path, the core's
 * symbols), like OpenResty's `resty`.  The busted specs run this way, so they
 * test the binary itself, sanitizers included.  A SCRIPT without a '/' that
 * is not a readable file in the current directory is looked up on PATH as a
 * shell would (the first regular file with an execute bit), so `shotover
 * lua busted spec/` runs the installed busted; arg[0] is then the path
 * found.  Returns the exit status.
 */
int
sh_lua_script(int argc, char **argv)
{
    lua_State *L;
    const char *script = argv[0], *path, *dir, *end;
    char found[4096];
    struct stat st;
    FILE *f;
    int i, rc, n;

    if (strchr(script, '/') == NULL) {
        f = fopen(script, "r");
        if (f != NULL) {
            fclose(f);
        } else if ((path = getenv("PATH")) != NULL) {
            for (dir = path; ; dir = end + 1) {
                end = strchr(dir, ':');
                if (end == NULL) {
                    end = dir + strlen(dir);
                }
                /* an empty entry is the current directory, tried above; a
                 * path too long for the buffer is skipped, never cut */
                if (end > dir) {
                    n = snprintf(found, sizeof(found), "%.*s/%s",
                                 (int) (end - dir), dir, script);
                    if (n > 0 && (size_t) n < sizeof(found)
                        && stat(found, &st) == 0 && S_ISREG(st.st_mode)
                        && (st.st_mode & 0111) != 0)
                    {
                        script = found;
                        break;
                    }
                }
                if (*end == '\0') {
                    break;
                }
            }
        }
    }

    L = sh_lua_new();
    if (L == NULL) {
        fprintf(stderr, "shotover: cannot create a Lua state\n");
        return 1;
    }
    lua_createtable(L, argc, 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, i == 0 ? script : argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    lua_pushcfunction(L, sh_lua_traceback);
    if (luaL_loadfile(L, script) != 0) {
        fprintf(stderr, "shotover: %s\n", lua_tostring(L, -1));
        sh_lua_close(L);
        return 1;
    }
    for (i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
    }
    rc = lua_pcall(L, argc - 1, 0, 1);
    if (rc != 0 && lua_type(L, -1) == LUA_TSTRING) {
        /* a non-string error object is a script's way to exit non-zero
         * (busted's on Lua 5.1): no message then */
        fprintf(stderr, "shotover: %s\n", lua_tostring(L, -1));
    }
    sh_lua_close(L);
    sh_buf_pools_free();
    return rc == 0 ? 0 : 1;
}

/*
 * sh_lua_cli: a subcommand written in Lua (`route-test`, `repl`): calls
 * require(module).main(args), args being the list of argv strings, in the
 * same runtime `shotover lua` gives.  main returns the exit status; an error
 * it raises is printed and gives 2.
 */
int
sh_lua_cli(const char *module, int argc, char **argv)
{
    lua_State *L = sh_lua_new();
    char err[4096];
    int i, rc = 2;

    if (L == NULL) {
        fprintf(stderr, "shotover: cannot create a Lua state\n");
        return 2;
    }
    lua_createtable(L, argc, 0);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (sh_lua_call(L, module, "main", 1, 1, err, sizeof(err)) != SH_OK) {
        fprintf(stderr, "shotover: %s\n", err);
    } else {
        rc = lua_isnumber(L, -1) ? (int) lua_tointeger(L, -1) : 0;
    }
    sh_lua_close(L);
    sh_buf_pools_free();
    return rc;
}
