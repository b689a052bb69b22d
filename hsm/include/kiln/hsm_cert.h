/*
 * Device certificate issuance: the station builds each certificate itself from a template and the
 * device's public key, and the HSM signs it. The station never signs what the device proposes.
 *
 * Issuer material lives in the token: the issuing CA certificate is a CKO_CERTIFICATE object with
 * the same CKA_ID and CKA_LABEL as the issuing private key, and its chain up to a self-signed root is
 * found among the token's certificate objects. A configuration therefore names only the issuing
 * key's URI. hsm_issuer_load() reads, parses and verifies all of it once (the chain strictly, up to
 * the root, including the root's self-signature; and a test signature proving the private key
 * matches the certificate) and caches what every issuance needs, so issuing a certificate parses no
 * issuer material again.
 *
 * hsm_cert_issue(): serial of 16 bytes from C_GenerateRandom (positive, 126 random bits, always 16
 * bytes of DER content); build the TBSCertificate with OpenSSL; hash it on the host; sign it with raw
 * CKM_ECDSA (or CKM_RSA_PKCS_PSS) in the token; assemble the DER Certificate; parse it back and
 * verify it with X509_verify_cert (X509_V_FLAG_X509_STRICT) before returning it. Per issuance that
 * verification checks the new signature against the issuing CA certificate, which was verified up
 * to its root at load: re-verifying the unchanged, cached chain for every unit would cost a P-384
 * verification (about 1 ms) each time for nothing.
 *
 * An issuer is safe to use from several threads at once; each issuance borrows one token session.
 */
#ifndef KILN_HSM_CERT_H
#define KILN_HSM_CERT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_devkey.h"

#define HSM_SERIAL_LEN 16u        /* certificate serial bytes */
#define HSM_NAME_ATTRS_MAX 16u    /* subject attributes per template */
#define HSM_SAN_MAX 16u           /* subjectAltName entries per template */
#define HSM_EKU_MAX 8u            /* extendedKeyUsage purposes per template */
#define HSM_EXT_VALUE_MAX 2048u   /* extra extension value text (hex or UTF-8) */
#define HSM_NAME_VALUE_MAX 256u   /* one subject attribute or SAN value */
#define HSM_CHAIN_MAX 8u          /* issuing CA .. root */

/* notAfter "99991231235959Z": RFC 5280 §4.1.2.5 "no well-defined expiration date". */
#define HSM_TIME_NO_EXPIRY INT64_C(253402300799)

/* keyUsage bits (RFC 5280 §4.2.1.3 bit numbers). */
#define HSM_KU_DIGITAL_SIGNATURE (1u << 0)
#define HSM_KU_NON_REPUDIATION (1u << 1)
#define HSM_KU_KEY_ENCIPHERMENT (1u << 2)
#define HSM_KU_DATA_ENCIPHERMENT (1u << 3)
#define HSM_KU_KEY_AGREEMENT (1u << 4)
#define HSM_KU_KEY_CERT_SIGN (1u << 5)
#define HSM_KU_CRL_SIGN (1u << 6)

/* One subject attribute: type "C", "ST", "L", "O", "OU", "CN", "serialNumber" or a dotted OID. */
struct hsm_name_attr {
        const char *type;
        const char *value; /* UTF-8 */
};

enum hsm_san_type {
        HSM_SAN_DNS,
        HSM_SAN_URI,
        HSM_SAN_EMAIL,
        HSM_SAN_IP, /* IPv4 or IPv6 text */
        HSM_SAN_TYPE_MAX
};

struct hsm_san {
        enum hsm_san_type type;
        const char *value;
};

enum hsm_ext_encoding {
        HSM_EXT_DER_HEX, /* value is the extnValue content: one DER element, in hex */
        HSM_EXT_UTF8,    /* value is text, encoded as a UTF8String */
        HSM_EXT_ENCODING_MAX
};

struct hsm_extension {
        const char *oid; /* dotted */
        int critical;
        enum hsm_ext_encoding encoding;
        const char *value;
};

/*
 * What the recipe's certificate template says, with the unit's data already filled in by the caller.
 * basicConstraints CA:false (critical), keyUsage (critical), subjectKeyIdentifier (SHA-1 of the
 * subject public key, RFC 5280 method 1) and authorityKeyIdentifier (the issuing CA's SKI) are always
 * present. An empty subject needs at least one SAN, which is then marked critical.
 */
struct hsm_cert_template {
        const struct hsm_name_attr *subject;
        size_t n_subject;
        int64_t not_before; /* Unix seconds; 0 = the moment of issuance */
        int64_t not_after;  /* Unix seconds, or HSM_TIME_NO_EXPIRY */
        unsigned key_usage; /* HSM_KU_* (keyCertSign and cRLSign are refused for a device) */
        const char *const *eku; /* "serverAuth", "clientAuth", ... or dotted OIDs; none = omitted */
        size_t n_eku;
        const struct hsm_san *san;
        size_t n_san;
        const struct hsm_extension *ext;
        size_t n_ext; /* at most KILN_RECIPE_EXTENSIONS_MAX */
};

/* Check a template without issuing (the recipe checker calls this): KILN_E_CERT_TEMPLATE + detail. */
int hsm_cert_template_check(const struct hsm_cert_template *t);
/* "digitalSignature" .. "cRLSign" (RFC 5280 names) to an HSM_KU_ bit; KILN_E_NOT_FOUND otherwise. */
int hsm_ku_from_name(const char *name, unsigned *ret);

struct hsm_issuer;

/* Load and verify the issuer named by its private key's URI; see the top of this file. */
int hsm_issuer_load(struct hsm_token *t, const char *key_uri, struct hsm_issuer **ret);
void hsm_issuer_free(struct hsm_issuer *iss);

/* Certificates of the chain, 0 = the issuing CA .. n-1 = the root, as DER owned by the issuer. */
size_t hsm_issuer_chain_len(const struct hsm_issuer *iss);
int hsm_issuer_chain_der(const struct hsm_issuer *iss, size_t i, const uint8_t **ret_der,
                         size_t *ret_len);

struct hsm_cert {
        uint8_t *der;
        size_t len;
        uint8_t serial[HSM_SERIAL_LEN];
        uint8_t sha256[32]; /* of der: what the device reports back after storing it */
};

int hsm_cert_issue(struct hsm_issuer *iss, const struct hsm_cert_template *t,
                   const struct hsm_devkey *key, struct hsm_cert **ret);
void hsm_cert_free(struct hsm_cert *c);

/*
 * Verify a DER certificate against the issuer's chain with X509_V_FLAG_X509_STRICT at the current
 * time (or at its notBefore when that is later). KILN_E_CERT_VERIFY with OpenSSL's reason.
 */
int hsm_cert_verify(const struct hsm_issuer *iss, const uint8_t *der, size_t len);

#endif
