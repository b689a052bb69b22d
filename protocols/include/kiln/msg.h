/*
 * Host message codec: builds every request payload of docs/protocol.md §5 and parses every response
 * payload, the §4.4 error payload and the NAK payload into structs. I/O-free and allocation-free.
 *
 * Builders write the payload into out[0..cap) and its length to *ret_len; they check every argument
 * first and write nothing when one is bad (KILN_E_INVAL) or out is too small (KILN_E_RANGE).
 *
 * Parsers treat the payload as hostile: every length is checked against what remains, names must be
 * 1..KILN_NAME_MAX bytes of [A-Za-z0-9._-], fixed-size fields (P-256 public key 65 bytes, signature
 * 64 bytes, digests 32 bytes) are checked, enumerated values must be known and trailing bytes are
 * refused. A bad payload gives KILN_E_PROTO_MALFORMED with a kiln_fail() detail naming the message
 * and field. They never read past p[n) and never allocate; *ret is written only on success. Strings
 * are copied NUL-terminated into fixed arrays sized from kiln/limits.h; variable-size data
 * (READ_OBJECT data) is returned as a view into p.
 */
#ifndef KILN_MSG_H
#define KILN_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/limits.h"
#include "kiln/proto.h"

#define PROTO_SHA256_LEN 32u
#define PROTO_P256_PUBKEY_LEN 65u /* SEC1 uncompressed point 0x04 ‖ X ‖ Y */
#define PROTO_P256_SIG_LEN 64u    /* raw r ‖ s */

/* Payload overheads, for sizing chunks against the negotiated maximum payload. */
#define PROTO_WRITE_OVERHEAD(name_len) (17u + (name_len)) /* WRITE_OBJECT request without data */
#define PROTO_READ_OVERHEAD 12u                           /* READ_OBJECT response without data */

/* "HELLO", "FUSE_PROGRAM", ...; "UNKNOWN" for other values. Never NULL. */
const char *proto_msg_type_name(uint8_t type);
/* "OK", "OFFSET", ...; "UNKNOWN" for other values. Never NULL. */
const char *proto_status_name(uint8_t status);
/* "MANUFACTURING", ...; "UNKNOWN" for other values. Never NULL. */
const char *proto_lifecycle_name(uint8_t lifecycle);

/* KILN_OK when name is 1..KILN_NAME_MAX bytes of [A-Za-z0-9._-], else KILN_E_INVAL (no detail). */
int proto_msg_name_check(const char *name);

/* --- requests --- */

/* HELLO: versions 1..1, host_max_payload in KILN_PAYLOAD_MIN_MAX..KILN_PAYLOAD_MAX. */
int proto_msg_hello_build(uint32_t host_max_payload, uint8_t *out, size_t cap, size_t *ret_len);
/* GET_INFO: empty payload. */
int proto_msg_info_build(uint8_t *out, size_t cap, size_t *ret_len);
/* KEYGEN: slot < KILN_KEY_SLOTS_MAX, algorithm KILN_ALG_ECDSA_P256_SHA256. */
int proto_msg_keygen_build(uint8_t key_slot, uint8_t algorithm, const uint8_t nonce[KILN_NONCE_LEN],
                           uint8_t *out, size_t cap, size_t *ret_len);

struct proto_write_req {
        const char *name;
        uint8_t flags; /* KILN_OBJ_SECRET */
        uint32_t total_len;
        uint32_t offset;
        const uint8_t *data; /* may be NULL when data_len is 0 */
        uint32_t data_len;   /* offset + data_len <= total_len */
};

int proto_msg_write_build(const struct proto_write_req *req, uint8_t *out, size_t cap,
                          size_t *ret_len);
int proto_msg_read_build(const char *name, uint32_t offset, uint32_t max_len, uint8_t *out,
                         size_t cap, size_t *ret_len);
int proto_msg_hash_build(const char *name, uint8_t *out, size_t cap, size_t *ret_len);
int proto_msg_fuse_read_build(const char *name, uint8_t *out, size_t cap, size_t *ret_len);
int proto_msg_fuse_read_index_build(uint16_t index, uint8_t *out, size_t cap, size_t *ret_len);
/* value: 1..KILN_FUSE_BYTES_MAX bytes (exactly ceil(width_bits / 8) of the field). */
int proto_msg_fuse_program_build(const char *name, const uint8_t *value, size_t value_len,
                                 uint8_t *out, size_t cap, size_t *ret_len);
int proto_msg_attest_build(uint8_t key_slot, const uint8_t nonce[KILN_NONCE_LEN], uint8_t *out,
                           size_t cap, size_t *ret_len);
/* target: a known enum kiln_lifecycle value. */
int proto_msg_lifecycle_build(uint8_t target, uint8_t *out, size_t cap, size_t *ret_len);
/* mode: 0 = reboot (the only mode of protocol v1). */
int proto_msg_reset_build(uint8_t mode, uint8_t *out, size_t cap, size_t *ret_len);

/* --- responses --- */

struct proto_hello {
        uint8_t version;
        uint32_t device_max_payload;
        uint32_t max_payload; /* min(host offer, device_max_payload): checked by the session */
        uint8_t session_nonce[KILN_SESSION_NONCE_LEN];
        uint32_t session_id; /* first four nonce bytes, little-endian; never 0 */
        uint32_t capabilities;
        char agent[KILN_AGENT_NAME_MAX + 1];
};

struct proto_info {
        uint8_t chip_uid[KILN_UID_MAX];
        uint8_t chip_uid_len; /* 1..KILN_UID_MAX */
        char product_id[KILN_PRODUCT_MAX + 1];
        uint16_t hw_revision;
        char fw_version[KILN_FWVER_MAX + 1]; /* printable ASCII, may be empty */
        uint8_t fw_sha256[PROTO_SHA256_LEN];
        uint8_t lifecycle;    /* enum kiln_lifecycle */
        uint8_t debug_port;   /* KILN_DEBUG_CLOSED / KILN_DEBUG_OPEN */
        uint8_t secure_boot;  /* 0 / 1 */
        uint8_t key_slots;    /* 0..KILN_KEY_SLOTS_MAX */
        uint16_t key_present; /* no bit at or above key_slots */
};

struct proto_keygen {
        uint8_t key_slot;
        uint8_t algorithm;
        uint8_t public_key[KILN_PUBKEY_MAX];
        uint16_t public_key_len; /* PROTO_P256_PUBKEY_LEN, first byte 0x04 */
        uint8_t signature[KILN_SIG_MAX];
        uint16_t signature_len; /* PROTO_P256_SIG_LEN */
};

struct proto_write_result {
        uint32_t received;
        uint8_t complete; /* 0 / 1 */
};

struct proto_read_result {
        uint32_t total_len;
        uint32_t offset;     /* <= total_len */
        uint32_t data_len;   /* <= total_len - offset */
        const uint8_t *data; /* view into the parsed payload */
};

struct proto_object_hash {
        uint32_t total_len;
        uint32_t received; /* <= total_len; == total_len when complete */
        uint8_t complete;  /* 0 / 1 */
        uint8_t flags;
        uint8_t sha256[PROTO_SHA256_LEN];
};

struct proto_fuse {
        char name[KILN_NAME_MAX + 1];
        uint16_t width_bits; /* 1..512 */
        uint8_t attributes;  /* KILN_FUSE_WRITE_PROTECTED, KILN_FUSE_READ_PROTECTED */
        uint8_t value[KILN_FUSE_BYTES_MAX];
        uint8_t value_len; /* ceil(width_bits / 8); no bit set at or above width_bits */
};

struct proto_attest {
        uint8_t key_slot;
        uint8_t algorithm;
        uint8_t signature[KILN_SIG_MAX];
        uint16_t signature_len; /* PROTO_P256_SIG_LEN */
};

/* §4.4 error payload, with the status and message type of the response that carried it. */
struct proto_device_error {
        uint8_t type;
        uint8_t status; /* enum kiln_status, 0 when no error was recorded */
        uint32_t detail;
        /* The device's message, NUL-terminated; bytes outside printable ASCII replaced by '?'
         * (it goes to logs: a hostile device must not inject control sequences). */
        char msg[KILN_ERRMSG_MAX + 1];
};

int proto_msg_hello_parse(const uint8_t *p, size_t n, struct proto_hello *ret);
int proto_msg_info_parse(const uint8_t *p, size_t n, struct proto_info *ret);
int proto_msg_keygen_parse(const uint8_t *p, size_t n, struct proto_keygen *ret);
int proto_msg_write_parse(const uint8_t *p, size_t n, struct proto_write_result *ret);
int proto_msg_read_parse(const uint8_t *p, size_t n, struct proto_read_result *ret);
int proto_msg_hash_parse(const uint8_t *p, size_t n, struct proto_object_hash *ret);
/* FUSE_READ and FUSE_PROGRAM responses. */
int proto_msg_fuse_parse(const uint8_t *p, size_t n, struct proto_fuse *ret);
int proto_msg_attest_parse(const uint8_t *p, size_t n, struct proto_attest *ret);
int proto_msg_lifecycle_parse(const uint8_t *p, size_t n, uint8_t *ret_lifecycle);
int proto_msg_reset_parse(const uint8_t *p, size_t n);
int proto_msg_nak_parse(const uint8_t *p, size_t n, uint8_t *ret_reason);
/* Error payload; type and status are copied into *ret as given. */
int proto_msg_error_parse(uint8_t type, uint8_t status, const uint8_t *p, size_t n,
                          struct proto_device_error *ret);

#endif
