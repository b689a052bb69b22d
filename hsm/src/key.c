/*
 * Keys and objects: lookups that refuse zero or several matches, the production key policy, and the
 * signing operations (hash on the host, raw CKM_ECDSA / CKM_RSA_PKCS_PSS, CKM_SHA256_HMAC).
 *
 * Object handles of token objects stay valid across the sessions of this application, so a key
 * found on one borrowed session signs on whichever session the next operation borrows.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "hsm_internal.h"
#include "kiln/hsm_devkey.h"

const uint8_t hsm_oid_p256[10] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
const uint8_t hsm_oid_p384[7] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

#define EC_PARAMS_MAX 256u
#define RSA_MODULUS_MAX 1024u /* 8192 bits */

int hsm_objects_find(struct hsm_token *t, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, size_t n,
                     CK_OBJECT_HANDLE *out, size_t max, size_t *ret_n)
{
        size_t got = 0;
        CK_RV rv;
        int r = KILN_OK;

        rv = t->fl->C_FindObjectsInit(s, tmpl, n);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "C_FindObjectsInit on token '%s' failed", t->label);
        while (got < max) {
                CK_ULONG cnt = 0;

                rv = t->fl->C_FindObjects(s, out + got, max - got, &cnt);
                if (rv != CKR_OK) {
                        r = hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                         "C_FindObjects on token '%s' failed", t->label);
                        break;
                }
                if (cnt == 0)
                        break;
                got += cnt > max - got ? max - got : cnt;
        }
        (void)t->fl->C_FindObjectsFinal(s);
        if (r == KILN_OK)
                *ret_n = got;
        return r;
}

int hsm_attr_get(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                 CK_ATTRIBUTE_TYPE type, void *buf, size_t cap, size_t *ret_len)
{
        CK_ATTRIBUTE a = {type, buf, cap};
        CK_RV rv = t->fl->C_GetAttributeValue(s, h, &a, 1);

        /* absent or hidden: the caller decides whether that matters, so no detail here */
        if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
            (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
                return KILN_E_NOT_FOUND;
        if (rv == CKR_BUFFER_TOO_SMALL)
                return kiln_fail(KILN_E_LIMIT,
                                 "token '%s': attribute 0x%lx of an object is larger than %zu "
                                 "bytes",
                                 t->label, (unsigned long)type, cap);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "C_GetAttributeValue on token '%s' failed", t->label);
        *ret_len = a.ulValueLen;
        return KILN_OK;
}

int hsm_attr_alloc(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                   CK_ATTRIBUTE_TYPE type, size_t max, uint8_t **ret, size_t *ret_len)
{
        CK_ATTRIBUTE a = {type, NULL, 0};
        uint8_t *p = NULL;
        size_t len = 0;
        CK_RV rv;
        int r;

        rv = t->fl->C_GetAttributeValue(s, h, &a, 1);
        if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
            (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
                return KILN_E_NOT_FOUND;
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "C_GetAttributeValue on token '%s' failed", t->label);
        if (a.ulValueLen > max)
                return kiln_fail(KILN_E_LIMIT,
                                 "token '%s': attribute 0x%lx is %lu bytes, more than %zu",
                                 t->label, (unsigned long)type, (unsigned long)a.ulValueLen, max);
        p = kiln_malloc(a.ulValueLen + 1);
        if (p == NULL)
                return KILN_E_NOMEM;
        r = hsm_attr_get(t, s, h, type, p, a.ulValueLen, &len);
        if (r < 0) {
                kiln_free(p);
                return r;
        }
        *ret = p;
        *ret_len = len;
        return KILN_OK;
}

/* A CK_BBOOL attribute: 1, 0, or -1 when absent or unreadable. */
static int attr_bool(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                     CK_ATTRIBUTE_TYPE type, int *ret)
{
        CK_BBOOL v = CK_FALSE;
        size_t len = 0;
        int r = hsm_attr_get(t, s, h, type, &v, sizeof(v), &len);

        if (r == KILN_E_NOT_FOUND || (r == KILN_OK && len != sizeof(v))) {
                *ret = -1;
                return KILN_OK;
        }
        if (r < 0)
                return r;
        *ret = v == CK_TRUE;
        return KILN_OK;
}

static int attr_ulong(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      CK_ATTRIBUTE_TYPE type, CK_ULONG *ret)
{
        CK_ULONG v = 0;
        size_t len = 0;
        int r = hsm_attr_get(t, s, h, type, &v, sizeof(v), &len);

        if (r < 0)
                return r;
        if (len != sizeof(v))
                return KILN_E_NOT_FOUND;
        *ret = v;
        return KILN_OK;
}

/* Label (text, made printable) and id of an object; absent ones stay empty. */
static int attr_label_id(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                         char label[HSM_LABEL_MAX + 1], uint8_t id[HSM_ID_MAX], size_t *id_len)
{
        unsigned char raw[HSM_LABEL_MAX];
        size_t len = 0;
        int r;

        label[0] = '\0';
        *id_len = 0;
        r = hsm_attr_get(t, s, h, CKA_LABEL, raw, sizeof(raw), &len);
        if (r == KILN_OK)
                hsm_p11_text(raw, len, label, HSM_LABEL_MAX + 1);
        else if (r != KILN_E_NOT_FOUND)
                return r;
        r = hsm_attr_get(t, s, h, CKA_ID, id, HSM_ID_MAX, &len);
        if (r == KILN_OK)
                *id_len = len;
        else if (r != KILN_E_NOT_FOUND)
                return r;
        return KILN_OK;
}

/* Curve of an EC key from CKA_EC_PARAMS; *ret_curve = HSM_CURVE_MAX for any other curve. */
static int ec_curve(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                    enum hsm_curve *ret_curve)
{
        uint8_t params[EC_PARAMS_MAX];
        size_t len = 0;
        int r = hsm_attr_get(t, s, h, CKA_EC_PARAMS, params, sizeof(params), &len);

        if (r == KILN_E_NOT_FOUND) {
                *ret_curve = HSM_CURVE_MAX;
                return KILN_OK;
        }
        if (r < 0)
                return r;
        if (len == sizeof(hsm_oid_p256) && memcmp(params, hsm_oid_p256, len) == 0)
                *ret_curve = HSM_CURVE_P256;
        else if (len == sizeof(hsm_oid_p384) && memcmp(params, hsm_oid_p384, len) == 0)
                *ret_curve = HSM_CURVE_P384;
        else
                *ret_curve = HSM_CURVE_MAX;
        return KILN_OK;
}

/* Fill kind, sig_len and the mechanism for a key found for use. */
static int key_classify(struct hsm_key *k, CK_SESSION_HANDLE s, enum hsm_key_use use,
                        CK_MECHANISM_TYPE *ret_mech)
{
        struct hsm_token *t = k->tok;
        enum hsm_curve curve;
        size_t len = 0;
        uint8_t *mod = NULL;
        int r;

        if (use == HSM_USE_HMAC) {
                if (k->type != CKK_GENERIC_SECRET && k->type != CKK_SHA256_HMAC)
                        return kiln_fail(KILN_E_HSM_KEY_POLICY,
                                         "key '%s' is %s; HMAC-SHA256 needs CKK_GENERIC_SECRET or "
                                         "CKK_SHA256_HMAC",
                                         k->uri, hsm_key_type_name(k->type));
                k->kind = HSM_KEY_HMAC;
                k->sig_len = HSM_HMAC_LEN;
                *ret_mech = CKM_SHA256_HMAC;
                return KILN_OK;
        }
        if (k->type == CKK_EC) {
                r = ec_curve(t, s, k->handle, &curve);
                if (r < 0)
                        return r;
                if (curve == HSM_CURVE_MAX)
                        return kiln_fail(KILN_E_UNSUPPORTED,
                                         "key '%s' is on a curve kiln does not sign with (P-256 "
                                         "and P-384 only)",
                                         k->uri);
                k->kind = curve == HSM_CURVE_P256 ? HSM_KEY_EC_P256 : HSM_KEY_EC_P384;
                k->sig_len = curve == HSM_CURVE_P256 ? 64 : 96;
                *ret_mech = CKM_ECDSA;
                return KILN_OK;
        }
        if (k->type == CKK_RSA) {
                r = hsm_attr_alloc(t, s, k->handle, CKA_MODULUS, RSA_MODULUS_MAX, &mod, &len);
                kiln_free(mod);
                if (r == KILN_E_NOT_FOUND)
                        return kiln_fail(KILN_E_HSM_KEY_POLICY,
                                         "RSA key '%s' does not show its modulus", k->uri);
                if (r < 0)
                        return r;
                if (len < 256 || len > HSM_SIG_MAX)
                        return kiln_fail(KILN_E_UNSUPPORTED,
                                         "RSA key '%s' has %zu bits; 2048 to 4096 are supported",
                                         k->uri, len * 8);
                k->kind = HSM_KEY_RSA;
                k->sig_len = len;
                *ret_mech = CKM_RSA_PKCS_PSS;
                return KILN_OK;
        }
        return kiln_fail(KILN_E_UNSUPPORTED, "key '%s' is %s; kiln signs with EC and RSA keys",
                         k->uri, hsm_key_type_name(k->type));
}

static int key_policy(const struct hsm_key *k, int sign)
{
        if (sign == 0)
                return kiln_fail(KILN_E_HSM_KEY_POLICY,
                                 "key '%s' is not allowed to sign (CKA_SIGN is false)", k->uri);
        if (!k->tok->production)
                return KILN_OK;
        if (k->extractable != 0)
                return kiln_fail(KILN_E_HSM_KEY_POLICY,
                                 "key '%s' is %s: production needs CKA_EXTRACTABLE=false", k->uri,
                                 k->extractable < 0 ? "of unknown extractability"
                                                    : "extractable");
        if (k->sensitive != 1)
                return kiln_fail(KILN_E_HSM_KEY_POLICY,
                                 "key '%s' is %s: production needs CKA_SENSITIVE=true", k->uri,
                                 k->sensitive < 0 ? "of unknown sensitivity" : "not sensitive");
        return KILN_OK;
}

int hsm_key_find(struct hsm_token *t, const char *uri, enum hsm_key_use use,
                 struct hsm_key **ret)
{
        struct hsm_key *k = NULL;
        struct hsm_uri u;
        CK_ATTRIBUTE tmpl[4];
        CK_OBJECT_CLASS cls, want;
        CK_OBJECT_HANDLE found[2];
        CK_MECHANISM_TYPE mech = 0;
        CK_SESSION_HANDLE s = 0;
        CK_ULONG type = 0;
        size_t n, nfound = 0;
        int have_s = 0, sign = -1, r;

        r = hsm_uri_parse(uri, &u);
        if (r < 0)
                goto out;
        if (use != HSM_USE_SIGN && use != HSM_USE_HMAC) {
                r = kiln_fail(KILN_E_INVAL, "unknown key use %d", (int)use);
                goto out;
        }
        if (!hsm_token_matches_uri(t, &u)) {
                r = kiln_fail(KILN_E_HSM_TOKEN, "key URI '%s' names a token other than '%s'", uri,
                              t->label);
                goto out;
        }
        want = use == HSM_USE_SIGN ? CKO_PRIVATE_KEY : CKO_SECRET_KEY;
        if ((u.has & HSM_URI_TYPE) &&
            u.type != (use == HSM_USE_SIGN ? HSM_OBJ_PRIVATE : HSM_OBJ_SECRET)) {
                r = kiln_fail(KILN_E_HSM_URI, "key URI '%s' does not name a %s", uri,
                              use == HSM_USE_SIGN ? "private key (type=private)"
                                                  : "secret key (type=secret-key)");
                goto out;
        }
        n = hsm_uri_template(&u, &cls, tmpl, 3);
        if (!(u.has & HSM_URI_TYPE)) {
                cls = want;
                tmpl[n++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
        }
        k = kiln_calloc(1, sizeof(*k));
        if (k == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        k->tok = t;
        k->cls = want;
        kiln_strlcpy(k->uri, uri, sizeof(k->uri));
        r = hsm_session_get(t, &s);
        if (r < 0)
                goto out;
        have_s = 1;
        r = hsm_objects_find(t, s, tmpl, n, found, 2, &nfound);
        if (r < 0)
                goto out;
        if (nfound == 0) {
                r = kiln_fail(KILN_E_HSM_KEY_NOT_FOUND, "no %s matches '%s' on token '%s'%s",
                              use == HSM_USE_SIGN ? "private key" : "secret key", uri, t->label,
                              t->logged_in ? "" : " (not logged in: private objects are hidden)");
                goto out;
        }
        if (nfound > 1) {
                r = kiln_fail(KILN_E_HSM_KEY_AMBIGUOUS,
                              "several keys match '%s' on token '%s': make the URI unique (id= "
                              "or a unique object=)",
                              uri, t->label);
                goto out;
        }
        k->handle = found[0];
        r = attr_ulong(t, s, k->handle, CKA_KEY_TYPE, &type);
        if (r < 0) {
                r = kiln_fail(KILN_E_HSM_PKCS11, "cannot read the key type of '%s'", uri);
                goto out;
        }
        k->type = type;
        r = attr_label_id(t, s, k->handle, k->label, k->id, &k->id_len);
        if (r < 0)
                goto out;
        r = attr_bool(t, s, k->handle, CKA_EXTRACTABLE, &k->extractable);
        if (r == KILN_OK)
                r = attr_bool(t, s, k->handle, CKA_SENSITIVE, &k->sensitive);
        if (r == KILN_OK)
                r = attr_bool(t, s, k->handle, CKA_SIGN, &sign);
        if (r < 0)
                goto out;
        r = key_classify(k, s, use, &mech);
        if (r < 0)
                goto out;
        r = hsm_token_require_mechanism(t, mech);
        if (r < 0)
                goto out;
        r = key_policy(k, sign);
        if (r < 0)
                goto out;
        *ret = k;
        k = NULL;
        r = KILN_OK;
out:
        if (have_s)
                hsm_session_put(t, s);
        hsm_key_free(k);
        return r;
}

void hsm_key_free(struct hsm_key *k)
{
        kiln_free(k);
}

enum hsm_key_kind hsm_key_kind(const struct hsm_key *k)
{
        return k->kind;
}

const char *hsm_key_label(const struct hsm_key *k)
{
        return k->label;
}

const EVP_MD *hsm_key_md(const struct hsm_key *k)
{
        return k->kind == HSM_KEY_EC_P384 ? EVP_sha384() : EVP_sha256();
}

int hsm_key_sign_digest(const struct hsm_key *k, CK_SESSION_HANDLE s, const uint8_t *dg,
                        size_t dlen, uint8_t *raw, size_t cap, size_t *ret_len)
{
        struct hsm_token *t = k->tok;
        CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
        CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
        /* room for any signature we accept: a too-small buffer leaves the operation active */
        uint8_t tmp[HSM_SIG_MAX];
        CK_ULONG len = sizeof(tmp);
        CK_RV rv;

        if (k->kind == HSM_KEY_RSA) {
                m = (CK_MECHANISM){CKM_RSA_PKCS_PSS, &pss, sizeof(pss)};
        } else if (k->kind != HSM_KEY_EC_P256 && k->kind != HSM_KEY_EC_P384) {
                return kiln_fail(KILN_E_INVAL, "key '%s' is not a signing key", k->uri);
        }
        if (cap < k->sig_len)
                return kiln_fail(KILN_E_RANGE, "signature buffer of %zu bytes, %zu needed", cap,
                                 k->sig_len);
        rv = t->fl->C_SignInit(s, &m, k->handle);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_SIGN, rv,
                                    "C_SignInit (%s) with key '%s' on token '%s' failed",
                                    hsm_mech_name(m.mechanism), k->label, t->label);
        rv = t->fl->C_Sign(s, (CK_BYTE_PTR)(uintptr_t)dg, dlen, tmp, &len);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_SIGN, rv,
                                    "C_Sign (%s) with key '%s' on token '%s' failed",
                                    hsm_mech_name(m.mechanism), k->label, t->label);
        if (len != k->sig_len)
                return kiln_fail(KILN_E_HSM_SIGN,
                                 "token '%s' returned a %lu-byte signature for key '%s', %zu "
                                 "expected",
                                 t->label, (unsigned long)len, k->label, k->sig_len);
        memcpy(raw, tmp, len);
        *ret_len = len;
        return KILN_OK;
}

int hsm_ecdsa_raw_to_der(const uint8_t *raw, size_t n, uint8_t *der, size_t cap,
                         size_t *ret_len)
{
        ECDSA_SIG *sig = NULL;
        BIGNUM *br = NULL, *bs = NULL;
        unsigned char *p = der;
        int len, r;

        if (n == 0 || n % 2 != 0) {
                r = kiln_fail(KILN_E_INVAL, "raw ECDSA signature of odd length %zu", n);
                goto out;
        }
        sig = ECDSA_SIG_new();
        br = BN_bin2bn(raw, (int)(n / 2), NULL);
        bs = BN_bin2bn(raw + n / 2, (int)(n / 2), NULL);
        if (sig == NULL || br == NULL || bs == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (ECDSA_SIG_set0(sig, br, bs) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "ECDSA_SIG_set0 failed");
                goto out;
        }
        br = bs = NULL;
        len = i2d_ECDSA_SIG(sig, NULL);
        if (len <= 0 || (size_t)len > cap) {
                r = kiln_fail(KILN_E_RANGE, "DER ECDSA signature does not fit %zu bytes", cap);
                goto out;
        }
        len = i2d_ECDSA_SIG(sig, &p);
        if (len <= 0) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "i2d_ECDSA_SIG failed");
                goto out;
        }
        *ret_len = (size_t)len;
        r = KILN_OK;
out:
        BN_free(br);
        BN_free(bs);
        ECDSA_SIG_free(sig);
        return r;
}

int hsm_key_sign_on(const struct hsm_key *k, CK_SESSION_HANDLE s, const void *msg, size_t len,
                    uint8_t *sig, size_t cap, size_t *ret_len)
{
        uint8_t dg[EVP_MAX_MD_SIZE], raw[HSM_SIG_MAX];
        unsigned int dlen = 0;
        size_t rlen = 0;
        int r;

        if (EVP_Digest(msg, len, dg, &dlen, hsm_key_md(k), NULL) != 1)
                return hsm_ossl_fail(KILN_E_CRYPTO, "hashing for key '%s' failed", k->label);
        r = hsm_key_sign_digest(k, s, dg, dlen, raw, sizeof(raw), &rlen);
        if (r < 0)
                return r;
        if (k->kind == HSM_KEY_RSA) {
                if (cap < rlen)
                        return kiln_fail(KILN_E_RANGE, "signature buffer of %zu bytes, %zu needed",
                                         cap, rlen);
                memcpy(sig, raw, rlen);
                *ret_len = rlen;
                return KILN_OK;
        }
        return hsm_ecdsa_raw_to_der(raw, rlen, sig, cap, ret_len);
}

int hsm_key_sign(const struct hsm_key *k, const void *msg, size_t len, uint8_t *sig, size_t cap,
                 size_t *ret_len)
{
        CK_SESSION_HANDLE s;
        int r = hsm_session_get(k->tok, &s);

        if (r < 0)
                return r;
        r = hsm_key_sign_on(k, s, msg, len, sig, cap, ret_len);
        hsm_session_put(k->tok, s);
        return r;
}

int hsm_key_hmac(const struct hsm_key *k, const void *msg, size_t len,
                 uint8_t ret_mac[HSM_HMAC_LEN])
{
        struct hsm_token *t = k->tok;
        CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
        uint8_t mac[HSM_SIG_MAX];
        CK_ULONG mlen = sizeof(mac);
        CK_SESSION_HANDLE s;
        CK_RV rv;
        int r;

        if (k->kind != HSM_KEY_HMAC)
                return kiln_fail(KILN_E_INVAL, "key '%s' is not an HMAC key", k->uri);
        r = hsm_session_get(t, &s);
        if (r < 0)
                return r;
        rv = t->fl->C_SignInit(s, &m, k->handle);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_SIGN, rv,
                                 "C_SignInit (CKM_SHA256_HMAC) with key '%s' on token '%s' failed",
                                 k->label, t->label);
                goto out;
        }
        rv = t->fl->C_Sign(s, (CK_BYTE_PTR)(uintptr_t)msg, len, mac, &mlen);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_SIGN, rv,
                                 "C_Sign (CKM_SHA256_HMAC) with key '%s' on token '%s' failed",
                                 k->label, t->label);
                goto out;
        }
        if (mlen != HSM_HMAC_LEN) {
                r = kiln_fail(KILN_E_HSM_SIGN, "token '%s' returned a %lu-byte HMAC-SHA256",
                              t->label, (unsigned long)mlen);
                goto out;
        }
        memcpy(ret_mac, mac, HSM_HMAC_LEN);
        r = KILN_OK;
out:
        kiln_memzero(mac, sizeof(mac));
        hsm_session_put(t, s);
        return r;
}

/* CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some modules send it bare. */
static int ec_point_unwrap(const uint8_t *p, size_t len, size_t want, const uint8_t **ret,
                           size_t *ret_len)
{
        if (len >= 2 && p[0] == 0x04) {
                size_t hdr = 0, inner = 0;

                if (p[1] < 0x80) {
                        hdr = 2;
                        inner = p[1];
                } else if (p[1] == 0x81 && len >= 3) {
                        hdr = 3;
                        inner = p[2];
                }
                if (hdr != 0 && hdr + inner == len && inner == want) {
                        *ret = p + hdr;
                        *ret_len = inner;
                        return KILN_OK;
                }
        }
        if (len == want) {
                *ret = p;
                *ret_len = len;
                return KILN_OK;
        }
        return kiln_fail(KILN_E_HSM_PKCS11, "CKA_EC_POINT of %zu bytes is not a %zu-byte point",
                         len, want);
}

static int rsa_pkey(const uint8_t *n, size_t nlen, const uint8_t *e, size_t elen, EVP_PKEY **ret)
{
        OSSL_PARAM_BLD *bld = NULL;
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = NULL;
        BIGNUM *bn = NULL, *be = NULL;
        EVP_PKEY *pk = NULL;
        int r;

        bn = BN_bin2bn(n, (int)nlen, NULL);
        be = BN_bin2bn(e, (int)elen, NULL);
        bld = OSSL_PARAM_BLD_new();
        if (bn == NULL || be == NULL || bld == NULL ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) != 1 ||
            (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
            EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot import an RSA public key");
                goto out;
        }
        *ret = pk;
        pk = NULL;
        r = KILN_OK;
out:
        EVP_PKEY_free(pk);
        EVP_PKEY_CTX_free(ctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        BN_free(bn);
        BN_free(be);
        return r;
}

int hsm_key_public_pkey(const struct hsm_key *k, EVP_PKEY **ret)
{
        struct hsm_token *t = k->tok;
        CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
        CK_ATTRIBUTE tmpl[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, NULL, 0}};
        CK_OBJECT_HANDLE found[2];
        CK_SESSION_HANDLE s = 0;
        uint8_t *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0, n = 0;
        int have_s = 0, r;

        if (k->kind == HSM_KEY_HMAC) {
                r = kiln_fail(KILN_E_INVAL, "key '%s' is a secret key", k->uri);
                goto out;
        }
        /* the public half shares the private key's CKA_ID, or its label when it has no id */
        if (k->id_len > 0)
                tmpl[1] = (CK_ATTRIBUTE){CKA_ID, (void *)(uintptr_t)k->id, k->id_len};
        else
                tmpl[1] = (CK_ATTRIBUTE){CKA_LABEL, (void *)(uintptr_t)k->label,
                                         strlen(k->label)};
        r = hsm_session_get(t, &s);
        if (r < 0)
                goto out;
        have_s = 1;
        r = hsm_objects_find(t, s, tmpl, 2, found, 2, &n);
        if (r < 0)
                goto out;
        if (n != 1) {
                r = kiln_fail(n == 0 ? KILN_E_HSM_KEY_NOT_FOUND : KILN_E_HSM_KEY_AMBIGUOUS,
                              "%s public key object with the id of '%s' on token '%s'",
                              n == 0 ? "no" : "more than one", k->uri, t->label);
                goto out;
        }
        if (k->kind == HSM_KEY_RSA) {
                r = hsm_attr_alloc(t, s, found[0], CKA_MODULUS, RSA_MODULUS_MAX, &a, &alen);
                if (r == KILN_OK)
                        r = hsm_attr_alloc(t, s, found[0], CKA_PUBLIC_EXPONENT, 16, &b, &blen);
                if (r < 0) {
                        r = kiln_fail(r == KILN_E_NOT_FOUND ? KILN_E_HSM_KEY_NOT_FOUND : r,
                                      "cannot read the RSA public key of '%s'", k->uri);
                        goto out;
                }
                r = rsa_pkey(a, alen, b, blen, ret);
        } else {
                enum hsm_curve c = k->kind == HSM_KEY_EC_P256 ? HSM_CURVE_P256 : HSM_CURVE_P384;
                const uint8_t *pt = NULL;
                size_t ptlen = 0;

                r = hsm_attr_alloc(t, s, found[0], CKA_EC_POINT, 256, &a, &alen);
                if (r < 0) {
                        r = kiln_fail(r == KILN_E_NOT_FOUND ? KILN_E_HSM_KEY_NOT_FOUND : r,
                                      "cannot read CKA_EC_POINT of the public key of '%s'",
                                      k->uri);
                        goto out;
                }
                r = ec_point_unwrap(a, alen, c == HSM_CURVE_P256 ? 65 : 97, &pt, &ptlen);
                if (r == KILN_OK)
                        r = hsm_ec_pkey_from_point(c, pt, ptlen, ret);
        }
out:
        kiln_free(a);
        kiln_free(b);
        if (have_s)
                hsm_session_put(t, s);
        return r;
}

int hsm_key_public_der(const struct hsm_key *k, uint8_t **ret, size_t *ret_len)
{
        EVP_PKEY *pk = NULL;
        uint8_t *der = NULL, *p;
        int len, r;

        r = hsm_key_public_pkey(k, &pk);
        if (r < 0)
                goto out;
        len = i2d_PUBKEY(pk, NULL);
        if (len <= 0) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot encode the public key of '%s'", k->uri);
                goto out;
        }
        der = kiln_malloc((size_t)len);
        if (der == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        p = der;
        if (i2d_PUBKEY(pk, &p) != len) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot encode the public key of '%s'", k->uri);
                goto out;
        }
        *ret = der;
        *ret_len = (size_t)len;
        der = NULL;
        r = KILN_OK;
out:
        kiln_free(der);
        EVP_PKEY_free(pk);
        return r;
}

int hsm_token_find_objects(struct hsm_token *t, const char *uri, struct hsm_object_desc *out,
                           size_t max, size_t *ret_n)
{
        CK_OBJECT_HANDLE *found = NULL;
        CK_ATTRIBUTE tmpl[3];
        CK_OBJECT_CLASS cls;
        CK_SESSION_HANDLE s = 0;
        struct hsm_uri u;
        size_t n, nfound = 0;
        int have_s = 0, r;

        r = hsm_uri_parse(uri, &u);
        if (r < 0)
                goto out;
        if (!hsm_token_matches_uri(t, &u)) {
                r = kiln_fail(KILN_E_HSM_TOKEN, "URI '%s' names a token other than '%s'", uri,
                              t->label);
                goto out;
        }
        n = hsm_uri_template(&u, &cls, tmpl, 3);
        found = kiln_calloc(max ? max : 1, sizeof(*found));
        if (found == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        r = hsm_session_get(t, &s);
        if (r < 0)
                goto out;
        have_s = 1;
        r = hsm_objects_find(t, s, tmpl, n, found, max, &nfound);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < nfound; i++) {
                struct hsm_object_desc *d = &out[i];
                CK_ULONG v = 0;
                enum hsm_curve c;

                memset(d, 0, sizeof(*d));
                d->extractable = d->sensitive = d->sign = -1;
                r = attr_ulong(t, s, found[i], CKA_CLASS, &v);
                if (r < 0) {
                        r = kiln_fail(KILN_E_HSM_PKCS11, "cannot read the class of an object");
                        goto out;
                }
                d->cls = v;
                r = attr_label_id(t, s, found[i], d->label, d->id, &d->id_len);
                if (r < 0)
                        goto out;
                d->is_key = d->cls == CKO_PRIVATE_KEY || d->cls == CKO_PUBLIC_KEY ||
                            d->cls == CKO_SECRET_KEY;
                d->is_secret = d->cls == CKO_PRIVATE_KEY || d->cls == CKO_SECRET_KEY;
                if (!d->is_key)
                        continue;
                if (attr_ulong(t, s, found[i], CKA_KEY_TYPE, &v) == KILN_OK)
                        d->key_type = v;
                if (d->cls != CKO_PUBLIC_KEY) {
                        r = attr_bool(t, s, found[i], CKA_EXTRACTABLE, &d->extractable);
                        if (r == KILN_OK)
                                r = attr_bool(t, s, found[i], CKA_SENSITIVE, &d->sensitive);
                        if (r == KILN_OK)
                                r = attr_bool(t, s, found[i], CKA_SIGN, &d->sign);
                        if (r < 0)
                                goto out;
                }
                if (d->key_type == CKK_EC) {
                        r = ec_curve(t, s, found[i], &c);
                        if (r < 0)
                                goto out;
                        kiln_strlcpy(d->curve,
                                     c == HSM_CURVE_P256   ? "P-256"
                                     : c == HSM_CURVE_P384 ? "P-384"
                                                           : "other",
                                     sizeof(d->curve));
                } else if (d->key_type == CKK_RSA) {
                        if (attr_ulong(t, s, found[i], CKA_MODULUS_BITS, &v) == KILN_OK)
                                d->bits = v;
                } else if (d->cls == CKO_SECRET_KEY) {
                        if (attr_ulong(t, s, found[i], CKA_VALUE_LEN, &v) == KILN_OK)
                                d->bits = v * 8;
                }
        }
        *ret_n = nfound;
        r = KILN_OK;
out:
        if (have_s)
                hsm_session_put(t, s);
        kiln_free(found);
        return r;
}
