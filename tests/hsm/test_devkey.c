/*
 * Device public keys, proofs of possession and attestations (docs/protocol.md §5.3, §5.9): good
 * keys and signatures verify, and every malformed key or wrong signature is refused.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "hsm_test.h"
#include "kiln/hsm_devkey.h"

static const uint8_t uid[] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

struct device {
        EVP_PKEY *pk;
        uint8_t point[97];
        size_t len;
        size_t fs;
};

static void device_new(struct device *d, const char *curve)
{
        d->pk = ht_device_key(curve, d->point, sizeof(d->point), &d->len);
        d->fs = (d->len - 1) / 2;
}

static void device_sign(const struct device *d, const char *label, const uint8_t *nonce,
                        const uint8_t *u, size_t ulen, uint8_t slot, uint8_t *raw)
{
        ht_device_sign(d->pk, label, nonce, u, ulen, slot, raw, d->fs);
}

static void bad_key(const uint8_t *p, size_t n, const char *want)
{
        struct hsm_devkey *k = NULL;

        kiln_err_reset();
        assert_int_equal(hsm_devkey_parse(p, n, &k), KILN_E_PUBKEY_INVALID);
        assert_null(k);
        if (strstr(kiln_err_detail(), want) == NULL)
                fail_msg("detail '%s' lacks '%s'", kiln_err_detail(), want);
        kiln_err_reset();
}

static void test_pop_and_attest(const char *curve)
{
        struct device d;
        struct hsm_devkey *k = NULL;
        uint8_t nonce[32], raw[96], other[32];

        memset(nonce, 0xa5, sizeof(nonce));
        memset(other, 0x5a, sizeof(other));
        device_new(&d, curve);
        assert_int_equal(hsm_devkey_parse(d.point, d.len, &k), KILN_OK);
        assert_int_equal(hsm_devkey_curve(k),
                         d.len == 65 ? HSM_CURVE_P256 : HSM_CURVE_P384);
        device_sign(&d, HSM_POP_LABEL, nonce, uid, sizeof(uid), 3, raw);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_OK);
        /* any change to what was signed fails: nonce, UID, slot, label, signature */
        kiln_err_reset();
        assert_int_equal(hsm_devkey_verify_pop(k, other, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        assert_non_null(strstr(kiln_err_detail(), "proof of possession signature does not verify"));
        kiln_err_reset();
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid) - 1, 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 4, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        /* a proof of possession is no attestation, and the reverse */
        assert_int_equal(hsm_devkey_verify_attest(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        device_sign(&d, HSM_ATTEST_LABEL, nonce, uid, sizeof(uid), 3, raw);
        assert_int_equal(hsm_devkey_verify_attest(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_OK);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        raw[5] ^= 0x40;
        assert_int_equal(hsm_devkey_verify_attest(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        /* wrong signature length, r = s = 0, no UID, UID too long */
        kiln_err_reset();
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs - 1),
                         KILN_E_POP_INVALID);
        assert_non_null(strstr(kiln_err_detail(), "raw r||s"));
        memset(raw, 0, sizeof(raw));
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, 0, 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, KILN_UID_MAX + 1, 3, raw, 2 * d.fs),
                         KILN_E_POP_INVALID);
        kiln_err_reset();
        hsm_devkey_free(k);
        EVP_PKEY_free(d.pk);
}

static void test_p256(void **state)
{
        (void)state;
        test_pop_and_attest("P-256");
}

static void test_p384(void **state)
{
        (void)state;
        test_pop_and_attest("P-384");
}

/* A signature with r or s equal to the group order n is out of range. */
static void test_scalar_range(void **state)
{
        static const uint8_t n256[32] = {
                0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17,
                0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
        struct device d;
        struct hsm_devkey *k = NULL;
        uint8_t nonce[32] = {0}, raw[64];

        (void)state;
        device_new(&d, "P-256");
        assert_int_equal(hsm_devkey_parse(d.point, d.len, &k), KILN_OK);
        device_sign(&d, HSM_POP_LABEL, nonce, uid, sizeof(uid), 0, raw);
        memcpy(raw + 32, n256, 32);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 0, raw, 64),
                         KILN_E_POP_INVALID);
        memset(raw + 32, 0xff, 32);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 0, raw, 64),
                         KILN_E_POP_INVALID);
        kiln_err_reset();
        hsm_devkey_free(k);
        EVP_PKEY_free(d.pk);
}

static void test_malformed_keys(void **state)
{
        static const uint8_t p256_p[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
                                           0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                           0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        struct device d;
        uint8_t p[98], zero = 0x00;

        (void)state;
        device_new(&d, "P-256");
        /* wrong lengths */
        bad_key(d.point, 64, "64 bytes");
        memcpy(p, d.point, 65);
        p[65] = 0;
        bad_key(p, 66, "66 bytes");
        bad_key(d.point, 33, "33 bytes");
        bad_key(d.point, 1, "1 bytes");
        bad_key(d.point, 0, "empty");
        bad_key(NULL, 65, "empty");
        /* SEC1 prefixes other than 0x04: compressed, hybrid, junk */
        memcpy(p, d.point, 65);
        p[0] = 0x02;
        bad_key(p, 33, "prefix 0x02");
        p[0] = 0x03;
        bad_key(p, 65, "prefix 0x03");
        p[0] = 0x05;
        bad_key(p, 65, "prefix 0x05");
        p[0] = 0x06;
        bad_key(p, 65, "prefix 0x06");
        p[0] = 0x07;
        bad_key(p, 65, "prefix 0x07");
        /* the point at infinity */
        bad_key(&zero, 1, "infinity");
        memset(p, 0, 65);
        bad_key(p, 65, "infinity");
        /* (0, 0) and a nudged Y are not on the curve */
        memset(p, 0, 65);
        p[0] = 0x04;
        bad_key(p, 65, "not on the curve P-256");
        memcpy(p, d.point, 65);
        p[64] ^= 0x01;
        bad_key(p, 65, "not on the curve P-256");
        /* X = p (coordinates must be below the field prime) */
        memcpy(p, d.point, 65);
        memcpy(p + 1, p256_p, 32);
        bad_key(p, 65, "not on the curve P-256");
        /* a P-256 point presented as P-384 length */
        memset(p, 0, sizeof(p));
        memcpy(p, d.point, 65);
        bad_key(p, 97, "not on the curve P-384");
        EVP_PKEY_free(d.pk);
}

static void test_fingerprint_and_cert(void **state)
{
        struct device d;
        struct hsm_devkey *k = NULL, *k2 = NULL;
        uint8_t fp[32], want[32], *der = NULL, garbage[16] = {0x30, 0x03, 0x02, 0x01, 0x01};
        const uint8_t *pt;
        size_t n = 0;
        int len;
        X509 *x = X509_new();

        (void)state;
        device_new(&d, "P-256");
        assert_int_equal(hsm_devkey_parse(d.point, d.len, &k), KILN_OK);
        hsm_devkey_fingerprint(k, fp);
        len = i2d_PUBKEY(d.pk, &der);
        assert_true(len > 0);
        SHA256(der, (size_t)len, want);
        assert_memory_equal(fp, want, 32);
        OPENSSL_free(der);
        der = NULL;
        pt = hsm_devkey_point(k, &n);
        assert_int_equal(n, 65);
        assert_memory_equal(pt, d.point, 65);
        /* the key of a certificate (here a bare self-signed one) */
        assert_non_null(x);
        assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
        assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
        assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
        assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 60));
        assert_int_equal(X509_set_pubkey(x, d.pk), 1);
        assert_true(X509_sign(x, d.pk, EVP_sha256()) > 0);
        len = i2d_X509(x, &der);
        assert_true(len > 0);
        assert_int_equal(hsm_devkey_from_cert(der, (size_t)len, &k2), KILN_OK);
        pt = hsm_devkey_point(k2, &n);
        assert_memory_equal(pt, d.point, 65);
        kiln_err_reset();
        assert_int_equal(hsm_devkey_from_cert(der, (size_t)len - 1, &k2), KILN_E_PUBKEY_INVALID);
        assert_int_equal(hsm_devkey_from_cert(garbage, 5, &k2), KILN_E_PUBKEY_INVALID);
        assert_int_equal(hsm_devkey_from_cert(der, 0, &k2), KILN_E_PUBKEY_INVALID);
        kiln_err_reset();
        OPENSSL_free(der);
        X509_free(x);
        hsm_devkey_free(k);
        hsm_devkey_free(k2);
        EVP_PKEY_free(d.pk);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_p256),
                cmocka_unit_test(test_p384),
                cmocka_unit_test(test_scalar_range),
                cmocka_unit_test(test_malformed_keys),
                cmocka_unit_test(test_fingerprint_and_cert),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
