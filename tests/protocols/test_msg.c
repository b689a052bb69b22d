/*
 * Host message codec: builders produce exactly the docs/protocol.md §8 payloads; parsers accept the
 * §8 responses and well-formed payloads of every other response, and reject every truncation, a
 * trailing byte, oversized fields, bad names and unknown enumerated values.
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
#include "kiln/error.h"
#include "kiln/msg.h"

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
        size_t n = strlen(hex) / 2;

        assert_true(n <= cap);
        for (size_t i = 0; i < n; i++) {
                unsigned v;

                assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
                out[i] = (uint8_t)v;
        }
        return n;
}

/* A tiny payload writer for building test inputs. */
struct pw {
        uint8_t b[512];
        size_t n;
};

static void pw_u8(struct pw *w, uint8_t v)
{
        w->b[w->n++] = v;
}

static void pw_le16(struct pw *w, uint16_t v)
{
        kiln_put_le16(w->b + w->n, v);
        w->n += 2;
}

static void pw_le32(struct pw *w, uint32_t v)
{
        kiln_put_le32(w->b + w->n, v);
        w->n += 4;
}

static void pw_bytes(struct pw *w, const void *p, size_t n)
{
        memcpy(w->b + w->n, p, n);
        w->n += n;
}

static void pw_fill(struct pw *w, uint8_t v, size_t n)
{
        memset(w->b + w->n, v, n);
        w->n += n;
}

static void pw_name(struct pw *w, const char *s)
{
        pw_u8(w, (uint8_t)strlen(s));
        pw_bytes(w, s, strlen(s));
}

/* ---- uniform parser wrappers for the generic checks ---- */

typedef int (*parse_fn)(const uint8_t *p, size_t n);

static int p_hello(const uint8_t *p, size_t n)
{
        struct proto_hello x;
        return proto_msg_hello_parse(p, n, &x);
}
static int p_info(const uint8_t *p, size_t n)
{
        struct proto_info x;
        return proto_msg_info_parse(p, n, &x);
}
static int p_keygen(const uint8_t *p, size_t n)
{
        struct proto_keygen x;
        return proto_msg_keygen_parse(p, n, &x);
}
static int p_write(const uint8_t *p, size_t n)
{
        struct proto_write_result x;
        return proto_msg_write_parse(p, n, &x);
}
static int p_read(const uint8_t *p, size_t n)
{
        struct proto_read_result x;
        return proto_msg_read_parse(p, n, &x);
}
static int p_hash(const uint8_t *p, size_t n)
{
        struct proto_object_hash x;
        return proto_msg_hash_parse(p, n, &x);
}
static int p_fuse(const uint8_t *p, size_t n)
{
        struct proto_fuse x;
        return proto_msg_fuse_parse(p, n, &x);
}
static int p_attest(const uint8_t *p, size_t n)
{
        struct proto_attest x;
        return proto_msg_attest_parse(p, n, &x);
}
static int p_lifecycle(const uint8_t *p, size_t n)
{
        uint8_t x;
        return proto_msg_lifecycle_parse(p, n, &x);
}
static int p_reset(const uint8_t *p, size_t n)
{
        return proto_msg_reset_parse(p, n);
}
static int p_nak(const uint8_t *p, size_t n)
{
        uint8_t x;
        return proto_msg_nak_parse(p, n, &x);
}
static int p_error(const uint8_t *p, size_t n)
{
        struct proto_device_error x;
        return proto_msg_error_parse(KILN_MSG_WRITE_OBJECT, KILN_ST_OFFSET, p, n, &x);
}

/*
 * The generic strictness checks for one valid payload: it parses; every proper prefix is refused
 * (exact-size heap copies so ASan catches any read past the end); one trailing byte is refused.
 * Variable-length payloads may have prefixes that are themselves valid (an empty RESET has none);
 * the caller lists none of those here.
 */
static void check_strict(const char *what, parse_fn fn, const uint8_t *p, size_t n)
{
        uint8_t *c;

        kiln_err_reset();
        if (fn(p, n) != KILN_OK)
                fail_msg("%s: valid payload refused: %s", what, kiln_err_detail());
        for (size_t k = 0; k < n; k++) {
                c = malloc(k ? k : 1);
                assert_non_null(c);
                memcpy(c, p, k);
                kiln_err_reset();
                if (fn(c, k) != KILN_E_PROTO_MALFORMED)
                        fail_msg("%s: prefix of %zu/%zu bytes accepted", what, k, n);
                assert_true(strstr(kiln_err_detail(), "response") != NULL ||
                            strstr(kiln_err_detail(), "NAK") != NULL);
                free(c);
        }
        c = malloc(n + 1);
        assert_non_null(c);
        memcpy(c, p, n);
        c[n] = 0;
        kiln_err_reset();
        if (fn(c, n + 1) != KILN_E_PROTO_MALFORMED)
                fail_msg("%s: trailing byte accepted", what);
        assert_non_null(strstr(kiln_err_detail(), "trailing"));
        free(c);
        /* NULL input is an empty input */
        if (n > 0)
                assert_int_equal(fn(NULL, 0), KILN_E_PROTO_MALFORMED);
}

/* ---- builders: §8 payloads ---- */

static void test_build_vectors(void **state)
{
        uint8_t out[256], exp[128], data[16];
        size_t n = 0, en;
        struct proto_write_req w;

        (void)state;
        /* 8.1 HELLO request */
        en = unhex("0101000000100000", exp, sizeof(exp));
        assert_int_equal(proto_msg_hello_build(4096, out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, en);
        assert_memory_equal(out, exp, en);
        /* 8.4 WRITE_OBJECT chunk */
        for (int i = 0; i < 16; i++)
                data[i] = (uint8_t)i;
        w.name = "cert";
        w.flags = 0;
        w.total_len = 1024;
        w.offset = 512;
        w.data = data;
        w.data_len = 16;
        en = unhex("046365727400000000000400000002000010000000000102030405060708090a0b0c0d0e0f",
                   exp, sizeof(exp));
        assert_int_equal(proto_msg_write_build(&w, out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, en);
        assert_memory_equal(out, exp, en);
        assert_int_equal(n, PROTO_WRITE_OVERHEAD(4) + 16);
        /* 8.7 FUSE_PROGRAM */
        en = unhex("0d64656275675f64697361626c650101", exp, sizeof(exp));
        assert_int_equal(proto_msg_fuse_program_build("debug_disable", (const uint8_t *)"\x01", 1,
                                                      out, sizeof(out), &n),
                         KILN_OK);
        assert_int_equal(n, en);
        assert_memory_equal(out, exp, en);
}

static void test_build_others(void **state)
{
        uint8_t out[128], nonce[KILN_NONCE_LEN];
        size_t n = 0;

        (void)state;
        for (int i = 0; i < (int)KILN_NONCE_LEN; i++)
                nonce[i] = (uint8_t)(0xA0 + i);
        assert_int_equal(proto_msg_info_build(out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 0);

        assert_int_equal(
            proto_msg_keygen_build(2, KILN_ALG_ECDSA_P256_SHA256, nonce, out, sizeof(out), &n),
            KILN_OK);
        assert_int_equal(n, 36);
        assert_memory_equal(out, "\x02\x01\x00\x00", 4);
        assert_memory_equal(out + 4, nonce, 32);

        assert_int_equal(proto_msg_read_build("fw.bin", 0x100, 0x200, out, sizeof(out), &n),
                         KILN_OK);
        assert_int_equal(n, 15);
        assert_memory_equal(out,
                            "\x06"
                            "fw.bin"
                            "\x00\x01\x00\x00"
                            "\x00\x02\x00\x00",
                            15);

        assert_int_equal(proto_msg_hash_build("cert", out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 5);
        assert_memory_equal(out,
                            "\x04"
                            "cert",
                            5);

        assert_int_equal(proto_msg_fuse_read_build("mac0", out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 5);
        assert_memory_equal(out,
                            "\x04"
                            "mac0",
                            5);
        assert_int_equal(proto_msg_fuse_read_index_build(0x0102, out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 3);
        assert_memory_equal(out, "\x00\x02\x01", 3);

        assert_int_equal(proto_msg_attest_build(1, nonce, out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 36);
        assert_memory_equal(out, "\x01\x00\x00\x00", 4);
        assert_memory_equal(out + 4, nonce, 32);

        assert_int_equal(proto_msg_lifecycle_build(KILN_LC_PRODUCTION, out, sizeof(out), &n),
                         KILN_OK);
        assert_int_equal(n, 1);
        assert_int_equal(out[0], 2);
        assert_int_equal(proto_msg_reset_build(0, out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 1);
        assert_int_equal(out[0], 0);

        /* an empty chunk (empty object) */
        {
                struct proto_write_req w = {"empty", KILN_OBJ_SECRET, 0, 0, NULL, 0};

                assert_int_equal(proto_msg_write_build(&w, out, sizeof(out), &n), KILN_OK);
                assert_int_equal(n, PROTO_WRITE_OVERHEAD(5));
                assert_int_equal(out[6], KILN_OBJ_SECRET);
        }
}

static void test_build_refuses(void **state)
{
        uint8_t out[300], nonce[KILN_NONCE_LEN] = {0}, value[KILN_FUSE_BYTES_MAX + 1] = {0};
        size_t n = 12345;
        char name33[34];
        struct proto_write_req w = {"cert", 0, 10, 0, value, 4};

        (void)state;
        memset(name33, 'a', 33);
        name33[33] = '\0';
        /* names */
        assert_int_equal(proto_msg_name_check("a"), KILN_OK);
        assert_int_equal(proto_msg_name_check("A-z_0.9"), KILN_OK);
        assert_int_equal(proto_msg_name_check(name33 + 1), KILN_OK); /* 32 */
        assert_int_equal(proto_msg_name_check(name33), KILN_E_INVAL);
        assert_int_equal(proto_msg_name_check(""), KILN_E_INVAL);
        assert_int_equal(proto_msg_name_check("a/b"), KILN_E_INVAL);
        assert_int_equal(proto_msg_name_check("a b"), KILN_E_INVAL);
        assert_int_equal(proto_msg_name_check("caf\xc3\xa9"), KILN_E_INVAL);
        assert_int_equal(proto_msg_name_check(NULL), KILN_E_INVAL);
        assert_int_equal(proto_msg_hash_build(name33, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_read_build("x y", 0, 1, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_fuse_read_build("", out, sizeof(out), &n), KILN_E_INVAL);
        /* sizes and values */
        assert_int_equal(proto_msg_hello_build(255, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_hello_build(KILN_PAYLOAD_MAX + 1, out, sizeof(out), &n),
                         KILN_E_INVAL);
        assert_int_equal(proto_msg_hello_build(4096, out, 7, &n), KILN_E_RANGE);
        assert_int_equal(proto_msg_keygen_build(16, 1, nonce, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_keygen_build(0, 2, nonce, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_attest_build(16, nonce, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_fuse_program_build("f", value, 0, out, sizeof(out), &n),
                         KILN_E_INVAL);
        assert_int_equal(
            proto_msg_fuse_program_build("f", value, KILN_FUSE_BYTES_MAX + 1, out, sizeof(out), &n),
            KILN_E_INVAL);
        assert_int_equal(
            proto_msg_fuse_program_build("f", value, KILN_FUSE_BYTES_MAX, out, sizeof(out), &n),
            KILN_OK);
        assert_int_equal(proto_msg_lifecycle_build(0, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_lifecycle_build(5, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(proto_msg_reset_build(1, out, sizeof(out), &n), KILN_E_INVAL);
        /* chunk beyond the object, offset beyond the object, data missing, buffer too small */
        w.offset = 7;
        assert_int_equal(proto_msg_write_build(&w, out, sizeof(out), &n), KILN_E_INVAL);
        w.offset = 11;
        w.data_len = 0;
        assert_int_equal(proto_msg_write_build(&w, out, sizeof(out), &n), KILN_E_INVAL);
        w.offset = 0;
        w.data_len = 4;
        w.data = NULL;
        assert_int_equal(proto_msg_write_build(&w, out, sizeof(out), &n), KILN_E_INVAL);
        w.data = value;
        assert_int_equal(proto_msg_write_build(&w, out, PROTO_WRITE_OVERHEAD(4) + 3, &n),
                         KILN_E_RANGE);
        assert_int_equal(proto_msg_write_build(&w, out, PROTO_WRITE_OVERHEAD(4) + 4, &n), KILN_OK);
        /* outputs untouched on failure */
        n = 999;
        assert_int_equal(proto_msg_reset_build(3, out, sizeof(out), &n), KILN_E_INVAL);
        assert_int_equal(n, 999);
}

/* ---- parsers: §8 responses ---- */

static void test_parse_vectors(void **state)
{
        uint8_t p[128];
        size_t n;

        (void)state;
        /* 8.2 HELLO response */
        {
                struct proto_hello h;

                n = unhex("010000000010000000100000123456789abcdef00f1e2d3c4b5a69783f0000000e6b69"
                          "6c6e2d6167656e742d312e30",
                          p, sizeof(p));
                assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_OK);
                assert_int_equal(h.version, 1);
                assert_int_equal(h.device_max_payload, 4096);
                assert_int_equal(h.max_payload, 4096);
                assert_memory_equal(h.session_nonce,
                                    "\x12\x34\x56\x78\x9a\xbc\xde\xf0\x0f\x1e\x2d\x3c\x4b\x5a\x69"
                                    "\x78",
                                    16);
                assert_int_equal(h.session_id, 0x78563412);
                assert_int_equal(h.capabilities, 0x3f);
                assert_string_equal(h.agent, "kiln-agent-1.0");
                check_strict("8.2 HELLO", p_hello, p, n);
        }
        /* 8.5 WRITE_OBJECT response */
        {
                struct proto_write_result w;

                n = unhex("1002000000000000", p, sizeof(p));
                assert_int_equal(proto_msg_write_parse(p, n, &w), KILN_OK);
                assert_int_equal(w.received, 528);
                assert_int_equal(w.complete, 0);
                check_strict("8.5 WRITE_OBJECT", p_write, p, n);
        }
        /* 8.6 error payload */
        {
                struct proto_device_error e;

                n = unhex("000200000f6f6666736574206d69736d61746368", p, sizeof(p));
                assert_int_equal(
                    proto_msg_error_parse(KILN_MSG_WRITE_OBJECT, KILN_ST_OFFSET, p, n, &e),
                    KILN_OK);
                assert_int_equal(e.type, KILN_MSG_WRITE_OBJECT);
                assert_int_equal(e.status, KILN_ST_OFFSET);
                assert_int_equal(e.detail, 512);
                assert_string_equal(e.msg, "offset mismatch");
                check_strict("8.6 error", p_error, p, n);
        }
        /* 8.8 FUSE_PROGRAM response */
        {
                struct proto_fuse f;

                n = unhex("0d64656275675f64697361626c650100000101", p, sizeof(p));
                assert_int_equal(proto_msg_fuse_parse(p, n, &f), KILN_OK);
                assert_string_equal(f.name, "debug_disable");
                assert_int_equal(f.width_bits, 1);
                assert_int_equal(f.attributes, 0);
                assert_int_equal(f.value_len, 1);
                assert_int_equal(f.value[0], 1);
                check_strict("8.8 FUSE", p_fuse, p, n);
        }
        /* 8.3 NAK */
        {
                uint8_t reason = 0;

                n = unhex("01000000", p, sizeof(p));
                assert_int_equal(proto_msg_nak_parse(p, n, &reason), KILN_OK);
                assert_int_equal(reason, KILN_NAK_CRC);
                check_strict("8.3 NAK", p_nak, p, n);
        }
}

/* ---- parsers: the other responses ---- */

static void info_payload(struct pw *w)
{
        w->n = 0;
        pw_u8(w, 8);
        pw_bytes(w, "\x00\x11\x22\x33\x44\x55\x66\x77", 8);
        pw_name(w, "smartplug-a1");
        pw_le16(w, 3);
        pw_u8(w, 5);
        pw_bytes(w, "1.2.3", 5);
        pw_fill(w, 0xAB, 32);
        pw_u8(w, KILN_LC_MANUFACTURING);
        pw_u8(w, 1);
        pw_u8(w, 0);
        pw_u8(w, 4);
        pw_le16(w, 0x0005);
}

static void keygen_payload(struct pw *w)
{
        w->n = 0;
        pw_u8(w, 1);
        pw_u8(w, KILN_ALG_ECDSA_P256_SHA256);
        pw_le16(w, 65);
        pw_u8(w, 0x04);
        pw_fill(w, 0x11, 64);
        pw_le16(w, 64);
        pw_fill(w, 0x22, 64);
}

static void test_parse_info(void **state)
{
        struct proto_info in;
        struct pw w;

        (void)state;
        info_payload(&w);
        assert_int_equal(proto_msg_info_parse(w.b, w.n, &in), KILN_OK);
        assert_int_equal(in.chip_uid_len, 8);
        assert_memory_equal(in.chip_uid, "\x00\x11\x22\x33\x44\x55\x66\x77", 8);
        assert_string_equal(in.product_id, "smartplug-a1");
        assert_int_equal(in.hw_revision, 3);
        assert_string_equal(in.fw_version, "1.2.3");
        assert_int_equal(in.fw_sha256[31], 0xAB);
        assert_int_equal(in.lifecycle, KILN_LC_MANUFACTURING);
        assert_int_equal(in.debug_port, 1);
        assert_int_equal(in.secure_boot, 0);
        assert_int_equal(in.key_slots, 4);
        assert_int_equal(in.key_present, 5);
        check_strict("GET_INFO", p_info, w.b, w.n);

        /* an empty firmware version is allowed; an empty chip UID is not */
        w.n = 0;
        pw_u8(&w, 1);
        pw_u8(&w, 0x42);
        pw_name(&w, "p");
        pw_le16(&w, 0);
        pw_u8(&w, 0);
        pw_fill(&w, 0, 32);
        pw_u8(&w, KILN_LC_DECOMMISSIONED);
        pw_u8(&w, 0);
        pw_u8(&w, 1);
        pw_u8(&w, 16);
        pw_le16(&w, 0xFFFF);
        assert_int_equal(proto_msg_info_parse(w.b, w.n, &in), KILN_OK);
        assert_string_equal(in.fw_version, "");
        assert_int_equal(in.key_slots, 16);
        w.b[0] = 0;
        assert_int_equal(proto_msg_info_parse(w.b, w.n, &in), KILN_E_PROTO_MALFORMED);

        /* field by field: each mutation is refused */
        {
                struct {
                        size_t off;
                        uint8_t val;
                        const char *field;
                } bad[] = {
                    {0, 33, "chip_uid"},      /* over KILN_UID_MAX */
                    {9, 0, "product_id"},     /* empty name */
                    {9, 33, "product_id"},    /* name too long */
                    {12, '/', "product_id"},  /* bad character */
                    {24, 33, "fw_version"},   /* version too long */
                    {26, 0x07, "fw_version"}, /* not printable */
                    {62, 0, "lifecycle"},     /* unknown lifecycle */
                    {62, 5, "lifecycle"},     {63, 2, "debug_port"},     {64, 2, "secure_boot"},
                    {65, 17, "key_slots"},    {66, 0x10, "key_present"}, /* slot 4 of 4 */
                };

                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                        info_payload(&w);
                        assert_int_equal(w.n, 68);
                        w.b[bad[i].off] = bad[i].val;
                        kiln_err_reset();
                        if (proto_msg_info_parse(w.b, w.n, &in) != KILN_E_PROTO_MALFORMED)
                                fail_msg("GET_INFO with bad %s accepted", bad[i].field);
                        if (strstr(kiln_err_detail(), bad[i].field) == NULL)
                                fail_msg("detail '%s' does not name %s", kiln_err_detail(),
                                         bad[i].field);
                }
        }
}

static void test_parse_keygen_attest(void **state)
{
        struct proto_keygen k;
        struct proto_attest a;
        struct pw w;

        (void)state;
        keygen_payload(&w);
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_OK);
        assert_int_equal(k.key_slot, 1);
        assert_int_equal(k.public_key_len, 65);
        assert_int_equal(k.public_key[0], 4);
        assert_int_equal(k.signature_len, 64);
        assert_int_equal(k.signature[63], 0x22);
        check_strict("KEYGEN", p_keygen, w.b, w.n);
        /* compressed point, wrong key length, wrong signature length, unknown algorithm, slot */
        keygen_payload(&w);
        w.b[4] = 0x02;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[2] = 66;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[2] = 64;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[69] = 65;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[3] = 1; /* length 0x0141: far more than the input holds */
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[1] = 2;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);
        keygen_payload(&w);
        w.b[0] = 16;
        assert_int_equal(proto_msg_keygen_parse(w.b, w.n, &k), KILN_E_PROTO_MALFORMED);

        w.n = 0;
        pw_u8(&w, 3);
        pw_u8(&w, 1);
        pw_le16(&w, 64);
        pw_fill(&w, 0x33, 64);
        assert_int_equal(proto_msg_attest_parse(w.b, w.n, &a), KILN_OK);
        assert_int_equal(a.key_slot, 3);
        assert_int_equal(a.signature_len, 64);
        check_strict("ATTEST", p_attest, w.b, w.n);
        w.b[2] = 63;
        assert_int_equal(proto_msg_attest_parse(w.b, w.n, &a), KILN_E_PROTO_MALFORMED);
}

static void test_parse_objects(void **state)
{
        struct proto_read_result rr;
        struct proto_object_hash h;
        struct proto_write_result wr;
        struct pw w;

        (void)state;
        /* READ_OBJECT */
        w.n = 0;
        pw_le32(&w, 100);
        pw_le32(&w, 90);
        pw_le32(&w, 10);
        pw_fill(&w, 0x5C, 10);
        assert_int_equal(proto_msg_read_parse(w.b, w.n, &rr), KILN_OK);
        assert_int_equal(rr.total_len, 100);
        assert_int_equal(rr.offset, 90);
        assert_int_equal(rr.data_len, 10);
        assert_ptr_equal(rr.data, w.b + 12);
        check_strict("READ_OBJECT", p_read, w.b, w.n);
        w.b[8] = 11; /* more data than the object has left */
        w.b[w.n++] = 0x5C;
        assert_int_equal(proto_msg_read_parse(w.b, w.n, &rr), KILN_E_PROTO_MALFORMED);
        w.n = 0;
        pw_le32(&w, 10);
        pw_le32(&w, 11); /* offset past the end */
        pw_le32(&w, 0);
        assert_int_equal(proto_msg_read_parse(w.b, w.n, &rr), KILN_E_PROTO_MALFORMED);
        w.n = 0;
        pw_le32(&w, 0xFFFFFFFF);
        pw_le32(&w, 0);
        pw_le32(&w, 0xFFFFFFFF); /* a huge length with 0 bytes behind it */
        assert_int_equal(proto_msg_read_parse(w.b, w.n, &rr), KILN_E_PROTO_MALFORMED);
        w.n = 0;
        pw_le32(&w, 0);
        pw_le32(&w, 0);
        pw_le32(&w, 0);
        assert_int_equal(proto_msg_read_parse(w.b, w.n, &rr), KILN_OK); /* empty object */

        /* OBJECT_HASH */
        w.n = 0;
        pw_le32(&w, 1000);
        pw_le32(&w, 400);
        pw_u8(&w, 0);
        pw_u8(&w, KILN_OBJ_SECRET);
        pw_le16(&w, 0);
        pw_fill(&w, 0xEE, 32);
        assert_int_equal(proto_msg_hash_parse(w.b, w.n, &h), KILN_OK);
        assert_int_equal(h.total_len, 1000);
        assert_int_equal(h.received, 400);
        assert_int_equal(h.complete, 0);
        assert_int_equal(h.flags, KILN_OBJ_SECRET);
        assert_int_equal(h.sha256[0], 0xEE);
        check_strict("OBJECT_HASH", p_hash, w.b, w.n);
        w.b[8] = 1; /* complete with 400 of 1000 */
        assert_int_equal(proto_msg_hash_parse(w.b, w.n, &h), KILN_E_PROTO_MALFORMED);
        w.b[8] = 2;
        assert_int_equal(proto_msg_hash_parse(w.b, w.n, &h), KILN_E_PROTO_MALFORMED);
        w.b[8] = 0;
        kiln_put_le32(w.b + 4, 1001); /* more received than total */
        assert_int_equal(proto_msg_hash_parse(w.b, w.n, &h), KILN_E_PROTO_MALFORMED);

        /* WRITE_OBJECT complete byte */
        w.n = 0;
        pw_le32(&w, 5);
        pw_u8(&w, 2);
        pw_fill(&w, 0, 3);
        assert_int_equal(proto_msg_write_parse(w.b, w.n, &wr), KILN_E_PROTO_MALFORMED);
        w.b[4] = 1;
        w.b[5] = 0x7F; /* reserved bytes are ignored */
        assert_int_equal(proto_msg_write_parse(w.b, w.n, &wr), KILN_OK);
        assert_int_equal(wr.complete, 1);
}

static void test_parse_fuse(void **state)
{
        struct proto_fuse f;
        struct pw w;

        (void)state;
        /* 48-bit MAC field */
        w.n = 0;
        pw_name(&w, "mac0");
        pw_le16(&w, 48);
        pw_u8(&w, KILN_FUSE_WRITE_PROTECTED);
        pw_u8(&w, 6);
        pw_bytes(&w, "\x02\x00\x00\xab\xcd\xef", 6);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_OK);
        assert_int_equal(f.width_bits, 48);
        assert_int_equal(f.value_len, 6);
        assert_int_equal(f.attributes, KILN_FUSE_WRITE_PROTECTED);
        check_strict("FUSE mac0", p_fuse, w.b, w.n);
        /* widest field: 512 bits */
        w.n = 0;
        pw_name(&w, "wide");
        pw_le16(&w, 512);
        pw_u8(&w, 0);
        pw_u8(&w, 64);
        pw_fill(&w, 0xFF, 64);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_OK);
        kiln_put_le16(w.b + 5, 513);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
        kiln_put_le16(w.b + 5, 0);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
        /* value length not ceil(width / 8) */
        kiln_put_le16(w.b + 5, 504);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
        /* a bit above the width */
        w.n = 0;
        pw_name(&w, "debug_disable");
        pw_le16(&w, 1);
        pw_u8(&w, 0);
        pw_u8(&w, 1);
        pw_u8(&w, 0x03);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
        /* bad names */
        w.n = 0;
        pw_name(&w, "debug disable");
        pw_le16(&w, 1);
        pw_u8(&w, 0);
        pw_u8(&w, 1);
        pw_u8(&w, 0x01);
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
        w.b[0] = 0;
        assert_int_equal(proto_msg_fuse_parse(w.b, w.n, &f), KILN_E_PROTO_MALFORMED);
}

static void test_parse_small(void **state)
{
        struct proto_device_error e;
        uint8_t lc = 0, reason = 0;
        struct pw w;

        (void)state;
        /* SET_LIFECYCLE */
        assert_int_equal(proto_msg_lifecycle_parse((const uint8_t *)"\x02", 1, &lc), KILN_OK);
        assert_int_equal(lc, KILN_LC_PRODUCTION);
        check_strict("SET_LIFECYCLE", p_lifecycle, (const uint8_t *)"\x03", 1);
        assert_int_equal(proto_msg_lifecycle_parse((const uint8_t *)"\x00", 1, &lc),
                         KILN_E_PROTO_MALFORMED);
        assert_int_equal(proto_msg_lifecycle_parse((const uint8_t *)"\x05", 1, &lc),
                         KILN_E_PROTO_MALFORMED);
        /* RESET: empty, nothing else */
        check_strict("RESET", p_reset, (const uint8_t *)"", 0);
        /* NAK: unknown reason */
        assert_int_equal(proto_msg_nak_parse((const uint8_t *)"\x05\0\0\0", 4, &reason),
                         KILN_E_PROTO_MALFORMED);
        assert_int_equal(proto_msg_nak_parse((const uint8_t *)"\x00\0\0\0", 4, &reason),
                         KILN_E_PROTO_MALFORMED);
        /* error: 64-byte message is the maximum; 65 refused; unprintable bytes replaced */
        w.n = 0;
        pw_le32(&w, 7);
        pw_u8(&w, 64);
        pw_fill(&w, 'm', 64);
        assert_int_equal(proto_msg_error_parse(1, KILN_ST_INTERNAL, w.b, w.n, &e), KILN_OK);
        assert_int_equal(strlen(e.msg), 64);
        w.b[4] = 65;
        w.b[w.n++] = 'm';
        assert_int_equal(proto_msg_error_parse(1, KILN_ST_INTERNAL, w.b, w.n, &e),
                         KILN_E_PROTO_MALFORMED);
        w.n = 0;
        pw_le32(&w, 0);
        pw_u8(&w, 4);
        pw_bytes(&w, "a\x1b[m", 4);
        assert_int_equal(proto_msg_error_parse(1, KILN_ST_INTERNAL, w.b, w.n, &e), KILN_OK);
        assert_string_equal(e.msg, "a?[m");
        /* empty message */
        w.n = 0;
        pw_le32(&w, 0);
        pw_u8(&w, 0);
        assert_int_equal(proto_msg_error_parse(1, KILN_ST_BUSY, w.b, w.n, &e), KILN_OK);
        assert_string_equal(e.msg, "");
}

static void test_parse_hello_bad(void **state)
{
        uint8_t p[128];
        struct proto_hello h;
        size_t n;
        const char *hello = "010000000010000000100000123456789abcdef00f1e2d3c4b5a69783f0000000e6b"
                            "696c6e2d6167656e742d312e30";

        (void)state;
        n = unhex(hello, p, sizeof(p));
        p[0] = 2; /* version */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        n = unhex(hello, p, sizeof(p));
        kiln_put_le32(p + 4, 255); /* device maximum below 256 */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        n = unhex(hello, p, sizeof(p));
        kiln_put_le32(p + 8, KILN_PAYLOAD_MAX + 1); /* negotiated over any Kiln maximum */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        n = unhex(hello, p, sizeof(p));
        memset(p + 12, 0, 4); /* session id 0 */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        n = unhex(hello, p, sizeof(p));
        p[n - 3] = '/'; /* agent name with a bad character */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        n = unhex(hello, p, sizeof(p));
        p[32] = 15; /* agent length longer than the rest */
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        /* reserved bytes are ignored */
        n = unhex(hello, p, sizeof(p));
        p[1] = 0xFF;
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_OK);
        /* outputs untouched on failure */
        memset(&h, 0x5A, sizeof(h));
        p[0] = 9;
        assert_int_equal(proto_msg_hello_parse(p, n, &h), KILN_E_PROTO_MALFORMED);
        assert_int_equal(h.version, 0x5A);
}

static void test_names(void **state)
{
        (void)state;
        assert_string_equal(proto_msg_type_name(KILN_MSG_FUSE_PROGRAM), "FUSE_PROGRAM");
        assert_string_equal(proto_msg_type_name(KILN_MSG_NAK), "NAK");
        assert_string_equal(proto_msg_type_name(0x42), "UNKNOWN");
        assert_string_equal(proto_msg_type_name(0xFF), "UNKNOWN");
        assert_string_equal(proto_status_name(KILN_ST_LIFECYCLE), "LIFECYCLE");
        assert_string_equal(proto_status_name(KILN_ST_INTERNAL), "INTERNAL");
        assert_string_equal(proto_status_name(17), "UNKNOWN");
        assert_string_equal(proto_lifecycle_name(KILN_LC_RMA), "RMA");
        assert_string_equal(proto_lifecycle_name(0), "UNKNOWN");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_build_vectors), cmocka_unit_test(test_build_others),
            cmocka_unit_test(test_build_refuses), cmocka_unit_test(test_parse_vectors),
            cmocka_unit_test(test_parse_info),    cmocka_unit_test(test_parse_keygen_attest),
            cmocka_unit_test(test_parse_objects), cmocka_unit_test(test_parse_fuse),
            cmocka_unit_test(test_parse_small),   cmocka_unit_test(test_parse_hello_bad),
            cmocka_unit_test(test_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
