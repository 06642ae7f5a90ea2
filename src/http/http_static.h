/*
 * http_static.h: the browser client's files, served from memory.
 *
 * The web directory is read once at startup (files under 8 MiB, 64 MiB in
 * all) into refcounted buffers, so a request never touches the disk from a
 * worker loop. Lookups are exact matches on the decoded path: a request for
 * a path that was not loaded, including any "../" trick, is simply not found.
 */
#ifndef SORI_HTTP_STATIC_H
#define SORI_HTTP_STATIC_H

#include <stddef.h>

#include "http/http_server.h"

/* Loads every regular file under dir. 0, or SORI_EIO with a sentence in err. */
int http_static_load(const char *dir, char *err, size_t errlen);
/* Frees the table (at exit). */
void http_static_free(void);
/* Serves GET/HEAD for r from the table: 200, 304 on a matching If-None-Match,
 * 404, 405, or 400 for a malformed path. */
void http_static_handle(http_req_t *r);

#endif
