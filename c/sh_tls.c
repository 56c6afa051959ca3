/*
 * sh_tls.c -- TLS contexts (one per source or sink settings, made by Lua
 * when a configuration loads) and TLS on a connection (see sh_tls.h).
 *
 * A context is an SSL_CTX with what a connection needs besides it: which
 * side it is, and for a sink whether and what to verify.  It is counted:
 * the configuration's Lua object, each listener and each backend pool hold
 * a reference, and each SSL holds the SSL_CTX; a reload that loads new
 * certificates makes a new context, new connections use it and open ones
 * keep theirs.
 */
#include <arpa/inet.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "sh_tls.h"
#include "sh_worker.h"

#define SH_TLS_READ_SPACE (64 * 1024)
#define SH_TLS_RECORD 16384          /* plaintext per record */

struct sh_tls_ctx_s {
    SSL_CTX *ctx;
    int server;                      /* a source's */
    int verify;                      /* sinks: verify the server */
    uint32_t refs;                   /* atomically counted: workers share
                                        nothing, but Lua's GC may run the
                                        last unref on any of them */
    char server_name[256];           /* sinks: name to verify, or "" */
};

struct sh_tls_s {
    SSL *ssl;
    BIO *rbio;                       /* ciphertext in */
    BIO *wbio;                       /* ciphertext out */
    sh_tls_ctx_t *ctx;
    int done;                        /* handshake complete */
    char *subject;                   /* peer's, once known */
    char err[256];                   /* last failure */
};

static __thread uint8_t *sh_tls_rspace;  /* socket reads land here */
static __thread uint8_t *sh_tls_plain;   /* small frames gathered */

/* --- contexts ------------------------------------------------------------ */

/* OpenSSL's error queue as one line (emptied), or dflt when empty. */
static void
sh_tls_errors(char *out, size_t cap, const char *dflt)
{
    unsigned long e;
    size_t n = 0;

    out[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        char one[200];

        ERR_error_string_n(e, one, sizeof(one));
        if (n < cap) {
            n += (size_t) snprintf(out + n, cap - n, "%s%s", n ? "; " : "",
                                   one);
        }
    }
    if (out[0] == '\0') {
        snprintf(out, cap, "%s", dflt);
    }
}

static int
sh_tls_version_of(const char *v)
{
    if (v == NULL || strcmp(v, "1.2") == 0) {
        return TLS1_2_VERSION;
    }
    if (strcmp(v, "1.3") == 0) {
        return TLS1_3_VERSION;
    }
    return 0;
}

static int
sh_tls_ctx_fail(SSL_CTX *ctx, char *err, size_t cap, const char *what,
    const char *file)
{
    char why[400];

    sh_tls_errors(why, sizeof(why), "unknown error");
    if (file != NULL) {
        snprintf(err, cap, "%s: cannot use \"%s\": %s", what, file, why);
    } else {
        snprintf(err, cap, "%s: %s", what, why);
    }
    SSL_CTX_free(ctx);
    return SH_ERROR;
}

int
sh_ffi_tls_ctx_new(const sh_tls_conf_t *conf, sh_tls_ctx_t **out, char *err,
    size_t cap)
{
    SSL_CTX *ctx;
    sh_tls_ctx_t *t;
    int minv = sh_tls_version_of(conf->min_version);

    *out = NULL;
    ERR_clear_error();
    if (minv == 0) {
        snprintf(err, cap, "min_version: \"%s\" is not \"1.2\" or \"1.3\"",
                 conf->min_version);
        return SH_ERROR;
    }
    ctx = SSL_CTX_new(conf->server ? TLS_server_method()
                                   : TLS_client_method());
    if (ctx == NULL) {
        return sh_tls_ctx_fail(NULL, err, cap, "tls", NULL);
    }
    SSL_CTX_set_min_proto_version(ctx, minv);
    /* our own buffers hold what is unwritten: OpenSSL may let go of its
     * record buffers between records */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (conf->ciphers != NULL
        && SSL_CTX_set_cipher_list(ctx, conf->ciphers) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "ciphers", NULL);
    }
    if (conf->ciphersuites != NULL
        && SSL_CTX_set_ciphersuites(ctx, conf->ciphersuites) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "ciphersuites", NULL);
    }
    if (conf->cert != NULL
        && SSL_CTX_use_certificate_chain_file(ctx, conf->cert) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "cert", conf->cert);
    }
    if (conf->key != NULL
        && SSL_CTX_use_PrivateKey_file(ctx, conf->key, SSL_FILETYPE_PEM) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "key", conf->key);
    }
    if (conf->cert != NULL && conf->key != NULL
        && SSL_CTX_check_private_key(ctx) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "key", conf->key);
    }
    if (conf->ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, conf->ca, NULL) != 1) {
            return sh_tls_ctx_fail(ctx, err, cap, "ca", conf->ca);
        }
    } else if (!conf->server && conf->verify
               && SSL_CTX_set_default_verify_paths(ctx) != 1)
    {
        return sh_tls_ctx_fail(ctx, err, cap, "ca", NULL);
    }
    if (conf->server) {
        if (conf->cert == NULL || conf->key == NULL) {
            snprintf(err, cap, "cert: a source needs cert and key");
            SSL_CTX_free(ctx);
            return SH_ERROR;
        }
        /* resumed sessions of a verifying context need an id context */
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *) "shotover",
                                       8);
        if (conf->ca != NULL && conf->verify > 0) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(conf->ca);

            if (names != NULL) {
                SSL_CTX_set_client_CA_list(ctx, names);
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER
                               | (conf->verify > 1
                                  ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                               NULL);
        }
    } else if (conf->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    t = sh_calloc(1, sizeof(*t));
    t->ctx = ctx;
    t->server = conf->server ? 1 : 0;
    t->verify = conf->verify ? 1 : 0;
    t->refs = 1;
    if (conf->server_name != NULL) {
        snprintf(t->server_name, sizeof(t->server_name), "%s",
                 conf->server_name);
    }
    *out = t;
    return SH_OK;
}

void
sh_tls_ctx_ref(sh_tls_ctx_t *ctx)
{
    if (ctx != NULL) {
        __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
    }
}

void
sh_tls_ctx_unref(sh_tls_ctx_t *ctx)
{
    if (ctx != NULL && __atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL)
                       == 0)
    {
        SSL_CTX_free(ctx->ctx);
        sh_free(ctx);
    }
}

void
sh_ffi_tls_ctx_unref(sh_tls_ctx_t *ctx)
{
    sh_tls_ctx_unref(ctx);
}

/* --- a connection -------------------------------------------------------- */

static sh_tls_t *
sh_tls_new(sh_tls_ctx_t *ctx)
{
    sh_tls_t *t = sh_calloc(1, sizeof(*t));

    t->ssl = SSL_new(ctx->ctx);
    if (t->ssl == NULL) {
        sh_free(t);
        return NULL;
    }
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    /* an empty memory BIO says "retry", not EOF */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    t->ctx = ctx;
    sh_tls_ctx_ref(ctx);
    return t;
}

sh_tls_t *
sh_tls_new_server(sh_tls_ctx_t *ctx)
{
    sh_tls_t *t = sh_tls_new(ctx);

    if (t != NULL) {
        SSL_set_accept_state(t->ssl);
    }
    return t;
}

sh_tls_t *
sh_tls_new_client(sh_tls_ctx_t *ctx, const char *host)
{
    sh_tls_t *t = sh_tls_new(ctx);
    const char *name = ctx->server_name[0] ? ctx->server_name : host;
    unsigned char addr[16];
    int is_ip;

    if (t == NULL) {
        return NULL;
    }
    SSL_set_connect_state(t->ssl);
    is_ip = inet_pton(AF_INET, name, addr) == 1
            || inet_pton(AF_INET6, name, addr) == 1;
    if (!is_ip) {
        SSL_set_tlsext_host_name(t->ssl, name);   /* SNI: names only */
    }
    if (ctx->verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);

        if (is_ip) {
            X509_VERIFY_PARAM_set1_ip_asc(param, name);
        } else {
            SSL_set_hostflags(t->ssl,
                              X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(t->ssl, name);
        }
    }
    return t;
}

void
sh_tls_free(sh_tls_t *t)
{
    if (t == NULL) {
        return;
    }
    SSL_free(t->ssl);                    /* frees both BIOs */
    sh_tls_ctx_unref(t->ctx);
    sh_free(t->subject);
    sh_free(t);
}

void
sh_tls_buffers_free(void)
{
    sh_free(sh_tls_rspace);
    sh_free(sh_tls_plain);
    sh_tls_rspace = NULL;
    sh_tls_plain = NULL;
}

void
sh_tls_read_space(uv_buf_t *buf)
{
    if (sh_tls_rspace == NULL) {
        sh_tls_rspace = sh_alloc(SH_TLS_READ_SPACE);
    }
    buf->base = (char *) sh_tls_rspace;
    buf->len = SH_TLS_READ_SPACE;
}

void
sh_tls_feed(sh_tls_t *t, const void *p, size_t n)
{
    BIO_write(t->rbio, p, (int) n);
}

/* Why OpenSSL failed: its error queue, the certificate check's verdict
 * when it failed, or a peer that closed. */
static void
sh_tls_failed(sh_tls_t *t, int rc)
{
    int e = SSL_get_error(t->ssl, rc);
    long vr = SSL_get_verify_result(t->ssl);
    char why[200];

    sh_tls_errors(why, sizeof(why),
                  e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
                  ? "the peer closed the connection" : "unknown error");
    if (vr != X509_V_OK) {
        snprintf(t->err, sizeof(t->err), "certificate verify failed: %s (%s)",
                 X509_verify_cert_error_string(vr), why);
    } else {
        snprintf(t->err, sizeof(t->err), "%s", why);
    }
}

static void
sh_tls_keep_subject(sh_tls_t *t)
{
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    BIO *b;
    char *p;
    long n;

    if (peer == NULL) {
        return;
    }
    b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253);
    n = BIO_get_mem_data(b, &p);
    t->subject = sh_alloc((size_t) n + 1);
    memcpy(t->subject, p, (size_t) n);
    t->subject[n] = '\0';
    BIO_free(b);
    X509_free(peer);
}

int
sh_tls_handshake(sh_tls_t *t)
{
    int rc, e;

    if (t->done) {
        return SH_TLS_DONE;
    }
    ERR_clear_error();
    rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->done = 1;
        sh_tls_keep_subject(t);
        return SH_TLS_DONE;
    }
    e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return SH_TLS_MORE;
    }
    sh_tls_failed(t, rc);
    return SH_TLS_FAILED;
}

int
sh_tls_has_input(const sh_tls_t *t)
{
    return BIO_ctrl_pending(t->rbio) > 0 || SSL_has_pending(t->ssl);
}

int
sh_tls_handshake_done(const sh_tls_t *t)
{
    return t->done;
}

ssize_t
sh_tls_read(sh_tls_t *t, uint8_t *p, size_t n)
{
    size_t got = 0;
    int rc, e;

    ERR_clear_error();
    rc = SSL_read_ex(t->ssl, p, n, &got);
    if (rc == 1) {
        return (ssize_t) got;
    }
    e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        return SH_TLS_EOF;
    }
    sh_tls_failed(t, 0);
    return SH_ERROR;
}

int
sh_tls_write(sh_tls_t *t, const void *p, size_t n)
{
    size_t done;

    if (n == 0) {
        return SH_OK;
    }
    ERR_clear_error();
    /* memory BIOs grow: a write is whole or fails */
    if (SSL_write_ex(t->ssl, p, n, &done) != 1 || done != n) {
        sh_tls_failed(t, 0);
        return SH_ERROR;
    }
    return SH_OK;
}

/*
 * Small frames are gathered into records of up to 16 KiB (a record per
 * reply would cost its header, tag and cipher set-up each), big ones are
 * encrypted where they lie.
 */
int
sh_tls_write_frames(sh_tls_t *t, sh_frame_t *const *frames, uint32_t n)
{
    size_t have = 0;
    uint32_t i;

    if (sh_tls_plain == NULL) {
        sh_tls_plain = sh_alloc(SH_TLS_RECORD);
    }
    for (i = 0; i < n; i++) {
        const sh_frame_t *f = frames[i];

        if (f == NULL || (f->flags & SH_FRAME_NOREPLY) || f->len == 0) {
            continue;
        }
        if (have + f->len > SH_TLS_RECORD) {
            if (sh_tls_write(t, sh_tls_plain, have) != SH_OK) {
                return SH_ERROR;
            }
            have = 0;
        }
        if (f->len >= SH_TLS_RECORD / 2) {
            if (sh_tls_write(t, f->data, f->len) != SH_OK) {
                return SH_ERROR;
            }
            continue;
        }
        memcpy(sh_tls_plain + have, f->data, f->len);
        have += f->len;
    }
    return sh_tls_write(t, sh_tls_plain, have);
}

void
sh_tls_shutdown(sh_tls_t *t)
{
    if (t->done) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
    }
}

int
sh_tls_flush(sh_tls_t *t, uv_stream_t *s, uv_write_cb cb, void *data,
    int side)
{
    char *p;
    long n = BIO_get_mem_data(t->wbio, &p);
    int rc;

    if (n <= 0) {
        return 0;
    }
    rc = sh_write_buf(s, p, (size_t) n, side, cb, data);
    (void) BIO_reset(t->wbio);
    return rc;
}

const char *
sh_tls_error(const sh_tls_t *t)
{
    return t->err;
}

const char *
sh_tls_subject(const sh_tls_t *t)
{
    return t->subject;
}

const char *
sh_tls_version(const sh_tls_t *t)
{
    return SSL_get_version(t->ssl);
}
