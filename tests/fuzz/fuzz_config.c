/*
 * fuzz_config.c: libFuzzer target for src/util/config.c, the config file
 * parser (config_load_buffer: `name = value` lines, '#' comments) and,
 * through it, every value parser: strings, integers with bounds, sizes with
 * k/m/g suffixes, booleans. Each input is applied to a private config filled
 * with the defaults (the global sori_config is never touched) and freed
 * afterwards, so LeakSanitizer sees every string the parser copies. Checks:
 * the result is 0 or SORI_EINVAL with a NUL-terminated message starting with
 * the origin, and every numeric option is still inside its bounds. Then the
 * input's first line is tried as the value of a handful of options of each
 * type with config_set, which must leave a failing option unchanged.
 */
#include "util/config.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        if (!(x)) {                                                                     \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static void check_bounds(const sori_config_t *c)
{
    CHECK(c->port >= 0 && c->port <= 65535);
    CHECK(c->workers >= 0 && c->workers <= 256);
    CHECK(c->node_id >= 0 && c->node_id <= 1023);
    CHECK(c->max_connections >= 1 && c->max_connections <= 10000000);
    CHECK(c->out_limit >= 4096 && c->out_limit <= (1LL << 32));
    CHECK(c->ws_max_message >= 125 && c->ws_max_message <= (1LL << 30));
    CHECK(c->http_max_header >= 1024 && c->http_max_header <= (1 << 20));
    CHECK(c->http_max_body >= 0 && c->http_max_body <= (1LL << 30));
    CHECK(c->max_text >= 1 && c->max_text <= (1 << 20));
    CHECK(c->upload_max >= 1024 && c->upload_max <= (1LL << 30));
    CHECK(c->allow_guests == 0 || c->allow_guests == 1);
    CHECK(c->ws_deflate == 0 || c->ws_deflate == 1);
    CHECK(c->search_max >= 1 && c->search_max <= 1000);
    CHECK(c->host && c->data_dir && c->secret && c->log_level && c->durability);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sori_config_t c;
    char err[256];
    config_defaults(&c);
    memset(err, 'Z', sizeof err);
    int rc = config_load_buffer(&c, (const char *)data, size, "fuzz", err, sizeof err);
    CHECK(rc == 0 || rc == SORI_EINVAL);
    if (rc) CHECK(memchr(err, '\0', sizeof err) && strncmp(err, "fuzz:", 5) == 0);
    check_bounds(&c);

    /* The first line (up to 200 bytes, as a C string) as a value. */
    char value[201];
    size_t n = 0;
    while (n < size && n < 200 && data[n] != '\n' && data[n] != '\0') n++;
    memcpy(value, data, n);
    value[n] = 0;
    static const char *const names[] = {"port", "out-limit", "ws-max-message", "allow-guests",
                                        "secret", "http-max-body", "node-id", "no-such-option"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        sori_config_t before = c;
        rc = config_set(&c, names[i], value, err, sizeof err);
        CHECK(rc == 0 || rc == SORI_EINVAL);
        if (rc) {
            CHECK(memchr(err, '\0', sizeof err) != NULL);
            CHECK(memcmp(&before, &c, sizeof c) == 0);
        } else if (!strcmp(names[i], "secret")) {
            CHECK(strcmp(c.secret, value) == 0);
        }
    }
    check_bounds(&c);
    config_free(&c);
    return 0;
}
