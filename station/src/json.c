/* Minimal streaming JSON writer. */
#include <stdio.h>
#include <string.h>

#include "kiln/json.h"

/*
 * Append n bytes: in place when the buffer has room, else through kiln_buf_put (which grows it or
 * records the error). A record is a few hundred small appends into a buffer reused from record to
 * record, so the call into the buffer module was a good part of rendering one. The test is
 * kiln_buf_reserve's: after the append, len stays below cap (room for a terminator).
 */
static inline void jput(struct kiln_buf *b, const void *p, size_t n)
{
        if (b->err == 0 && n < b->cap - b->len) {
                memcpy(b->data + b->len, p, n);
                b->len += n;
                return;
        }
        kiln_buf_put(b, p, n);
}

static inline void jput_u8(struct kiln_buf *b, uint8_t c)
{
        jput(b, &c, 1);
}

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
                jput_u8(w->b, ',');
        w->need_comma[w->depth] = 1;
}

static void json_open(struct json_w *w, char c)
{
        json_sep(w);
        jput_u8(w->b, (uint8_t)c);
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
        jput_u8(w->b, (uint8_t)c);
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

/*
 * Eight bytes that all go out as they are: none below 0x20 or above 0x7F, no '"', no '\\'. The usual
 * word-at-a-time tests: (v - 0x01..) & ~v has a byte's top bit set where that byte of v is zero
 * (exact for "is there one"), and (x - 0x20..) & ~x likewise where a byte is below 0x20.
 */
#define JSON_ONES 0x0101010101010101ULL
#define JSON_HIGH 0x8080808080808080ULL

static int json_plain8(const unsigned char *p)
{
        uint64_t x, q, bs;

        memcpy(&x, p, sizeof(x));
        q = x ^ (JSON_ONES * '"');
        bs = x ^ (JSON_ONES * '\\');
        return ((((x - JSON_ONES * 0x20) & ~x) | ((q - JSON_ONES) & ~q) |
                 ((bs - JSON_ONES) & ~bs) | x) &
                JSON_HIGH) == 0;
}

/* 1 for the bytes that go out as they are: 0x20..0x7F except '"' and '\\'; the rest are 0. */
static const uint8_t json_plain[256] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
        1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20, '"' at 0x22 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50, '\\' at 0x5C */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
        1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
};

int json_escape_into(struct kiln_buf *b, const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;

        while (i < n) {
                unsigned char c = p[i];
                size_t run = 0;

                /* copy the longest run of bytes that need no escaping in one put; most strings
                 * are one such run, checked a word at a time (the last word may overlap) */
                while (n - i - run >= 8 && json_plain8(p + i + run))
                        run += 8;
                if (run > 0 && n - i - run < 8 && json_plain8(p + n - 8))
                        run = n - i;
                else
                        while (i + run < n && json_plain[p[i + run]])
                                run++;
                if (run > 0) {
                        jput(b, p + i, run);
                        i += run;
                        continue;
                }
                switch (c) {
                case '"':
                        jput(b, "\\\"", 2);
                        break;
                case '\\':
                        jput(b, "\\\\", 2);
                        break;
                case '\n':
                        jput(b, "\\n", 2);
                        break;
                case '\r':
                        jput(b, "\\r", 2);
                        break;
                case '\t':
                        jput(b, "\\t", 2);
                        break;
                default:
                        if (c < 0x20) {
                                kiln_buf_printf(b, "\\u%04x", c);
                        } else {
                                size_t l = utf8_len(p + i, n - i);

                                if (l == 0) {
                                        jput(b, "\\ufffd", 6);
                                        l = 1;
                                } else {
                                        jput(b, p + i, l);
                                }
                                i += l;
                                continue;
                        }
                }
                i++;
        }
        return b->err;
}

void json_strn(struct json_w *w, const char *s, size_t n)
{
        json_sep(w);
        jput_u8(w->b, '"');
        json_escape_into(w->b, s, n);
        jput_u8(w->b, '"');
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
        jput_u8(w->b, ':');
        w->after_key = 1;
}

/* Decimal digits of v, as printf's %llu writes them. */
static void jput_dec(struct kiln_buf *b, int neg, uint64_t v)
{
        char t[24];
        size_t i = sizeof(t);

        do {
                t[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v != 0);
        if (neg)
                t[--i] = '-';
        jput(b, t + i, sizeof(t) - i);
}

void json_int(struct json_w *w, int64_t v)
{
        json_sep(w);
        jput_dec(w->b, v < 0, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

void json_uint(struct json_w *w, uint64_t v)
{
        json_sep(w);
        jput_dec(w->b, 0, v);
}

void json_bool(struct json_w *w, int v)
{
        json_sep(w);
        jput(w->b, v ? "true" : "false", v ? 4 : 5);
}

void json_null(struct json_w *w)
{
        json_sep(w);
        jput(w->b, "null", 4);
}

void json_raw(struct json_w *w, const char *json, size_t n)
{
        json_sep(w);
        jput(w->b, json, n);
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
