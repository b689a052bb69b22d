/*
 * Kiln device agent: the device side of docs/protocol.md. See kiln/agent.h for the contract with
 * the firmware. Strict C99; no allocation; string.h only.
 *
 * Memory: the decoder's candidate buffer (rx) is also where outgoing frames are encoded, which is
 * safe because a response is only built right after a candidate ended (the decoder holds nothing
 * then) and the request it answers is no longer needed. The response memory (resp) holds the
 * payload of the last executed request's response (§4.3); HELLO, NAK, SESSION and REQID_REUSE
 * answers never replace it (HELLO clears it).
 */
#include <string.h>

#include "kiln/agent.h"
#include "kiln/endian.h"

/* Largest encoded candidate accepted for a maximum payload m (§2.3 step 1): COBS size of 20 + m. */
#define CAND_MAX(m) ((size_t)(20u + (m)) + (size_t)(20u + (m)) / 254u + 1u)

#define ERRPAY_MAX (4u + 1u + KILN_ERRMSG_MAX)

/* ---- bounded reader over a request payload ---- */

struct rd {
        const uint8_t *p;
        size_t len;
        size_t off;
        int bad; /* sticky: a read ran past the end or a field was invalid */
};

static void rd_init(struct rd *r, const uint8_t *p, size_t len)
{
        r->p = p;
        r->len = len;
        r->off = 0;
        r->bad = 0;
}

static const uint8_t *rd_take(struct rd *r, size_t n)
{
        const uint8_t *q;

        if (r->bad || n > r->len - r->off) {
                r->bad = 1;
                return NULL;
        }
        q = r->p + r->off;
        r->off += n;
        return q;
}

static uint8_t rd_u8(struct rd *r)
{
        const uint8_t *q = rd_take(r, 1);
        return q ? q[0] : 0;
}

static uint16_t rd_le16(struct rd *r)
{
        const uint8_t *q = rd_take(r, 2);
        return q ? kiln_le16(q) : 0;
}

static uint32_t rd_le32(struct rd *r)
{
        const uint8_t *q = rd_take(r, 4);
        return q ? kiln_le32(q) : 0;
}

static int name_char_ok(uint8_t c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
}

static int name_ok(const char *s, size_t n)
{
        if (n < 1 || n > KILN_NAME_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!name_char_ok((uint8_t)s[i]))
                        return 0;
        return 1;
}

/* name: u8 len (1..32) + len bytes of [A-Za-z0-9._-] */
static const char *rd_name(struct rd *r, uint8_t *ret_len)
{
        uint8_t n = rd_u8(r);
        const uint8_t *q = rd_take(r, n);

        if (q == NULL || !name_ok((const char *)q, n)) {
                r->bad = 1;
                return NULL;
        }
        *ret_len = n;
        return (const char *)q;
}

/* The whole payload was consumed and every field was valid. */
static int rd_done(const struct rd *r)
{
        return !r->bad && r->off == r->len;
}

/* ---- bounded writer over the response memory ---- */

struct wr {
        uint8_t *p;
        size_t cap;
        size_t len;
        int bad;
};

static void wr_init(struct wr *w, uint8_t *p, size_t cap)
{
        w->p = p;
        w->cap = cap;
        w->len = 0;
        w->bad = 0;
}

static uint8_t *wr_take(struct wr *w, size_t n)
{
        uint8_t *q;

        if (w->bad || n > w->cap - w->len) {
                w->bad = 1;
                return NULL;
        }
        q = w->p + w->len;
        w->len += n;
        return q;
}

static void wr_u8(struct wr *w, uint8_t v)
{
        uint8_t *q = wr_take(w, 1);
        if (q)
                q[0] = v;
}

static void wr_le16(struct wr *w, uint16_t v)
{
        uint8_t *q = wr_take(w, 2);
        if (q)
                kiln_put_le16(q, v);
}

static void wr_le32(struct wr *w, uint32_t v)
{
        uint8_t *q = wr_take(w, 4);
        if (q)
                kiln_put_le32(q, v);
}

static void wr_bytes(struct wr *w, const void *p, size_t n)
{
        uint8_t *q = wr_take(w, n);
        if (q && n > 0)
                memcpy(q, p, n);
}

static void wr_zero(struct wr *w, size_t n)
{
        uint8_t *q = wr_take(w, n);
        if (q && n > 0)
                memset(q, 0, n);
}

/* ---- one command being executed ---- */

struct cmd {
        struct kiln_agent *a;
        const struct kiln_frame *req;
        struct wr out;      /* response payload, in the response memory */
        uint32_t detail;    /* error payload detail */
        const char *msg;    /* error payload message (static ASCII, <= 64 bytes) */
        uint8_t reset_mode; /* RESET: mode to pass to ops->reset */
        uint8_t reset_due;
};

static int cmd_fail(struct cmd *c, int status, uint32_t detail, const char *msg)
{
        c->detail = detail;
        c->msg = msg;
        return status;
}

static int cmd_malformed(struct cmd *c, const char *msg)
{
        return cmd_fail(c, KILN_ST_MALFORMED, 0, msg);
}

/* Status for a failed callback: the common mappings, else `other`. */
static int cmd_cb_fail(struct cmd *c, int r, int other, const char *msg)
{
        if (r == KILN_E_TIMEOUT)
                return cmd_fail(c, KILN_ST_BUSY, 0, "busy, retry later");
        return cmd_fail(c, other, 0, msg);
}

static int info_valid(const struct kiln_agent_info *in)
{
        if (in->chip_uid_len < 1 || in->chip_uid_len > KILN_UID_MAX)
                return 0;
        if (in->product_id_len > KILN_PRODUCT_MAX ||
            !name_ok(in->product_id, in->product_id_len))
                return 0;
        if (in->fw_version_len > KILN_FWVER_MAX)
                return 0;
        for (unsigned i = 0; i < in->fw_version_len; i++)
                if ((uint8_t)in->fw_version[i] < 0x20 || (uint8_t)in->fw_version[i] > 0x7E)
                        return 0;
        if (in->lifecycle < KILN_LC_MANUFACTURING || in->lifecycle >= KILN_LC_MAX)
                return 0;
        if (in->debug_port > 1 || in->secure_boot > 1 || in->key_slots > KILN_KEY_SLOTS_MAX)
                return 0;
        if (in->key_slots < 16 && (in->key_present >> in->key_slots) != 0)
                return 0;
        return 1;
}

/* Device facts, checked: KILN_ST_OK or INTERNAL. */
static int cmd_info(struct cmd *c, struct kiln_agent_info *ret)
{
        struct kiln_agent_info in;
        int r;

        memset(&in, 0, sizeof(in));
        r = c->a->ops->get_info(c->a->ctx, &in);
        if (r < 0)
                return cmd_cb_fail(c, r, KILN_ST_INTERNAL, "device info unavailable");
        if (!info_valid(&in))
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "device info invalid");
        *ret = in;
        return KILN_ST_OK;
}

/* Lifecycle table of §6.3 (commands allowed in every state do not ask). */
enum lc_class { LC_NOT_DECOMMISSIONED, LC_MFG_OR_RMA };

static int cmd_lifecycle_allows(struct cmd *c, enum lc_class cls, struct kiln_agent_info *ret)
{
        struct kiln_agent_info in;
        int st, ok;

        st = cmd_info(c, &in);
        if (st != KILN_ST_OK)
                return st;
        if (cls == LC_MFG_OR_RMA)
                ok = in.lifecycle == KILN_LC_MANUFACTURING || in.lifecycle == KILN_LC_RMA;
        else
                ok = in.lifecycle != KILN_LC_DECOMMISSIONED;
        if (!ok)
                return cmd_fail(c, KILN_ST_LIFECYCLE, 0, "not allowed in this lifecycle state");
        *ret = in;
        return KILN_ST_OK;
}

/* ---- HELLO ---- */

static int cmd_hello(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct rd r;
        uint8_t min_v, max_v;
        uint32_t host_max, max;

        /* Expected format: min_version u8, max_version u8, reserved u16, host_max_payload u32. */
        rd_init(&r, c->req->payload, c->req->len);
        min_v = rd_u8(&r);
        max_v = rd_u8(&r);
        (void)rd_le16(&r);
        host_max = rd_le32(&r);
        if (!rd_done(&r))
                return cmd_malformed(c, "HELLO payload must be 8 bytes");
        if (min_v > KILN_PROTO_VERSION || max_v < KILN_PROTO_VERSION)
                return cmd_fail(c, KILN_ST_VERSION, 0, "device speaks protocol version 1 only");
        if (host_max < KILN_PAYLOAD_MIN_MAX)
                return cmd_malformed(c, "host_max_payload below 256");
        max = host_max < a->device_max ? host_max : a->device_max;

        wr_u8(&c->out, KILN_PROTO_VERSION);
        wr_zero(&c->out, 3);
        wr_le32(&c->out, a->device_max);
        wr_le32(&c->out, max);
        wr_bytes(&c->out, a->nonce, sizeof(a->nonce));
        wr_le32(&c->out, a->caps);
        wr_u8(&c->out, a->name_len);
        wr_bytes(&c->out, a->name, a->name_len);
        if (c->out.bad)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        /* From now on both directions use the negotiated maximum (§4.5), and a candidate longer
         * than its encoding is overlong (§2.3). The decoder holds no candidate here: one just
         * ended, so starting it afresh loses nothing. */
        a->max_payload = max;
        kiln_decoder_init(&a->dec, a->rx, CAND_MAX(max), max);
        return KILN_ST_OK;
}

/* ---- GET_INFO ---- */

static int cmd_get_info(struct cmd *c)
{
        struct kiln_agent_info in;
        int st;

        /* Expected format: empty. */
        if (c->req->len != 0)
                return cmd_malformed(c, "GET_INFO takes no payload");
        st = cmd_info(c, &in);
        if (st != KILN_ST_OK)
                return st;
        wr_u8(&c->out, in.chip_uid_len);
        wr_bytes(&c->out, in.chip_uid, in.chip_uid_len);
        wr_u8(&c->out, in.product_id_len);
        wr_bytes(&c->out, in.product_id, in.product_id_len);
        wr_le16(&c->out, in.hw_revision);
        wr_u8(&c->out, in.fw_version_len);
        wr_bytes(&c->out, in.fw_version, in.fw_version_len);
        wr_bytes(&c->out, in.fw_sha256, sizeof(in.fw_sha256));
        wr_u8(&c->out, in.lifecycle);
        wr_u8(&c->out, in.debug_port);
        wr_u8(&c->out, in.secure_boot);
        wr_u8(&c->out, in.key_slots);
        wr_le16(&c->out, in.key_present);
        return KILN_ST_OK;
}

/* ---- KEYGEN and ATTEST ---- */

/* SHA-256 of label || nonce[32] || uid_len || uid || slot (§5.3, §5.9). */
static void signed_digest(const char *label, size_t label_len, const uint8_t *nonce,
                          const struct kiln_agent_info *in, uint8_t slot,
                          uint8_t ret_digest[KILN_AGENT_SHA256_LEN])
{
        struct kiln_agent_sha256 h;

        kiln_agent_sha256_init(&h);
        kiln_agent_sha256_update(label, label_len, &h);
        kiln_agent_sha256_update(nonce, KILN_NONCE_LEN, &h);
        kiln_agent_sha256_update(&in->chip_uid_len, 1, &h);
        kiln_agent_sha256_update(in->chip_uid, in->chip_uid_len, &h);
        kiln_agent_sha256_update(&slot, 1, &h);
        kiln_agent_sha256_final(&h, ret_digest);
}

/* Sign into the response as a blob16; checks the signature's shape. */
static int cmd_sign_blob(struct cmd *c, uint8_t slot, enum kiln_agent_sign_purpose purpose,
                         const uint8_t digest[KILN_AGENT_SHA256_LEN], uint8_t *ret_alg)
{
        struct kiln_agent *a = c->a;
        size_t len_pos = c->out.len, sig_len = 0;
        uint8_t alg = 0, *sig;
        int r;

        wr_le16(&c->out, 0);
        if (c->out.bad)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        sig = c->out.p + c->out.len;
        r = a->ops->key_sign(a->ctx, slot, purpose, digest, sig, c->out.cap - c->out.len, &sig_len,
                             &alg);
        if (r == KILN_E_NOT_FOUND)
                return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no key in slot");
        if (r < 0)
                return cmd_cb_fail(c, r, KILN_ST_HARDWARE, "signing failed");
        if (alg != KILN_ALG_ECDSA_P256_SHA256 || sig_len != KILN_AGENT_SIG_P256_LEN ||
            sig_len > c->out.cap - c->out.len)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "signature has the wrong form");
        kiln_put_le16(c->out.p + len_pos, (uint16_t)sig_len);
        c->out.len += sig_len;
        *ret_alg = alg;
        return KILN_ST_OK;
}

static int cmd_keygen(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        uint8_t digest[KILN_AGENT_SHA256_LEN];
        const uint8_t *nonce;
        uint8_t slot, alg, sig_alg, *pub;
        size_t pub_len = 0, len_pos;
        struct rd r;
        int st, rc;

        /* Expected format: key_slot u8, algorithm u8, reserved u16, station_nonce[32]. */
        rd_init(&r, c->req->payload, c->req->len);
        slot = rd_u8(&r);
        alg = rd_u8(&r);
        (void)rd_le16(&r);
        nonce = rd_take(&r, KILN_NONCE_LEN);
        if (!rd_done(&r))
                return cmd_malformed(c, "KEYGEN payload must be 36 bytes");
        st = cmd_lifecycle_allows(c, LC_MFG_OR_RMA, &in);
        if (st != KILN_ST_OK)
                return st;
        if (slot >= in.key_slots)
                return cmd_fail(c, KILN_ST_KEY_SLOT, 0, "key slot out of range");
        if (alg != KILN_ALG_ECDSA_P256_SHA256)
                return cmd_fail(c, KILN_ST_ALGORITHM, 0, "algorithm not supported");

        wr_u8(&c->out, slot);
        wr_u8(&c->out, alg);
        len_pos = c->out.len;
        wr_le16(&c->out, 0);
        if (c->out.bad)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        pub = c->out.p + c->out.len;
        rc = a->ops->key_generate(a->ctx, slot, alg, pub, c->out.cap - c->out.len, &pub_len);
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "key generation failed");
        if (pub_len != KILN_AGENT_PUBKEY_P256_LEN || pub_len > c->out.cap - c->out.len ||
            pub[0] != 0x04)
                return cmd_fail(c, KILN_ST_HARDWARE, 0, "public key has the wrong form");
        kiln_put_le16(c->out.p + len_pos, (uint16_t)pub_len);
        c->out.len += pub_len;

        signed_digest(KILN_POP_LABEL, KILN_POP_LABEL_LEN, nonce, &in, slot, digest);
        st = cmd_sign_blob(c, slot, KILN_AGENT_SIGN_POP, digest, &sig_alg);
        /* the key was just made: "no key" here is a hardware fault, not the host's */
        if (st == KILN_ST_NOT_FOUND)
                return cmd_fail(c, KILN_ST_HARDWARE, 0, "new key not usable");
        return st;
}

static int cmd_attest(struct cmd *c)
{
        struct kiln_agent_info in;
        uint8_t digest[KILN_AGENT_SHA256_LEN];
        const uint8_t *nonce;
        uint8_t slot, alg = 0;
        size_t alg_pos;
        struct rd r;
        int st;

        /* Expected format: key_slot u8, reserved[3], nonce[32]. */
        rd_init(&r, c->req->payload, c->req->len);
        slot = rd_u8(&r);
        (void)rd_take(&r, 3);
        nonce = rd_take(&r, KILN_NONCE_LEN);
        if (!rd_done(&r))
                return cmd_malformed(c, "ATTEST payload must be 36 bytes");
        st = cmd_lifecycle_allows(c, LC_NOT_DECOMMISSIONED, &in);
        if (st != KILN_ST_OK)
                return st;
        if (slot >= in.key_slots)
                return cmd_fail(c, KILN_ST_KEY_SLOT, 0, "key slot out of range");
        if ((in.key_present & (1u << slot)) == 0)
                return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no key in slot");
        signed_digest(KILN_ATTEST_LABEL, KILN_ATTEST_LABEL_LEN, nonce, &in, slot, digest);
        wr_u8(&c->out, slot);
        alg_pos = c->out.len;
        wr_u8(&c->out, 0);
        st = cmd_sign_blob(c, slot, KILN_AGENT_SIGN_ATTEST, digest, &alg);
        if (st != KILN_ST_OK)
                return st;
        c->out.p[alg_pos] = alg;
        return KILN_ST_OK;
}

/* ---- objects ---- */

static int cmd_write_object(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        struct kiln_agent_obj_stat ps;
        const char *name;
        const uint8_t *data;
        uint8_t name_len = 0, flags;
        uint32_t total, offset, dlen, received;
        struct rd r;
        int st, rc;

        /* Expected format: name, flags u8, reserved[3], total_len u32, offset u32,
         * data_len u32, data[data_len]. */
        rd_init(&r, c->req->payload, c->req->len);
        name = rd_name(&r, &name_len);
        flags = rd_u8(&r);
        (void)rd_take(&r, 3);
        total = rd_le32(&r);
        offset = rd_le32(&r);
        dlen = rd_le32(&r);
        data = rd_take(&r, dlen);
        if (!rd_done(&r))
                return cmd_malformed(c, "bad WRITE_OBJECT payload");
        if (offset > total || dlen > total - offset)
                return cmd_malformed(c, "offset + len > total_len");
        /* bits other than SECRET are not defined: ignored, like reserved fields */
        flags &= KILN_OBJ_SECRET;
        st = cmd_lifecycle_allows(c, LC_MFG_OR_RMA, &in);
        if (st != KILN_ST_OK)
                return st;
        if (offset != 0) {
                rc = a->ops->obj_stat(a->ctx, name, name_len, KILN_AGENT_OBJ_PENDING, &ps);
                if (rc == KILN_E_NOT_FOUND)
                        return cmd_fail(c, KILN_ST_OFFSET, 0, "offset mismatch");
                if (rc < 0)
                        return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage failed");
                if (ps.received != offset || ps.total_len != total ||
                    (ps.flags & KILN_OBJ_SECRET) != flags)
                        return cmd_fail(c, KILN_ST_OFFSET, ps.received, "offset mismatch");
        }
        rc = a->ops->obj_write(a->ctx, name, name_len, flags, total, offset, data, dlen);
        if (rc == KILN_E_NOSPACE)
                return cmd_fail(c, KILN_ST_NO_SPACE, 0, "object storage full");
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage write failed");
        received = offset + dlen;
        wr_le32(&c->out, received);
        wr_u8(&c->out, received == total ? 1 : 0);
        wr_zero(&c->out, 3);
        return KILN_ST_OK;
}

static int cmd_read_object(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        struct kiln_agent_obj_stat s;
        const char *name;
        uint8_t name_len = 0, *dst;
        uint32_t offset, max_len, n;
        struct rd r;
        int st, rc;

        /* Expected format: name, offset u32, max_len u32. */
        rd_init(&r, c->req->payload, c->req->len);
        name = rd_name(&r, &name_len);
        offset = rd_le32(&r);
        max_len = rd_le32(&r);
        if (!rd_done(&r))
                return cmd_malformed(c, "bad READ_OBJECT payload");
        st = cmd_lifecycle_allows(c, LC_NOT_DECOMMISSIONED, &in);
        if (st != KILN_ST_OK)
                return st;
        if (max_len > a->max_payload - 12u)
                return cmd_fail(c, KILN_ST_TOO_LARGE, a->max_payload,
                                "max_len over max_payload - 12");
        rc = a->ops->obj_stat(a->ctx, name, name_len, KILN_AGENT_OBJ_COMPLETE, &s);
        if (rc == KILN_E_NOT_FOUND)
                return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no such object");
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage failed");
        if (s.flags & KILN_OBJ_SECRET)
                return cmd_fail(c, KILN_ST_PROTECTED, 0, "object is secret");
        if (offset > s.total_len)
                return cmd_malformed(c, "offset beyond the object");
        n = s.total_len - offset;
        if (n > max_len)
                n = max_len;
        wr_le32(&c->out, s.total_len);
        wr_le32(&c->out, offset);
        wr_le32(&c->out, n);
        dst = wr_take(&c->out, n);
        if (dst == NULL)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        if (n > 0) {
                rc = a->ops->obj_read(a->ctx, name, name_len, KILN_AGENT_OBJ_COMPLETE, offset, dst,
                                      n);
                if (rc < 0)
                        return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage read failed");
        }
        return KILN_ST_OK;
}

static int cmd_object_hash(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        struct kiln_agent_obj_stat s;
        struct kiln_agent_sha256 h;
        enum kiln_agent_obj_view view = KILN_AGENT_OBJ_PENDING;
        uint8_t digest[KILN_AGENT_SHA256_LEN];
        const char *name;
        uint8_t name_len = 0;
        uint32_t done = 0;
        struct rd r;
        int st, rc;

        /* Expected format: name. */
        rd_init(&r, c->req->payload, c->req->len);
        name = rd_name(&r, &name_len);
        if (!rd_done(&r))
                return cmd_malformed(c, "bad OBJECT_HASH payload");
        st = cmd_lifecycle_allows(c, LC_NOT_DECOMMISSIONED, &in);
        if (st != KILN_ST_OK)
                return st;
        /* a write in progress is what a resuming host needs to see (§5.6) */
        rc = a->ops->obj_stat(a->ctx, name, name_len, view, &s);
        if (rc == KILN_E_NOT_FOUND) {
                view = KILN_AGENT_OBJ_COMPLETE;
                rc = a->ops->obj_stat(a->ctx, name, name_len, view, &s);
                if (rc == KILN_E_NOT_FOUND)
                        return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no such object");
                s.received = s.total_len;
        }
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage failed");
        if (s.received > s.total_len)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "storage reports more than the total");
        /* hash through the response memory, which this request replaces anyway */
        kiln_agent_sha256_init(&h);
        while (done < s.received) {
                size_t n = s.received - done;

                if (n > c->out.cap)
                        n = c->out.cap;
                rc = a->ops->obj_read(a->ctx, name, name_len, view, done, c->out.p, n);
                if (rc < 0)
                        return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "storage read failed");
                kiln_agent_sha256_update(c->out.p, n, &h);
                done += (uint32_t)n;
        }
        kiln_agent_sha256_final(&h, digest);
        wr_le32(&c->out, s.total_len);
        wr_le32(&c->out, s.received);
        wr_u8(&c->out, view == KILN_AGENT_OBJ_COMPLETE ? 1 : 0);
        wr_u8(&c->out, s.flags & KILN_OBJ_SECRET);
        wr_le16(&c->out, 0);
        wr_bytes(&c->out, digest, sizeof(digest));
        return KILN_ST_OK;
}

/* ---- fuses ---- */

static int cmd_fuse_describe(struct cmd *c, uint16_t index, struct kiln_agent_fuse_desc *ret)
{
        struct kiln_agent_fuse_desc d;
        int rc;

        memset(&d, 0, sizeof(d));
        rc = c->a->ops->fuse_describe(c->a->ctx, index, &d);
        if (rc == KILN_E_NOT_FOUND)
                return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no such fuse field");
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "fuse map unavailable");
        if (!name_ok(d.name, d.name_len) || d.width_bits < 1 ||
            d.width_bits > KILN_FUSE_BYTES_MAX * 8u)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "fuse map invalid");
        *ret = d;
        return KILN_ST_OK;
}

static int cmd_fuse_find(struct cmd *c, const char *name, uint8_t name_len, uint16_t *ret_index,
                         struct kiln_agent_fuse_desc *ret_desc)
{
        struct kiln_agent_fuse_desc d;
        uint32_t i;
        int st;

        for (i = 0; i <= 0xFFFFu; i++) {
                st = cmd_fuse_describe(c, (uint16_t)i, &d);
                if (st != KILN_ST_OK)
                        return st;
                if (d.name_len == name_len && memcmp(d.name, name, name_len) == 0) {
                        *ret_index = (uint16_t)i;
                        *ret_desc = d;
                        return KILN_ST_OK;
                }
        }
        return cmd_fail(c, KILN_ST_NOT_FOUND, 0, "no such fuse field");
}

/* The FUSE_READ response for a field (also FUSE_PROGRAM's read-back). */
static int cmd_fuse_reply(struct cmd *c, uint16_t index, const struct kiln_agent_fuse_desc *d)
{
        size_t nbytes = (d->width_bits + 7u) / 8u;
        uint8_t *val;
        int rc;

        wr_u8(&c->out, d->name_len);
        wr_bytes(&c->out, d->name, d->name_len);
        wr_le16(&c->out, d->width_bits);
        wr_u8(&c->out, d->attributes & (KILN_FUSE_WRITE_PROTECTED | KILN_FUSE_READ_PROTECTED));
        wr_u8(&c->out, (uint8_t)nbytes);
        val = wr_take(&c->out, nbytes);
        if (val == NULL)
                return cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        memset(val, 0, nbytes);
        if (d->attributes & KILN_FUSE_READ_PROTECTED)
                return KILN_ST_OK;
        rc = c->a->ops->fuse_read(c->a->ctx, index, val, nbytes);
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "fuse read failed");
        /* never show bits above the width, whatever the hardware returned */
        if (d->width_bits % 8u != 0)
                val[nbytes - 1] &= (uint8_t)((1u << (d->width_bits % 8u)) - 1u);
        return KILN_ST_OK;
}

static int cmd_fuse_read(struct cmd *c)
{
        struct kiln_agent_fuse_desc d;
        const uint8_t *q;
        uint16_t index = 0;
        uint8_t n;
        struct rd r;
        int st;

        /* Expected format: u8 len (0..32), then len name bytes, or (len 0) index u16. */
        rd_init(&r, c->req->payload, c->req->len);
        n = rd_u8(&r);
        if (n == 0) {
                index = rd_le16(&r);
                if (!rd_done(&r))
                        return cmd_malformed(c, "bad FUSE_READ payload");
                st = cmd_fuse_describe(c, index, &d);
        } else {
                q = rd_take(&r, n);
                if (!rd_done(&r) || !name_ok((const char *)q, n))
                        return cmd_malformed(c, "bad FUSE_READ payload");
                st = cmd_fuse_find(c, (const char *)q, n, &index, &d);
        }
        if (st != KILN_ST_OK)
                return st;
        return cmd_fuse_reply(c, index, &d);
}

static int cmd_fuse_program(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        struct kiln_agent_fuse_desc d;
        const char *name;
        const uint8_t *value;
        uint8_t name_len = 0, vlen;
        uint16_t index = 0;
        struct rd r;
        int st, rc;

        /* Expected format: name, value_len u8, value[value_len]. */
        rd_init(&r, c->req->payload, c->req->len);
        name = rd_name(&r, &name_len);
        vlen = rd_u8(&r);
        value = rd_take(&r, vlen);
        if (!rd_done(&r))
                return cmd_malformed(c, "bad FUSE_PROGRAM payload");
        st = cmd_lifecycle_allows(c, LC_MFG_OR_RMA, &in);
        if (st != KILN_ST_OK)
                return st;
        st = cmd_fuse_find(c, name, name_len, &index, &d);
        if (st != KILN_ST_OK)
                return st;
        if (vlen != (d.width_bits + 7u) / 8u)
                return cmd_malformed(c, "value length does not match the field width");
        if (d.width_bits % 8u != 0 && (value[vlen - 1] >> (d.width_bits % 8u)) != 0)
                return cmd_malformed(c, "value has bits above the field width");
        /* refused whole, even when value adds nothing (§5.8) */
        if (d.attributes & KILN_FUSE_WRITE_PROTECTED)
                return cmd_fail(c, KILN_ST_PROTECTED, 0, "fuse field is write-protected");
        rc = a->ops->fuse_program(a->ctx, index, value, vlen);
        if (rc < 0)
                return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "fuse programming failed");
        /* the read-back shows the field as it is now, protections included */
        st = cmd_fuse_describe(c, index, &d);
        if (st != KILN_ST_OK)
                return st == KILN_ST_NOT_FOUND
                           ? cmd_fail(c, KILN_ST_INTERNAL, 0, "fuse map changed")
                           : st;
        return cmd_fuse_reply(c, index, &d);
}

/* ---- lifecycle and reset ---- */

static int lifecycle_transition_ok(uint8_t from, uint8_t to)
{
        switch (from) {
        case KILN_LC_MANUFACTURING:
                return to == KILN_LC_PRODUCTION || to == KILN_LC_DECOMMISSIONED;
        case KILN_LC_PRODUCTION:
                return to == KILN_LC_RMA || to == KILN_LC_DECOMMISSIONED;
        case KILN_LC_RMA:
                return to == KILN_LC_PRODUCTION || to == KILN_LC_DECOMMISSIONED;
        default:
                return 0;
        }
}

static int cmd_set_lifecycle(struct cmd *c)
{
        struct kiln_agent *a = c->a;
        struct kiln_agent_info in;
        uint8_t target;
        struct rd r;
        int st, rc;

        /* Expected format: target u8. */
        rd_init(&r, c->req->payload, c->req->len);
        target = rd_u8(&r);
        if (!rd_done(&r))
                return cmd_malformed(c, "SET_LIFECYCLE payload must be 1 byte");
        if (target < KILN_LC_MANUFACTURING || target >= KILN_LC_MAX)
                return cmd_malformed(c, "unknown lifecycle state");
        st = cmd_info(c, &in);
        if (st != KILN_ST_OK)
                return st;
        if (target != in.lifecycle) {
                if (!lifecycle_transition_ok(in.lifecycle, target))
                        return cmd_fail(c, KILN_ST_LIFECYCLE, 0,
                                        "lifecycle transition not allowed");
                rc = a->ops->lifecycle_set(a->ctx, target);
                if (rc < 0)
                        return cmd_cb_fail(c, rc, KILN_ST_HARDWARE, "lifecycle not stored");
                st = cmd_info(c, &in);
                if (st != KILN_ST_OK)
                        return st;
        }
        wr_u8(&c->out, in.lifecycle);
        return KILN_ST_OK;
}

static int cmd_reset(struct cmd *c)
{
        struct rd r;
        uint8_t mode;

        /* Expected format: mode u8 (0 = reboot). */
        rd_init(&r, c->req->payload, c->req->len);
        mode = rd_u8(&r);
        if (!rd_done(&r))
                return cmd_malformed(c, "RESET payload must be 1 byte");
        if (mode != 0)
                return cmd_malformed(c, "unknown reset mode");
        c->reset_mode = mode;
        c->reset_due = 1;
        return KILN_ST_OK;
}

/* ---- dispatch and sending ---- */

static int cmd_execute(struct cmd *c)
{
        const struct kiln_agent_ops *ops = c->a->ops;

        switch (c->req->type) {
        case KILN_MSG_HELLO:
                return cmd_hello(c);
        case KILN_MSG_GET_INFO:
                return cmd_get_info(c);
        case KILN_MSG_KEYGEN:
                if (ops->key_generate && ops->key_sign)
                        return cmd_keygen(c);
                break;
        case KILN_MSG_WRITE_OBJECT:
                if (ops->obj_write)
                        return cmd_write_object(c);
                break;
        case KILN_MSG_READ_OBJECT:
                if (ops->obj_write)
                        return cmd_read_object(c);
                break;
        case KILN_MSG_OBJECT_HASH:
                if (ops->obj_write)
                        return cmd_object_hash(c);
                break;
        case KILN_MSG_FUSE_READ:
                if (ops->fuse_program)
                        return cmd_fuse_read(c);
                break;
        case KILN_MSG_FUSE_PROGRAM:
                if (ops->fuse_program)
                        return cmd_fuse_program(c);
                break;
        case KILN_MSG_ATTEST:
                if (ops->key_sign)
                        return cmd_attest(c);
                break;
        case KILN_MSG_SET_LIFECYCLE:
                if (ops->lifecycle_set)
                        return cmd_set_lifecycle(c);
                break;
        case KILN_MSG_RESET:
                if (ops->reset)
                        return cmd_reset(c);
                break;
        default:
                break;
        }
        return cmd_fail(c, KILN_ST_UNKNOWN_COMMAND, 0, "command not implemented");
}

/* Error payload of §4.4: detail u32, msg_len u8, msg. */
static size_t errpay_build(uint32_t detail, const char *msg, uint8_t *out)
{
        size_t n = msg ? strlen(msg) : 0;

        if (n > KILN_ERRMSG_MAX)
                n = KILN_ERRMSG_MAX;
        kiln_put_le32(out, detail);
        out[4] = (uint8_t)n;
        if (n > 0)
                memcpy(out + 5, msg, n);
        return 5u + n;
}

static void agent_send(struct kiln_agent *a, uint8_t type, uint32_t request_id, uint8_t status,
                       const uint8_t *payload, uint32_t len, uint8_t resent)
{
        struct kiln_frame f;
        struct kiln_agent_event ev;
        size_t n = 0;
        int r;

        f.version = KILN_PROTO_VERSION;
        f.type = type;
        f.flags = KILN_FLAG_RESPONSE;
        f.status = status;
        f.session = a->session;
        f.request_id = request_id;
        f.len = len;
        f.payload = payload;
        if (a->ops->trace) {
                ev.kind = KILN_AGENT_EV_TX;
                ev.frame = &f;
                ev.code = 0;
                ev.resent = resent;
                a->ops->trace(a->ctx, &ev);
        }
        r = kiln_frame_encode(&f, a->rx, a->rx_cap, &n);
        if (r == KILN_OK)
                r = a->ops->write(a->ctx, a->rx, n);
        if (r < 0 && a->write_err == 0)
                a->write_err = r;
}

/* An answer that is not remembered (SESSION, REQID_REUSE). */
static void agent_send_error(struct kiln_agent *a, const struct kiln_frame *req, uint8_t status,
                             const char *msg)
{
        uint8_t buf[ERRPAY_MAX];
        size_t n = errpay_build(0, msg, buf);

        agent_send(a, req->type, req->request_id, status, buf, (uint32_t)n, 0);
}

static void agent_send_nak(struct kiln_agent *a, int code)
{
        struct kiln_agent_event ev;
        uint8_t p[4] = {KILN_NAK_FORMAT, 0, 0, 0};

        if (code == KILN_E_PROTO_CRC)
                p[0] = KILN_NAK_CRC;
        else if (code == KILN_E_PROTO_TOO_LARGE)
                p[0] = KILN_NAK_TOO_LARGE;
        else if (code == KILN_E_PROTO_VERSION)
                p[0] = KILN_NAK_VERSION;
        if (a->ops->trace) {
                ev.kind = KILN_AGENT_EV_RX_REJECT;
                ev.frame = NULL;
                ev.code = code;
                ev.resent = 0;
                a->ops->trace(a->ctx, &ev);
        }
        agent_send(a, KILN_MSG_NAK, 0, KILN_ST_OK, p, sizeof(p), 0);
}

/* Execute into the response memory; returns the status. */
static uint8_t agent_execute(struct kiln_agent *a, const struct kiln_frame *f, struct cmd *c)
{
        int st;

        memset(c, 0, sizeof(*c));
        c->a = a;
        c->req = f;
        wr_init(&c->out, a->resp, a->resp_cap < a->device_max ? a->resp_cap : a->device_max);
        st = cmd_execute(c);
        if (st == KILN_ST_OK && c->out.bad)
                st = cmd_fail(c, KILN_ST_INTERNAL, 0, "response does not fit");
        if (st == KILN_ST_OK && c->out.len > a->max_payload)
                st = cmd_fail(c, KILN_ST_INTERNAL, 0, "response over max_payload");
        if (st != KILN_ST_OK) {
                c->reset_due = 0;
                c->out.len = errpay_build(c->detail, c->msg, a->resp);
        }
        return (uint8_t)st;
}

static void agent_handle(struct kiln_agent *a, const struct kiln_frame *f)
{
        struct kiln_agent_event ev;
        struct cmd c;
        uint32_t crc;
        uint8_t st;

        if (a->ops->trace) {
                ev.kind = KILN_AGENT_EV_RX;
                ev.frame = f;
                ev.code = 0;
                ev.resent = 0;
                a->ops->trace(a->ctx, &ev);
        }
        /* A device never answers a response: a frame with RESPONSE set is our own output echoed
         * back by the link (a loopback or an echoing terminal); answering it would ping-pong. */
        if (f->flags & KILN_FLAG_RESPONSE)
                return;
        if (f->type == KILN_MSG_HELLO) {
                /* always executed, no side effects, clears the response memory (§4.3 step 1) */
                a->mem_valid = 0;
                st = agent_execute(a, f, &c);
                agent_send(a, f->type, f->request_id, st, a->resp, (uint32_t)c.out.len, 0);
                return;
        }
        if (f->session != a->session) {
                agent_send_error(a, f, KILN_ST_SESSION, "session mismatch, send HELLO");
                return;
        }
        crc = kiln_crc32c(0, f->payload, f->len);
        if (a->mem_valid && f->request_id == a->mem_request_id) {
                if (f->type == a->mem_type && f->len == a->mem_req_len && crc == a->mem_req_crc)
                        agent_send(a, a->mem_type, a->mem_request_id, a->mem_status, a->resp,
                                   a->mem_len, 1);
                else
                        agent_send_error(a, f, KILN_ST_REQID_REUSE,
                                         "request id reused for another request");
                return;
        }
        a->mem_valid = 0;
        st = agent_execute(a, f, &c);
        a->mem_type = f->type;
        a->mem_status = st;
        a->mem_request_id = f->request_id;
        a->mem_req_len = f->len;
        a->mem_req_crc = crc;
        a->mem_len = (uint32_t)c.out.len;
        a->mem_valid = 1;
        agent_send(a, f->type, f->request_id, st, a->resp, a->mem_len, 0);
        if (c.reset_due) {
                a->halted = 1;
                a->ops->reset(a->ctx, c.reset_mode);
        }
}

int kiln_agent_init(const struct kiln_agent_config *cfg, struct kiln_agent *ret_agent)
{
        struct kiln_agent a;
        const struct kiln_agent_ops *ops;
        const char *name;
        size_t name_len;
        int tries;

        if (cfg == NULL || ret_agent == NULL || cfg->ops == NULL)
                return KILN_E_INVAL;
        ops = cfg->ops;
        if (ops->write == NULL || ops->random == NULL || ops->get_info == NULL)
                return KILN_E_INVAL;
        /* objects and fuses come as complete sets */
        if ((ops->obj_stat == NULL) != (ops->obj_write == NULL) ||
            (ops->obj_read == NULL) != (ops->obj_write == NULL))
                return KILN_E_INVAL;
        if ((ops->fuse_describe == NULL) != (ops->fuse_program == NULL) ||
            (ops->fuse_read == NULL) != (ops->fuse_program == NULL))
                return KILN_E_INVAL;
        if (cfg->max_payload < KILN_PAYLOAD_MIN_MAX || cfg->max_payload > KILN_PAYLOAD_MAX)
                return KILN_E_INVAL;
        if (cfg->rx_buf == NULL || cfg->rx_cap < KILN_AGENT_RX_SIZE(cfg->max_payload) ||
            cfg->resp_buf == NULL || cfg->resp_cap < KILN_AGENT_RESP_SIZE(cfg->max_payload))
                return KILN_E_INVAL;
        name = cfg->name ? cfg->name : KILN_AGENT_NAME_DEFAULT;
        name_len = strlen(name);
        if (name_len > KILN_AGENT_NAME_MAX || !name_ok(name, name_len))
                return KILN_E_INVAL;

        memset(&a, 0, sizeof(a));
        a.ops = ops;
        a.ctx = cfg->ctx;
        a.rx = cfg->rx_buf;
        a.rx_cap = cfg->rx_cap;
        a.resp = cfg->resp_buf;
        a.resp_cap = cfg->resp_cap;
        a.device_max = cfg->max_payload;
        a.max_payload = KILN_PAYLOAD_MIN_MAX;
        memcpy(a.name, name, name_len);
        a.name_len = (uint8_t)name_len;
        if (ops->key_generate && ops->key_sign)
                a.caps |= KILN_CAP_KEYGEN_P256;
        if (ops->key_sign)
                a.caps |= KILN_CAP_ATTEST;
        if (ops->obj_write)
                a.caps |= KILN_CAP_OBJECTS;
        if (ops->fuse_program)
                a.caps |= KILN_CAP_FUSES;
        if (ops->lifecycle_set)
                a.caps |= KILN_CAP_LIFECYCLE;
        if (ops->reset)
                a.caps |= KILN_CAP_RESET;
        /* only bits that describe the firmware itself, never a command it lacks */
        a.caps |= cfg->caps_extra & KILN_CAP_SIMULATED;
        /* the session id is the nonce's first four bytes and must not be 0 (§4.1) */
        for (tries = 0; tries < 16 && a.session == 0; tries++) {
                if (ops->random(cfg->ctx, a.nonce, sizeof(a.nonce)) < 0)
                        return KILN_E_INTERNAL;
                a.session = kiln_le32(a.nonce);
        }
        if (a.session == 0)
                return KILN_E_INTERNAL;
        kiln_decoder_init(&a.dec, a.rx, CAND_MAX(KILN_PAYLOAD_MIN_MAX), KILN_PAYLOAD_MIN_MAX);
        *ret_agent = a;
        return KILN_OK;
}

int kiln_agent_feed(struct kiln_agent *a, const uint8_t *in, size_t n)
{
        size_t off = 0;

        if (a->halted)
                return KILN_AGENT_RESET;
        a->write_err = 0;
        while (off < n) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&a->dec, in + off, n - off, &used, &f);

                off += used;
                if (r == KILN_DEC_FRAME)
                        agent_handle(a, &f);
                else if (r < 0)
                        agent_send_nak(a, r);
                if (a->halted)
                        return KILN_AGENT_RESET;
                if (used == 0)
                        break;
        }
        return a->write_err;
}

uint32_t kiln_agent_session(const struct kiln_agent *a)
{
        return a->session;
}
