/* Unit tests for chat/chat_wire.c: the framing and decoding of bus payloads. */
#include "chat/chat_wire.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static int classify(const char *channel, const char *data, size_t len, chat_wire_payload_t *p)
{
    return chat_wire_classify(channel, data, len, p);
}

static void test_classify(void **state)
{
    (void)state;
    chat_wire_payload_t p;
    static const char ev[] = "ualice\n{\"type\":\"presence\"}";
    assert_int_equal(classify("sori:state", ev, sizeof ev - 1, &p), CHAT_WIRE_USER_EVENT);
    assert_string_equal(p.user, "alice");
    assert_int_equal(p.body_len, strlen("{\"type\":\"presence\"}"));
    assert_memory_equal(p.body, "{\"type\"", 7);
    /* Found by fuzz_relay: a NUL in the name cut it, so the event went to
     * the user named by its first bytes ("alice" here). */
    static const char nul[] = "ualice\0evil\n{}";
    assert_int_equal(classify("sori:state", nul, sizeof nul - 1, &p), CHAT_WIRE_NONE);
    assert_int_equal(classify("sori:state", "u\n{}", 4, &p), CHAT_WIRE_NONE);
    assert_int_equal(classify("sori:state", "s[]", 3, &p), CHAT_WIRE_STATE);
    assert_int_equal(classify("sori:state", "x[]", 3, &p), CHAT_WIRE_NONE);
    assert_int_equal(classify("sori:state", "", 0, &p), CHAT_WIRE_NONE);
    static const char msg[] = "{\"type\":\"message\",\"seq\":1}";
    assert_int_equal(classify("chatroom-general", msg, sizeof msg - 1, &p), CHAT_WIRE_ROOM_MESSAGE);
    assert_string_equal(p.room, "general");
    assert_int_equal(classify("chatroom-general", "{\"type\":\"typing\"}", 17, &p), CHAT_WIRE_ROOM_EVENT);
    assert_int_equal(classify("chatroom-general", "[1]", 3, &p), CHAT_WIRE_NONE);
    assert_int_equal(classify("elsewhere", msg, sizeof msg - 1, &p), CHAT_WIRE_NONE);
}

static void test_ops(void **state)
{
    (void)state;
    chat_wire_op_t op;
    json_t *o = json_loads("{\"k\":\"member\",\"room\":\"r\",\"user\":\"bob\",\"role\":\"admin\"}", 0, NULL);
    assert_int_equal(chat_wire_op_decode(o, &op), 0);
    assert_int_equal(op.k, CHAT_WIRE_OP_MEMBER);
    assert_int_equal(op.role, 'a');
    json_decref(o);
    o = json_loads("{\"k\":\"upload\",\"id\":\"u1\",\"type\":\"image/png\",\"user\":\"" \
                   "0123456789012345678901234567890123\"}", 0, NULL);
    assert_int_equal(chat_wire_op_decode(o, &op), 0);
    assert_null(op.user); /* too long a name: no owner, no user created */
    json_decref(o);
    o = json_loads("{\"k\":\"nope\",\"room\":\"r\",\"user\":\"bob\"}", 0, NULL);
    assert_int_equal(chat_wire_op_decode(o, &op), SORI_EINVAL);
    json_decref(o);
    o = json_loads("{\"k\":\"room\",\"id\":\"r\",\"kind\":\"dm\"}", 0, NULL);
    assert_int_equal(chat_wire_op_decode(o, &op), 0);
    assert_int_equal(op.kind, 'd');
    assert_null(op.title);
    json_decref(o);
}

static void test_message(void **state)
{
    (void)state;
    chat_wire_msg_t m;
    json_t *o = json_loads("{\"type\":\"message\",\"seq\":3,\"id\":\"77\",\"from\":\"a\",\"text\":\"hi\",\"ts\":5,"
                           "\"mentions\":[\"b\"]}", 0, NULL);
    assert_int_equal(chat_wire_msg_decode(o, &m), 0);
    assert_int_equal(m.id, 77);
    assert_int_equal(m.seq, 3);
    assert_int_equal(m.text_len, 2);
    assert_non_null(m.mentions);
    assert_null(m.attachments);
    json_decref(o);
    o = json_loads("{\"type\":\"message\",\"seq\":0,\"id\":\"7\",\"from\":\"a\",\"text\":\"hi\"}", 0, NULL);
    assert_int_equal(chat_wire_msg_decode(o, &m), SORI_EINVAL);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
