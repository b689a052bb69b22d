/*
 * hsm module internals: the PKCS#11 structures behind the opaque public types, and the helpers the
 * files of the module share. Tests include this header to reach the decision functions directly.
 */
#ifndef KILN_HSM_INTERNAL_H
#define KILN_HSM_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_cert.h"
#include "kiln/hsm_devkey.h"
#include "kiln/limits.h"
#include "kiln/util.h"

/* ---------------------------------------------------------------- modules (module.c) */

struct hsm_module {
        char path[KILN_PATH_MAX];
        void *dl;
        CK_FUNCTION_LIST *fl;
        unsigned refs;
        int initialized; /* C_Initialize done by us and not yet finalised */
        int finalize;    /* we own the initialisation (not CKR_CRYPTOKI_ALREADY_INITIALIZED) */
        char conf[KILN_PATH_MAX]; /* SOFTHSM2_CONF when it was initialised ("" when unset) */
};

/* Load (once per path) and initialise a module; every get is matched by a put. */
int hsm_module_get(const char *path, struct hsm_module **ret);
void hsm_module_put(struct hsm_module *m);
/*
 * Point SOFTHSM2_CONF at conf for this process before module path is loaded. SoftHSM reads it in
 * C_Initialize only, so this is refused while the module is initialised with another one.
 */
int hsm_module_use_conf(const char *path, const char *conf);

/* ---------------------------------------------------------------- tokens (token.c) */

struct hsm_token {
        struct hsm_module *mod;
        CK_FUNCTION_LIST *fl;
        CK_SLOT_ID slot;
        char label[33];
        char manufacturer[33];
        char model[17];
        char serial[17];
        char slot_description[65];
        char slot_manufacturer[33];
        CK_MECHANISM_TYPE *mechs;
        size_t n_mechs;
        int production;
        int read_write;
        int logged_in;
        unsigned borrow_timeout_ms;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        int sync_ready;
        CK_SESSION_HANDLE *sessions; /* all open sessions */
        size_t n_sessions;
        CK_SESSION_HANDLE *idle; /* stack of sessions not borrowed */
        size_t n_idle;
};

/* Borrow a session (waits up to the borrow timeout) and give it back. */
int hsm_session_get(struct hsm_token *t, CK_SESSION_HANDLE *ret);
void hsm_session_put(struct hsm_token *t, CK_SESSION_HANDLE s);

/* Refuse a login when CKF_USER_PIN_COUNT_LOW, _FINAL_TRY or _LOCKED is set (or no user PIN). */
int hsm_pin_flags_check(const CK_TOKEN_INFO *ti);

/* Copy a space-padded PKCS#11 text field into out, trimmed and NUL-terminated. */
void hsm_p11_text(const unsigned char *p, size_t n, char *out, size_t cap);

/* Does the token match the token/slot attributes of u (all that u names)? */
int hsm_token_matches_uri(const struct hsm_token *t, const struct hsm_uri *u);

/* kiln_fail(code, "<fmt>: CKR_NAME"): one detail line with the PKCS#11 return value named. */
int hsm_p11_fail(int code, CK_RV rv, const char *fmt, ...) KILN_PRINTF(3, 4);
/* kiln_fail(code, "<fmt>: <OpenSSL reason>") and clear OpenSSL's error queue. */
int hsm_ossl_fail(int code, const char *fmt, ...) KILN_PRINTF(2, 3);

/* ---------------------------------------------------------------- objects (key.c) */

/* Find at most max objects matching tmpl; *ret_n is the number found (up to max). */
int hsm_objects_find(struct hsm_token *t, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, size_t n,
                     CK_OBJECT_HANDLE *out, size_t max, size_t *ret_n);
/* One attribute into buf (cap bytes). KILN_E_NOT_FOUND when the object lacks it or hides it. */
int hsm_attr_get(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                 CK_ATTRIBUTE_TYPE type, void *buf, size_t cap, size_t *ret_len);
/* A variable-size attribute (at most max bytes), allocated with kiln_malloc. */
int hsm_attr_alloc(struct hsm_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                   CK_ATTRIBUTE_TYPE type, size_t max, uint8_t **ret, size_t *ret_len);

/* Template attributes (class, label, id) of a parsed URI; cls is storage for the class value. */
size_t hsm_uri_template(const struct hsm_uri *u, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *tmpl,
                        size_t cap);

struct hsm_key {
        struct hsm_token *tok;
        CK_OBJECT_HANDLE handle;
        CK_OBJECT_CLASS cls;
        CK_KEY_TYPE type;
        enum hsm_key_kind kind;
        size_t sig_len; /* raw signature bytes (r||s, or the RSA modulus size) */
        char label[HSM_LABEL_MAX + 1];
        uint8_t id[HSM_ID_MAX];
        size_t id_len;
        char uri[KILN_URI_MAX]; /* as given, for messages */
        int extractable;
        int sensitive;
};

/* The host hash for a signing key: SHA-256 (P-256, RSA) or SHA-384 (P-384). */
const EVP_MD *hsm_key_md(const struct hsm_key *k);
/* Sign a digest on session s; raw result (r||s for EC). */
int hsm_key_sign_digest(const struct hsm_key *k, CK_SESSION_HANDLE s, const uint8_t *dg,
                        size_t dlen, uint8_t *raw, size_t cap, size_t *ret_len);
/* Raw r||s (n bytes) to a DER ECDSA-Sig-Value. */
int hsm_ecdsa_raw_to_der(const uint8_t *raw, size_t n, uint8_t *der, size_t cap,
                         size_t *ret_len);
/* Sign msg (hash on host) on session s; DER for EC, raw for RSA-PSS. */
int hsm_key_sign_on(const struct hsm_key *k, CK_SESSION_HANDLE s, const void *msg, size_t len,
                    uint8_t *sig, size_t cap, size_t *ret_len);
/* The key's public half as an EVP_PKEY, from the token's public key object with the same id. */
int hsm_key_public_pkey(const struct hsm_key *k, EVP_PKEY **ret);

/* An EC public key from a SEC1 uncompressed point (fails when it is not on the curve). */
int hsm_ec_pkey_from_point(enum hsm_curve c, const uint8_t *pt, size_t len, EVP_PKEY **ret);

/* EC curve OIDs as CKA_EC_PARAMS carries them. */
extern const uint8_t hsm_oid_p256[10];
extern const uint8_t hsm_oid_p384[7];

/* ---------------------------------------------------------------- certificates (cert.c) */

/*
 * What a signer contributes to every certificate it signs: the issuer name and the signature
 * AlgorithmIdentifier (parsed, and as DER for the outer Certificate), worked out once per signer.
 */
struct hsm_signer {
        X509_NAME *issuer;
        X509_ALGOR *alg;
        uint8_t *alg_der;
        size_t alg_len;
};

int hsm_signer_init(const struct hsm_key *k, const X509_NAME *issuer, struct hsm_signer *ret);
void hsm_signer_clear(struct hsm_signer *sg);

/* Everything a certificate is built from. The CA form is for the development PKI (init-dev). */
struct hsm_cert_params {
        const struct hsm_cert_template *t;
        int ca;               /* basicConstraints CA:true; keyUsage keyCertSign/cRLSign allowed */
        int path_len;         /* for a CA: pathLenConstraint, -1 for none */
        enum hsm_curve curve; /* of the subject key */
        const uint8_t *point; /* subject public key, SEC1 uncompressed */
        size_t point_len;
        EVP_PKEY *pkey;       /* instead of curve/point: a subject key of any type (CA certs) */
        const uint8_t *aki;   /* authority key id (the issuer's SKI; for a root its own SKI) */
        size_t aki_len;
};

/* Template checks; ca allows the CA-only key usages. */
int hsm_cert_template_check_ca(const struct hsm_cert_template *t, int ca);

/* SKI of a public key, RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
void hsm_cert_ski(const uint8_t *point, size_t len, uint8_t ret[20]);

/*
 * Build one certificate, sign its TBS with key k (hash on the host, raw mechanism; a session is
 * borrowed for the signature only), assemble the DER Certificate and parse it back. serial is
 * HSM_SERIAL_LEN bytes, positive. Returns the DER (kiln_malloc) and the parsed X509.
 */
int hsm_cert_build(const struct hsm_cert_params *p, const struct hsm_signer *sg,
                   const struct hsm_key *k, const uint8_t *serial, uint8_t **ret_der,
                   size_t *ret_len, X509 **ret_x509);

/* Add the template's subject attributes to name. */
int hsm_cert_name_add(X509_NAME *name, const struct hsm_cert_template *t);

/* A positive serial of HSM_SERIAL_LEN bytes from C_GenerateRandom. */
int hsm_cert_serial(struct hsm_token *t, uint8_t ret[HSM_SERIAL_LEN]);

/* ---------------------------------------------------------------- development PKI (dev.c) */

/*
 * Generate an EC key pair in the token (R/W session s): private half CKA_SENSITIVE, CKA_SIGN, and
 * CKA_EXTRACTABLE as given (false for everything init-dev makes; tests make extractable ones).
 */
int hsm_dev_keygen_ec(struct hsm_token *t, CK_SESSION_HANDLE s, enum hsm_curve c,
                      const char *label, const uint8_t *id, size_t id_len, int extractable);
/* Store a DER certificate as a CKO_CERTIFICATE token object with the given label and id. */
int hsm_dev_store_cert(struct hsm_token *t, CK_SESSION_HANDLE s, X509 *x, const uint8_t *der,
                       size_t len, const char *label, const uint8_t *id, size_t id_len);

#endif
