/*
 * sh_lua.c -- the only place C enters Lua: a LuaJIT state per worker, and a
 * coroutine per client connection that C resumes (the cosocket model).  Lua
 * never gets a C callback; it yields, and C resumes it when backends are
 * done.
 */
#include <stdio.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sh_config.h"
#include "sh_lua.h"
#include "sh_metrics.h"

static void
sh_lua_set_path(lua_State *L)
{
    const char *env = getenv("SHOTOVER_LUA_PATH");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s;%s;%s", env ? env : "", SH_LUA_PATH,
                    lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
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

static lua_State *
sh_lua_new(void)
{
    lua_State *L = luaL_newstate();

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
 * sh_lua_check: validate a config without starting anything.  Prints every
 * problem to stderr.  Returns SH_OK with the worker count (0 for "auto") and
 * the admin endpoint's address (admin_port 0 when there is none), or
 * SH_ERROR.
 */
int
sh_lua_check(const char *conf_path, int *workers, char *admin_host,
    size_t hostlen, int *admin_port)
{
    lua_State *L = sh_lua_new();
    char err[4096];
    int rc = SH_ERROR;

    if (L == NULL) {
        fprintf(stderr, "shotover: cannot create a Lua state\n");
        return SH_ERROR;
    }
    *admin_port = 0;
    lua_pushstring(L, conf_path);
    if (sh_lua_call(L, "shotover.config", "check_file", 1, 3, err,
                    sizeof(err)) != SH_OK)
    {
        fprintf(stderr, "shotover: %s\n", err);
    } else if (lua_isnumber(L, -3)) {
        *workers = (int) lua_tointeger(L, -3);
        if (lua_isstring(L, -2)) {
            snprintf(admin_host, hostlen, "%s", lua_tostring(L, -2));
            *admin_port = (int) lua_tointeger(L, -1);
        }
        rc = SH_OK;
    } else {
        fprintf(stderr, "%s", lua_tostring(L, -2));
    }
    lua_close(L);
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
        lua_close(L);
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
    lua_close(L);
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
    lua_close(L);
    sh_buf_pools_free();
    return rc;
}
