/* Secret memory: wiped before free, locked in RAM where permitted. */
#include <string.h>
#include <sys/mman.h>

#include <openssl/crypto.h>

#include "kiln/secret.h"
#include "kiln/util.h"

void kiln_memzero(void *p, size_t n)
{
        if (p != NULL && n > 0)
                OPENSSL_cleanse(p, n);
}

int kiln_ct_equal(const void *a, const void *b, size_t n)
{
        return CRYPTO_memcmp(a, b, n) == 0;
}

int kiln_secret_new(size_t cap, struct kiln_secret **ret)
{
        struct kiln_secret *s;

        if (cap == 0)
                return KILN_E_INVAL;
        s = kiln_calloc(1, sizeof(*s));
        if (s == NULL)
                return KILN_E_NOMEM;
        s->p = kiln_calloc(1, cap);
        if (s->p == NULL) {
                kiln_free(s);
                return KILN_E_NOMEM;
        }
        s->cap = cap;
        /* Best effort: RLIMIT_MEMLOCK may forbid it, and the secret is still wiped on free. */
        (void)mlock(s->p, cap);
        *ret = s;
        return KILN_OK;
}

int kiln_secret_from(const void *p, size_t n, struct kiln_secret **ret)
{
        struct kiln_secret *s = NULL;
        int r = kiln_secret_new(n ? n : 1, &s);

        if (r < 0)
                return r;
        if (n > 0)
                memcpy(s->p, p, n);
        s->len = n;
        *ret = s;
        return KILN_OK;
}

void kiln_secret_free(struct kiln_secret *s)
{
        if (s == NULL)
                return;
        if (s->p != NULL) {
                kiln_memzero(s->p, s->cap);
                (void)munlock(s->p, s->cap);
                kiln_free(s->p);
        }
        kiln_memzero(s, sizeof(*s));
        kiln_free(s);
}
