/*
 * Minimal streaming JSON writer over a kiln_buf: objects, arrays, strings (escaped per RFC 8259,
 * control characters as \u00XX, invalid UTF-8 replaced by U+FFFD so output is always valid JSON),
 * integers, booleans, null. Commas are inserted automatically. Errors are the buffer's sticky error.
 */
#ifndef KILN_JSON_H
#define KILN_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/buf.h"

#define JSON_DEPTH_MAX 16

struct json_w {
        struct kiln_buf *b;
        unsigned depth;
        uint8_t need_comma[JSON_DEPTH_MAX + 1];
        uint8_t after_key;
};

void json_init(struct json_w *w, struct kiln_buf *b);
void json_obj_begin(struct json_w *w);
void json_obj_end(struct json_w *w);
void json_arr_begin(struct json_w *w);
void json_arr_end(struct json_w *w);
void json_key(struct json_w *w, const char *k);
void json_str(struct json_w *w, const char *s);
void json_strn(struct json_w *w, const char *s, size_t n);
void json_int(struct json_w *w, int64_t v);
void json_uint(struct json_w *w, uint64_t v);
void json_bool(struct json_w *w, int v);
void json_null(struct json_w *w);
/* A value that is already valid JSON (e.g. a pre-rendered object), inserted as is. */
void json_raw(struct json_w *w, const char *json, size_t n);
/* key + value shorthands; json_kv_str writes null for a NULL string */
void json_kv_str(struct json_w *w, const char *k, const char *v);
void json_kv_int(struct json_w *w, const char *k, int64_t v);
void json_kv_bool(struct json_w *w, const char *k, int v);
int json_error(const struct json_w *w);

/* Append s escaped as the body of a JSON string (no quotes) to b. */
int json_escape_into(struct kiln_buf *b, const char *s, size_t n);

#endif
