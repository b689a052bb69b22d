/* Host message codec: request builders and strict response parsers (docs/protocol.md §4.4, §5). */
#include <stdio.h>
#include <string.h>

#include "kiln/buf.h"
#include "kiln/endian.h"
#include "kiln/error.h"
#include "kiln/msg.h"

const char *proto_msg_type_name(uint8_t type)
{
        static const char *const names[] = {
            [KILN_MSG_HELLO] = "HELLO",
            [KILN_MSG_GET_INFO] = "GET_INFO",
            [KILN_MSG_KEYGEN] = "KEYGEN",
            [KILN_MSG_WRITE_OBJECT] = "WRITE_OBJECT",
            [KILN_MSG_READ_OBJECT] = "READ_OBJECT",
            [KILN_MSG_OBJECT_HASH] = "OBJECT_HASH",
            [KILN_MSG_FUSE_READ] = "FUSE_READ",
            [KILN_MSG_FUSE_PROGRAM] = "FUSE_PROGRAM",
            [KILN_MSG_ATTEST] = "ATTEST",
            [KILN_MSG_SET_LIFECYCLE] = "SET_LIFECYCLE",
            [KILN_MSG_RESET] = "RESET",
            [KILN_MSG_NAK] = "NAK",
        };

        if (type < sizeof(names) / sizeof(names[0]) && names[type] != NULL)
                return names[type];
        return "UNKNOWN";
}

const char *proto_status_name(uint8_t status)
{
        static const char *const names[KILN_ST_MAX] = {
            "OK",        "UNKNOWN_COMMAND", "MALFORMED", "TOO_LARGE", "SESSION",
            "NOT_FOUND", "OFFSET",          "NO_SPACE",  "PROTECTED", "LIFECYCLE",
            "KEY_SLOT",  "ALGORITHM",       "HARDWARE",  "BUSY",      "REQID_REUSE",
            "VERSION",   "INTERNAL",
        };

        if (status < KILN_ST_MAX)
                return names[status];
        return "UNKNOWN";
}

const char *proto_lifecycle_name(uint8_t lifecycle)
{
        switch (lifecycle) {
        case KILN_LC_MANUFACTURING:
                return "MANUFACTURING";
        case KILN_LC_PRODUCTION:
                return "PRODUCTION";
        case KILN_LC_RMA:
                return "RMA";
        case KILN_LC_DECOMMISSIONED:
                return "DECOMMISSIONED";
        default:
                return "UNKNOWN";
        }
}

static int name_char_ok(uint8_t c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
}

static int name_bytes_ok(const uint8_t *p, size_t n)
{
        if (n < 1 || n > KILN_NAME_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!name_char_ok(p[i]))
                        return 0;
        return 1;
}

int proto_msg_name_check(const char *name)
{
        size_t n;

        if (name == NULL)
                return KILN_E_INVAL;
        n = strnlen(name, KILN_NAME_MAX + 1);
        return name_bytes_ok((const uint8_t *)name, n) ? KILN_OK : KILN_E_INVAL;
}

/*
 * Builders. Each checks its arguments and the room needed, then writes through a plain cursor.
 */

struct wr {
        uint8_t *p;
        size_t off;
};

static void wr_u8(struct wr *w, uint8_t v)
{
        w->p[w->off++] = v;
}

static void wr_le16(struct wr *w, uint16_t v)
{
        kiln_put_le16(w->p + w->off, v);
        w->off += 2;
}

static void wr_le32(struct wr *w, uint32_t v)
{
        kiln_put_le32(w->p + w->off, v);
        w->off += 4;
}

static void wr_bytes(struct wr *w, const void *p, size_t n)
{
        if (n > 0)
                memcpy(w->p + w->off, p, n);
        w->off += n;
}

static void wr_zero(struct wr *w, size_t n)
{
        memset(w->p + w->off, 0, n);
        w->off += n;
}

static int build_check(const char *what, size_t need, uint8_t *out, size_t cap)
{
        if (out == NULL && need > 0)
                return kiln_fail(KILN_E_INVAL, "%s request: no output buffer", what);
        if (cap < need)
                return kiln_fail(KILN_E_RANGE, "%s request needs %zu bytes, buffer holds %zu", what,
                                 need, cap);
        return KILN_OK;
}

static int build_name_check(const char *what, const char *field, const char *name)
{
        if (proto_msg_name_check(name) < 0)
                return kiln_fail(KILN_E_INVAL,
                                 "%s request: %s must be 1..%u characters of [A-Za-z0-9._-]", what,
                                 field, KILN_NAME_MAX);
        return KILN_OK;
}

int proto_msg_hello_build(uint32_t host_max_payload, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        if (host_max_payload < KILN_PAYLOAD_MIN_MAX || host_max_payload > KILN_PAYLOAD_MAX)
                return kiln_fail(KILN_E_INVAL,
                                 "HELLO request: host maximum payload %u not in %u..%u",
                                 host_max_payload, KILN_PAYLOAD_MIN_MAX, KILN_PAYLOAD_MAX);
        r = build_check("HELLO", 8, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, KILN_PROTO_VERSION);
        wr_u8(&w, KILN_PROTO_VERSION);
        wr_le16(&w, 0);
        wr_le32(&w, host_max_payload);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_info_build(uint8_t *out, size_t cap, size_t *ret_len)
{
        (void)out;
        (void)cap;
        *ret_len = 0;
        return KILN_OK;
}

int proto_msg_keygen_build(uint8_t key_slot, uint8_t algorithm, const uint8_t nonce[KILN_NONCE_LEN],
                           uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        if (key_slot >= KILN_KEY_SLOTS_MAX)
                return kiln_fail(KILN_E_INVAL, "KEYGEN request: key slot %u not below %u", key_slot,
                                 KILN_KEY_SLOTS_MAX);
        if (algorithm != KILN_ALG_ECDSA_P256_SHA256)
                return kiln_fail(KILN_E_INVAL, "KEYGEN request: algorithm %u not supported",
                                 algorithm);
        if (nonce == NULL)
                return kiln_fail(KILN_E_INVAL, "KEYGEN request: no station nonce");
        r = build_check("KEYGEN", 4 + KILN_NONCE_LEN, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, key_slot);
        wr_u8(&w, algorithm);
        wr_le16(&w, 0);
        wr_bytes(&w, nonce, KILN_NONCE_LEN);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_write_build(const struct proto_write_req *req, uint8_t *out, size_t cap,
                          size_t *ret_len)
{
        struct wr w = {out, 0};
        size_t nlen, need;
        int r;

        r = build_name_check("WRITE_OBJECT", "object name", req->name);
        if (r < 0)
                return r;
        if (req->data_len > 0 && req->data == NULL)
                return kiln_fail(KILN_E_INVAL, "WRITE_OBJECT request: no data");
        if (req->offset > req->total_len || req->data_len > req->total_len - req->offset)
                return kiln_fail(KILN_E_INVAL,
                                 "WRITE_OBJECT request: chunk %u+%u beyond object size %u",
                                 req->offset, req->data_len, req->total_len);
        nlen = strlen(req->name);
        need = PROTO_WRITE_OVERHEAD(nlen) + (size_t)req->data_len;
        r = build_check("WRITE_OBJECT", need, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, (uint8_t)nlen);
        wr_bytes(&w, req->name, nlen);
        wr_u8(&w, req->flags);
        wr_zero(&w, 3);
        wr_le32(&w, req->total_len);
        wr_le32(&w, req->offset);
        wr_le32(&w, req->data_len);
        wr_bytes(&w, req->data, req->data_len);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_read_build(const char *name, uint32_t offset, uint32_t max_len, uint8_t *out,
                         size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        size_t nlen;
        int r;

        r = build_name_check("READ_OBJECT", "object name", name);
        if (r < 0)
                return r;
        nlen = strlen(name);
        r = build_check("READ_OBJECT", 1 + nlen + 8, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, (uint8_t)nlen);
        wr_bytes(&w, name, nlen);
        wr_le32(&w, offset);
        wr_le32(&w, max_len);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_hash_build(const char *name, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        size_t nlen;
        int r;

        r = build_name_check("OBJECT_HASH", "object name", name);
        if (r < 0)
                return r;
        nlen = strlen(name);
        r = build_check("OBJECT_HASH", 1 + nlen, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, (uint8_t)nlen);
        wr_bytes(&w, name, nlen);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_fuse_read_build(const char *name, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        size_t nlen;
        int r;

        r = build_name_check("FUSE_READ", "field name", name);
        if (r < 0)
                return r;
        nlen = strlen(name);
        r = build_check("FUSE_READ", 1 + nlen, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, (uint8_t)nlen);
        wr_bytes(&w, name, nlen);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_fuse_read_index_build(uint16_t index, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        r = build_check("FUSE_READ", 3, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, 0);
        wr_le16(&w, index);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_fuse_program_build(const char *name, const uint8_t *value, size_t value_len,
                                 uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        size_t nlen;
        int r;

        r = build_name_check("FUSE_PROGRAM", "field name", name);
        if (r < 0)
                return r;
        if (value == NULL || value_len < 1 || value_len > KILN_FUSE_BYTES_MAX)
                return kiln_fail(KILN_E_INVAL,
                                 "FUSE_PROGRAM request: value of %zu bytes not in 1..%u", value_len,
                                 KILN_FUSE_BYTES_MAX);
        nlen = strlen(name);
        r = build_check("FUSE_PROGRAM", 1 + nlen + 1 + value_len, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, (uint8_t)nlen);
        wr_bytes(&w, name, nlen);
        wr_u8(&w, (uint8_t)value_len);
        wr_bytes(&w, value, value_len);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_attest_build(uint8_t key_slot, const uint8_t nonce[KILN_NONCE_LEN], uint8_t *out,
                           size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        if (key_slot >= KILN_KEY_SLOTS_MAX)
                return kiln_fail(KILN_E_INVAL, "ATTEST request: key slot %u not below %u", key_slot,
                                 KILN_KEY_SLOTS_MAX);
        if (nonce == NULL)
                return kiln_fail(KILN_E_INVAL, "ATTEST request: no nonce");
        r = build_check("ATTEST", 4 + KILN_NONCE_LEN, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, key_slot);
        wr_zero(&w, 3);
        wr_bytes(&w, nonce, KILN_NONCE_LEN);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_lifecycle_build(uint8_t target, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        if (target < KILN_LC_MANUFACTURING || target >= KILN_LC_MAX)
                return kiln_fail(KILN_E_INVAL, "SET_LIFECYCLE request: unknown state %u", target);
        r = build_check("SET_LIFECYCLE", 1, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, target);
        *ret_len = w.off;
        return KILN_OK;
}

int proto_msg_reset_build(uint8_t mode, uint8_t *out, size_t cap, size_t *ret_len)
{
        struct wr w = {out, 0};
        int r;

        if (mode != 0)
                return kiln_fail(KILN_E_INVAL, "RESET request: unknown mode %u", mode);
        r = build_check("RESET", 1, out, cap);
        if (r < 0)
                return r;
        wr_u8(&w, mode);
        *ret_len = w.off;
        return KILN_OK;
}

/*
 * Parsers. A cursor with a sticky error: after the first failure every getter is a no-op, so a
 * parser reads its fields in order and checks once at the end. The first failure names the field.
 */

struct prd {
        struct kiln_rd rd;
        const char *msg; /* "GET_INFO response" */
        int err;
};

static void prd_init(struct prd *d, const char *msg, const uint8_t *p, size_t n)
{
        static const uint8_t empty[1];

        /* a NULL view is an empty one (and no pointer arithmetic on NULL) */
        kiln_rd_init(&d->rd, p == NULL ? empty : p, p == NULL ? 0 : n);
        d->msg = msg;
        d->err = KILN_OK;
}

static void prd_fail(struct prd *d, const char *field, const char *why)
{
        if (d->err)
                return;
        d->err = kiln_fail(KILN_E_PROTO_MALFORMED, "%s: %s at byte %zu: %s", d->msg, field,
                           d->rd.off, why);
}

static const uint8_t *prd_bytes(struct prd *d, const char *field, size_t n)
{
        const uint8_t *p = NULL;

        if (d->err)
                return NULL;
        if (kiln_rd_bytes(&d->rd, n, &p) < 0) {
                prd_fail(d, field, "truncated");
                return NULL;
        }
        return p;
}

static uint8_t prd_u8(struct prd *d, const char *field)
{
        const uint8_t *p = prd_bytes(d, field, 1);

        return p ? p[0] : 0;
}

static uint16_t prd_le16(struct prd *d, const char *field)
{
        const uint8_t *p = prd_bytes(d, field, 2);

        return p ? kiln_le16(p) : 0;
}

static uint32_t prd_le32(struct prd *d, const char *field)
{
        const uint8_t *p = prd_bytes(d, field, 4);

        return p ? kiln_le32(p) : 0;
}

static void prd_copy(struct prd *d, const char *field, void *out, size_t n)
{
        const uint8_t *p = prd_bytes(d, field, n);

        if (p != NULL)
                memcpy(out, p, n);
}

/* name: u8 len (1..KILN_NAME_MAX) + [A-Za-z0-9._-]; copied NUL-terminated into out[KILN_NAME_MAX+1]
 */
static void prd_name(struct prd *d, const char *field, char *out)
{
        size_t start = d->rd.off;
        uint8_t len = prd_u8(d, field);
        const uint8_t *p;

        if (d->err)
                return;
        if (len < 1 || len > KILN_NAME_MAX) {
                d->rd.off = start;
                prd_fail(d, field, "name length not in 1..32");
                return;
        }
        p = prd_bytes(d, field, len);
        if (p == NULL)
                return;
        if (!name_bytes_ok(p, len)) {
                d->rd.off = start;
                prd_fail(d, field, "character outside [A-Za-z0-9._-]");
                return;
        }
        memcpy(out, p, len);
        out[len] = '\0';
}

/* blob16: u16 len + bytes; the length must be exactly `want` (the fixed size of the field). */
static uint16_t prd_blob16_fixed(struct prd *d, const char *field, size_t want, uint8_t *out)
{
        size_t start = d->rd.off;
        uint16_t len = prd_le16(d, field);

        if (d->err)
                return 0;
        if (len != want) {
                d->rd.off = start;
                prd_fail(d, field, "wrong length for the algorithm");
                return 0;
        }
        prd_copy(d, field, out, len);
        return len;
}

static void prd_range(struct prd *d, const char *field, uint32_t v, uint32_t lo, uint32_t hi,
                      size_t field_len)
{
        if (d->err || (v >= lo && v <= hi))
                return;
        d->rd.off -= field_len; /* point the message at the field itself */
        prd_fail(d, field, "value out of range");
}

static int prd_end(struct prd *d)
{
        if (d->err)
                return d->err;
        if (kiln_rd_left(&d->rd) != 0)
                return kiln_fail(KILN_E_PROTO_MALFORMED, "%s: %zu trailing bytes after byte %zu",
                                 d->msg, kiln_rd_left(&d->rd), d->rd.off);
        return KILN_OK;
}

static int printable(uint8_t c)
{
        return c >= 0x20 && c <= 0x7E;
}

int proto_msg_hello_parse(const uint8_t *p, size_t n, struct proto_hello *ret)
{
        /*
         * Expected format (§5.1):
         *   version u8, reserved[3], device_max_payload u32, max_payload u32,
         *   session_nonce[16], capabilities u32, agent name
         */
        struct proto_hello h;
        struct prd d;
        int r;

        memset(&h, 0, sizeof(h));
        prd_init(&d, "HELLO response", p, n);
        h.version = prd_u8(&d, "version");
        prd_range(&d, "version", h.version, KILN_PROTO_VERSION, KILN_PROTO_VERSION, 1);
        (void)prd_bytes(&d, "reserved", 3);
        h.device_max_payload = prd_le32(&d, "device_max_payload");
        prd_range(&d, "device_max_payload", h.device_max_payload, KILN_PAYLOAD_MIN_MAX, UINT32_MAX,
                  4);
        h.max_payload = prd_le32(&d, "max_payload");
        prd_range(&d, "max_payload", h.max_payload, KILN_PAYLOAD_MIN_MAX, KILN_PAYLOAD_MAX, 4);
        prd_copy(&d, "session_nonce", h.session_nonce, sizeof(h.session_nonce));
        if (!d.err) {
                h.session_id = kiln_le32(h.session_nonce);
                if (h.session_id == 0) {
                        d.rd.off -= sizeof(h.session_nonce);
                        prd_fail(&d, "session_nonce", "session id 0 (device must draw again)");
                }
        }
        h.capabilities = prd_le32(&d, "capabilities");
        prd_name(&d, "agent", h.agent);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = h;
        return KILN_OK;
}

int proto_msg_info_parse(const uint8_t *p, size_t n, struct proto_info *ret)
{
        /*
         * Expected format (§5.2):
         *   chip_uid u8 len (1..32) + bytes, product_id name, hw_revision u16,
         *   fw_version u8 len (0..32) + printable ASCII, fw_sha256[32], lifecycle u8 (1..4),
         *   debug_port u8 (0..1), secure_boot u8 (0..1), key_slots u8 (0..16), key_present u16
         */
        struct proto_info in;
        struct prd d;
        uint8_t len;
        const uint8_t *s;
        int r;

        memset(&in, 0, sizeof(in));
        prd_init(&d, "GET_INFO response", p, n);
        len = prd_u8(&d, "chip_uid");
        prd_range(&d, "chip_uid", len, 1, KILN_UID_MAX, 1);
        prd_copy(&d, "chip_uid", in.chip_uid, len);
        in.chip_uid_len = len;
        prd_name(&d, "product_id", in.product_id);
        in.hw_revision = prd_le16(&d, "hw_revision");
        len = prd_u8(&d, "fw_version");
        prd_range(&d, "fw_version", len, 0, KILN_FWVER_MAX, 1);
        s = prd_bytes(&d, "fw_version", d.err ? 0 : len);
        if (!d.err) {
                for (size_t i = 0; i < len; i++) {
                        if (!printable(s[i])) {
                                d.rd.off -= len - i;
                                prd_fail(&d, "fw_version", "not printable ASCII");
                                break;
                        }
                }
                if (!d.err) {
                        memcpy(in.fw_version, s, len);
                        in.fw_version[len] = '\0';
                }
        }
        prd_copy(&d, "fw_sha256", in.fw_sha256, sizeof(in.fw_sha256));
        in.lifecycle = prd_u8(&d, "lifecycle");
        prd_range(&d, "lifecycle", in.lifecycle, KILN_LC_MANUFACTURING, KILN_LC_MAX - 1, 1);
        in.debug_port = prd_u8(&d, "debug_port");
        prd_range(&d, "debug_port", in.debug_port, 0, 1, 1);
        in.secure_boot = prd_u8(&d, "secure_boot");
        prd_range(&d, "secure_boot", in.secure_boot, 0, 1, 1);
        in.key_slots = prd_u8(&d, "key_slots");
        prd_range(&d, "key_slots", in.key_slots, 0, KILN_KEY_SLOTS_MAX, 1);
        in.key_present = prd_le16(&d, "key_present");
        if (!d.err && in.key_slots < 16 && (in.key_present >> in.key_slots) != 0) {
                d.rd.off -= 2;
                prd_fail(&d, "key_present", "bit set for a slot the device does not have");
        }
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = in;
        return KILN_OK;
}

int proto_msg_keygen_parse(const uint8_t *p, size_t n, struct proto_keygen *ret)
{
        /*
         * Expected format (§5.3):
         *   key_slot u8 (< 16), algorithm u8 (1 = P-256),
         *   public_key blob16 (65 bytes, 0x04 ‖ X ‖ Y), pop_signature blob16 (64 bytes, r ‖ s)
         */
        struct proto_keygen k;
        struct prd d;
        int r;

        memset(&k, 0, sizeof(k));
        prd_init(&d, "KEYGEN response", p, n);
        k.key_slot = prd_u8(&d, "key_slot");
        prd_range(&d, "key_slot", k.key_slot, 0, KILN_KEY_SLOTS_MAX - 1, 1);
        k.algorithm = prd_u8(&d, "algorithm");
        prd_range(&d, "algorithm", k.algorithm, KILN_ALG_ECDSA_P256_SHA256,
                  KILN_ALG_ECDSA_P256_SHA256, 1);
        k.public_key_len = prd_blob16_fixed(&d, "public_key", PROTO_P256_PUBKEY_LEN, k.public_key);
        if (!d.err && k.public_key[0] != 0x04) {
                d.rd.off -= PROTO_P256_PUBKEY_LEN;
                prd_fail(&d, "public_key", "not an uncompressed point (0x04)");
        }
        k.signature_len = prd_blob16_fixed(&d, "pop_signature", PROTO_P256_SIG_LEN, k.signature);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = k;
        return KILN_OK;
}

int proto_msg_write_parse(const uint8_t *p, size_t n, struct proto_write_result *ret)
{
        /* Expected format (§5.4): received u32, complete u8 (0..1), reserved[3] */
        struct proto_write_result w;
        struct prd d;
        int r;

        memset(&w, 0, sizeof(w));
        prd_init(&d, "WRITE_OBJECT response", p, n);
        w.received = prd_le32(&d, "received");
        w.complete = prd_u8(&d, "complete");
        prd_range(&d, "complete", w.complete, 0, 1, 1);
        (void)prd_bytes(&d, "reserved", 3);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = w;
        return KILN_OK;
}

int proto_msg_read_parse(const uint8_t *p, size_t n, struct proto_read_result *ret)
{
        /*
         * Expected format (§5.5):
         *   total_len u32, offset u32 (<= total_len), data u32 len (<= total_len - offset) + bytes
         */
        struct proto_read_result rr;
        struct prd d;
        int r;

        memset(&rr, 0, sizeof(rr));
        prd_init(&d, "READ_OBJECT response", p, n);
        rr.total_len = prd_le32(&d, "total_len");
        rr.offset = prd_le32(&d, "offset");
        prd_range(&d, "offset", rr.offset, 0, rr.total_len, 4);
        rr.data_len = prd_le32(&d, "data");
        prd_range(&d, "data", rr.data_len, 0, rr.total_len - (d.err ? 0 : rr.offset), 4);
        rr.data = prd_bytes(&d, "data", d.err ? 0 : rr.data_len);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = rr;
        return KILN_OK;
}

int proto_msg_hash_parse(const uint8_t *p, size_t n, struct proto_object_hash *ret)
{
        /*
         * Expected format (§5.6):
         *   total_len u32, received u32 (<= total_len), complete u8 (0..1; 1 => received ==
         *   total_len), flags u8, reserved u16, sha256[32]
         */
        struct proto_object_hash h;
        struct prd d;
        int r;

        memset(&h, 0, sizeof(h));
        prd_init(&d, "OBJECT_HASH response", p, n);
        h.total_len = prd_le32(&d, "total_len");
        h.received = prd_le32(&d, "received");
        prd_range(&d, "received", h.received, 0, h.total_len, 4);
        h.complete = prd_u8(&d, "complete");
        prd_range(&d, "complete", h.complete, 0, 1, 1);
        if (!d.err && h.complete && h.received != h.total_len) {
                d.rd.off -= 1;
                prd_fail(&d, "complete", "complete but received differs from total_len");
        }
        h.flags = prd_u8(&d, "flags");
        (void)prd_bytes(&d, "reserved", 2);
        prd_copy(&d, "sha256", h.sha256, sizeof(h.sha256));
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = h;
        return KILN_OK;
}

int proto_msg_fuse_parse(const uint8_t *p, size_t n, struct proto_fuse *ret)
{
        /*
         * Expected format (§5.7):
         *   name, width_bits u16 (1..512), attributes u8,
         *   value u8 len (== ceil(width_bits / 8)) + bytes, no bit set at or above width_bits
         */
        struct proto_fuse f;
        struct prd d;
        uint8_t len;
        int r;

        memset(&f, 0, sizeof(f));
        prd_init(&d, "FUSE response", p, n);
        prd_name(&d, "name", f.name);
        f.width_bits = prd_le16(&d, "width_bits");
        prd_range(&d, "width_bits", f.width_bits, 1, KILN_FUSE_BYTES_MAX * 8u, 2);
        f.attributes = prd_u8(&d, "attributes");
        len = prd_u8(&d, "value");
        if (!d.err && len != (f.width_bits + 7u) / 8u) {
                d.rd.off -= 1;
                prd_fail(&d, "value", "length is not ceil(width_bits / 8)");
        }
        prd_copy(&d, "value", f.value, d.err ? 0 : len);
        f.value_len = len;
        if (!d.err && f.width_bits % 8u != 0 && (f.value[len - 1] >> (f.width_bits % 8u)) != 0) {
                d.rd.off -= 1;
                prd_fail(&d, "value", "bit set above width_bits");
        }
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = f;
        return KILN_OK;
}

int proto_msg_attest_parse(const uint8_t *p, size_t n, struct proto_attest *ret)
{
        /* Expected format (§5.9): key_slot u8 (< 16), algorithm u8 (1), signature blob16 (64) */
        struct proto_attest a;
        struct prd d;
        int r;

        memset(&a, 0, sizeof(a));
        prd_init(&d, "ATTEST response", p, n);
        a.key_slot = prd_u8(&d, "key_slot");
        prd_range(&d, "key_slot", a.key_slot, 0, KILN_KEY_SLOTS_MAX - 1, 1);
        a.algorithm = prd_u8(&d, "algorithm");
        prd_range(&d, "algorithm", a.algorithm, KILN_ALG_ECDSA_P256_SHA256,
                  KILN_ALG_ECDSA_P256_SHA256, 1);
        a.signature_len = prd_blob16_fixed(&d, "signature", PROTO_P256_SIG_LEN, a.signature);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = a;
        return KILN_OK;
}

int proto_msg_lifecycle_parse(const uint8_t *p, size_t n, uint8_t *ret_lifecycle)
{
        /* Expected format (§5.10): lifecycle u8 (1..4) */
        struct prd d;
        uint8_t lc;
        int r;

        prd_init(&d, "SET_LIFECYCLE response", p, n);
        lc = prd_u8(&d, "lifecycle");
        prd_range(&d, "lifecycle", lc, KILN_LC_MANUFACTURING, KILN_LC_MAX - 1, 1);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret_lifecycle = lc;
        return KILN_OK;
}

int proto_msg_reset_parse(const uint8_t *p, size_t n)
{
        /* Expected format (§5.11): empty */
        struct prd d;

        prd_init(&d, "RESET response", p, n);
        return prd_end(&d);
}

int proto_msg_nak_parse(const uint8_t *p, size_t n, uint8_t *ret_reason)
{
        /* Expected format (§5.12): reason u8 (1..4), reserved[3] */
        struct prd d;
        uint8_t reason;
        int r;

        prd_init(&d, "NAK", p, n);
        reason = prd_u8(&d, "reason");
        prd_range(&d, "reason", reason, KILN_NAK_CRC, KILN_NAK_MAX - 1, 1);
        (void)prd_bytes(&d, "reserved", 3);
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret_reason = reason;
        return KILN_OK;
}

int proto_msg_error_parse(uint8_t type, uint8_t status, const uint8_t *p, size_t n,
                          struct proto_device_error *ret)
{
        /*
         * Expected format (§4.4): detail u32, msg_len u8 (0..64), msg bytes. Unprintable message
         * bytes are replaced rather than refused: the status is what matters, and it must reach the
         * operator even from a device that writes a sloppy message.
         */
        struct proto_device_error e;
        struct prd d;
        const uint8_t *s;
        char what[48];
        uint8_t len;
        int r;

        memset(&e, 0, sizeof(e));
        e.type = type;
        e.status = status;
        snprintf(what, sizeof(what), "%s error response", proto_msg_type_name(type));
        prd_init(&d, what, p, n);
        e.detail = prd_le32(&d, "detail");
        len = prd_u8(&d, "msg");
        prd_range(&d, "msg", len, 0, KILN_ERRMSG_MAX, 1);
        s = prd_bytes(&d, "msg", d.err ? 0 : len);
        if (!d.err) {
                for (size_t i = 0; i < len; i++)
                        e.msg[i] = printable(s[i]) ? (char)s[i] : '?';
                e.msg[len] = '\0';
        }
        r = prd_end(&d);
        if (r < 0)
                return r;
        *ret = e;
        return KILN_OK;
}
