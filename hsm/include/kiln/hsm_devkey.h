/*
 * Device public keys and the device's signatures: proof of possession (KEYGEN, docs/protocol.md §5.3)
 * and attestation (ATTEST, §5.9).
 *
 * A device key arrives as a SEC1 uncompressed point `0x04 ‖ X ‖ Y`: 65 bytes for P-256 (the curve
 * protocol v1 defines), 97 bytes for P-384 (accepted for templates and tests). Compressed (0x02,
 * 0x03), hybrid (0x06, 0x07), infinity (0x00) and other prefixes are refused, as is a point whose
 * coordinates are not below p or that is not on the curve. Both curves have cofactor 1, so a point
 * on the curve is in the prime-order group.
 *
 * Signatures are raw `r ‖ s`, each big-endian and left-padded to the field size (64 bytes for
 * P-256, 96 for P-384), over the SHA-256 of
 *
 *     "KILN-POP-V1"    ‖ station_nonce[32] ‖ uid_len (u8) ‖ chip_uid ‖ key_slot (u8)
 *     "KILN-ATTEST-V1" ‖ nonce[32]         ‖ uid_len (u8) ‖ chip_uid ‖ key_slot (u8)
 *
 * with chip_uid 1..KILN_UID_MAX bytes. Everything here is hostile input: a failure returns
 * KILN_E_PUBKEY_INVALID or KILN_E_POP_INVALID with one line of detail.
 */
#ifndef KILN_HSM_DEVKEY_H
#define KILN_HSM_DEVKEY_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/limits.h"

enum hsm_curve {
        HSM_CURVE_P256,
        HSM_CURVE_P384,
        HSM_CURVE_MAX
};

#define HSM_POP_LABEL "KILN-POP-V1"
#define HSM_ATTEST_LABEL "KILN-ATTEST-V1"

struct hsm_devkey;

/* Parse and validate a SEC1 uncompressed point. */
int hsm_devkey_parse(const uint8_t *point, size_t len, struct hsm_devkey **ret);
/* The device key of a DER certificate (e.g. the one issued), for ATTEST. */
int hsm_devkey_from_cert(const uint8_t *der, size_t len, struct hsm_devkey **ret);
void hsm_devkey_free(struct hsm_devkey *k);

enum hsm_curve hsm_devkey_curve(const struct hsm_devkey *k);
/* The SEC1 point as parsed (65 or 97 bytes), owned by the key. */
const uint8_t *hsm_devkey_point(const struct hsm_devkey *k, size_t *ret_len);
/* SHA-256 of the SubjectPublicKeyInfo DER: the key fingerprint the database keeps unique. */
void hsm_devkey_fingerprint(const struct hsm_devkey *k, uint8_t ret[32]);

/* KEYGEN proof of possession (§5.3). KILN_OK only when the signature verifies. */
int hsm_devkey_verify_pop(const struct hsm_devkey *k, const uint8_t nonce[KILN_NONCE_LEN],
                          const uint8_t *uid, size_t uid_len, uint8_t key_slot,
                          const uint8_t *sig, size_t sig_len);
/* ATTEST signature (§5.9). */
int hsm_devkey_verify_attest(const struct hsm_devkey *k, const uint8_t nonce[KILN_NONCE_LEN],
                             const uint8_t *uid, size_t uid_len, uint8_t key_slot,
                             const uint8_t *sig, size_t sig_len);

#endif
