/*
 * stomp_frame.c: the STOMP frame parser and header encoder.
 *
 * Owns nothing: it works in the caller's buffer. The parser first proves
 * the frame complete (end of the header block found, then the body's end
 * by content-length or the first NUL) without writing anything, and only
 * then decodes header escapes in place, so an incomplete frame can be
 * parsed again once more bytes arrive. Every scan is bounded by n and by
 * the limits: the header block by max_header_bytes, the header count by
 * max_headers, the body by max_body. Cost: one pass over the header block
 * to find its end, one to split and decode it, memchr for the body's NUL.
 */
#include "proto/stomp_frame.h"
#include "util/err.h"

#include <string.h>

static const struct {
    const char *name;
    int command;
} stomp__commands[] = {
    {"CONNECT", STOMP_CONNECT},   {"STOMP", STOMP_STOMP},         {"SEND", STOMP_SEND},
    {"SUBSCRIBE", STOMP_SUBSCRIBE}, {"UNSUBSCRIBE", STOMP_UNSUBSCRIBE}, {"ACK", STOMP_ACK},
    {"NACK", STOMP_NACK},         {"BEGIN", STOMP_BEGIN},         {"COMMIT", STOMP_COMMIT},
    {"ABORT", STOMP_ABORT},       {"DISCONNECT", STOMP_DISCONNECT},
};

const char *stomp_command_name(int command)
{
    for (size_t i = 0; i < sizeof stomp__commands / sizeof stomp__commands[0]; i++)
        if (stomp__commands[i].command == command) return stomp__commands[i].name;
    return "?";
}

size_t stomp_skip_eols(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        if (i < n && p[i] == '\n') i++;
        else if (i + 1 < n && p[i] == '\r' && p[i + 1] == '\n') i += 2;
        else return i;
    }
}

static int stomp__fail(stomp_frame_t *f, int rc, const char *why)
{
    f->error = why;
    return rc;
}

/* Decodes the escapes of s[0..*len) in place. 0, or -1 on an undefined
 * escape (STOMP 1.2: a fatal protocol error). */
static int stomp__unescape(char *s, size_t *len, int version)
{
    size_t o = 0;
    for (size_t i = 0; i < *len; i++) {
        char c = s[i];
        if (c == '\\') {
            if (++i == *len) return -1;
            switch (s[i]) {
            case '\\': c = '\\'; break;
            case 'n': c = '\n'; break;
            case 'c': c = ':'; break;
            case 'r':
                if (version < STOMP_V12) return -1;
                c = '\r';
                break;
            default: return -1;
            }
        }
        s[o++] = c;
    }
    *len = o;
    return 0;
}

static int stomp__parse_uint(const char *p, size_t n, uint64_t *out)
{
    while (n && (*p == ' ' || *p == '\t')) p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0 || n > 15) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

int stomp_frame_parse(char *p, size_t n, int version, const stomp_limits_t *lim, stomp_frame_t *f)
{
    f->nheaders = 0;
    f->body = NULL;
    f->body_len = 0;
    f->error = NULL;
    f->command = 0;

    /* 1. the end of the header block: an empty line */
    size_t scan = n < lim->max_header_bytes ? n : lim->max_header_bytes;
    size_t hdr_end = 0; /* index just past the blank line */
    size_t line = 0;    /* start of the current line */
    int have_cl = 0;
    uint64_t cl = 0;
    for (size_t i = 0; i < scan; i++) {
        if (p[i] == '\0' && i == line) {
            /* a NUL where a header line should start: no blank line */
            return stomp__fail(f, SORI_EINVAL, "The frame ends before the blank line after its headers.");
        }
        if (p[i] != '\n') continue;
        size_t end = i > line && p[i - 1] == '\r' ? i - 1 : i;
        if (end == line) {
            if (line == 0) return stomp__fail(f, SORI_EINVAL, "A frame starts with its command.");
            hdr_end = i + 1;
            break;
        }
        if (line > 0 && !have_cl && end - line > 15 && !memcmp(p + line, "content-length:", 15)) {
            if (stomp__parse_uint(p + line + 15, end - line - 15, &cl) < 0)
                return stomp__fail(f, SORI_EINVAL, "content-length must be a number of bytes.");
            have_cl = 1;
        }
        line = i + 1;
    }
    if (!hdr_end) {
        if (n >= lim->max_header_bytes)
            return stomp__fail(f, SORI_E2BIG, "The frame's command and headers are too long.");
        return SORI_EAGAIN;
    }

    /* 2. the end of the body */
    size_t body_len;
    if (have_cl) {
        if (cl > lim->max_body) return stomp__fail(f, SORI_E2BIG, "The frame's body is too large.");
        if (n - hdr_end < cl + 1) return SORI_EAGAIN;
        body_len = (size_t)cl;
        if (p[hdr_end + body_len] != '\0')
            return stomp__fail(f, SORI_EINVAL, "The body is not followed by NUL where content-length says.");
    } else {
        size_t avail = n - hdr_end;
        size_t look = avail < lim->max_body + 1 ? avail : lim->max_body + 1;
        const char *nul = memchr(p + hdr_end, '\0', look);
        if (!nul) {
            if (avail > lim->max_body) return stomp__fail(f, SORI_E2BIG, "The frame's body is too large.");
            return SORI_EAGAIN;
        }
        body_len = (size_t)(nul - (p + hdr_end));
    }

    /* 3. the command */
    size_t i = 0;
    while (p[i] != '\n') i++;
    size_t cmd_len = i > 0 && p[i - 1] == '\r' ? i - 1 : i;
    for (size_t k = 0; k < sizeof stomp__commands / sizeof stomp__commands[0]; k++)
        if (strlen(stomp__commands[k].name) == cmd_len && !memcmp(p, stomp__commands[k].name, cmd_len))
            f->command = stomp__commands[k].command;
    if (!f->command) return stomp__fail(f, SORI_EINVAL, "Unknown command; this server takes client frames only.");
    int escapes = version >= STOMP_V11 && f->command != STOMP_CONNECT && f->command != STOMP_STOMP;

    /* 4. the headers, decoded in place */
    for (line = i + 1; line < hdr_end - 1;) {
        char *nl = memchr(p + line, '\n', hdr_end - line);
        size_t end = (size_t)(nl - p);
        size_t next = end + 1;
        if (end > line && p[end - 1] == '\r') end--;
        if (end == line) break; /* the blank line */
        char *colon = memchr(p + line, ':', end - line);
        if (!colon) return stomp__fail(f, SORI_EINVAL, "A header line has no ':'.");
        if (f->nheaders >= lim->max_headers || f->nheaders >= STOMP_HEADERS_MAX)
            return stomp__fail(f, SORI_E2BIG, "The frame has too many headers.");
        size_t name_len = (size_t)(colon - (p + line));
        size_t value_len = end - line - name_len - 1;
        char *value = colon + 1;
        if (name_len == 0) return stomp__fail(f, SORI_EINVAL, "A header has an empty name.");
        if (memchr(p + line, '\0', end - line))
            return stomp__fail(f, SORI_EINVAL, "A header contains a NUL byte.");
        if (escapes && (stomp__unescape(p + line, &name_len, version) < 0 ||
                        stomp__unescape(value, &value_len, version) < 0))
            return stomp__fail(f, SORI_EINVAL, "A header has an undefined escape sequence.");
        stomp_header_t *h = &f->headers[f->nheaders++];
        h->name = (slice_t){p + line, name_len};
        h->value = (slice_t){value, value_len};
        line = next;
    }
    f->body = p + hdr_end;
    f->body_len = body_len;
    return (int)(hdr_end + body_len + 1);
}

const slice_t *stomp_header_get(const stomp_frame_t *f, const char *name)
{
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < f->nheaders; i++)
        if (f->headers[i].name.len == nl && !memcmp(f->headers[i].name.p, name, nl)) return &f->headers[i].value;
    return NULL;
}

int stomp_header_append(buf_t *b, int version, const char *name, const char *value, size_t vlen)
{
    int rc = buf_append(b, name, strlen(name)) | buf_append(b, ":", 1);
    size_t run = 0;
    for (size_t i = 0; i < vlen; i++) {
        const char *esc = NULL;
        char c = value[i];
        if (version >= STOMP_V11) {
            if (c == '\\') esc = "\\\\";
            else if (c == '\n') esc = "\\n";
            else if (c == ':') esc = "\\c";
            else if (c == '\r' && version >= STOMP_V12) esc = "\\r";
        }
        if (!esc && version < STOMP_V11 && (c == '\n' || c == '\r')) esc = "";
        if (c == '\r' && version == STOMP_V11) esc = ""; /* 1.1 cannot carry a CR */
        if (!esc) continue;
        rc |= buf_append(b, value + run, i - run) | buf_append(b, esc, strlen(esc));
        run = i + 1;
    }
    rc |= buf_append(b, value + run, vlen - run) | buf_append(b, "\n", 1);
    return rc ? SORI_ENOMEM : 0;
}
