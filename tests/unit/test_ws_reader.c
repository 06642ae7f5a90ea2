/* Unit tests for ws/ws_reader.c: message assembly over the caller's bytes. */
#include "ws/ws_reader.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static const uint8_t mask[4] = {1, 2, 3, 4};
static const ws_parse_opts_t opts = {.allowed_rsv = WS_RSV1, .require_mask = 1};

/* Appends a masked client frame to out at *n. */
static void put(uint8_t *out, size_t *n, int op, int fin, int rsv, const char *p, size_t len)
{
    *n += ws_frame_header_write(out + *n, op, fin, rsv, len, mask);
    for (size_t i = 0; i < len; i++) out[*n + i] = (uint8_t)p[i] ^ mask[i & 3];
    *n += len;
}

static void test_fragments_with_control_between(void **state)
{
    (void)state;
    uint8_t b[256];
    size_t n = 0, pos = 0;
    /* "h\xc3" | ping | "\xa9llo": UTF-8 split across fragments. */
    put(b, &n, WS_OP_TEXT, 0, 0, "h\xc3", 2);
    put(b, &n, WS_OP_PING, 1, 0, "pp", 2);
    put(b, &n, WS_OP_CONT, 1, 0, "\xa9llo", 4);
    ws_reader_t r = {0};
    ws_rd_event_t ev;
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_CONTROL);
    assert_int_equal(ev.opcode, WS_OP_PING);
    assert_memory_equal(ev.data, "pp", 2);
    ws_reader_release(&r);
    assert_int_equal(r.msg_op, WS_OP_TEXT); /* the message survives the ping */
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_MESSAGE);
    assert_int_equal(ev.len, 6);
    assert_memory_equal(ev.data, "h\xc3\xa9llo", 6);
    assert_ptr_equal(ev.data, r.msg.data); /* reassembled */
    ws_reader_release(&r);
    assert_int_equal(pos, n);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_NEED);
    ws_reader_free(&r);
}

static void test_whole_message_from_the_read_buffer(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n = 0, pos = 0;
    put(b, &n, WS_OP_TEXT, 1, 0, "hello", 5);
    ws_reader_t r = {0};
    ws_rd_event_t ev;
    /* Header only: need more, nothing consumed. */
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, 3, &pos, &ev), WS_RD_NEED);
    assert_int_equal(pos, 0);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_MESSAGE);
    assert_ptr_equal(ev.data, b + n - 5); /* no copy */
    assert_memory_equal(ev.data, "hello", 5);
    ws_reader_release(&r);
    ws_reader_free(&r);
}

static void test_failures(void **state)
{
    (void)state;
    uint8_t b[2048];
    ws_reader_t r = {0};
    ws_rd_event_t ev;
    size_t n = 0, pos = 0;
    put(b, &n, WS_OP_CONT, 1, 0, "x", 1);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_FAIL);
    assert_int_equal(ev.code, 1002);
    ws_reader_free(&r);

    memset(&r, 0, sizeof r), n = pos = 0;
    put(b, &n, WS_OP_TEXT, 0, 0, "ok", 2);
    put(b, &n, WS_OP_CONT, 1, 0, "\xc3\x28", 2);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_FAIL);
    assert_int_equal(ev.code, 1007);
    ws_reader_free(&r);

    /* The limit counts every fragment. */
    memset(&r, 0, sizeof r), n = pos = 0;
    char big[600];
    memset(big, 'a', sizeof big);
    put(b, &n, WS_OP_BINARY, 0, 0, big, sizeof big);
    put(b, &n, WS_OP_CONT, 1, 0, big, sizeof big);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_FAIL);
    assert_int_equal(ev.code, 1009);
    ws_reader_free(&r);

    /* RSV1 on a continuation frame. */
    memset(&r, 0, sizeof r), n = pos = 0;
    put(b, &n, WS_OP_BINARY, 0, WS_RSV1, "a", 1);
    put(b, &n, WS_OP_CONT, 1, WS_RSV1, "b", 1);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_FAIL);
    assert_int_equal(ev.code, 1002);
    ws_reader_free(&r);
}

static void test_compressed_across_fragments(void **state)
{
    (void)state;
    ws_deflater_t *d = ws_deflater_new(6, 15);
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(d);
    assert_non_null(z);
    const char text[] = "caf\xc3\xa9 caf\xc3\xa9 caf\xc3\xa9";
    buf_t c = {0}, out = {0};
    assert_int_equal(ws_deflate_message(d, (const uint8_t *)text, sizeof text - 1, &c), 0);
    uint8_t b[256];
    size_t n = 0, pos = 0, half = c.len / 2;
    put(b, &n, WS_OP_TEXT, 0, WS_RSV1, c.data, half);
    put(b, &n, WS_OP_PONG, 1, 0, "", 0);
    put(b, &n, WS_OP_CONT, 1, 0, c.data + half, c.len - half);
    ws_reader_t r = {0};
    ws_rd_event_t ev;
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_CONTROL);
    assert_int_equal(ev.len, 0);
    ws_reader_release(&r);
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 1, b, n, &pos, &ev), WS_RD_MESSAGE);
    assert_true(ev.deflated);
    assert_int_equal(ws_reader_inflate(z, &out, 1024, &ev), 0);
    assert_int_equal(ev.len, sizeof text - 1);
    assert_memory_equal(ev.data, text, sizeof text - 1);
    /* Too small a limit after inflating: 1009. */
    ev.data = (uint8_t *)r.msg.data, ev.len = r.msg.len, ev.deflated = 1;
    assert_int_equal(ws_reader_inflate(z, &out, 4, &ev), WS_RD_FAIL);
    assert_int_equal(ev.code, 1009);
    ws_reader_release(&r);
    ws_reader_free(&r);
    buf_free(&c);
    buf_free(&out);
    ws_deflater_free(d);
    ws_inflater_free(z);
}

static void test_closing_drops_messages(void **state)
{
    (void)state;
    uint8_t b[128];
    size_t n = 0, pos = 0;
    put(b, &n, WS_OP_TEXT, 1, 0, "gone", 4);
    put(b, &n, WS_OP_BINARY, 0, 0, "ab", 2);
    put(b, &n, WS_OP_CONT, 1, 0, "cd", 2);
    put(b, &n, WS_OP_CLOSE, 1, 0, "\x03\xe8", 2);
    ws_reader_t r = {0};
    ws_rd_event_t ev;
    assert_int_equal(ws_reader_step(&r, &opts, 1024, 0, b, n, &pos, &ev), WS_RD_CONTROL);
    assert_int_equal(ev.opcode, WS_OP_CLOSE);
    assert_int_equal(r.msg.len, 0);
    ws_reader_release(&r);
    ws_reader_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fragments_with_control_between),
        cmocka_unit_test(test_whole_message_from_the_read_buffer),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_compressed_across_fragments),
        cmocka_unit_test(test_closing_drops_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
