/*
 * Fuzz target: the device public key and proof-of-possession / attestation checks (hsm_devkey.h),
 * everything a DUT's KEYGEN and ATTEST responses feed the station.
 *
 * Expected format of an input:
 *
 *     u8 key_len ‖ key[key_len] ‖ u8 sig_len ‖ sig[sig_len] ‖ nonce[32] ‖ u8 uid_len ‖ uid[uid_len]
 *     ‖ u8 slot
 *
 * Lengths are taken as they come (no clamping), so wrong sizes reach the library. Whatever the
 * split, the whole input is also tried as a SEC1 point, and as a DER certificate when it starts
 * like one.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln/error.h"
#include "kiln/hsm_devkey.h"
#include "kiln/limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct cursor {
        const uint8_t *p;
        size_t left;
};

static int take(struct cursor *c, size_t n, const uint8_t **ret)
{
        if (n > c->left)
                return 0;
        *ret = c->p;
        c->p += n;
        c->left -= n;
        return 1;
}

static int take_len(struct cursor *c, const uint8_t **ret, size_t *ret_len)
{
        const uint8_t *n;

        if (!take(c, 1, &n) || !take(c, n[0], ret))
                return 0;
        *ret_len = n[0];
        return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct cursor c = {data, size};
        const uint8_t *key, *sig, *nonce, *uid, *slot;
        size_t key_len, sig_len, uid_len;
        struct hsm_devkey *k = NULL;

        kiln_err_reset();
        /* the whole input as a point */
        if (hsm_devkey_parse(data, size, &k) == KILN_OK) {
                hsm_devkey_free(k);
                k = NULL;
        }
        /* and as a certificate, when it is a DER SEQUENCE */
        if (size > 0 && data[0] == 0x30 && hsm_devkey_from_cert(data, size, &k) == KILN_OK) {
                hsm_devkey_free(k);
                k = NULL;
        }
        kiln_err_reset();
        if (!take_len(&c, &key, &key_len) || !take_len(&c, &sig, &sig_len) ||
            !take(&c, KILN_NONCE_LEN, &nonce) || !take_len(&c, &uid, &uid_len) ||
            !take(&c, 1, &slot))
                return 0;
        if (hsm_devkey_parse(key, key_len, &k) != KILN_OK)
                return 0;
        {
                uint8_t fp[32];
                size_t n = 0;
                const uint8_t *pt = hsm_devkey_point(k, &n);

                hsm_devkey_fingerprint(k, fp);
                /* the key keeps exactly the bytes it was given */
                if (n != key_len || memcmp(pt, key, n) != 0)
                        __builtin_trap();
        }
        (void)hsm_devkey_verify_pop(k, nonce, uid, uid_len, slot[0], sig, sig_len);
        kiln_err_reset();
        (void)hsm_devkey_verify_attest(k, nonce, uid, uid_len, slot[0], sig, sig_len);
        kiln_err_reset();
        hsm_devkey_free(k);
        return 0;
}
