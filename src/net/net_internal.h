/*
 * net_internal.h: what net_conn.c and net_worker.c share, nobody else.
 */
#ifndef SORI_NET_INTERNAL_H
#define SORI_NET_INTERNAL_H

#include "net/net.h"

#include <sys/socket.h>

/* Flags private to net/. */
enum {
    CONN__CLOSE_NOW = 1u << 16,     /* free at the next flush hook */
    CONN__PENDING_INPUT = 1u << 17, /* buffered input to re-offer (after resume) */
    CONN__LINGER_EOF = 1u << 18,
    CONN__TP_READ_WANTS_WRITE = 1u << 19, /* the transport's read waits for POLLOUT */
    CONN__TP_WRITE_WANTS_READ = 1u << 20, /* the transport's write waits for POLLIN */
    CONN__READ_AGAIN = 1u << 21,          /* input buffered in the transport: read at the flush hook */
    CONN__TLS_READY = 1u << 22,           /* the TLS handshake completed */
    CONN__IP_COUNTED = 1u << 23,    /* counted in the per-address table */
};

typedef struct net_task {
    struct net_task *next;
    void (*fn)(net_worker_t *w, void *arg);
    void *arg;
} net_task_t;

extern net_config_t net__cfg;

conn_t *net__conn_new(net_worker_t *w, int fd, const struct sockaddr_storage *ss);
/* Runs on the flush hook: writes, frees closed connections. */
void net__conn_service(conn_t *c);
void net__wheel_link(net_worker_t *w, conn_t *c);
void net__wheel_unlink(net_worker_t *w, conn_t *c);
void net__add_flush(conn_t *c);
void net__conn_count_add(int delta);
/* Makes c a TLS connection with the current context (net_tls.c). 0, or an
 * error (the caller closes the connection). */
int net__tls_attach(conn_t *c);
/* Uncounts a CONN__IP_COUNTED connection from the per-address table. */
void net__ip_release(conn_t *c);

#endif
