/*
 * fuzz_json.c: libFuzzer target for the JSON protocol's command decoder,
 * proto_json_decode in src/proto/proto_json.c: the same function the
 * server runs on every text frame of a /ws JSON connection, before the
 * command reaches chat. Arbitrary bytes go in (deep nesting, huge numbers,
 * NUL bytes in strings, duplicate keys all reach jansson and the field
 * checks). Checks the contract: 0 or SORI_EINVAL; on error a NUL-terminated
 * message and, when `early`, no command type; on success a known type whose
 * required fields are present and whose numbers are inside the documented
 * bounds, attachments at most 10 and presence names at most 1000, each one
 * a string of the parsed frame; text_len matches the frame's "text".
 * sori_config.search_max is the only setting the decoder reads (100 here).
 */
#include "proto/proto_internal.h"
#include "util/config.h"
#include "util/err.h"

#include <jansson.h>
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

static proto_json_cmd_t cmd;

static void check_ok(const proto_json_cmd_t *c)
{
    CHECK(c->type >= PJ_PING && c->type <= PJ_PRESENCE);
    CHECK(!c->early && c->root && json_is_object(c->root));
    switch (c->type) {
    case PJ_JOIN: CHECK(c->room && c->since >= -1); break;
    case PJ_LEAVE:
    case PJ_PART:
    case PJ_MEMBERS:
    case PJ_TYPING: CHECK(c->room); break;
    case PJ_SEND:
    case PJ_DM:
        CHECK(c->text && (c->type == PJ_SEND ? c->room != NULL : c->user != NULL));
        CHECK(c->text_len == json_string_length(json_object_get(c->root, "text")));
        CHECK(memchr(c->text, '\0', c->text_len + 1) != NULL);
        CHECK(c->nids <= PROTO_ATTACH_MAX);
        if (c->type == PJ_DM) CHECK(c->nids == 0);
        for (size_t i = 0; i < c->nids; i++) CHECK(c->ids[i] != NULL);
        break;
    case PJ_HISTORY:
        CHECK(c->room && c->limit >= 1 && c->limit <= 100);
        CHECK(c->before == -1 || c->after == -1);
        CHECK(c->before == -1 || c->before >= 1);
        CHECK(c->after >= -1);
        break;
    case PJ_CREATE: CHECK(c->room && c->kind); break;
    case PJ_INVITE:
    case PJ_KICK: CHECK(c->room && c->user); break;
    case PJ_ROLE: CHECK(c->room && c->user && c->role); break;
    case PJ_READ: CHECK(c->room && c->seq >= 0); break;
    case PJ_SEARCH: CHECK(c->q && c->limit >= 1 && c->limit <= sori_config.search_max); break;
    case PJ_PRESENCE:
        CHECK(c->nnames <= PROTO_PRESENCE_MAX);
        for (size_t i = 0; i < c->nnames; i++) CHECK(c->names[i] != NULL);
        break;
    }
    if (c->ref) CHECK(json_is_string(c->ref) || json_is_number(c->ref));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sori_config.search_max = 100;
    memset(cmd.err, 'Z', sizeof cmd.err);
    int rc = proto_json_decode((const char *)data, size, &cmd);
    CHECK(rc == 0 || rc == SORI_EINVAL);
    if (rc == 0) {
        check_ok(&cmd);
    } else {
        CHECK(memchr(cmd.err, '\0', sizeof cmd.err) != NULL && cmd.err[0] != '\0');
        if (cmd.early) CHECK(cmd.type == 0);
        if (!cmd.root) CHECK(cmd.early && !cmd.ref);
    }
    proto_json_cmd_free(&cmd);
    CHECK(cmd.root == NULL);
    return 0;
}
