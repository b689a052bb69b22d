/*
 * Secret memory: PINs, device passwords, HMAC keys. A kiln_secret is wiped with OPENSSL_cleanse before
 * it is freed and locked into RAM where the OS allows it (best effort, so it is not written to swap).
 * Never log, store or print a secret; compare secrets with kiln_ct_equal().
 */
#ifndef KILN_SECRET_H
#define KILN_SECRET_H

#include <stddef.h>
#include <stdint.h>

struct kiln_secret {
        uint8_t *p;
        size_t len; /* bytes in use */
        size_t cap; /* bytes allocated */
};

/* A zeroed secret of cap bytes with len 0. */
int kiln_secret_new(size_t cap, struct kiln_secret **ret);
/* A copy of p[0..n). */
int kiln_secret_from(const void *p, size_t n, struct kiln_secret **ret);
void kiln_secret_free(struct kiln_secret *s); /* NULL-safe, wipes */

void kiln_memzero(void *p, size_t n);
/* 1 when equal, 0 otherwise, in time independent of the contents. */
int kiln_ct_equal(const void *a, const void *b, size_t n);

#endif
