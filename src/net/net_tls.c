/*
 * net_tls.c: the TLS transport (OpenSSL): wss:// and https:// over the same
 * conn_t, output queue, handlers and timers as plain TCP, behind conn_type_t.
 *
 * Owns the server SSL_CTX and each TLS connection's SSL object (c->tp).
 * There is one SSL_CTX for the whole process, built on the main thread at
 * start and again by net_tls_reload (SIGHUP); a reload swaps the pointer
 * under net__tls_lock, and every SSL holds its own reference to the context
 * it started with, so a connection keeps its certificate until it closes and
 * the old context is freed with its last connection.
 *
 * Invariants: only the owning worker touches a connection's SSL. Nothing
 * blocks: the socket is non-blocking and OpenSSL's WANT_READ / WANT_WRITE
 * become SORI_EAGAIN plus a flag telling net_conn.c which readiness to wait
 * for (CONN__TP_READ_WANTS_WRITE, CONN__TP_WRITE_WANTS_READ). The handshake
 * runs inside the first reads, under the HTTP layer's handshake deadline
 * (--handshake-timeout-ms), so a peer that stalls mid-handshake is cut like
 * any slow request. Certificate files are read only on the main thread.
 * Writes go out as records of at most 16 KiB: a chunk is always the first
 * min(16 KiB, queued) bytes of the queue, copied together when they span
 * several buffers, so a write retried after WANT_WRITE presents the same
 * bytes at least as long (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows the
 * address to differ); c->tp_hold tells conn_discard_unsent how many front
 * bytes such a pending record holds, so a slow consumer's close frame
 * still follows whole frames.
 *
 * Numbers: TLS 1.2 and 1.3 only; TLS 1.2 with ECDHE and AEAD suites only;
 * no renegotiation, no compression; ALPN http/1.1 (a client offering only
 * other protocols is refused); stateless session tickets, no server-side
 * session cache; SSL_MODE_RELEASE_BUFFERS, so an idle connection holds no
 * record buffers (docs/OPERATIONS.md "TLS" has the measured bytes); one
 * writev call encrypts at most 256 KiB before yielding to other connections.
 */
#include "net/net_internal.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define TLS_CHUNK 16384
#define TLS_WRITEV_MAX (256 * 1024)
/* Mozilla's "intermediate" TLS 1.2 list without the DHE suites (TLS 1.3
 * suites are OpenSSL's defaults, all AEAD). */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static uv_mutex_t net__tls_lock;
static int net__tls_lock_ready;
static SSL_CTX *net__tls_ctx; /* guarded by net__tls_lock */
static atomic_int net__tls_enabled;
static atomic_ulong net__tls_handshakes, net__tls_failures;
static __thread char tls__wbuf[TLS_CHUNK];

/* ---- the transport ---- */

static void tls__handshake_check(conn_t *c, SSL *ssl)
{
    if (!(c->flags & CONN__TLS_READY) && SSL_is_init_finished(ssl)) {
        c->flags |= CONN__TLS_READY;
        atomic_fetch_add_explicit(&net__tls_handshakes, 1, memory_order_relaxed);
    }
}

static void tls__failed(conn_t *c, const char *what, int e)
{
    unsigned long code = ERR_peek_error();
    if (!(c->flags & CONN__TLS_READY)) {
        atomic_fetch_add_explicit(&net__tls_failures, 1, memory_order_relaxed);
        char peer[64], reason[160] = "connection closed";
        conn_peer_str(c, peer, sizeof peer);
        if (code)
            ERR_error_string_n(code, reason, sizeof reason);
        else if (e == SSL_ERROR_SYSCALL && errno)
            snprintf(reason, sizeof reason, "%s", strerror(errno));
        LOG_DEBUG("tls", "handshake with %s failed in %s: %s", peer, what, reason);
    }
    ERR_clear_error();
}

static ssize_t tls_read(conn_t *c, char *buf, size_t len)
{
    SSL *ssl = c->tp;
    size_t got = 0;
    c->flags &= ~CONN__TP_READ_WANTS_WRITE;
    while (got < len) {
        size_t n = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(ssl, buf + got, len - got, &n) > 0) {
            got += n;
            continue;
        }
        int e = SSL_get_error(ssl, 0);
        tls__handshake_check(c, ssl);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->flags |= CONN__TP_READ_WANTS_WRITE;
            break;
        }
        if (got) break; /* hand over what we have; the error repeats next call */
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        if (e == SSL_ERROR_SYSCALL && !ERR_peek_error() && !errno) {
            tls__failed(c, "read", e);
            return 0; /* EOF without close_notify */
        }
        tls__failed(c, "read", e);
        return SORI_EIO;
    }
    return got ? (ssize_t)got : SORI_EAGAIN;
}

static ssize_t tls_writev(conn_t *c, const struct iovec *iov, int iovcnt)
{
    SSL *ssl = c->tp;
    size_t done = 0, off = 0;
    int i = 0;
    c->flags &= ~CONN__TP_WRITE_WANTS_READ;
    c->tp_hold = 0;
    while (i < iovcnt && done < TLS_WRITEV_MAX) {
        /* The next chunk: the first min(TLS_CHUNK, left) bytes from (i, off). */
        const char *p = (const char *)iov[i].iov_base + off;
        size_t n = iov[i].iov_len - off;
        if (n < TLS_CHUNK && i + 1 < iovcnt) {
            size_t have = 0;
            for (int k = i; k < iovcnt && have < TLS_CHUNK; k++) {
                size_t from = k == i ? off : 0;
                size_t take = iov[k].iov_len - from;
                if (take > TLS_CHUNK - have) take = TLS_CHUNK - have;
                memcpy(tls__wbuf + have, (const char *)iov[k].iov_base + from, take);
                have += take;
            }
            p = tls__wbuf;
            n = have;
        } else if (n > TLS_CHUNK) {
            n = TLS_CHUNK;
        }
        size_t wrote = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(ssl, p, n, &wrote) <= 0) {
            int e = SSL_get_error(ssl, 0);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                /* The record holds these n bytes now: they must come again
                 * (conn_discard_unsent keeps them). */
                c->tp_hold = (uint32_t)n;
                if (e == SSL_ERROR_WANT_READ) c->flags |= CONN__TP_WRITE_WANTS_READ;
                break;
            }
            if (done) break;
            tls__failed(c, "write", e);
            return SORI_EIO;
        }
        done += wrote;
        while (wrote && i < iovcnt) { /* advance (i, off) past the bytes written */
            size_t rest = iov[i].iov_len - off;
            if (wrote >= rest) {
                wrote -= rest;
                i++;
                off = 0;
            } else {
                off += wrote;
                wrote = 0;
            }
        }
    }
    tls__handshake_check(c, ssl);
    return done ? (ssize_t)done : SORI_EAGAIN;
}

static void tls_shutdown_write(conn_t *c)
{
    SSL *ssl = c->tp;
    if (SSL_is_init_finished(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl); /* close_notify, best effort: the socket may be full */
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
}

static size_t tls_pending(conn_t *c) { return SSL_has_pending(c->tp) ? 1 : 0; }

static void tls_free(conn_t *c)
{
    SSL_free(c->tp); /* the fd is the connection's: BIO_NOCLOSE */
    c->tp = NULL;
}

const conn_type_t conn_type_tls = {
    .name = "tls",
    .read = tls_read,
    .writev = tls_writev,
    .shutdown_write = tls_shutdown_write,
    .pending = tls_pending,
    .free = tls_free,
};

/* ---- the context ---- */

static int tls__alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 8 && !memcmp(in + i + 1, "http/1.1", 8)) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 §3.2: no_application_protocol */
}

static void tls__err(char *err, size_t errlen, const char *what, const char *path)
{
    char reason[200] = "unknown error";
    unsigned long code = ERR_peek_last_error();
    if (code) ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: %s", what, path, reason);
}

static SSL_CTX *tls__ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls__err(err, errlen, "tls:", "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, tls__alpn_select, NULL);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        tls__err(err, errlen, "tls:", "cipher list");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls__err(err, errlen, "--tls-cert", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen, "--tls-key %s does not match the certificate in --tls-cert %s", key, cert);
        } else {
            tls__err(err, errlen, "--tls-key", key);
        }
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Installs ctx (NULL: none) as the context of new connections and drops the
 * process's reference to the old one (its connections keep theirs). */
static void tls__swap(SSL_CTX *ctx)
{
    uv_mutex_lock(&net__tls_lock);
    SSL_CTX *old = net__tls_ctx;
    net__tls_ctx = ctx;
    uv_mutex_unlock(&net__tls_lock);
    SSL_CTX_free(old);
    atomic_store(&net__tls_enabled, ctx != NULL);
}

static double tls__handshakes_read(void) { return (double)atomic_load(&net__tls_handshakes); }
static double tls__failures_read(void) { return (double)atomic_load(&net__tls_failures); }

int net_tls_init(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!cert || !*cert || !key || !*key) {
        snprintf(err, errlen, "TLS needs both --tls-cert and --tls-key");
        return SORI_EINVAL;
    }
    SSL_CTX *ctx = tls__ctx_new(cert, key, err, errlen);
    if (!ctx) return SORI_EINVAL;
    if (!net__tls_lock_ready) {
        uv_mutex_init(&net__tls_lock);
        net__tls_lock_ready = 1;
        metrics_counter_fn("sori_tls_handshakes_total", "TLS handshakes completed.", tls__handshakes_read);
        metrics_counter_fn("sori_tls_handshake_failures_total",
                           "TLS connections that failed or closed before the handshake completed.",
                           tls__failures_read);
    }
    tls__swap(ctx);
    return 0;
}

int net_tls_reload(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!atomic_load(&net__tls_enabled)) {
        snprintf(err, errlen, "TLS is not on (it is turned on at start only)");
        return SORI_EINVAL;
    }
    return net_tls_init(cert, key, err, errlen);
}

int net_tls_on(void) { return atomic_load_explicit(&net__tls_enabled, memory_order_relaxed); }

void net_tls_free(void)
{
    if (net__tls_lock_ready) tls__swap(NULL);
}

int net__tls_attach(conn_t *c)
{
    uv_mutex_lock(&net__tls_lock);
    SSL_CTX *ctx = net__tls_ctx;
    if (ctx) SSL_CTX_up_ref(ctx);
    uv_mutex_unlock(&net__tls_lock);
    if (!ctx) return SORI_ECLOSED;
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (!ssl) {
        ERR_clear_error();
        return SORI_ENOMEM;
    }
    if (SSL_set_fd(ssl, c->fd) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return SORI_ENOMEM;
    }
    SSL_set_accept_state(ssl);
    c->tp = ssl;
    c->type = &conn_type_tls;
    return 0;
}
