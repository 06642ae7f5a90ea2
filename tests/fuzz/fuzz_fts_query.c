/*
 * fuzz_fts_query.c: libFuzzer target for chat_text_fts_match
 * (src/chat/chat_text.c), the builder of the FTS5 MATCH expression a search
 * runs.
 *
 * The input, cut at its first NUL, is a search query. The contract: NULL
 * exactly when the query has no non-whitespace byte; otherwise the
 * expression is accepted by SQLite's FTS5 parser (a real in-memory table
 * with the store's tokenizer options) — no user input can make a search a
 * syntax error or an FTS5 operator.
 */
#include "chat/chat_text.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

static sqlite3 *db;
static sqlite3_stmt *st;

static void setup(void)
{
    CHECK(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db,
                       "CREATE VIRTUAL TABLE f USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');"
                       "INSERT INTO f(rowid, text) VALUES (1, 'hello world'), (2, 'say \"hi\" NEAR or and not');",
                       NULL, NULL, NULL) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT rowid FROM f WHERE f MATCH ?1 LIMIT 5", -1, &st, NULL) == SQLITE_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!db) setup();
    if (size > 4096) return 0;
    char *q = malloc(size + 1);
    if (!q) return 0;
    memcpy(q, data, size);
    q[size] = 0;
    int words = 0;
    for (const char *p = q; *p; p++) words |= !(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r');
    char *m = chat_text_fts_match(q);
    CHECK((m != NULL) == (words != 0));
    if (m) {
        size_t quotes = 0;
        for (const char *p = m; *p; p++) quotes += *p == '"';
        CHECK(quotes % 2 == 0 && m[0] == '"' && m[strlen(m) - 1] == '"');
        sqlite3_bind_text(st, 1, m, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        CHECK(rc == SQLITE_DONE); /* never "fts5: syntax error" */
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        free(m);
    }
    free(q);
    return 0;
}
