/*
 * chat_text.h: pure scanners over message and query text (no locks, no
 * state): @mentions and the FTS5 query a search runs. Fuzzed by
 * tests/fuzz/fuzz_mention.c and fuzz_fts_query.c.
 */
#ifndef SORI_CHAT_TEXT_H
#define SORI_CHAT_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define CHAT_TEXT_NAME_MAX 32 /* = CHAT_USER_MAX */

/* Is name[0..len) someone who can be mentioned here? Must not call back. */
typedef int (*chat_text_is_member_fn)(void *ctx, const char *name, size_t len);

/* The distinct names written as @name in text[0..len) for which is_member
 * says yes, except `from`, in order of first mention, at most max of them,
 * each NUL-terminated in names[]. "@bob." at a sentence end tries "bob."
 * then "bob"; "x@bob" (an e-mail address) is no mention. Reads no byte past
 * len; text needs no NUL. Returns how many went into names. */
uint32_t chat_text_mentions(const char *text, size_t len, const char *from, chat_text_is_member_fn is_member,
                            void *ctx, char names[][CHAT_TEXT_NAME_MAX + 1], uint32_t max);

/* q (NUL-terminated) as an FTS5 MATCH expression that cannot be a syntax
 * error: every whitespace-separated word a quoted string (quotes doubled),
 * all of them required. Returns a malloc'd string the caller frees, or NULL
 * if q has no word or memory ran out. */
char *chat_text_fts_match(const char *q);

#endif
