/*
 * Fuzz the streaming frame decoder. Input: byte 0 picks the receiver's maximum payload, bytes 1..4
 * seed the piece sizes, the rest is the byte stream, fed through kiln_decoder_feed() in pieces of
 * 1..64 bytes. Every decoded frame must re-encode and decode to the same fields and payload, and
 * the decoder must consume every byte exactly once without writing past its buffer (an exact-size
 * heap buffer, so ASan sees any overflow). Also round-trips the raw input through COBS.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
        do {                                                                                       \
                if (!(c))                                                                          \
                        __builtin_trap();                                                          \
        } while (0)

static void roundtrip(const struct kiln_frame *f, uint32_t max_payload)
{
        size_t cap = KILN_FRAME_WIRE_MAX((size_t)f->len), n = 0, used = 0;
        uint8_t *wire = malloc(cap), *dbuf;
        struct kiln_decoder d;
        struct kiln_frame g;
        int r;

        CHECK(wire != NULL);
        CHECK(kiln_frame_encode(f, wire, cap, &n) == KILN_OK);
        CHECK(n <= cap && n >= 2 && wire[0] == 0 && wire[n - 1] == 0);
        for (size_t i = 1; i + 1 < n; i++)
                CHECK(wire[i] != 0);
        dbuf = malloc(KILN_FRAME_WIRE_MAX((size_t)max_payload));
        CHECK(dbuf != NULL);
        kiln_decoder_init(&d, dbuf, KILN_FRAME_WIRE_MAX((size_t)max_payload), max_payload);
        r = kiln_decoder_feed(&d, wire, n, &used, &g);
        CHECK(r == KILN_DEC_FRAME && used == n);
        CHECK(g.version == f->version && g.type == f->type && g.flags == f->flags &&
              g.status == f->status && g.session == f->session && g.request_id == f->request_id &&
              g.len == f->len);
        CHECK(f->len == 0 || memcmp(g.payload, f->payload, f->len) == 0);
        free(dbuf);
        free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const uint32_t maxes[] = {256, 257, 300, 1024, 4096};
        struct kiln_decoder d;
        uint32_t max_payload, seed;
        size_t cap, off = 0;
        uint8_t *buf;

        if (size < 5)
                return 0;
        max_payload = maxes[data[0] % (sizeof(maxes) / sizeof(maxes[0]))];
        seed = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
               (uint32_t)data[4] << 24;
        data += 5;
        size -= 5;

        cap = KILN_FRAME_WIRE_MAX((size_t)max_payload);
        buf = malloc(cap);
        CHECK(buf != NULL);
        kiln_decoder_init(&d, buf, cap, max_payload);
        while (off < size) {
                size_t piece, pos = 0;

                seed = seed * 1103515245u + 12345u;
                piece = 1 + (seed >> 16) % 64;
                if (piece > size - off)
                        piece = size - off;
                while (pos < piece) {
                        struct kiln_frame f;
                        size_t used = 0;
                        int r = kiln_decoder_feed(&d, data + off + pos, piece - pos, &used, &f);

                        CHECK(used >= 1 && used <= piece - pos);
                        CHECK(d.len <= d.cap);
                        pos += used;
                        if (r == KILN_DEC_FRAME) {
                                struct kiln_frame copy = f;
                                uint8_t *p = malloc(f.len ? f.len : 1);

                                CHECK(f.version == KILN_PROTO_VERSION && f.len <= max_payload);
                                CHECK(p != NULL);
                                memcpy(p, f.payload, f.len);
                                copy.payload = p;
                                roundtrip(&copy, max_payload);
                                free(p);
                        } else if (r == KILN_DEC_NEED_MORE) {
                                CHECK(pos == piece);
                        } else {
                                CHECK(r == KILN_E_PROTO_COBS || r == KILN_E_PROTO_SHORT ||
                                      r == KILN_E_PROTO_CRC || r == KILN_E_PROTO_LENGTH ||
                                      r == KILN_E_PROTO_VERSION || r == KILN_E_PROTO_TOO_LARGE);
                        }
                }
                off += piece;
        }
        free(buf);

        /* COBS round trip of the raw bytes */
        {
                size_t ecap = KILN_COBS_MAX(size), elen = 0, dlen = 0;
                uint8_t *enc = malloc(ecap);

                CHECK(enc != NULL);
                CHECK(kiln_cobs_encode(data, size, enc, ecap, &elen) == KILN_OK);
                CHECK(elen <= size + size / 254 + 1);
                CHECK(kiln_cobs_decode(enc, elen, &dlen) == KILN_OK);
                CHECK(dlen == size && (size == 0 || memcmp(enc, data, size) == 0));
                free(enc);
        }
        return 0;
}
