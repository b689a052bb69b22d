/* Kiln frame codec: COBS, CRC-32C, header. See kiln/frame.h and docs/protocol.md §2. */
#include <string.h>

#include "kiln/endian.h"
#include "kiln/frame.h"

static const uint32_t crc32c_table[256] = {
        0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
        0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
        0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
        0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
        0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
        0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
        0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
        0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
        0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
        0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
        0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
        0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
        0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
        0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
        0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
        0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
        0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
        0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
        0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
        0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
        0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
        0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
        0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
        0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
        0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
        0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
        0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
        0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
        0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
        0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
        0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
        0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
        0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
        0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
        0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
        0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
        0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
        0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
        0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
        0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
        0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
        0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
        0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

uint32_t kiln_crc32c(uint32_t crc, const void *p, size_t n)
{
        const uint8_t *b = p;

        crc = ~crc;
        while (n-- > 0)
                crc = crc32c_table[(crc ^ *b++) & 0xFFu] ^ (crc >> 8);
        return ~crc;
}

/*
 * Streaming COBS encoder. A block is a code byte followed by code-1 non-zero bytes; a code below
 * 0xFF means a zero follows (except at the very end). A full block (code 0xFF) implies no zero, and
 * when the data ends exactly after one no empty block follows it: the canonical encoding.
 */
struct cobs_enc {
        uint8_t *out;
        size_t pos;
        size_t code_pos;
        uint8_t code;
        uint8_t open;      /* a block is being filled */
        uint8_t must_emit; /* data so far ended with a zero (or is empty): a final block is due */
};

static void cobs_enc_init(struct cobs_enc *e, uint8_t *out)
{
        e->out = out;
        e->pos = 0;
        e->code_pos = 0;
        e->code = 1;
        e->open = 0;
        e->must_emit = 1;
}

static void cobs_enc_put(struct cobs_enc *e, const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                if (!e->open) {
                        e->code_pos = e->pos++;
                        e->code = 1;
                        e->open = 1;
                }
                if (p[i] == 0) {
                        e->out[e->code_pos] = e->code;
                        e->open = 0;
                        e->must_emit = 1;
                        continue;
                }
                e->out[e->pos++] = p[i];
                if (++e->code == 0xFF) {
                        e->out[e->code_pos] = 0xFF;
                        e->open = 0;
                        e->must_emit = 0;
                }
        }
}

static size_t cobs_enc_finish(struct cobs_enc *e)
{
        if (e->open)
                e->out[e->code_pos] = e->code;
        else if (e->must_emit)
                e->out[e->pos++] = 0x01;
        return e->pos;
}

int kiln_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct cobs_enc e;

        if (n > SIZE_MAX - 512 || cap < KILN_COBS_MAX(n))
                return KILN_E_RANGE;
        cobs_enc_init(&e, out);
        cobs_enc_put(&e, in, n);
        *ret_len = cobs_enc_finish(&e);
        return KILN_OK;
}

int kiln_cobs_decode(uint8_t *buf, size_t n, size_t *ret_len)
{
        size_t i = 0, o = 0;

        while (i < n) {
                uint8_t code = buf[i++];
                size_t k = (size_t)code - 1;

                if (code == 0 || k > n - i)
                        return KILN_E_PROTO_COBS;
                for (size_t j = 0; j < k; j++)
                        if (buf[i + j] == 0)
                                return KILN_E_PROTO_COBS;
                /* o <= i - 1 here, so the move never overwrites unread input */
                memmove(buf + o, buf + i, k);
                o += k;
                i += k;
                if (code != 0xFF && i < n)
                        buf[o++] = 0;
        }
        *ret_len = o;
        return KILN_OK;
}

static void header_pack(const struct kiln_frame *f, uint8_t h[KILN_FRAME_HDR_LEN])
{
        h[KILN_HDR_VERSION] = f->version;
        h[KILN_HDR_TYPE] = f->type;
        h[KILN_HDR_FLAGS] = f->flags;
        h[KILN_HDR_STATUS] = f->status;
        kiln_put_le32(h + KILN_HDR_SESSION, f->session);
        kiln_put_le32(h + KILN_HDR_REQUEST_ID, f->request_id);
        kiln_put_le32(h + KILN_HDR_LENGTH, f->len);
}

int kiln_frame_encode(const struct kiln_frame *f, uint8_t *out, size_t cap, size_t *ret_len)
{
        uint8_t hdr[KILN_FRAME_HDR_LEN], trailer[KILN_FRAME_CRC_LEN];
        struct cobs_enc e;
        uint32_t crc;
        size_t n;

        if (f->len > KILN_PAYLOAD_MAX || (f->len > 0 && f->payload == NULL))
                return KILN_E_INVAL;
        if (cap < KILN_FRAME_WIRE_MAX((size_t)f->len))
                return KILN_E_RANGE;
        header_pack(f, hdr);
        crc = kiln_crc32c(0, hdr, sizeof(hdr));
        if (f->len > 0)
                crc = kiln_crc32c(crc, f->payload, f->len);
        kiln_put_le32(trailer, crc);

        out[0] = 0x00;
        cobs_enc_init(&e, out + 1);
        cobs_enc_put(&e, hdr, sizeof(hdr));
        if (f->len > 0)
                cobs_enc_put(&e, f->payload, f->len);
        cobs_enc_put(&e, trailer, sizeof(trailer));
        n = 1 + cobs_enc_finish(&e);
        out[n++] = 0x00;
        *ret_len = n;
        return KILN_OK;
}

int kiln_frame_decode(uint8_t *buf, size_t n, uint32_t max_payload, struct kiln_frame *ret)
{
        size_t len;
        uint32_t plen;
        int r;

        r = kiln_cobs_decode(buf, n, &len);
        if (r < 0)
                return r;
        if (len < KILN_FRAME_HDR_LEN + KILN_FRAME_CRC_LEN)
                return KILN_E_PROTO_SHORT;
        if (kiln_crc32c(0, buf, len - KILN_FRAME_CRC_LEN) != kiln_le32(buf + len - KILN_FRAME_CRC_LEN))
                return KILN_E_PROTO_CRC;
        plen = kiln_le32(buf + KILN_HDR_LENGTH);
        if ((size_t)plen != len - KILN_FRAME_HDR_LEN - KILN_FRAME_CRC_LEN)
                return KILN_E_PROTO_LENGTH;
        if (buf[KILN_HDR_VERSION] != KILN_PROTO_VERSION)
                return KILN_E_PROTO_VERSION;
        if (plen > max_payload)
                return KILN_E_PROTO_TOO_LARGE;
        ret->version = buf[KILN_HDR_VERSION];
        ret->type = buf[KILN_HDR_TYPE];
        ret->flags = buf[KILN_HDR_FLAGS];
        ret->status = buf[KILN_HDR_STATUS];
        ret->session = kiln_le32(buf + KILN_HDR_SESSION);
        ret->request_id = kiln_le32(buf + KILN_HDR_REQUEST_ID);
        ret->len = plen;
        ret->payload = buf + KILN_FRAME_HDR_LEN;
        return KILN_OK;
}

void kiln_decoder_init(struct kiln_decoder *d, uint8_t *buf, size_t cap, uint32_t max_payload)
{
        memset(d, 0, sizeof(*d));
        d->buf = buf;
        d->cap = cap;
        d->max_payload = max_payload;
}

void kiln_decoder_reset(struct kiln_decoder *d)
{
        d->len = 0;
        d->discarding = 0;
}

int kiln_decoder_feed(struct kiln_decoder *d, const uint8_t *in, size_t n, size_t *ret_used,
                      struct kiln_frame *ret_frame)
{
        for (size_t i = 0; i < n; i++) {
                size_t len;
                int r;

                if (in[i] != 0) {
                        if (d->discarding) {
                                d->skipped_bytes++;
                        } else if (d->len == d->cap) {
                                /* overlong: drop what we have and skip to the next delimiter */
                                d->skipped_bytes += (uint32_t)d->len + 1;
                                d->len = 0;
                                d->discarding = 1;
                        } else {
                                d->buf[d->len++] = in[i];
                        }
                        continue;
                }
                if (d->discarding) {
                        d->discarding = 0;
                        d->rejected++;
                        *ret_used = i + 1;
                        return KILN_E_PROTO_TOO_LARGE;
                }
                if (d->len == 0)
                        continue;
                len = d->len;
                d->len = 0;
                *ret_used = i + 1;
                r = kiln_frame_decode(d->buf, len, d->max_payload, ret_frame);
                if (r < 0) {
                        d->rejected++;
                        return r;
                }
                d->frames++;
                return KILN_DEC_FRAME;
        }
        *ret_used = n;
        return KILN_DEC_NEED_MORE;
}
