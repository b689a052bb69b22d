/*
 * The development PKI of `kiln hsm init-dev` (see kiln/hsm_dev.h): a SoftHSM token under DIR with a
 * P-384 root CA, a P-256 issuing CA, a P-256 audit key and an HMAC commitment key, all generated in
 * the token, non-extractable and sensitive. Only public material and the throwaway PINs are written
 * to DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "hsm_internal.h"
#include "kiln/hsm_cert.h"
#include "kiln/hsm_dev.h"
#include "kiln/secret.h"

#define ROOT_LABEL "kiln-dev-root"
#define ISSUING_LABEL "kiln-dev-issuing"
#define AUDIT_LABEL "kiln-dev-audit"
#define COMMIT_LABEL "kiln-dev-commit"
#define RELEASE_LABEL "kiln-dev-release"
#define OFFICER_LABEL "kiln-dev-officer"
#define DEV_PIN_BYTES 16u /* random bytes per PIN, written as 32 hex digits */
#define YEAR_S INT64_C(31556952)

static const uint8_t id_root[] = {0x01}, id_issuing[] = {0x02}, id_audit[] = {0x03},
                     id_commit[] = {0x04}, id_release[] = {0x05}, id_officer[] = {0x06};

/* The files of a complete dev PKI, in the order init-dev creates them. */
static const char *const dev_files[] = {
        HSM_DEV_CONF,        HSM_DEV_SO_PIN,    HSM_DEV_PIN,        HSM_DEV_TOKENS,
        HSM_DEV_ROOT_PEM,    HSM_DEV_ISSUING_PEM, HSM_DEV_AUDIT_PEM, HSM_DEV_RELEASE_PEM,
        HSM_DEV_OFFICER_PEM};
#define DEV_FILES (sizeof(dev_files) / sizeof(dev_files[0]))

static int dev_path(const char *dir, const char *name, char *out, size_t cap)
{
        if (kiln_snprintf(out, cap, "%s/%s", dir, name) < 0)
                return kiln_fail(KILN_E_RANGE, "path '%s/%s' is too long", dir, name);
        return KILN_OK;
}

int hsm_dev_use(const char *dir, const char *module, struct hsm_dev *ret)
{
        char abs[PATH_MAX];
        int r;

        if (realpath(dir, abs) == NULL)
                return kiln_fail(errno == ENOENT ? KILN_E_NOT_FOUND : KILN_E_IO,
                                 "cannot resolve '%s': %s", dir, strerror(errno));
        memset(ret, 0, sizeof(*ret));
        if (kiln_strlcpy(ret->module, module ? module : HSM_SOFTHSM_MODULE,
                         sizeof(ret->module)) < 0 ||
            kiln_strlcpy(ret->dir, abs, sizeof(ret->dir)) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long");
        r = dev_path(abs, HSM_DEV_CONF, ret->conf, sizeof(ret->conf));
        if (r == KILN_OK)
                r = dev_path(abs, HSM_DEV_PIN, ret->pin_file, sizeof(ret->pin_file));
        if (r < 0)
                return r;
        r = hsm_module_use_conf(ret->module, ret->conf);
        if (r < 0)
                return r;
        ret->cfg.module = ret->module;
        ret->cfg.softhsm_conf = ret->conf;
        ret->cfg.token_uri = HSM_DEV_TOKEN_URI;
        ret->cfg.pin_source = HSM_PIN_FILE;
        ret->cfg.pin_ref = ret->pin_file;
        return KILN_OK;
}

/* Create path exclusively (never over an existing file or link) with mode and contents. */
static int write_new_file(const char *path, const void *p, size_t n, mode_t mode)
{
        const uint8_t *b = p;
        int fd, r = KILN_OK;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
                return kiln_fail(errno == EEXIST ? KILN_E_EXISTS : KILN_E_IO,
                                 "cannot create '%s': %s", path, strerror(errno));
        while (n > 0) {
                ssize_t w = write(fd, b, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0) {
                        r = kiln_fail(KILN_E_IO, "cannot write '%s': %s", path, strerror(errno));
                        break;
                }
                b += w;
                n -= (size_t)w;
        }
        if (r == KILN_OK && fsync(fd) < 0)
                r = kiln_fail(KILN_E_IO, "cannot sync '%s': %s", path, strerror(errno));
        close(fd);
        return r;
}

/* A random PIN (hex) in a new secret, written to DIR/name with mode 0600. */
static int pin_create(const char *dir, const char *name, struct kiln_secret **ret)
{
        struct kiln_secret *pin = NULL;
        uint8_t raw[DEV_PIN_BYTES];
        char path[KILN_PATH_MAX];
        int r;

        r = dev_path(dir, name, path, sizeof(path));
        if (r < 0)
                goto out;
        r = kiln_secret_new(2 * DEV_PIN_BYTES + 1, &pin);
        if (r < 0)
                goto out;
        if (RAND_bytes(raw, sizeof(raw)) != 1) {
                r = hsm_ossl_fail(KILN_E_CRYPTO, "no random bytes for a PIN");
                goto out;
        }
        r = kiln_hex_encode(raw, sizeof(raw), (char *)pin->p, pin->cap);
        if (r < 0)
                goto out;
        pin->len = 2 * DEV_PIN_BYTES;
        r = write_new_file(path, pin->p, pin->len, 0600);
        if (r < 0)
                goto out;
        *ret = pin;
        pin = NULL;
out:
        kiln_memzero(raw, sizeof(raw));
        kiln_secret_free(pin);
        return r;
}

static int slot_by_label(CK_FUNCTION_LIST *fl, const char *label, int initialized,
                         CK_SLOT_ID *ret)
{
        CK_SLOT_ID slots[64];
        CK_ULONG n = 64;
        CK_TOKEN_INFO ti;
        char l[33];
        CK_RV rv = fl->C_GetSlotList(CK_TRUE, slots, &n);

        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_GetSlotList failed");
        for (CK_ULONG i = 0; i < n; i++) {
                if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
                        continue;
                hsm_p11_text(ti.label, sizeof(ti.label), l, sizeof(l));
                if (initialized && (ti.flags & CKF_TOKEN_INITIALIZED) && strcmp(l, label) == 0) {
                        *ret = slots[i];
                        return KILN_OK;
                }
                if (!initialized && !(ti.flags & CKF_TOKEN_INITIALIZED)) {
                        *ret = slots[i];
                        return KILN_OK;
                }
        }
        return kiln_fail(KILN_E_HSM_TOKEN, initialized ? "no token '%s'" : "no free slot for '%s'",
                         label);
}

/* C_InitToken on the free slot, then C_InitPIN as the security officer. */
static int token_create(const char *module, const struct kiln_secret *so,
                        const struct kiln_secret *pin)
{
        struct hsm_module *m = NULL;
        CK_SESSION_HANDLE s = 0;
        CK_UTF8CHAR label[32];
        CK_SLOT_ID slot;
        CK_RV rv;
        int have_s = 0, r;

        r = hsm_module_get(module, &m);
        if (r < 0)
                goto out;
        r = slot_by_label(m->fl, HSM_DEV_TOKEN, 0, &slot);
        if (r < 0)
                goto out;
        memset(label, ' ', sizeof(label));
        memcpy(label, HSM_DEV_TOKEN, strlen(HSM_DEV_TOKEN));
        rv = m->fl->C_InitToken(slot, so->p, so->len, label);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_TOKEN, rv, "C_InitToken failed");
                goto out;
        }
        /* SoftHSM moves an initialised token to a new slot id */
        r = slot_by_label(m->fl, HSM_DEV_TOKEN, 1, &slot);
        if (r < 0)
                goto out;
        rv = m->fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_PKCS11, rv, "C_OpenSession failed");
                goto out;
        }
        have_s = 1;
        rv = m->fl->C_Login(s, CKU_SO, so->p, so->len);
        if (rv == CKR_OK) {
                rv = m->fl->C_InitPIN(s, pin->p, pin->len);
                (void)m->fl->C_Logout(s);
        }
        if (rv != CKR_OK) {
                r = hsm_p11_fail(KILN_E_HSM_PIN, rv, "setting the user PIN of '%s' failed",
                                 HSM_DEV_TOKEN);
                goto out;
        }
        r = KILN_OK;
out:
        if (have_s)
                (void)m->fl->C_CloseSession(s);
        hsm_module_put(m);
        return r;
}

int hsm_dev_keygen_ec(struct hsm_token *t, CK_SESSION_HANDLE s, enum hsm_curve c,
                      const char *label, const uint8_t *id, size_t id_len, int extractable)
{
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE, ext = extractable ? CK_TRUE : CK_FALSE;
        CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
        void *lbl = (void *)(uintptr_t)label, *kid = (void *)(uintptr_t)id;
        const uint8_t *oid = c == HSM_CURVE_P256 ? hsm_oid_p256 : hsm_oid_p384;
        size_t oid_len = c == HSM_CURVE_P256 ? sizeof(hsm_oid_p256) : sizeof(hsm_oid_p384);
        CK_ATTRIBUTE pub[] = {
                {CKA_TOKEN, &yes, sizeof(yes)},
                {CKA_PRIVATE, &no, sizeof(no)},
                {CKA_VERIFY, &yes, sizeof(yes)},
                {CKA_EC_PARAMS, (void *)(uintptr_t)oid, oid_len},
                {CKA_LABEL, lbl, strlen(label)},
                {CKA_ID, kid, id_len},
        };
        CK_ATTRIBUTE priv[] = {
                {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
                {CKA_SIGN, &yes, sizeof(yes)},      {CKA_SENSITIVE, &yes, sizeof(yes)},
                {CKA_EXTRACTABLE, &ext, sizeof(ext)}, {CKA_LABEL, lbl, strlen(label)},
                {CKA_ID, kid, id_len},
        };
        CK_OBJECT_HANDLE hpub, hpriv;
        CK_RV rv;

        rv = t->fl->C_GenerateKeyPair(s, &m, pub, sizeof(pub) / sizeof(pub[0]), priv,
                                      sizeof(priv) / sizeof(priv[0]), &hpub, &hpriv);
        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "generating EC key '%s' on token '%s' failed", label,
                                    t->label);
        return KILN_OK;
}

static int keygen_secret(struct hsm_token *t, CK_SESSION_HANDLE s, const char *label,
                         const uint8_t *id, size_t id_len)
{
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
        CK_ULONG len = 32;
        CK_MECHANISM m = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
        CK_ATTRIBUTE a[] = {
                {CKA_CLASS, &cls, sizeof(cls)},
                {CKA_KEY_TYPE, &kt, sizeof(kt)},
                {CKA_TOKEN, &yes, sizeof(yes)},
                {CKA_PRIVATE, &yes, sizeof(yes)},
                {CKA_SENSITIVE, &yes, sizeof(yes)},
                {CKA_EXTRACTABLE, &no, sizeof(no)},
                {CKA_SIGN, &yes, sizeof(yes)},
                {CKA_VERIFY, &yes, sizeof(yes)},
                {CKA_VALUE_LEN, &len, sizeof(len)},
                {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)},
                {CKA_ID, (void *)(uintptr_t)id, id_len},
        };
        CK_OBJECT_HANDLE h;
        CK_RV rv = t->fl->C_GenerateKey(s, &m, a, sizeof(a) / sizeof(a[0]), &h);

        if (rv != CKR_OK)
                return hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                    "generating secret key '%s' on token '%s' failed", label,
                                    t->label);
        return KILN_OK;
}

/* DER of a name, a serial: for the certificate object's CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL. */
static int der_of(int (*enc)(const void *, unsigned char **), const void *v, unsigned char **ret,
                  int *ret_len)
{
        int len = enc(v, ret);

        if (len <= 0)
                return hsm_ossl_fail(KILN_E_CRYPTO, "cannot encode a certificate field");
        *ret_len = len;
        return KILN_OK;
}

static int enc_name(const void *v, unsigned char **out)
{
        return i2d_X509_NAME(v, out);
}

static int enc_int(const void *v, unsigned char **out)
{
        return i2d_ASN1_INTEGER(v, out);
}

int hsm_dev_store_cert(struct hsm_token *t, CK_SESSION_HANDLE s, X509 *x, const uint8_t *der,
                       size_t len, const char *label, const uint8_t *id, size_t id_len)
{
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
        CK_CERTIFICATE_TYPE ct = CKC_X_509;
        unsigned char *subj = NULL, *iss = NULL, *ser = NULL;
        int subj_len = 0, iss_len = 0, ser_len = 0, r;
        CK_OBJECT_HANDLE h;
        CK_RV rv;

        r = der_of(enc_name, X509_get_subject_name(x), &subj, &subj_len);
        if (r == KILN_OK)
                r = der_of(enc_name, X509_get_issuer_name(x), &iss, &iss_len);
        if (r == KILN_OK)
                r = der_of(enc_int, X509_get0_serialNumber(x), &ser, &ser_len);
        if (r == KILN_OK) {
                CK_ATTRIBUTE a[] = {
                        {CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)},
                        {CKA_TOKEN, &yes, sizeof(yes)},
                        {CKA_PRIVATE, &no, sizeof(no)},
                        {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)},
                        {CKA_ID, (void *)(uintptr_t)id, id_len},
                        {CKA_SUBJECT, subj, (CK_ULONG)subj_len},
                        {CKA_ISSUER, iss, (CK_ULONG)iss_len},
                        {CKA_SERIAL_NUMBER, ser, (CK_ULONG)ser_len},
                        {CKA_VALUE, (void *)(uintptr_t)der, len},
                };

                rv = t->fl->C_CreateObject(s, a, sizeof(a) / sizeof(a[0]), &h);
                if (rv != CKR_OK)
                        r = hsm_p11_fail(KILN_E_HSM_PKCS11, rv,
                                         "storing certificate '%s' on token '%s' failed", label,
                                         t->label);
        }
        OPENSSL_free(subj);
        OPENSSL_free(iss);
        OPENSSL_free(ser);
        return r;
}

/* The SEC1 point of a signing key's public half. */
static int key_point(const struct hsm_key *k, uint8_t *out, size_t cap, size_t *ret_len)
{
        EVP_PKEY *pk = NULL;
        size_t len = 0;
        int r = hsm_key_public_pkey(k, &pk);

        if (r < 0)
                return r;
        if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, out, cap, &len) != 1 ||
            len == 0 || out[0] != 0x04)
                r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot read the public point of '%s'", k->uri);
        else
                *ret_len = len;
        EVP_PKEY_free(pk);
        return r;
}

static int pem_write(const char *path, X509 *x, const uint8_t *spki, size_t spki_len)
{
        BIO *b = BIO_new(BIO_s_mem());
        EVP_PKEY *pk = NULL;
        char *data = NULL;
        long n;
        int r;

        if (b == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (x != NULL) {
                if (PEM_write_bio_X509(b, x) != 1) {
                        r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot write PEM");
                        goto out;
                }
        } else {
                const unsigned char *p = spki;

                pk = d2i_PUBKEY(NULL, &p, (long)spki_len);
                if (pk == NULL || PEM_write_bio_PUBKEY(b, pk) != 1) {
                        r = hsm_ossl_fail(KILN_E_CRYPTO, "cannot write PEM");
                        goto out;
                }
        }
        n = BIO_get_mem_data(b, &data);
        r = write_new_file(path, data, (size_t)n, 0644);
out:
        EVP_PKEY_free(pk);
        BIO_free(b);
        return r;
}

/* Make a CA certificate for subject key sk signed by signer (sk == signer: self-signed). */
static int ca_cert(struct hsm_token *t, const struct hsm_key *signer,
                   X509 *signer_cert, const struct hsm_key *sk, const char *cn, int path_len,
                   int64_t years, const char *pem_path, const char *label, const uint8_t *id,
                   X509 **ret)
{
        const struct hsm_name_attr subject[] = {
                {"O", "Kiln development PKI (not for production)"},
                {"CN", cn},
        };
        int64_t now = (int64_t)time(NULL);
        struct hsm_cert_template tpl = {
                .subject = subject,
                .n_subject = 2,
                .not_before = now - 3600,
                .not_after = now + years * YEAR_S,
                .key_usage = HSM_KU_KEY_CERT_SIGN | HSM_KU_CRL_SIGN,
        };
        struct hsm_cert_params p = {.t = &tpl, .ca = 1, .path_len = path_len};
        struct hsm_signer sg = {0};
        X509_NAME *issuer = NULL;
        uint8_t point[97], serial[HSM_SERIAL_LEN], aki[20], *der = NULL;
        const ASN1_OCTET_STRING *ski;
        size_t point_len = 0, der_len = 0;
        CK_SESSION_HANDLE s = 0;
        X509 *x = NULL;
        int have_s = 0, r;

        r = key_point(sk, point, sizeof(point), &point_len);
        if (r < 0)
                goto out;
        p.curve = sk->kind == HSM_KEY_EC_P256 ? HSM_CURVE_P256 : HSM_CURVE_P384;
        p.point = point;
        p.point_len = point_len;
        if (signer_cert == NULL) {
                issuer = X509_NAME_new();
                if (issuer == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
                r = hsm_cert_name_add(issuer, &tpl);
                if (r < 0)
                        goto out;
                hsm_cert_ski(point, point_len, aki);
                p.aki = aki;
                p.aki_len = sizeof(aki);
        } else {
                ski = X509_get0_subject_key_id(signer_cert);
                if (ski == NULL) {
                        r = kiln_fail(KILN_E_CERT_BUILD, "signer certificate without SKI");
                        goto out;
                }
                p.aki = ASN1_STRING_get0_data(ski);
                p.aki_len = (size_t)ASN1_STRING_length(ski);
        }
        r = hsm_cert_template_check_ca(&tpl, 1);
        if (r == KILN_OK)
                r = hsm_signer_init(signer, issuer ? issuer : X509_get_subject_name(signer_cert),
                                    &sg);
        if (r == KILN_OK)
                r = hsm_cert_serial(t, serial);
        if (r == KILN_OK)
                r = hsm_cert_build(&p, &sg, signer, serial, &der, &der_len, &x);
        if (r == KILN_OK && (r = hsm_session_get(t, &s)) == KILN_OK)
                have_s = 1;
        if (r == KILN_OK)
                r = hsm_dev_store_cert(t, s, x, der, der_len, label, id, 1);
        if (r == KILN_OK)
                r = pem_write(pem_path, x, NULL, 0);
        if (r < 0)
                goto out;
        *ret = x;
        x = NULL;
out:
        if (have_s)
                hsm_session_put(t, s);
        X509_free(x);
        kiln_free(der);
        hsm_signer_clear(&sg);
        X509_NAME_free(issuer);
        return r;
}

/* The public key of a signing key, as a PEM file (for verifiers without the HSM). */
static int audit_pem(const struct hsm_key *audit, const char *path)
{
        uint8_t *spki = NULL;
        size_t len = 0;
        int r = hsm_key_public_der(audit, &spki, &len);

        if (r == KILN_OK)
                r = pem_write(path, NULL, spki, len);
        kiln_free(spki);
        return r;
}

/* Check DIR holds a working PKI: the token opens, every key and certificate is there, chain ok. */
static int dev_check(struct hsm_dev *d)
{
        struct hsm_token *t = NULL;
        struct hsm_issuer *iss = NULL;
        struct hsm_key *k = NULL;
        int r;

        r = hsm_token_open(&d->cfg, &t);
        if (r == KILN_OK)
                r = hsm_issuer_load(t, HSM_DEV_ISSUING_URI, &iss);
        if (r == KILN_OK && (r = hsm_key_find(t, HSM_DEV_ROOT_URI, HSM_USE_SIGN, &k)) == KILN_OK)
                hsm_key_free(k);
        if (r == KILN_OK && (r = hsm_key_find(t, HSM_DEV_AUDIT_URI, HSM_USE_SIGN, &k)) == KILN_OK)
                hsm_key_free(k);
        if (r == KILN_OK && (r = hsm_key_find(t, HSM_DEV_COMMIT_URI, HSM_USE_HMAC, &k)) == KILN_OK)
                hsm_key_free(k);
        if (r == KILN_OK && (r = hsm_key_find(t, HSM_DEV_RELEASE_URI, HSM_USE_SIGN, &k)) == KILN_OK)
                hsm_key_free(k);
        if (r == KILN_OK && (r = hsm_key_find(t, HSM_DEV_OFFICER_URI, HSM_USE_SIGN, &k)) == KILN_OK)
                hsm_key_free(k);
        if (r == KILN_OK && hsm_issuer_chain_len(iss) != 2)
                r = kiln_fail(KILN_E_CERT_VERIFY, "the issuing CA chain has %zu certificates, not 2",
                              hsm_issuer_chain_len(iss));
        hsm_issuer_free(iss);
        hsm_token_free(t);
        return r;
}

static int dev_create(const char *dir, const char *module)
{
        struct kiln_secret *so = NULL, *pin = NULL;
        struct hsm_token *t = NULL;
        struct hsm_key *root = NULL, *issuing = NULL, *audit = NULL, *commit = NULL;
        struct hsm_key *release = NULL, *officer = NULL;
        CK_SESSION_HANDLE s = 0;
        X509 *root_cert = NULL, *issuing_cert = NULL;
        struct hsm_dev d;
        char path[KILN_PATH_MAX], conf[KILN_PATH_MAX + 200];
        int have_s = 0, r;

        r = dev_path(dir, HSM_DEV_TOKENS, path, sizeof(path));
        if (r == KILN_OK)
                r = kiln_mkdirs(path, 0700);
        if (r < 0)
                goto out;
        /* dir exists now: resolve it and point SoftHSM here */
        r = hsm_dev_use(dir, module, &d);
        if (r < 0)
                goto out;
        r = kiln_snprintf(conf, sizeof(conf),
                          "# kiln development token store (kiln hsm init-dev): not for production\n"
                          "directories.tokendir = %s/%s\n"
                          "objectstore.backend = file\n"
                          "log.level = ERROR\n"
                          "slots.removable = false\n",
                          d.dir, HSM_DEV_TOKENS);
        if (r < 0) {
                r = kiln_fail(KILN_E_RANGE, "directory path too long");
                goto out;
        }
        r = write_new_file(d.conf, conf, strlen(conf), 0600);
        if (r == KILN_OK)
                r = pin_create(d.dir, HSM_DEV_SO_PIN, &so);
        if (r == KILN_OK)
                r = pin_create(d.dir, HSM_DEV_PIN, &pin);
        if (r == KILN_OK)
                r = token_create(d.module, so, pin);
        kiln_secret_free(so);
        kiln_secret_free(pin);
        so = pin = NULL;
        if (r < 0)
                goto out;
        d.cfg.read_write = 1;
        d.cfg.pool_size = 1;
        r = hsm_token_open(&d.cfg, &t);
        if (r < 0)
                goto out;
        r = hsm_token_require_mechanism(t, CKM_EC_KEY_PAIR_GEN);
        if (r == KILN_OK)
                r = hsm_token_require_mechanism(t, CKM_GENERIC_SECRET_KEY_GEN);
        if (r < 0)
                goto out;
        r = hsm_session_get(t, &s);
        if (r < 0)
                goto out;
        have_s = 1;
        r = hsm_dev_keygen_ec(t, s, HSM_CURVE_P384, ROOT_LABEL, id_root, 1, 0);
        if (r == KILN_OK)
                r = hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, ISSUING_LABEL, id_issuing, 1, 0);
        if (r == KILN_OK)
                r = hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, AUDIT_LABEL, id_audit, 1, 0);
        if (r == KILN_OK)
                r = keygen_secret(t, s, COMMIT_LABEL, id_commit, 1);
        if (r == KILN_OK)
                r = hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, RELEASE_LABEL, id_release, 1, 0);
        if (r == KILN_OK)
                r = hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, OFFICER_LABEL, id_officer, 1, 0);
        hsm_session_put(t, s);
        have_s = 0;
        if (r < 0)
                goto out;
        r = hsm_key_find(t, HSM_DEV_ROOT_URI, HSM_USE_SIGN, &root);
        if (r == KILN_OK)
                r = hsm_key_find(t, HSM_DEV_ISSUING_URI, HSM_USE_SIGN, &issuing);
        if (r == KILN_OK)
                r = hsm_key_find(t, HSM_DEV_AUDIT_URI, HSM_USE_SIGN, &audit);
        if (r == KILN_OK)
                r = hsm_key_find(t, HSM_DEV_COMMIT_URI, HSM_USE_HMAC, &commit);
        if (r == KILN_OK)
                r = hsm_key_find(t, HSM_DEV_RELEASE_URI, HSM_USE_SIGN, &release);
        if (r == KILN_OK)
                r = hsm_key_find(t, HSM_DEV_OFFICER_URI, HSM_USE_SIGN, &officer);
        if (r < 0)
                goto out;
        r = dev_path(d.dir, HSM_DEV_ROOT_PEM, path, sizeof(path));
        if (r == KILN_OK)
                r = ca_cert(t, root, NULL, root, "Kiln Development Root CA", -1, 20, path,
                            ROOT_LABEL, id_root, &root_cert);
        if (r == KILN_OK)
                r = dev_path(d.dir, HSM_DEV_ISSUING_PEM, path, sizeof(path));
        if (r == KILN_OK)
                r = ca_cert(t, root, root_cert, issuing, "Kiln Development Issuing CA", 0, 10,
                            path, ISSUING_LABEL, id_issuing, &issuing_cert);
        if (r == KILN_OK)
                r = dev_path(d.dir, HSM_DEV_AUDIT_PEM, path, sizeof(path));
        if (r == KILN_OK)
                r = audit_pem(audit, path);
        if (r == KILN_OK)
                r = dev_path(d.dir, HSM_DEV_RELEASE_PEM, path, sizeof(path));
        if (r == KILN_OK)
                r = audit_pem(release, path);
        if (r == KILN_OK)
                r = dev_path(d.dir, HSM_DEV_OFFICER_PEM, path, sizeof(path));
        if (r == KILN_OK)
                r = audit_pem(officer, path);
out:
        if (have_s)
                hsm_session_put(t, s);
        X509_free(root_cert);
        X509_free(issuing_cert);
        hsm_key_free(root);
        hsm_key_free(issuing);
        hsm_key_free(audit);
        hsm_key_free(commit);
        hsm_key_free(release);
        hsm_key_free(officer);
        hsm_token_free(t);
        kiln_secret_free(so);
        kiln_secret_free(pin);
        return r;
}

int hsm_dev_init(const char *dir, const char *module, enum hsm_dev_state *ret_state)
{
        char path[KILN_PATH_MAX], missing[512] = "", why[512];
        size_t present = 0;
        struct hsm_dev d;
        struct stat st;
        int r;

        for (size_t i = 0; i < DEV_FILES; i++) {
                r = dev_path(dir, dev_files[i], path, sizeof(path));
                if (r < 0)
                        return r;
                if (lstat(path, &st) == 0) {
                        present++;
                } else {
                        size_t n = strlen(missing);

                        snprintf(missing + n, sizeof(missing) - n, "%s%s", n ? ", " : "",
                                 dev_files[i]);
                }
        }
        if (present == DEV_FILES) {
                r = hsm_dev_use(dir, module, &d);
                if (r == KILN_OK)
                        r = dev_check(&d);
                if (r == KILN_OK) {
                        *ret_state = HSM_DEV_EXISTED;
                        return KILN_OK;
                }
                kiln_strlcpy(why, kiln_err_detail(), sizeof(why));
                kiln_err_reset();
                return kiln_fail(KILN_E_EXISTS,
                                 "'%s' holds a development PKI that does not work (%s): remove "
                                 "the directory and run init-dev again",
                                 dir, why[0] ? why : kiln_strerror(r));
        }
        if (present > 0)
                return kiln_fail(KILN_E_EXISTS,
                                 "'%s' holds part of a development PKI (missing: %s): an earlier "
                                 "init-dev stopped half-way; remove the directory and run init-dev "
                                 "again",
                                 dir, missing);
        r = dev_create(dir, module);
        if (r < 0)
                return r;
        *ret_state = HSM_DEV_CREATED;
        return KILN_OK;
}
