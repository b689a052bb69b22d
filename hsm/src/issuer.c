/*
 * Issuers: the issuing key, its certificate and chain read from the token once, verified once, and
 * cached with everything each issuance needs (the issuer name and signature algorithm, the issuer's key id, a verify
 * store holding the verified issuing CA). See kiln/hsm_cert.h.
 */
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "hsm_internal.h"

#define TOKEN_CERTS_MAX 64u /* certificate objects we look at in one token */

struct hsm_issuer {
        struct hsm_token *tok;
        struct hsm_key *key;
        X509 *cert; /* the issuing CA */
        uint8_t ski[64];
        size_t ski_len;
        struct hsm_signer sg;
        X509_STORE *store; /* the issuing CA as trust anchor: its chain was verified at load */
        uint8_t *chain[HSM_CHAIN_MAX];
        size_t chain_len[HSM_CHAIN_MAX];
        size_t n_chain;
};

static int x509_from_der(const uint8_t *der, size_t len, X509 **ret)
{
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);

        if (x == NULL || p != der + len) {
                X509_free(x);
                return hsm_ossl_fail(KILN_E_CERT_VERIFY, "malformed certificate object");
        }
        *ret = x;
        return KILN_OK;
}

/* The certificate object with the key's CKA_ID and CKA_LABEL, and every certificate in the token. */
static int token_certs(struct hsm_issuer *iss, CK_SESSION_HANDLE s, X509 **ret_cert,
                       STACK_OF(X509) * all)
{
        struct hsm_token *t = iss->tok;
        const struct hsm_key *k = iss->key;
        CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
        CK_CERTIFICATE_TYPE ct = CKC_X_509;
        CK_ATTRIBUTE mine[4] = {{CKA_CLASS, &cls, sizeof(cls)},
                                {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)}};
        CK_OBJECT_HANDLE found[TOKEN_CERTS_MAX];
        uint8_t *der = NULL;
        size_t n = 0, nmine = 2, der_len = 0;
        X509 *x = NULL;
        int r;

        if (k->id_len == 0 && k->label[0] == '\0') {
                r = kiln_fail(KILN_E_CERT_VERIFY,
                              "issuing key '%s' has neither CKA_ID nor CKA_LABEL to find its "
                              "certificate by",
                              k->uri);
                goto out;
        }
        if (k->id_len > 0)
                mine[nmine++] = (CK_ATTRIBUTE){CKA_ID, (void *)(uintptr_t)k->id, k->id_len};
        if (k->label[0] != '\0')
                mine[nmine++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)(uintptr_t)k->label,
                                               strlen(k->label)};
        r = hsm_objects_find(t, s, mine, nmine, found, 2, &n);
        if (r < 0)
                goto out;
        if (n != 1) {
                r = kiln_fail(n == 0 ? KILN_E_HSM_KEY_NOT_FOUND : KILN_E_HSM_KEY_AMBIGUOUS,
                              "%s certificate object with the CKA_ID and CKA_LABEL of issuing key "
                              "'%s' on token '%s'",
                              n == 0 ? "no" : "more than one", k->uri, t->label);
                goto out;
        }
        r = hsm_attr_alloc(t, s, found[0], CKA_VALUE, KILN_CERT_DER_MAX, &der, &der_len);
        if (r < 0) {
                r = kiln_fail(r == KILN_E_NOT_FOUND ? KILN_E_CERT_VERIFY : r,
                              "cannot read the certificate of issuing key '%s'", k->uri);
                goto out;
        }
        r = x509_from_der(der, der_len, ret_cert);
        if (r < 0)
                goto out;
        kiln_free(der);
        der = NULL;
        /* every X.509 certificate in the token: the chain is built from these */
        r = hsm_objects_find(t, s, mine, 2, found, TOKEN_CERTS_MAX, &n);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < n; i++) {
                r = hsm_attr_alloc(t, s, found[i], CKA_VALUE, KILN_CERT_DER_MAX, &der, &der_len);
                if (r == KILN_E_NOT_FOUND)
                        continue;
                if (r < 0)
                        goto out;
                /* a malformed certificate object elsewhere in the token is not our concern */
                {
                        const unsigned char *p = der;

                        x = d2i_X509(NULL, &p, (long)der_len);
                        if (x != NULL && p == der + der_len) {
                                if (sk_X509_push(all, x) <= 0) {
                                        r = KILN_E_NOMEM;
                                        goto out;
                                }
                                x = NULL;
                        }
                        X509_free(x);
                        x = NULL;
                        ERR_clear_error();
                }
                kiln_free(der);
                der = NULL;
        }
        r = KILN_OK;
out:
        X509_free(x);
        kiln_free(der);
        return r;
}

/* Sign a throwaway digest with the key and verify it with the certificate's public key. */
static int key_matches_cert(struct hsm_issuer *iss, CK_SESSION_HANDLE s)
{
        const struct hsm_key *k = iss->key;
        EVP_PKEY *pub = X509_get0_pubkey(iss->cert);
        EVP_PKEY_CTX *ctx = NULL;
        uint8_t dg[48], raw[HSM_SIG_MAX], der[HSM_SIG_MAX + 16];
        size_t dlen = EVP_MD_get_size(hsm_key_md(k)), rlen = 0, sig_len = 0;
        const uint8_t *sig = raw;
        CK_RV rv;
        int r;

        if (pub == NULL) {
                r = hsm_ossl_fail(KILN_E_CERT_VERIFY, "issuing CA certificate has no usable key");
                goto out;
        }
        /* on the session already held: borrowing a second one could wait on a pool of one */
        rv = iss->tok->fl->C_GenerateRandom(s, dg, dlen);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_RANDOM, rv, "C_GenerateRandom on token '%s' failed",
                                 iss->tok->label);
                goto out;
        }
        r = hsm_key_sign_digest(k, s, dg, dlen, raw, sizeof(raw), &rlen);
        if (r < 0)
                goto out;
        sig_len = rlen;
        if (k->kind != HSM_KEY_RSA) {
                r = hsm_ecdsa_raw_to_der(raw, rlen, der, sizeof(der), &sig_len);
                if (r < 0)
                        goto out;
                sig = der;
        }
        ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
        if (ctx == NULL || EVP_PKEY_verify_init(ctx) != 1 ||
            (k->kind == HSM_KEY_RSA &&
             (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
              EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) != 1 ||
              EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1 ||
              EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, 32) != 1))) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot set up a verification");
                goto out;
        }
        if (EVP_PKEY_verify(ctx, sig, sig_len, dg, dlen) != 1) {
                ERR_clear_error();
                r = kiln_fail(KILN_E_CERT_VERIFY,
                              "issuing key '%s' does not match the public key of its certificate",
                              k->uri);
                goto out;
        }
        r = KILN_OK;
out:
        EVP_PKEY_CTX_free(ctx);
        return r;
}

static const char *subject_cn(X509 *x, char *buf, size_t cap)
{
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)cap) < 0)
                kiln_strlcpy(buf, "(no CN)", cap);
        return buf;
}

/* Verify the issuing CA up to a self-signed root among the token's certificates; keep the chain. */
static int chain_verify(struct hsm_issuer *iss, STACK_OF(X509) * all)
{
        X509_STORE *roots = X509_STORE_new();
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        STACK_OF(X509) *untrusted = sk_X509_new_null();
        STACK_OF(X509) *chain;
        char cn[128];
        int r;

        if (roots == NULL || ctx == NULL || untrusted == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        for (int i = 0; i < sk_X509_num(all); i++) {
                X509 *c = sk_X509_value(all, i);
                int ok = X509_self_signed(c, 0) == 1 ? X509_STORE_add_cert(roots, c)
                                                      : sk_X509_push(untrusted, c) > 0;

                if (!ok) {
                        r = hsm_ossl_fail(KILN_E_CERT_VERIFY, "cannot collect the token's "
                                                              "certificates");
                        goto out;
                }
        }
        if (X509_STORE_CTX_init(ctx, roots, iss->cert, untrusted) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "X509_STORE_CTX_init failed");
                goto out;
        }
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT | X509_V_FLAG_CHECK_SS_SIGNATURE);
        if (X509_verify_cert(ctx) != 1) {
                int e = X509_STORE_CTX_get_error(ctx);

                ERR_clear_error();
                r = kiln_fail(KILN_E_CERT_VERIFY,
                              "issuing CA certificate '%s' of key '%s' does not verify up to a "
                              "root among the token's certificates: %s (depth %d)",
                              subject_cn(iss->cert, cn, sizeof(cn)), iss->key->uri,
                              X509_verify_cert_error_string(e),
                              X509_STORE_CTX_get_error_depth(ctx));
                goto out;
        }
        chain = X509_STORE_CTX_get0_chain(ctx);
        if (sk_X509_num(chain) > (int)HSM_CHAIN_MAX) {
                r = kiln_fail(KILN_E_LIMIT, "issuer chain of %d certificates, more than %u",
                              sk_X509_num(chain), HSM_CHAIN_MAX);
                goto out;
        }
        for (int i = 0; i < sk_X509_num(chain); i++) {
                unsigned char *der = NULL;
                int len = i2d_X509(sk_X509_value(chain, i), &der);

                if (len <= 0) {
                        r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot encode the chain");
                        goto out;
                }
                iss->chain[i] = kiln_malloc((size_t)len);
                if (iss->chain[i] == NULL) {
                        OPENSSL_free(der);
                        r = KILN_E_NOMEM;
                        goto out;
                }
                memcpy(iss->chain[i], der, (size_t)len);
                iss->chain_len[i] = (size_t)len;
                iss->n_chain = (size_t)i + 1;
                OPENSSL_free(der);
        }
        r = KILN_OK;
out:
        sk_X509_free(untrusted);
        X509_STORE_CTX_free(ctx);
        X509_STORE_free(roots);
        return r;
}

static int issuer_ski(struct hsm_issuer *iss)
{
        const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(iss->cert);

        if (ski == NULL || ASN1_STRING_length(ski) <= 0 ||
            (size_t)ASN1_STRING_length(ski) > sizeof(iss->ski))
                return kiln_fail(KILN_E_CERT_VERIFY,
                                 "issuing CA certificate of '%s' has no usable "
                                 "subjectKeyIdentifier",
                                 iss->key->uri);
        iss->ski_len = (size_t)ASN1_STRING_length(ski);
        memcpy(iss->ski, ASN1_STRING_get0_data(ski), iss->ski_len);
        return KILN_OK;
}

int hsm_issuer_load(struct hsm_token *t, const char *key_uri, struct hsm_issuer **ret)
{
        struct hsm_issuer *iss = NULL;
        STACK_OF(X509) *all = NULL;
        CK_SESSION_HANDLE s = 0;
        int have_s = 0, r;

        iss = kiln_calloc(1, sizeof(*iss));
        all = sk_X509_new_null();
        if (iss == NULL || all == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        iss->tok = t;
        r = hsm_key_find(t, key_uri, HSM_USE_SIGN, &iss->key);
        if (r < 0)
                goto out;
        r = hsm_session_get(t, &s);
        if (r < 0)
                goto out;
        have_s = 1;
        r = token_certs(iss, s, &iss->cert, all);
        if (r < 0)
                goto out;
        if (X509_check_ca(iss->cert) < 1 ||
            ((X509_get_extension_flags(iss->cert) & EXFLAG_KUSAGE) &&
             !(X509_get_key_usage(iss->cert) & KU_KEY_CERT_SIGN))) {
                r = kiln_fail(KILN_E_CERT_VERIFY,
                              "the certificate of issuing key '%s' is not a CA certificate "
                              "allowed to sign certificates",
                              key_uri);
                goto out;
        }
        r = key_matches_cert(iss, s);
        if (r < 0)
                goto out;
        r = chain_verify(iss, all);
        if (r < 0)
                goto out;
        r = issuer_ski(iss);
        if (r < 0)
                goto out;
        r = hsm_signer_init(iss->key, X509_get_subject_name(iss->cert), &iss->sg);
        if (r < 0)
                goto out;
        iss->store = X509_STORE_new();
        if (iss->store == NULL || X509_STORE_add_cert(iss->store, iss->cert) != 1 ||
            X509_STORE_set_flags(iss->store,
                                 X509_V_FLAG_X509_STRICT | X509_V_FLAG_PARTIAL_CHAIN) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot set up the verify store");
                goto out;
        }
        *ret = iss;
        iss = NULL;
        r = KILN_OK;
out:
        if (have_s)
                hsm_session_put(t, s);
        sk_X509_pop_free(all, X509_free);
        hsm_issuer_free(iss);
        return r;
}

void hsm_issuer_free(struct hsm_issuer *iss)
{
        if (iss == NULL)
                return;
        for (size_t i = 0; i < iss->n_chain; i++)
                kiln_free(iss->chain[i]);
        X509_STORE_free(iss->store);
        hsm_signer_clear(&iss->sg);
        X509_free(iss->cert);
        hsm_key_free(iss->key);
        kiln_free(iss);
}

size_t hsm_issuer_chain_len(const struct hsm_issuer *iss)
{
        return iss->n_chain;
}

int hsm_issuer_chain_der(const struct hsm_issuer *iss, size_t i, const uint8_t **ret_der,
                         size_t *ret_len)
{
        if (i >= iss->n_chain)
                return KILN_E_RANGE;
        *ret_der = iss->chain[i];
        *ret_len = iss->chain_len[i];
        return KILN_OK;
}

/* Verify x against the cached issuing CA, at now or at its notBefore when that is later. */
static int verify_x509(const struct hsm_issuer *iss, X509 *x)
{
        X509_STORE_CTX *ctx = X509_STORE_CTX_new();
        const ASN1_TIME *nb = X509_get0_notBefore(x);
        time_t now = time(NULL);
        struct tm tm;
        char cn[128], ca[128];
        int r;

        if (ctx == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (X509_STORE_CTX_init(ctx, iss->store, x, NULL) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "X509_STORE_CTX_init failed");
                goto out;
        }
        if (X509_cmp_time(nb, &now) > 0 && ASN1_TIME_to_tm(nb, &tm) == 1)
                X509_STORE_CTX_set_time(ctx, 0, timegm(&tm));
        if (X509_verify_cert(ctx) != 1) {
                int e = X509_STORE_CTX_get_error(ctx);

                ERR_clear_error();
                r = kiln_fail(KILN_E_CERT_VERIFY,
                              "certificate '%s' does not verify against issuing CA '%s': %s "
                              "(depth %d)",
                              subject_cn(x, cn, sizeof(cn)), subject_cn(iss->cert, ca, sizeof(ca)),
                              X509_verify_cert_error_string(e),
                              X509_STORE_CTX_get_error_depth(ctx));
                goto out;
        }
        r = KILN_OK;
out:
        X509_STORE_CTX_free(ctx);
        return r;
}

int hsm_cert_verify(const struct hsm_issuer *iss, const uint8_t *der, size_t len)
{
        X509 *x = NULL;
        int r;

        if (der == NULL || len == 0 || len > KILN_CERT_DER_MAX)
                return kiln_fail(KILN_E_CERT_VERIFY, "certificate of %zu bytes (1..%u)", len,
                                 KILN_CERT_DER_MAX);
        r = x509_from_der(der, len, &x);
        if (r == KILN_OK)
                r = verify_x509(iss, x);
        X509_free(x);
        return r;
}

int hsm_cert_issue(struct hsm_issuer *iss, const struct hsm_cert_template *t,
                   const struct hsm_devkey *key, struct hsm_cert **ret)
{
        struct hsm_cert_params p = {0};
        struct hsm_cert *c = NULL;
        uint8_t serial[HSM_SERIAL_LEN];
        X509 *x = NULL;
        int r;

        /* the name is checked while it is built */
        r = hsm_cert_template_check_ca(t, 0);
        if (r < 0)
                goto out;
        c = kiln_calloc(1, sizeof(*c));
        if (c == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        p.t = t;
        p.ca = 0;
        p.path_len = -1;
        p.curve = hsm_devkey_curve(key);
        p.point = hsm_devkey_point(key, &p.point_len);
        p.aki = iss->ski;
        p.aki_len = iss->ski_len;
        r = hsm_cert_serial(iss->tok, serial);
        if (r < 0)
                goto out;
        r = hsm_cert_build(&p, &iss->sg, iss->key, serial, &c->der, &c->len, &x);
        if (r < 0)
                goto out;
        r = verify_x509(iss, x);
        if (r < 0)
                goto out;
        memcpy(c->serial, serial, sizeof(serial));
        SHA256(c->der, c->len, c->sha256);
        *ret = c;
        c = NULL;
        r = KILN_OK;
out:
        X509_free(x);
        hsm_cert_free(c);
        return r;
}

void hsm_cert_free(struct hsm_cert *c)
{
        if (c == NULL)
                return;
        kiln_free(c->der);
        kiln_free(c);
}
