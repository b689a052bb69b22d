/* Minimal streaming JSON writer. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kiln/json.h"

void json_init(struct json_w *w, struct kiln_buf *b)
{
        memset(w, 0, sizeof(*w));
        w->b = b;
}

int json_error(const struct json_w *w)
{
        return kiln_buf_error(w->b);
}

static void json_sep(struct json_w *w)
{
        if (w->after_key) {
                w->after_key = 0;
                return;
        }
        if (w->need_comma[w->depth])
                kiln_buf_put_u8(w->b, ',');
        w->need_comma[w->depth] = 1;
}

static void json_open(struct json_w *w, char c)
{
        json_sep(w);
        kiln_buf_put_u8(w->b, (uint8_t)c);
        if (w->depth >= JSON_DEPTH_MAX) {
                w->b->err = w->b->err ? w->b->err : KILN_E_LIMIT;
                return;
        }
        w->depth++;
        w->need_comma[w->depth] = 0;
}

static void json_close(struct json_w *w, char c)
{
        if (w->depth > 0)
                w->depth--;
        kiln_buf_put_u8(w->b, (uint8_t)c);
}

void json_obj_begin(struct json_w *w)
{
        json_open(w, '{');
}

void json_obj_end(struct json_w *w)
{
        json_close(w, '}');
}

void json_arr_begin(struct json_w *w)
{
        json_open(w, '[');
}

void json_arr_end(struct json_w *w)
{
        json_close(w, ']');
}

/* Length of the valid UTF-8 sequence at p (n bytes available), 0 when invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
        size_t len;
        uint32_t cp;

        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xC2 && p[0] <= 0xDF)
                len = 2, cp = p[0] & 0x1F;
        else if (p[0] >= 0xE0 && p[0] <= 0xEF)
                len = 3, cp = p[0] & 0x0F;
        else if (p[0] >= 0xF0 && p[0] <= 0xF4)
                len = 4, cp = p[0] & 0x07;
        else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xC0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        return len;
}

int json_escape_into(struct kiln_buf *b, const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;

        while (i < n) {
                unsigned char c = p[i];
                size_t run = 0;

                /* copy the longest run of bytes that need no escaping in one put */
                while (i + run < n && p[i + run] >= 0x20 && p[i + run] < 0x80 &&
                       p[i + run] != '"' && p[i + run] != '\\')
                        run++;
                if (run > 0) {
                        kiln_buf_put(b, p + i, run);
                        i += run;
                        continue;
                }
                switch (c) {
                case '"':
                        kiln_buf_put(b, "\\\"", 2);
                        break;
                case '\\':
                        kiln_buf_put(b, "\\\\", 2);
                        break;
                case '\n':
                        kiln_buf_put(b, "\\n", 2);
                        break;
                case '\r':
                        kiln_buf_put(b, "\\r", 2);
                        break;
                case '\t':
                        kiln_buf_put(b, "\\t", 2);
                        break;
                default:
                        if (c < 0x20) {
                                kiln_buf_printf(b, "\\u%04x", c);
                        } else {
                                size_t l = utf8_len(p + i, n - i);

                                if (l == 0) {
                                        kiln_buf_put(b, "\\ufffd", 6);
                                        l = 1;
                                } else {
                                        kiln_buf_put(b, p + i, l);
                                }
                                i += l;
                                continue;
                        }
                }
                i++;
        }
        return kiln_buf_error(b);
}

void json_strn(struct json_w *w, const char *s, size_t n)
{
        json_sep(w);
        kiln_buf_put_u8(w->b, '"');
        json_escape_into(w->b, s, n);
        kiln_buf_put_u8(w->b, '"');
}

void json_str(struct json_w *w, const char *s)
{
        if (s == NULL) {
                json_null(w);
                return;
        }
        json_strn(w, s, strlen(s));
}

void json_key(struct json_w *w, const char *k)
{
        json_strn(w, k, strlen(k));
        kiln_buf_put_u8(w->b, ':');
        w->after_key = 1;
}

void json_int(struct json_w *w, int64_t v)
{
        json_sep(w);
        kiln_buf_printf(w->b, "%" PRId64, v);
}

void json_uint(struct json_w *w, uint64_t v)
{
        json_sep(w);
        kiln_buf_printf(w->b, "%" PRIu64, v);
}

void json_bool(struct json_w *w, int v)
{
        json_sep(w);
        kiln_buf_put_str(w->b, v ? "true" : "false");
}

void json_null(struct json_w *w)
{
        json_sep(w);
        kiln_buf_put_str(w->b, "null");
}

void json_raw(struct json_w *w, const char *json, size_t n)
{
        json_sep(w);
        kiln_buf_put(w->b, json, n);
}

void json_kv_str(struct json_w *w, const char *k, const char *v)
{
        json_key(w, k);
        json_str(w, v);
}

void json_kv_int(struct json_w *w, const char *k, int64_t v)
{
        json_key(w, k);
        json_int(w, v);
}

void json_kv_bool(struct json_w *w, const char *k, int v)
{
        json_key(w, k);
        json_bool(w, v);
}
