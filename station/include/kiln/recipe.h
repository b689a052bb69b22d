/*
 * Recipes: what the station does to one product, loaded from YAML (docs/recipes.md is the
 * reference of every key).
 *
 * A recipe is untrusted input. recipe_load_file() / recipe_load_mem() check everything -- types,
 * ranges, lengths, names, placeholders, cross-references, the fuse plan -- and report every
 * problem as (line, column, message) into a struct yaml_doc_diags. Only a recipe with no problem
 * comes back, as a struct recipe the engine uses without checking again:
 *
 *   - every string is NUL-terminated and within its documented limit;
 *   - every name that goes to the device (key objects, credential objects, data objects, firmware
 *     object, fuse fields) matches the protocol's name alphabet [A-Za-z0-9._-], 1..32, and object
 *     names are unique;
 *   - key slots are unique and below KILN_KEY_SLOTS_MAX;
 *   - every template renders, for unit values within their limits (struct recipe_values), to at
 *     most its max_len characters, and names only placeholders allowed where it is used;
 *   - fuse values have exactly the field's width; the plan is ordered data, protect, lockout and
 *     burns each field once;
 *   - files the recipe names (data objects, firmware) were read (size-capped) and match their
 *     expected SHA-256.
 *
 * The recipe's identity is the SHA-256 of its exact bytes (sha256 / sha256_hex), which the
 * database records per unit; body holds those bytes for db_recipe_store().
 */
#ifndef KILN_RECIPE_H
#define KILN_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/limits.h"
#include "kiln/yaml_doc.h"

#define RECIPE_SCHEMA 1u /* the schema version this program reads */

struct recipe;

/* Where a certificate's notAfter is "never": 9999-12-31T23:59:59Z (RFC 5280 §4.1.2.5). */
#define RECIPE_TIME_NEVER INT64_C(253402300799)

/* ---------------------------------------------------------------- templates */

/* One placeholder kind, or literal text. */
enum recipe_seg_kind {
        RECIPE_SEG_LITERAL,
        RECIPE_SEG_SEQ,      /* {seq} {seq:0N}: allocation sequence, zero-padded to arg digits */
        RECIPE_SEG_YY,       /* {yy}: year, two digits */
        RECIPE_SEG_YYYY,     /* {yyyy} */
        RECIPE_SEG_WW,       /* {ww}: ISO 8601 week of the year, 01..53 */
        RECIPE_SEG_MM,       /* {mm} */
        RECIPE_SEG_DD,       /* {dd} */
        RECIPE_SEG_STATION,  /* {station}: station id */
        RECIPE_SEG_SERIAL,   /* {serial}: the unit's rendered serial number */
        RECIPE_SEG_CHIP_UID, /* {chip_uid}: lowercase hex */
        RECIPE_SEG_MAC,      /* {mac} {macN} {mac:hex} {macN:hex}: address arg; flags = hex form */
        RECIPE_SEG_KIND_MAX
};

#define RECIPE_SEG_MAC_HEX 1u /* "0200a1b2c3d4" instead of "02:00:a1:b2:c3:d4" */

struct recipe_seg {
        enum recipe_seg_kind kind;
        unsigned arg;     /* SEQ: minimum digits; MAC: address index */
        unsigned flags;   /* RECIPE_SEG_MAC_HEX */
        const char *text; /* LITERAL: the text (escapes {{ }} resolved), not NUL-terminated */
        size_t len;
};

/*
 * A parsed template. {product}, {model}, {product_name} and {manufacturer} are recipe constants
 * and are already folded into literal segments. src is the text as written in the recipe.
 */
struct recipe_tmpl {
        const char *src;
        const struct recipe_seg *segs;
        unsigned n_segs;
        size_t max_len; /* longest rendering, in bytes, for values within their limits */
        unsigned line, column;
};

/* The values of one unit that templates are rendered with. Unused fields may be left zero. */
struct recipe_values {
        uint64_t seq;            /* allocation sequence ({seq}, serial format only) */
        const char *serial;      /* rendered serial, at most recipe.serial.max_len characters */
        const uint8_t *chip_uid; /* 1..KILN_UID_MAX bytes */
        size_t chip_uid_len;
        const uint64_t *macs; /* 48-bit addresses allocated to the unit */
        unsigned n_macs;
        const char *station; /* station id, 1..KILN_STATION_ID_MAX of [A-Za-z0-9._-] */
        int64_t time_ms;     /* UTC epoch milliseconds: date placeholders */
};

/*
 * Render t into out[0..cap) (NUL-terminated; *ret_len excludes the NUL). A buffer of
 * t->max_len + 1 always suffices for valid values. Errors: KILN_E_RANGE when out is too small
 * (out is then ""), KILN_E_INVAL when a value the template needs is missing or outside its limits
 * (with kiln_fail detail naming it).
 */
int recipe_tmpl_render(const struct recipe_tmpl *t, const struct recipe_values *v, char *out,
                       size_t cap, size_t *ret_len);

/* ---------------------------------------------------------------- product */

/* Declarations the maker makes for the compliance evidence pack (docs/recipes.md). */
enum recipe_decl {
        RECIPE_DECL_SIGNED_IMAGES,
        RECIPE_DECL_ROLLBACK_PROTECTION,
        RECIPE_DECL_RECOVERY_PARTITION,
        RECIPE_DECL_API_AUTHENTICATION,
        RECIPE_DECL_LOCAL_INTERFACES_PROTECTED,
        RECIPE_DECL_UPDATE_POLICY_DEFINED,
        RECIPE_DECL_SECURITY_FEATURES_DOCUMENTED,
        RECIPE_DECL_COMPONENT_INVENTORY_AVAILABLE,
        RECIPE_DECL_CUSTOMER_SECURITY_INFORMATION_AVAILABLE,
        RECIPE_DECL_MAX
};

/* The YAML key of a declaration ("signed_images"); NULL for an invalid value. */
const char *recipe_decl_name(enum recipe_decl d);

/* Device lifecycle values of GET_INFO (docs/protocol.md §6.3). */
enum recipe_lifecycle {
        RECIPE_LC_MANUFACTURING = 1,
        RECIPE_LC_PRODUCTION = 2,
        RECIPE_LC_RMA = 3,
        RECIPE_LC_DECOMMISSIONED = 4
};

struct recipe_date {
        unsigned year, month, day;
};

struct recipe_product {
        char id[KILN_PRODUCT_MAX + 1]; /* must equal GET_INFO product_id */
        const char *name;
        const char *model;
        const char *manufacturer;
        uint16_t hw_revisions[KILN_RECIPE_HW_REVISIONS_MAX]; /* distinct */
        unsigned n_hw_revisions;                             /* >= 1 */
        unsigned admit_lifecycles; /* bit (1u << lifecycle) per GET_INFO lifecycle admitted */
        struct recipe_date support_end;
        const char *vulnerability_disclosure_url;
        const char *sbom_ref;
        const char *update_policy_url; /* NULL when not given */
        const char *security_info_url; /* NULL when not given */
        const char *fw_version;        /* expected GET_INFO fw_version; NULL: not checked */
        int has_fw_sha256;             /* expected GET_INFO fw_sha256 */
        uint8_t fw_sha256[32];
        uint8_t declared[RECIPE_DECL_MAX]; /* 1 when declared true */
};

/* 1 when the recipe admits a device reporting this lifecycle value. */
int recipe_admits_lifecycle(const struct recipe *r, unsigned lifecycle);
/* 1 when hw_revision is among the recipe's hardware revisions. */
int recipe_admits_hw_revision(const struct recipe *r, uint16_t hw_revision);

/* ---------------------------------------------------------------- allocation */

struct recipe_serial {
        struct recipe_tmpl format; /* placeholders: seq yy yyyy ww mm dd station product */
        char pool[KILN_RECIPE_POOL_MAX + 1]; /* allocation counter name (default: product id) */
        uint64_t start;                      /* first sequence number */
        uint64_t last;                       /* last sequence number (pool end) */
        size_t max_len;                      /* longest serial, <= KILN_SERIAL_MAX */
};

struct recipe_mac {
        int enabled;                         /* the recipe allocates MAC addresses */
        char pool[KILN_RECIPE_POOL_MAX + 1]; /* allocation counter name (default: product id) */
        uint64_t first, last;                /* 48-bit, unicast, first <= last, same first octet */
        unsigned per_unit;                   /* 1..KILN_MACS_PER_UNIT_MAX */
};

struct recipe_quota {
        uint32_t default_units; /* units per work order when the operator gives none */
        uint32_t max_units;     /* largest quota a work order may ask for */
};

/* ---------------------------------------------------------------- keys and certificates */

enum recipe_key_alg {
        RECIPE_KEY_ECDSA_P256, /* KEYGEN algorithm 1 */
        RECIPE_KEY_ALG_MAX
};

/* Subject attribute types. */
enum recipe_rdn_type {
        RECIPE_RDN_CN,
        RECIPE_RDN_C,
        RECIPE_RDN_ST,
        RECIPE_RDN_L,
        RECIPE_RDN_O,
        RECIPE_RDN_OU,
        RECIPE_RDN_SERIAL_NUMBER,
        RECIPE_RDN_TITLE,
        RECIPE_RDN_UID,
        RECIPE_RDN_DC,
        RECIPE_RDN_EMAIL,
        RECIPE_RDN_MAX
};

/* The YAML name ("CN", "serialNumber") and dotted OID of an attribute type; NULL if invalid. */
const char *recipe_rdn_name(enum recipe_rdn_type t);
const char *recipe_rdn_oid(enum recipe_rdn_type t);

struct recipe_rdn {
        enum recipe_rdn_type type;
        struct recipe_tmpl value; /* renders to 1..ub characters of the attribute */
};

enum recipe_san_type {
        RECIPE_SAN_DNS,
        RECIPE_SAN_URI,
        RECIPE_SAN_EMAIL,
        RECIPE_SAN_IP,
        RECIPE_SAN_MAX
};

struct recipe_san {
        enum recipe_san_type type;
        struct recipe_tmpl value; /* DNS, URI, EMAIL */
        uint8_t ip[16];           /* IP: network order */
        unsigned ip_len;          /* 4 or 16 */
};

struct recipe_ext {
        char oid[KILN_RECIPE_OID_MAX + 1]; /* dotted; never one the builder sets itself */
        int critical;
        int is_der;              /* value given as DER (der) or as UTF8String text (utf8) */
        struct recipe_tmpl utf8; /* !is_der: rendered and encoded as UTF8String */
        const uint8_t *der;      /* is_der: one complete DER TLV, the extnValue contents */
        size_t der_len;
};

/* keyUsage bits (RFC 5280 §4.2.1.3), as recipe_cert.key_usage. */
#define RECIPE_KU_DIGITAL_SIGNATURE (1u << 0)
#define RECIPE_KU_CONTENT_COMMITMENT (1u << 1)
#define RECIPE_KU_KEY_AGREEMENT (1u << 4)

enum recipe_not_after {
        RECIPE_NOT_AFTER_DATE,  /* not_after: epoch seconds */
        RECIPE_NOT_AFTER_DAYS,  /* days after the certificate's notBefore */
        RECIPE_NOT_AFTER_NEVER, /* RECIPE_TIME_NEVER */
        RECIPE_NOT_AFTER_MAX
};

struct recipe_cert {
        const char *issuer_uri; /* PKCS#11 URI of the issuing CA key (chain found in the token) */
        struct recipe_rdn subject[KILN_RECIPE_RDNS_MAX]; /* in order, one attribute per RDN */
        unsigned n_subject;                              /* >= 1 */
        int not_before_now;                              /* notBefore = time of issuance */
        int64_t not_before;                              /* else: epoch seconds (UTC) */
        enum recipe_not_after not_after_kind;
        int64_t not_after;                     /* DATE: epoch seconds; NEVER: RECIPE_TIME_NEVER */
        uint32_t days;                         /* DAYS */
        unsigned key_usage;                    /* RECIPE_KU_* bits, never 0 */
        const char *eku[KILN_RECIPE_EKUS_MAX]; /* dotted OIDs */
        unsigned n_eku;
        struct recipe_san san[KILN_RECIPE_SANS_MAX];
        unsigned n_san;
        struct recipe_ext ext[KILN_RECIPE_EXTENSIONS_MAX];
        unsigned n_ext;
        char object[KILN_NAME_MAX + 1];       /* device object for the certificate (DER) */
        char chain_object[KILN_NAME_MAX + 1]; /* device object for the chain; "" = none */
};

struct recipe_key {
        char name[KILN_NAME_MAX + 1];
        uint8_t slot;
        enum recipe_key_alg alg;
        int has_cert;
        struct recipe_cert cert;
        int attest; /* attested in step 8 */
};

/* ---------------------------------------------------------------- credentials */

enum recipe_cred_kind {
        RECIPE_CRED_PASSWORD, /* `length` characters from `alphabet` */
        RECIPE_CRED_RANDOM,   /* `length` random bytes */
        RECIPE_CRED_KIND_MAX
};

enum recipe_commit {
        RECIPE_COMMIT_HMAC,          /* HMAC-SHA256 under the HSM credential-commitment key */
        RECIPE_COMMIT_SALTED_SHA256, /* SHA-256(salt || secret), random 16-byte salt */
        RECIPE_COMMIT_MAX
};

struct recipe_cred {
        char name[KILN_NAME_MAX + 1];
        enum recipe_cred_kind kind;
        unsigned length;                /* characters or bytes, 8..KILN_RECIPE_SECRET_MAX */
        char alphabet[96];              /* PASSWORD: distinct printable ASCII characters */
        unsigned alphabet_len;          /* 2..94 */
        char object[KILN_NAME_MAX + 1]; /* written with the SECRET flag */
        enum recipe_commit commitment;
};

/* ---------------------------------------------------------------- objects and firmware */

struct recipe_object {
        char name[KILN_NAME_MAX + 1];
        int secret; /* SECRET flag: never readable from the device */
        int from_file;
        struct recipe_tmpl content; /* !from_file: rendered per unit */
        const char *path;           /* from_file: as written, relative to the recipe */
        const uint8_t *data;        /* from_file: the bytes (NULL when loaded without files) */
        size_t len;
        int has_sha256; /* from_file: sha256 is known (computed, or expected when no files) */
        uint8_t sha256[32];
};

struct recipe_firmware {
        int present;
        char object[KILN_NAME_MAX + 1];
        const char *path;    /* as written, relative to the recipe */
        const char *version; /* NULL when not given */
        const uint8_t *data; /* the image (NULL when loaded without files) */
        size_t len;
        uint8_t sha256[32]; /* expected, and checked against the file */
};

/* ---------------------------------------------------------------- fuse plan */

enum recipe_phase {
        RECIPE_PHASE_DATA,    /* P1 (P2 = read back and verify P1, implicit) */
        RECIPE_PHASE_PROTECT, /* P3 */
        RECIPE_PHASE_LOCKOUT, /* P4 */
        RECIPE_PHASE_MAX
};

enum recipe_verify {
        RECIPE_VERIFY_READBACK,       /* read-back equals the value */
        RECIPE_VERIFY_READ_PROTECTED, /* data field: after P3 it reads zero, read-protect set */
        RECIPE_VERIFY_DEBUG_CLOSED,   /* GET_INFO debug_port = 0 */
        RECIPE_VERIFY_SECURE_BOOT,    /* GET_INFO secure_boot = 1 */
        RECIPE_VERIFY_MAX
};

const char *recipe_phase_name(enum recipe_phase p);   /* "data", "protect", "lockout" */
const char *recipe_verify_name(enum recipe_verify v); /* "readback", ... */

struct recipe_fuse {
        char field[KILN_NAME_MAX + 1];
        unsigned bits; /* 1..KILN_FUSE_BYTES_MAX * 8; FUSE_READ must report the same */
        enum recipe_phase phase;
        enum recipe_verify verify;
        int mac_index; /* >= 0: the value is that MAC address (48-bit field); else value */
        uint8_t value[KILN_FUSE_BYTES_MAX]; /* device byte order (bit i = byte i/8, bit i%8) */
        size_t value_len;                   /* ceil(bits / 8) */
        unsigned line, column;
};

/*
 * The bytes to program for a fuse (value_len bytes into out): the literal value, or the unit's
 * MAC address (first octet in byte 0). KILN_E_INVAL when v lacks the address.
 */
int recipe_fuse_value(const struct recipe_fuse *f, const struct recipe_values *v,
                      uint8_t out[KILN_FUSE_BYTES_MAX], size_t *ret_len);

/* ---------------------------------------------------------------- label */

struct recipe_label {
        int present;
        struct recipe_tmpl fields[KILN_RECIPE_LABEL_FIELDS_MAX]; /* text lines, in order */
        unsigned n_fields;
        int has_qr;
        struct recipe_tmpl qr; /* QR payload URL */
        int has_gs1;
        char gtin[15];          /* 14 digits, check digit verified */
        const char *gs1_base;   /* Digital Link resolver, e.g. "https://id.gs1.org" */
        unsigned width, height; /* dots */
        unsigned dpi;
};

/* ---------------------------------------------------------------- the recipe */

struct recipe {
        unsigned schema;
        char id[KILN_RECIPE_ID_MAX + 1];
        char version[KILN_RECIPE_VERSION_MAX + 1];
        const char *description; /* "" when not given */
        const char *path;        /* the path loaded, or the name given to recipe_load_mem */
        uint8_t sha256[32];      /* of the exact bytes */
        char sha256_hex[65];
        const uint8_t *body; /* the exact bytes */
        size_t body_len;
        int files_loaded; /* referenced files were read and checked */

        struct recipe_product product;
        struct recipe_serial serial;
        struct recipe_mac mac;
        struct recipe_quota quota;
        struct recipe_key keys[KILN_RECIPE_KEYS_MAX];
        unsigned n_keys; /* >= 1 */
        struct recipe_cred creds[KILN_RECIPE_CREDENTIALS_MAX];
        unsigned n_creds;
        struct recipe_object objects[KILN_RECIPE_OBJECTS_MAX];
        unsigned n_objects;
        struct recipe_firmware firmware;
        struct recipe_fuse fuses[KILN_RECIPE_FUSES_MAX]; /* data, then protect, then lockout */
        unsigned n_fuses;
        unsigned lifecycle_final; /* 0 = leave, else RECIPE_LC_PRODUCTION */
        struct recipe_label label;

        struct yaml_doc *doc; /* private: owns the strings and tables above */
        uint8_t *file_data[KILN_RECIPE_OBJECTS_MAX + 1]; /* private: file contents */
};

/* recipe_load_* flags */
#define RECIPE_LOAD_NO_FILES 1u /* do not read referenced files (fuzzing, checks without them) */

/*
 * Load and check the recipe at path (at most KILN_RECIPE_FILE_MAX bytes). Files it names are read
 * relative to path's directory. Every problem goes into diags with its line and column:
 * KILN_E_RECIPE (or KILN_E_RECIPE_TOO_LARGE) when there are any. Errors reading the recipe file
 * itself are returned as KILN_E_NOT_FOUND / KILN_E_IO with kiln_fail detail and nothing in diags.
 */
int recipe_load_file(const char *path, unsigned flags, struct yaml_doc_diags *diags,
                     struct recipe **ret);

/*
 * Check a recipe held in memory. name is used as recipe.path; base_dir is where referenced files
 * are (NULL: as RECIPE_LOAD_NO_FILES).
 */
int recipe_load_mem(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                    unsigned flags, struct yaml_doc_diags *diags, struct recipe **ret);

void recipe_free(struct recipe *r); /* NULL-safe */

/*
 * Render the serial number for allocation sequence seq (v->seq is ignored; v->station and
 * v->time_ms are used). Suits db_serial_render_fn through a small adapter.
 */
int recipe_serial_render(const struct recipe *r, uint64_t seq, const struct recipe_values *v,
                         char *out, size_t cap);

/*
 * Syntax check of a PKCS#11 URI naming a token (want_type NULL, no object allowed) or a key
 * (want_type "private" / "secret-key": object= or id= required; a type= present must equal it).
 * Path attributes only (RFC 7512 names), percent-encoding checked, no attribute twice, no query
 * (pin-value / pin-source are refused: PINs never travel in URIs). 1 when valid; else 0 with the
 * reason in why.
 */
int recipe_pkcs11_uri_check(const char *uri, const char *want_type, char *why, size_t cap);

/* 1 when s is a protocol name: 1..KILN_NAME_MAX of [A-Za-z0-9._-]. */
int recipe_name_valid(const char *s);

/* "02:00:5e:10:00:01" (18 bytes with the NUL) */
#define RECIPE_MAC_STR 18u
void recipe_mac_format(uint64_t mac, char out[RECIPE_MAC_STR]);

#endif
