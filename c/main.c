/*
 * main.c -- the command line: run, check, lua, route-test, repl,
 * --version, --help.
 */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "sh_server.h"
#include "sh_lua.h"

static void
sh_usage(FILE *out)
{
    fprintf(out,
        "usage: shotover run -c FILE [--log-level LEVEL] [--log-format FMT]\n"
        "       shotover check -c FILE\n"
        "       shotover lua SCRIPT [ARGS...]\n"
        "       shotover route-test -c FILE CASES.lua [-v]\n"
        "       shotover repl -c FILE [--dry] [--source NAME]\n"
        "       shotover --version | --help\n"
        "\n"
        "  run      start the proxy in the foreground with config FILE\n"
        "  check    validate FILE, print every problem, look up every host\n"
        "           it names; binds no port (exit 0 valid, 1 invalid,\n"
        "           2 usage)\n"
        "  lua      run a Lua script in shotover's runtime (FFI, modules)\n"
        "  route-test  run the requests of CASES.lua through FILE's chains\n"
        "           dry and check the path each takes; TAP output (exit 0\n"
        "           all pass, 1 a case failed, 2 usage or file error)\n"
        "  repl     type Redis commands, CQL statements or Lua (=expr) and\n"
        "           see each one's path through the chain, what every\n"
        "           transform did and the reply; real backends, or none\n"
        "           with --dry\n"
        "  LEVEL    error, warn, info (default) or debug\n"
        "  FMT      text (default) or json: one JSON object per line\n");
}

static int
sh_level(const char *s)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    int i;

    for (i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i + 1;
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *cmd = NULL, *conf = NULL;
    static sh_lua_conf_t lc;
    char err[8192];
    int i, level, rc;

    if (argc >= 3 && strcmp(argv[1], "lua") == 0) {
        return sh_lua_script(argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "route-test") == 0) {
        return sh_lua_cli("shotover.cli.route_test", argc - 2, argv + 2);
    }
    if (argc >= 2 && strcmp(argv[1], "repl") == 0) {
        return sh_lua_cli("shotover.cli.repl", argc - 2, argv + 2);
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
            printf("shotover %s (LuaJIT, libuv %s)\n", SH_VERSION,
                   uv_version_string());
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            sh_usage(stdout);
            return 0;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
                   && i + 1 < argc)
        {
            conf = argv[++i];
        } else if (strcmp(a, "--log-level") == 0 && i + 1 < argc) {
            level = sh_level(argv[++i]);
            if (level == 0) {
                fprintf(stderr, "shotover: unknown log level \"%s\"\n",
                        argv[i]);
                return 2;
            }
            sh_ffi_log_set_level(level);
        } else if (strcmp(a, "--log-format") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "json") == 0) {
                sh_log_set_json(1);
            } else if (strcmp(argv[i], "text") != 0) {
                fprintf(stderr, "shotover: unknown log format \"%s\"\n",
                        argv[i]);
                return 2;
            }
        } else if (cmd == NULL && a[0] != '-') {
            cmd = a;
        } else {
            fprintf(stderr, "shotover: unexpected argument \"%s\"\n", a);
            sh_usage(stderr);
            return 2;
        }
    }
    if (cmd == NULL || conf == NULL
        || (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0))
    {
        sh_usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "check") == 0) {
        /* in Lua: it also resolves the sinks' remotes, which `run` does
         * not (they are looked up at each connect) */
        char *check_argv[1];

        check_argv[0] = (char *) conf;
        return sh_lua_cli("shotover.cli.check", 1, check_argv);
    }
    rc = sh_lua_check(conf, &lc, err, sizeof(err));
    if (rc != SH_OK) {
        fprintf(stderr, rc == SH_ERROR ? "shotover: %s\n" : "%s", err);
        return 1;
    }
    if (lc.workers <= 0) {
        lc.workers = (int) uv_available_parallelism();
    }
    return sh_workers_run(conf, lc.workers, lc.admin_host, lc.admin_port,
                          lc.admin_token, lc.admin_tls,
                          lc.drain_timeout_ms) == SH_OK
           ? 0 : 1;
}
