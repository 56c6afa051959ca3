/*
 * sh_admin.c -- the admin HTTP endpoint, on the main thread's loop:
 *   GET /metrics    the metrics registry, Prometheus text format 0.0.4
 *   GET /health     200 while the process runs
 *   GET /ready      200 once every worker serves, 503 before and while
 *                   stopping
 *   PUT /log-level  body error|warn|info|debug: changes the level live
 *   GET /switches   every switch, its setting and choices
 *   PUT /switches/NAME  body one of its choices: flips it live
 * Requests are parsed with Node's http-parser (Debian libhttp-parser);
 * one request per connection, answered with Connection: close.
 */
#include <stdio.h>

#include <http_parser.h>
#include <uv.h>

#include "sh_admin.h"
#include "sh_metrics.h"
#include "sh_switch.h"
#include "sh_worker.h"

#define SH_ADMIN_MAX 4096                /* URL or body bytes kept */

typedef struct sh_admin_conn_s {
    uv_tcp_t tcp;            /* the client */
    uv_write_t wr;           /* the response write */
    http_parser parser;      /* request parser */
    char url[SH_ADMIN_MAX];  /* request target */
    size_t url_len;          /* its length */
    char body[SH_ADMIN_MAX]; /* request body */
    size_t body_len;         /* its length */
    int done;                /* a response is on its way */
    char *resp;              /* response bytes (malloc'd) */
} sh_admin_conn_t;

static uv_tcp_t sh_admin_listener;
static int sh_admin_listening;
static int sh_admin_ready;
static http_parser_settings sh_admin_settings;

void
sh_admin_set_ready(int ready)
{
    sh_admin_ready = ready;
}

static void
sh_admin_close_cb(uv_handle_t *h)
{
    sh_admin_conn_t *c = (sh_admin_conn_t *) h;

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
sh_admin_respond(sh_admin_conn_t *c, int code, const char *reason,
    const char *type, const char *body, size_t len)
{
    uv_buf_t buf;
    int n;

    if (c->done) {
        return;
    }
    c->done = 1;
    c->resp = sh_alloc(len + 256);
    n = snprintf(c->resp, 256, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", code,
                 reason, type, len);
    memcpy(c->resp + n, body, len);
    buf = uv_buf_init(c->resp, (unsigned int) (n + (int) len));
    uv_read_stop((uv_stream_t *) &c->tcp);
    if (uv_write(&c->wr, (uv_stream_t *) &c->tcp, &buf, 1,
                 sh_admin_write_cb) != 0)
    {
        uv_close((uv_handle_t *) &c->tcp, sh_admin_close_cb);
    }
}

static void
sh_admin_text(sh_admin_conn_t *c, int code, const char *reason,
    const char *text)
{
    sh_admin_respond(c, code, reason, "text/plain; charset=utf-8", text,
                     strlen(text));
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
        sh_admin_log_level(c);
    } else if (strcmp(path, "/switches") == 0 && p->method == HTTP_GET) {
        char *text = sh_switch_render(&len);

        sh_admin_respond(c, 200, "OK", "text/plain; charset=utf-8", text,
                         len);
        sh_free(text);
    } else if (strncmp(path, "/switches/", 10) == 0 && path[10] != '\0'
               && p->method == HTTP_PUT)
    {
        sh_admin_switch(c, path + 10);
    } else if (strcmp(path, "/metrics") == 0 || strcmp(path, "/health") == 0
               || strcmp(path, "/ready") == 0
               || strcmp(path, "/log-level") == 0
               || strncmp(path, "/switches", 9) == 0)
    {
        sh_admin_text(c, 405, "Method Not Allowed", "method not allowed\n");
    } else {
        sh_admin_text(c, 404, "Not Found", "not found: /metrics, /health, "
                      "/ready, PUT /log-level, /switches\n");
    }
    return 0;
}

static void
sh_admin_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[8192];           /* the main thread reads one at a
                                            time and parses at once */

    sh_unused(h);
    sh_unused(suggested);
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void
sh_admin_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sh_admin_conn_t *c = (sh_admin_conn_t *) s;
    size_t done;

    if (nread < 0) {
        uv_close((uv_handle_t *) s, sh_admin_close_cb);
        return;
    }
    done = http_parser_execute(&c->parser, &sh_admin_settings, buf->base,
                               (size_t) nread);
    if (!c->done && (c->parser.http_errno != HPE_OK
                     || done != (size_t) nread))
    {
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
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *) &c->tcp, sh_admin_alloc_cb,
                  sh_admin_read_cb);
}

int
sh_admin_start(uv_loop_t *loop, const char *host, int port, char *err,
    size_t errlen)
{
    struct addrinfo *res;
    int rc;

    http_parser_settings_init(&sh_admin_settings);
    sh_admin_settings.on_url = sh_admin_on_url;
    sh_admin_settings.on_body = sh_admin_on_body;
    sh_admin_settings.on_message_complete = sh_admin_on_complete;
    if (sh_resolve(host, port, 1, &res, err, errlen) != SH_OK) {
        return SH_ERROR;
    }
    uv_tcp_init(loop, &sh_admin_listener);
    rc = uv_tcp_bind(&sh_admin_listener, res->ai_addr, 0);
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
    sh_log_info("admin endpoint listening on %s:%d", host, port);
    return SH_OK;
}

void
sh_admin_stop(void)
{
    sh_admin_ready = 0;
    if (sh_admin_listening) {
        sh_admin_listening = 0;
        uv_close((uv_handle_t *) &sh_admin_listener, NULL);
    }
}
