/*
 * json_esc.h: appending JSON text by hand on hot paths (message events,
 * acks), where building a jansson tree per message costs more than the rest
 * of the send. Input strings must be valid UTF-8 (they come from validated
 * WebSocket text or from jansson).
 */
#ifndef SORI_UTIL_JSON_ESC_H
#define SORI_UTIL_JSON_ESC_H

#include <stddef.h>

#include "util/buf.h"

/* Appends s[0..n) as a JSON string literal, quotes included: '"' and '\\'
 * escaped, control characters as \n \r \t \b \f or \u00XX, everything else
 * (UTF-8 included) as is. 0 or SORI_ENOMEM. */
int json_esc_append(buf_t *b, const char *s, size_t n);

#endif
