/* Bounded buffer and checked reader. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kiln/buf.h"
#include "kiln/endian.h"
#include "kiln/secret.h"
#include "kiln/util.h"

void kiln_buf_init(struct kiln_buf *b, size_t max)
{
        memset(b, 0, sizeof(*b));
        b->max = max;
}

void kiln_buf_free(struct kiln_buf *b)
{
        if (b == NULL)
                return;
        if (b->data != NULL) {
                kiln_memzero(b->data, b->cap);
                kiln_free(b->data);
        }
        b->data = NULL;
        b->len = b->cap = 0;
        b->err = 0;
}

void kiln_buf_clear(struct kiln_buf *b)
{
        b->len = 0;
        b->err = 0;
}

int kiln_buf_error(const struct kiln_buf *b)
{
        return b->err;
}

/* Grow to hold `need` bytes plus a terminator slot. Wipes the old block: it may hold secrets. */
static int buf_grow(struct kiln_buf *b, size_t need)
{
        size_t ncap;
        uint8_t *n;

        if (need < b->cap) /* room for need bytes and a terminator */
                return KILN_OK;
        if (need > b->max)
                return KILN_E_LIMIT;
        ncap = b->cap ? b->cap : 64;
        while (ncap < need + 1) {
                if (ncap > SIZE_MAX / 2) {
                        ncap = need + 1;
                        break;
                }
                ncap *= 2;
        }
        if (ncap > b->max + 1)
                ncap = b->max + 1;
        n = kiln_malloc(ncap);
        if (n == NULL)
                return KILN_E_NOMEM;
        if (b->data != NULL) {
                memcpy(n, b->data, b->len);
                kiln_memzero(b->data, b->cap);
                kiln_free(b->data);
        }
        b->data = n;
        b->cap = ncap;
        return KILN_OK;
}

int kiln_buf_reserve(struct kiln_buf *b, size_t n, uint8_t **ret_p)
{
        int r;

        if (b->err)
                return b->err;
        if (n > SIZE_MAX - b->len - 1) {
                b->err = KILN_E_LIMIT;
                return b->err;
        }
        r = buf_grow(b, b->len + n);
        if (r < 0) {
                b->err = r;
                return r;
        }
        *ret_p = b->data + b->len;
        b->len += n;
        return KILN_OK;
}

int kiln_buf_put(struct kiln_buf *b, const void *p, size_t n)
{
        uint8_t *d = NULL;
        int r = kiln_buf_reserve(b, n, &d);

        if (r < 0)
                return r;
        if (n > 0)
                memcpy(d, p, n);
        return KILN_OK;
}

int kiln_buf_put_u8(struct kiln_buf *b, uint8_t v)
{
        return kiln_buf_put(b, &v, 1);
}

int kiln_buf_put_le16(struct kiln_buf *b, uint16_t v)
{
        uint8_t t[2];

        kiln_put_le16(t, v);
        return kiln_buf_put(b, t, sizeof(t));
}

int kiln_buf_put_le32(struct kiln_buf *b, uint32_t v)
{
        uint8_t t[4];

        kiln_put_le32(t, v);
        return kiln_buf_put(b, t, sizeof(t));
}

int kiln_buf_put_le64(struct kiln_buf *b, uint64_t v)
{
        uint8_t t[8];

        kiln_put_le64(t, v);
        return kiln_buf_put(b, t, sizeof(t));
}

int kiln_buf_put_str(struct kiln_buf *b, const char *s)
{
        return kiln_buf_put(b, s, strlen(s));
}

int kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...)
{
        va_list ap;
        int n, r;
        uint8_t *d = NULL;
        char small[256];

        if (b->err)
                return b->err;
        va_start(ap, fmt);
        n = vsnprintf(small, sizeof(small), fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->err = KILN_E_INTERNAL;
                return b->err;
        }
        if ((size_t)n < sizeof(small))
                return kiln_buf_put(b, small, (size_t)n);
        r = kiln_buf_reserve(b, (size_t)n, &d);
        if (r < 0)
                return r;
        /* reserve kept one spare byte past len for the terminator vsnprintf writes */
        va_start(ap, fmt);
        vsnprintf((char *)d, (size_t)n + 1, fmt, ap);
        va_end(ap);
        return KILN_OK;
}

const char *kiln_buf_cstr(struct kiln_buf *b)
{
        if (b->data == NULL && buf_grow(b, 0) < 0)
                return "";
        b->data[b->len] = '\0';
        return (const char *)b->data;
}

void kiln_rd_init(struct kiln_rd *r, const void *p, size_t len)
{
        r->p = p;
        r->len = len;
        r->off = 0;
}

size_t kiln_rd_left(const struct kiln_rd *r)
{
        return r->len - r->off;
}

int kiln_rd_bytes(struct kiln_rd *r, size_t n, const uint8_t **ret)
{
        if (n > r->len - r->off)
                return KILN_E_TRUNCATED;
        *ret = r->p + r->off;
        r->off += n;
        return KILN_OK;
}

int kiln_rd_copy(struct kiln_rd *r, void *out, size_t n)
{
        const uint8_t *p;
        int e = kiln_rd_bytes(r, n, &p);

        if (e == KILN_OK && n > 0)
                memcpy(out, p, n);
        return e;
}

int kiln_rd_u8(struct kiln_rd *r, uint8_t *ret)
{
        const uint8_t *p;
        int e = kiln_rd_bytes(r, 1, &p);

        if (e == KILN_OK)
                *ret = p[0];
        return e;
}

int kiln_rd_le16(struct kiln_rd *r, uint16_t *ret)
{
        const uint8_t *p;
        int e = kiln_rd_bytes(r, 2, &p);

        if (e == KILN_OK)
                *ret = kiln_le16(p);
        return e;
}

int kiln_rd_le32(struct kiln_rd *r, uint32_t *ret)
{
        const uint8_t *p;
        int e = kiln_rd_bytes(r, 4, &p);

        if (e == KILN_OK)
                *ret = kiln_le32(p);
        return e;
}

int kiln_rd_le64(struct kiln_rd *r, uint64_t *ret)
{
        const uint8_t *p;
        int e = kiln_rd_bytes(r, 8, &p);

        if (e == KILN_OK)
                *ret = kiln_le64(p);
        return e;
}

int kiln_rd_end(const struct kiln_rd *r)
{
        return r->off == r->len ? KILN_OK : KILN_E_RANGE;
}
