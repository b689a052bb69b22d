/* Host session: request ids, deadlines, retries, NAKs, sessions, typed calls (docs/protocol.md §4).
 */
#include <limits.h>
#include <stdarg.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "kiln/endian.h"
#include "kiln/error.h"
#include "kiln/frame.h"
#include "kiln/log.h"
#include "kiln/secret.h"
#include "kiln/session.h"
#include "kiln/util.h"
#include "session_internal.h"

#define RX_CHUNK 4096u

/* Internal outcomes of one attempt (besides KILN_OK and negative errors). */
enum {
        WAIT_TIMEOUT = 1,
        WAIT_NAK = 2,
};

/* What a received frame means for the outstanding request. */
enum {
        MATCH_DISCARD = 0,
        MATCH_RESPONSE = 1,
        MATCH_NAK = 2,
};

struct proto_session {
        struct proto_transport *t; /* borrowed */
        struct proto_session_opts opts;
        uint32_t next_id;
        uint32_t max_payload;
        int have_session;
        struct proto_hello hello;
        struct proto_device_error dev_err;
        struct proto_session_stats stats;
        unsigned last_attempts; /* attempts the last exchange made */

        struct kiln_decoder dec;
        uint8_t *dec_buf;
        uint8_t *tx; /* encoded request frame */
        size_t tx_cap;
        uint8_t *req; /* request payload built by the typed calls */
        size_t req_cap;
        uint8_t *rx; /* bytes read from the transport and not yet fed to the decoder */
        size_t rx_len;
        size_t rx_off;
};

void proto_session_opts_default(struct proto_session_opts *ret)
{
        memset(ret, 0, sizeof(*ret));
        ret->host_max_payload = PROTO_HOST_MAX_PAYLOAD_DEFAULT;
        ret->attempts = PROTO_ATTEMPTS_DEFAULT;
        ret->margin_ms = PROTO_MARGIN_MS_DEFAULT;
        ret->budget_ms[KILN_MSG_KEYGEN] = 10000;
        ret->budget_ms[KILN_MSG_WRITE_OBJECT] = 2000;
        ret->budget_ms[KILN_MSG_FUSE_PROGRAM] = 2000;
        ret->budget_ms[KILN_MSG_ATTEST] = 2000;
        ret->budget_ms[KILN_MSG_SET_LIFECYCLE] = 2000;
        ret->first_request_id = 0;
}

static int session_random_id(uint32_t *ret)
{
        uint8_t b[4];
        uint32_t v = 0;

        /* a random start keeps ids of a restarted station from meeting the device's memory */
        for (int i = 0; i < 8 && v == 0; i++) {
                if (RAND_bytes(b, sizeof(b)) != 1) {
                        ERR_clear_error();
                        return kiln_fail(KILN_E_CRYPTO, "session: no random request id "
                                                        "(RAND_bytes failed)");
                }
                v = kiln_le32(b);
        }
        if (v == 0)
                return kiln_fail(KILN_E_CRYPTO, "session: random source returns zeros");
        *ret = v;
        return KILN_OK;
}

int proto_session_new(struct proto_transport *t, const struct proto_session_opts *opts,
                      struct proto_session **ret)
{
        struct proto_session *s = NULL;
        size_t dec_cap;
        int r;

        if (t == NULL) {
                r = kiln_fail(KILN_E_INVAL, "session: no transport");
                goto out;
        }
        s = kiln_calloc(1, sizeof(*s));
        if (s == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "session: out of memory");
                goto out;
        }
        s->t = t;
        if (opts != NULL)
                s->opts = *opts;
        else
                proto_session_opts_default(&s->opts);
        if (s->opts.host_max_payload < KILN_PAYLOAD_MIN_MAX ||
            s->opts.host_max_payload > KILN_PAYLOAD_MAX) {
                r = kiln_fail(KILN_E_INVAL, "session: host maximum payload %u not in %u..%u",
                              s->opts.host_max_payload, KILN_PAYLOAD_MIN_MAX, KILN_PAYLOAD_MAX);
                goto out;
        }
        if (s->opts.attempts < 1 || s->opts.attempts > PROTO_ATTEMPTS_MAX) {
                r = kiln_fail(KILN_E_INVAL, "session: attempts %u not in 1..%u", s->opts.attempts,
                              PROTO_ATTEMPTS_MAX);
                goto out;
        }
        if (s->opts.first_request_id != 0) {
                s->next_id = s->opts.first_request_id;
        } else {
                r = session_random_id(&s->next_id);
                if (r < 0)
                        goto out;
        }
        s->max_payload = KILN_PAYLOAD_MIN_MAX;
        dec_cap = KILN_FRAME_WIRE_MAX((size_t)s->opts.host_max_payload);
        s->tx_cap = dec_cap;
        s->req_cap = s->opts.host_max_payload;
        s->dec_buf = kiln_malloc(dec_cap);
        s->tx = kiln_malloc(s->tx_cap);
        s->req = kiln_malloc(s->req_cap);
        s->rx = kiln_malloc(RX_CHUNK);
        if (s->dec_buf == NULL || s->tx == NULL || s->req == NULL || s->rx == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "session: out of memory");
                goto out;
        }
        kiln_decoder_init(&s->dec, s->dec_buf, dec_cap, KILN_PAYLOAD_MIN_MAX);
        *ret = s;
        s = NULL;
        r = KILN_OK;
out:
        proto_session_free(s);
        return r;
}

void proto_session_free(struct proto_session *s)
{
        if (s == NULL)
                return;
        kiln_free(s->dec_buf);
        kiln_free(s->tx);
        /* request payloads may carry credentials on their way to the device */
        if (s->req != NULL)
                kiln_memzero(s->req, s->req_cap);
        kiln_free(s->req);
        kiln_free(s->rx);
        kiln_free(s);
}

uint32_t proto_session_max_payload(const struct proto_session *s)
{
        return s->max_payload;
}

uint32_t proto_session_id(const struct proto_session *s)
{
        return s->have_session ? s->hello.session_id : 0;
}

const struct proto_hello *proto_session_hello_info(const struct proto_session *s)
{
        return s->have_session ? &s->hello : NULL;
}

const struct proto_device_error *proto_session_device_error(const struct proto_session *s)
{
        return &s->dev_err;
}

void proto_session_stats_get(const struct proto_session *s, struct proto_session_stats *ret)
{
        *ret = s->stats;
}

/* --- One exchange --- */

static uint32_t session_take_id(struct proto_session *s)
{
        uint32_t id = s->next_id;

        s->next_id = id + 1 == 0 ? 1 : id + 1;
        return id;
}

static uint64_t wire_ms(size_t bytes, uint32_t baud)
{
        /* 10 bits per byte: start, 8 data, stop */
        if (baud == 0)
                return 0;
        return ((uint64_t)bytes * 10u * 1000u + baud - 1) / baud;
}

static unsigned ms_until(uint64_t now, uint64_t deadline)
{
        if (now >= deadline)
                return 0;
        if (deadline - now > UINT_MAX)
                return UINT_MAX;
        return (unsigned)(deadline - now);
}

static void session_lost(struct proto_session *s)
{
        s->have_session = 0;
        s->max_payload = KILN_PAYLOAD_MIN_MAX;
        s->dec.max_payload = KILN_PAYLOAD_MIN_MAX;
}

/*
 * Classify a valid frame received while request (type, id) is outstanding. Returns MATCH_*, or a
 * negative error that ends the request (session change, device error status).
 */
static int session_match(struct proto_session *s, uint8_t type, uint32_t id,
                         const struct kiln_frame *f)
{
        const char *tname = proto_msg_type_name(type);
        int check_session = type != KILN_MSG_HELLO && s->have_session;
        struct proto_device_error e;
        int r;

        if (!(f->flags & KILN_FLAG_RESPONSE))
                return MATCH_DISCARD; /* not from the device (an echo on a shared line) */
        if (f->type == KILN_MSG_NAK) {
                s->stats.naks++;
                if (check_session && f->session != s->hello.session_id) {
                        uint32_t was = s->hello.session_id;

                        session_lost(s);
                        return kiln_fail(KILN_E_PROTO_SESSION,
                                         "device on '%s' NAKed %s with session %08x, expected "
                                         "%08x: it rebooted, HELLO again",
                                         proto_transport_name(s->t), tname, f->session, was);
                }
                kiln_debug("NAK (reason %u) for %s request %08x", f->len > 0 ? f->payload[0] : 0,
                           tname, id);
                return MATCH_NAK;
        }
        if (f->type != type || f->request_id != id) {
                kiln_debug("discarded %s response %08x while waiting for %s %08x",
                           proto_msg_type_name(f->type), f->request_id, tname, id);
                return MATCH_DISCARD;
        }
        if (check_session && f->status == KILN_ST_SESSION) {
                session_lost(s);
                return kiln_fail(KILN_E_PROTO_SESSION,
                                 "device on '%s' answered SESSION to %s: it rebooted, HELLO again",
                                 proto_transport_name(s->t), tname);
        }
        if (check_session && f->session != s->hello.session_id) {
                uint32_t was = s->hello.session_id;

                session_lost(s);
                return kiln_fail(KILN_E_PROTO_SESSION,
                                 "device on '%s' answered %s with session %08x, expected %08x: it "
                                 "rebooted, HELLO again",
                                 proto_transport_name(s->t), tname, f->session, was);
        }
        if (f->status != KILN_ST_OK) {
                r = proto_msg_error_parse(type, f->status, f->payload, f->len, &e);
                if (r < 0)
                        return r;
                s->dev_err = e;
                return kiln_fail(KILN_E_PROTO_DEVICE, "device answered %s to %s: %s (detail %u)",
                                 proto_status_name(f->status), tname,
                                 e.msg[0] != '\0' ? e.msg : "no message", e.detail);
        }
        return MATCH_RESPONSE;
}

/* Wait for the response of (type, id) until deadline. KILN_OK with *ret, WAIT_*, or an error. */
static int session_wait(struct proto_session *s, uint8_t type, uint32_t id, uint64_t deadline,
                        size_t *noise, struct kiln_frame *ret)
{
        for (;;) {
                uint64_t now;
                int r;

                while (s->rx_off < s->rx_len) {
                        struct kiln_frame f;
                        size_t used = 0;

                        r = kiln_decoder_feed(&s->dec, s->rx + s->rx_off, s->rx_len - s->rx_off,
                                              &used, &f);
                        s->rx_off += used;
                        if (r == KILN_DEC_NEED_MORE) {
                                *noise += used;
                                break;
                        }
                        if (r < 0) {
                                /* boot log, line noise or a corrupt response: keep waiting */
                                s->stats.rejected++;
                                *noise += used;
                                continue;
                        }
                        r = session_match(s, type, id, &f);
                        if (r == MATCH_RESPONSE) {
                                *ret = f;
                                return KILN_OK;
                        }
                        *noise += used;
                        if (r == MATCH_NAK)
                                return WAIT_NAK;
                        if (r < 0)
                                return r;
                        s->stats.discarded++;
                }
                /* bytes of frames that turned out not to be the response count too: a device
                 * that floods stale frames must not keep the host waiting for ever either */
                if (*noise > KILN_NOISE_SKIP_MAX)
                        return kiln_fail(
                            KILN_E_PROTO_NO_RESPONSE,
                            "over %u bytes of noise from '%s' while waiting for the %s "
                            "response (wrong baud rate?)",
                            KILN_NOISE_SKIP_MAX, proto_transport_name(s->t),
                            proto_msg_type_name(type));
                now = proto_transport_now_ms(s->t);
                if (now >= deadline)
                        return WAIT_TIMEOUT;
                r = proto_transport_read(s->t, s->rx, RX_CHUNK, ms_until(now, deadline));
                if (r == KILN_E_TIMEOUT)
                        continue; /* the loop re-checks the deadline on the transport's clock */
                if (r < 0)
                        return r;
                s->rx_len = (size_t)r;
                s->rx_off = 0;
                s->stats.bytes_in += (uint64_t)r;
        }
}

static int session_exchange(struct proto_session *s, uint8_t type, const uint8_t *payload,
                            size_t len, struct kiln_frame *ret)
{
        const char *tname = proto_msg_type_name(type);
        struct kiln_frame req, resp;
        size_t noise = 0;
        uint64_t fixed_ms;
        int last = WAIT_TIMEOUT;
        unsigned attempt;
        int r;

        memset(&s->dev_err, 0, sizeof(s->dev_err));
        s->last_attempts = 0;
        if (type != KILN_MSG_HELLO && !s->have_session) {
                r = kiln_fail(KILN_E_PROTO_SESSION,
                              "no session with the device on '%s': HELLO first",
                              proto_transport_name(s->t));
                goto out;
        }
        if (len > s->max_payload) {
                r = kiln_fail(KILN_E_PROTO_TOO_LARGE,
                              "%s request of %zu bytes is over the maximum payload %u", tname, len,
                              s->max_payload);
                goto out;
        }
        memset(&req, 0, sizeof(req));
        req.version = KILN_PROTO_VERSION;
        req.type = type;
        req.session = type == KILN_MSG_HELLO ? 0 : s->hello.session_id;
        req.request_id = session_take_id(s);
        req.len = (uint32_t)len;
        req.payload = payload;
        s->stats.requests++;
        fixed_ms =
            (uint64_t)s->opts.margin_ms + (type < KILN_MSG_MAX ? s->opts.budget_ms[type] : 0);

        for (attempt = 1; attempt <= s->opts.attempts; attempt++) {
                uint64_t deadline;
                size_t wlen = 0;

                req.flags = attempt > 1 ? KILN_FLAG_RETRY : 0;
                r = kiln_frame_encode(&req, s->tx, s->tx_cap, &wlen);
                if (r < 0) {
                        r = kiln_fail(KILN_E_INTERNAL, "%s request: frame encoding failed (%d)",
                                      tname, r);
                        goto out;
                }
                deadline = proto_transport_now_ms(s->t) + fixed_ms +
                           wire_ms(wlen + KILN_FRAME_WIRE_MAX((size_t)s->max_payload),
                                   proto_transport_baud(s->t));
                s->stats.attempts++;
                s->last_attempts = attempt;
                if (attempt > 1)
                        s->stats.retries++;
                r = proto_transport_write(s->t, s->tx, wlen,
                                          ms_until(proto_transport_now_ms(s->t), deadline));
                if (r == KILN_E_TIMEOUT) {
                        /* the line did not take the frame (flow control held): try again */
                        s->stats.timeouts++;
                        last = WAIT_TIMEOUT;
                        continue;
                }
                if (r < 0)
                        goto out;
                s->stats.bytes_out += wlen;
                r = session_wait(s, type, req.request_id, deadline, &noise, &resp);
                if (r == KILN_OK) {
                        *ret = resp;
                        goto out;
                }
                if (r < 0)
                        goto out;
                if (r == WAIT_TIMEOUT)
                        s->stats.timeouts++;
                last = r;
        }
        if (last == WAIT_NAK)
                r = kiln_fail(KILN_E_PROTO_NAK, "device on '%s' NAKed %s %u times",
                              proto_transport_name(s->t), tname, s->opts.attempts);
        else
                r = kiln_fail(KILN_E_PROTO_NO_RESPONSE,
                              "no response to %s from '%s' after %u attempts", tname,
                              proto_transport_name(s->t), s->opts.attempts);
out:
        return r;
}

int proto_session_call(struct proto_session *s, uint8_t type, const uint8_t *payload, size_t len,
                       const uint8_t **ret_payload, size_t *ret_len)
{
        struct kiln_frame f;
        int r;

        if (len > 0 && payload == NULL)
                return kiln_fail(KILN_E_INVAL, "%s request: no payload", proto_msg_type_name(type));
        if (type == KILN_MSG_NAK || type == 0 || type >= KILN_MSG_MAX)
                return kiln_fail(KILN_E_INVAL, "message type 0x%02x cannot be sent", type);
        r = session_exchange(s, type, payload, len, &f);
        if (r < 0)
                return r;
        *ret_payload = f.payload;
        *ret_len = f.len;
        return KILN_OK;
}

/* --- Typed calls --- */

int proto_session_hello(struct proto_session *s, struct proto_hello *ret)
{
        struct kiln_frame f;
        struct proto_hello h;
        uint32_t expect;
        size_t len = 0;
        int r;

        /* whatever happens now, the old session is over (HELLO clears the device's memory) */
        session_lost(s);
        r = proto_msg_hello_build(s->opts.host_max_payload, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = session_exchange(s, KILN_MSG_HELLO, s->req, len, &f);
        if (r < 0)
                goto out;
        r = proto_msg_hello_parse(f.payload, f.len, &h);
        if (r < 0)
                goto out;
        if (f.session != h.session_id) {
                r = kiln_fail(KILN_E_PROTO_MALFORMED,
                              "HELLO response sent with session %08x, its nonce gives %08x",
                              f.session, h.session_id);
                goto out;
        }
        expect = h.device_max_payload < s->opts.host_max_payload ? h.device_max_payload
                                                                 : s->opts.host_max_payload;
        if (h.max_payload != expect) {
                r = kiln_fail(KILN_E_PROTO_MALFORMED,
                              "HELLO response: max_payload %u, but min(host %u, device %u) is %u",
                              h.max_payload, s->opts.host_max_payload, h.device_max_payload,
                              expect);
                goto out;
        }
        s->hello = h;
        s->have_session = 1;
        s->max_payload = h.max_payload;
        s->dec.max_payload = h.max_payload;
        if (ret != NULL)
                *ret = h;
out:
        return r;
}

int proto_session_get_info(struct proto_session *s, struct proto_info *ret)
{
        struct proto_info in;
        const uint8_t *p;
        size_t n;
        int r;

        r = proto_session_call(s, KILN_MSG_GET_INFO, NULL, 0, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_info_parse(p, n, &in);
        if (r < 0)
                goto out;
        *ret = in;
out:
        return r;
}

static int unexpected(const char *fmt, ...) KILN_PRINTF(1, 2);

static int unexpected(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_failv(KILN_E_PROTO_UNEXPECTED, fmt, ap);
        va_end(ap);
        return KILN_E_PROTO_UNEXPECTED;
}

int proto_session_keygen(struct proto_session *s, uint8_t key_slot, uint8_t algorithm,
                         const uint8_t nonce[KILN_NONCE_LEN], struct proto_keygen *ret)
{
        struct proto_keygen k;
        const uint8_t *p;
        size_t len = 0, n;
        int r;

        r = proto_msg_keygen_build(key_slot, algorithm, nonce, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_KEYGEN, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_keygen_parse(p, n, &k);
        if (r < 0)
                goto out;
        if (k.key_slot != key_slot || k.algorithm != algorithm) {
                r = unexpected("KEYGEN of slot %u algorithm %u answered for slot %u algorithm %u",
                               key_slot, algorithm, k.key_slot, k.algorithm);
                goto out;
        }
        *ret = k;
out:
        return r;
}

int proto_session_write_chunk(struct proto_session *s, const struct proto_write_req *req,
                              struct proto_write_result *ret)
{
        struct proto_write_result w;
        const uint8_t *p;
        size_t len = 0, n;
        uint32_t end;
        int r;

        r = proto_msg_write_build(req, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_WRITE_OBJECT, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_write_parse(p, n, &w);
        if (r < 0)
                goto out;
        end = req->offset + req->data_len; /* no overflow: the builder checked it <= total_len */
        if (w.received != end || w.complete != (end == req->total_len)) {
                r = unexpected("WRITE_OBJECT '%s' of bytes %u..%u of %u answered received %u "
                               "complete %u",
                               req->name, req->offset, end, req->total_len, w.received, w.complete);
                goto out;
        }
        *ret = w;
out:
        return r;
}

int proto_session_read_chunk(struct proto_session *s, const char *name, uint32_t offset,
                             uint32_t max_len, struct proto_read_result *ret)
{
        struct proto_read_result rr;
        const uint8_t *p;
        size_t len = 0, n;
        uint32_t want;
        int r;

        if (max_len > s->max_payload - PROTO_READ_OVERHEAD) {
                r = kiln_fail(KILN_E_INVAL, "READ_OBJECT of %u bytes: at most %u per chunk",
                              max_len, s->max_payload - PROTO_READ_OVERHEAD);
                goto out;
        }
        r = proto_msg_read_build(name, offset, max_len, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_READ_OBJECT, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_read_parse(p, n, &rr);
        if (r < 0)
                goto out;
        want = rr.offset <= rr.total_len ? rr.total_len - rr.offset : 0;
        if (want > max_len)
                want = max_len;
        if (rr.offset != offset || rr.data_len != want) {
                r = unexpected("READ_OBJECT '%s' at %u for %u bytes answered %u bytes at %u of %u",
                               name, offset, max_len, rr.data_len, rr.offset, rr.total_len);
                goto out;
        }
        *ret = rr;
out:
        return r;
}

int proto_session_object_hash(struct proto_session *s, const char *name,
                              struct proto_object_hash *ret)
{
        struct proto_object_hash h;
        const uint8_t *p;
        size_t len = 0, n;
        int r;

        r = proto_msg_hash_build(name, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_OBJECT_HASH, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_hash_parse(p, n, &h);
        if (r < 0)
                goto out;
        *ret = h;
out:
        return r;
}

static int session_fuse_call(struct proto_session *s, uint8_t type, size_t len, const char *name,
                             size_t value_len, struct proto_fuse *ret)
{
        struct proto_fuse f;
        const uint8_t *p;
        size_t n;
        int r;

        r = proto_session_call(s, type, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_fuse_parse(p, n, &f);
        if (r < 0)
                goto out;
        if (name != NULL && strcmp(f.name, name) != 0) {
                r = unexpected("%s of fuse '%s' answered for '%s'", proto_msg_type_name(type), name,
                               f.name);
                goto out;
        }
        if (value_len != 0 && f.value_len != value_len) {
                r = unexpected("FUSE_PROGRAM of %zu bytes into '%s' answered with %u bytes",
                               value_len, f.name, f.value_len);
                goto out;
        }
        *ret = f;
out:
        return r;
}

int proto_session_fuse_read(struct proto_session *s, const char *name, struct proto_fuse *ret)
{
        size_t len = 0;
        int r;

        r = proto_msg_fuse_read_build(name, s->req, s->req_cap, &len);
        if (r < 0)
                return r;
        return session_fuse_call(s, KILN_MSG_FUSE_READ, len, name, 0, ret);
}

int proto_session_fuse_read_index(struct proto_session *s, uint16_t index, struct proto_fuse *ret)
{
        size_t len = 0;
        int r;

        r = proto_msg_fuse_read_index_build(index, s->req, s->req_cap, &len);
        if (r < 0)
                return r;
        return session_fuse_call(s, KILN_MSG_FUSE_READ, len, NULL, 0, ret);
}

int proto_session_fuse_program(struct proto_session *s, const char *name, const uint8_t *value,
                               size_t value_len, struct proto_fuse *ret)
{
        size_t len = 0;
        int r;

        r = proto_msg_fuse_program_build(name, value, value_len, s->req, s->req_cap, &len);
        if (r < 0)
                return r;
        return session_fuse_call(s, KILN_MSG_FUSE_PROGRAM, len, name, value_len, ret);
}

int proto_session_attest(struct proto_session *s, uint8_t key_slot,
                         const uint8_t nonce[KILN_NONCE_LEN], struct proto_attest *ret)
{
        struct proto_attest a;
        const uint8_t *p;
        size_t len = 0, n;
        int r;

        r = proto_msg_attest_build(key_slot, nonce, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_ATTEST, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_attest_parse(p, n, &a);
        if (r < 0)
                goto out;
        if (a.key_slot != key_slot) {
                r = unexpected("ATTEST of slot %u answered for slot %u", key_slot, a.key_slot);
                goto out;
        }
        *ret = a;
out:
        return r;
}

int proto_session_set_lifecycle(struct proto_session *s, uint8_t target, uint8_t *ret_lifecycle)
{
        const uint8_t *p;
        size_t len = 0, n;
        uint8_t lc = 0;
        int r;

        r = proto_msg_lifecycle_build(target, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        r = proto_session_call(s, KILN_MSG_SET_LIFECYCLE, s->req, len, &p, &n);
        if (r < 0)
                goto out;
        r = proto_msg_lifecycle_parse(p, n, &lc);
        if (r < 0)
                goto out;
        *ret_lifecycle = lc;
out:
        return r;
}

int proto_session_reset(struct proto_session *s, uint8_t mode)
{
        struct proto_err_mark mark;
        const uint8_t *p;
        size_t len = 0, n;
        int r;

        r = proto_msg_reset_build(mode, s->req, s->req_cap, &len);
        if (r < 0)
                goto out;
        proto_err_mark_set(&mark);
        r = proto_session_call(s, KILN_MSG_RESET, s->req, len, &p, &n);
        if (r == KILN_E_PROTO_SESSION && s->last_attempts > 1) {
                /* our first RESET ran and its answer was lost: the retry met the new boot */
                proto_err_mark_forget(&mark);
                r = KILN_OK;
                goto done;
        }
        if (r < 0)
                goto out;
        r = proto_msg_reset_parse(p, n);
        if (r < 0)
                goto out;
done:
        session_lost(s);
out:
        return r;
}
