/*
 * Host session against a scripted fake device over an in-memory transport.
 *
 * The fake device is written here, on top of the frame codec: it decodes requests, NAKs rejected
 * candidates, keeps the per-boot session and the response memory of docs/protocol.md §4, and runs
 * an object store, fuses, keys and the lifecycle well enough for the host code. Scripted faults:
 * dropped and corrupted bytes both ways, NAKs, lost responses, reboots, stray frames, boot-log
 * noise, error statuses, a power cut in the middle of an object write, a stored object that goes
 * bad.
 *
 * The transport runs on a virtual clock (its now_ms op): a read with nothing to deliver advances
 * the clock by its timeout and reports KILN_E_TIMEOUT, so deadlines are exercised exactly and the
 * tests never wait. One test uses the real clock with tiny timeouts. No test asserts wall-clock
 * timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "kiln/buf.h"
#include "kiln/endian.h"
#include "kiln/error.h"
#include "kiln/frame.h"
#include "kiln/session.h"
#include "kiln/transport.h"
#include "kiln/util.h"

#define DEV_MAX_PAYLOAD 1024u
#define DEV_OBJECTS 4
#define LOG_MAX 4096

/* --- Fake device --- */

struct dev_obj {
        char name[KILN_NAME_MAX + 1];
        uint8_t flags;
        uint32_t total;
        uint32_t held;
        uint8_t *data;
        int used;
};

struct dev_fuse {
        const char *name;
        uint16_t width;
        uint8_t attrs;
        uint8_t value[KILN_FUSE_BYTES_MAX];
};

struct seen {
        uint8_t type;
        uint8_t flags;
        uint32_t id;
        uint32_t session;
};

struct link;

struct dev {
        struct link *link;
        struct kiln_decoder dec;
        uint8_t dec_buf[KILN_FRAME_WIRE_MAX(4096u)];
        uint32_t session;
        uint8_t nonce[16];
        uint32_t boots;
        uint32_t max_payload;
        uint8_t lifecycle;

        /* response memory (§4.3): the fingerprint and the exact wire bytes */
        int mem_valid;
        uint32_t mem_id;
        uint8_t mem_type;
        uint32_t mem_len;
        uint32_t mem_crc;
        uint8_t mem_wire[KILN_FRAME_WIRE_MAX(4096u)];
        size_t mem_wire_len;

        struct dev_obj objs[DEV_OBJECTS];
        struct dev_obj wip;
        struct dev_fuse fuses[3];

        /* scripted behaviour */
        unsigned silent; /* lose the next N responses (after executing) */
        int silent_forever;
        unsigned nak_next; /* answer the next N frames with NAK, executing nothing */
        int nak_forever;
        int nak_new_session;       /* reboot, then NAK with the new session */
        int reboot_next;           /* reboot before handling the next request */
        int lie_session;           /* status-OK responses carry another session id */
        int stray_frames;          /* send a wrong-id and a wrong-type response first */
        int boot_noise;            /* boot-log text and random bytes before each response */
        size_t flood;              /* bytes of noise before each response */
        int flood_only;            /* ... and then no response */
        uint8_t force_status;      /* answer the next executed request with this status */
        uint8_t force_type;        /* ... only for this type (0: any) */
        int corrupt_store;         /* flip a byte of an object when it completes */
        unsigned cut_after_chunks; /* power cut after this many executed WRITE_OBJECT chunks */
        int reset_lost;            /* lose the RESET response (then reboot) */
        int corrupt_read;          /* flip a byte of READ_OBJECT data on the way out */
        unsigned forget_wip_after; /* lose the partial write after this many chunks */

        /* what happened */
        unsigned executed[KILN_MSG_MAX];
        unsigned frames;
        unsigned naks_sent;
        unsigned write_chunks;
        struct seen log[LOG_MAX];
};

struct link {
        struct dev dev;
        uint8_t *q; /* device -> host bytes */
        size_t q_head, q_len, q_cap;
        uint64_t now;
        uint32_t rng;
        unsigned h2d_drop, h2d_corrupt, d2h_drop, d2h_corrupt; /* per mille, per byte */
        size_t max_read; /* deliver at most this many bytes per read (0: all) */
        int gone;        /* the transport reports the device unplugged */
        int real_clock;  /* use the system clock and sleep on empty reads */
        uint32_t baud;
};

static uint32_t rnd(struct link *l)
{
        l->rng ^= l->rng << 13;
        l->rng ^= l->rng >> 17;
        l->rng ^= l->rng << 5;
        return l->rng;
}

static void q_put(struct link *l, const uint8_t *p, size_t n, int faults)
{
        for (size_t i = 0; i < n; i++) {
                uint8_t b = p[i];

                if (faults && l->d2h_drop && rnd(l) % 1000 < l->d2h_drop)
                        continue;
                if (faults && l->d2h_corrupt && rnd(l) % 1000 < l->d2h_corrupt)
                        b ^= (uint8_t)(1u << (rnd(l) % 8));
                if (l->q_len == l->q_cap) {
                        size_t ncap = l->q_cap ? l->q_cap * 2 : 4096;

                        if (l->q_head > 0) {
                                memmove(l->q, l->q + l->q_head, l->q_len - l->q_head);
                                l->q_len -= l->q_head;
                                l->q_head = 0;
                        }
                        if (l->q_len == l->q_cap) {
                                l->q = realloc(l->q, ncap);
                                assert_non_null(l->q);
                                l->q_cap = ncap;
                        }
                }
                l->q[l->q_len++] = b;
        }
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
        static const uint8_t empty[1];
        unsigned len = 0;

        assert_int_equal(EVP_Digest(n ? p : empty, n, out, &len, EVP_sha256(), NULL), 1);
}

static void dev_boot(struct dev *d)
{
        struct link *l = d->link;

        d->boots++;
        do {
                for (int i = 0; i < 16; i++)
                        d->nonce[i] = (uint8_t)rnd(l);
                d->session = kiln_le32(d->nonce);
        } while (d->session == 0);
        d->mem_valid = 0;
        d->max_payload = KILN_PAYLOAD_MIN_MAX;
        d->dec.max_payload = KILN_PAYLOAD_MIN_MAX;
        kiln_decoder_reset(&d->dec);
}

static void dev_init(struct dev *d, struct link *l)
{
        memset(d, 0, sizeof(*d));
        d->link = l;
        kiln_decoder_init(&d->dec, d->dec_buf, sizeof(d->dec_buf), KILN_PAYLOAD_MIN_MAX);
        d->lifecycle = KILN_LC_MANUFACTURING;
        d->fuses[0].name = "debug_disable";
        d->fuses[0].width = 1;
        d->fuses[1].name = "mac0";
        d->fuses[1].width = 48;
        d->fuses[2].name = "sb_key_hash";
        d->fuses[2].width = 256;
        d->fuses[2].attrs = KILN_FUSE_READ_PROTECTED;
        dev_boot(d);
}

static void dev_free(struct dev *d)
{
        for (int i = 0; i < DEV_OBJECTS; i++)
                free(d->objs[i].data);
        free(d->wip.data);
}

/* Send one frame towards the host, with the scripted extras in front. */
static void dev_emit(struct dev *d, const uint8_t *wire, size_t n)
{
        struct link *l = d->link;

        if (d->boot_noise) {
                static const char text[] =
                    "\r\nkiln-fake boot 1.0 (noise test)\r\nDRAM: 64 MiB\r\n";
                uint8_t junk[24];

                q_put(l, (const uint8_t *)text, sizeof(text) - 1, 1);
                for (size_t i = 0; i < sizeof(junk); i++)
                        junk[i] = (uint8_t)rnd(l);
                q_put(l, junk, sizeof(junk), 1);
        }
        if (d->flood > 0) {
                uint8_t junk[4096];

                for (size_t done = 0; done < d->flood; done += sizeof(junk)) {
                        for (size_t i = 0; i < sizeof(junk); i++)
                                junk[i] = (uint8_t)(rnd(l) | 1); /* no delimiters at all */
                        q_put(l, junk,
                              d->flood - done < sizeof(junk) ? d->flood - done : sizeof(junk), 0);
                }
                if (d->flood_only)
                        return;
        }
        q_put(l, wire, n, 1);
}

static void dev_frame(struct dev *d, uint8_t type, uint8_t status, uint32_t session, uint32_t id,
                      const uint8_t *p, size_t n, uint8_t *wire, size_t *ret_len)
{
        struct kiln_frame f = {1, type, KILN_FLAG_RESPONSE, status, session, id, (uint32_t)n, p};

        (void)d;
        assert_int_equal(kiln_frame_encode(&f, wire, KILN_FRAME_WIRE_MAX(4096u), ret_len), KILN_OK);
}

static void dev_nak(struct dev *d, uint8_t reason)
{
        uint8_t wire[64], p[4] = {reason, 0, 0, 0};
        size_t n = 0;

        d->naks_sent++;
        dev_frame(d, KILN_MSG_NAK, 0, d->session, 0, p, 4, wire, &n);
        dev_emit(d, wire, n);
}

static void dev_error_payload(struct kiln_buf *b, uint32_t detail, const char *msg)
{
        kiln_buf_put_le32(b, detail);
        kiln_buf_put_u8(b, (uint8_t)strlen(msg));
        kiln_buf_put_str(b, msg);
}

static int rd_name(struct kiln_rd *r, char out[KILN_NAME_MAX + 1])
{
        uint8_t len = 0;
        const uint8_t *p = NULL;

        if (kiln_rd_u8(r, &len) < 0 || len < 1 || len > KILN_NAME_MAX ||
            kiln_rd_bytes(r, len, &p) < 0)
                return -1;
        memcpy(out, p, len);
        out[len] = '\0';
        return 0;
}

static struct dev_obj *dev_obj_find(struct dev *d, const char *name)
{
        for (int i = 0; i < DEV_OBJECTS; i++)
                if (d->objs[i].used && strcmp(d->objs[i].name, name) == 0)
                        return &d->objs[i];
        return NULL;
}

static struct dev_fuse *dev_fuse_find(struct dev *d, const char *name)
{
        for (int i = 0; i < 3; i++)
                if (strcmp(d->fuses[i].name, name) == 0)
                        return &d->fuses[i];
        return NULL;
}

static void dev_fuse_resp(struct kiln_buf *b, const struct dev_fuse *fu)
{
        uint8_t n = (uint8_t)((fu->width + 7) / 8);

        kiln_buf_put_u8(b, (uint8_t)strlen(fu->name));
        kiln_buf_put_str(b, fu->name);
        kiln_buf_put_le16(b, fu->width);
        kiln_buf_put_u8(b, fu->attrs);
        kiln_buf_put_u8(b, n);
        if (fu->attrs & KILN_FUSE_READ_PROTECTED) {
                uint8_t zero[KILN_FUSE_BYTES_MAX] = {0};

                kiln_buf_put(b, zero, n);
        } else {
                kiln_buf_put(b, fu->value, n);
        }
}

/* Execute one request; fills b with the payload and returns the status. */
static uint8_t dev_execute(struct dev *d, const struct kiln_frame *f, struct kiln_buf *b,
                           int *reboot_after)
{
        struct kiln_rd r;
        char name[KILN_NAME_MAX + 1];

        kiln_rd_init(&r, f->payload, f->len);
        d->executed[f->type]++;
        if (d->force_status != 0 && (d->force_type == 0 || d->force_type == f->type)) {
                uint8_t st = d->force_status;

                d->force_status = 0;
                dev_error_payload(b, 0, "forced by the test");
                return st;
        }
        switch (f->type) {
        case KILN_MSG_HELLO: {
                uint8_t lo = 0, hi = 0;
                uint16_t res = 0;
                uint32_t host = 0;

                if (kiln_rd_u8(&r, &lo) < 0 || kiln_rd_u8(&r, &hi) < 0 ||
                    kiln_rd_le16(&r, &res) < 0 || kiln_rd_le32(&r, &host) < 0 ||
                    kiln_rd_end(&r) < 0 || host < 256) {
                        dev_error_payload(b, 0, "bad hello");
                        return KILN_ST_MALFORMED;
                }
                d->max_payload = host < DEV_MAX_PAYLOAD ? host : DEV_MAX_PAYLOAD;
                d->dec.max_payload = d->max_payload;
                kiln_buf_put_u8(b, 1);
                kiln_buf_put(b, "\0\0\0", 3);
                kiln_buf_put_le32(b, DEV_MAX_PAYLOAD);
                kiln_buf_put_le32(b, d->max_payload);
                kiln_buf_put(b, d->nonce, 16);
                kiln_buf_put_le32(b, 0x3f);
                kiln_buf_put_u8(b, 10);
                kiln_buf_put_str(b, "fake-dev-1");
                return KILN_ST_OK;
        }
        case KILN_MSG_GET_INFO:
                kiln_buf_put_u8(b, 8);
                kiln_buf_put(b, "\xC0\xFF\xEE\x00\x01\x02\x03\x04", 8);
                kiln_buf_put_u8(b, 12);
                kiln_buf_put_str(b, "smartplug-a1");
                kiln_buf_put_le16(b, 3);
                kiln_buf_put_u8(b, 5);
                kiln_buf_put_str(b, "1.0.0");
                for (int i = 0; i < 32; i++)
                        kiln_buf_put_u8(b, (uint8_t)i);
                kiln_buf_put_u8(b, d->lifecycle);
                kiln_buf_put_u8(b, d->fuses[0].value[0] ? 0 : 1);
                kiln_buf_put_u8(b, 0);
                kiln_buf_put_u8(b, 4);
                kiln_buf_put_le16(b, 0x1);
                return KILN_ST_OK;
        case KILN_MSG_KEYGEN:
        case KILN_MSG_ATTEST: {
                uint8_t slot = 0, alg = 0, key[64];

                (void)kiln_rd_u8(&r, &slot);
                (void)kiln_rd_u8(&r, &alg);
                if (f->type == KILN_MSG_ATTEST)
                        alg = KILN_ALG_ECDSA_P256_SHA256;
                if (slot >= 4) {
                        dev_error_payload(b, 0, "no such slot");
                        return KILN_ST_KEY_SLOT;
                }
                memset(key, 0x40 + slot, sizeof(key));
                kiln_buf_put_u8(b, slot);
                kiln_buf_put_u8(b, alg);
                if (f->type == KILN_MSG_KEYGEN) {
                        kiln_buf_put_le16(b, 65);
                        kiln_buf_put_u8(b, 0x04);
                        kiln_buf_put(b, key, 64);
                }
                kiln_buf_put_le16(b, 64);
                kiln_buf_put(b, key, 64);
                return KILN_ST_OK;
        }
        case KILN_MSG_WRITE_OBJECT: {
                uint8_t flags = 0;
                const uint8_t *res = NULL, *data = NULL;
                uint32_t total = 0, off = 0, len = 0;

                if (rd_name(&r, name) < 0 || kiln_rd_u8(&r, &flags) < 0 ||
                    kiln_rd_bytes(&r, 3, &res) < 0 || kiln_rd_le32(&r, &total) < 0 ||
                    kiln_rd_le32(&r, &off) < 0 || kiln_rd_le32(&r, &len) < 0 ||
                    kiln_rd_bytes(&r, len, &data) < 0 || kiln_rd_end(&r) < 0 || off > total ||
                    len > total - off) {
                        dev_error_payload(b, 0, "bad write");
                        return KILN_ST_MALFORMED;
                }
                if (off == 0) {
                        free(d->wip.data);
                        memset(&d->wip, 0, sizeof(d->wip));
                        memcpy(d->wip.name, name, sizeof(name));
                        d->wip.flags = flags;
                        d->wip.total = total;
                        d->wip.data = malloc(total ? total : 1);
                        assert_non_null(d->wip.data);
                        d->wip.used = 1;
                } else if (!d->wip.used || strcmp(d->wip.name, name) != 0 || d->wip.held != off ||
                           d->wip.total != total || d->wip.flags != flags) {
                        uint32_t held =
                            d->wip.used && strcmp(d->wip.name, name) == 0 ? d->wip.held : 0;

                        dev_error_payload(b, held, "offset mismatch");
                        return KILN_ST_OFFSET;
                }
                if (len > 0)
                        memcpy(d->wip.data + off, data, len);
                d->wip.held += len;
                d->write_chunks++;
                kiln_buf_put_le32(b, d->wip.held);
                kiln_buf_put_u8(b, d->wip.held == total);
                kiln_buf_put(b, "\0\0\0", 3);
                if (d->wip.held == total) {
                        struct dev_obj *o = dev_obj_find(d, name);

                        for (int i = 0; o == NULL && i < DEV_OBJECTS; i++)
                                if (!d->objs[i].used)
                                        o = &d->objs[i];
                        assert_non_null(o);
                        free(o->data);
                        *o = d->wip;
                        memset(&d->wip, 0, sizeof(d->wip));
                        if (d->corrupt_store && o->total > 0)
                                o->data[o->total / 2] ^= 0x01;
                }
                if (d->forget_wip_after > 0 && --d->forget_wip_after == 0 && d->wip.used) {
                        free(d->wip.data);
                        memset(&d->wip, 0, sizeof(d->wip));
                }
                if (d->cut_after_chunks > 0 && --d->cut_after_chunks == 0) {
                        /* power cut after the chunk reached flash, before the answer left */
                        *reboot_after = 2;
                }
                return KILN_ST_OK;
        }
        case KILN_MSG_READ_OBJECT: {
                uint32_t off = 0, max = 0, n;
                struct dev_obj *o;

                if (rd_name(&r, name) < 0 || kiln_rd_le32(&r, &off) < 0 ||
                    kiln_rd_le32(&r, &max) < 0 || kiln_rd_end(&r) < 0) {
                        dev_error_payload(b, 0, "bad read");
                        return KILN_ST_MALFORMED;
                }
                o = dev_obj_find(d, name);
                if (o == NULL) {
                        dev_error_payload(b, 0, "no such object");
                        return KILN_ST_NOT_FOUND;
                }
                if (max > d->max_payload - 12) {
                        dev_error_payload(b, d->max_payload, "too large");
                        return KILN_ST_TOO_LARGE;
                }
                if (off > o->total) {
                        dev_error_payload(b, 0, "offset");
                        return KILN_ST_MALFORMED;
                }
                n = o->total - off < max ? o->total - off : max;
                kiln_buf_put_le32(b, o->total);
                kiln_buf_put_le32(b, off);
                kiln_buf_put_le32(b, n);
                kiln_buf_put(b, o->data + off, n);
                if (d->corrupt_read && n > 0)
                        b->data[b->len - 1] ^= 0x20;
                return KILN_ST_OK;
        }
        case KILN_MSG_OBJECT_HASH: {
                const struct dev_obj *o;
                uint8_t h[32];

                if (rd_name(&r, name) < 0 || kiln_rd_end(&r) < 0) {
                        dev_error_payload(b, 0, "bad name");
                        return KILN_ST_MALFORMED;
                }
                o = d->wip.used && strcmp(d->wip.name, name) == 0 ? &d->wip : dev_obj_find(d, name);
                if (o == NULL) {
                        dev_error_payload(b, 0, "no such object");
                        return KILN_ST_NOT_FOUND;
                }
                sha256(o->data, o->held, h);
                kiln_buf_put_le32(b, o->total);
                kiln_buf_put_le32(b, o->held);
                kiln_buf_put_u8(b, o->held == o->total);
                kiln_buf_put_u8(b, o->flags);
                kiln_buf_put_le16(b, 0);
                kiln_buf_put(b, h, 32);
                return KILN_ST_OK;
        }
        case KILN_MSG_FUSE_READ:
        case KILN_MSG_FUSE_PROGRAM: {
                struct dev_fuse *fu = NULL;
                uint8_t len = 0;

                if (f->type == KILN_MSG_FUSE_READ && f->len >= 1 && f->payload[0] == 0) {
                        uint16_t idx = 0;

                        (void)kiln_rd_u8(&r, &len);
                        if (kiln_rd_le16(&r, &idx) < 0 || kiln_rd_end(&r) < 0) {
                                dev_error_payload(b, 0, "bad index");
                                return KILN_ST_MALFORMED;
                        }
                        fu = idx < 3 ? &d->fuses[idx] : NULL;
                } else {
                        if (rd_name(&r, name) < 0) {
                                dev_error_payload(b, 0, "bad name");
                                return KILN_ST_MALFORMED;
                        }
                        fu = dev_fuse_find(d, name);
                }
                if (fu == NULL) {
                        dev_error_payload(b, 0, "no such field");
                        return KILN_ST_NOT_FOUND;
                }
                if (f->type == KILN_MSG_FUSE_PROGRAM) {
                        const uint8_t *v = NULL;

                        if (kiln_rd_u8(&r, &len) < 0 || len != (fu->width + 7) / 8 ||
                            kiln_rd_bytes(&r, len, &v) < 0 || kiln_rd_end(&r) < 0) {
                                dev_error_payload(b, 0, "bad value");
                                return KILN_ST_MALFORMED;
                        }
                        if (d->lifecycle == KILN_LC_PRODUCTION) {
                                dev_error_payload(b, 0, "not in PRODUCTION");
                                return KILN_ST_LIFECYCLE;
                        }
                        for (uint8_t i = 0; i < len; i++)
                                fu->value[i] |= v[i];
                } else if (kiln_rd_end(&r) < 0) {
                        dev_error_payload(b, 0, "trailing");
                        return KILN_ST_MALFORMED;
                }
                dev_fuse_resp(b, fu);
                return KILN_ST_OK;
        }
        case KILN_MSG_SET_LIFECYCLE: {
                uint8_t t = 0;

                if (kiln_rd_u8(&r, &t) < 0 || t < 1 || t > 4) {
                        dev_error_payload(b, 0, "bad state");
                        return KILN_ST_MALFORMED;
                }
                d->lifecycle = t;
                kiln_buf_put_u8(b, t);
                return KILN_ST_OK;
        }
        case KILN_MSG_RESET:
                *reboot_after = d->reset_lost ? 2 : 1;
                return KILN_ST_OK;
        default:
                dev_error_payload(b, 0, "unknown command");
                return KILN_ST_UNKNOWN_COMMAND;
        }
}

static void dev_handle(struct dev *d, const struct kiln_frame *f)
{
        struct kiln_buf b;
        uint8_t wire[KILN_FRAME_WIRE_MAX(4096u)];
        size_t n = 0;
        uint32_t crc;
        uint8_t status;
        int reboot_after = 0;

        if (f->flags & KILN_FLAG_RESPONSE)
                return;
        if (d->frames < LOG_MAX) {
                d->log[d->frames].type = f->type;
                d->log[d->frames].flags = f->flags;
                d->log[d->frames].id = f->request_id;
                d->log[d->frames].session = f->session;
        }
        d->frames++;
        if (d->reboot_next) {
                d->reboot_next = 0;
                dev_boot(d);
        }
        if (d->nak_new_session) {
                d->nak_new_session = 0;
                dev_boot(d);
                dev_nak(d, KILN_NAK_CRC);
                return;
        }
        if (d->nak_forever || d->nak_next > 0) {
                if (d->nak_next > 0)
                        d->nak_next--;
                dev_nak(d, KILN_NAK_CRC);
                return;
        }
        kiln_buf_init(&b, 8192);
        crc = kiln_crc32c(0, f->payload, f->len);
        if (f->type != KILN_MSG_HELLO && f->session != d->session) {
                dev_error_payload(&b, 0, "send HELLO");
                dev_frame(d, f->type, KILN_ST_SESSION, d->session, f->request_id, b.data, b.len,
                          wire, &n);
                dev_emit(d, wire, n);
                goto out;
        }
        if (f->type != KILN_MSG_HELLO && d->mem_valid && f->request_id == d->mem_id) {
                if (f->type == d->mem_type && f->len == d->mem_len && crc == d->mem_crc) {
                        memcpy(wire, d->mem_wire, d->mem_wire_len);
                        n = d->mem_wire_len;
                        goto send;
                }
                dev_error_payload(&b, 0, "request id reused");
                dev_frame(d, f->type, KILN_ST_REQID_REUSE, d->session, f->request_id, b.data, b.len,
                          wire, &n);
                dev_emit(d, wire, n);
                goto out;
        }
        if (f->type == KILN_MSG_HELLO)
                d->mem_valid = 0;
        status = dev_execute(d, f, &b, &reboot_after);
        assert_int_equal(kiln_buf_error(&b), KILN_OK);
        dev_frame(d, f->type, status, d->lie_session ? d->session + 1 : d->session, f->request_id,
                  b.data, b.len, wire, &n);
        if (f->type != KILN_MSG_HELLO) {
                d->mem_valid = 1;
                d->mem_id = f->request_id;
                d->mem_type = f->type;
                d->mem_len = f->len;
                d->mem_crc = crc;
                memcpy(d->mem_wire, wire, n);
                d->mem_wire_len = n;
        }
send:
        if (reboot_after == 2) {
                /* the answer never leaves: the device reboots first */
                dev_boot(d);
                goto out;
        }
        if (d->stray_frames) {
                uint8_t stray[KILN_FRAME_WIRE_MAX(4096u)];
                size_t sn = 0;

                dev_frame(d, f->type, 0, d->session, f->request_id + 1000, b.data, b.len, stray,
                          &sn);
                dev_emit(d, stray, sn);
                dev_frame(d, (uint8_t)(f->type == 2 ? 3 : 2), 0, d->session, f->request_id, b.data,
                          b.len, stray, &sn);
                dev_emit(d, stray, sn);
        }
        if (d->silent_forever) {
                goto out;
        } else if (d->silent > 0) {
                d->silent--;
        } else {
                dev_emit(d, wire, n);
        }
        if (reboot_after == 1)
                dev_boot(d);
out:
        kiln_buf_free(&b);
}

static void dev_feed(struct dev *d, const uint8_t *p, size_t n)
{
        size_t off = 0;

        while (off < n) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&d->dec, p + off, n - off, &used, &f);

                off += used;
                if (r == KILN_DEC_NEED_MORE)
                        break;
                if (r < 0) {
                        dev_nak(d, r == KILN_E_PROTO_CRC         ? KILN_NAK_CRC
                                   : r == KILN_E_PROTO_TOO_LARGE ? KILN_NAK_TOO_LARGE
                                   : r == KILN_E_PROTO_VERSION   ? KILN_NAK_VERSION
                                                                 : KILN_NAK_FORMAT);
                        continue;
                }
                dev_handle(d, &f);
        }
}

/* --- In-memory transport --- */

static int link_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct link *l = ctx;
        size_t avail = l->q_len - l->q_head;

        if (l->gone)
                return kiln_fail(KILN_E_DEVICE_GONE, "test link unplugged");
        if (avail == 0) {
                if (l->real_clock)
                        kiln_sleep_ms(timeout_ms);
                else
                        l->now += timeout_ms;
                return KILN_E_TIMEOUT;
        }
        if (l->max_read && n > l->max_read)
                n = l->max_read;
        if (n > avail)
                n = avail;
        memcpy(buf, l->q + l->q_head, n);
        l->q_head += n;
        if (l->q_head == l->q_len)
                l->q_head = l->q_len = 0;
        l->now += 1; /* reading takes a little time */
        return (int)n;
}

static int link_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct link *l = ctx;
        uint8_t *tmp = malloc(n);
        size_t m = 0;

        (void)timeout_ms;
        assert_non_null(tmp);
        if (l->gone) {
                free(tmp);
                return kiln_fail(KILN_E_DEVICE_GONE, "test link unplugged");
        }
        for (size_t i = 0; i < n; i++) {
                uint8_t b = buf[i];

                if (l->h2d_drop && rnd(l) % 1000 < l->h2d_drop)
                        continue;
                if (l->h2d_corrupt && rnd(l) % 1000 < l->h2d_corrupt)
                        b ^= (uint8_t)(1u << (rnd(l) % 8));
                tmp[m++] = b;
        }
        dev_feed(&l->dev, tmp, m);
        free(tmp);
        return KILN_OK;
}

static uint64_t link_now(void *ctx)
{
        return ((struct link *)ctx)->now;
}

static const struct proto_transport_ops link_ops = {link_read, link_write, NULL, link_now};
static const struct proto_transport_ops link_ops_real = {link_read, link_write, NULL, NULL};

struct fixture {
        struct link *l;
        struct proto_transport *t;
        struct proto_session *s;
};

static void fx_open(struct fixture *fx, const struct proto_session_opts *opts, uint32_t seed)
{
        struct proto_session_opts o;

        kiln_err_reset();
        fx->l = calloc(1, sizeof(*fx->l));
        assert_non_null(fx->l);
        fx->l->rng = seed ? seed : 0x9E3779B9u;
        fx->l->now = 1000;
        dev_init(&fx->l->dev, fx->l);
        assert_int_equal(proto_transport_new(fx->l->real_clock ? &link_ops_real : &link_ops, fx->l,
                                             "mem:test", fx->l->baud, &fx->t),
                         KILN_OK);
        if (opts == NULL) {
                proto_session_opts_default(&o);
                o.first_request_id = 100;
                opts = &o;
        }
        assert_int_equal(proto_session_new(fx->t, opts, &fx->s), KILN_OK);
}

static void fx_close(struct fixture *fx)
{
        proto_session_free(fx->s);
        proto_transport_free(fx->t);
        dev_free(&fx->l->dev);
        free(fx->l->q);
        free(fx->l);
}

static void fx_hello(struct fixture *fx)
{
        struct proto_hello h;

        if (proto_session_hello(fx->s, &h) != KILN_OK)
                fail_msg("HELLO failed: %s", kiln_err_detail());
}

/* --- Tests --- */

static void test_hello_info(void **state)
{
        struct fixture fx;
        struct proto_hello h;
        struct proto_info in;
        struct proto_session_stats st;

        (void)state;
        fx_open(&fx, NULL, 0);
        /* nothing but HELLO before a session */
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
        assert_int_equal(fx.l->dev.frames, 0);
        assert_int_equal(proto_session_max_payload(fx.s), 256);
        assert_null(proto_session_hello_info(fx.s));
        kiln_err_reset();

        assert_int_equal(proto_session_hello(fx.s, &h), KILN_OK);
        assert_int_equal(h.device_max_payload, DEV_MAX_PAYLOAD);
        assert_int_equal(h.max_payload, DEV_MAX_PAYLOAD); /* min(4096 offered, 1024) */
        assert_int_equal(proto_session_max_payload(fx.s), DEV_MAX_PAYLOAD);
        assert_int_equal(proto_session_id(fx.s), fx.l->dev.session);
        assert_memory_equal(h.session_nonce, fx.l->dev.nonce, 16);
        assert_string_equal(h.agent, "fake-dev-1");
        assert_non_null(proto_session_hello_info(fx.s));
        /* the HELLO request went out with session 0 and the offer of 4096 */
        assert_int_equal(fx.l->dev.log[0].type, KILN_MSG_HELLO);
        assert_int_equal(fx.l->dev.log[0].session, 0);
        assert_int_equal(fx.l->dev.log[0].id, 100);
        assert_int_equal(fx.l->dev.log[0].flags, 0);

        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        assert_string_equal(in.product_id, "smartplug-a1");
        assert_int_equal(in.chip_uid_len, 8);
        assert_int_equal(in.lifecycle, KILN_LC_MANUFACTURING);
        assert_int_equal(fx.l->dev.log[1].id, 101);
        assert_int_equal(fx.l->dev.log[1].session, fx.l->dev.session);

        proto_session_stats_get(fx.s, &st);
        assert_int_equal(st.requests, 2);
        assert_int_equal(st.attempts, 2);
        assert_int_equal(st.retries, 0);
        assert_int_equal(st.naks, 0);
        assert_int_equal(st.rejected, 0);
        assert_true(st.bytes_in > 0 && st.bytes_out > 0);
        fx_close(&fx);
}

static void test_request_ids(void **state)
{
        struct fixture fx;
        struct proto_session_opts o;
        struct proto_info in;

        (void)state;
        /* counting across the top skips 0 */
        proto_session_opts_default(&o);
        o.first_request_id = 0xFFFFFFFEu;
        fx_open(&fx, &o, 0);
        fx_hello(&fx);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        assert_int_equal(fx.l->dev.log[0].id, 0xFFFFFFFEu);
        assert_int_equal(fx.l->dev.log[1].id, 0xFFFFFFFFu);
        assert_int_equal(fx.l->dev.log[2].id, 1);
        fx_close(&fx);
        /* the default start is random and non-zero: two sessions (almost surely) differ */
        {
                uint32_t first[3];

                for (int i = 0; i < 3; i++) {
                        proto_session_opts_default(&o);
                        fx_open(&fx, &o, 0);
                        fx_hello(&fx);
                        first[i] = fx.l->dev.log[0].id;
                        assert_int_not_equal(first[i], 0);
                        fx_close(&fx);
                }
                assert_false(first[0] == first[1] && first[1] == first[2]);
        }
}

static void test_nak_retransmit(void **state)
{
        struct fixture fx;
        struct proto_info in;
        struct proto_session_stats st;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.nak_next = 2;
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        /* three frames of one request: same id, RETRY on the retransmissions */
        assert_int_equal(fx.l->dev.frames, 4);
        for (int i = 1; i <= 3; i++) {
                assert_int_equal(fx.l->dev.log[i].type, KILN_MSG_GET_INFO);
                assert_int_equal(fx.l->dev.log[i].id, 101);
                assert_int_equal(fx.l->dev.log[i].flags, i == 1 ? 0 : KILN_FLAG_RETRY);
        }
        assert_int_equal(fx.l->dev.executed[KILN_MSG_GET_INFO], 1);
        proto_session_stats_get(fx.s, &st);
        assert_int_equal(st.naks, 2);
        assert_int_equal(st.retries, 2);
        assert_int_equal(st.timeouts, 0);
        fx_close(&fx);
}

static void test_timeout_retransmit(void **state)
{
        struct fixture fx;
        struct proto_fuse f;
        struct proto_session_stats st;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        /* the device burns the fuse but its first two answers are lost */
        fx.l->dev.silent = 2;
        assert_int_equal(
            proto_session_fuse_program(fx.s, "debug_disable", (const uint8_t *)"\x01", 1, &f),
            KILN_OK);
        assert_int_equal(f.value[0], 1);
        /* retransmissions were answered from the response memory: burned once */
        assert_int_equal(fx.l->dev.executed[KILN_MSG_FUSE_PROGRAM], 1);
        assert_int_equal(fx.l->dev.frames, 4);
        assert_int_equal(fx.l->dev.log[2].id, fx.l->dev.log[1].id);
        assert_int_equal(fx.l->dev.log[3].id, fx.l->dev.log[1].id);
        assert_int_equal(fx.l->dev.log[3].flags, KILN_FLAG_RETRY);
        proto_session_stats_get(fx.s, &st);
        assert_int_equal(st.timeouts, 2);
        assert_int_equal(st.retries, 2);
        fx_close(&fx);
}

static void test_retries_exhausted(void **state)
{
        struct fixture fx;
        struct proto_session_opts o;
        struct proto_info in;
        struct proto_fuse f;
        uint64_t t0;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.silent_forever = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_NO_RESPONSE);
        assert_non_null(strstr(kiln_err_detail(), "after 5 attempts"));
        assert_non_null(strstr(kiln_err_detail(), "mem:test"));
        assert_int_equal(fx.l->dev.frames, 1 + 5);
        /* budgets on the virtual clock: 5 x (margin 500 + FUSE_PROGRAM 2000), unpaced link */
        t0 = fx.l->now;
        kiln_err_reset();
        assert_int_equal(proto_session_fuse_read(fx.s, "mac0", &f), KILN_E_PROTO_NO_RESPONSE);
        assert_true(fx.l->now - t0 >= 5 * 500 && fx.l->now - t0 < 5 * 500 + 100);
        t0 = fx.l->now;
        kiln_err_reset();
        assert_int_equal(
            proto_session_fuse_program(fx.s, "mac0", (const uint8_t *)"\1\2\3\4\5\6", 6, &f),
            KILN_E_PROTO_NO_RESPONSE);
        assert_true(fx.l->now - t0 >= 5 * 2500 && fx.l->now - t0 < 5 * 2500 + 100);
        fx_close(&fx);

        /* NAK every time: KILN_E_PROTO_NAK */
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.nak_forever = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_NAK);
        assert_non_null(strstr(kiln_err_detail(), "NAKed GET_INFO"));
        assert_int_equal(fx.l->dev.frames, 1 + 5);
        fx_close(&fx);

        /* options: 2 attempts, other budgets, a paced link adds wire time */
        proto_session_opts_default(&o);
        o.first_request_id = 7;
        o.attempts = 2;
        o.margin_ms = 50;
        o.budget_ms[KILN_MSG_KEYGEN] = 300;
        fx_open(&fx, &o, 0);
        fx_hello(&fx);
        fx.l->dev.silent_forever = 1;
        t0 = fx.l->now;
        {
                uint8_t nonce[32] = {0};
                struct proto_keygen k;

                kiln_err_reset();
                assert_int_equal(proto_session_keygen(fx.s, 0, 1, nonce, &k),
                                 KILN_E_PROTO_NO_RESPONSE);
        }
        assert_int_equal(fx.l->dev.frames, 1 + 2);
        assert_true(fx.l->now - t0 >= 2 * 350 && fx.l->now - t0 < 2 * 350 + 40);
        fx_close(&fx);
        /* option validation */
        {
                struct proto_transport *t = NULL;
                struct proto_session *s = NULL;
                struct link l;

                memset(&l, 0, sizeof(l));
                assert_int_equal(proto_transport_new(&link_ops, &l, "mem:x", 0, &t), KILN_OK);
                proto_session_opts_default(&o);
                o.attempts = 0;
                assert_int_equal(proto_session_new(t, &o, &s), KILN_E_INVAL);
                proto_session_opts_default(&o);
                o.host_max_payload = 255;
                assert_int_equal(proto_session_new(t, &o, &s), KILN_E_INVAL);
                assert_null(s);
                proto_transport_free(t);
        }
}

static void test_paced_deadline(void **state)
{
        struct fixture fx;
        struct proto_info in;
        uint64_t t0, per_attempt;

        (void)state;
        /* at 9600 baud: wire time of the request and the largest response (1024 payload) */
        {
                struct proto_session_opts o;

                proto_session_opts_default(&o);
                o.first_request_id = 5;
                kiln_err_reset();
                fx.l = calloc(1, sizeof(*fx.l));
                assert_non_null(fx.l);
                fx.l->rng = 1;
                fx.l->baud = 9600;
                dev_init(&fx.l->dev, fx.l);
                assert_int_equal(proto_transport_new(&link_ops, fx.l, "mem:paced", 9600, &fx.t),
                                 KILN_OK);
                assert_int_equal(proto_transport_baud(fx.t), 9600);
                assert_int_equal(proto_session_new(fx.t, &o, &fx.s), KILN_OK);
        }
        fx_hello(&fx);
        fx.l->dev.silent_forever = 1;
        t0 = fx.l->now;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_NO_RESPONSE);
        per_attempt = (fx.l->now - t0) / 5;
        /* 500 ms + (22-byte request + KILN_FRAME_WIRE_MAX(1024) response) x 10 bits / 9600 */
        assert_true(per_attempt >= 500 + (KILN_FRAME_WIRE_MAX(1024u) * 10000u) / 9600u);
        assert_true(per_attempt <= 500 + ((KILN_FRAME_WIRE_MAX(1024u) + 40) * 10000u) / 9600u + 5);
        fx_close(&fx);
}

static void test_lossy_link(void **state)
{
        struct fixture fx;
        struct proto_session_opts o;
        struct proto_info in;
        struct proto_fuse f;
        struct proto_session_stats st;
        uint8_t *data, *back = NULL;
        size_t back_len = 0, chunk = 256 - PROTO_WRITE_OVERHEAD(8);
        const size_t size = 3000;

        (void)state;
        proto_session_opts_default(&o);
        o.first_request_id = 1;
        o.host_max_payload = 256;
        o.attempts = 40;
        fx_open(&fx, &o, 0xC0FFEE);
        fx.l->h2d_drop = 1;
        fx.l->h2d_corrupt = 2;
        fx.l->d2h_drop = 1;
        fx.l->d2h_corrupt = 2;
        fx.l->max_read = 13;
        data = malloc(size);
        assert_non_null(data);
        for (size_t i = 0; i < size; i++)
                data[i] = (uint8_t)(i * 31 + (i >> 8));

        fx_hello(&fx);
        assert_int_equal(proto_session_max_payload(fx.s), 256);
        for (int i = 0; i < 20; i++)
                if (proto_session_get_info(fx.s, &in) != KILN_OK)
                        fail_msg("GET_INFO %d: %s", i, kiln_err_detail());
        if (proto_object_write(fx.s, "firmware", 0, data, size, NULL, NULL) != KILN_OK)
                fail_msg("write: %s", kiln_err_detail());
        if (proto_object_read(fx.s, "firmware", size, &back, &back_len) != KILN_OK)
                fail_msg("read: %s", kiln_err_detail());
        assert_int_equal(back_len, size);
        assert_memory_equal(back, data, size);
        if (proto_session_fuse_program(fx.s, "mac0", (const uint8_t *)"\x02\0\0\x11\x22\x33", 6,
                                       &f) != KILN_OK)
                fail_msg("fuse: %s", kiln_err_detail());
        assert_memory_equal(f.value, "\x02\0\0\x11\x22\x33", 6);

        /* every chunk executed exactly once, however often it was sent */
        assert_int_equal(fx.l->dev.write_chunks, (size + chunk - 1) / chunk);
        assert_int_equal(fx.l->dev.executed[KILN_MSG_FUSE_PROGRAM], 1);
        proto_session_stats_get(fx.s, &st);
        assert_true(st.retries > 0);
        assert_true(st.naks > 0);     /* corrupt requests were NAKed */
        assert_true(st.rejected > 0); /* corrupt responses were skipped */
        assert_true(st.timeouts > 0); /* dropped responses */
        assert_int_equal(st.attempts, st.requests + st.retries);
        kiln_free(back);
        free(data);
        fx_close(&fx);
}

static void test_session_change(void **state)
{
        struct fixture fx;
        struct proto_info in;
        uint32_t old;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        /* the device rebooted since HELLO: status SESSION */
        old = proto_session_id(fx.s);
        fx.l->dev.reboot_next = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
        assert_non_null(strstr(kiln_err_detail(), "HELLO again"));
        assert_int_equal(proto_session_id(fx.s), 0);
        /* until HELLO nothing else is sent */
        {
                unsigned frames = fx.l->dev.frames;

                kiln_err_reset();
                assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
                assert_int_equal(fx.l->dev.frames, frames);
        }
        fx_hello(&fx);
        assert_int_not_equal(proto_session_id(fx.s), old);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);

        /* a status-OK response with another session id also means a reboot */
        fx.l->dev.lie_session = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
        fx.l->dev.lie_session = 0;
        fx_hello(&fx);

        /* a NAK carrying a new session id too */
        fx.l->dev.nak_new_session = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
        assert_non_null(strstr(kiln_err_detail(), "NAKed"));
        fx_hello(&fx);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        fx_close(&fx);
}

static void test_stray_frames(void **state)
{
        struct fixture fx;
        struct proto_info in;
        struct proto_session_stats st;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.stray_frames = 1;
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        assert_string_equal(in.product_id, "smartplug-a1");
        proto_session_stats_get(fx.s, &st);
        assert_int_equal(st.discarded, 2); /* another request id, another type */
        assert_int_equal(st.retries, 0);
        fx_close(&fx);
}

static void test_device_error(void **state)
{
        struct fixture fx;
        struct proto_fuse f;
        uint8_t lc = 0;
        const struct proto_device_error *e;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        assert_int_equal(proto_session_set_lifecycle(fx.s, KILN_LC_PRODUCTION, &lc), KILN_OK);
        assert_int_equal(lc, KILN_LC_PRODUCTION);
        kiln_err_reset();
        assert_int_equal(
            proto_session_fuse_program(fx.s, "debug_disable", (const uint8_t *)"\x01", 1, &f),
            KILN_E_PROTO_DEVICE);
        e = proto_session_device_error(fx.s);
        assert_int_equal(e->status, KILN_ST_LIFECYCLE);
        assert_int_equal(e->type, KILN_MSG_FUSE_PROGRAM);
        assert_string_equal(e->msg, "not in PRODUCTION");
        assert_non_null(strstr(kiln_err_detail(),
                               "device answered LIFECYCLE to FUSE_PROGRAM: not in PRODUCTION"));
        /* an error answer is final: not retried */
        assert_int_equal(fx.l->dev.executed[KILN_MSG_FUSE_PROGRAM], 1);
        /* the next successful call clears the recorded error */
        assert_int_equal(proto_session_fuse_read(fx.s, "debug_disable", &f), KILN_OK);
        assert_int_equal(proto_session_device_error(fx.s)->status, 0);
        /* NOT_FOUND and unknown commands */
        kiln_err_reset();
        assert_int_equal(proto_session_fuse_read(fx.s, "nope", &f), KILN_E_PROTO_DEVICE);
        assert_int_equal(proto_session_device_error(fx.s)->status, KILN_ST_NOT_FOUND);
        {
                const uint8_t *p = NULL;
                size_t n = 0;

                kiln_err_reset();
                assert_int_equal(proto_session_call(fx.s, 0x42, NULL, 0, &p, &n),
                                 KILN_E_PROTO_DEVICE);
                assert_int_equal(proto_session_device_error(fx.s)->status, KILN_ST_UNKNOWN_COMMAND);
                assert_int_equal(proto_session_call(fx.s, KILN_MSG_NAK, NULL, 0, &p, &n),
                                 KILN_E_INVAL);
        }
        fx_close(&fx);
}

static void test_boot_noise(void **state)
{
        struct fixture fx;
        struct proto_info in;
        struct proto_session_stats st;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx.l->dev.boot_noise = 1;
        fx.l->max_read = 7;
        fx_hello(&fx);
        for (int i = 0; i < 10; i++)
                assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        proto_session_stats_get(fx.s, &st);
        assert_true(st.rejected >= 11);
        assert_int_equal(st.retries, 0);
        fx_close(&fx);

        /* a device that only babbles: bounded by KILN_NOISE_SKIP_MAX per request */
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.flood = KILN_NOISE_SKIP_MAX + 4096;
        fx.l->dev.flood_only = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_NO_RESPONSE);
        assert_non_null(strstr(kiln_err_detail(), "noise"));
        fx_close(&fx);

        /* noise below the bound before a response is fine */
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.flood = KILN_NOISE_SKIP_MAX / 2;
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        fx_close(&fx);
}

static void test_transport_gone(void **state)
{
        struct fixture fx;
        struct proto_info in;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->gone = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_DEVICE_GONE);
        fx_close(&fx);
}

struct progress {
        unsigned calls;
        uint32_t last;
        uint32_t total;
        int stop_at;
};

static int on_progress(void *ctx, uint32_t done, uint32_t total)
{
        struct progress *p = ctx;

        assert_true(done >= p->last);
        assert_true(done <= total);
        p->calls++;
        p->last = done;
        p->total = total;
        if (p->stop_at > 0 && (int)p->calls == p->stop_at)
                return KILN_E_CANCELLED;
        return KILN_OK;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
        uint8_t *p = malloc(n ? n : 1);

        assert_non_null(p);
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t)(i * 7 + seed + (i >> 9));
        return p;
}

static void test_object_write_chunks(void **state)
{
        struct fixture fx;
        struct progress pr = {0};
        const size_t size = 5000;
        const size_t chunk = DEV_MAX_PAYLOAD - PROTO_WRITE_OVERHEAD(4);
        uint8_t *data = pattern(size, 1);
        const struct dev_obj *o;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        assert_int_equal(proto_object_write(fx.s, "cert", 0, data, size, on_progress, &pr),
                         KILN_OK);
        assert_int_equal(fx.l->dev.write_chunks, (size + chunk - 1) / chunk);
        assert_int_equal(pr.calls, (size + chunk - 1) / chunk);
        assert_int_equal(pr.last, size);
        o = &fx.l->dev.objs[0];
        assert_string_equal(o->name, "cert");
        assert_int_equal(o->total, size);
        assert_memory_equal(o->data, data, size);
        /* the same object again: already there, nothing written */
        pr.calls = 0;
        pr.last = 0;
        assert_int_equal(proto_object_write(fx.s, "cert", 0, data, size, on_progress, &pr),
                         KILN_OK);
        assert_int_equal(fx.l->dev.write_chunks, (size + chunk - 1) / chunk);
        assert_int_equal(pr.calls, 1);
        assert_int_equal(pr.last, size);
        /* other flags: rewritten */
        assert_int_equal(proto_object_write(fx.s, "cert", KILN_OBJ_SECRET, data, size, NULL, NULL),
                         KILN_OK);
        assert_int_equal(fx.l->dev.write_chunks, 2 * ((size + chunk - 1) / chunk));
        /* empty object; exactly one chunk; one byte more than one chunk */
        assert_int_equal(proto_object_write(fx.s, "empty", 0, NULL, 0, NULL, NULL), KILN_OK);
        assert_int_equal(proto_object_write(fx.s, "one", 0, data, chunk, NULL, NULL), KILN_OK);
        assert_int_equal(proto_object_write(fx.s, "two", 0, data, chunk + 1, NULL, NULL), KILN_OK);
        /* a cancelled write stops with the callback's code */
        pr.calls = 0;
        pr.last = 0;
        pr.stop_at = 2;
        kiln_err_reset();
        {
                uint8_t *other = pattern(size, 9);

                assert_int_equal(proto_object_write(fx.s, "cert", 0, other, size, on_progress, &pr),
                                 KILN_E_CANCELLED);
                assert_non_null(strstr(kiln_err_detail(), "stopped"));
                free(other);
        }
        /* argument checks */
        assert_int_equal(proto_object_write(fx.s, "bad name", 0, data, 1, NULL, NULL),
                         KILN_E_INVAL);
        assert_int_equal(proto_object_write(fx.s, "x", 0, NULL, 1, NULL, NULL), KILN_E_INVAL);
        assert_int_equal(
            proto_object_write(fx.s, "x", 0, data, (size_t)KILN_OBJECT_MAX + 1, NULL, NULL),
            KILN_E_LIMIT);
        free(data);
        fx_close(&fx);
}

static void test_object_resume(void **state)
{
        struct fixture fx;
        const size_t size = 6000;
        const size_t chunk = DEV_MAX_PAYLOAD - PROTO_WRITE_OVERHEAD(2);
        const unsigned nchunks = (unsigned)((size + chunk - 1) / chunk);
        uint8_t *data = pattern(size, 3), *other;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        /* power cut after the third chunk reached flash, before its answer */
        fx.l->dev.cut_after_chunks = 3;
        kiln_err_reset();
        assert_int_equal(proto_object_write(fx.s, "fw", 0, data, size, NULL, NULL),
                         KILN_E_PROTO_SESSION);
        assert_int_equal(fx.l->dev.write_chunks, 3);
        assert_int_equal(fx.l->dev.wip.held, 3 * chunk);
        /* the caller says HELLO and writes again: it resumes from what the device holds */
        fx_hello(&fx);
        kiln_err_reset();
        if (proto_object_write(fx.s, "fw", 0, data, size, NULL, NULL) != KILN_OK)
                fail_msg("resume: %s", kiln_err_detail());
        assert_int_equal(fx.l->dev.write_chunks, nchunks); /* nothing sent twice */
        assert_memory_equal(fx.l->dev.objs[0].data, data, size);
        /* no leftover detail from the handled OBJECT_HASH / OFFSET answers */
        assert_string_equal(kiln_err_detail(), "");

        /* a partial write of other data: the prefix differs, so start again from 0 */
        other = pattern(size, 4);
        fx.l->dev.cut_after_chunks = 2;
        fx.l->dev.write_chunks = 0;
        assert_int_equal(proto_object_write(fx.s, "fw", 0, other, size, NULL, NULL),
                         KILN_E_PROTO_SESSION);
        fx_hello(&fx);
        kiln_err_reset();
        assert_int_equal(proto_object_write(fx.s, "fw", 0, data, size, NULL, NULL), KILN_OK);
        assert_int_equal(fx.l->dev.write_chunks, 2 + nchunks);
        assert_memory_equal(fx.l->dev.objs[0].data, data, size);

        /* an OFFSET answer mid-write (the device lost its partial write) re-synchronises */
        fx.l->dev.write_chunks = 0;
        fx.l->dev.forget_wip_after = 2;
        kiln_err_reset();
        if (proto_object_write(fx.s, "fw2", 0, other, size, NULL, NULL) != KILN_OK)
                fail_msg("resync: %s", kiln_err_detail());
        /* 2 chunks, an OFFSET refusal (not executed), then all chunks from 0 */
        assert_int_equal(fx.l->dev.write_chunks, 2 + nchunks);
        assert_int_equal(fx.l->dev.executed[KILN_MSG_WRITE_OBJECT],
                         nchunks + (2 + nchunks) + (2 + 1 + nchunks));
        assert_string_equal(kiln_err_detail(), "");
        assert_memory_equal(fx.l->dev.objs[1].data, other, size);
        free(other);
        free(data);
        fx_close(&fx);
}

static void test_object_mismatch(void **state)
{
        struct fixture fx;
        uint8_t *data = pattern(3000, 5);

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        fx.l->dev.corrupt_store = 1;
        kiln_err_reset();
        assert_int_equal(proto_object_write(fx.s, "chain", 0, data, 3000, NULL, NULL),
                         KILN_E_MISMATCH);
        assert_non_null(strstr(kiln_err_detail(), "SHA-256"));
        assert_non_null(strstr(kiln_err_detail(), "'chain'"));
        free(data);
        fx_close(&fx);
}

static void test_object_read(void **state)
{
        struct fixture fx;
        uint8_t *data = pattern(4321, 6), *back = NULL;
        size_t len = 0;

        (void)state;
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        assert_int_equal(proto_object_write(fx.s, "data", 0, data, 4321, NULL, NULL), KILN_OK);
        assert_int_equal(proto_object_read(fx.s, "data", 4321, &back, &len), KILN_OK);
        assert_int_equal(len, 4321);
        assert_memory_equal(back, data, 4321);
        kiln_free(back);
        back = NULL;
        /* over the caller's cap: refused, nothing returned */
        kiln_err_reset();
        assert_int_equal(proto_object_read(fx.s, "data", 4320, &back, &len), KILN_E_LIMIT);
        assert_null(back);
        /* missing object */
        kiln_err_reset();
        assert_int_equal(proto_object_read(fx.s, "nothing", 100, &back, &len), KILN_E_PROTO_DEVICE);
        assert_int_equal(proto_session_device_error(fx.s)->status, KILN_ST_NOT_FOUND);
        /* data damaged on the way (with a valid frame CRC) is caught by the hash check */
        fx.l->dev.corrupt_read = 1;
        kiln_err_reset();
        assert_int_equal(proto_object_read(fx.s, "data", 5000, &back, &len), KILN_E_MISMATCH);
        assert_null(back);
        fx.l->dev.corrupt_read = 0;
        {
                struct proto_read_result rr;

                kiln_err_reset();
                assert_int_equal(proto_session_read_chunk(fx.s, "data", 0, DEV_MAX_PAYLOAD, &rr),
                                 KILN_E_INVAL);
                assert_int_equal(proto_session_read_chunk(fx.s, "data", 4000, 1000, &rr), KILN_OK);
                assert_int_equal(rr.data_len, 321);
                assert_int_equal(rr.total_len, 4321);
        }
        free(data);
        fx_close(&fx);
}

static void test_typed_calls(void **state)
{
        struct fixture fx;
        uint8_t nonce[32];
        struct proto_keygen k;
        struct proto_attest a;
        struct proto_fuse f;
        struct proto_info in;

        (void)state;
        memset(nonce, 0x77, sizeof(nonce));
        fx_open(&fx, NULL, 0);
        fx_hello(&fx);
        assert_int_equal(proto_session_keygen(fx.s, 2, KILN_ALG_ECDSA_P256_SHA256, nonce, &k),
                         KILN_OK);
        assert_int_equal(k.key_slot, 2);
        assert_int_equal(k.public_key_len, 65);
        assert_int_equal(k.public_key[1], 0x42);
        kiln_err_reset();
        assert_int_equal(proto_session_keygen(fx.s, 9, KILN_ALG_ECDSA_P256_SHA256, nonce, &k),
                         KILN_E_PROTO_DEVICE);
        assert_int_equal(proto_session_device_error(fx.s)->status, KILN_ST_KEY_SLOT);
        assert_int_equal(proto_session_attest(fx.s, 1, nonce, &a), KILN_OK);
        assert_int_equal(a.key_slot, 1);
        assert_int_equal(a.signature_len, 64);
        assert_int_equal(proto_session_fuse_read_index(fx.s, 1, &f), KILN_OK);
        assert_string_equal(f.name, "mac0");
        assert_int_equal(f.width_bits, 48);
        assert_int_equal(proto_session_fuse_read(fx.s, "sb_key_hash", &f), KILN_OK);
        assert_int_equal(f.attributes, KILN_FUSE_READ_PROTECTED);
        kiln_err_reset();
        assert_int_equal(proto_session_fuse_read_index(fx.s, 3, &f), KILN_E_PROTO_DEVICE);
        /* a width the device does not have: MALFORMED from the device */
        kiln_err_reset();
        assert_int_equal(proto_session_fuse_program(fx.s, "mac0", (const uint8_t *)"\x01", 1, &f),
                         KILN_E_PROTO_DEVICE);
        assert_int_equal(proto_session_device_error(fx.s)->status, KILN_ST_MALFORMED);

        /* RESET: afterwards there is no session until HELLO */
        assert_int_equal(proto_session_reset(fx.s, 0), KILN_OK);
        assert_int_equal(proto_session_id(fx.s), 0);
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_SESSION);
        fx_hello(&fx);
        /* RESET whose answer is lost: the retry meets the new boot (SESSION) = success */
        fx.l->dev.reset_lost = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_reset(fx.s, 0), KILN_OK);
        assert_string_equal(kiln_err_detail(), "");
        assert_int_equal(fx.l->dev.executed[KILN_MSG_RESET], 2);
        fx_hello(&fx);
        fx.l->dev.reset_lost = 0;
        assert_int_equal(proto_session_reset(fx.s, 1), KILN_E_INVAL);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        fx_close(&fx);
}

static void test_real_clock(void **state)
{
        struct fixture fx;
        struct proto_session_opts o;
        struct proto_info in;

        (void)state;
        proto_session_opts_default(&o);
        o.first_request_id = 1;
        o.margin_ms = 5;
        o.attempts = 2;
        fx.l = NULL;
        kiln_err_reset();
        fx.l = calloc(1, sizeof(*fx.l));
        assert_non_null(fx.l);
        fx.l->rng = 3;
        fx.l->real_clock = 1;
        dev_init(&fx.l->dev, fx.l);
        assert_int_equal(proto_transport_new(&link_ops_real, fx.l, "mem:real", 0, &fx.t), KILN_OK);
        assert_int_equal(proto_session_new(fx.t, &o, &fx.s), KILN_OK);
        fx_hello(&fx);
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK);
        fx.l->dev.silent = 1;
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_OK); /* after one timeout */
        fx.l->dev.silent_forever = 1;
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(fx.s, &in), KILN_E_PROTO_NO_RESPONSE);
        fx_close(&fx);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_hello_info),          cmocka_unit_test(test_request_ids),
            cmocka_unit_test(test_nak_retransmit),      cmocka_unit_test(test_timeout_retransmit),
            cmocka_unit_test(test_retries_exhausted),   cmocka_unit_test(test_paced_deadline),
            cmocka_unit_test(test_lossy_link),          cmocka_unit_test(test_session_change),
            cmocka_unit_test(test_stray_frames),        cmocka_unit_test(test_device_error),
            cmocka_unit_test(test_boot_noise),          cmocka_unit_test(test_transport_gone),
            cmocka_unit_test(test_object_write_chunks), cmocka_unit_test(test_object_resume),
            cmocka_unit_test(test_object_mismatch),     cmocka_unit_test(test_object_read),
            cmocka_unit_test(test_typed_calls),         cmocka_unit_test(test_real_clock),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
