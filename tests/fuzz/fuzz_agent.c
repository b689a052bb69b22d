/*
 * Fuzz the device agent against fake in-memory firmware.
 *
 * Input: byte 0 selects the mode and the device's situation, byte 1 which callbacks fail.
 *   raw mode (bit 0 clear): the rest is fed to the agent as received bytes, in chunks of
 *     1 + (byte0 >> 4) bytes (so frames split anywhere).
 *   frame mode (bit 0 set): the rest is a list of records
 *       type u8, flags u8, session selector u8, request id u8, len u16 LE, payload[len]
 *     each sent as a frame with a valid CRC (so every command handler is reached past the
 *     framing); session selector 0 = current session, 1 = zero, 2 = stale, else the next 4 input
 *     bytes; type 0xEE reboots the device (new session, memory lost).
 *   bits 1-2: initial lifecycle - 1; bit 3: callbacks fail per byte 1's mask.
 *
 * Every byte the agent sends is checked: whole frames only, RESPONSE flag, version 1, the current
 * session, payload within the device maximum, error payloads and NAKs well formed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/agent.h"
#include "kiln/endian.h"
#include "kiln/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEV_MAX 512u
#define OBJS 4
#define OBJ_CAP 1024u
#define STORE_CAP 2048u
#define FUSES 11
#define SLOTS 4
#define OUT_CAP (64u << 10)

#define CHECK(c)                                                                                   \
        do {                                                                                       \
                if (!(c))                                                                          \
                        abort();                                                                   \
        } while (0)

enum {
        FAIL_OBJ_WRITE = 1,
        FAIL_FUSE = 2,
        FAIL_KEYGEN = 4,
        FAIL_SIGN = 8,
        FAIL_LIFECYCLE = 16,
        FAIL_OBJ_READ = 32,
        FAIL_INFO = 64,
        FAIL_WRITE = 128,
};

struct obj {
        char name[KILN_NAME_MAX];
        uint8_t name_len;
        int has_c, has_p;
        uint8_t cflags, pflags;
        uint32_t clen, ptotal, precv;
        uint8_t c[OBJ_CAP], p[OBJ_CAP];
};

static const struct {
        const char *name;
        uint16_t width;
        int wp, rp;
} fmap[FUSES] = {
        {"sb_key_hash", 256, 1, -1}, {"sb_key_hash_wp", 1, -1, -1}, {"secure_boot", 1, -1, -1},
        {"debug_disable", 1, -1, -1}, {"rollback_min", 32, -1, -1}, {"flash_encrypt", 1, -1, -1},
        {"mac0", 48, 7, -1},         {"mac0_wp", 1, -1, -1},       {"hmac_key", 256, 9, 9},
        {"hmac_key_rp", 1, -1, -1},  {"customer_id", 32, -1, -1},
};

static struct fw {
        uint8_t out[OUT_CAP];
        size_t out_len;
        unsigned rnd;
        uint8_t fail;
        uint8_t lifecycle;
        struct obj obj[OBJS];
        uint8_t fuse[FUSES][64];
        uint8_t key[SLOTS];
} fw;

static uint8_t rx[KILN_AGENT_RX_SIZE(DEV_MAX)], resp[KILN_AGENT_RESP_SIZE(DEV_MAX)];
static struct kiln_agent ag;
static uint8_t hostbuf[KILN_FRAME_WIRE_MAX(KILN_PAYLOAD_MAX)];

static int fw_write(void *ctx, const uint8_t *p, size_t n)
{
        (void)ctx;
        if (fw.fail & FAIL_WRITE)
                return KILN_E_IO;
        CHECK(n <= OUT_CAP - fw.out_len);
        memcpy(fw.out + fw.out_len, p, n);
        fw.out_len += n;
        return KILN_OK;
}

static int fw_random(void *ctx, uint8_t *out, size_t n)
{
        (void)ctx;
        for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t)(++fw.rnd * 37u + 11u);
        return KILN_OK;
}

static int fw_info(void *ctx, struct kiln_agent_info *ret)
{
        struct kiln_agent_info in;

        (void)ctx;
        memset(&in, 0, sizeof(in));
        memcpy(in.chip_uid, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
        in.chip_uid_len = (fw.fail & FAIL_INFO) ? 0 : 8;
        memcpy(in.product_id, "fuzz-dev", 8);
        in.product_id_len = 8;
        in.hw_revision = 1;
        memcpy(in.fw_version, "0.1", 3);
        in.fw_version_len = 3;
        in.lifecycle = fw.lifecycle;
        in.debug_port = (fw.fuse[3][0] & 1) ? 0 : 1;
        in.secure_boot = fw.fuse[2][0] & 1;
        in.key_slots = SLOTS;
        for (int i = 0; i < SLOTS; i++)
                if (fw.key[i])
                        in.key_present |= (uint16_t)(1u << i);
        *ret = in;
        return KILN_OK;
}

static struct obj *fw_find(const char *name, uint8_t len)
{
        for (int i = 0; i < OBJS; i++)
                if (fw.obj[i].name_len == len && memcmp(fw.obj[i].name, name, len) == 0)
                        return &fw.obj[i];
        return NULL;
}

static int fw_obj_stat(void *ctx, const char *name, uint8_t len, enum kiln_agent_obj_view view,
                       struct kiln_agent_obj_stat *ret)
{
        struct obj *o = fw_find(name, len);

        (void)ctx;
        if (o != NULL && view == KILN_AGENT_OBJ_COMPLETE && o->has_c) {
                ret->total_len = ret->received = o->clen;
                ret->flags = o->cflags;
                return KILN_OK;
        }
        if (o != NULL && view == KILN_AGENT_OBJ_PENDING && o->has_p) {
                ret->total_len = o->ptotal;
                ret->received = o->precv;
                ret->flags = o->pflags;
                return KILN_OK;
        }
        return KILN_E_NOT_FOUND;
}

static int fw_obj_read(void *ctx, const char *name, uint8_t len, enum kiln_agent_obj_view view,
                       uint32_t offset, uint8_t *out, size_t n)
{
        struct obj *o = fw_find(name, len);

        (void)ctx;
        CHECK(o != NULL);
        if (fw.fail & FAIL_OBJ_READ)
                return KILN_E_IO;
        if (view == KILN_AGENT_OBJ_COMPLETE) {
                CHECK(o->has_c && offset <= o->clen && n <= o->clen - offset);
                memcpy(out, o->c + offset, n);
        } else {
                CHECK(o->has_p && offset <= o->precv && n <= o->precv - offset);
                memcpy(out, o->p + offset, n);
        }
        return KILN_OK;
}

static int fw_obj_write(void *ctx, const char *name, uint8_t len, uint8_t flags, uint32_t total,
                        uint32_t offset, const uint8_t *d, size_t n)
{
        struct obj *o = fw_find(name, len);
        uint32_t used = 0;

        (void)ctx;
        if (fw.fail & FAIL_OBJ_WRITE)
                return KILN_E_IO;
        CHECK(offset <= total && n <= total - offset);
        if (offset == 0) {
                for (int i = 0; i < OBJS; i++) {
                        if (&fw.obj[i] == o)
                                continue;
                        used += fw.obj[i].has_c ? fw.obj[i].clen : 0;
                        used += fw.obj[i].has_p ? fw.obj[i].ptotal : 0;
                }
                used += (o && o->has_c) ? o->clen : 0;
                if (total > OBJ_CAP || used + total > STORE_CAP)
                        return KILN_E_NOSPACE;
                if (o == NULL) {
                        for (int i = 0; i < OBJS && o == NULL; i++)
                                if (fw.obj[i].name_len == 0)
                                        o = &fw.obj[i];
                        if (o == NULL)
                                return KILN_E_NOSPACE;
                        memcpy(o->name, name, len);
                        o->name_len = len;
                }
                o->has_p = 1;
                o->ptotal = total;
                o->precv = 0;
                o->pflags = flags;
        }
        /* the agent must only continue a matching write */
        CHECK(o != NULL && o->has_p && o->precv == offset && o->ptotal == total &&
              o->pflags == flags);
        memcpy(o->p + offset, d, n);
        o->precv += (uint32_t)n;
        if (o->precv == o->ptotal) {
                memcpy(o->c, o->p, o->ptotal);
                o->clen = o->ptotal;
                o->cflags = o->pflags;
                o->has_c = 1;
                o->has_p = 0;
        }
        return KILN_OK;
}

static int fw_fuse_describe(void *ctx, uint16_t i, struct kiln_agent_fuse_desc *ret)
{
        struct kiln_agent_fuse_desc d;

        (void)ctx;
        if (i >= FUSES)
                return KILN_E_NOT_FOUND;
        memset(&d, 0, sizeof(d));
        d.name_len = (uint8_t)strlen(fmap[i].name);
        memcpy(d.name, fmap[i].name, d.name_len);
        d.width_bits = fmap[i].width;
        if (fmap[i].wp >= 0 && (fw.fuse[fmap[i].wp][0] & 1))
                d.attributes |= KILN_FUSE_WRITE_PROTECTED;
        if (fmap[i].rp >= 0 && (fw.fuse[fmap[i].rp][0] & 1))
                d.attributes |= KILN_FUSE_READ_PROTECTED | KILN_FUSE_WRITE_PROTECTED;
        *ret = d;
        return KILN_OK;
}

static int fw_fuse_read(void *ctx, uint16_t i, uint8_t *out, size_t n)
{
        (void)ctx;
        CHECK(i < FUSES && n == (fmap[i].width + 7u) / 8u);
        memcpy(out, fw.fuse[i], n);
        /* a sloppy OTP controller: the agent must mask bits above the width */
        out[n - 1] |= 0x80;
        return KILN_OK;
}

static int fw_fuse_program(void *ctx, uint16_t i, const uint8_t *v, size_t n)
{
        (void)ctx;
        CHECK(i < FUSES && n == (fmap[i].width + 7u) / 8u);
        /* never called for a write-protected field, never with bits above the width */
        CHECK(!(fmap[i].wp >= 0 && (fw.fuse[fmap[i].wp][0] & 1)));
        CHECK(!(fmap[i].rp >= 0 && (fw.fuse[fmap[i].rp][0] & 1)));
        CHECK(fmap[i].width % 8u == 0 || (v[n - 1] >> (fmap[i].width % 8u)) == 0);
        if (fw.fail & FAIL_FUSE)
                return KILN_E_IO;
        for (size_t k = 0; k < n; k++)
                fw.fuse[i][k] |= v[k];
        return KILN_OK;
}

static int fw_keygen(void *ctx, uint8_t slot, uint8_t alg, uint8_t *pub, size_t cap,
                     size_t *ret_len)
{
        (void)ctx;
        CHECK(slot < SLOTS && alg == KILN_ALG_ECDSA_P256_SHA256 && cap >= 65);
        CHECK(fw.lifecycle == KILN_LC_MANUFACTURING || fw.lifecycle == KILN_LC_RMA);
        if (fw.fail & FAIL_KEYGEN)
                return KILN_E_TIMEOUT;
        pub[0] = 4;
        memset(pub + 1, 0x40 + slot, 64);
        fw.key[slot] = 1;
        *ret_len = 65;
        return KILN_OK;
}

static int fw_sign(void *ctx, uint8_t slot, enum kiln_agent_sign_purpose purpose,
                   const uint8_t digest[32], uint8_t *sig, size_t cap, size_t *ret_len,
                   uint8_t *ret_alg)
{
        (void)ctx;
        CHECK(purpose < KILN_AGENT_SIGN_PURPOSE_MAX && cap >= 64);
        if (slot >= SLOTS || !fw.key[slot])
                return KILN_E_NOT_FOUND;
        if (fw.fail & FAIL_SIGN)
                return KILN_E_CRYPTO;
        memcpy(sig, digest, 32);
        memcpy(sig + 32, digest, 32);
        *ret_len = 64;
        *ret_alg = KILN_ALG_ECDSA_P256_SHA256;
        return KILN_OK;
}

static int fw_lifecycle(void *ctx, uint8_t lc)
{
        (void)ctx;
        CHECK(lc >= KILN_LC_MANUFACTURING && lc < KILN_LC_MAX && lc != fw.lifecycle);
        if (fw.fail & FAIL_LIFECYCLE)
                return KILN_E_IO;
        fw.lifecycle = lc;
        return KILN_OK;
}

static int reset_seen;

static void fw_reset(void *ctx, uint8_t mode)
{
        (void)ctx;
        CHECK(mode == 0);
        reset_seen = 1;
}

static const struct kiln_agent_ops ops = {
        .write = fw_write,
        .random = fw_random,
        .get_info = fw_info,
        .obj_stat = fw_obj_stat,
        .obj_read = fw_obj_read,
        .obj_write = fw_obj_write,
        .fuse_describe = fw_fuse_describe,
        .fuse_read = fw_fuse_read,
        .fuse_program = fw_fuse_program,
        .key_generate = fw_keygen,
        .key_sign = fw_sign,
        .lifecycle_set = fw_lifecycle,
        .reset = fw_reset,
};

static void boot(void)
{
        struct kiln_agent_config cfg = {.ops = &ops,
                                        .rx_buf = rx,
                                        .rx_cap = sizeof(rx),
                                        .resp_buf = resp,
                                        .resp_cap = sizeof(resp),
                                        .max_payload = DEV_MAX};

        CHECK(kiln_agent_init(&cfg, &ag) == KILN_OK);
        reset_seen = 0;
}

/* Everything the agent sent since the last check is whole, well-formed response frames. */
static void check_output(void)
{
        struct kiln_decoder d;
        size_t off = 0;

        kiln_decoder_init(&d, hostbuf, sizeof(hostbuf), KILN_PAYLOAD_MAX);
        while (off < fw.out_len) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&d, fw.out + off, fw.out_len - off, &used, &f);

                off += used;
                CHECK(r != KILN_DEC_NEED_MORE || d.len == 0);
                if (r == KILN_DEC_NEED_MORE)
                        continue;
                CHECK(r == KILN_DEC_FRAME);
                CHECK(f.version == 1 && f.flags == KILN_FLAG_RESPONSE);
                CHECK(f.session == kiln_agent_session(&ag) && f.session != 0);
                CHECK(f.len <= DEV_MAX);
                /* a request of type 0x7F gets UNKNOWN_COMMAND under its own type and id */
                if (f.type == KILN_MSG_NAK && f.status == KILN_ST_OK) {
                        CHECK(f.request_id == 0 && f.len == 4);
                        CHECK(f.payload[0] >= KILN_NAK_CRC && f.payload[0] < KILN_NAK_MAX);
                } else if (f.status != KILN_ST_OK) {
                        CHECK(f.status < KILN_ST_MAX);
                        CHECK(f.len >= 5 && f.payload[4] <= KILN_ERRMSG_MAX &&
                              f.len == 5u + f.payload[4]);
                } else if (f.type == KILN_MSG_FUSE_READ || f.type == KILN_MSG_FUSE_PROGRAM) {
                        /* the value never shows bits above the width */
                        uint8_t nl = f.payload[0];
                        uint16_t w = kiln_le16(f.payload + 1 + nl);

                        CHECK(f.len == 5u + nl + (w + 7u) / 8u);
                        if (w % 8u)
                                CHECK((f.payload[f.len - 1] >> (w % 8u)) == 0);
                }
        }
        CHECK(d.len == 0);
        fw.out_len = 0;
}

static void feed(const uint8_t *p, size_t n)
{
        int r = kiln_agent_feed(&ag, p, n);

        CHECK(r == KILN_OK || r == KILN_AGENT_RESET || r == KILN_E_IO);
        CHECK((r == KILN_AGENT_RESET) == (reset_seen != 0));
        check_output();
        if (r == KILN_AGENT_RESET)
                boot();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static uint8_t wire[KILN_FRAME_WIRE_MAX(KILN_PAYLOAD_MAX)];
        uint8_t cfg;
        size_t off = 2;

        if (size < 2)
                return 0;
        memset(&fw, 0, sizeof(fw));
        cfg = data[0];
        fw.lifecycle = (uint8_t)(1 + ((cfg >> 1) & 3));
        boot();
        fw.fail = (cfg & 8) ? data[1] : 0;
        if (!(cfg & 1)) {
                size_t chunk = 1u + (cfg >> 4);

                while (off < size) {
                        size_t n = size - off < chunk ? size - off : chunk;

                        feed(data + off, n);
                        off += n;
                }
                return 0;
        }
        while (size - off >= 6) {
                struct kiln_frame f;
                uint32_t session = kiln_agent_session(&ag);
                uint16_t len = kiln_le16(data + off + 4);
                size_t n = 0;

                f.version = 1;
                f.type = data[off];
                f.flags = data[off + 1];
                f.status = 0;
                f.request_id = data[off + 3];
                switch (data[off + 2]) {
                case 0:
                        break;
                case 1:
                        session = 0;
                        break;
                case 2:
                        session ^= 1;
                        break;
                default:
                        if (size - off >= 10) {
                                session = kiln_le32(data + off + 6);
                                off += 4;
                        }
                        break;
                }
                off += 6;
                if (len > size - off)
                        len = (uint16_t)(size - off);
                f.session = session;
                f.len = len;
                f.payload = data + off;
                off += len;
                if (f.type == 0xEE) {
                        boot();
                        continue;
                }
                CHECK(kiln_frame_encode(&f, wire, sizeof(wire), &n) == KILN_OK);
                feed(wire, n);
        }
        return 0;
}
