/*
 * sh_admin.c -- the admin HTTP endpoint, on the main thread's loop:
 *   GET /metrics    the metrics registry, Prometheus text format 0.0.4
 *   GET /health     200 while the process runs
 *   GET /ready      200 once every worker serves, 503 before and while
 *                   stopping
 *   PUT /log-level  body error|warn|info|debug: changes the level live
 *   POST /reload    loads the config again, as SIGHUP does: 200, or 400
 *                   with every problem of the new config (the old one
 *                   keeps serving)
 *   GET /switches   every switch, its setting and choices
 *   PUT /switches/NAME  body one of its choices: flips it live
 * Requests are parsed with Node's http-parser (Debian libhttp-parser);
 * one request per connection, answered with Connection: close.
 *
 * The routes that change something (the PUTs, POST /reload) are guarded: with a token
 * (admin.token or admin.token_file) they need "Authorization: Bearer
 * TOKEN" (RFC 6750; 401 with WWW-Authenticate otherwise), from any peer;
 * without one they answer loopback peers only (403 otherwise), which is
 * what the default listen address, 127.0.0.1, gave before there was a
 * token.  The read-only routes stay open.  A refusal is logged, the token
 * never.
 */
#include <stdio.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <http_parser.h>
#include <uv.h>

#include "sh_admin.h"
#include "sh_metrics.h"
#include "sh_switch.h"
#include "sh_tls.h"
#include "sh_worker.h"

#define SH_ADMIN_MAX 4096                /* URL or body bytes kept */
#define SH_ADMIN_TOKEN_MAX 1024          /* bytes of a token (config.lua
                                            checks the same bound) */

typedef struct sh_admin_conn_s {
    uv_tcp_t tcp;            /* the client */
    uv_write_t wr;           /* the response write */
    sh_tls_t *tls;           /* TLS (admin.tls), or NULL */
    http_parser parser;      /* request parser */
    char url[SH_ADMIN_MAX];  /* request target */
    size_t url_len;          /* its length */
    char body[SH_ADMIN_MAX]; /* request body */
    size_t body_len;         /* its length */
    int done;                /* a response is on its way */
    char *resp;              /* response bytes (malloc'd) */
    char field[16];          /* the header name being read */
    size_t field_len;        /* its length; sizeof(field): too long to be
                                one we read */
    int in_value;            /* the last header callback was a value */
    int in_auth;             /* ... of the Authorization header */
    int auth_seen;           /* an Authorization header came */
    int auth_bad;            /* more than one, or longer than auth[] */
    char auth[SH_ADMIN_TOKEN_MAX + 64]; /* its value */
    size_t auth_len;         /* its length */
} sh_admin_conn_t;

static uv_tcp_t sh_admin_listener;
static int sh_admin_listening;
static int sh_admin_ready;
static http_parser_settings sh_admin_settings;
static char sh_admin_token[SH_ADMIN_TOKEN_MAX + 1]; /* "" when none */
static sh_tls_ctx_t *sh_admin_tls;      /* admin.tls, or NULL */
static size_t sh_admin_token_len;

void
sh_admin_set_ready(int ready)
{
    sh_admin_ready = ready;
}

static void
sh_admin_close_cb(uv_handle_t *h)
{
    sh_admin_conn_t *c = (sh_admin_conn_t *) h;

    sh_tls_free(c->tls);
    sh_free(c->resp);
    sh_free(c);
}

static void
sh_admin_write_cb(uv_write_t *wr, int status)
{
    sh_unused(status);
    uv_close((uv_handle_t *) wr->handle, sh_admin_close_cb);
}

static void
sh_admin_tls_write_cb(uv_write_t *wr, int status)
{
    uv_handle_t *h = (uv_handle_t *) wr->handle;

    sh_unused(status);
    sh_copy_write_done(wr);
    if (!uv_is_closing(h)) {
        uv_close(h, sh_admin_close_cb);
    }
}

static void
sh_admin_tls_sent_cb(uv_write_t *wr, int status)
{
    sh_unused(status);
    sh_copy_write_done(wr);
}

/* Write what TLS has pending (the response with a close_notify after it,
 * or a handshake's messages); close once written when `last`. */
static void
sh_admin_tls_flush(sh_admin_conn_t *c, int last)
{
    int rc = sh_tls_flush(c->tls, (uv_stream_t *) &c->tcp,
                          last ? sh_admin_tls_write_cb : sh_admin_tls_sent_cb,
                          c, SH_SIDE_NONE);

    if ((rc < 0 || (rc == 0 && last))
        && !uv_is_closing((uv_handle_t *) &c->tcp))
    {
        uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
    }
}

/* extra: more header lines ("Name: value\r\n"), or NULL */
static void
sh_admin_respond_with(sh_admin_conn_t *c, int code, const char *reason,
    const char *type, const char *extra, const char *body, size_t len)
{
    uv_buf_t buf;
    int n;

    if (c->done) {
        return;
    }
    c->done = 1;
    c->resp = sh_alloc(len + 512);
    n = snprintf(c->resp, 512, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                 code, reason, type, len, extra != NULL ? extra : "");
    memcpy(c->resp + n, body, len);
    buf = uv_buf_init(c->resp, (unsigned int) (n + (int) len));
    uv_read_stop((uv_stream_t *) &c->tcp);
    if (c->tls != NULL) {
        if (sh_tls_write(c->tls, buf.base, buf.len) != SH_OK) {
            uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
            return;
        }
        sh_tls_shutdown(c->tls);
        sh_admin_tls_flush(c, 1);
        return;
    }
    if (uv_write(&c->wr, (uv_stream_t *) &c->tcp, &buf, 1,
                 sh_admin_write_cb) != 0)
    {
        uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
    }
}

static void
sh_admin_respond(sh_admin_conn_t *c, int code, const char *reason,
    const char *type, const char *body, size_t len)
{
    sh_admin_respond_with(c, code, reason, type, NULL, body, len);
}

static void
sh_admin_text(sh_admin_conn_t *c, int code, const char *reason,
    const char *text)
{
    sh_admin_respond(c, code, reason, "text/plain; charset=utf-8", text,
                     strlen(text));
}

/* Header callbacks: only Authorization is kept.  http-parser may hand a
 * name or a value over in pieces; a value's first piece follows its
 * name's last. */
static int
sh_admin_on_header_field(http_parser *p, const char *at, size_t len)
{
    sh_admin_conn_t *c = p->data;

    if (c->in_value) {
        c->in_value = 0;
        c->field_len = 0;
    }
    if (c->field_len + len < sizeof(c->field)) {
        memcpy(c->field + c->field_len, at, len);
        c->field_len += len;
    } else {
        c->field_len = sizeof(c->field);
    }
    return 0;
}

static int
sh_admin_on_header_value(http_parser *p, const char *at, size_t len)
{
    sh_admin_conn_t *c = p->data;

    if (!c->in_value) {
        c->in_value = 1;
        c->in_auth = c->field_len == 13
                     && strncasecmp(c->field, "authorization", 13) == 0;
        if (c->in_auth) {
            c->auth_bad |= c->auth_seen;
            c->auth_seen = 1;
            c->auth_len = 0;
        }
    }
    if (c->in_auth) {
        if (c->auth_len + len <= sizeof(c->auth)) {
            memcpy(c->auth + c->auth_len, at, len);
            c->auth_len += len;
        } else {
            c->auth_bad = 1;
        }
    }
    return 0;
}

/*
 * Is `given` (n bytes) the configured token?  The time taken depends on
 * the configured token's length only, never on where the bytes differ.
 */
static int
sh_admin_token_eq(const char *given, size_t n)
{
    volatile unsigned char diff = (unsigned char) (n != sh_admin_token_len);
    size_t i;

    for (i = 0; i < sh_admin_token_len; i++) {
        diff |= (unsigned char) (sh_admin_token[i]
                                 ^ (i < n ? given[i] : 0));
    }
    return diff == 0;
}

/* The peer's address into name; 1 when it is a loopback address
 * (127.0.0.0/8, ::1, ::ffff:127.x.y.z). */
static int
sh_admin_peer(sh_admin_conn_t *c, char *name, size_t len)
{
    struct sockaddr_storage ss;
    int n = (int) sizeof(ss);

    snprintf(name, len, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *) &ss, &n) != 0) {
        return 0;
    }
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *) &ss;

        uv_ip4_name(a, name, len);
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
        const uint8_t *b = a->sin6_addr.s6_addr;

        uv_ip6_name(a, name, len);
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)
               || (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && b[12] == 127);
    }
    return 0;
}

/* Answer a refusal and log it with `why` (never what the client sent). */
static void
sh_admin_refuse(sh_admin_conn_t *c, const char *path, const char *peer,
    const char *why, int code, const char *reason, const char *extra,
    const char *text)
{
    sh_log_warn("admin: %s %s from %s refused: %s",
                http_method_str((enum http_method) c->parser.method), path,
                peer, why);
    sh_admin_respond_with(c, code, reason, "text/plain; charset=utf-8",
                          extra, text, strlen(text));
}

/*
 * May this request use a route that changes something?  Returns 1, or 0
 * once it has answered the refusal: 401 (no token, another scheme, a
 * wrong token), 400 (two Authorization headers, one too long) or, without
 * a configured token, 403 for a peer that is not on loopback.
 */
static int
sh_admin_may_change(sh_admin_conn_t *c, const char *path)
{
    char peer[64];
    const char *v = c->auth, *end = c->auth + c->auth_len;
    int loopback = sh_admin_peer(c, peer, sizeof(peer));

    if (sh_admin_token_len == 0) {
        if (loopback) {
            return 1;
        }
        sh_admin_refuse(c, path, peer, "not a loopback client and no "
                        "admin.token", 403, "Forbidden", NULL,
                        "forbidden: without admin.token, routes that change "
                        "something answer loopback clients only\n");
        return 0;
    }
    if (c->auth_bad) {
        sh_admin_refuse(c, path, peer, "a bad Authorization header", 400,
                        "Bad Request",
                        "WWW-Authenticate: Bearer realm=\"shotover\", "
                        "error=\"invalid_request\"\r\n",
                        "bad request: one Authorization header, please\n");
        return 0;
    }
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }
    if (!c->auth_seen || end - v < 7 || strncasecmp(v, "bearer", 6) != 0
        || (v[6] != ' ' && v[6] != '\t'))
    {
        sh_admin_refuse(c, path, peer, "no bearer token", 401,
                        "Unauthorized",
                        "WWW-Authenticate: Bearer realm=\"shotover\"\r\n",
                        "unauthorized: send Authorization: Bearer TOKEN\n");
        return 0;
    }
    v += 7;
    while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
    }
    if (!sh_admin_token_eq(v, (size_t) (end - v))) {
        sh_admin_refuse(c, path, peer, "wrong bearer token", 401,
                        "Unauthorized",
                        "WWW-Authenticate: Bearer realm=\"shotover\", "
                        "error=\"invalid_token\"\r\n",
                        "unauthorized: wrong token\n");
        return 0;
    }
    return 1;
}

static int
sh_admin_on_url(http_parser *p, const char *at, size_t len)
{
    sh_admin_conn_t *c = p->data;

    if (c->url_len + len >= SH_ADMIN_MAX) {
        return 1;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int
sh_admin_on_body(http_parser *p, const char *at, size_t len)
{
    sh_admin_conn_t *c = p->data;

    if (c->body_len + len >= SH_ADMIN_MAX) {
        return 1;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static void
sh_admin_trim_body(sh_admin_conn_t *c)
{
    size_t n = c->body_len;

    while (n > 0 && (c->body[n - 1] == '\n' || c->body[n - 1] == '\r'
                     || c->body[n - 1] == ' '))
    {
        n--;
    }
    c->body[n] = '\0';
}

static void
sh_admin_log_level(sh_admin_conn_t *c)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    char msg[64];
    int i;

    sh_admin_trim_body(c);
    for (i = 0; i < 4; i++) {
        if (strcmp(c->body, names[i]) == 0) {
            sh_ffi_log_set_level(i + 1);
            sh_log(SH_LOG_INFO, "admin: log level set to %s", names[i]);
            snprintf(msg, sizeof(msg), "log level %s\n", names[i]);
            sh_admin_text(c, 200, "OK", msg);
            return;
        }
    }
    sh_admin_text(c, 400, "Bad Request",
                  "unknown log level: give error, warn, info or debug\n");
}

static void
sh_admin_switch(sh_admin_conn_t *c, const char *name)
{
    char msg[512];
    int rc;

    sh_admin_trim_body(c);
    rc = sh_switch_set(name, c->body, msg, sizeof(msg));
    if (rc == SH_OK) {
        sh_log(SH_LOG_INFO, "admin: switch %s set to %s", name, c->body);
        sh_admin_text(c, 200, "OK", msg);
    } else if (rc == SH_DECLINED) {
        sh_admin_text(c, 404, "Not Found", msg);
    } else {
        sh_admin_text(c, 400, "Bad Request", msg);
    }
}

static sh_admin_reload_fn sh_admin_reload;

void
sh_admin_set_reload(sh_admin_reload_fn fn)
{
    sh_admin_reload = fn;
}

static void
sh_admin_do_reload(sh_admin_conn_t *c)
{
    char out[8192];

    if (sh_admin_reload == NULL) {
        sh_admin_text(c, 503, "Service Unavailable", "no reload here\n");
    } else if (sh_admin_reload("POST /reload", out, sizeof(out) - 1)
               == SH_OK)
    {
        sh_admin_text(c, 200, "OK", "reloading: new connections get the "
                      "new configuration\n");
    } else {
        size_t n = strlen(out);

        if (n == 0 || out[n - 1] != '\n') {
            out[n++] = '\n';
            out[n] = '\0';
        }
        sh_admin_text(c, 400, "Bad Request", out);
    }
}

static int
sh_admin_on_complete(http_parser *p)
{
    sh_admin_conn_t *c = p->data;
    char *path = c->url, *q;
    size_t len;

    c->url[c->url_len] = '\0';
    if ((q = strchr(path, '?')) != NULL) {
        *q = '\0';
    }
    if (strcmp(path, "/metrics") == 0 && p->method == HTTP_GET) {
        char *text = sh_metrics_render(&len);

        sh_admin_respond(c, 200, "OK", "text/plain; version=0.0.4; "
                         "charset=utf-8", text, len);
        sh_free(text);
    } else if (strcmp(path, "/health") == 0 && p->method == HTTP_GET) {
        sh_admin_text(c, 200, "OK", "ok\n");
    } else if (strcmp(path, "/ready") == 0 && p->method == HTTP_GET) {
        if (sh_admin_ready) {
            sh_admin_text(c, 200, "OK", "ready\n");
        } else {
            sh_admin_text(c, 503, "Service Unavailable", "not ready\n");
        }
    } else if (strcmp(path, "/log-level") == 0 && p->method == HTTP_PUT) {
        if (sh_admin_may_change(c, path)) {
            sh_admin_log_level(c);
        }
    } else if (strcmp(path, "/reload") == 0 && p->method == HTTP_POST) {
        if (sh_admin_may_change(c, path)) {
            sh_admin_do_reload(c);
        }
    } else if (strcmp(path, "/switches") == 0 && p->method == HTTP_GET) {
        char *text = sh_switch_render(&len);

        sh_admin_respond(c, 200, "OK", "text/plain; charset=utf-8", text,
                         len);
        sh_free(text);
    } else if (strncmp(path, "/switches/", 10) == 0 && path[10] != '\0'
               && p->method == HTTP_PUT)
    {
        if (sh_admin_may_change(c, path)) {
            sh_admin_switch(c, path + 10);
        }
    } else if (strcmp(path, "/metrics") == 0 || strcmp(path, "/health") == 0
               || strcmp(path, "/ready") == 0
               || strcmp(path, "/log-level") == 0
               || strcmp(path, "/reload") == 0
               || strncmp(path, "/switches", 9) == 0)
    {
        sh_admin_text(c, 405, "Method Not Allowed", "method not allowed\n");
    } else {
        sh_admin_text(c, 404, "Not Found", "not found: /metrics, /health, "
                      "/ready, PUT /log-level, POST /reload, /switches\n");
    }
    return 0;
}

static void
sh_admin_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[8192];           /* the main thread reads one at a
                                            time and parses at once */

    sh_unused(suggested);
    if (((sh_admin_conn_t *) h)->tls != NULL) {
        sh_tls_read_space(buf);
        return;
    }
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void sh_admin_parse(sh_admin_conn_t *c, const char *p, size_t n);

/* Ciphertext from an admin client: the handshake, then what it decrypts
 * to the parser. */
static void
sh_admin_tls_read(sh_admin_conn_t *c, const char *data, size_t len)
{
    char plain[8192];
    ssize_t r;
    int rc;

    sh_tls_feed(c->tls, data, len);
    if (!sh_tls_handshake_done(c->tls)) {
        rc = sh_tls_handshake(c->tls);
        if (rc == SH_TLS_FAILED) {
            sh_log_warn("admin endpoint: TLS handshake failed: %s",
                        sh_tls_error(c->tls));
            c->done = 1;
            uv_read_stop((uv_stream_t *) &c->tcp);
            sh_admin_tls_flush(c, 1);    /* the alert, then close */
            return;
        }
        sh_admin_tls_flush(c, 0);
        if (rc == SH_TLS_MORE) {
            return;
        }
    }
    while (!c->done && (r = sh_tls_read(c->tls, (uint8_t *) plain,
                                        sizeof(plain))) != 0)
    {
        if (r < 0) {
            uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
            return;
        }
        sh_admin_parse(c, plain, (size_t) r);
    }
}

static void
sh_admin_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sh_admin_conn_t *c = (sh_admin_conn_t *) s;

    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *) s)) {
            uv_close((uv_handle_t *) s, sh_admin_close_cb);
        }
        return;
    }
    if (c->tls != NULL) {
        sh_admin_tls_read(c, buf->base, (size_t) nread);
        return;
    }
    sh_admin_parse(c, buf->base, (size_t) nread);
}

static void
sh_admin_parse(sh_admin_conn_t *c, const char *p, size_t n)
{
    size_t done = http_parser_execute(&c->parser, &sh_admin_settings, p, n);

    if (!c->done && (c->parser.http_errno != HPE_OK || done != n)) {
        sh_admin_text(c, 400, "Bad Request", "bad request\n");
    }
}

static void
sh_admin_accept_cb(uv_stream_t *server, int status)
{
    sh_admin_conn_t *c;

    if (status < 0) {
        return;
    }
    c = sh_calloc(1, sizeof(*c));
    uv_tcp_init(server->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *) &c->tcp) != 0) {
        uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
        return;
    }
    if (sh_admin_tls != NULL) {
        c->tls = sh_tls_new_server(sh_admin_tls);
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *) &c->tcp, sh_admin_alloc_cb,
                  sh_admin_read_cb);
}

/*
 * token: what the routes that change something require as a bearer
 * token, or NULL / "" for none (then they answer loopback peers only).
 */
static int sh_admin_listen(uv_loop_t *loop, const char *host, int port,
    const char *token, sh_tls_ctx_t *tls, char *err, size_t errlen);

int
sh_admin_start(uv_loop_t *loop, const char *host, int port,
    const char *token, sh_tls_ctx_t *tls, char *err, size_t errlen)
{
    if (sh_admin_listen(loop, host, port, token, tls, err, errlen)
        != SH_OK)
    {
        sh_tls_ctx_unref(tls);
        return SH_ERROR;
    }
    return SH_OK;
}

int
sh_admin_set_tls(sh_tls_ctx_t *tls)
{
    if (!sh_admin_listening || (sh_admin_tls == NULL) != (tls == NULL)) {
        sh_tls_ctx_unref(tls);
        return SH_DECLINED;
    }
    sh_tls_ctx_unref(sh_admin_tls);
    sh_admin_tls = tls;
    return SH_OK;
}

static int
sh_admin_listen(uv_loop_t *loop, const char *host, int port,
    const char *token, sh_tls_ctx_t *tls, char *err, size_t errlen)
{
    struct addrinfo *res;
    int rc, loopback;

    sh_admin_token_len = token != NULL ? strlen(token) : 0;
    if (sh_admin_token_len > SH_ADMIN_TOKEN_MAX) {
        snprintf(err, errlen, "admin.token: longer than %d bytes",
                 SH_ADMIN_TOKEN_MAX);
        return SH_ERROR;
    }
    memcpy(sh_admin_token, token != NULL ? token : "", sh_admin_token_len);
    sh_admin_token[sh_admin_token_len] = '\0';
    http_parser_settings_init(&sh_admin_settings);
    sh_admin_settings.on_url = sh_admin_on_url;
    sh_admin_settings.on_header_field = sh_admin_on_header_field;
    sh_admin_settings.on_header_value = sh_admin_on_header_value;
    sh_admin_settings.on_body = sh_admin_on_body;
    sh_admin_settings.on_message_complete = sh_admin_on_complete;
    if (sh_resolve(host, port, 1, &res, err, errlen) != SH_OK) {
        return SH_ERROR;
    }
    uv_tcp_init(loop, &sh_admin_listener);
    rc = uv_tcp_bind(&sh_admin_listener, res->ai_addr, 0);
    loopback = (res->ai_family == AF_INET
                && (ntohl(((struct sockaddr_in *) res->ai_addr)
                              ->sin_addr.s_addr) >> 24) == 127)
               || (res->ai_family == AF_INET6
                   && IN6_IS_ADDR_LOOPBACK(
                          &((struct sockaddr_in6 *) res->ai_addr)->sin6_addr));
    freeaddrinfo(res);
    if (rc == 0) {
        rc = uv_listen((uv_stream_t *) &sh_admin_listener, 64,
                       sh_admin_accept_cb);
    }
    if (rc != 0) {
        snprintf(err, errlen, "admin.listen: cannot listen on %s:%d: %s",
                 host, port, uv_strerror(rc));
        uv_close((uv_handle_t *) &sh_admin_listener, NULL);
        return SH_ERROR;
    }
    sh_admin_listening = 1;
    sh_admin_tls = tls;
    sh_log_info("admin endpoint listening on %s:%d%s", host, port,
                tls != NULL ? " (TLS)" : "");
    if (!loopback && sh_admin_token_len == 0) {
        sh_log_warn("admin endpoint on %s:%d has no admin.token: PUT routes "
                    "answer loopback clients only", host, port);
    }
    return SH_OK;
}

void
sh_admin_stop(void)
{
    sh_admin_ready = 0;
    sh_tls_ctx_unref(sh_admin_tls);
    sh_admin_tls = NULL;
    sh_tls_buffers_free();
    if (sh_admin_listening) {
        sh_admin_listening = 0;
        uv_close((uv_handle_t *) &sh_admin_listener, NULL);
    }
}
