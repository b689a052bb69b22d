/*
 * PKCS#11 client: modules, tokens, sessions, keys, signing, random, HMAC.
 *
 * A module is loaded with dlopen and initialised once per process (CKF_OS_LOCKING_OK); several
 * tokens of one module share it. A token is opened from a plain struct hsm_config, which the station
 * fills from its configuration file: module path, token URI, PIN source, pool size, production flag
 * and the mechanisms it needs. The token keeps a pool of sessions that share one login, so slots
 * (threads) can sign at once: each operation borrows a session under a mutex and returns it.
 *
 * Tokens and keys are named by RFC 7512 URIs ("pkcs11:token=kiln-dev;object=kiln-dev-issuing;
 * type=private"). A URI carrying a PIN (pin-value, pin-source) is refused: the PIN comes only from an
 * environment variable or an owner-only file, is held in a kiln_secret and wiped right after C_Login.
 * Before logging in the token's CKF_USER_PIN_COUNT_LOW / FINAL_TRY / LOCKED flags are checked and a
 * login is refused when any is set, so a script never locks a production HSM. A wrong PIN is never
 * retried.
 *
 * Every function returns KILN_OK or a negative kiln_err with one line of detail (kiln_fail()); a
 * PKCS#11 failure carries its CKR_ name. No message ever contains a PIN. Nothing here logs above
 * debug.
 */
#ifndef KILN_HSM_H
#define KILN_HSM_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/limits.h"
#include "kiln/secret.h"

/* SoftHSM's path on Debian: the default module for development and tests. */
#define HSM_SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

#define HSM_POOL_DEFAULT 4u           /* sessions per token when the config says 0 */
#define HSM_POOL_MAX KILN_SLOTS_MAX   /* one session per slot is the most that helps */
#define HSM_BORROW_TIMEOUT_MS 30000u  /* longest wait for a free session */
/* Caps on what a token hands back (hostile input like any other): they belong with limits.h. */
#define HSM_LABEL_MAX 128u            /* CKA_LABEL bytes */
#define HSM_ID_MAX 64u                /* CKA_ID bytes */
#define HSM_SIG_MAX 512u              /* largest signature we accept (RSA 4096) */
#define HSM_RANDOM_MAX (1u << 16)     /* bytes per hsm_token_random() call */
#define HSM_HMAC_LEN 32u              /* HMAC-SHA256 output */

/* ---------------------------------------------------------------- PKCS#11 URIs (RFC 7512) */

enum hsm_obj_type {
        HSM_OBJ_ANY,
        HSM_OBJ_PRIVATE,
        HSM_OBJ_PUBLIC,
        HSM_OBJ_SECRET,
        HSM_OBJ_CERT,
        HSM_OBJ_DATA,
        HSM_OBJ_TYPE_MAX
};

/* Bits of struct hsm_uri.has: which attributes the URI names. */
#define HSM_URI_TOKEN (1u << 0)
#define HSM_URI_MANUFACTURER (1u << 1)
#define HSM_URI_SERIAL (1u << 2)
#define HSM_URI_MODEL (1u << 3)
#define HSM_URI_SLOT_ID (1u << 4)
#define HSM_URI_SLOT_DESCRIPTION (1u << 5)
#define HSM_URI_SLOT_MANUFACTURER (1u << 6)
#define HSM_URI_OBJECT (1u << 7)
#define HSM_URI_ID (1u << 8)
#define HSM_URI_TYPE (1u << 9)

/* A parsed URI. String values are percent-decoded and NUL-terminated; id is binary. */
struct hsm_uri {
        unsigned has;
        char token[33];             /* CK_TOKEN_INFO.label */
        char manufacturer[33];      /* CK_TOKEN_INFO.manufacturerID */
        char serial[17];            /* CK_TOKEN_INFO.serialNumber */
        char model[17];             /* CK_TOKEN_INFO.model */
        char slot_description[65];  /* CK_SLOT_INFO.slotDescription */
        char slot_manufacturer[33]; /* CK_SLOT_INFO.manufacturerID */
        unsigned long slot_id;
        char object[HSM_LABEL_MAX + 1]; /* CKA_LABEL */
        uint8_t id[HSM_ID_MAX];         /* CKA_ID */
        size_t id_len;
        enum hsm_obj_type type; /* CKA_CLASS */
};

/*
 * Parse a PKCS#11 URI. Path attributes: token, manufacturer, serial, model, slot-id,
 * slot-description, slot-manufacturer, object, id, type. pin-value and pin-source are refused (PINs
 * never travel in URIs), and so is any other attribute, so a typo cannot silently widen a match.
 */
int hsm_uri_parse(const char *s, struct hsm_uri *ret);

/* ---------------------------------------------------------------- PIN sources */

enum hsm_pin_source {
        HSM_PIN_NONE, /* no login (public objects and token information only) */
        HSM_PIN_ENV,  /* ref names an environment variable */
        HSM_PIN_FILE, /* ref is a file path; the file must be owned by the user and mode 0600/0400 */
        HSM_PIN_SOURCE_MAX
};

/*
 * Read a PIN into a new secret. A file must be a regular file (not a symbolic link) owned by the
 * effective user with no group or other permission bits; one trailing newline is dropped. Empty or
 * over-long PINs are refused. The detail names the source, never the value.
 */
int hsm_pin_load(enum hsm_pin_source src, const char *ref, struct kiln_secret **ret);

/* ---------------------------------------------------------------- tokens */

/* What the station's configuration says about one token. Strings are borrowed for the call only. */
struct hsm_config {
        const char *module;    /* module path; NULL = HSM_SOFTHSM_MODULE */
        const char *softhsm_conf; /* SOFTHSM2_CONF to set before loading (development); NULL */
        const char *token_uri; /* selects exactly one token, e.g. "pkcs11:token=kiln-dev" */
        enum hsm_pin_source pin_source;
        const char *pin_ref;          /* variable name or file path */
        unsigned pool_size;           /* sessions; 0 = HSM_POOL_DEFAULT, at most HSM_POOL_MAX */
        unsigned borrow_timeout_ms;   /* 0 = HSM_BORROW_TIMEOUT_MS */
        int production;               /* refuse extractable or non-sensitive signing keys */
        int read_write;               /* R/W sessions (creating objects: init-dev, tests) */
        const char *const *mechanisms; /* names ("CKM_ECDSA") the token must offer, beyond those */
        size_t n_mechanisms;           /* implied by the keys opened later */
};

struct hsm_token;

/*
 * Load the module, select the token by URI (exactly one must match), check the mechanisms named in
 * the config, open the session pool and, when a PIN source is given, log in (hsm_token_login).
 */
int hsm_token_open(const struct hsm_config *cfg, struct hsm_token **ret);
void hsm_token_free(struct hsm_token *t);

/* Log the pool in: read the PIN, refuse on low-count/final-try/locked flags, C_Login once, wipe. */
int hsm_token_login(struct hsm_token *t, enum hsm_pin_source src, const char *ref);

/* KILN_E_HSM_MECHANISM "token 'X' lacks mechanism CKM_Y" unless the token lists it. */
int hsm_token_require_mechanism(const struct hsm_token *t, unsigned long mech);
int hsm_token_require_mechanism_name(const struct hsm_token *t, const char *name);

/* n bytes from C_GenerateRandom (n <= HSM_RANDOM_MAX). */
int hsm_token_random(struct hsm_token *t, void *buf, size_t n);

const char *hsm_token_label(const struct hsm_token *t);
int hsm_token_is_production(const struct hsm_token *t);

/* A count the token does not report (CK_UNAVAILABLE_INFORMATION). */
#define HSM_INFO_UNAVAILABLE ((unsigned long)-1)

/*
 * Token facts for `kiln hsm info`. Strings are trimmed of the PKCS#11 space padding. A maximum of 0
 * means "no limit" (CK_EFFECTIVELY_INFINITE); HSM_INFO_UNAVAILABLE means the token does not say.
 */
struct hsm_token_desc {
        char label[33];
        char manufacturer[33];
        char model[17];
        char serial[17];
        unsigned long slot_id;
        unsigned long flags; /* CKF_* token flags, freshly read; decoded below */
        int user_pin_count_low, user_pin_final_try, user_pin_locked, user_pin_to_be_changed;
        int so_pin_count_low, so_pin_final_try, so_pin_locked, so_pin_to_be_changed;
        unsigned long min_pin_len, max_pin_len;
        unsigned long session_count, max_session_count;
        unsigned pool_size;
        int logged_in;
};
int hsm_token_describe(struct hsm_token *t, struct hsm_token_desc *ret);

/* The token's mechanism list (owned by the token, valid until hsm_token_free). */
void hsm_token_mechanisms(const struct hsm_token *t, const unsigned long **ret_list,
                          size_t *ret_n);

/* "CKF_RNG|CKF_LOGIN_REQUIRED|..." for token flags into out. */
int hsm_token_flags_str(unsigned long flags, char *out, size_t cap);

/* Name tables: "CKR_PIN_INCORRECT", "CKM_ECDSA"; unknown values give "CKR_0x..."-style text. */
const char *hsm_rv_name(unsigned long rv);
const char *hsm_mech_name(unsigned long mech);
/* "CKM_ECDSA" (or "ECDSA") to its value; KILN_E_NOT_FOUND for an unknown name. */
int hsm_mech_from_name(const char *name, unsigned long *ret);

/* ---------------------------------------------------------------- keys */

enum hsm_key_kind {
        HSM_KEY_EC_P256, /* signs SHA-256 digests with CKM_ECDSA */
        HSM_KEY_EC_P384, /* signs SHA-384 digests with CKM_ECDSA */
        HSM_KEY_RSA,     /* signs SHA-256 digests with CKM_RSA_PKCS_PSS (MGF1-SHA256, salt 32) */
        HSM_KEY_HMAC,    /* CKM_SHA256_HMAC with a secret key */
        HSM_KEY_KIND_MAX
};

enum hsm_key_use {
        HSM_USE_SIGN, /* a private key */
        HSM_USE_HMAC, /* a secret key */
        HSM_USE_MAX
};

struct hsm_key;

/*
 * Find the one key the URI names for the use. Zero matches: KILN_E_HSM_KEY_NOT_FOUND; several:
 * KILN_E_HSM_KEY_AMBIGUOUS (naming the URI). The key's mechanism must be on the token's list. With
 * the production flag a key that is extractable or not sensitive is refused (KILN_E_HSM_KEY_POLICY),
 * and so is one whose CKA_SIGN is false. The key borrows the token: free it first.
 */
int hsm_key_find(struct hsm_token *t, const char *uri, enum hsm_key_use use,
                 struct hsm_key **ret);
void hsm_key_free(struct hsm_key *k);

enum hsm_key_kind hsm_key_kind(const struct hsm_key *k);
const char *hsm_key_label(const struct hsm_key *k);

/*
 * Sign msg: hash on the host (SHA-256 for P-256 and RSA, SHA-384 for P-384), then CKM_ECDSA or
 * CKM_RSA_PKCS_PSS in the token. EC signatures come back DER-encoded (ECDSA-Sig-Value), the form
 * X.509 and `openssl dgst -verify` use; RSA-PSS signatures are the raw modulus-sized value.
 */
int hsm_key_sign(const struct hsm_key *k, const void *msg, size_t len, uint8_t *sig, size_t cap,
                 size_t *ret_len);

/* HMAC-SHA256 in the token (credential commitments). */
int hsm_key_hmac(const struct hsm_key *k, const void *msg, size_t len,
                 uint8_t ret_mac[HSM_HMAC_LEN]);

/*
 * The SubjectPublicKeyInfo DER of a signing key, from the token's public key object with the same
 * CKA_ID (exactly one). Caller frees with kiln_free.
 */
int hsm_key_public_der(const struct hsm_key *k, uint8_t **ret, size_t *ret_len);

/* ---------------------------------------------------------------- objects (kiln hsm info) */

struct hsm_object_desc {
        unsigned long cls;      /* CKO_* */
        int is_key;             /* a private, public or secret key */
        int is_secret;          /* a private or secret key: the flags below apply */
        unsigned long key_type; /* CKK_*, for keys */
        char curve[16];         /* "P-256", "P-384", "other" for EC keys */
        unsigned long bits;     /* RSA modulus bits, secret key bits */
        char label[HSM_LABEL_MAX + 1];
        uint8_t id[HSM_ID_MAX];
        size_t id_len;
        int extractable; /* -1 when the attribute does not apply or cannot be read */
        int sensitive;
        int sign;
};

/* Every object the URI matches (any class unless the URI has type=), up to max. */
int hsm_token_find_objects(struct hsm_token *t, const char *uri, struct hsm_object_desc *out,
                           size_t max, size_t *ret_n);
/* "CKO_PRIVATE_KEY", "CKK_EC"; never NULL. */
const char *hsm_class_name(unsigned long cls);
const char *hsm_key_type_name(unsigned long type);

#endif
