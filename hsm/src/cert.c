/*
 * Certificate building: template checks, the TBSCertificate built with OpenSSL 3, the signature made
 * in the token, the DER Certificate assembled and parsed back.
 *
 * The signature AlgorithmIdentifier (with RSASSA-PSS parameters where they apply) is worked out once
 * per signer by letting OpenSSL sign a scratch certificate with a throwaway software key of the same
 * algorithm: OpenSSL then encodes it exactly as for any certificate it signs itself. The throwaway
 * key, its signature and the scratch certificate are discarded; the ENGINE API is not used.
 */
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hsm_internal.h"

#define NAME_MAX_LEN HSM_NAME_VALUE_MAX

/* ---------------------------------------------------------------- template checks */

static const char *const ku_names[] = {
        "digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
        "keyAgreement",     "keyCertSign",    "cRLSign",
};

int hsm_ku_from_name(const char *name, unsigned *ret)
{
        for (unsigned i = 0; i < sizeof(ku_names) / sizeof(ku_names[0]); i++) {
                if (strcmp(name, ku_names[i]) == 0) {
                        *ret = 1u << i;
                        return KILN_OK;
                }
        }
        return KILN_E_NOT_FOUND;
}

static int is_dotted_oid(const char *s)
{
        size_t n = strlen(s);

        return n > 2 && n < 128 && strspn(s, "0123456789.") == n && s[0] != '.' &&
               s[n - 1] != '.' && strstr(s, "..") == NULL;
}

/* The ASN1_OBJECT a template names: a known short/long name or a dotted OID. Caller frees. */
static ASN1_OBJECT *template_obj(const char *s)
{
        if (s == NULL || s[0] == '\0' || strlen(s) > 127)
                return NULL;
        if (is_dotted_oid(s))
                return OBJ_txt2obj(s, 1);
        return OBJ_txt2obj(s, 0);
}

static int text_ok(const char *v, size_t max, int ascii)
{
        size_t n;

        if (v == NULL)
                return 0;
        n = strnlen(v, max + 1);
        if (n == 0 || n > max)
                return 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)v[i];

                if (c < 0x20 || c == 0x7f || (ascii && c > 0x7e))
                        return 0;
        }
        return 1;
}

static int utf8_ok(const char *v)
{
        ASN1_STRING *s = NULL;
        int ok = ASN1_mbstring_copy(&s, (const unsigned char *)v, -1, MBSTRING_UTF8,
                                    B_ASN1_UTF8STRING) > 0;

        ASN1_STRING_free(s);
        ERR_clear_error();
        return ok;
}

static int san_check(const struct hsm_san *s, size_t i)
{
        static const char *const what[HSM_SAN_TYPE_MAX] = {"DNS name", "URI", "email address",
                                                           "IP address"};
        ASN1_OCTET_STRING *ip;

        if ((int)s->type < 0 || s->type >= HSM_SAN_TYPE_MAX)
                return kiln_fail(KILN_E_CERT_TEMPLATE, "subjectAltName %zu has an unknown type",
                                 i + 1);
        if (!text_ok(s->value, NAME_MAX_LEN, 1))
                return kiln_fail(KILN_E_CERT_TEMPLATE,
                                 "subjectAltName %s is empty, too long or not printable ASCII",
                                 what[s->type]);
        switch (s->type) {
        case HSM_SAN_DNS:
                if (strchr(s->value, ' ') != NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subjectAltName DNS name '%s' contains a space",
                                         s->value);
                break;
        case HSM_SAN_URI:
                if (strchr(s->value, ':') == NULL || strchr(s->value, ' ') != NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subjectAltName URI '%s' has no scheme or has a space",
                                         s->value);
                break;
        case HSM_SAN_EMAIL:
                if (strchr(s->value, '@') == NULL || strchr(s->value, ' ') != NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subjectAltName email '%s' is not an address", s->value);
                break;
        case HSM_SAN_IP:
                ip = a2i_IPADDRESS(s->value);
                ERR_clear_error();
                if (ip == NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subjectAltName IP address '%s' is not IPv4 or IPv6",
                                         s->value);
                ASN1_OCTET_STRING_free(ip);
                break;
        default:
                break;
        }
        return KILN_OK;
}

/* The extnValue content of an extra extension: one DER element (hex) or a UTF8String. */
static int ext_value(const struct hsm_extension *e, uint8_t **ret, size_t *ret_len)
{
        uint8_t *buf = NULL;
        size_t n = 0;
        int r;

        if (!text_ok(e->value, HSM_EXT_VALUE_MAX, e->encoding == HSM_EXT_DER_HEX)) {
                r = kiln_fail(KILN_E_CERT_TEMPLATE,
                              "extension %s: value empty, longer than %u or not printable", e->oid,
                              HSM_EXT_VALUE_MAX);
                goto out;
        }
        if (e->encoding == HSM_EXT_DER_HEX) {
                const unsigned char *q;
                long l = 0;
                int tag = 0, cls = 0, f;

                buf = kiln_malloc(strlen(e->value) / 2 + 1);
                if (buf == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
                if (kiln_hex_decode(e->value, buf, strlen(e->value) / 2 + 1, &n) < 0 || n == 0) {
                        r = kiln_fail(KILN_E_CERT_TEMPLATE, "extension %s: value is not hex",
                                      e->oid);
                        goto out;
                }
                q = buf;
                f = ASN1_get_object(&q, &l, &tag, &cls, (long)n);
                ERR_clear_error();
                /* 0x80: error; 0x21: indefinite length, which DER forbids */
                if ((f & 0x80) || f == 0x21 || q + l != buf + n) {
                        r = kiln_fail(KILN_E_CERT_TEMPLATE,
                                      "extension %s: value is not exactly one DER element",
                                      e->oid);
                        goto out;
                }
        } else if (e->encoding == HSM_EXT_UTF8) {
                ASN1_STRING *s = NULL;
                unsigned char *p;
                int len;

                if (ASN1_mbstring_copy(&s, (const unsigned char *)e->value, -1, MBSTRING_UTF8,
                                       B_ASN1_UTF8STRING) <= 0) {
                        ERR_clear_error();
                        r = kiln_fail(KILN_E_CERT_TEMPLATE, "extension %s: value is not UTF-8",
                                      e->oid);
                        goto out;
                }
                len = i2d_ASN1_UTF8STRING(s, NULL);
                buf = len > 0 ? kiln_malloc((size_t)len) : NULL;
                p = buf;
                if (buf == NULL || i2d_ASN1_UTF8STRING(s, &p) != len) {
                        ASN1_STRING_free(s);
                        r = KILN_E_NOMEM;
                        goto out;
                }
                ASN1_STRING_free(s);
                n = (size_t)len;
        } else {
                r = kiln_fail(KILN_E_CERT_TEMPLATE, "extension %s: unknown value encoding", e->oid);
                goto out;
        }
        *ret = buf;
        *ret_len = n;
        buf = NULL;
        r = KILN_OK;
out:
        kiln_free(buf);
        return r;
}

static int ext_check(const struct hsm_cert_template *t, size_t i)
{
        static const int own[] = {NID_basic_constraints,      NID_key_usage,
                                  NID_ext_key_usage,          NID_subject_key_identifier,
                                  NID_authority_key_identifier, NID_subject_alt_name};
        const struct hsm_extension *e = &t->ext[i];
        ASN1_OBJECT *obj = NULL;
        uint8_t *v = NULL;
        size_t vlen = 0;
        int nid, r;

        if (e->oid == NULL || !is_dotted_oid(e->oid) || (obj = OBJ_txt2obj(e->oid, 1)) == NULL) {
                ERR_clear_error();
                r = kiln_fail(KILN_E_CERT_TEMPLATE, "extension %zu: '%s' is not a dotted OID",
                              i + 1, e->oid ? e->oid : "(none)");
                goto out;
        }
        nid = OBJ_obj2nid(obj);
        for (size_t j = 0; j < sizeof(own) / sizeof(own[0]); j++) {
                if (nid == own[j]) {
                        r = kiln_fail(KILN_E_CERT_TEMPLATE,
                                      "extension %s (%s) comes from the template's own fields",
                                      e->oid, OBJ_nid2sn(nid));
                        goto out;
                }
        }
        for (size_t j = 0; j < i; j++) {
                if (t->ext[j].oid != NULL && strcmp(t->ext[j].oid, e->oid) == 0) {
                        r = kiln_fail(KILN_E_CERT_TEMPLATE, "extension %s appears twice", e->oid);
                        goto out;
                }
        }
        r = ext_value(e, &v, &vlen);
out:
        kiln_free(v);
        ASN1_OBJECT_free(obj);
        return r;
}

int hsm_cert_template_check_ca(const struct hsm_cert_template *t, int ca)
{
        unsigned ca_only = HSM_KU_KEY_CERT_SIGN | HSM_KU_CRL_SIGN;
        int r;

        if (t == NULL)
                return kiln_fail(KILN_E_CERT_TEMPLATE, "no certificate template");
        if (t->n_subject > HSM_NAME_ATTRS_MAX || t->n_san > HSM_SAN_MAX ||
            t->n_eku > HSM_EKU_MAX || t->n_ext > KILN_RECIPE_EXTENSIONS_MAX)
                return kiln_fail(KILN_E_CERT_TEMPLATE,
                                 "template has too many entries (subject %u, SAN %u, EKU %u, "
                                 "extensions %u at most)",
                                 HSM_NAME_ATTRS_MAX, HSM_SAN_MAX, HSM_EKU_MAX,
                                 KILN_RECIPE_EXTENSIONS_MAX);
        if (t->n_subject == 0 && t->n_san == 0)
                return kiln_fail(KILN_E_CERT_TEMPLATE,
                                 "template has an empty subject and no subjectAltName");
        for (size_t i = 0; i < t->n_subject; i++) {
                const struct hsm_name_attr *a = &t->subject[i];
                ASN1_OBJECT *o = a->type ? template_obj(a->type) : NULL;

                ERR_clear_error();
                if (o == NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subject attribute '%s' is not a known name or dotted OID",
                                         a->type ? a->type : "(none)");
                ASN1_OBJECT_free(o);
                if (!text_ok(a->value, NAME_MAX_LEN, 0) || !utf8_ok(a->value))
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "subject %s: value empty, longer than %u bytes or not "
                                         "UTF-8",
                                         a->type, NAME_MAX_LEN);
        }
        if (t->key_usage == 0)
                return kiln_fail(KILN_E_CERT_TEMPLATE, "template has no key usage");
        if (t->key_usage & ~((1u << 7) - 1))
                return kiln_fail(KILN_E_CERT_TEMPLATE, "template has unknown key usage bits 0x%x",
                                 t->key_usage);
        if (!ca && (t->key_usage & ca_only))
                return kiln_fail(KILN_E_CERT_TEMPLATE,
                                 "keyCertSign and cRLSign are for CA certificates, not devices");
        if (t->not_before < 0 || t->not_after <= 0 || t->not_after > HSM_TIME_NO_EXPIRY ||
            (t->not_before != 0 && t->not_after <= t->not_before))
                return kiln_fail(KILN_E_CERT_TEMPLATE,
                                 "validity %lld..%lld is not a forward range within 9999-12-31",
                                 (long long)t->not_before, (long long)t->not_after);
        for (size_t i = 0; i < t->n_eku; i++) {
                ASN1_OBJECT *o = t->eku[i] ? template_obj(t->eku[i]) : NULL;

                ERR_clear_error();
                if (o == NULL)
                        return kiln_fail(KILN_E_CERT_TEMPLATE,
                                         "extended key usage '%s' is not a known name or dotted "
                                         "OID",
                                         t->eku[i] ? t->eku[i] : "(none)");
                ASN1_OBJECT_free(o);
        }
        for (size_t i = 0; i < t->n_san; i++) {
                r = san_check(&t->san[i], i);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < t->n_ext; i++) {
                r = ext_check(t, i);
                if (r < 0)
                        return r;
        }
        return KILN_OK;
}

int hsm_cert_template_check(const struct hsm_cert_template *t)
{
        X509_NAME *name;
        int r = hsm_cert_template_check_ca(t, 0);

        if (r < 0)
                return r;
        /* what only building the name finds: string types and sizes per attribute (C is 2) */
        name = X509_NAME_new();
        if (name == NULL)
                return KILN_E_NOMEM;
        r = hsm_cert_name_add(name, t);
        X509_NAME_free(name);
        return r;
}

/* ---------------------------------------------------------------- signers */

void hsm_signer_clear(struct hsm_signer *sg)
{
        if (sg == NULL)
                return;
        X509_NAME_free(sg->issuer);
        X509_ALGOR_free(sg->alg);
        kiln_free(sg->alg_der);
        memset(sg, 0, sizeof(*sg));
}

int hsm_signer_init(const struct hsm_key *k, const X509_NAME *issuer, struct hsm_signer *ret)
{
        struct hsm_signer sg = {0};
        const X509_ALGOR *palg = NULL;
        EVP_PKEY_CTX *pctx = NULL;
        EVP_MD_CTX *mctx = NULL;
        EVP_PKEY *scratch_key = NULL;
        unsigned char *der = NULL;
        X509 *x = NULL;
        int len, r;

        x = X509_new();
        mctx = EVP_MD_CTX_new();
        sg.issuer = X509_NAME_dup(issuer);
        if (x == NULL || mctx == NULL || sg.issuer == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (k->kind == HSM_KEY_RSA)
                scratch_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
        else if (k->kind == HSM_KEY_EC_P256 || k->kind == HSM_KEY_EC_P384)
                scratch_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        else {
                r = kiln_fail(KILN_E_INVAL, "key '%s' cannot sign certificates", k->label);
                goto out;
        }
        if (scratch_key == NULL || X509_set_pubkey(x, scratch_key) != 1 ||
            EVP_DigestSignInit(mctx, &pctx, hsm_key_md(k), NULL, scratch_key) != 1) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot work out the signature algorithm");
                goto out;
        }
        if (k->kind == HSM_KEY_RSA &&
            (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1 ||
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1)) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot set RSA-PSS parameters");
                goto out;
        }
        if (X509_sign_ctx(x, mctx) <= 0) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot work out the signature algorithm");
                goto out;
        }
        X509_get0_signature(NULL, &palg, x);
        len = i2d_X509_ALGOR(palg, &der);
        sg.alg = X509_ALGOR_dup(palg);
        if (len <= 0 || sg.alg == NULL) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot encode the signature algorithm");
                goto out;
        }
        sg.alg_der = kiln_malloc((size_t)len);
        if (sg.alg_der == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        memcpy(sg.alg_der, der, (size_t)len);
        sg.alg_len = (size_t)len;
        *ret = sg;
        memset(&sg, 0, sizeof(sg));
        r = KILN_OK;
out:
        hsm_signer_clear(&sg);
        OPENSSL_free(der);
        EVP_PKEY_free(scratch_key);
        EVP_MD_CTX_free(mctx);
        X509_free(x);
        return r;
}

/* ---------------------------------------------------------------- building */

void hsm_cert_ski(const uint8_t *point, size_t len, uint8_t ret[20])
{
        SHA1(point, len, ret);
}

int hsm_cert_serial(struct hsm_token *t, uint8_t ret[HSM_SERIAL_LEN])
{
        uint8_t b[HSM_SERIAL_LEN];
        int r = hsm_token_random(t, b, sizeof(b));

        if (r < 0)
                return r;
        /*
         * Top bit clear: the INTEGER is positive with no 0x00 pad. Next bit set: it is always 16
         * bytes of DER content, with 126 random bits (the CA/Browser Forum asks for at least 64
         * random bits, RFC 5280 for 20 octets at most).
         */
        b[0] = (uint8_t)((b[0] & 0x7f) | 0x40);
        memcpy(ret, b, sizeof(b));
        return KILN_OK;
}

int hsm_cert_name_add(X509_NAME *name, const struct hsm_cert_template *t)
{
        for (size_t i = 0; i < t->n_subject; i++) {
                const struct hsm_name_attr *a = &t->subject[i];
                int nid = is_dotted_oid(a->type) ? NID_undef : OBJ_txt2nid(a->type);
                int ok;

                if (nid != NID_undef) {
                        ok = X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8,
                                                        (const unsigned char *)a->value, -1, -1,
                                                        0);
                } else {
                        ASN1_OBJECT *o = template_obj(a->type);

                        ok = o != NULL &&
                             X509_NAME_add_entry_by_OBJ(name, o, MBSTRING_UTF8,
                                                        (const unsigned char *)a->value, -1, -1,
                                                        0);
                        ASN1_OBJECT_free(o);
                }
                if (!ok)
                        return hsm_ossl_fail(KILN_E_CERT_TEMPLATE,
                                             "subject %s '%s' is not allowed there", a->type,
                                             a->value);
        }
        return KILN_OK;
}

static int pubkey_set(X509 *x, const struct hsm_cert_params *p)
{
        X509_PUBKEY *pub = X509_get_X509_PUBKEY(x);
        int nid = p->curve == HSM_CURVE_P256 ? NID_X9_62_prime256v1 : NID_secp384r1;
        unsigned char *enc;

        if (p->pkey != NULL) {
                if (X509_set_pubkey(x, p->pkey) != 1)
                        return hsm_ossl_fail(KILN_E_CERT_BUILD,
                                             "cannot set the subject public key");
                return KILN_OK;
        }
        enc = OPENSSL_malloc(p->point_len);
        if (pub == NULL || enc == NULL) {
                OPENSSL_free(enc);
                return KILN_E_NOMEM;
        }
        memcpy(enc, p->point, p->point_len);
        /* SubjectPublicKeyInfo from the point as the device sent it: no re-encoding */
        if (X509_PUBKEY_set0_param(pub, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                                   OBJ_nid2obj(nid), enc, (int)p->point_len) != 1) {
                OPENSSL_free(enc);
                return hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot set the subject public key");
        }
        return KILN_OK;
}

static int ext_add_i2d(X509 *x, int nid, void *value, int crit)
{
        if (X509_add1_ext_i2d(x, nid, value, crit, X509V3_ADD_APPEND) != 1)
                return hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot add extension %s",
                                     OBJ_nid2sn(nid));
        return KILN_OK;
}

static int ext_basic(X509 *x, const struct hsm_cert_params *p)
{
        BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
        int r;

        if (bc == NULL)
                return KILN_E_NOMEM;
        bc->ca = p->ca ? 0xff : 0;
        if (p->ca && p->path_len >= 0) {
                bc->pathlen = ASN1_INTEGER_new();
                if (bc->pathlen == NULL || ASN1_INTEGER_set(bc->pathlen, p->path_len) != 1) {
                        BASIC_CONSTRAINTS_free(bc);
                        return KILN_E_NOMEM;
                }
        }
        r = ext_add_i2d(x, NID_basic_constraints, bc, 1);
        BASIC_CONSTRAINTS_free(bc);
        return r;
}

static int ext_key_usage(X509 *x, unsigned ku)
{
        ASN1_BIT_STRING *bs = ASN1_BIT_STRING_new();
        int r;

        if (bs == NULL)
                return KILN_E_NOMEM;
        for (int i = 0; i < 7; i++) {
                if ((ku & (1u << i)) && ASN1_BIT_STRING_set_bit(bs, i, 1) != 1) {
                        ASN1_BIT_STRING_free(bs);
                        return KILN_E_NOMEM;
                }
        }
        r = ext_add_i2d(x, NID_key_usage, bs, 1);
        ASN1_BIT_STRING_free(bs);
        return r;
}

static int ext_eku(X509 *x, const struct hsm_cert_template *t)
{
        EXTENDED_KEY_USAGE *eku;
        int r;

        if (t->n_eku == 0)
                return KILN_OK;
        eku = sk_ASN1_OBJECT_new_null();
        if (eku == NULL)
                return KILN_E_NOMEM;
        for (size_t i = 0; i < t->n_eku; i++) {
                ASN1_OBJECT *o = template_obj(t->eku[i]);

                if (o == NULL || sk_ASN1_OBJECT_push(eku, o) <= 0) {
                        ASN1_OBJECT_free(o);
                        r = hsm_ossl_fail(KILN_E_CERT_TEMPLATE, "extended key usage '%s'",
                                          t->eku[i]);
                        goto out;
                }
        }
        r = ext_add_i2d(x, NID_ext_key_usage, eku, 0);
out:
        sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
        return r;
}

static int ext_key_ids(X509 *x, const struct hsm_cert_params *p)
{
        ASN1_OCTET_STRING *ski = ASN1_OCTET_STRING_new();
        AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
        const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);
        uint8_t id[20];
        int r;

        if (ski == NULL || akid == NULL || (akid->keyid = ASN1_OCTET_STRING_new()) == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (bits == NULL) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "certificate without a public key");
                goto out;
        }
        /* RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value */
        hsm_cert_ski(ASN1_STRING_get0_data(bits), (size_t)ASN1_STRING_length(bits), id);
        if (ASN1_OCTET_STRING_set(ski, id, sizeof(id)) != 1 ||
            ASN1_OCTET_STRING_set(akid->keyid, p->aki ? p->aki : id,
                                  p->aki ? (int)p->aki_len : (int)sizeof(id)) != 1) {
                r = KILN_E_NOMEM;
                goto out;
        }
        r = ext_add_i2d(x, NID_subject_key_identifier, ski, 0);
        if (r == KILN_OK)
                r = ext_add_i2d(x, NID_authority_key_identifier, akid, 0);
out:
        ASN1_OCTET_STRING_free(ski);
        AUTHORITY_KEYID_free(akid);
        return r;
}

static int ext_san(X509 *x, const struct hsm_cert_template *t)
{
        static const int gen_type[HSM_SAN_TYPE_MAX] = {GEN_DNS, GEN_URI, GEN_EMAIL, GEN_IPADD};
        GENERAL_NAMES *gens;
        int r;

        if (t->n_san == 0)
                return KILN_OK;
        gens = sk_GENERAL_NAME_new_null();
        if (gens == NULL)
                return KILN_E_NOMEM;
        for (size_t i = 0; i < t->n_san; i++) {
                const struct hsm_san *s = &t->san[i];
                GENERAL_NAME *g = GENERAL_NAME_new();
                ASN1_STRING *v;

                if (g == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
                if (s->type == HSM_SAN_IP) {
                        v = a2i_IPADDRESS(s->value);
                } else {
                        v = ASN1_IA5STRING_new();
                        if (v != NULL && ASN1_STRING_set(v, s->value, -1) != 1) {
                                ASN1_STRING_free(v);
                                v = NULL;
                        }
                }
                if (v == NULL) {
                        GENERAL_NAME_free(g);
                        r = hsm_ossl_fail(KILN_E_CERT_TEMPLATE, "subjectAltName '%s'", s->value);
                        goto out;
                }
                GENERAL_NAME_set0_value(g, gen_type[s->type], v);
                if (sk_GENERAL_NAME_push(gens, g) <= 0) {
                        GENERAL_NAME_free(g);
                        r = KILN_E_NOMEM;
                        goto out;
                }
        }
        /* RFC 5280 §4.2.1.6: with an empty subject the SAN must be critical */
        r = ext_add_i2d(x, NID_subject_alt_name, gens, t->n_subject == 0);
out:
        GENERAL_NAMES_free(gens);
        return r;
}

static int ext_extra(X509 *x, const struct hsm_extension *e)
{
        ASN1_OBJECT *obj = OBJ_txt2obj(e->oid, 1);
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        X509_EXTENSION *ext = NULL;
        uint8_t *v = NULL;
        size_t vlen = 0;
        int r;

        if (obj == NULL || os == NULL) {
                r = hsm_ossl_fail(KILN_E_CERT_TEMPLATE, "extension %s", e->oid);
                goto out;
        }
        r = ext_value(e, &v, &vlen);
        if (r < 0)
                goto out;
        if (ASN1_OCTET_STRING_set(os, v, (int)vlen) != 1 ||
            (ext = X509_EXTENSION_create_by_OBJ(NULL, obj, e->critical != 0, os)) == NULL ||
            X509_add_ext(x, ext, -1) != 1) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot add extension %s", e->oid);
                goto out;
        }
        r = KILN_OK;
out:
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(os);
        ASN1_OBJECT_free(obj);
        kiln_free(v);
        return r;
}

static uint8_t *der_hdr(uint8_t *p, uint8_t tag, size_t n)
{
        *p++ = tag;
        if (n < 0x80) {
                *p++ = (uint8_t)n;
        } else if (n < 0x100) {
                *p++ = 0x81;
                *p++ = (uint8_t)n;
        } else if (n < 0x10000) {
                *p++ = 0x82;
                *p++ = (uint8_t)(n >> 8);
                *p++ = (uint8_t)n;
        } else {
                *p++ = 0x83;
                *p++ = (uint8_t)(n >> 16);
                *p++ = (uint8_t)(n >> 8);
                *p++ = (uint8_t)n;
        }
        return p;
}

static size_t der_hdr_len(size_t n)
{
        return n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : 5;
}

/*
 * The TBSCertificate's signature AlgorithmIdentifier, to be written. OpenSSL 3.0 has no setter and
 * hands it out const, but it is a field of x, which we own and may change: the const only says that
 * OpenSSL does not expect callers to.
 */
static X509_ALGOR *tbs_alg(X509 *x)
{
        return (X509_ALGOR *)(uintptr_t)X509_get0_tbs_sigalg(x);
}

/* Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING } */
static int cert_assemble(const uint8_t *tbs, size_t tbs_len, const uint8_t *alg, size_t alg_len,
                         const uint8_t *sig, size_t sig_len, uint8_t **ret, size_t *ret_len)
{
        size_t bits = 1 + sig_len, body = tbs_len + alg_len + der_hdr_len(bits) + bits;
        size_t total = der_hdr_len(body) + body;
        uint8_t *der, *p;

        if (total > KILN_CERT_DER_MAX)
                return kiln_fail(KILN_E_CERT_BUILD, "certificate of %zu bytes, more than %u",
                                 total, KILN_CERT_DER_MAX);
        der = kiln_malloc(total);
        if (der == NULL)
                return KILN_E_NOMEM;
        p = der_hdr(der, 0x30, body);
        memcpy(p, tbs, tbs_len);
        p += tbs_len;
        memcpy(p, alg, alg_len);
        p += alg_len;
        p = der_hdr(p, 0x03, bits);
        *p++ = 0x00; /* no unused bits */
        memcpy(p, sig, sig_len);
        *ret = der;
        *ret_len = total;
        return KILN_OK;
}

int hsm_cert_build(const struct hsm_cert_params *p, const struct hsm_signer *sg,
                   const struct hsm_key *k, const uint8_t *serial, uint8_t **ret_der,
                   size_t *ret_len, X509 **ret_x509)
{
        CK_SESSION_HANDLE s;
        const struct hsm_cert_template *t = p->t;
        const unsigned char *pp;
        unsigned char *tbs = NULL;
        uint8_t dg[EVP_MAX_MD_SIZE], sig[HSM_SIG_MAX + 16], *der = NULL;
        unsigned int dlen = 0;
        size_t sig_len = 0, der_len = 0;
        X509 *x = NULL, *back = NULL;
        int tbs_len, r;
        time_t nb = t->not_before ? (time_t)t->not_before : time(NULL);

        x = X509_new();
        if (x == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (X509_set_version(x, X509_VERSION_3) != 1 || X509_set_issuer_name(x, sg->issuer) != 1 ||
            X509_ALGOR_copy(tbs_alg(x), sg->alg) != 1 ||
            ASN1_STRING_set(X509_get_serialNumber(x), serial, HSM_SERIAL_LEN) != 1 ||
            ASN1_TIME_set(X509_getm_notBefore(x), nb) == NULL ||
            ASN1_TIME_set(X509_getm_notAfter(x), (time_t)t->not_after) == NULL) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot set serial or validity");
                goto out;
        }
        r = hsm_cert_name_add(X509_get_subject_name(x), t);
        if (r == KILN_OK)
                r = pubkey_set(x, p);
        if (r == KILN_OK)
                r = ext_basic(x, p);
        if (r == KILN_OK)
                r = ext_key_usage(x, t->key_usage);
        if (r == KILN_OK)
                r = ext_eku(x, t);
        if (r == KILN_OK)
                r = ext_key_ids(x, p);
        if (r == KILN_OK)
                r = ext_san(x, t);
        for (size_t i = 0; r == KILN_OK && i < t->n_ext; i++)
                r = ext_extra(x, &t->ext[i]);
        if (r < 0)
                goto out;
        tbs_len = i2d_re_X509_tbs(x, &tbs);
        if (tbs_len <= 0) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "cannot encode the TBSCertificate");
                goto out;
        }
        if (EVP_Digest(tbs, (size_t)tbs_len, dg, &dlen, hsm_key_md(k), NULL) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot hash the TBSCertificate");
                goto out;
        }
        /* the session is held for the signature only: slots share the pool */
        r = hsm_session_get(k->tok, &s);
        if (r < 0)
                goto out;
        r = hsm_key_sign_digest(k, s, dg, dlen, sig, sizeof(sig), &sig_len);
        hsm_session_put(k->tok, s);
        if (r < 0)
                goto out;
        if (k->kind != HSM_KEY_RSA) {
                uint8_t raw[HSM_SIG_MAX];

                memcpy(raw, sig, sig_len);
                r = hsm_ecdsa_raw_to_der(raw, sig_len, sig, sizeof(sig), &sig_len);
                if (r < 0)
                        goto out;
        }
        r = cert_assemble(tbs, (size_t)tbs_len, sg->alg_der, sg->alg_len, sig, sig_len, &der,
                          &der_len);
        if (r < 0)
                goto out;
        pp = der;
        back = d2i_X509(NULL, &pp, (long)der_len);
        if (back == NULL || pp != der + der_len) {
                r = hsm_ossl_fail(KILN_E_CERT_BUILD, "the assembled certificate does not parse");
                goto out;
        }
        *ret_der = der;
        *ret_len = der_len;
        *ret_x509 = back;
        der = NULL;
        back = NULL;
        r = KILN_OK;
out:
        kiln_free(der);
        X509_free(back);
        OPENSSL_free(tbs);
        X509_free(x);
        return r;
}
