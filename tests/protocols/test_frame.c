/*
 * Frame codec against docs/protocol.md: the exact wire bytes of every §8 vector, the CRC-32C check
 * value, COBS at block boundaries, every decoder error path, resynchronisation through noise and
 * boot-log text, and a frame fed byte by byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kiln/endian.h"
#include "kiln/frame.h"

/* ---- helpers ---- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
        size_t n = strlen(hex) / 2;

        assert_true(strlen(hex) % 2 == 0);
        assert_true(n <= cap);
        for (size_t i = 0; i < n; i++) {
                unsigned v;

                assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
                out[i] = (uint8_t)v;
        }
        return n;
}

struct vector {
        const char *name;
        uint8_t type, flags, status;
        uint32_t session, request_id;
        const char *payload;
        const char *wire;
};

/* docs/protocol.md §8, copied verbatim */
static const struct vector vectors[] = {
    {"8.1 HELLO request", 0x01, 0x00, 0, 0x00000000, 1, "0101000000100000",
     "0003010101010101010201010102080101030101010102100105b228946600"},
    {"8.2 HELLO response", 0x01, 0x01, 0, 0x78563412, 1,
     "010000000010000000100000123456789abcdef00f1e2d3c4b5a69783f0000000e6b696c6e2d6167656e742d31"
     "2e30",
     "00040101010612345678010101022f010102010101010210010102100112123456789abcdef00f1e2d3c4b5a6978"
     "3f0101140e6b696c6e2d6167656e742d312e30a22b986c00"},
    {"8.3 NAK", 0x7f, 0x01, 0, 0x78563412, 0, "01000000",
     "0004017f010512345678010101020401010201010105cce2353900"},
    {"8.4 WRITE_OBJECT request", 0x04, 0x00, 0, 0x78563412, 3,
     "046365727400000000000400000002000010000000000102030405060708090a0b0c0d0e0f",
     "000301040106123456780301010225010106046365727401010101020401010202010210010101140102030405"
     "060708090a0b0c0d0e0f1fac179200"},
    {"8.5 WRITE_OBJECT response", 0x04, 0x01, 0, 0x78563412, 3, "1002000000000000",
     "000401040106123456780301010208010103100201010101010552d65c2a00"},
    {"8.6 WRITE_OBJECT error", 0x04, 0x01, 6, 0x78563412, 4,
     "000200000f6f6666736574206d69736d61746368",
     "000a01040106123456780401010214010101020201150f6f6666736574206d69736d6174636871cc1b6700"},
    {"8.7 FUSE_PROGRAM request", 0x08, 0x00, 0, 0x78563412, 9, "0d64656275675f64697361626c650101",
     "0003010801061234567809010102100101150d64656275675f64697361626c6501014418448000"},
    {"8.8 FUSE_PROGRAM response", 0x08, 0x01, 0, 0x78563412, 9,
     "0d64656275675f64697361626c650100000101",
     "0004010801061234567809010102130101100d64656275675f64697361626c65010107010108b52ee500"},
};

#define NVEC (sizeof(vectors) / sizeof(vectors[0]))
#define BIG 70000

static uint8_t *xmalloc(size_t n)
{
        uint8_t *p = malloc(n ? n : 1);

        assert_non_null(p);
        return p;
}

/* Encode a frame with payload p[0..n) into a fresh buffer; *ret_len = wire length. */
static uint8_t *encode(uint8_t version, uint8_t type, uint32_t rid, const uint8_t *p, uint32_t n,
                       size_t *ret_len)
{
        struct kiln_frame f = {version, type, 0x01, 0, 0x11223344, rid, n, p};
        size_t cap = KILN_FRAME_WIRE_MAX((size_t)n);
        uint8_t *out = xmalloc(cap);

        assert_int_equal(kiln_frame_encode(&f, out, cap, ret_len), KILN_OK);
        return out;
}

/* Feed everything; collect results. Returns number of frames; rejects counted in *ret_rej. */
struct feed_result {
        int frames;
        int rejected;
        int last_err;
        uint32_t last_rid;
        uint32_t last_len;
        uint8_t last_payload[512];
};

static void feed_all(struct kiln_decoder *d, const uint8_t *in, size_t n, size_t piece,
                     struct feed_result *res)
{
        size_t off = 0;

        while (off < n) {
                size_t len = n - off < piece ? n - off : piece;
                size_t pos = 0;

                while (pos < len) {
                        struct kiln_frame f;
                        size_t used = 0;
                        int r = kiln_decoder_feed(d, in + off + pos, len - pos, &used, &f);

                        assert_true(used >= 1 && used <= len - pos);
                        pos += used;
                        if (r == KILN_DEC_FRAME) {
                                res->frames++;
                                res->last_rid = f.request_id;
                                res->last_len = f.len;
                                if (f.len <= sizeof(res->last_payload))
                                        memcpy(res->last_payload, f.payload, f.len);
                        } else if (r < 0) {
                                res->rejected++;
                                res->last_err = r;
                        } else {
                                assert_int_equal(r, KILN_DEC_NEED_MORE);
                                assert_int_equal(pos, len);
                        }
                }
                off += len;
        }
}

/* ---- CRC ---- */

static void test_crc32c(void **state)
{
        (void)state;
        assert_int_equal(kiln_crc32c(0, "123456789", 9), 0xE3069283u);
        /* chained calls equal one call */
        assert_int_equal(kiln_crc32c(kiln_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
        assert_int_equal(kiln_crc32c(0, "", 0), 0x00000000u);
        /* the §8.1 trailer: CRC over header and payload, sent little-endian (b2 28 94 66) */
        {
                uint8_t fr[24];

                assert_int_equal(unhex("01010000000000000100000008000000" /* header */
                                       "0101000000100000",                /* payload */
                                       fr, sizeof(fr)),
                                 24);
                assert_int_equal(kiln_crc32c(0, fr, sizeof(fr)), 0x669428b2u);
        }
}

/* ---- §8 vectors ---- */

static void test_vectors_encode(void **state)
{
        (void)state;
        for (size_t i = 0; i < NVEC; i++) {
                const struct vector *v = &vectors[i];
                uint8_t payload[128], wire[256], out[256];
                size_t plen = unhex(v->payload, payload, sizeof(payload));
                size_t wlen = unhex(v->wire, wire, sizeof(wire));
                struct kiln_frame f = {KILN_PROTO_VERSION, v->type,       v->flags,       v->status,
                                       v->session,         v->request_id, (uint32_t)plen, payload};
                size_t olen = 0;

                assert_int_equal(kiln_frame_encode(&f, out, sizeof(out), &olen), KILN_OK);
                if (olen != wlen || memcmp(out, wire, wlen) != 0)
                        fail_msg("%s: encoding differs from docs/protocol.md §8", v->name);
                /* the encoder never exceeds the bound it advertises */
                assert_true(olen <= KILN_FRAME_WIRE_MAX(plen));
        }
}

static void test_vectors_decode(void **state)
{
        (void)state;
        for (size_t i = 0; i < NVEC; i++) {
                const struct vector *v = &vectors[i];
                uint8_t payload[128], wire[256], buf[KILN_FRAME_WIRE_MAX(256)];
                size_t plen = unhex(v->payload, payload, sizeof(payload));
                size_t wlen = unhex(v->wire, wire, sizeof(wire));
                struct kiln_decoder d;
                struct kiln_frame f;
                size_t used = 0;
                int r;

                kiln_decoder_init(&d, buf, sizeof(buf), 256);
                /* the leading delimiter ends an empty candidate: skipped silently */
                r = kiln_decoder_feed(&d, wire, wlen, &used, &f);
                assert_int_equal(r, KILN_DEC_FRAME);
                assert_int_equal(used, wlen);
                assert_int_equal(f.version, 1);
                assert_int_equal(f.type, v->type);
                assert_int_equal(f.flags, v->flags);
                assert_int_equal(f.status, v->status);
                assert_int_equal(f.session, v->session);
                assert_int_equal(f.request_id, v->request_id);
                assert_int_equal(f.len, plen);
                assert_memory_equal(f.payload, payload, plen);
                assert_int_equal(d.frames, 1);
                assert_int_equal(d.rejected, 0);
        }
}

/* The hand-decoded first vector of §8: pre-COBS bytes. */
static void test_vector_prestuffing(void **state)
{
        uint8_t raw[28], wire[64];
        size_t rlen, wlen, dlen = 0;

        (void)state;
        rlen = unhex("010100000000000001000000080000000101000000100000b2289466", raw, sizeof(raw));
        wlen = unhex(vectors[0].wire, wire, sizeof(wire));
        /* strip the delimiters and undo COBS in place */
        assert_int_equal(kiln_cobs_decode(wire + 1, wlen - 2, &dlen), KILN_OK);
        assert_int_equal(dlen, rlen);
        assert_memory_equal(wire + 1, raw, rlen);
}

/* ---- COBS ---- */

static void cobs_roundtrip(const uint8_t *in, size_t n, const uint8_t *expect, size_t expect_len)
{
        size_t cap = KILN_COBS_MAX(n), elen = 0, dlen = 0;
        uint8_t *enc = xmalloc(cap);

        assert_int_equal(kiln_cobs_encode(in, n, enc, cap, &elen), KILN_OK);
        assert_true(elen <= n + n / 254 + 1); /* §2.2 bound */
        for (size_t i = 0; i < elen; i++)
                assert_int_not_equal(enc[i], 0);
        if (expect != NULL) {
                assert_int_equal(elen, expect_len);
                assert_memory_equal(enc, expect, expect_len);
        }
        assert_int_equal(kiln_cobs_decode(enc, elen, &dlen), KILN_OK);
        assert_int_equal(dlen, n);
        if (n > 0)
                assert_memory_equal(enc, in, n);
        free(enc);
}

static void test_cobs_lengths(void **state)
{
        static const size_t lens[] = {0, 1, 253, 254, 255, 508, 509};
        uint8_t in[600], exp[620];

        (void)state;
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
                size_t n = lens[k], e = 0, left = n, pos = 0;

                for (size_t i = 0; i < n; i++)
                        in[i] = (uint8_t)(1 + i % 255);
                /* canonical: full 0xFF blocks, then a final block (omitted after a full block) */
                while (left >= 254) {
                        exp[e++] = 0xFF;
                        memcpy(exp + e, in + pos, 254);
                        e += 254;
                        pos += 254;
                        left -= 254;
                }
                if (left > 0 || n == 0) {
                        exp[e++] = (uint8_t)(left + 1);
                        memcpy(exp + e, in + pos, left);
                        e += left;
                }
                cobs_roundtrip(in, n, exp, e);
        }
        /* exact small forms */
        cobs_roundtrip((const uint8_t *)"", 0, (const uint8_t *)"\x01", 1);
        cobs_roundtrip((const uint8_t *)"\x41", 1, (const uint8_t *)"\x02\x41", 2);
}

static void test_cobs_zero_edges(void **state)
{
        uint8_t in[600], enc[620];
        size_t n, dlen = 0;

        (void)state;
        /* single zero */
        cobs_roundtrip((const uint8_t *)"\x00", 1, (const uint8_t *)"\x01\x01", 2);
        /* zero first, zero last, both, two zeros */
        cobs_roundtrip((const uint8_t *)"\x00\x41", 2, (const uint8_t *)"\x01\x02\x41", 3);
        cobs_roundtrip((const uint8_t *)"\x41\x00", 2, (const uint8_t *)"\x02\x41\x01", 3);
        cobs_roundtrip((const uint8_t *)"\x00\x41\x00", 3, (const uint8_t *)"\x01\x02\x41\x01", 4);
        cobs_roundtrip((const uint8_t *)"\x00\x00", 2, (const uint8_t *)"\x01\x01\x01", 3);
        /* 254 non-zero bytes then a zero: full block, then the zero as "01 01" */
        for (size_t i = 0; i < 254; i++)
                in[i] = 0x55;
        in[254] = 0;
        memcpy(enc, "\xFF", 1);
        memset(enc + 1, 0x55, 254);
        memcpy(enc + 255, "\x01\x01", 2);
        cobs_roundtrip(in, 255, enc, 257);
        /* zero then 254 non-zero */
        in[0] = 0;
        memset(in + 1, 0x66, 254);
        enc[0] = 0x01;
        enc[1] = 0xFF;
        memset(enc + 2, 0x66, 254);
        cobs_roundtrip(in, 255, enc, 256);
        /* a zero at every position of a 509-byte buffer */
        for (size_t z = 0; z < 509; z += 127) {
                for (size_t i = 0; i < 509; i++)
                        in[i] = (uint8_t)(i % 250 + 1);
                in[z] = 0;
                cobs_roundtrip(in, 509, NULL, 0);
        }
        /* receivers accept the non-canonical trailing 01 block after a full block */
        memset(in, 0x77, 254);
        enc[0] = 0xFF;
        memset(enc + 1, 0x77, 254);
        enc[255] = 0x01;
        n = 256;
        assert_int_equal(kiln_cobs_decode(enc, n, &dlen), KILN_OK);
        assert_int_equal(dlen, 254);
        assert_memory_equal(enc, in, 254);
}

static void test_cobs_invalid(void **state)
{
        uint8_t b[8];
        size_t n = 0;

        (void)state;
        memcpy(b, "\x05\x41\x42", 3); /* code says 4 data bytes, 2 present */
        assert_int_equal(kiln_cobs_decode(b, 3, &n), KILN_E_PROTO_COBS);
        memcpy(b, "\x02\x41\x00\x41", 4); /* a zero inside (never in a candidate, still refused) */
        assert_int_equal(kiln_cobs_decode(b, 4, &n), KILN_E_PROTO_COBS);
        memcpy(b, "\x03\x41\x00", 3);
        assert_int_equal(kiln_cobs_decode(b, 3, &n), KILN_E_PROTO_COBS);
        memcpy(b, "\xFF\x41", 2);
        assert_int_equal(kiln_cobs_decode(b, 2, &n), KILN_E_PROTO_COBS);
        /* output too small for encoding */
        assert_int_equal(kiln_cobs_encode((const uint8_t *)"abc", 3, b, 3, &n), KILN_E_RANGE);
}

/* ---- decoder error paths ---- */

/* Hand-built frame (no CRC fix-ups by the encoder) COBS-wrapped between delimiters. */
static size_t raw_wire(const uint8_t *raw, size_t n, uint8_t *out, size_t cap)
{
        size_t e = 0;

        assert_true(cap >= KILN_COBS_MAX(n) + 2);
        out[0] = 0;
        assert_int_equal(kiln_cobs_encode(raw, n, out + 1, cap - 2, &e), KILN_OK);
        out[1 + e] = 0;
        return e + 2;
}

static int decode_one(const uint8_t *wire, size_t n, uint32_t max_payload)
{
        size_t cap = KILN_FRAME_WIRE_MAX((size_t)max_payload);
        uint8_t *buf = xmalloc(cap);
        struct kiln_decoder d;
        struct feed_result res;

        memset(&res, 0, sizeof(res));
        kiln_decoder_init(&d, buf, cap, max_payload);
        feed_all(&d, wire, n, n, &res);
        free(buf);
        assert_int_equal(res.frames + res.rejected, 1);
        return res.frames == 1 ? KILN_OK : res.last_err;
}

static size_t build_raw(uint8_t version, uint32_t len_field, const uint8_t *payload, size_t plen,
                        int fix_crc, uint8_t *raw)
{
        uint32_t crc;

        raw[0] = version;
        raw[1] = 0x02;
        raw[2] = 0x01;
        raw[3] = 0;
        kiln_put_le32(raw + 4, 0x01020304);
        kiln_put_le32(raw + 8, 7);
        kiln_put_le32(raw + 12, len_field);
        memcpy(raw + 16, payload, plen);
        crc = kiln_crc32c(0, raw, 16 + plen);
        if (!fix_crc)
                crc ^= 0x00010000u;
        kiln_put_le32(raw + 16 + plen, crc);
        return 20 + plen;
}

static void test_decoder_errors(void **state)
{
        uint8_t raw[64], wire[128];
        size_t n;

        (void)state;
        /* valid baseline */
        n = build_raw(1, 4, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_OK);
        /* COBS: a code byte pointing past the candidate */
        memcpy(wire, "\x00\x09\x41\x42\x00", 5);
        assert_int_equal(decode_one(wire, 5, 256), KILN_E_PROTO_COBS);
        /* SHORT: 19 decoded bytes with a valid COBS form */
        memset(raw, 0x11, 19);
        n = raw_wire(raw, 19, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_SHORT);
        /* and 0 decoded bytes from a lone code byte 01 */
        memcpy(wire, "\x00\x01\x00", 3);
        assert_int_equal(decode_one(wire, 3, 256), KILN_E_PROTO_SHORT);
        /* CRC */
        n = build_raw(1, 4, (const uint8_t *)"abcd", 4, 0, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_CRC);
        /* CRC checked before length and version: both wrong and a bad CRC gives CRC */
        n = build_raw(2, 9, (const uint8_t *)"abcd", 4, 0, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_CRC);
        /* LENGTH: field says 5, frame holds 4 (CRC valid) */
        n = build_raw(1, 5, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_LENGTH);
        n = build_raw(1, 3, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_LENGTH);
        /* LENGTH before VERSION */
        n = build_raw(2, 5, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_LENGTH);
        /* VERSION */
        n = build_raw(2, 4, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_VERSION);
        n = build_raw(0, 4, (const uint8_t *)"abcd", 4, 1, raw);
        n = raw_wire(raw, n, wire, sizeof(wire));
        assert_int_equal(decode_one(wire, n, 256), KILN_E_PROTO_VERSION);
}

static void test_decoder_too_large(void **state)
{
        const uint32_t max = 300;
        uint8_t payload[512];
        size_t n;
        uint8_t *w;

        (void)state;
        memset(payload, 0xA5, sizeof(payload));
        payload[7] = 0; /* some zeros so COBS has several blocks */
        payload[280] = 0;
        w = encode(1, 4, 1, payload, max - 1, &n);
        assert_int_equal(decode_one(w, n, max), KILN_OK);
        free(w);
        w = encode(1, 4, 2, payload, max, &n);
        assert_int_equal(decode_one(w, n, max), KILN_OK);
        free(w);
        w = encode(1, 4, 3, payload, max + 1, &n);
        assert_int_equal(decode_one(w, n, max), KILN_E_PROTO_TOO_LARGE);
        free(w);
        /* all-zero payloads encode shortest, still refused over the maximum */
        memset(payload, 0, sizeof(payload));
        w = encode(1, 4, 4, payload, max + 1, &n);
        assert_int_equal(decode_one(w, n, max), KILN_E_PROTO_TOO_LARGE);
        free(w);
        /* the hard maximum payload of any Kiln implementation */
        {
                uint8_t *big = calloc(1, KILN_PAYLOAD_MAX + 1);

                assert_non_null(big);
                w = encode(1, 5, 5, big, KILN_PAYLOAD_MAX, &n);
                assert_int_equal(decode_one(w, n, KILN_PAYLOAD_MAX), KILN_OK);
                free(w);
                {
                        struct kiln_frame f = {1, 5, 1, 0, 0, 6, KILN_PAYLOAD_MAX + 1, big};
                        uint8_t tiny[8];
                        size_t tl = 0;

                        /* the encoder refuses what no receiver accepts */
                        assert_int_equal(kiln_frame_encode(&f, tiny, sizeof(tiny), &tl),
                                         KILN_E_INVAL);
                }
                free(big);
        }
}

static void test_decoder_overlong_recovery(void **state)
{
        const uint32_t max = 256;
        size_t cap = KILN_FRAME_WIRE_MAX((size_t)max), n, fl;
        uint8_t *buf = xmalloc(cap), *stream = xmalloc(4096), *frame;
        struct kiln_decoder d;
        struct feed_result res;

        (void)state;
        /* 2000 non-zero bytes (a stuck line), then a valid frame */
        memset(stream, 0x5A, 2000);
        frame = encode(1, 2, 77, (const uint8_t *)"ok", 2, &fl);
        memcpy(stream + 2000, frame, fl);
        n = 2000 + fl;
        kiln_decoder_init(&d, buf, cap, max);
        memset(&res, 0, sizeof(res));
        feed_all(&d, stream, n, 333, &res);
        assert_int_equal(res.rejected, 1);
        assert_int_equal(res.last_err, KILN_E_PROTO_TOO_LARGE);
        assert_int_equal(res.frames, 1);
        assert_int_equal(res.last_rid, 77);
        assert_int_equal(res.last_len, 2);
        assert_memory_equal(res.last_payload, "ok", 2);
        assert_true(d.skipped_bytes >= 2000 - cap);
        /* memory stayed bounded: the decoder never wrote past cap (ASan checks the buffer) */
        assert_true(d.len <= cap);
        /* exactly cap bytes is still a candidate; cap + 1 is overlong */
        kiln_decoder_init(&d, buf, cap, max);
        memset(&res, 0, sizeof(res));
        memset(stream, 0x5A, cap);
        stream[cap] = 0;
        feed_all(&d, stream, cap + 1, 7, &res);
        assert_int_equal(res.rejected, 1);
        assert_int_not_equal(res.last_err, KILN_E_PROTO_TOO_LARGE); /* decoded, then refused */
        memset(&res, 0, sizeof(res));
        memset(stream, 0x5A, cap + 1);
        stream[cap + 1] = 0;
        feed_all(&d, stream, cap + 2, 5, &res);
        assert_int_equal(res.rejected, 1);
        assert_int_equal(res.last_err, KILN_E_PROTO_TOO_LARGE);
        /* reset drops a partial candidate */
        kiln_decoder_init(&d, buf, cap, max);
        memset(&res, 0, sizeof(res));
        feed_all(&d, frame, fl / 2, fl, &res);
        kiln_decoder_reset(&d);
        feed_all(&d, frame + fl / 2, fl - fl / 2, fl, &res);
        assert_int_equal(res.frames, 0);
        assert_int_equal(res.rejected, 1);
        free(frame);
        free(stream);
        free(buf);
}

/* ---- resynchronisation ---- */

static void test_resync_bootlog(void **state)
{
        static const char boot[] = "\r\nU-Boot SPL 2024.01 (Jan 01 2024)\r\nTrying to boot from "
                                   "MMC1\r\n[    0.000000] Booting Linux on physical CPU 0x0\r\n"
                                   "kiln-agent: ready, half a line of text without end";
        size_t cap = KILN_FRAME_WIRE_MAX(256u), f1l, f2l, n = 0;
        uint8_t buf[KILN_FRAME_WIRE_MAX(256u)], stream[1024], *f1, *f2;
        struct kiln_decoder d;
        struct feed_result res;

        (void)state;
        f1 = encode(1, 1, 1, (const uint8_t *)"first", 5, &f1l);
        f2 = encode(1, 2, 2, (const uint8_t *)"second", 6, &f2l);
        memcpy(stream + n, boot, sizeof(boot) - 1);
        n += sizeof(boot) - 1;
        memcpy(stream + n, f1, f1l);
        n += f1l;
        memcpy(stream + n, boot, 40); /* more log between frames, no delimiter of its own */
        n += 40;
        memcpy(stream + n, f2, f2l);
        n += f2l;
        kiln_decoder_init(&d, buf, cap, 256);
        memset(&res, 0, sizeof(res));
        feed_all(&d, stream, n, n, &res);
        assert_int_equal(res.frames, 2);
        assert_int_equal(res.rejected, 2); /* one rejected candidate per stretch of text */
        assert_int_equal(res.last_rid, 2);
        assert_memory_equal(res.last_payload, "second", 6);
        assert_int_equal(d.frames, 2);
        assert_int_equal(d.rejected, 2);
        free(f1);
        free(f2);
}

static void test_resync_noise(void **state)
{
        size_t cap = KILN_FRAME_WIRE_MAX(256u), fl, n = 0;
        uint8_t buf[KILN_FRAME_WIRE_MAX(256u)], stream[8192], *f;
        struct kiln_decoder d;
        struct feed_result res;
        uint32_t x = 12345;
        int frames = 0;

        (void)state;
        /* random bytes (zeros included) before and between 10 frames */
        for (int k = 0; k < 10; k++) {
                size_t junk = 10 + (size_t)k * 37;

                for (size_t i = 0; i < junk; i++) {
                        x = x * 1103515245u + 12345u;
                        stream[n++] = (uint8_t)(x >> 16);
                }
                f = encode(1, 3, (uint32_t)(100 + k), (const uint8_t *)"payload", 7, &fl);
                memcpy(stream + n, f, fl);
                n += fl;
                free(f);
        }
        kiln_decoder_init(&d, buf, cap, 256);
        memset(&res, 0, sizeof(res));
        feed_all(&d, stream, n, 61, &res);
        frames = res.frames;
        /* noise cannot eat a frame: each is preceded by its own delimiter */
        assert_int_equal(frames, 10);
        assert_int_equal(res.last_rid, 109);
        assert_true(res.rejected > 0);
}

static void test_byte_by_byte(void **state)
{
        size_t cap = KILN_FRAME_WIRE_MAX(1024u), fl;
        uint8_t *buf = xmalloc(cap), payload[600], *f;
        struct kiln_decoder d;
        size_t i;
        int got = 0;

        (void)state;
        for (i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t)(i * 7); /* includes zeros */
        f = encode(1, 5, 0xDEADBEEF, payload, sizeof(payload), &fl);
        kiln_decoder_init(&d, buf, cap, 1024);
        for (i = 0; i < fl; i++) {
                struct kiln_frame fr;
                size_t used = 0;
                int r = kiln_decoder_feed(&d, f + i, 1, &used, &fr);

                assert_int_equal(used, 1);
                if (i + 1 < fl) {
                        assert_int_equal(r, KILN_DEC_NEED_MORE);
                } else {
                        assert_int_equal(r, KILN_DEC_FRAME);
                        assert_int_equal(fr.request_id, 0xDEADBEEF);
                        assert_int_equal(fr.len, sizeof(payload));
                        assert_memory_equal(fr.payload, payload, sizeof(payload));
                        got = 1;
                }
        }
        assert_true(got);
        free(f);
        free(buf);
}

/* Two frames in one feed: the decoder stops after the first and the rest comes next call. */
static void test_two_frames_one_feed(void **state)
{
        size_t cap = KILN_FRAME_WIRE_MAX(256u), l1, l2, used = 0;
        uint8_t buf[KILN_FRAME_WIRE_MAX(256u)], stream[128], *a, *b;
        struct kiln_decoder d;
        struct kiln_frame f;

        (void)state;
        a = encode(1, 1, 1, (const uint8_t *)"A", 1, &l1);
        b = encode(1, 1, 2, (const uint8_t *)"B", 1, &l2);
        memcpy(stream, a, l1);
        memcpy(stream + l1, b + 1, l2 - 1); /* frames sharing one delimiter */
        kiln_decoder_init(&d, buf, cap, 256);
        assert_int_equal(kiln_decoder_feed(&d, stream, l1 + l2 - 1, &used, &f), KILN_DEC_FRAME);
        assert_int_equal(used, l1);
        assert_int_equal(f.request_id, 1);
        assert_int_equal(kiln_decoder_feed(&d, stream + used, l2 - 1, &used, &f), KILN_DEC_FRAME);
        assert_int_equal(f.request_id, 2);
        free(a);
        free(b);
}

static void test_encode_limits(void **state)
{
        uint8_t out[64];
        size_t n = 0;
        struct kiln_frame f = {1, 1, 0, 0, 0, 1, 40, NULL};

        (void)state;
        assert_int_equal(kiln_frame_encode(&f, out, sizeof(out), &n), KILN_E_INVAL);
        f.payload = out;
        assert_int_equal(kiln_frame_encode(&f, out + 0, KILN_FRAME_WIRE_MAX(40u) - 1, &n),
                         KILN_E_RANGE);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_crc32c),
            cmocka_unit_test(test_vectors_encode),
            cmocka_unit_test(test_vectors_decode),
            cmocka_unit_test(test_vector_prestuffing),
            cmocka_unit_test(test_cobs_lengths),
            cmocka_unit_test(test_cobs_zero_edges),
            cmocka_unit_test(test_cobs_invalid),
            cmocka_unit_test(test_decoder_errors),
            cmocka_unit_test(test_decoder_too_large),
            cmocka_unit_test(test_decoder_overlong_recovery),
            cmocka_unit_test(test_resync_bootlog),
            cmocka_unit_test(test_resync_noise),
            cmocka_unit_test(test_byte_by_byte),
            cmocka_unit_test(test_two_frames_one_feed),
            cmocka_unit_test(test_encode_limits),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
