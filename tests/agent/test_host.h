/*
 * Host-side helpers for the agent and simulator tests: request framing, payload builders, a
 * response decoder and ECDSA verification with OpenSSL. Written from docs/protocol.md only (the
 * host session library is not used, so these tests check the device against the document, not
 * against Kiln's own host code).
 */
#ifndef KILN_TEST_HOST_H
#define KILN_TEST_HOST_H

#include <stddef.h>
#include <stdint.h>

#define TH_PAYLOAD_MAX 8192u

struct th_frame {
        uint8_t version;
        uint8_t type;
        uint8_t flags;
        uint8_t status;
        uint32_t session;
        uint32_t request_id;
        uint32_t len;
        uint8_t payload[TH_PAYLOAD_MAX];
};

/* Payload builder. */
struct th_pb {
        uint8_t b[TH_PAYLOAD_MAX];
        size_t n;
};

void th_pb_reset(struct th_pb *pb);
void th_pb_u8(struct th_pb *pb, uint8_t v);
void th_pb_le16(struct th_pb *pb, uint16_t v);
void th_pb_le32(struct th_pb *pb, uint32_t v);
void th_pb_bytes(struct th_pb *pb, const void *p, size_t n);
void th_pb_name(struct th_pb *pb, const char *s); /* u8 len + bytes */

/* Wire form of a request (both delimiters), into out; returns its length (0 when it does not fit).
 */
size_t th_encode(uint8_t type, uint8_t flags, uint32_t session, uint32_t request_id,
                 const void *payload, size_t len, uint8_t *out, size_t cap);

/* Every valid frame in a byte stream, in order (rejected candidates counted, not returned). */
size_t th_decode_all(const uint8_t *in, size_t n, struct th_frame *frames, size_t max,
                     size_t *ret_rejected);

/* Error payload of a response with a non-zero status: 1 when well formed. msg gets 65 bytes. */
int th_error_payload(const struct th_frame *f, uint32_t *ret_detail, char *ret_msg);

/* Payload builders for the requests of docs/protocol.md §5. */
void th_hello_payload(struct th_pb *pb, uint8_t min_v, uint8_t max_v, uint32_t host_max);
void th_write_payload(struct th_pb *pb, const char *name, uint8_t flags, uint32_t total,
                      uint32_t offset, const void *data, uint32_t len);
void th_read_payload(struct th_pb *pb, const char *name, uint32_t offset, uint32_t max_len);
void th_fuse_program_payload(struct th_pb *pb, const char *name, const void *value, uint8_t len);

/* SHA-256 of label || nonce[32] || uid_len || uid || slot, built independently of the agent. */
void th_signed_digest(const char *label, const uint8_t nonce[32], const uint8_t *uid,
                      size_t uid_len, uint8_t slot, uint8_t ret_digest[32]);

/* 1 when sig (raw r||s, 64 bytes) is a valid ECDSA P-256 signature of digest under the SEC1 public
 * key pub (65 bytes), 0 otherwise. */
int th_p256_verify(const uint8_t *pub, size_t pub_len, const uint8_t digest[32], const uint8_t *sig,
                   size_t sig_len);

void th_sha256(const void *p, size_t n, uint8_t ret[32]);

int th_hex(const char *hex, uint8_t *out, size_t cap, size_t *ret_len);

#endif
