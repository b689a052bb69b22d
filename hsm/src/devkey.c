/*
 * Device public keys, proofs of possession and attestations (docs/protocol.md §5.3, §5.9).
 *
 * Expected format of a key: SEC1 uncompressed point, 0x04 ‖ X ‖ Y, 65 bytes (P-256) or 97 bytes
 * (P-384). OpenSSL's import checks that X and Y are below p and that the point is on the curve.
 *
 * Expected format of a signature: raw r ‖ s, 64 bytes (P-256) or 96 bytes (P-384), over the SHA-256
 * of label ‖ nonce[32] ‖ uid_len (u8) ‖ uid (1..32 bytes) ‖ key_slot (u8).
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "hsm_internal.h"
#include "kiln/hsm_devkey.h"

#define POINT_MAX 97u

struct hsm_devkey {
        enum hsm_curve curve;
        uint8_t point[POINT_MAX];
        size_t len;
        EVP_PKEY *pkey;
};

/* SubjectPublicKeyInfo DER up to the point: id-ecPublicKey, the named curve, BIT STRING header. */
static const uint8_t spki_p256[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                    0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                    0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
static const uint8_t spki_p384[] = {0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86,
                                    0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
                                    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00};

static const char *curve_name(enum hsm_curve c)
{
        return c == HSM_CURVE_P256 ? "P-256" : "P-384";
}

int hsm_ec_pkey_from_point(enum hsm_curve c, const uint8_t *pt, size_t len, EVP_PKEY **ret)
{
        char p256[] = "prime256v1", p384[] = "secp384r1";
        OSSL_PARAM params[3];
        EVP_PKEY_CTX *ctx = NULL;
        EVP_PKEY *pk = NULL;
        int r;

        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                     c == HSM_CURVE_P256 ? p256 : p384, 0);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                      (void *)(uintptr_t)pt, len);
        params[2] = OSSL_PARAM_construct_end();
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot set up an EC key import");
                goto out;
        }
        if (EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1) {
                r = hsm_ossl_fail(KILN_E_PUBKEY_INVALID, "the point is not on the curve %s",
                                  curve_name(c));
                goto out;
        }
        *ret = pk;
        pk = NULL;
        r = KILN_OK;
out:
        EVP_PKEY_free(pk);
        EVP_PKEY_CTX_free(ctx);
        return r;
}

int hsm_devkey_parse(const uint8_t *point, size_t len, struct hsm_devkey **ret)
{
        struct hsm_devkey *k = NULL;
        enum hsm_curve c;
        int r;

        if (point == NULL || len == 0) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID, "device public key is empty");
                goto out;
        }
        if (point[0] == 0x00) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID,
                              "device public key is the point at infinity (prefix 0x00)");
                goto out;
        }
        if (point[0] != 0x04) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID,
                              "device public key has SEC1 prefix 0x%02x: only uncompressed points "
                              "(0x04) are accepted",
                              point[0]);
                goto out;
        }
        if (len == 65) {
                c = HSM_CURVE_P256;
        } else if (len == 97) {
                c = HSM_CURVE_P384;
        } else {
                r = kiln_fail(KILN_E_PUBKEY_INVALID,
                              "device public key is %zu bytes: an uncompressed P-256 point is 65 "
                              "bytes (P-384: 97)",
                              len);
                goto out;
        }
        k = kiln_calloc(1, sizeof(*k));
        if (k == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        k->curve = c;
        k->len = len;
        memcpy(k->point, point, len);
        r = hsm_ec_pkey_from_point(c, point, len, &k->pkey);
        if (r < 0)
                goto out;
        *ret = k;
        k = NULL;
        r = KILN_OK;
out:
        hsm_devkey_free(k);
        return r;
}

int hsm_devkey_from_cert(const uint8_t *der, size_t len, struct hsm_devkey **ret)
{
        const unsigned char *p = der;
        const unsigned char *pk = NULL;
        const ASN1_OBJECT *alg = NULL, *curve = NULL;
        X509_ALGOR *algor = NULL;
        const void *pval = NULL;
        X509_PUBKEY *pub;
        X509 *x = NULL;
        int pklen = 0, ptype = 0, r;

        if (der == NULL || len == 0 || len > KILN_CERT_DER_MAX) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID, "certificate of %zu bytes (1..%u)", len,
                              KILN_CERT_DER_MAX);
                goto out;
        }
        x = d2i_X509(NULL, &p, (long)len);
        if (x == NULL || p != der + len) {
                r = hsm_ossl_fail(KILN_E_PUBKEY_INVALID, "malformed certificate");
                goto out;
        }
        pub = X509_get_X509_PUBKEY(x);
        if (pub == NULL || X509_PUBKEY_get0_param(NULL, &pk, &pklen, &algor, pub) != 1) {
                r = hsm_ossl_fail(KILN_E_PUBKEY_INVALID, "certificate without a public key");
                goto out;
        }
        X509_ALGOR_get0(&alg, &ptype, &pval, algor);
        if (OBJ_obj2nid(alg) != NID_X9_62_id_ecPublicKey || ptype != V_ASN1_OBJECT) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID,
                              "certificate key is not an EC key on a named curve");
                goto out;
        }
        curve = pval;
        if (OBJ_obj2nid(curve) != NID_X9_62_prime256v1 && OBJ_obj2nid(curve) != NID_secp384r1) {
                r = kiln_fail(KILN_E_PUBKEY_INVALID, "certificate key is not on P-256 or P-384");
                goto out;
        }
        r = hsm_devkey_parse(pk, (size_t)pklen, ret);
out:
        X509_free(x);
        return r;
}

void hsm_devkey_free(struct hsm_devkey *k)
{
        if (k == NULL)
                return;
        EVP_PKEY_free(k->pkey);
        kiln_free(k);
}

enum hsm_curve hsm_devkey_curve(const struct hsm_devkey *k)
{
        return k->curve;
}

const uint8_t *hsm_devkey_point(const struct hsm_devkey *k, size_t *ret_len)
{
        *ret_len = k->len;
        return k->point;
}

void hsm_devkey_fingerprint(const struct hsm_devkey *k, uint8_t ret[32])
{
        const uint8_t *pre = k->curve == HSM_CURVE_P256 ? spki_p256 : spki_p384;
        size_t plen = k->curve == HSM_CURVE_P256 ? sizeof(spki_p256) : sizeof(spki_p384);
        uint8_t spki[sizeof(spki_p256) + POINT_MAX];

        memcpy(spki, pre, plen);
        memcpy(spki + plen, k->point, k->len);
        SHA256(spki, plen + k->len, ret);
}

static int verify_labelled(const struct hsm_devkey *k, const char *label, const char *what,
                           const uint8_t *nonce, const uint8_t *uid, size_t uid_len,
                           uint8_t key_slot, const uint8_t *sig, size_t sig_len)
{
        uint8_t msg[16 + KILN_NONCE_LEN + 1 + KILN_UID_MAX + 1], dg[SHA256_DIGEST_LENGTH];
        uint8_t der[2 * POINT_MAX + 16];
        size_t fs = k->curve == HSM_CURVE_P256 ? 32 : 48, llen = strlen(label), n = 0, dlen = 0;
        EVP_PKEY_CTX *ctx = NULL;
        int v, r = KILN_E_POP_INVALID;

        if (nonce == NULL || uid == NULL || uid_len == 0 || uid_len > KILN_UID_MAX) {
                r = kiln_fail(KILN_E_POP_INVALID, "%s over a chip UID of %zu bytes (1..%u)", what,
                              uid == NULL ? 0 : uid_len, KILN_UID_MAX);
                goto out;
        }
        if (sig == NULL || sig_len != 2 * fs) {
                r = kiln_fail(KILN_E_POP_INVALID,
                              "%s signature is %zu bytes: raw r||s for %s is %zu bytes", what,
                              sig == NULL ? 0 : sig_len, curve_name(k->curve), 2 * fs);
                goto out;
        }
        memcpy(msg, label, llen);
        n = llen;
        memcpy(msg + n, nonce, KILN_NONCE_LEN);
        n += KILN_NONCE_LEN;
        msg[n++] = (uint8_t)uid_len;
        memcpy(msg + n, uid, uid_len);
        n += uid_len;
        msg[n++] = key_slot;
        SHA256(msg, n, dg);
        r = hsm_ecdsa_raw_to_der(sig, sig_len, der, sizeof(der), &dlen);
        if (r < 0)
                goto out;
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        if (ctx == NULL || EVP_PKEY_verify_init(ctx) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot set up ECDSA verification");
                goto out;
        }
        v = EVP_PKEY_verify(ctx, der, dlen, dg, sizeof(dg));
        if (v != 1) {
                r = hsm_ossl_fail(KILN_E_POP_INVALID, "%s signature does not verify with the %s key",
                                  what, curve_name(k->curve));
                goto out;
        }
        r = KILN_OK;
out:
        EVP_PKEY_CTX_free(ctx);
        return r;
}

int hsm_devkey_verify_pop(const struct hsm_devkey *k, const uint8_t nonce[KILN_NONCE_LEN],
                          const uint8_t *uid, size_t uid_len, uint8_t key_slot,
                          const uint8_t *sig, size_t sig_len)
{
        return verify_labelled(k, HSM_POP_LABEL, "proof of possession", nonce, uid, uid_len,
                               key_slot, sig, sig_len);
}

int hsm_devkey_verify_attest(const struct hsm_devkey *k, const uint8_t nonce[KILN_NONCE_LEN],
                             const uint8_t *uid, size_t uid_len, uint8_t key_slot,
                             const uint8_t *sig, size_t sig_len)
{
        return verify_labelled(k, HSM_ATTEST_LABEL, "attestation", nonce, uid, uid_len, key_slot,
                               sig, sig_len);
}
