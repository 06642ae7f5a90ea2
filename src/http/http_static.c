/*
 * http_static.c: the in-memory table of the browser client's files.
 *
 * Built once by http_static_load before the workers start and read-only
 * afterwards, so workers share it without locks. Each file is one sbuf_t
 * (sent without a copy), its content type from the extension, and a strong
 * ETag from a 64-bit FNV-1a hash of the bytes. Responses carry
 * `Cache-Control: no-cache` (always revalidate: there is no build step to
 * version file names) and answer If-None-Match with 304. "/" serves
 * /index.html. Numbers: files up to 8 MiB, 64 MiB and 4096 files in all.
 */
#include "http/http_static.h"
#include "util/err.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_MAX_FILE (8u << 20)
#define STATIC_MAX_TOTAL (64u << 20)
#define STATIC_MAX_FILES 4096

typedef struct {
    char *path; /* "/index.html" */
    const char *type;
    char etag[24];
    sbuf_t *body;
} static_file_t;

static static_file_t *static__files;
static size_t static__n;
static size_t static__total;

static const char *static__type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},
        {".webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcasecmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

static int static__add(const char *fs_path, const char *url_path, char *err, size_t errlen)
{
    int fd = open(fs_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", fs_path, strerror(errno));
        return SORI_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size > STATIC_MAX_FILE ||
        static__total + (size_t)st.st_size > STATIC_MAX_TOTAL || static__n >= STATIC_MAX_FILES) {
        snprintf(err, errlen, "%s: too large for the static table (8 MiB a file, 64 MiB in all)", fs_path);
        close(fd);
        return SORI_E2BIG;
    }
    sbuf_t *b = sbuf_new((size_t)st.st_size);
    size_t got = 0;
    while (b && got < (size_t)st.st_size) {
        ssize_t n = read(fd, b->data + got, (size_t)st.st_size - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    if (!b || got != (size_t)st.st_size) {
        sbuf_unref(b);
        snprintf(err, errlen, "cannot read %s", fs_path);
        return SORI_EIO;
    }
    static_file_t *f = realloc(static__files, (static__n + 1) * sizeof *f);
    if (!f) {
        sbuf_unref(b);
        return SORI_ENOMEM;
    }
    static__files = f;
    f = &static__files[static__n++];
    f->path = strdup(url_path);
    f->type = static__type(url_path);
    f->body = b;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < b->len; i++) h = (h ^ (uint8_t)b->data[i]) * 1099511628211ULL;
    snprintf(f->etag, sizeof f->etag, "\"%016llx\"", (unsigned long long)h);
    static__total += b->len;
    return 0;
}

static int static__walk(const char *dir, const char *prefix, int depth, char *err, size_t errlen)
{
    if (depth > 8) return 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "--web-dir %s: %s", dir, strerror(errno));
        return SORI_EIO;
    }
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* no dotfiles, no . or .. */
        char fs[4096], url[4096];
        snprintf(fs, sizeof fs, "%s/%s", dir, e->d_name);
        snprintf(url, sizeof url, "%s/%s", prefix, e->d_name);
        struct stat st;
        if (stat(fs, &st) != 0) continue;
        if (S_ISDIR(st.st_mode))
            rc = static__walk(fs, url, depth + 1, err, errlen);
        else if (S_ISREG(st.st_mode))
            rc = static__add(fs, url, err, errlen);
    }
    closedir(d);
    return rc;
}

int http_static_load(const char *dir, char *err, size_t errlen)
{
    int rc = static__walk(dir, "", 0, err, errlen);
    if (!rc) LOG_INFO("http", "serving %zu files (%zu bytes) from %s", static__n, static__total, dir);
    return rc;
}

void http_static_free(void)
{
    for (size_t i = 0; i < static__n; i++) {
        free(static__files[i].path);
        sbuf_unref(static__files[i].body);
    }
    free(static__files);
    static__files = NULL;
    static__n = static__total = 0;
}

void http_static_handle(http_req_t *r)
{
    const http_request_t *q = r->req;
    int get = q->method.len == 3 && !memcmp(q->method.p, "GET", 3);
    int head = q->method.len == 4 && !memcmp(q->method.p, "HEAD", 4);
    if (!get && !head) {
        static const char body[] =
            "{\"error\":\"bad_request\",\"message\":\"Static files are read with GET or HEAD.\"}";
        http_respond(r, 405, "application/json", "Allow: GET, HEAD\r\n", body, sizeof body - 1);
        return;
    }
    char path[1024];
    int n = http_url_decode(q->path, path, sizeof path, 0);
    if (n < 0 || path[0] != '/' || strstr(path, "/..") || strchr(path, '\\')) {
        http_respond_error(r, 400, "bad_request", "The path is not valid.");
        return;
    }
    if (!strcmp(path, "/")) strcpy(path, "/index.html");
    for (size_t i = 0; i < static__n; i++) {
        static_file_t *f = &static__files[i];
        if (strcmp(f->path, path) != 0) continue;
        char hdr[160];
        snprintf(hdr, sizeof hdr,
                 "ETag: %s\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n", f->etag);
        const slice_t *inm = http_header_get(q, "If-None-Match");
        if (inm && http_header_has_token(*inm, f->etag)) {
            http_respond(r, 304, NULL, hdr, NULL, 0);
            return;
        }
        http_respond_sbuf(r, 200, f->type, hdr, f->body, 0, f->body->len);
        return;
    }
    http_respond_error(r, 404, "not_found", "There is nothing at this path.");
}
