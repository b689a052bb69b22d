/*
 * Device agent, driven in-process with fake firmware callbacks: the §8 vectors byte for byte, every
 * command and error status of docs/protocol.md, the response memory (§4.3), sessions, NAKs, the
 * lifecycle table, and the proof-of-possession and attestation signatures checked with OpenSSL
 * against the labelled messages built here independently.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "kiln/agent.h"
#include "kiln/endian.h"
#include "test_host.h"

#define DEV_MAX 4096u
#define FK_OUT_MAX (1u << 20)
#define FK_OBJS 6
#define FK_OBJ_CAP 8192u
#define FK_FUSES 11
#define FK_SLOTS 4

static const uint8_t vec_nonce[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
                                      0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78};
#define VEC_SESSION 0x78563412u

/* ---- fake firmware ---- */

struct fk_obj {
        char name[KILN_NAME_MAX];
        uint8_t name_len;
        int has_c, has_p;
        uint8_t cflags, pflags;
        uint32_t clen, ptotal, precv;
        uint8_t cdata[FK_OBJ_CAP], pdata[FK_OBJ_CAP];
};

static const struct {
        const char *name;
        uint16_t width;
        int wp_by, rp_by; /* index of the protecting field, -1 none */
} fk_map[FK_FUSES] = {
        {"sb_key_hash", 256, 1, -1}, {"sb_key_hash_wp", 1, -1, -1}, {"secure_boot", 1, -1, -1},
        {"debug_disable", 1, -1, -1}, {"rollback_min", 32, -1, -1}, {"flash_encrypt", 1, -1, -1},
        {"mac0", 48, 7, -1},         {"mac0_wp", 1, -1, -1},       {"hmac_key", 256, 9, 9},
        {"hmac_key_rp", 1, -1, -1},  {"customer_id", 32, -1, -1},
};

struct fake {
        uint8_t out[FK_OUT_MAX];
        size_t out_len;
        unsigned rand_calls;
        int rand_zero_first; /* first nonce draw gives session 0 */
        uint8_t lifecycle;
        uint8_t uid[16];
        struct fk_obj obj[FK_OBJS];
        uint32_t store_cap;
        uint8_t fuse[FK_FUSES][64];
        EVP_PKEY *key[FK_SLOTS];
        /* failure switches */
        int fail_write, fail_random, fail_info, bad_info, fail_obj_write, busy_obj_write;
        int fail_fuse_program, fail_keygen, fail_sign, fail_lifecycle, bad_pub, bad_sig;
        /* call counters */
        unsigned n_obj_write, n_fuse_program, n_keygen, n_sign, n_lifecycle, n_reset, n_trace_rx;
        uint8_t reset_mode;
};

static struct fake *fk;
static struct kiln_agent ag;
static uint8_t rx_buf[KILN_AGENT_RX_SIZE(DEV_MAX)];
static uint8_t resp_buf[KILN_AGENT_RESP_SIZE(DEV_MAX)];
static struct th_frame rf[8];
static uint32_t next_rid = 100;

static int fk_write(void *ctx, const uint8_t *p, size_t n)
{
        struct fake *f = ctx;

        if (f->fail_write)
                return KILN_E_IO;
        assert_true(n <= FK_OUT_MAX - f->out_len);
        memcpy(f->out + f->out_len, p, n);
        f->out_len += n;
        return KILN_OK;
}

static int fk_random(void *ctx, uint8_t *out, size_t n)
{
        struct fake *f = ctx;

        if (f->fail_random)
                return KILN_E_IO;
        f->rand_calls++;
        if (f->rand_zero_first && f->rand_calls == 1) {
                memset(out, 0, n);
                return KILN_OK;
        }
        if (n == 16 && f->rand_calls == (f->rand_zero_first ? 2u : 1u)) {
                memcpy(out, vec_nonce, 16);
                return KILN_OK;
        }
        for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t)(0xA0 + f->rand_calls + i);
        return KILN_OK;
}

static int fk_bit(int field, unsigned bit)
{
        return (fk->fuse[field][bit / 8] >> (bit % 8)) & 1;
}

static int fk_get_info(void *ctx, struct kiln_agent_info *ret)
{
        struct fake *f = ctx;
        struct kiln_agent_info in;

        if (f->fail_info)
                return KILN_E_IO;
        memset(&in, 0, sizeof(in));
        memcpy(in.chip_uid, f->uid, sizeof(f->uid));
        in.chip_uid_len = sizeof(f->uid);
        memcpy(in.product_id, "smartplug-a1", 12);
        in.product_id_len = 12;
        in.hw_revision = 2;
        memcpy(in.fw_version, "1.2.3", 5);
        in.fw_version_len = 5;
        memset(in.fw_sha256, 0x5A, 32);
        in.lifecycle = f->lifecycle;
        in.debug_port = fk_bit(3, 0) ? KILN_DEBUG_CLOSED : KILN_DEBUG_OPEN;
        in.secure_boot = (uint8_t)fk_bit(2, 0);
        in.key_slots = FK_SLOTS;
        for (int i = 0; i < FK_SLOTS; i++)
                if (f->key[i])
                        in.key_present |= (uint16_t)(1u << i);
        if (f->bad_info)
                in.chip_uid_len = 0;
        *ret = in;
        return KILN_OK;
}

static struct fk_obj *fk_find(struct fake *f, const char *name, uint8_t len)
{
        for (int i = 0; i < FK_OBJS; i++)
                if (f->obj[i].name_len == len && memcmp(f->obj[i].name, name, len) == 0)
                        return &f->obj[i];
        return NULL;
}

static int fk_obj_stat(void *ctx, const char *name, uint8_t len, enum kiln_agent_obj_view view,
                       struct kiln_agent_obj_stat *ret)
{
        struct fk_obj *o = fk_find(ctx, name, len);

        if (o == NULL)
                return KILN_E_NOT_FOUND;
        if (view == KILN_AGENT_OBJ_COMPLETE && o->has_c) {
                ret->total_len = o->clen;
                ret->received = o->clen;
                ret->flags = o->cflags;
                return KILN_OK;
        }
        if (view == KILN_AGENT_OBJ_PENDING && o->has_p) {
                ret->total_len = o->ptotal;
                ret->received = o->precv;
                ret->flags = o->pflags;
                return KILN_OK;
        }
        return KILN_E_NOT_FOUND;
}

static int fk_obj_read(void *ctx, const char *name, uint8_t len, enum kiln_agent_obj_view view,
                       uint32_t offset, uint8_t *out, size_t n)
{
        struct fk_obj *o = fk_find(ctx, name, len);

        assert_non_null(o);
        if (view == KILN_AGENT_OBJ_COMPLETE) {
                assert_true(o->has_c && offset + n <= o->clen);
                memcpy(out, o->cdata + offset, n);
        } else {
                assert_true(o->has_p && offset + n <= o->precv);
                memcpy(out, o->pdata + offset, n);
        }
        return KILN_OK;
}

static int fk_obj_write(void *ctx, const char *name, uint8_t len, uint8_t flags, uint32_t total,
                        uint32_t offset, const uint8_t *data, size_t n)
{
        struct fake *f = ctx;
        struct fk_obj *o = fk_find(f, name, len);

        f->n_obj_write++;
        if (f->busy_obj_write)
                return KILN_E_TIMEOUT;
        if (f->fail_obj_write)
                return KILN_E_IO;
        if (total > f->store_cap)
                return KILN_E_NOSPACE;
        if (o == NULL) {
                for (int i = 0; i < FK_OBJS && o == NULL; i++)
                        if (f->obj[i].name_len == 0)
                                o = &f->obj[i];
                if (o == NULL)
                        return KILN_E_NOSPACE;
                memcpy(o->name, name, len);
                o->name_len = len;
        }
        if (offset == 0) {
                o->has_p = 1;
                o->ptotal = total;
                o->precv = 0;
                o->pflags = flags;
        }
        assert_true(o->has_p && o->precv == offset && o->ptotal == total && o->pflags == flags);
        memcpy(o->pdata + offset, data, n);
        o->precv += (uint32_t)n;
        if (o->precv == o->ptotal) {
                memcpy(o->cdata, o->pdata, o->ptotal);
                o->clen = o->ptotal;
                o->cflags = o->pflags;
                o->has_c = 1;
                o->has_p = 0;
        }
        return KILN_OK;
}

static int fk_fuse_describe(void *ctx, uint16_t index, struct kiln_agent_fuse_desc *ret)
{
        struct kiln_agent_fuse_desc d;

        (void)ctx;
        if (index >= FK_FUSES)
                return KILN_E_NOT_FOUND;
        memset(&d, 0, sizeof(d));
        d.name_len = (uint8_t)strlen(fk_map[index].name);
        memcpy(d.name, fk_map[index].name, d.name_len);
        d.width_bits = fk_map[index].width;
        if (fk_map[index].wp_by >= 0 && fk_bit(fk_map[index].wp_by, 0))
                d.attributes |= KILN_FUSE_WRITE_PROTECTED;
        if (fk_map[index].rp_by >= 0 && fk_bit(fk_map[index].rp_by, 0))
                d.attributes |= KILN_FUSE_READ_PROTECTED;
        *ret = d;
        return KILN_OK;
}

static int fk_fuse_read(void *ctx, uint16_t index, uint8_t *out, size_t n)
{
        struct fake *f = ctx;

        assert_true(index < FK_FUSES && n == (fk_map[index].width + 7u) / 8u);
        memcpy(out, f->fuse[index], n);
        return KILN_OK;
}

static int fk_fuse_program(void *ctx, uint16_t index, const uint8_t *value, size_t n)
{
        struct fake *f = ctx;

        f->n_fuse_program++;
        if (f->fail_fuse_program)
                return KILN_E_IO;
        assert_true(index < FK_FUSES && n == (fk_map[index].width + 7u) / 8u);
        for (size_t i = 0; i < n; i++)
                f->fuse[index][i] |= value[i];
        return KILN_OK;
}

static int fk_key_generate(void *ctx, uint8_t slot, uint8_t alg, uint8_t *pub, size_t cap,
                           size_t *ret_len)
{
        struct fake *f = ctx;
        EVP_PKEY *k;
        size_t n = 0;

        f->n_keygen++;
        assert_int_equal(alg, KILN_ALG_ECDSA_P256_SHA256);
        assert_true(slot < FK_SLOTS);
        if (f->fail_keygen)
                return KILN_E_IO;
        k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        assert_non_null(k);
        assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, cap, &n),
                         1);
        if (f->bad_pub)
                n = 33;
        EVP_PKEY_free(f->key[slot]);
        f->key[slot] = k;
        *ret_len = n;
        return KILN_OK;
}

static int fk_key_sign(void *ctx, uint8_t slot, enum kiln_agent_sign_purpose purpose,
                       const uint8_t digest[32], uint8_t *sig, size_t cap, size_t *ret_len,
                       uint8_t *ret_alg)
{
        struct fake *f = ctx;
        unsigned char der[80];
        const unsigned char *dp = der;
        size_t der_len = sizeof(der);
        EVP_PKEY_CTX *c;
        ECDSA_SIG *es;
        const BIGNUM *r, *s;

        (void)purpose;
        f->n_sign++;
        if (f->fail_sign)
                return KILN_E_IO;
        if (slot >= FK_SLOTS || f->key[slot] == NULL)
                return KILN_E_NOT_FOUND;
        assert_true(cap >= 64);
        c = EVP_PKEY_CTX_new(f->key[slot], NULL);
        assert_non_null(c);
        assert_int_equal(EVP_PKEY_sign_init(c), 1);
        assert_int_equal(EVP_PKEY_sign(c, der, &der_len, digest, 32), 1);
        EVP_PKEY_CTX_free(c);
        es = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
        assert_non_null(es);
        ECDSA_SIG_get0(es, &r, &s);
        BN_bn2binpad(r, sig, 32);
        BN_bn2binpad(s, sig + 32, 32);
        ECDSA_SIG_free(es);
        *ret_len = f->bad_sig ? 63 : 64;
        *ret_alg = KILN_ALG_ECDSA_P256_SHA256;
        return KILN_OK;
}

static int fk_lifecycle_set(void *ctx, uint8_t lc)
{
        struct fake *f = ctx;

        f->n_lifecycle++;
        if (f->fail_lifecycle)
                return KILN_E_IO;
        f->lifecycle = lc;
        return KILN_OK;
}

static void fk_reset(void *ctx, uint8_t mode)
{
        struct fake *f = ctx;

        f->n_reset++;
        f->reset_mode = mode;
}

static void fk_trace(void *ctx, const struct kiln_agent_event *ev)
{
        struct fake *f = ctx;

        if (ev->kind == KILN_AGENT_EV_RX)
                f->n_trace_rx++;
}

static const struct kiln_agent_ops fk_ops = {
        .write = fk_write,
        .random = fk_random,
        .get_info = fk_get_info,
        .obj_stat = fk_obj_stat,
        .obj_read = fk_obj_read,
        .obj_write = fk_obj_write,
        .fuse_describe = fk_fuse_describe,
        .fuse_read = fk_fuse_read,
        .fuse_program = fk_fuse_program,
        .key_generate = fk_key_generate,
        .key_sign = fk_key_sign,
        .lifecycle_set = fk_lifecycle_set,
        .reset = fk_reset,
        .trace = fk_trace,
};

static struct kiln_agent_config fk_config(const struct kiln_agent_ops *ops)
{
        struct kiln_agent_config cfg = {
                .ops = ops,
                .ctx = fk,
                .rx_buf = rx_buf,
                .rx_cap = sizeof(rx_buf),
                .resp_buf = resp_buf,
                .resp_cap = sizeof(resp_buf),
                .max_payload = DEV_MAX,
                .name = NULL,
        };
        return cfg;
}

static int setup(void **state)
{
        struct kiln_agent_config cfg;

        (void)state;
        fk = calloc(1, sizeof(*fk));
        if (fk == NULL)
                return -1;
        fk->lifecycle = KILN_LC_MANUFACTURING;
        for (int i = 0; i < 16; i++)
                fk->uid[i] = (uint8_t)(0xC0 + i);
        fk->store_cap = FK_OBJ_CAP;
        cfg = fk_config(&fk_ops);
        return kiln_agent_init(&cfg, &ag) == KILN_OK ? 0 : -1;
}

static int teardown(void **state)
{
        (void)state;
        for (int i = 0; i < FK_SLOTS; i++)
                EVP_PKEY_free(fk->key[i]);
        free(fk);
        fk = NULL;
        return 0;
}

/* ---- host side of the exchange ---- */

/* Feed raw bytes; returns the number of frames the agent sent (decoded into rf[]). */
static size_t feed_raw(const uint8_t *p, size_t n)
{
        int r;

        fk->out_len = 0;
        r = kiln_agent_feed(&ag, p, n);
        assert_true(r == KILN_OK || r == KILN_AGENT_RESET);
        return th_decode_all(fk->out, fk->out_len, rf, 8, NULL);
}

/* Send one request and return its single response, checking the header echo. */
static struct th_frame *xfer(uint8_t type, uint8_t flags, uint32_t session, uint32_t rid,
                             const struct th_pb *pb)
{
        static uint8_t wire[KILN_FRAME_WIRE_MAX(TH_PAYLOAD_MAX)];
        size_t n = th_encode(type, flags, session, rid, pb ? pb->b : NULL, pb ? pb->n : 0, wire,
                             sizeof(wire));

        assert_true(n > 0);
        assert_int_equal(feed_raw(wire, n), 1);
        assert_int_equal(rf[0].version, 1);
        assert_int_equal(rf[0].type, type);
        assert_int_equal(rf[0].flags, KILN_FLAG_RESPONSE);
        assert_int_equal(rf[0].request_id, rid);
        assert_int_equal(rf[0].session, kiln_agent_session(&ag));
        return &rf[0];
}

static struct th_frame *cmd(uint8_t type, const struct th_pb *pb)
{
        return xfer(type, 0, kiln_agent_session(&ag), next_rid++, pb);
}

static void expect_error(const struct th_frame *f, uint8_t status, uint32_t detail)
{
        uint32_t d = 0xFFFFFFFFu;
        char msg[65];

        assert_int_equal(f->status, status);
        assert_true(th_error_payload(f, &d, msg));
        assert_int_equal(d, detail);
        assert_true(strlen(msg) > 0);
}

static struct th_frame *cmd_expect(uint8_t type, const struct th_pb *pb, uint8_t status)
{
        struct th_frame *f = cmd(type, pb);

        if (status == KILN_ST_OK)
                assert_int_equal(f->status, KILN_ST_OK);
        else
                expect_error(f, status, 0);
        return f;
}

static void hello(uint32_t host_max)
{
        struct th_pb pb;
        struct th_frame *f;

        th_hello_payload(&pb, 1, 1, host_max);
        f = xfer(KILN_MSG_HELLO, 0, 0, next_rid++, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
}

static void name_only(struct th_pb *pb, const char *name)
{
        th_pb_reset(pb);
        th_pb_name(pb, name);
}

static void u8_only(struct th_pb *pb, uint8_t v)
{
        th_pb_reset(pb);
        th_pb_u8(pb, v);
}

static void keygen_payload(struct th_pb *pb, uint8_t slot, uint8_t alg, const uint8_t nonce[32])
{
        th_pb_reset(pb);
        th_pb_u8(pb, slot);
        th_pb_u8(pb, alg);
        th_pb_le16(pb, 0);
        th_pb_bytes(pb, nonce, 32);
}

static void attest_payload(struct th_pb *pb, uint8_t slot, const uint8_t nonce[32])
{
        th_pb_reset(pb);
        th_pb_u8(pb, slot);
        th_pb_u8(pb, 0);
        th_pb_le16(pb, 0);
        th_pb_bytes(pb, nonce, 32);
}

static void write_object(const char *name, uint8_t flags, const uint8_t *data, uint32_t len)
{
        struct th_pb pb;
        struct th_frame *f;

        th_write_payload(&pb, name, flags, len, 0, data, len);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), len);
        assert_int_equal(f->payload[4], 1);
}

static uint8_t ascii_hexwire(const char *hex, uint8_t *out, size_t cap, size_t *ret_len)
{
        return (uint8_t)th_hex(hex, out, cap, ret_len);
}

/* ---- SHA-256 ---- */

static void test_sha256(void **state)
{
        static uint8_t buf[1000];
        uint8_t a[32], b[32];
        struct kiln_agent_sha256 h;

        (void)state;
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t)(i * 7 + 3);
        /* every length around the block and padding boundaries, fed in uneven pieces */
        for (size_t n = 0; n < 300; n++) {
                kiln_agent_sha256_init(&h);
                kiln_agent_sha256_update(buf, n / 3, &h);
                kiln_agent_sha256_update(buf + n / 3, n - n / 3, &h);
                kiln_agent_sha256_final(&h, a);
                th_sha256(buf, n, b);
                assert_memory_equal(a, b, 32);
        }
        kiln_agent_sha256_init(&h);
        kiln_agent_sha256_update("abc", 3, &h);
        kiln_agent_sha256_final(&h, a);
        th_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", b, 32,
               &(size_t){0});
        assert_memory_equal(a, b, 32);
}

/* ---- init ---- */

static void test_init_config(void **state)
{
        struct kiln_agent_config cfg;
        struct kiln_agent a2;
        struct kiln_agent_ops ops;

        (void)state;
        cfg = fk_config(&fk_ops);
        cfg.max_payload = 255;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        cfg = fk_config(&fk_ops);
        cfg.max_payload = KILN_PAYLOAD_MAX + 1;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        cfg = fk_config(&fk_ops);
        cfg.rx_cap = KILN_AGENT_RX_SIZE(DEV_MAX) - 1;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        cfg = fk_config(&fk_ops);
        cfg.resp_cap = DEV_MAX - 1;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        cfg = fk_config(&fk_ops);
        cfg.name = "bad name";
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        cfg = fk_config(&fk_ops);
        cfg.name = "x23456789012345678901234567890123";
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        ops = fk_ops;
        ops.obj_read = NULL;
        cfg = fk_config(&ops);
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        ops = fk_ops;
        ops.fuse_read = NULL;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        ops = fk_ops;
        ops.random = NULL;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INVAL);
        assert_int_equal(kiln_agent_init(NULL, &a2), KILN_E_INVAL);
        /* random source failure */
        fk->fail_random = 1;
        cfg = fk_config(&fk_ops);
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_E_INTERNAL);
        fk->fail_random = 0;
        /* a nonce giving session 0 is drawn again */
        fk->rand_calls = 0;
        fk->rand_zero_first = 1;
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_OK);
        assert_int_equal(kiln_agent_session(&a2), VEC_SESSION);
        assert_int_equal(fk->rand_calls, 2);
        /* exactly the minimum buffers */
        cfg.rx_cap = KILN_AGENT_RX_SIZE(DEV_MAX);
        cfg.resp_cap = KILN_AGENT_RESP_SIZE(DEV_MAX);
        assert_int_equal(kiln_agent_init(&cfg, &a2), KILN_OK);
}

/* ---- §8 vectors ---- */

static const char *v81 = "0003010101010101010201010102080101030101010102100105b228946600";
static const char *v82 =
        "00040101010612345678010101022f010102010101010210010102100112123456789abcdef00f1e2d3c4b"
        "5a69783f0101140e6b696c6e2d6167656e742d312e30a22b986c00";
static const char *v83 = "0004017f010512345678010101020401010201010105cce2353900";
static const char *v84 = "000301040106123456780301010225010106046365727401010101020401010202010210"
                         "010101140102030405060708090a0b0c0d0e0f1fac179200";
static const char *v85 = "000401040106123456780301010208010103100201010101010552d65c2a00";
static const char *v86 = "000a01040106123456780401010214010101020201150f6f6666736574206d69736d6174"
                         "636871cc1b6700";
static const char *v87 = "0003010801061234567809010102100101150d64656275675f64697361626c6501014418"
                         "448000";
static const char *v88 = "0004010801061234567809010102130101100d64656275675f64697361626c6501010701"
                         "0108b52ee500";

static void expect_wire(const char *hex)
{
        uint8_t want[256];
        size_t n = 0;

        assert_true(ascii_hexwire(hex, want, sizeof(want), &n));
        assert_int_equal(fk->out_len, n);
        assert_memory_equal(fk->out, want, n);
}

static void feed_hex(const char *hex)
{
        uint8_t wire[256];
        size_t n = 0;

        assert_true(ascii_hexwire(hex, wire, sizeof(wire), &n));
        fk->out_len = 0;
        assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_OK);
}

static void test_vector_hello(void **state)
{
        struct th_pb pb;
        uint8_t wire[64];
        size_t n;

        (void)state;
        /* our own host framing gives 8.1 too */
        th_hello_payload(&pb, 1, 1, 4096);
        n = th_encode(KILN_MSG_HELLO, 0, 0, 1, pb.b, pb.n, wire, sizeof(wire));
        fk->out_len = 0;
        assert_int_equal(kiln_agent_session(&ag), VEC_SESSION);
        feed_hex(v81);
        expect_wire(v82);
        {
                uint8_t want[64];
                size_t wn = 0;

                assert_true(ascii_hexwire(v81, want, sizeof(want), &wn));
                assert_int_equal(n, wn);
                assert_memory_equal(wire, want, n);
        }
        /* HELLO has no side effects: a second one gives the same bytes */
        feed_hex(v81);
        expect_wire(v82);
}

static void test_vector_nak(void **state)
{
        uint8_t wire[64];
        size_t n = 0;

        (void)state;
        assert_true(ascii_hexwire(v81, wire, sizeof(wire), &n));
        wire[n - 2] ^= 0x01; /* last CRC byte: COBS stays valid, the CRC does not */
        fk->out_len = 0;
        assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_OK);
        expect_wire(v83);
}

static void hold_512_of_cert(void)
{
        uint8_t data[512];
        struct th_pb pb;
        struct th_frame *f;

        for (int i = 0; i < 512; i++)
                data[i] = (uint8_t)i;
        hello(4096);
        th_write_payload(&pb, "cert", 0, 1024, 0, data, 512);
        f = xfer(KILN_MSG_WRITE_OBJECT, 0, VEC_SESSION, 2, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 512);
}

static void test_vector_write(void **state)
{
        (void)state;
        hold_512_of_cert();
        feed_hex(v84); /* request 3: 16 bytes at offset 512 of 1024 */
        expect_wire(v85);
        assert_int_equal(fk->n_obj_write, 2);
        /* the retransmission (same bytes) is answered from memory, byte for byte */
        feed_hex(v84);
        expect_wire(v85);
        assert_int_equal(fk->n_obj_write, 2);
}

static void test_vector_offset(void **state)
{
        uint8_t data[16];
        struct th_pb pb;

        (void)state;
        hold_512_of_cert();
        memset(data, 0xEE, sizeof(data));
        th_write_payload(&pb, "cert", 0, 1024, 100, data, 16);
        (void)xfer(KILN_MSG_WRITE_OBJECT, 0, VEC_SESSION, 4, &pb);
        expect_wire(v86);
        assert_int_equal(fk->n_obj_write, 1); /* nothing stored */
}

static void test_vector_fuse(void **state)
{
        (void)state;
        feed_hex(v87);
        expect_wire(v88);
        assert_int_equal(fk->n_fuse_program, 1);
        assert_int_equal(fk->fuse[3][0], 1);
        /* retried with RETRY set: answered from memory, not programmed again */
        {
                uint8_t wire[64], want[64];
                size_t n = 0, wn = 0;
                struct th_pb pb;

                th_fuse_program_payload(&pb, "debug_disable", "\x01", 1);
                n = th_encode(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 9, pb.b, pb.n,
                              wire, sizeof(wire));
                fk->out_len = 0;
                assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_OK);
                assert_true(ascii_hexwire(v88, want, sizeof(want), &wn));
                assert_int_equal(fk->out_len, wn);
                assert_memory_equal(fk->out, want, wn);
        }
        assert_int_equal(fk->n_fuse_program, 1);
}

/* ---- response memory, sessions, NAK ---- */

static void test_retry_executes_once(void **state)
{
        struct th_pb pb;
        uint8_t first[512], data[40], nonce[32];
        size_t first_len;
        struct th_frame *f;

        (void)state;
        hello(4096);
        memset(data, 0x11, sizeof(data));
        th_write_payload(&pb, "cred", KILN_OBJ_SECRET, 40, 0, data, 40);
        f = xfer(KILN_MSG_WRITE_OBJECT, 0, VEC_SESSION, 50, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;
        for (int i = 0; i < 3; i++) {
                f = xfer(KILN_MSG_WRITE_OBJECT, KILN_FLAG_RETRY, VEC_SESSION, 50, &pb);
                assert_int_equal(fk->out_len, first_len);
                assert_memory_equal(fk->out, first, first_len);
        }
        assert_int_equal(fk->n_obj_write, 1);

        /* a failed request fails again with the same answer, without executing */
        th_fuse_program_payload(&pb, "customer_id", "\x01\x00\x00", 3);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 51, &pb);
        expect_error(f, KILN_ST_MALFORMED, 0);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;
        f = xfer(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 51, &pb);
        assert_memory_equal(fk->out, first, first_len);

        /* KEYGEN retried: one key generated, the same public key and proof returned */
        memset(nonce, 0x42, sizeof(nonce));
        keygen_payload(&pb, 1, 1, nonce);
        f = xfer(KILN_MSG_KEYGEN, 0, VEC_SESSION, 52, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;
        f = xfer(KILN_MSG_KEYGEN, KILN_FLAG_RETRY, VEC_SESSION, 52, &pb);
        assert_int_equal(fk->out_len, first_len);
        assert_memory_equal(fk->out, first, first_len);
        assert_int_equal(fk->n_keygen, 1);
        assert_int_equal(fk->n_sign, 1);
}

static void test_reqid_reuse(void **state)
{
        struct th_pb pb, other;
        uint8_t first[256];
        size_t first_len;
        struct th_frame *f;

        (void)state;
        th_fuse_program_payload(&pb, "customer_id", "\x01\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 7, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;
        /* same id, different payload */
        th_fuse_program_payload(&other, "customer_id", "\x02\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 7, &other);
        expect_error(f, KILN_ST_REQID_REUSE, 0);
        /* same id, different type */
        name_only(&other, "customer_id");
        f = xfer(KILN_MSG_FUSE_READ, 0, VEC_SESSION, 7, &other);
        expect_error(f, KILN_ST_REQID_REUSE, 0);
        /* same id, same payload length but other bytes (the CRC differs) */
        th_fuse_program_payload(&other, "customer_iD", "\x01\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 7, &other);
        expect_error(f, KILN_ST_REQID_REUSE, 0);
        assert_int_equal(fk->n_fuse_program, 1);
        assert_int_equal(fk->fuse[10][0], 1);
        /* the memory was kept */
        (void)xfer(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 7, &pb);
        assert_int_equal(fk->out_len, first_len);
        assert_memory_equal(fk->out, first, first_len);
        assert_int_equal(fk->n_fuse_program, 1);
}

static void test_session(void **state)
{
        struct th_pb pb;
        uint8_t first[256];
        size_t first_len;
        struct th_frame *f;

        (void)state;
        th_fuse_program_payload(&pb, "customer_id", "\x10\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 20, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;
        /* a stale session: not executed, answered SESSION with the current session id */
        th_fuse_program_payload(&pb, "customer_id", "\x20\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION + 1, 21, &pb);
        expect_error(f, KILN_ST_SESSION, 0);
        assert_int_equal(f->session, VEC_SESSION);
        f = xfer(KILN_MSG_GET_INFO, 0, 0, 22, NULL);
        expect_error(f, KILN_ST_SESSION, 0);
        /* even with the remembered request id */
        th_fuse_program_payload(&pb, "customer_id", "\x10\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, 0x12345678u, 20, &pb);
        expect_error(f, KILN_ST_SESSION, 0);
        assert_int_equal(fk->n_fuse_program, 1);
        assert_int_equal(fk->fuse[10][0], 0x10);
        /* the memory is untouched by SESSION answers */
        (void)xfer(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 20, &pb);
        assert_memory_equal(fk->out, first, first_len);
        assert_int_equal(fk->n_fuse_program, 1);
}

static void test_hello_clears_memory(void **state)
{
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        th_fuse_program_payload(&pb, "customer_id", "\x01\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 30, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        hello(4096);
        f = xfer(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 30, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        assert_int_equal(fk->n_fuse_program, 2);
        /* a HELLO with a remembered request id is executed too (it never uses the memory) */
        th_hello_payload(&pb, 1, 1, 4096);
        f = xfer(KILN_MSG_HELLO, 0, 0, 30, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
}

static void test_nak(void **state)
{
        uint8_t wire[KILN_FRAME_WIRE_MAX(300) + 400], raw[300];
        struct th_pb pb;
        size_t n;
        struct th_frame *f;
        uint8_t first[128];
        size_t first_len;

        (void)state;
        /* remember a response first; NAKs must not disturb it */
        th_fuse_program_payload(&pb, "customer_id", "\x04\x00\x00\x00", 4);
        f = xfer(KILN_MSG_FUSE_PROGRAM, 0, VEC_SESSION, 40, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        memcpy(first, fk->out, fk->out_len);
        first_len = fk->out_len;

        /* CRC */
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 41, NULL, 0, wire, sizeof(wire));
        wire[3] ^= 0x40;
        assert_int_equal(feed_raw(wire, n), 1);
        assert_int_equal(rf[0].type, KILN_MSG_NAK);
        assert_int_equal(rf[0].request_id, 0);
        assert_int_equal(rf[0].session, VEC_SESSION);
        assert_int_equal(rf[0].len, 4);
        assert_memory_equal(rf[0].payload, "\x01\x00\x00\x00", 4);

        /* FORMAT: too short (valid COBS, 5 bytes) */
        memcpy(wire, "\x00\x06\x01\x02\x03\x04\x05\x00", 8);
        assert_int_equal(feed_raw(wire, 8), 1);
        assert_int_equal(rf[0].payload[0], KILN_NAK_FORMAT);
        /* FORMAT: invalid COBS (code byte runs past the end) */
        memcpy(wire, "\x00\x09\x01\x02\x00", 5);
        assert_int_equal(feed_raw(wire, 5), 1);
        assert_int_equal(rf[0].payload[0], KILN_NAK_FORMAT);
        /* FORMAT: length field disagrees with the frame (CRC valid) */
        {
                uint8_t fr[24];
                uint32_t crc;
                size_t cn = 0;

                memset(fr, 0, sizeof(fr));
                fr[0] = 1;
                fr[1] = KILN_MSG_GET_INFO;
                kiln_put_le32(fr + 4, VEC_SESSION);
                kiln_put_le32(fr + 8, 42);
                kiln_put_le32(fr + 12, 3); /* says 3, carries 0 */
                crc = kiln_crc32c(0, fr, 16);
                kiln_put_le32(fr + 16, crc);
                wire[0] = 0;
                assert_int_equal(kiln_cobs_encode(fr, 20, wire + 1, sizeof(wire) - 2, &cn),
                                 KILN_OK);
                wire[cn + 1] = 0;
                assert_int_equal(feed_raw(wire, cn + 2), 1);
                assert_int_equal(rf[0].payload[0], KILN_NAK_FORMAT);
                /* VERSION: version 2, CRC valid */
                fr[0] = 2;
                kiln_put_le32(fr + 12, 0);
                kiln_put_le32(fr + 16, kiln_crc32c(0, fr, 16));
                assert_int_equal(kiln_cobs_encode(fr, 20, wire + 1, sizeof(wire) - 2, &cn),
                                 KILN_OK);
                wire[cn + 1] = 0;
                assert_int_equal(feed_raw(wire, cn + 2), 1);
                assert_int_equal(rf[0].payload[0], KILN_NAK_VERSION);
        }
        /* TOO_LARGE: a 257-byte payload before HELLO; 256 is accepted */
        memset(raw, 0, sizeof(raw));
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 43, raw, 257, wire, sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 1);
        assert_int_equal(rf[0].type, KILN_MSG_NAK);
        assert_int_equal(rf[0].payload[0], KILN_NAK_TOO_LARGE);
        /* TOO_LARGE: an overlong candidate (boot-log text longer than any frame) */
        memset(wire, 'x', 400);
        wire[0] = 0;
        wire[399] = 0;
        assert_int_equal(feed_raw(wire, 400), 1);
        assert_int_equal(rf[0].payload[0], KILN_NAK_TOO_LARGE);
        /* boot-log text (shorter): FORMAT; empty candidates: nothing */
        assert_int_equal(feed_raw((const uint8_t *)"\0boot: rom v2\r\n\0\0\0", 19), 1);
        assert_int_equal(rf[0].payload[0], KILN_NAK_FORMAT);
        assert_int_equal(feed_raw((const uint8_t *)"\0\0\0\0", 4), 0);

        /* the retransmission after all these NAKs is still answered from memory */
        (void)xfer(KILN_MSG_FUSE_PROGRAM, KILN_FLAG_RETRY, VEC_SESSION, 40, &pb);
        assert_int_equal(fk->out_len, first_len);
        assert_memory_equal(fk->out, first, first_len);
        assert_int_equal(fk->n_fuse_program, 1);
        /* a 256-byte payload is accepted before HELLO (and this GET_INFO is MALFORMED) */
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 44, raw, 256, wire, sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 1);
        expect_error(&rf[0], KILN_ST_MALFORMED, 0);
}

static void test_stream_handling(void **state)
{
        uint8_t wire[512];
        size_t n, m;
        struct th_pb pb;

        (void)state;
        /* byte by byte, with noise and a frame split anywhere */
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 60, NULL, 0, wire, sizeof(wire));
        fk->out_len = 0;
        for (size_t i = 0; i < n; i++)
                assert_int_equal(kiln_agent_feed(&ag, wire + i, 1), KILN_OK);
        assert_int_equal(th_decode_all(fk->out, fk->out_len, rf, 8, NULL), 1);
        assert_int_equal(rf[0].status, KILN_ST_OK);
        /* two requests in one feed: two answers, in order */
        m = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 61, NULL, 0, wire, sizeof(wire));
        u8_only(&pb, KILN_LC_MANUFACTURING);
        m += th_encode(KILN_MSG_SET_LIFECYCLE, 0, VEC_SESSION, 62, pb.b, pb.n, wire + m,
                       sizeof(wire) - m);
        assert_int_equal(feed_raw(wire, m), 2);
        assert_int_equal(rf[0].request_id, 61);
        assert_int_equal(rf[1].request_id, 62);
        assert_int_equal(rf[1].type, KILN_MSG_SET_LIFECYCLE);
        /* a frame with RESPONSE set (our own output echoed back) is never answered */
        n = th_encode(KILN_MSG_GET_INFO, KILN_FLAG_RESPONSE, VEC_SESSION, 63, NULL, 0, wire,
                      sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 0);
        /* a write failure is reported, and input is still consumed */
        fk->fail_write = 1;
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 64, NULL, 0, wire, sizeof(wire));
        assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_E_IO);
        fk->fail_write = 0;
        assert_int_equal(fk->n_trace_rx, 5);
}

/* ---- HELLO ---- */

static void test_hello(void **state)
{
        struct th_pb pb;
        struct th_frame *f;
        uint8_t raw[400], wire[KILN_FRAME_WIRE_MAX(400)];
        size_t n;

        (void)state;
        th_hello_payload(&pb, 2, 3, 4096);
        f = xfer(KILN_MSG_HELLO, 0, 0, 1, &pb);
        expect_error(f, KILN_ST_VERSION, 0);
        th_hello_payload(&pb, 2, 1, 4096); /* empty range */
        f = xfer(KILN_MSG_HELLO, 0, 0, 2, &pb);
        expect_error(f, KILN_ST_VERSION, 0);
        th_hello_payload(&pb, 0, 0, 4096);
        f = xfer(KILN_MSG_HELLO, 0, 0, 3, &pb);
        expect_error(f, KILN_ST_VERSION, 0);
        th_hello_payload(&pb, 1, 1, 255);
        f = xfer(KILN_MSG_HELLO, 0, 0, 4, &pb);
        expect_error(f, KILN_ST_MALFORMED, 0);
        th_hello_payload(&pb, 1, 1, 4096);
        pb.n = 7;
        f = xfer(KILN_MSG_HELLO, 0, 0, 5, &pb);
        expect_error(f, KILN_ST_MALFORMED, 0);
        th_hello_payload(&pb, 1, 1, 4096);
        th_pb_u8(&pb, 0);
        f = xfer(KILN_MSG_HELLO, 0, 0, 6, &pb);
        expect_error(f, KILN_ST_MALFORMED, 0);

        /* host offers 300: max_payload 300; session field ignored; range [0, 5] contains 1 */
        th_hello_payload(&pb, 0, 5, 300);
        f = xfer(KILN_MSG_HELLO, KILN_FLAG_RETRY, 0xDEADBEEFu, 7, &pb);
        assert_int_equal(f->status, KILN_ST_OK);
        assert_int_equal(f->len, 47);
        assert_int_equal(f->payload[0], 1);
        assert_int_equal(kiln_le32(f->payload + 4), DEV_MAX);
        assert_int_equal(kiln_le32(f->payload + 8), 300);
        assert_memory_equal(f->payload + 12, vec_nonce, 16);
        assert_int_equal(kiln_le32(f->payload + 28), 0x3F);
        assert_int_equal(f->payload[32], 14);
        assert_memory_equal(f->payload + 33, "kiln-agent-1.0", 14);
        /* frames up to 300 accepted, 301 NAKed */
        memset(raw, 0, sizeof(raw));
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 8, raw, 300, wire, sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 1);
        expect_error(&rf[0], KILN_ST_MALFORMED, 0);
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 9, raw, 301, wire, sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 1);
        assert_int_equal(rf[0].type, KILN_MSG_NAK);
        assert_int_equal(rf[0].payload[0], KILN_NAK_TOO_LARGE);
        /* host offers more than the device: the device's figure wins */
        th_hello_payload(&pb, 1, 1, 1u << 20);
        f = xfer(KILN_MSG_HELLO, 0, 0, 10, &pb);
        assert_int_equal(kiln_le32(f->payload + 8), DEV_MAX);
        /* a HELLO error leaves the negotiated maximum alone */
        th_hello_payload(&pb, 1, 1, 100);
        f = xfer(KILN_MSG_HELLO, 0, 0, 11, &pb);
        expect_error(f, KILN_ST_MALFORMED, 0);
        n = th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 12, raw, 400, wire, sizeof(wire));
        assert_int_equal(feed_raw(wire, n), 1);
        expect_error(&rf[0], KILN_ST_MALFORMED, 0);
}

static void test_capabilities_and_unknown(void **state)
{
        struct kiln_agent_ops ops;
        struct kiln_agent_config cfg;
        struct th_pb pb;
        struct th_frame *f;
        uint8_t nonce[32] = {0};

        (void)state;
        f = cmd(0x0C, NULL);
        expect_error(f, KILN_ST_UNKNOWN_COMMAND, 0);
        f = cmd(KILN_MSG_NAK, NULL);
        expect_error(f, KILN_ST_UNKNOWN_COMMAND, 0);
        f = cmd(0x00, NULL);
        expect_error(f, KILN_ST_UNKNOWN_COMMAND, 0);

        /* a firmware with only the required callbacks */
        memset(&ops, 0, sizeof(ops));
        ops.write = fk_write;
        ops.random = fk_random;
        ops.get_info = fk_get_info;
        cfg = fk_config(&ops);
        cfg.name = "tiny-fw_2.0";
        assert_int_equal(kiln_agent_init(&cfg, &ag), KILN_OK);
        th_hello_payload(&pb, 1, 1, 4096);
        f = xfer(KILN_MSG_HELLO, 0, 0, 1, &pb);
        assert_int_equal(kiln_le32(f->payload + 28), 0);
        assert_int_equal(f->payload[32], 11);
        assert_memory_equal(f->payload + 33, "tiny-fw_2.0", 11);
        (void)cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_OK);
        keygen_payload(&pb, 0, 1, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_UNKNOWN_COMMAND);
        attest_payload(&pb, 0, nonce);
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_UNKNOWN_COMMAND);
        name_only(&pb, "x");
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_UNKNOWN_COMMAND);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_UNKNOWN_COMMAND);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_UNKNOWN_COMMAND);
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_UNKNOWN_COMMAND);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_UNKNOWN_COMMAND);
        u8_only(&pb, 0);
        (void)cmd_expect(KILN_MSG_RESET, &pb, KILN_ST_UNKNOWN_COMMAND);
        (void)cmd_expect(KILN_MSG_SET_LIFECYCLE, &pb, KILN_ST_UNKNOWN_COMMAND);
        /* key_sign alone: ATTEST but not KEYGEN */
        ops.key_sign = fk_key_sign;
        assert_int_equal(kiln_agent_init(&cfg, &ag), KILN_OK);
        th_hello_payload(&pb, 1, 1, 4096);
        f = xfer(KILN_MSG_HELLO, 0, 0, 1, &pb);
        assert_int_equal(kiln_le32(f->payload + 28), KILN_CAP_ATTEST);
}

/* ---- GET_INFO ---- */

static void test_get_info(void **state)
{
        struct th_pb pb;
        struct th_frame *f;
        const uint8_t *p;

        (void)state;
        fk->fuse[3][0] = 1; /* debug_disable */
        fk->fuse[2][0] = 1; /* secure_boot */
        f = cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_OK);
        p = f->payload;
        assert_int_equal(p[0], 16);
        assert_memory_equal(p + 1, fk->uid, 16);
        p += 17;
        assert_int_equal(p[0], 12);
        assert_memory_equal(p + 1, "smartplug-a1", 12);
        p += 13;
        assert_int_equal(kiln_le16(p), 2);
        p += 2;
        assert_int_equal(p[0], 5);
        assert_memory_equal(p + 1, "1.2.3", 5);
        p += 6 + 32;
        assert_int_equal(p[0], KILN_LC_MANUFACTURING);
        assert_int_equal(p[1], KILN_DEBUG_CLOSED);
        assert_int_equal(p[2], 1);
        assert_int_equal(p[3], FK_SLOTS);
        assert_int_equal(kiln_le16(p + 4), 0);
        assert_int_equal(f->len, (uint32_t)(p + 6 - f->payload));

        u8_only(&pb, 0);
        (void)cmd_expect(KILN_MSG_GET_INFO, &pb, KILN_ST_MALFORMED);
        fk->fail_info = 1;
        (void)cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_INTERNAL);
        fk->fail_info = 0;
        fk->bad_info = 1;
        (void)cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_INTERNAL);
        fk->bad_info = 0;
        fk->lifecycle = 9;
        (void)cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_INTERNAL);
}

/* ---- KEYGEN and ATTEST ---- */

static void test_keygen_pop(void **state)
{
        struct th_pb pb;
        struct th_frame *f;
        uint8_t nonce[32], digest[32], pub[65], sig[64];

        (void)state;
        RAND_bytes(nonce, sizeof(nonce));
        for (uint8_t slot = 0; slot < FK_SLOTS; slot++) {
                keygen_payload(&pb, slot, 1, nonce);
                f = cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_OK);
                assert_int_equal(f->len, 2 + 2 + 65 + 2 + 64);
                assert_int_equal(f->payload[0], slot);
                assert_int_equal(f->payload[1], 1);
                assert_int_equal(kiln_le16(f->payload + 2), 65);
                memcpy(pub, f->payload + 4, 65);
                assert_int_equal(pub[0], 0x04);
                assert_int_equal(kiln_le16(f->payload + 69), 64);
                memcpy(sig, f->payload + 71, 64);
                th_signed_digest("KILN-POP-V1", nonce, fk->uid, 16, slot, digest);
                assert_true(th_p256_verify(pub, 65, digest, sig, 64));
                /* the label and every input matter */
                th_signed_digest("KILN-ATTEST-V1", nonce, fk->uid, 16, slot, digest);
                assert_false(th_p256_verify(pub, 65, digest, sig, 64));
                th_signed_digest("KILN-POP-V1", nonce, fk->uid, 16, (uint8_t)(slot + 1), digest);
                assert_false(th_p256_verify(pub, 65, digest, sig, 64));
        }
        f = cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_OK);
        assert_int_equal(kiln_le16(f->payload + f->len - 2), 0x000F);

        keygen_payload(&pb, FK_SLOTS, 1, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_KEY_SLOT);
        keygen_payload(&pb, 0xFF, 1, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_KEY_SLOT);
        keygen_payload(&pb, 0, 2, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_ALGORITHM);
        keygen_payload(&pb, 0, 0, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_ALGORITHM);
        keygen_payload(&pb, 0, 1, nonce);
        pb.n--;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_MALFORMED);
        keygen_payload(&pb, 0, 1, nonce);
        fk->fail_keygen = 1;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_HARDWARE);
        fk->fail_keygen = 0;
        fk->bad_pub = 1;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_HARDWARE);
        fk->bad_pub = 0;
        fk->fail_sign = 1;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_HARDWARE);
        fk->fail_sign = 0;
        fk->bad_sig = 1;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_INTERNAL);
        fk->bad_sig = 0;
        fk->lifecycle = KILN_LC_PRODUCTION;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_LIFECYCLE);
        fk->lifecycle = KILN_LC_RMA;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_OK);
        fk->lifecycle = KILN_LC_DECOMMISSIONED;
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_LIFECYCLE);
}

static void test_attest(void **state)
{
        struct th_pb pb;
        struct th_frame *f;
        uint8_t nonce[32], digest[32], pub[65], sig[64];

        (void)state;
        RAND_bytes(nonce, sizeof(nonce));
        attest_payload(&pb, 2, nonce);
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_NOT_FOUND);
        keygen_payload(&pb, 2, 1, nonce);
        f = cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_OK);
        memcpy(pub, f->payload + 4, 65);

        RAND_bytes(nonce, sizeof(nonce));
        attest_payload(&pb, 2, nonce);
        /* attestation works in production (after lock) */
        fk->lifecycle = KILN_LC_PRODUCTION;
        f = cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_OK);
        assert_int_equal(f->len, 1 + 1 + 2 + 64);
        assert_int_equal(f->payload[0], 2);
        assert_int_equal(f->payload[1], 1);
        assert_int_equal(kiln_le16(f->payload + 2), 64);
        memcpy(sig, f->payload + 4, 64);
        th_signed_digest("KILN-ATTEST-V1", nonce, fk->uid, 16, 2, digest);
        assert_true(th_p256_verify(pub, 65, digest, sig, 64));
        th_signed_digest("KILN-POP-V1", nonce, fk->uid, 16, 2, digest);
        assert_false(th_p256_verify(pub, 65, digest, sig, 64));

        attest_payload(&pb, 4, nonce);
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_KEY_SLOT);
        attest_payload(&pb, 2, nonce);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_MALFORMED);
        attest_payload(&pb, 2, nonce);
        fk->fail_sign = 1;
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_HARDWARE);
        fk->fail_sign = 0;
        fk->lifecycle = KILN_LC_RMA;
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_OK);
        fk->lifecycle = KILN_LC_DECOMMISSIONED;
        (void)cmd_expect(KILN_MSG_ATTEST, &pb, KILN_ST_LIFECYCLE);
}

/* ---- objects ---- */

static void test_write_object(void **state)
{
        uint8_t data[1000];
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        hello(4096);
        for (int i = 0; i < 1000; i++)
                data[i] = (uint8_t)(i * 13);
        /* three chunks */
        th_write_payload(&pb, "fw.img", 0, 1000, 0, data, 400);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_memory_equal(f->payload, "\x90\x01\x00\x00\x00\x00\x00\x00", 8);
        th_write_payload(&pb, "fw.img", 0, 1000, 400, data + 400, 400);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 800);
        assert_int_equal(f->payload[4], 0);
        /* wrong offset, total or flags: OFFSET with the bytes held, nothing stored */
        th_write_payload(&pb, "fw.img", 0, 1000, 700, data + 700, 300);
        f = cmd(KILN_MSG_WRITE_OBJECT, &pb);
        expect_error(f, KILN_ST_OFFSET, 800);
        th_write_payload(&pb, "fw.img", 0, 1001, 800, data + 800, 200);
        f = cmd(KILN_MSG_WRITE_OBJECT, &pb);
        expect_error(f, KILN_ST_OFFSET, 800);
        th_write_payload(&pb, "fw.img", KILN_OBJ_SECRET, 1000, 800, data + 800, 200);
        f = cmd(KILN_MSG_WRITE_OBJECT, &pb);
        expect_error(f, KILN_ST_OFFSET, 800);
        /* no write in progress under that name: detail 0 */
        th_write_payload(&pb, "other", 0, 1000, 800, data + 800, 200);
        f = cmd(KILN_MSG_WRITE_OBJECT, &pb);
        expect_error(f, KILN_ST_OFFSET, 0);
        assert_int_equal(fk->n_obj_write, 2);
        /* undefined flag bits are ignored */
        th_write_payload(&pb, "fw.img", 0xF0, 1000, 800, data + 800, 200);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 1000);
        assert_int_equal(f->payload[4], 1);
        assert_memory_equal(fk->obj[0].cdata, data, 1000);
        /* once complete, a further chunk has no write to continue */
        th_write_payload(&pb, "fw.img", 0, 1000, 1000, data, 0);
        f = cmd(KILN_MSG_WRITE_OBJECT, &pb);
        expect_error(f, KILN_ST_OFFSET, 0);

        /* an empty object is complete at once; len 0 chunks are fine */
        th_write_payload(&pb, "empty", 0, 0, 0, NULL, 0);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_memory_equal(f->payload, "\x00\x00\x00\x00\x01\x00\x00\x00", 8);
        th_write_payload(&pb, "two", 0, 10, 0, NULL, 0);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[4], 0);
        /* offset 0 restarts a write in progress */
        th_write_payload(&pb, "two", 0, 10, 0, data, 5);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        th_write_payload(&pb, "two", 0, 4, 0, data, 2);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        th_write_payload(&pb, "two", 0, 4, 2, data + 2, 2);
        f = cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[4], 1);

        /* MALFORMED: offset + len > total, bad names, trailing bytes, short data */
        th_write_payload(&pb, "x", 0, 10, 8, data, 3);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "x", 0, 10, 11, data, 0);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "x", 0, 0xFFFFFFFFu, 0xFFFFFFF0u, data, 0x20);
        pb.n = pb.n - 0x20; /* data_len says 0x20, none sent */
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "bad name", 0, 1, 0, data, 1);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "", 0, 1, 0, data, 1);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "n/a", 0, 1, 0, data, 1);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "123456789012345678901234567890123", 0, 1, 0, data, 1);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);
        th_write_payload(&pb, "12345678901234567890123456789012", 0, 1, 0, data, 1);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK); /* 32 is fine */
        th_write_payload(&pb, "x", 0, 1, 0, data, 1);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_MALFORMED);

        /* NO_SPACE, HARDWARE, BUSY, LIFECYCLE */
        fk->store_cap = 100;
        th_write_payload(&pb, "big", 0, 101, 0, data, 10);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_NO_SPACE);
        th_write_payload(&pb, "big", 0, 100, 0, data, 10);
        fk->fail_obj_write = 1;
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_HARDWARE);
        fk->fail_obj_write = 0;
        fk->busy_obj_write = 1;
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_BUSY);
        fk->busy_obj_write = 0;
        fk->lifecycle = KILN_LC_PRODUCTION;
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_LIFECYCLE);
        fk->lifecycle = KILN_LC_RMA;
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
}

static void test_read_object(void **state)
{
        uint8_t data[3000], nd[10];
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        for (int i = 0; i < 3000; i++)
                data[i] = (uint8_t)(i ^ (i >> 8));
        hello(4096);
        write_object("cert", 0, data, 3000);
        write_object("pw", KILN_OBJ_SECRET, data, 16);

        th_read_payload(&pb, "cert", 0, 4096 - 12);
        f = cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 3000);
        assert_int_equal(kiln_le32(f->payload + 4), 0);
        assert_int_equal(kiln_le32(f->payload + 8), 3000);
        assert_memory_equal(f->payload + 12, data, 3000);
        th_read_payload(&pb, "cert", 2990, 100);
        f = cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload + 4), 2990);
        assert_int_equal(kiln_le32(f->payload + 8), 10);
        assert_memory_equal(f->payload + 12, data + 2990, 10);
        th_read_payload(&pb, "cert", 3000, 100);
        f = cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload + 8), 0);
        assert_int_equal(f->len, 12);
        th_read_payload(&pb, "cert", 3001, 100);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_MALFORMED);
        th_read_payload(&pb, "cert", 0, 4096 - 11);
        f = cmd(KILN_MSG_READ_OBJECT, &pb);
        expect_error(f, KILN_ST_TOO_LARGE, 4096);
        th_read_payload(&pb, "pw", 0, 16);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_PROTECTED);
        th_read_payload(&pb, "none", 0, 16);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_NOT_FOUND);
        th_read_payload(&pb, "cert", 0, 16);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_MALFORMED);

        /* a write in progress is not readable; the complete version under it still is */
        memset(nd, 0x77, sizeof(nd));
        th_write_payload(&pb, "fresh", 0, 10, 0, nd, 5);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        th_read_payload(&pb, "fresh", 0, 10);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_NOT_FOUND);
        th_write_payload(&pb, "cert", 0, 10, 0, nd, 5);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        th_read_payload(&pb, "cert", 0, 20);
        f = cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 3000);
        assert_memory_equal(f->payload + 12, data, 20);

        /* the limit follows the negotiated maximum */
        hello(512);
        th_read_payload(&pb, "cert", 0, 500);
        f = cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        assert_int_equal(f->len, 512);
        th_read_payload(&pb, "cert", 0, 501);
        f = cmd(KILN_MSG_READ_OBJECT, &pb);
        expect_error(f, KILN_ST_TOO_LARGE, 512);

        fk->lifecycle = KILN_LC_PRODUCTION;
        th_read_payload(&pb, "cert", 0, 16);
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_OK);
        fk->lifecycle = KILN_LC_DECOMMISSIONED;
        (void)cmd_expect(KILN_MSG_READ_OBJECT, &pb, KILN_ST_LIFECYCLE);
}

static void test_object_hash(void **state)
{
        uint8_t data[5000], want[32];
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        for (int i = 0; i < 5000; i++)
                data[i] = (uint8_t)(i * 31 + 7);
        hello(4096);
        th_write_payload(&pb, "blob", KILN_OBJ_SECRET, 5000, 0, data, 3000);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        name_only(&pb, "blob");
        f = cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_OK);
        assert_int_equal(f->len, 44);
        assert_int_equal(kiln_le32(f->payload), 5000);
        assert_int_equal(kiln_le32(f->payload + 4), 3000);
        assert_int_equal(f->payload[8], 0);
        assert_int_equal(f->payload[9], KILN_OBJ_SECRET);
        assert_int_equal(kiln_le16(f->payload + 10), 0);
        th_sha256(data, 3000, want);
        assert_memory_equal(f->payload + 12, want, 32);
        th_write_payload(&pb, "blob", KILN_OBJ_SECRET, 5000, 3000, data + 3000, 2000);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        name_only(&pb, "blob");
        f = cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload + 4), 5000);
        assert_int_equal(f->payload[8], 1);
        th_sha256(data, 5000, want);
        assert_memory_equal(f->payload + 12, want, 32);
        /* a new write in progress is what OBJECT_HASH describes */
        th_write_payload(&pb, "blob", 0, 10, 0, data, 0);
        (void)cmd_expect(KILN_MSG_WRITE_OBJECT, &pb, KILN_ST_OK);
        name_only(&pb, "blob");
        f = cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_OK);
        assert_int_equal(kiln_le32(f->payload), 10);
        assert_int_equal(kiln_le32(f->payload + 4), 0);
        assert_int_equal(f->payload[8], 0);
        assert_int_equal(f->payload[9], 0);
        th_sha256("", 0, want);
        assert_memory_equal(f->payload + 12, want, 32);

        name_only(&pb, "nothing");
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_NOT_FOUND);
        name_only(&pb, "bad*");
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_MALFORMED);
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, NULL, KILN_ST_MALFORMED);
        name_only(&pb, "blob");
        fk->lifecycle = KILN_LC_PRODUCTION;
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_OK);
        fk->lifecycle = KILN_LC_DECOMMISSIONED;
        (void)cmd_expect(KILN_MSG_OBJECT_HASH, &pb, KILN_ST_LIFECYCLE);
}

/* ---- fuses ---- */

static void test_fuse_read(void **state)
{
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        /* list every field by index */
        for (uint16_t i = 0; i < FK_FUSES; i++) {
                size_t nl = strlen(fk_map[i].name), vb = (fk_map[i].width + 7u) / 8u;

                th_pb_reset(&pb);
                th_pb_u8(&pb, 0);
                th_pb_le16(&pb, i);
                f = cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_OK);
                assert_int_equal(f->payload[0], nl);
                assert_memory_equal(f->payload + 1, fk_map[i].name, nl);
                assert_int_equal(kiln_le16(f->payload + 1 + nl), fk_map[i].width);
                assert_int_equal(f->payload[3 + nl], 0);
                assert_int_equal(f->payload[4 + nl], vb);
                assert_int_equal(f->len, 5 + nl + vb);
        }
        th_pb_reset(&pb);
        th_pb_u8(&pb, 0);
        th_pb_le16(&pb, FK_FUSES);
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_NOT_FOUND);
        name_only(&pb, "nope");
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_NOT_FOUND);
        /* malformed: index with a name, short index, 33-byte name, bad characters, empty */
        name_only(&pb, "mac0");
        th_pb_le16(&pb, 0);
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_MALFORMED);
        th_pb_reset(&pb);
        th_pb_u8(&pb, 0);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_MALFORMED);
        name_only(&pb, "123456789012345678901234567890123");
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_MALFORMED);
        name_only(&pb, "mac 0");
        (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_MALFORMED);
        (void)cmd_expect(KILN_MSG_FUSE_READ, NULL, KILN_ST_MALFORMED);

        /* by name, value and read protection */
        memset(fk->fuse[8], 0xAB, 32);
        name_only(&pb, "hmac_key");
        f = cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[11], 0);
        assert_int_equal(f->payload[12], 32);
        assert_int_equal(f->payload[13], 0xAB);
        fk->fuse[9][0] = 1;
        f = cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[11], KILN_FUSE_WRITE_PROTECTED | KILN_FUSE_READ_PROTECTED);
        for (int i = 0; i < 32; i++)
                assert_int_equal(f->payload[13 + i], 0);
        /* allowed in every lifecycle state */
        for (uint8_t lc = 1; lc <= 4; lc++) {
                fk->lifecycle = lc;
                (void)cmd_expect(KILN_MSG_FUSE_READ, &pb, KILN_ST_OK);
        }
}

static void test_fuse_program(void **state)
{
        struct th_pb pb;
        struct th_frame *f;
        uint8_t v[32];

        (void)state;
        /* one-way: bits only go 0 -> 1 */
        th_fuse_program_payload(&pb, "customer_id", "\x0F\x00\x00\x80", 4);
        f = cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        assert_memory_equal(f->payload + 16, "\x0F\x00\x00\x80", 4);
        th_fuse_program_payload(&pb, "customer_id", "\xF0\x00\x00\x00", 4);
        f = cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[0], 11);
        assert_int_equal(kiln_le16(f->payload + 12), 32);
        assert_int_equal(f->payload[15], 4);
        assert_memory_equal(f->payload + 16, "\xFF\x00\x00\x80", 4);
        th_fuse_program_payload(&pb, "customer_id", "\x00\x00\x00\x00", 4);
        f = cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        assert_memory_equal(f->payload + 16, "\xFF\x00\x00\x80", 4);

        /* MALFORMED: wrong length, bits above the width (48-bit mac0 in 6 bytes; 1-bit fields) */
        th_fuse_program_payload(&pb, "customer_id", "\x01\x00\x00", 3);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_MALFORMED);
        th_fuse_program_payload(&pb, "customer_id", "\x01\x00\x00\x00\x00", 5);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_MALFORMED);
        th_fuse_program_payload(&pb, "debug_disable", "\x02", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_MALFORMED);
        th_fuse_program_payload(&pb, "debug_disable", "\x01", 1);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_MALFORMED);
        th_fuse_program_payload(&pb, "debug disable", "\x01", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_MALFORMED);
        th_fuse_program_payload(&pb, "no_such", "\x01", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_NOT_FOUND);
        assert_int_equal(fk->n_fuse_program, 3);

        /* write protection: refused whole, even when the value adds nothing */
        th_fuse_program_payload(&pb, "mac0", "\x02\x11\x22\x33\x44\x55", 6);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        th_fuse_program_payload(&pb, "mac0_wp", "\x01", 1);
        f = cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        assert_int_equal(f->payload[f->len - 1], 1);
        th_fuse_program_payload(&pb, "mac0", "\x02\x11\x22\x33\x44\x55", 6);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_PROTECTED);
        th_fuse_program_payload(&pb, "mac0", "\x00\x00\x00\x00\x00\x00", 6);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_PROTECTED);
        th_fuse_program_payload(&pb, "mac0", "\xFF\xFF\xFF\xFF\xFF\xFF", 6);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_PROTECTED);
        assert_memory_equal(fk->fuse[6], "\x02\x11\x22\x33\x44\x55", 6);
        assert_int_equal(fk->n_fuse_program, 5);
        /* read-protection: the read-back of a read-protected field is zeros */
        memset(v, 0xC3, sizeof(v));
        th_fuse_program_payload(&pb, "hmac_key", v, 32);
        f = cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        assert_memory_equal(f->payload + 13, v, 32);
        th_fuse_program_payload(&pb, "hmac_key_rp", "\x01", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        th_fuse_program_payload(&pb, "hmac_key", v, 32);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_PROTECTED);

        /* HARDWARE, LIFECYCLE */
        th_fuse_program_payload(&pb, "rollback_min", "\x01\x00\x00\x00", 4);
        fk->fail_fuse_program = 1;
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_HARDWARE);
        fk->fail_fuse_program = 0;
        fk->lifecycle = KILN_LC_PRODUCTION;
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_LIFECYCLE);
        fk->lifecycle = KILN_LC_DECOMMISSIONED;
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_LIFECYCLE);
        fk->lifecycle = KILN_LC_RMA;
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        /* burning debug_disable and secure_boot shows in GET_INFO */
        th_fuse_program_payload(&pb, "debug_disable", "\x01", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        th_fuse_program_payload(&pb, "secure_boot", "\x01", 1);
        (void)cmd_expect(KILN_MSG_FUSE_PROGRAM, &pb, KILN_ST_OK);
        f = cmd_expect(KILN_MSG_GET_INFO, NULL, KILN_ST_OK);
        assert_int_equal(f->payload[f->len - 5], KILN_DEBUG_CLOSED);
        assert_int_equal(f->payload[f->len - 4], 1);
}

/* ---- lifecycle ---- */

static void test_set_lifecycle(void **state)
{
        static const int allowed[5][5] = {
                /* to:   -  M  P  R  D */
                {0, 0, 0, 0, 0},
                {0, 1, 1, 0, 1}, /* from MANUFACTURING */
                {0, 0, 1, 1, 1}, /* from PRODUCTION */
                {0, 0, 1, 1, 1}, /* from RMA */
                {0, 0, 0, 0, 1}, /* from DECOMMISSIONED */
        };
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        for (uint8_t from = 1; from <= 4; from++) {
                for (uint8_t to = 1; to <= 4; to++) {
                        unsigned calls = fk->n_lifecycle;

                        fk->lifecycle = from;
                        u8_only(&pb, to);
                        f = cmd(KILN_MSG_SET_LIFECYCLE, &pb);
                        if (allowed[from][to]) {
                                assert_int_equal(f->status, KILN_ST_OK);
                                assert_int_equal(f->len, 1);
                                assert_int_equal(f->payload[0], to);
                                assert_int_equal(fk->lifecycle, to);
                                /* the same state again changes nothing */
                                assert_int_equal(fk->n_lifecycle, calls + (from != to));
                        } else {
                                expect_error(f, KILN_ST_LIFECYCLE, 0);
                                assert_int_equal(fk->lifecycle, from);
                                assert_int_equal(fk->n_lifecycle, calls);
                        }
                }
        }
        fk->lifecycle = KILN_LC_MANUFACTURING;
        u8_only(&pb, 0);
        (void)cmd_expect(KILN_MSG_SET_LIFECYCLE, &pb, KILN_ST_MALFORMED);
        u8_only(&pb, 5);
        (void)cmd_expect(KILN_MSG_SET_LIFECYCLE, &pb, KILN_ST_MALFORMED);
        (void)cmd_expect(KILN_MSG_SET_LIFECYCLE, NULL, KILN_ST_MALFORMED);
        u8_only(&pb, KILN_LC_PRODUCTION);
        fk->fail_lifecycle = 1;
        (void)cmd_expect(KILN_MSG_SET_LIFECYCLE, &pb, KILN_ST_HARDWARE);
        assert_int_equal(fk->lifecycle, KILN_LC_MANUFACTURING);
}

/* §6.3: which command runs in which state. */
static void test_lifecycle_table(void **state)
{
        enum { Y = 1, N = 0 };
        static const struct {
                uint8_t type;
                int ok[5];
        } table[] = {
                {KILN_MSG_GET_INFO, {0, Y, Y, Y, Y}},   {KILN_MSG_FUSE_READ, {0, Y, Y, Y, Y}},
                {KILN_MSG_SET_LIFECYCLE, {0, Y, Y, Y, Y}}, {KILN_MSG_READ_OBJECT, {0, Y, Y, Y, N}},
                {KILN_MSG_OBJECT_HASH, {0, Y, Y, Y, N}}, {KILN_MSG_ATTEST, {0, Y, Y, Y, N}},
                {KILN_MSG_KEYGEN, {0, Y, N, Y, N}},     {KILN_MSG_WRITE_OBJECT, {0, Y, N, Y, N}},
                {KILN_MSG_FUSE_PROGRAM, {0, Y, N, Y, N}}, {KILN_MSG_RESET, {0, Y, Y, Y, Y}},
        };
        uint8_t nonce[32] = {1};
        struct th_pb pb;
        struct th_frame *f;

        (void)state;
        write_object("obj", 0, (const uint8_t *)"abc", 3);
        keygen_payload(&pb, 0, 1, nonce);
        (void)cmd_expect(KILN_MSG_KEYGEN, &pb, KILN_ST_OK);
        for (uint8_t lc = 1; lc <= 4; lc++) {
                for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
                        struct kiln_agent_config cfg = fk_config(&fk_ops);

                        fk->lifecycle = lc;
                        switch (table[i].type) {
                        case KILN_MSG_FUSE_READ:
                        case KILN_MSG_OBJECT_HASH:
                                name_only(&pb, table[i].type == KILN_MSG_FUSE_READ ? "mac0"
                                                                                    : "obj");
                                break;
                        case KILN_MSG_SET_LIFECYCLE:
                                u8_only(&pb, lc);
                                break;
                        case KILN_MSG_READ_OBJECT:
                                th_read_payload(&pb, "obj", 0, 3);
                                break;
                        case KILN_MSG_ATTEST:
                                attest_payload(&pb, 0, nonce);
                                break;
                        case KILN_MSG_KEYGEN:
                                keygen_payload(&pb, 1, 1, nonce);
                                break;
                        case KILN_MSG_WRITE_OBJECT:
                                th_write_payload(&pb, "obj2", 0, 1, 0, "z", 1);
                                break;
                        case KILN_MSG_FUSE_PROGRAM:
                                th_fuse_program_payload(&pb, "flash_encrypt", "\x01", 1);
                                break;
                        case KILN_MSG_RESET:
                                u8_only(&pb, 0);
                                break;
                        default:
                                th_pb_reset(&pb);
                                break;
                        }
                        f = cmd(table[i].type, &pb);
                        if (table[i].ok[lc])
                                assert_int_equal(f->status, KILN_ST_OK);
                        else
                                expect_error(f, KILN_ST_LIFECYCLE, 0);
                        if (table[i].type == KILN_MSG_RESET)
                                assert_int_equal(kiln_agent_init(&cfg, &ag), KILN_OK);
                }
        }
}

/* ---- RESET ---- */

static void test_reset(void **state)
{
        uint8_t wire[128];
        struct th_pb pb;
        size_t n;
        struct kiln_agent_config cfg = fk_config(&fk_ops);

        (void)state;
        u8_only(&pb, 1);
        (void)cmd_expect(KILN_MSG_RESET, &pb, KILN_ST_MALFORMED);
        th_pb_u8(&pb, 0);
        (void)cmd_expect(KILN_MSG_RESET, &pb, KILN_ST_MALFORMED);
        assert_int_equal(fk->n_reset, 0);
        /* the response (empty payload) goes out before ops->reset; the rest of the input is
         * dropped and the agent stays halted until init */
        u8_only(&pb, 0);
        n = th_encode(KILN_MSG_RESET, 0, VEC_SESSION, 77, pb.b, pb.n, wire, sizeof(wire));
        n += th_encode(KILN_MSG_GET_INFO, 0, VEC_SESSION, 78, NULL, 0, wire + n, sizeof(wire) - n);
        fk->out_len = 0;
        assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_AGENT_RESET);
        assert_int_equal(th_decode_all(fk->out, fk->out_len, rf, 8, NULL), 1);
        assert_int_equal(rf[0].type, KILN_MSG_RESET);
        assert_int_equal(rf[0].status, KILN_ST_OK);
        assert_int_equal(rf[0].len, 0);
        assert_int_equal(fk->n_reset, 1);
        assert_int_equal(fk->reset_mode, 0);
        fk->out_len = 0;
        assert_int_equal(kiln_agent_feed(&ag, wire, n), KILN_AGENT_RESET);
        assert_int_equal(fk->out_len, 0);
        /* reboot: a new session; the old one is refused */
        assert_int_equal(kiln_agent_init(&cfg, &ag), KILN_OK);
        assert_int_not_equal(kiln_agent_session(&ag), VEC_SESSION);
        {
                struct th_frame *f = xfer(KILN_MSG_GET_INFO, 0, VEC_SESSION, 79, NULL);

                expect_error(f, KILN_ST_SESSION, 0);
        }
}

/* Every command with a valid payload cut short, or with one byte too many: MALFORMED. */
static void test_strict_lengths(void **state)
{
        uint8_t nonce[32] = {0}, d[8] = {0};
        struct th_pb good[10], pb;
        uint8_t types[10] = {KILN_MSG_HELLO,       KILN_MSG_KEYGEN,       KILN_MSG_WRITE_OBJECT,
                             KILN_MSG_READ_OBJECT, KILN_MSG_OBJECT_HASH,  KILN_MSG_FUSE_READ,
                             KILN_MSG_FUSE_PROGRAM, KILN_MSG_ATTEST,      KILN_MSG_SET_LIFECYCLE,
                             KILN_MSG_RESET};

        (void)state;
        write_object("o", 0, d, 8);
        th_hello_payload(&good[0], 1, 1, 4096);
        keygen_payload(&good[1], 0, 1, nonce);
        th_write_payload(&good[2], "o", 0, 8, 0, d, 8);
        th_read_payload(&good[3], "o", 0, 8);
        name_only(&good[4], "o");
        th_pb_reset(&good[5]);
        th_pb_u8(&good[5], 0);
        th_pb_le16(&good[5], 3);
        th_fuse_program_payload(&good[6], "customer_id", "\x01\x02\x03\x04", 4);
        attest_payload(&good[7], 0, nonce);
        u8_only(&good[8], KILN_LC_MANUFACTURING);
        u8_only(&good[9], 0);
        for (int t = 0; t < 10; t++) {
                for (size_t n = 0; n <= good[t].n + 1; n++) {
                        struct th_frame *f;

                        pb = good[t];
                        if (n == good[t].n + 1)
                                th_pb_u8(&pb, 0);
                        else
                                pb.n = n;
                        if (types[t] == KILN_MSG_HELLO)
                                f = xfer(KILN_MSG_HELLO, 0, 0, next_rid++, &pb);
                        else
                                f = cmd(types[t], &pb);
                        if (n == good[t].n) {
                                /* ATTEST with slot 0 empty is NOT_FOUND: still not MALFORMED */
                                assert_int_not_equal(f->status, KILN_ST_MALFORMED);
                                if (types[t] == KILN_MSG_RESET) {
                                        struct kiln_agent_config cfg = fk_config(&fk_ops);

                                        assert_int_equal(kiln_agent_init(&cfg, &ag), KILN_OK);
                                }
                        } else {
                                expect_error(f, KILN_ST_MALFORMED, 0);
                        }
                }
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_sha256, setup, teardown),
                cmocka_unit_test_setup_teardown(test_init_config, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vector_hello, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vector_nak, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vector_write, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vector_offset, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vector_fuse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_retry_executes_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reqid_reuse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_session, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hello_clears_memory, setup, teardown),
                cmocka_unit_test_setup_teardown(test_nak, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream_handling, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hello, setup, teardown),
                cmocka_unit_test_setup_teardown(test_capabilities_and_unknown, setup, teardown),
                cmocka_unit_test_setup_teardown(test_get_info, setup, teardown),
                cmocka_unit_test_setup_teardown(test_keygen_pop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_attest, setup, teardown),
                cmocka_unit_test_setup_teardown(test_write_object, setup, teardown),
                cmocka_unit_test_setup_teardown(test_read_object, setup, teardown),
                cmocka_unit_test_setup_teardown(test_object_hash, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fuse_read, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fuse_program, setup, teardown),
                cmocka_unit_test_setup_teardown(test_set_lifecycle, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lifecycle_table, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
                cmocka_unit_test_setup_teardown(test_strict_lengths, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
