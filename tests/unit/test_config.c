/* Unit tests for util/config.c: defaults, flags, bounds, sizes, files. */
#include "util/config.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <unistd.h>

static void test_defaults(void **state)
{
    (void)state;
    sori_config_t c;
    config_defaults(&c);
    assert_int_equal(c.port, 8080);
    assert_string_equal(c.data_dir, "./data");
    assert_int_equal(c.allow_guests, 0);
    assert_int_equal(c.out_limit, 4 << 20);
    assert_int_equal(c.http_max_header, 16 << 10);
    assert_int_equal(c.heartbeat_ms, 25000);
    config_free(&c);
}

static void test_limit_defaults_and_reload_stores(void **state)
{
    (void)state;
    sori_config_t c;
    config_defaults(&c);
    assert_int_equal(c.max_conns_per_ip, 1000);
    assert_int_equal(c.conn_rate_per_ip, 200);
    assert_int_equal(c.conn_burst_per_ip, 400);
    assert_int_equal(c.ip_limits_loopback, 0);
    assert_int_equal(c.max_conns_per_user, 100);
    assert_int_equal(c.max_rooms_per_user, 1000);
    assert_int_equal(c.max_members_per_room, 10000);
    assert_int_equal(c.memory_high_water, 0);
    assert_int_equal(c.store_queue_max, 100000);
    char err[256];
    /* a reload rewrites them with config_set (atomic stores) */
    assert_int_equal(config_set(&c, "max-conns-per-ip", "0", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "memory-high-water", "512m", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "ip-limits-loopback", "true", err, sizeof err), 0);
    assert_int_equal(c.max_conns_per_ip, 0);
    assert_int_equal(c.memory_high_water, 512LL << 20);
    assert_int_equal(c.ip_limits_loopback, 1);
    assert_int_equal(config_set(&c, "conn-burst-per-ip", "0", err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "--conn-burst-per-ip"));
    config_free(&c);
}

static void test_flags_forms(void **state)
{
    (void)state;
    sori_config_t c;
    config_defaults(&c);
    char err[256];
    char *argv[] = {"--port", "9000", "--allow-guests", "--workers=3", "--out-limit", "64k",
                    "--ws-deflate", "false", "--log-level=debug"};
    assert_int_equal(config_parse_args(&c, 9, argv, err, sizeof err), 0);
    assert_int_equal(c.port, 9000);
    assert_int_equal(c.allow_guests, 1);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.out_limit, 64 << 10);
    assert_int_equal(c.ws_deflate, 0);
    assert_string_equal(c.log_level, "debug");
    config_free(&c);
}

static void test_bad_values_name_the_flag(void **state)
{
    (void)state;
    sori_config_t c;
    config_defaults(&c);
    char err[256];
    char *a1[] = {"--port", "abc"};
    assert_int_equal(config_parse_args(&c, 2, a1, err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "--port"));
    char *a2[] = {"--port", "70000"};
    assert_int_equal(config_parse_args(&c, 2, a2, err, sizeof err), SORI_EINVAL);
    char *a3[] = {"--nope"};
    assert_int_equal(config_parse_args(&c, 1, a3, err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "--nope"));
    char *a4[] = {"--out-limit", "12q"};
    assert_int_equal(config_parse_args(&c, 2, a4, err, sizeof err), SORI_EINVAL);
    char *a5[] = {"--port"};
    assert_int_equal(config_parse_args(&c, 1, a5, err, sizeof err), SORI_EINVAL);
    char *a6[] = {"--allow-guests=maybe"};
    assert_int_equal(config_parse_args(&c, 1, a6, err, sizeof err), SORI_EINVAL);
    char *a7[] = {"stray"};
    assert_int_equal(config_parse_args(&c, 1, a7, err, sizeof err), SORI_EINVAL);
    config_free(&c);
}

static void test_file_then_flags(void **state)
{
    (void)state;
    char path[] = "/tmp/sori-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# comment\nport = 7000\nallow-guests = true  # trailing\n\nworkers=2\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (int)sizeof text - 1);
    close(fd);
    sori_config_t c;
    config_defaults(&c);
    char err[256];
    char *argv[] = {"--config", path, "--port", "7001"};
    assert_int_equal(config_parse_args(&c, 4, argv, err, sizeof err), 0);
    assert_int_equal(c.port, 7001); /* the flag wins */
    assert_int_equal(c.allow_guests, 1);
    assert_int_equal(c.workers, 2);
    config_free(&c);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char bad[] = "port = 1\nfoo = 2\n";
    assert_int_equal(write(fd, bad, sizeof bad - 1), (int)sizeof bad - 1);
    close(fd);
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, ":2:"));
    assert_non_null(strstr(err, "foo"));
    config_free(&c);
    unlink(path);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int reload_calls;
static void on_reload(void *arg)
{
    (void)arg;
    reload_calls++;
}

static int reject_rate_13(const sori_config_t *c, char *err, size_t errlen)
{
    if (c->rate != 13) return 0;
    snprintf(err, errlen, "no 13");
    return SORI_EINVAL;
}

/* SIGHUP: reloadable options change, others keep their value, a bad file or
 * a failed validation changes nothing (and runs no hook), flags still win,
 * hooks run once per successful reload. */
static void test_reload(void **state)
{
    (void)state;
    char path[] = "/tmp/sori-reload-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "rate = 5\nport = 7000\nlog-level = info\n");
    static char a0[] = "--config", a2[] = "--burst", a3[] = "9";
    static char *argv[5];
    argv[0] = a0;
    argv[1] = path;
    argv[2] = a2;
    argv[3] = a3;
    config_defaults(&sori_config);
    char err[256];
    assert_int_equal(config_parse_args(&sori_config, 4, argv, err, sizeof err), 0);
    assert_string_equal(sori_config.config_file, path);
    config_reload_init(4, argv);
    assert_int_equal(config_on_reload(on_reload, NULL), 0);
    assert_int_equal(config_reloadable("rate"), 1);
    assert_int_equal(config_reloadable("port"), 0);
    assert_int_equal(config_reloadable("nope"), -1);

    write_file(path, "rate = 7\nport = 7001\nlog-level = debug\nburst = 50\n");
    assert_int_equal(config_reload(reject_rate_13, err, sizeof err), 0);
    assert_int_equal(CONFIG_GET(rate), 7);
    assert_string_equal(CONFIG_GET(log_level), "debug");
    assert_int_equal(sori_config.port, 7000); /* not reloadable */
    assert_int_equal(CONFIG_GET(burst), 9);   /* the flag still wins */
    assert_int_equal(reload_calls, 1);

    write_file(path, "rate = 8\nburst = x\n"); /* bad: nothing changes */
    assert_int_equal(config_reload(NULL, err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "burst"));
    assert_int_equal(CONFIG_GET(rate), 7);
    write_file(path, "rate = 13\n"); /* valid alone, refused by the validator */
    assert_int_equal(config_reload(reject_rate_13, err, sizeof err), SORI_EINVAL);
    assert_int_equal(CONFIG_GET(rate), 7);
    assert_int_equal(reload_calls, 1);

    write_file(path, "rate = 7\nport = 7001\nlog-level = debug\n"); /* nothing new: hooks run anyway */
    assert_int_equal(config_reload(NULL, err, sizeof err), 0);
    assert_int_equal(reload_calls, 2);
    config_free(&sori_config);
    unlink(path);
}

static void test_load_buffer(void **state)
{
    (void)state;
    sori_config_t c;
    char err[256];
    config_defaults(&c);
    /* CRLF lines, no final newline, a string set twice (the first copy is
     * freed), a size with a suffix. */
    const char text[] = "secret = a\r\nsecret = b # note\r\n  \t\nout-limit = 8mb";
    assert_int_equal(config_load_buffer(&c, text, sizeof text - 1, "t", err, sizeof err), 0);
    assert_string_equal(c.secret, "b");
    assert_int_equal(c.out_limit, 8 << 20);
    /* A NUL byte ends the line's text; the next line still counts. */
    const char nul[] = "port = 7002\0garbage\nworkers = 3\n";
    assert_int_equal(config_load_buffer(&c, nul, sizeof nul - 1, "t", err, sizeof err), 0);
    assert_int_equal(c.port, 7002);
    assert_int_equal(c.workers, 3);
    /* A line over 4095 bytes is an error naming its line, not two lines. */
    size_t n = 5000;
    char *big = malloc(n);
    assert_non_null(big);
    memcpy(big, "port = 1\nsecret = ", 18);
    memset(big + 18, 'x', n - 18);
    assert_int_equal(config_load_buffer(&c, big, n, "t", err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "t:2:"));
    assert_int_equal(c.port, 1);
    free(big);
    /* `config` is refused; a value out of bounds names the option. */
    assert_int_equal(config_load_buffer(&c, "config = x", 10, "t", err, sizeof err), SORI_EINVAL);
    assert_int_equal(config_load_buffer(&c, "\n\nport = 65536", 15, "t", err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "t:3: --port"));
    assert_int_equal(config_load_buffer(&c, "", 0, "t", err, sizeof err), 0);
    config_free(&c);
}

static void test_file_too_large(void **state)
{
    (void)state;
    char path[] = "/tmp/sori-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static char line[1024];
    memset(line, '#', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (int i = 0; i <= 1024; i++) assert_int_equal(write(fd, line, sizeof line), (int)sizeof line);
    close(fd);
    sori_config_t c;
    char err[256];
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, err, sizeof err), SORI_EINVAL);
    assert_non_null(strstr(err, "larger than"));
    config_free(&c);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_limit_defaults_and_reload_stores),
        cmocka_unit_test(test_flags_forms),
        cmocka_unit_test(test_bad_values_name_the_flag),
        cmocka_unit_test(test_file_then_flags),
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_load_buffer),
        cmocka_unit_test(test_file_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
