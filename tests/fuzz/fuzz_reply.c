/*
 * Fuzz what a device says to the host.
 *
 * 1. Every response parser of kiln/msg.h runs on the whole input.
 * 2. A host session runs a full provisioning dialogue over a fuzz transport whose reads return
 *    device replies made from the input, so hostile replies reach the real session code: framing,
 *    request matching, NAK and retry handling, session changes, error payloads, typed-call checks
 *    and the whole-object helpers. The transport decodes the host's requests (to learn the request
 *    id, type and session the replies should carry, so the fuzzer does not have to guess a CRC) and
 *    runs on a virtual clock, so timeouts cost nothing.
 *
 * Input after the parsers: a sequence of records, consumed one per read when nothing is pending.
 *
 *     ctl u8
 *       ctl & 7 == 0   raw:    n u8, then n bytes sent verbatim (noise, boot log, hand-made frames)
 *       ctl & 7 == 7   hangup: the read reports KILN_E_DEVICE_GONE
 *       otherwise      frame:  status u8 (mod 20), len u16 LE, len payload bytes, encoded as the
 *                      response to the last request. Bits of ctl: 0x08 another request id,
 *                      0x10 another type, 0x20 another session id, 0x40 a NAK instead, 0x80
 *                      deliver it in 3-byte reads.
 *
 * The session id a reply carries is the one of the last HELLO response made here (the nonce bytes
 * 12..15 of its payload), so once the input holds a plausible HELLO reply the dialogue goes deep.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/endian.h"
#include "kiln/error.h"
#include "kiln/frame.h"
#include "kiln/msg.h"
#include "kiln/session.h"
#include "kiln/transport.h"
#include "kiln/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HOST_MAX 1024u

struct fuzz_dev {
        const uint8_t *in;
        size_t len;
        size_t off;
        uint64_t now;
        /* bytes waiting for the host */
        uint8_t q[KILN_FRAME_WIRE_MAX(65535u) + 512];
        size_t q_len, q_off;
        size_t piece; /* max bytes per read, 0 = all */
        /* the host's last request, decoded from its writes */
        struct kiln_decoder dec;
        uint8_t dec_buf[KILN_FRAME_WIRE_MAX(HOST_MAX)];
        uint8_t type;
        uint32_t id;
        uint32_t session;
        int exhausted;
};

static void parse_all(const uint8_t *p, size_t n)
{
        struct proto_hello h;
        struct proto_info in;
        struct proto_keygen k;
        struct proto_write_result w;
        struct proto_read_result rr;
        struct proto_object_hash oh;
        struct proto_fuse f;
        struct proto_attest a;
        struct proto_device_error e;
        uint8_t u8;

        (void)proto_msg_hello_parse(p, n, &h);
        (void)proto_msg_info_parse(p, n, &in);
        (void)proto_msg_keygen_parse(p, n, &k);
        (void)proto_msg_write_parse(p, n, &w);
        if (proto_msg_read_parse(p, n, &rr) == KILN_OK && rr.data_len > 0) {
                /* the view must lie inside the input */
                if (rr.data < p || rr.data + rr.data_len > p + n)
                        __builtin_trap();
        }
        (void)proto_msg_hash_parse(p, n, &oh);
        (void)proto_msg_fuse_parse(p, n, &f);
        (void)proto_msg_attest_parse(p, n, &a);
        (void)proto_msg_lifecycle_parse(p, n, &u8);
        (void)proto_msg_reset_parse(p, n);
        (void)proto_msg_nak_parse(p, n, &u8);
        if (proto_msg_error_parse(KILN_MSG_FUSE_PROGRAM, n > 0 ? p[0] : 1, p, n, &e) == KILN_OK) {
                for (size_t i = 0; e.msg[i] != '\0'; i++)
                        if (e.msg[i] < 0x20 || e.msg[i] > 0x7E)
                                __builtin_trap();
        }
        kiln_err_reset();
}

static void q_add(struct fuzz_dev *d, const uint8_t *p, size_t n)
{
        if (d->q_off == d->q_len)
                d->q_off = d->q_len = 0;
        if (n > sizeof(d->q) - d->q_len)
                n = sizeof(d->q) - d->q_len;
        memcpy(d->q + d->q_len, p, n);
        d->q_len += n;
}

/* Turn the next record into bytes for the host. Returns 1 for a hangup, 0 otherwise. */
static int next_record(struct fuzz_dev *d)
{
        uint8_t ctl, status;
        size_t n;

        if (d->off >= d->len) {
                d->exhausted = 1;
                return 0;
        }
        ctl = d->in[d->off++];
        d->piece = (ctl & 0x80) ? 3 : 0;
        if ((ctl & 7) == 0) {
                n = d->off < d->len ? d->in[d->off++] : 0;
                if (n > d->len - d->off)
                        n = d->len - d->off;
                q_add(d, d->in + d->off, n);
                d->off += n;
                return 0;
        }
        if ((ctl & 7) == 7)
                return 1;
        if (d->len - d->off < 3) {
                d->off = d->len;
                return 0;
        }
        status = (uint8_t)(d->in[d->off] % 20);
        n = kiln_le16(d->in + d->off + 1);
        d->off += 3;
        if (n > d->len - d->off)
                n = d->len - d->off;
        {
                struct kiln_frame f;
                uint8_t wire[KILN_FRAME_WIRE_MAX(65535u)];
                size_t wlen = 0;

                f.version = KILN_PROTO_VERSION;
                f.type = (ctl & 0x40) ? KILN_MSG_NAK : d->type;
                if (ctl & 0x10)
                        f.type ^= 0x05;
                f.flags = KILN_FLAG_RESPONSE;
                f.status = status;
                /* a HELLO reply names its session in the nonce (payload bytes 12..15) */
                if (d->type == KILN_MSG_HELLO && status == 0 && n >= 16 && !(ctl & 0x40))
                        d->session = kiln_le32(d->in + d->off + 12);
                f.session = d->session ^ ((ctl & 0x20) ? 0x01000000u : 0);
                f.request_id = (ctl & 0x40) ? 0 : d->id + ((ctl & 0x08) ? 1 : 0);
                f.len = (uint32_t)n;
                f.payload = d->in + d->off;
                if (kiln_frame_encode(&f, wire, sizeof(wire), &wlen) == KILN_OK)
                        q_add(d, wire, wlen);
        }
        d->off += n;
        return 0;
}

static int fz_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct fuzz_dev *d = ctx;
        size_t avail;

        if (d->q_off == d->q_len && next_record(d))
                return kiln_fail(KILN_E_DEVICE_GONE, "fuzz device hung up");
        avail = d->q_len - d->q_off;
        if (avail == 0) {
                d->now += timeout_ms;
                return KILN_E_TIMEOUT;
        }
        if (d->piece && n > d->piece)
                n = d->piece;
        if (n > avail)
                n = avail;
        memcpy(buf, d->q + d->q_off, n);
        d->q_off += n;
        d->now += 1;
        return (int)n;
}

static int fz_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct fuzz_dev *d = ctx;
        size_t off = 0;

        (void)timeout_ms;
        while (off < n) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&d->dec, buf + off, n - off, &used, &f);

                off += used;
                if (r == KILN_DEC_FRAME) {
                        d->type = f.type;
                        d->id = f.request_id;
                } else if (r < 0) {
                        /* the host only ever sends well-formed frames */
                        __builtin_trap();
                }
        }
        return KILN_OK;
}

static uint64_t fz_now(void *ctx)
{
        return ((struct fuzz_dev *)ctx)->now;
}

static const struct proto_transport_ops fz_ops = {fz_read, fz_write, NULL, fz_now};

/* Run one call; on a session change say HELLO again, as a station would. */
static void after(struct proto_session *s, int r)
{
        if (r == KILN_E_PROTO_SESSION)
                (void)proto_session_hello(s, NULL);
        kiln_err_reset();
}

static void dialogue(struct proto_session *s, struct fuzz_dev *d)
{
        static const uint8_t nonce[KILN_NONCE_LEN] = {1, 2, 3};
        static uint8_t object[700];
        struct proto_hello h;
        struct proto_info in;
        struct proto_keygen k;
        struct proto_write_result w;
        struct proto_read_result rr;
        struct proto_object_hash oh;
        struct proto_fuse f;
        struct proto_attest a;
        struct proto_write_req req = {"cert", 0, 40, 0, object, 40};
        const uint8_t *p;
        uint8_t *back = NULL;
        size_t n, back_len;
        uint8_t lc;

        for (size_t i = 0; i < sizeof(object); i++)
                object[i] = (uint8_t)i;
        for (int round = 0; round < 4 && !d->exhausted; round++) {
                after(s, proto_session_hello(s, &h));
                after(s, proto_session_get_info(s, &in));
                after(s, proto_session_keygen(s, 0, KILN_ALG_ECDSA_P256_SHA256, nonce, &k));
                after(s, proto_session_write_chunk(s, &req, &w));
                after(s, proto_session_read_chunk(s, "cert", 0, 100, &rr));
                after(s, proto_session_object_hash(s, "cert", &oh));
                after(s, proto_session_fuse_read(s, "debug_disable", &f));
                after(s, proto_session_fuse_read_index(s, 3, &f));
                after(s, proto_session_fuse_program(s, "mac0", (const uint8_t *)"\1\2\3\4\5\6", 6,
                                                    &f));
                after(s, proto_session_attest(s, 0, nonce, &a));
                after(s, proto_session_set_lifecycle(s, KILN_LC_PRODUCTION, &lc));
                after(s, proto_session_call(s, 0x42, NULL, 0, &p, &n));
                after(s, proto_object_write(s, "fw", 0, object, sizeof(object), NULL, NULL));
                if (proto_object_read(s, "fw", 2048, &back, &back_len) == KILN_OK) {
                        if (back_len > 2048)
                                __builtin_trap();
                        kiln_free(back);
                        back = NULL;
                }
                kiln_err_reset();
                after(s, proto_session_reset(s, 0));
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct proto_session_opts o;
        struct proto_transport *t = NULL;
        struct proto_session *s = NULL;
        struct fuzz_dev *d;

        kiln_err_reset();
        parse_all(data, size);

        d = calloc(1, sizeof(*d));
        if (d == NULL)
                return 0;
        d->in = data;
        d->len = size;
        d->now = 1;
        kiln_decoder_init(&d->dec, d->dec_buf, sizeof(d->dec_buf), HOST_MAX);
        proto_session_opts_default(&o);
        o.host_max_payload = HOST_MAX;
        o.attempts = 2;
        o.first_request_id = 1;
        if (proto_transport_new(&fz_ops, d, "fuzz", 115200, &t) == KILN_OK &&
            proto_session_new(t, &o, &s) == KILN_OK)
                dialogue(s, d);
        proto_session_free(s);
        proto_transport_free(t);
        free(d);
        kiln_err_reset();
        return 0;
}
