/*
 * Kiln frame codec: COBS framing, CRC-32C, the 16-byte header. I/O-free and allocation-free: the
 * caller feeds received bytes into a kiln_decoder and takes frames out, and builds frames into its
 * own buffer with kiln_frame_encode(). Portable C99; shared by the host session and the device agent.
 *
 * Wire form of one frame (docs/protocol.md §2):
 *
 *     0x00  COBS( header[16] ‖ payload[length] ‖ crc32c_le[4] )  0x00
 *
 * header: version u8, type u8, flags u8, status u8, session u32, request_id u32, length u32 (LE).
 */
#ifndef KILN_FRAME_H
#define KILN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/err.h"
#include "kiln/limits.h"
#include "kiln/proto.h"

struct kiln_frame {
        uint8_t version;
        uint8_t type;
        uint8_t flags;
        uint8_t status;
        uint32_t session;
        uint32_t request_id;
        uint32_t len;
        const uint8_t *payload; /* len bytes; for decoded frames it points into the decoder buffer */
};

/* CRC-32C (Castagnoli, reflected, init and xorout 0xFFFFFFFF). Chain calls: crc = kiln_crc32c(crc,..)
 * starting from 0, like zlib's crc32(). kiln_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t kiln_crc32c(uint32_t crc, const void *p, size_t n);

/* Upper bound of the COBS encoding of n bytes (without delimiters). */
#define KILN_COBS_MAX(n) ((n) + (n) / 254u + 2u)
/* Upper bound of a whole frame on the wire, both delimiters included, for a payload of n bytes. */
#define KILN_FRAME_WIRE_MAX(n) (KILN_COBS_MAX(KILN_FRAME_HDR_LEN + (n) + KILN_FRAME_CRC_LEN) + 2u)

/* COBS-encode in[0..n) into out (cap bytes, at least KILN_COBS_MAX(n)); no delimiters written. */
int kiln_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *ret_len);
/* COBS-decode buf[0..n) in place (a candidate holds no 0x00). */
int kiln_cobs_decode(uint8_t *buf, size_t n, size_t *ret_len);

/* Build the wire form of f (leading and trailing 0x00) into out. KILN_E_RANGE when cap is below
 * KILN_FRAME_WIRE_MAX(f->len). The CRC is computed here; f->version is sent as given. */
int kiln_frame_encode(const struct kiln_frame *f, uint8_t *out, size_t cap, size_t *ret_len);

/*
 * Decode one candidate (the bytes between two 0x00 delimiters) in place. Checks, in this order:
 * COBS, minimum length, CRC, length field, version, payload size against max_payload.
 * *ret points into buf on success.
 */
int kiln_frame_decode(uint8_t *buf, size_t n, uint32_t max_payload, struct kiln_frame *ret);

/* Streaming receiver. buf holds one encoded candidate; size it with KILN_FRAME_WIRE_MAX(max). */
struct kiln_decoder {
        uint8_t *buf;
        size_t cap;
        size_t len;
        uint32_t max_payload;
        uint8_t discarding; /* candidate overflowed buf: skipping to the next delimiter */
        /* statistics */
        uint32_t frames;
        uint32_t rejected;
        uint32_t skipped_bytes; /* bytes of overlong candidates thrown away */
};

enum {
        KILN_DEC_NEED_MORE = 0, /* every byte consumed, no complete candidate yet */
        KILN_DEC_FRAME = 1      /* *ret_frame is valid until the next feed */
};

void kiln_decoder_init(struct kiln_decoder *d, uint8_t *buf, size_t cap, uint32_t max_payload);
void kiln_decoder_reset(struct kiln_decoder *d); /* drop any partial candidate */

/*
 * Consume in[0..n) up to and including the first delimiter that ends a non-empty candidate.
 * *ret_used is the number of bytes consumed. Returns KILN_DEC_NEED_MORE, KILN_DEC_FRAME, or a negative
 * KILN_E_PROTO_* when a candidate was rejected (corrupt frame, noise, overlong). Empty candidates
 * (adjacent delimiters) are skipped silently. Call again with the rest of the input.
 */
int kiln_decoder_feed(struct kiln_decoder *d, const uint8_t *in, size_t n, size_t *ret_used,
                      struct kiln_frame *ret_frame);

#endif
