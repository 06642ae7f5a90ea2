/* Unit tests for ws/ws_handshake.c: RFC 6455 §4.2.1 checks, §1.3's worked
 * example of Sec-WebSocket-Accept, sub-protocol choice. */
#include "ws/ws_handshake.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static const char *const subs[] = {"sori.v1", "v12.stomp", NULL};

static int check(const char *raw, ws_handshake_t *hs)
{
    static http_request_t req;
    const char *msg;
    assert_true(http_request_parse(raw, strlen(raw), &req) > 0);
    return ws_handshake_check(&req, subs, hs, &msg);
}

#define BASE "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define V13 "Sec-WebSocket-Version: 13\r\n"

static void test_rfc_example_accept(void **state)
{
    (void)state;
    config_free(&sori_config);
    config_defaults(&sori_config);
    ws_handshake_t hs;
    assert_int_equal(check(BASE KEY V13 "\r\n", &hs), 0);
    /* RFC 6455 §1.3 */
    assert_string_equal(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_null(hs.subprotocol);
    assert_int_equal(hs.deflate.enabled, 0);
}

static void test_rejections(void **state)
{
    (void)state;
    config_free(&sori_config);
    config_defaults(&sori_config);
    ws_handshake_t hs;
    /* §4.2.1 item 6: version 13 only -> 426 */
    assert_int_equal(check(BASE KEY "Sec-WebSocket-Version: 12\r\n\r\n", &hs), 426);
    assert_int_equal(check(BASE KEY "\r\n", &hs), 426);
    /* item 5: a key of 16 bytes */
    assert_int_equal(check(BASE "Sec-WebSocket-Key: c2hvcnQ=\r\n" V13 "\r\n", &hs), 400);
    assert_int_equal(check(BASE V13 "\r\n", &hs), 400);
    /* items 3-4: Upgrade and Connection tokens */
    assert_int_equal(check("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n" KEY V13 "\r\n", &hs), 426);
    assert_int_equal(check("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n" KEY V13 "\r\n", &hs), 426);
    /* item 1: GET, HTTP/1.1 */
    assert_int_equal(check("POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY V13 "\r\n", &hs), 400);
    assert_int_equal(check("GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" KEY V13 "\r\n", &hs), 400);
}

static void test_subprotocols(void **state)
{
    (void)state;
    config_free(&sori_config);
    config_defaults(&sori_config);
    ws_handshake_t hs;
    assert_int_equal(check(BASE KEY V13 "Sec-WebSocket-Protocol: foo, v12.stomp, sori.v1\r\n\r\n", &hs), 0);
    assert_string_equal(hs.subprotocol, "v12.stomp"); /* client order */
    assert_int_equal(check(BASE KEY V13 "Sec-WebSocket-Protocol: foo, bar\r\n\r\n", &hs), 400);
    assert_int_equal(check(BASE KEY V13 "Sec-WebSocket-Protocol: sori.v1x\r\n\r\n", &hs), 400);
}

static void test_origin_allow_list(void **state)
{
    (void)state;
    config_free(&sori_config);
    config_defaults(&sori_config);
    char err[128];
    assert_int_equal(config_set(&sori_config, "allowed-origins", "https://a.example, https://b.example", err, sizeof err), 0);
    ws_handshake_t hs;
    assert_int_equal(check(BASE KEY V13 "Origin: https://b.example\r\n\r\n", &hs), 0);
    assert_int_equal(check(BASE KEY V13 "Origin: https://evil.example\r\n\r\n", &hs), 403);
    assert_int_equal(check(BASE KEY V13 "Origin: https://a.example.evil\r\n\r\n", &hs), 403);
    assert_int_equal(check(BASE KEY V13 "\r\n", &hs), 0); /* no Origin: not a browser */
    config_free(&sori_config);
}

static void test_deflate_offer(void **state)
{
    (void)state;
    config_free(&sori_config);
    config_defaults(&sori_config);
    ws_handshake_t hs;
    assert_int_equal(check(BASE KEY V13 "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n", &hs), 0);
    assert_int_equal(hs.deflate.enabled, 1);
    assert_non_null(strstr(hs.extensions, "client_no_context_takeover"));
    sori_config.ws_deflate = 0;
    assert_int_equal(check(BASE KEY V13 "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", &hs), 0);
    assert_int_equal(hs.deflate.enabled, 0);
}

static int teardown(void **state)
{
    (void)state;
    config_free(&sori_config);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_example_accept),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_subprotocols),
        cmocka_unit_test(test_origin_allow_list),
        cmocka_unit_test(test_deflate_offer),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
