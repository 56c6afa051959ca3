/*
 * sh_fetch.c -- one HTTPS request and its response, for Lua code that
 * talks to a cloud API (the aws_kms key manager).
 *
 * A fetch is a blocking OpenSSL client: resolve the host, connect with a
 * timeout, TLS with the server's certificate verified (against a CA file
 * or the system's store) and its name checked (SNI and host name, or an IP
 * address), write the request Lua made, read the response until the
 * connection closes or the Content-Length is in.  It runs either on the
 * calling thread (sh_ffi_fetch_run: tools, worker start) or on libuv's
 * thread pool (sh_ffi_fetch_queue): the worker's loop goes on serving,
 * and when the request is done the after-work callback, on the loop
 * thread, settles the batch the waiting run awaits (sh_ffi_run_await),
 * which wakes it.  The response is then read with sh_ffi_fetch_result.
 *
 * Lifetime: Lua owns a fetch (ffi.gc calls sh_ffi_fetch_free); freeing
 * one still on the thread pool only marks it, and the after-work callback
 * frees it (a client that went away while its key was fetched).
 *
 * Not supported: HTTP proxies, keep-alive (every fetch is a new TLS
 * connection: key managers call rarely), chunked responses (we send
 * "Connection: close" and read to the end), client certificates.
 */
#define _GNU_SOURCE              /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sh_buf.h"
#include "sh_conn.h"

struct sh_fetch_s {
    uv_work_t work;          /* the thread-pool request */
    char *host;              /* connect to, and verify the certificate for */
    int32_t port;            /* TCP port */
    char *ca_file;           /* CA bundle (PEM), NULL: the system's store */
    uint8_t *req;            /* the request bytes */
    size_t req_len;          /* their length */
    uint32_t timeout_ms;     /* connect, and each read or write */
    size_t max_response;     /* give up past this many response bytes */
    uint8_t *resp;           /* response bytes read */
    size_t resp_len;         /* how many */
    size_t resp_cap;         /* allocated */
    int status;              /* SH_AGAIN running/queued, SH_OK, SH_ERROR */
    int queued;              /* on the thread pool (not yet after-work) */
    int abandoned;           /* freed by Lua while queued */
    sh_batch_t *batch;       /* settled once when done (queued fetches) */
    char err[256];           /* why it failed */
};

/* --- the blocking client ------------------------------------------------- */

static void
sh_fetch_fail(sh_fetch_t *f, const char *fmt, const char *a, const char *b)
{
    snprintf(f->err, sizeof(f->err), fmt, a, b);
    f->status = SH_ERROR;
}

static const char *
sh_fetch_errno_name(int e)
{
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNRESET: return "ECONNRESET";
    case EAGAIN: return "ETIMEDOUT";     /* SO_RCVTIMEO expired */
    default: return "EIO";
    }
}

/*
 * A connected blocking socket to f's host and port within timeout_ms per
 * address tried, its reads and writes bounded by the same timeout; or -1
 * with f->err set.
 */
static int
sh_fetch_connect(sh_fetch_t *f)
{
    struct addrinfo hints, *res, *ai;
    struct timeval tv;
    char port[16];
    int fd = -1, rc, e = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", (int) f->port);
    rc = getaddrinfo(f->host, port, &hints, &res);
    if (rc != 0) {
        sh_fetch_fail(f, "cannot resolve %s: %s", f->host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct pollfd pfd;
        socklen_t elen = sizeof(e);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC
                    | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            e = 0;
        } else if (errno != EINPROGRESS) {
            e = errno;
        } else {
            pfd.fd = fd;
            pfd.events = POLLOUT;
            rc = poll(&pfd, 1, (int) f->timeout_ms);
            if (rc == 0) {
                e = ETIMEDOUT;
            } else if (rc < 0
                       || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen)
                          != 0) {
                e = errno;
            }
        }
        if (e == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(f->err, sizeof(f->err), "%s: connecting to %s:%d: %s",
                 sh_fetch_errno_name(e), f->host, (int) f->port,
                 e == ETIMEDOUT ? "timed out" : strerror(e));
        f->status = SH_ERROR;
        return -1;
    }
    /* blocking from here, each read and write bounded */
    (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    tv.tv_sec = f->timeout_ms / 1000;
    tv.tv_usec = (f->timeout_ms % 1000) * 1000;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* OpenSSL's first queued error as text, or what */
static const char *
sh_fetch_ssl_error(char *buf, size_t len, const char *what)
{
    unsigned long e = ERR_get_error();

    if (e == 0) {
        return what;
    }
    ERR_error_string_n(e, buf, len);
    return buf;
}

/*
 * Why an SSL call that returned rc failed: a timeout or a socket error in
 * errno's words, else OpenSSL's.
 */
static void
sh_fetch_ssl_fail(sh_fetch_t *f, SSL *ssl, int rc, const char *doing)
{
    char buf[160];
    int e = errno;
    int se = SSL_get_error(ssl, rc);

    if (se == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && e != 0) {
        snprintf(f->err, sizeof(f->err), "%s: %s %s:%d: %s",
                 sh_fetch_errno_name(e), doing, f->host, (int) f->port,
                 (e == EAGAIN || e == EWOULDBLOCK) ? "timed out"
                                                   : strerror(e));
        f->status = SH_ERROR;
        return;
    }
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE) {
        snprintf(f->err, sizeof(f->err), "ETIMEDOUT: %s %s:%d: timed out",
                 doing, f->host, (int) f->port);
        f->status = SH_ERROR;
        return;
    }
    snprintf(f->err, sizeof(f->err), "TLS: %s %s:%d: %s", doing, f->host,
             (int) f->port, sh_fetch_ssl_error(buf, sizeof(buf),
                                               "connection closed"));
    f->status = SH_ERROR;
}

/* whether the response holds its whole body (headers with Content-Length
 * and that many bytes after them) */
static int
sh_fetch_complete(const sh_fetch_t *f)
{
    const char *p = (const char *) f->resp, *end, *h;
    size_t head;
    long clen = -1;

    end = memmem(p, f->resp_len, "\r\n\r\n", 4);
    if (end == NULL) {
        return 0;
    }
    head = (size_t) (end - p) + 4;
    for (h = p; h < end; h++) {
        if ((h == p || h[-1] == '\n')
            && strncasecmp(h, "content-length:", 15) == 0) {
            clen = strtol(h + 15, NULL, 10);
            break;
        }
    }
    return clen >= 0 && f->resp_len >= head + (size_t) clen;
}

static int
sh_fetch_grow(sh_fetch_t *f)
{
    size_t cap = f->resp_cap ? f->resp_cap * 2 : 4096;
    uint8_t *p;

    if (cap > f->max_response + 1) {
        cap = f->max_response + 1;
    }
    p = realloc(f->resp, cap);
    if (p == NULL) {
        return -1;
    }
    f->resp = p;
    f->resp_cap = cap;
    return 0;
}

/*
 * Do the whole request on this thread: f->status ends SH_OK with the
 * response in f->resp, or SH_ERROR with f->err.
 */
static void
sh_fetch_do(sh_fetch_t *f)
{
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    char buf[160];
    size_t done;
    int fd, rc, is_ip;
    unsigned char ipbuf[16];

    ERR_clear_error();
    fd = sh_fetch_connect(f);
    if (fd < 0) {
        return;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        sh_fetch_fail(f, "TLS: %s%s", sh_fetch_ssl_error(buf, sizeof(buf),
                      "SSL_CTX_new failed"), "");
        goto out;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (f->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, f->ca_file, NULL) != 1) {
            sh_fetch_fail(f, "TLS: cannot load CA file %s: %s", f->ca_file,
                          sh_fetch_ssl_error(buf, sizeof(buf), "bad file"));
            goto out;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        sh_fetch_fail(f, "TLS: cannot load the system's CA store: %s%s",
                      sh_fetch_ssl_error(buf, sizeof(buf), "failed"), "");
        goto out;
    }
    ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        sh_fetch_fail(f, "TLS: %s%s", sh_fetch_ssl_error(buf, sizeof(buf),
                      "SSL_new failed"), "");
        goto out;
    }
    is_ip = inet_pton(AF_INET, f->host, ipbuf) == 1
            || inet_pton(AF_INET6, f->host, ipbuf) == 1;
    if (is_ip) {
        rc = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), f->host);
    } else {
        rc = SSL_set_tlsext_host_name(ssl, f->host) == 1
             && SSL_set1_host(ssl, f->host) == 1;
    }
    if (rc != 1) {
        sh_fetch_fail(f, "TLS: cannot verify the name %s%s", f->host, "");
        goto out;
    }
    rc = SSL_connect(ssl);
    if (rc != 1) {
        long v = SSL_get_verify_result(ssl);

        if (v != X509_V_OK) {
            snprintf(f->err, sizeof(f->err), "TLS: the certificate of "
                     "%s:%d is not trusted: %s", f->host, (int) f->port,
                     X509_verify_cert_error_string(v));
            f->status = SH_ERROR;
        } else {
            sh_fetch_ssl_fail(f, ssl, rc, "handshake with");
        }
        goto out;
    }
    for (done = 0; done < f->req_len; done += (size_t) rc) {
        errno = 0;
        rc = SSL_write(ssl, f->req + done, (int) (f->req_len - done));
        if (rc <= 0) {
            sh_fetch_ssl_fail(f, ssl, rc, "writing to");
            goto out;
        }
    }
    for (;;) {
        if (f->resp_len == f->resp_cap && sh_fetch_grow(f) != 0) {
            sh_fetch_fail(f, "ENOMEM: reading the response of %s%s",
                          f->host, "");
            goto out;
        }
        if (f->resp_len > f->max_response) {
            sh_fetch_fail(f, "the response of %s is larger than the "
                          "limit%s", f->host, "");
            goto out;
        }
        errno = 0;
        rc = SSL_read(ssl, f->resp + f->resp_len,
                      (int) (f->resp_cap - f->resp_len));
        if (rc <= 0) {
            int se = SSL_get_error(ssl, rc);

            if (se == SSL_ERROR_ZERO_RETURN || (f->resp_len > 0
                && se == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                && errno == 0)) {
                break;                   /* the server closed: all read */
            }
            sh_fetch_ssl_fail(f, ssl, rc, "reading from");
            goto out;
        }
        f->resp_len += (size_t) rc;
        if (sh_fetch_complete(f)) {
            break;
        }
    }
    if (f->resp_len == 0) {
        sh_fetch_fail(f, "ECONNRESET: %s closed the connection without a "
                      "response%s", f->host, "");
        goto out;
    }
    f->status = SH_OK;
out:
    if (ssl != NULL) {
        if (f->status == SH_OK) {
            (void) SSL_shutdown(ssl);
        }
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    close(fd);
    ERR_clear_error();
}

/* --- the FFI ------------------------------------------------------------- */

static char *
sh_fetch_strdup(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

int
sh_ffi_fetch_new(const sh_fetch_conf_t *conf, sh_fetch_t **out,
    const char **err)
{
    sh_fetch_t *f;

    if (conf->host == NULL || conf->port <= 0 || conf->port > 65535
        || conf->request == NULL || conf->request_len == 0) {
        *err = "a fetch needs a host, a port and a request";
        return SH_ERROR;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL) {
        *err = "out of memory";
        return SH_ERROR;
    }
    f->host = sh_fetch_strdup(conf->host);
    f->ca_file = sh_fetch_strdup(conf->ca_file);
    f->req = malloc(conf->request_len);
    if (f->host == NULL || f->req == NULL
        || (conf->ca_file != NULL && f->ca_file == NULL)) {
        sh_ffi_fetch_free(f);
        *err = "out of memory";
        return SH_ERROR;
    }
    memcpy(f->req, conf->request, conf->request_len);
    f->req_len = conf->request_len;
    f->port = conf->port;
    f->timeout_ms = conf->timeout_ms ? conf->timeout_ms : 10000;
    f->max_response = conf->max_response ? conf->max_response : 1048576;
    f->status = SH_AGAIN;
    *out = f;
    return SH_OK;
}

int
sh_ffi_fetch_run(sh_fetch_t *f)
{
    if (f->queued || f->status != SH_AGAIN) {
        return SH_ERROR;
    }
    sh_fetch_do(f);
    return f->status;
}

static void
sh_fetch_work_cb(uv_work_t *req)
{
    sh_fetch_do((sh_fetch_t *) req->data);
}

static void
sh_fetch_after_cb(uv_work_t *req, int status)
{
    sh_fetch_t *f = req->data;
    sh_batch_t *b = f->batch;

    f->queued = 0;
    f->batch = NULL;
    if (status != 0 && f->status == SH_AGAIN) {
        snprintf(f->err, sizeof(f->err), "%s: the fetch was cancelled",
                 uv_err_name(status));
        f->status = SH_ERROR;
    }
    if (b != NULL) {
        sh_ffi_batch_settle(b);
        sh_batch_unref(b);
    }
    if (f->abandoned) {
        f->abandoned = 0;
        sh_ffi_fetch_free(f);
    }
}

int
sh_ffi_fetch_queue(sh_fetch_t *f, sh_run_t *r, sh_batch_t *b,
    const char **err)
{
    int rc;

    if (f->queued || f->status != SH_AGAIN) {
        *err = "this fetch was started already";
        return SH_ERROR;
    }
    f->work.data = f;
    rc = uv_queue_work(&r->w->loop, &f->work, sh_fetch_work_cb,
                       sh_fetch_after_cb);
    if (rc != 0) {
        *err = "uv_queue_work failed";
        return SH_ERROR;
    }
    f->queued = 1;
    f->batch = sh_batch_ref(b);
    return SH_OK;
}

int
sh_ffi_fetch_result(sh_fetch_t *f, const uint8_t **resp, size_t *len,
    const char **err)
{
    if (f->queued || f->status == SH_AGAIN) {
        *err = "the fetch is not done";
        return SH_AGAIN;
    }
    if (f->status != SH_OK) {
        *err = f->err;
        return SH_ERROR;
    }
    *resp = f->resp;
    *len = f->resp_len;
    return SH_OK;
}

void
sh_ffi_fetch_free(sh_fetch_t *f)
{
    if (f == NULL) {
        return;
    }
    if (f->queued) {
        f->abandoned = 1;                /* sh_fetch_after_cb frees it */
        return;
    }
    if (f->req != NULL) {
        /* the request may carry a data key: leave none in freed memory */
        OPENSSL_cleanse(f->req, f->req_len);
    }
    if (f->resp != NULL) {
        /* ... and the response a data key */
        OPENSSL_cleanse(f->resp, f->resp_cap);
    }
    free(f->req);
    free(f->resp);
    free(f->host);
    free(f->ca_file);
    free(f);
}
