/*
 * Bounded growable buffer (writer) and a checked reader over a byte view.
 *
 * A kiln_buf has a hard maximum fixed at creation: growth past it fails with KILN_E_LIMIT. Errors are
 * sticky: after the first failure every later put is a no-op returning the same code, so a builder
 * can do a run of puts and check kiln_buf_error() once. kiln_buf_free() wipes the contents, so a
 * buffer may carry secret material.
 *
 * kiln_rd reads little-endian fields from a const view with bounds checks; getters write their output
 * only on success.
 */
#ifndef KILN_BUF_H
#define KILN_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"

struct kiln_buf {
        uint8_t *data;
        size_t len;
        size_t cap;
        size_t max;
        int err;
};

void kiln_buf_init(struct kiln_buf *b, size_t max);
void kiln_buf_free(struct kiln_buf *b);
void kiln_buf_clear(struct kiln_buf *b); /* len = 0, error cleared, memory kept */
int kiln_buf_error(const struct kiln_buf *b);

/* Make room for n more bytes and return a pointer to them (len grows by n). */
int kiln_buf_reserve(struct kiln_buf *b, size_t n, uint8_t **ret_p);
int kiln_buf_put(struct kiln_buf *b, const void *p, size_t n);
int kiln_buf_put_u8(struct kiln_buf *b, uint8_t v);
int kiln_buf_put_le16(struct kiln_buf *b, uint16_t v);
int kiln_buf_put_le32(struct kiln_buf *b, uint32_t v);
int kiln_buf_put_le64(struct kiln_buf *b, uint64_t v);
int kiln_buf_put_str(struct kiln_buf *b, const char *s); /* bytes of s, no terminator */
int kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...) KILN_PRINTF(2, 3);
/* NUL-terminate without counting the terminator in len; returns the data as a C string. */
const char *kiln_buf_cstr(struct kiln_buf *b);

struct kiln_rd {
        const uint8_t *p;
        size_t len;
        size_t off;
};

void kiln_rd_init(struct kiln_rd *r, const void *p, size_t len);
size_t kiln_rd_left(const struct kiln_rd *r);
int kiln_rd_u8(struct kiln_rd *r, uint8_t *ret);
int kiln_rd_le16(struct kiln_rd *r, uint16_t *ret);
int kiln_rd_le32(struct kiln_rd *r, uint32_t *ret);
int kiln_rd_le64(struct kiln_rd *r, uint64_t *ret);
int kiln_rd_bytes(struct kiln_rd *r, size_t n, const uint8_t **ret);
int kiln_rd_copy(struct kiln_rd *r, void *out, size_t n);
/* KILN_OK when every byte was consumed, KILN_E_PROTO_MALFORMED-style callers pick their own code. */
int kiln_rd_end(const struct kiln_rd *r);

#endif
