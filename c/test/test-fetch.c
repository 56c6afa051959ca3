/*
 * test-fetch.c -- tests of the HTTPS fetch (c/sh_fetch.c) on a real loop
 * and a real TLS server (a thread of this test with a certificate made
 * here for 127.0.0.1).
 *
 * A fetch queued on the thread pool settles its batch exactly once and
 * gives the server's response; without the CA it is refused (the system's
 * store does not know our certificate); a closed port is ECONNREFUSED; a
 * fetch freed while queued is freed by its after-work callback; a bad
 * configuration fails at once with no callback.  Each loop ends with every
 * request done and uv_loop_close() == 0.  t/unit/222-aws_kms_spec.lua and
 * t/integration/088 drive it from Lua.
 *
 * The last line is "N passed, M failed"; the exit status is non-zero on
 * any failure.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sh_buf.h"
#include "sh_conn.h"

#include "check.h"

#define RESPONSE "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

static SSL_CTX *server_ctx;
static int listen_fd;
static int listen_port;
static char ca_path[] = "/tmp/test-fetch-ca-XXXXXX";

/* a self-signed certificate for IP 127.0.0.1 and its key, the server's;
 * the certificate also written to ca_path for the client */
static void
make_server(void)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    X509_EXTENSION *ext;
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    FILE *f;
    int fd;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *) "test-fetch", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
                              "IP:127.0.0.1");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints,
                              "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, pkey, EVP_sha256());

    fd = mkstemp(ca_path);
    f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);

    server_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(server_ctx, x);
    SSL_CTX_use_PrivateKey(server_ctx, pkey);
    X509_free(x);
    EVP_PKEY_free(pkey);

    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(listen_fd, 16) != 0
        || getsockname(listen_fd, (struct sockaddr *) &sa, &len) != 0) {
        printf("not ok - cannot listen\n");
        exit(1);
    }
    listen_port = ntohs(sa.sin_port);
}

/* serve n connections: read a request's head, write RESPONSE (a client
 * that refuses the certificate just goes) */
static void
serve(void *arg)
{
    int n = *(int *) arg;
    char buf[4096];

    while (n-- > 0) {
        int fd = accept(listen_fd, NULL, NULL);
        SSL *ssl = SSL_new(server_ctx);
        size_t got = 0;

        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            while (got < sizeof(buf) - 1) {
                int rc = SSL_read(ssl, buf + got,
                                  (int) (sizeof(buf) - 1 - got));

                if (rc <= 0) {
                    break;
                }
                got += (size_t) rc;
                buf[got] = '\0';
                if (strstr(buf, "\r\n\r\n") != NULL) {
                    break;
                }
            }
            SSL_write(ssl, RESPONSE, (int) strlen(RESPONSE));
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
    }
}

static sh_fetch_t *
new_fetch(int port, const char *ca)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n";
    sh_fetch_conf_t conf;
    sh_fetch_t *f = NULL;
    const char *err = NULL;

    memset(&conf, 0, sizeof(conf));
    conf.host = "127.0.0.1";
    conf.port = port;
    conf.ca_file = ca;
    conf.request = (const uint8_t *) req;
    conf.request_len = sizeof(req) - 1;
    conf.timeout_ms = 5000;
    CHECK(sh_ffi_fetch_new(&conf, &f, &err) == SH_OK, "new: %s", err);
    return f;
}

/* a batch as a run awaiting it once holds it: the settler's reference,
 * one settlement owed, no run to wake */
static sh_batch_t *
awaited_batch(void)
{
    sh_batch_t *b = sh_batch_alloc(0);

    sh_batch_ref(b);
    b->waiting = 1;
    b->run = NULL;
    return b;
}

static void
test_bad_conf(void)
{
    sh_fetch_conf_t conf;
    sh_fetch_t *f = NULL;
    const char *err = NULL;

    memset(&conf, 0, sizeof(conf));
    conf.host = "127.0.0.1";
    conf.port = 0;
    CHECK(sh_ffi_fetch_new(&conf, &f, &err) == SH_ERROR && err != NULL
          && f == NULL, "a fetch without a port or request is refused");
}

static void
test_queued(void)
{
    sh_worker_t w;
    sh_run_t r;
    sh_batch_t *b, *b2;
    sh_fetch_t *f, *refused, *dropped;
    const uint8_t *resp = NULL;
    size_t len = 0;
    const char *err = NULL;
    uv_thread_t t;
    int n = 2;

    memset(&w, 0, sizeof(w));
    memset(&r, 0, sizeof(r));
    uv_loop_init(&w.loop);
    r.w = &w;
    uv_thread_create(&t, serve, &n);

    /* trusted: the response, one settlement */
    b = awaited_batch();
    f = new_fetch(listen_port, ca_path);
    CHECK(sh_ffi_fetch_queue(f, &r, b, &err) == SH_OK, "queue: %s", err);
    CHECK(sh_ffi_fetch_result(f, &resp, &len, &err) == SH_AGAIN,
          "not done before the loop runs");
    CHECK(sh_ffi_fetch_queue(f, &r, b, &err) == SH_ERROR,
          "a fetch is queued once");

    /* a closed port, and one freed while on the pool (it still connects
     * to the server: the server's second connection) */
    b2 = awaited_batch();
    refused = new_fetch(1, NULL);
    CHECK(sh_ffi_fetch_queue(refused, &r, b2, &err) == SH_OK, "queue");
    dropped = new_fetch(listen_port, ca_path);
    CHECK(sh_ffi_fetch_queue(dropped, &r, b2, &err) == SH_OK, "queue");
    b2->waiting = 2;
    sh_ffi_fetch_free(dropped);          /* freed by its after-work */

    uv_run(&w.loop, UV_RUN_DEFAULT);
    CHECK(b->waiting == 0 && b->refs == 1, "settled once, references "
          "given back (waiting %u, refs %u)", b->waiting, b->refs);
    CHECK(b2->waiting == 0 && b2->refs == 1, "both settled (waiting %u, "
          "refs %u)", b2->waiting, b2->refs);
    CHECK(sh_ffi_fetch_result(f, &resp, &len, &err) == SH_OK,
          "trusted: %s", err);
    CHECK(len == strlen(RESPONSE) && memcmp(resp, RESPONSE, len) == 0,
          "the server's response");
    CHECK(sh_ffi_fetch_result(refused, &resp, &len, &err) == SH_ERROR
          && strncmp(err, "ECONNREFUSED: connecting to 127.0.0.1:1", 39)
             == 0, "closed port: %s", err);
    CHECK(uv_loop_close(&w.loop) == 0, "every request done");
    sh_ffi_fetch_free(f);
    sh_ffi_fetch_free(refused);
    sh_batch_unref(b);
    sh_batch_unref(b2);
    uv_thread_join(&t);
}

static void
test_untrusted(void)
{
    sh_fetch_t *f;
    const uint8_t *resp = NULL;
    size_t len = 0;
    const char *err = NULL;
    uv_thread_t t;
    int n = 1;

    uv_thread_create(&t, serve, &n);
    f = new_fetch(listen_port, NULL);        /* the system's store */
    CHECK(sh_ffi_fetch_run(f) == SH_ERROR, "untrusted certificate refused");
    CHECK(sh_ffi_fetch_result(f, &resp, &len, &err) == SH_ERROR
          && strstr(err, "is not trusted") != NULL, "why: %s", err);
    sh_ffi_fetch_free(f);
    uv_thread_join(&t);
}

int
main(void)
{
    make_server();
    test_bad_conf();
    test_queued();
    test_untrusted();
    close(listen_fd);
    SSL_CTX_free(server_ctx);
    unlink(ca_path);
    sh_buf_pools_free();
    return CHECK_DONE();
}
