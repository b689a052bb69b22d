/*
 * Kiln portable device agent: the device side of docs/protocol.md, for factory firmware.
 *
 * Strict C99, no allocation, no OS, no libc beyond <string.h>, <stdint.h> and <stddef.h>. The
 * firmware owns all memory (it passes the buffers in struct kiln_agent_config and allocates struct
 * kiln_agent itself, statically if it likes) and supplies the hardware through struct
 * kiln_agent_ops. The agent does no I/O of its own: the firmware feeds it received bytes with
 * kiln_agent_feed() and the agent answers through ops->write before that call returns.
 *
 *     static uint8_t rx[KILN_AGENT_RX_SIZE(1024)], resp[KILN_AGENT_RESP_SIZE(1024)];
 *     static struct kiln_agent agent;
 *     struct kiln_agent_config cfg = {.ops = &my_ops, .ctx = &my_ctx,
 *                                     .rx_buf = rx, .rx_cap = sizeof(rx),
 *                                     .resp_buf = resp, .resp_cap = sizeof(resp),
 *                                     .max_payload = 1024};
 *
 *     kiln_agent_init(&cfg, &agent);          (at every boot: draws the session nonce)
 *     for (;;) {
 *             n = uart_read(buf, sizeof(buf));
 *             if (kiln_agent_feed(&agent, buf, n) == KILN_AGENT_RESET)
 *                     reboot();               (only if ops->reset returned)
 *     }
 *
 * What the agent does (so the firmware does not have to): framing, NAK of every rejected candidate,
 * HELLO negotiation, the per-boot session, the response memory with its fingerprint (§4.3), strict
 * parsing of every payload, the lifecycle table (§6.3), the OFFSET rules of resumable writes
 * (§5.4), fuse protection checks (write-protected fields are refused, read-protected fields read as
 * zero), the labelled proof-of-possession and attestation messages and their SHA-256 (§5.3, §5.9),
 * SHA-256 of objects (read back through ops->obj_read), and the response layouts.
 *
 * What the firmware does: move bytes, store objects, burn fuses, generate keys and sign 32-byte
 * digests with them, draw random bytes, report device facts, set the lifecycle, reboot.
 *
 * Callback return values: KILN_OK or a negative enum kiln_err. The agent turns them into statuses:
 * KILN_E_NOT_FOUND -> NOT_FOUND where the command has that error, KILN_E_NOSPACE -> NO_SPACE
 * (WRITE_OBJECT), KILN_E_TIMEOUT -> BUSY (the resource could not be made ready now; the host
 * retries later with a new request id), anything else -> HARDWARE for storage, fuse, key and
 * lifecycle operations and INTERNAL for get_info and random. A callback writes its outputs only on
 * success.
 *
 * Names (objects, fuse fields) are passed as (pointer, length), NOT NUL-terminated, and have
 * already been checked: 1..32 bytes from [A-Za-z0-9._-].
 */
#ifndef KILN_AGENT_H
#define KILN_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/err.h"
#include "kiln/frame.h"
#include "kiln/limits.h"
#include "kiln/proto.h"

#define KILN_AGENT_NAME_DEFAULT "kiln-agent-1.0"

/* Returned by kiln_agent_feed() after a RESET was answered and ops->reset returned. */
#define KILN_AGENT_RESET 1

/*
 * Buffer sizes for a device maximum payload of m bytes (256 <= m <= KILN_PAYLOAD_MAX). The receive
 * buffer holds one encoded candidate and, between candidates, the encoded response being sent; the
 * response memory holds the payload of the last response (§4.3, §7).
 */
#define KILN_AGENT_RX_SIZE(m) KILN_FRAME_WIRE_MAX((size_t)(m))
#define KILN_AGENT_RESP_SIZE(m) ((size_t)(m))

#define KILN_AGENT_SHA256_LEN 32u
#define KILN_AGENT_PUBKEY_P256_LEN 65u /* 0x04 || X || Y */
#define KILN_AGENT_SIG_P256_LEN 64u    /* r || s */

/* Portable SHA-256 (FIPS 180-4). The agent uses it for signed messages and object hashes;
 * firmware may use it too. */
struct kiln_agent_sha256 {
        uint32_t h[8];
        uint64_t bytes;
        uint8_t block[64];
        uint32_t fill;
};

void kiln_agent_sha256_init(struct kiln_agent_sha256 *c);
void kiln_agent_sha256_update(const void *p, size_t n, struct kiln_agent_sha256 *c);
void kiln_agent_sha256_final(struct kiln_agent_sha256 *c,
                             uint8_t ret_digest[KILN_AGENT_SHA256_LEN]);

/* Device facts for GET_INFO, the lifecycle rules, key slots and the signed messages. */
struct kiln_agent_info {
        uint8_t chip_uid[KILN_UID_MAX]; /* what the silicon reports */
        uint8_t chip_uid_len;           /* 1..32 */
        char product_id[KILN_PRODUCT_MAX];
        uint8_t product_id_len; /* 1..32, a valid name */
        uint16_t hw_revision;
        char fw_version[KILN_FWVER_MAX];
        uint8_t fw_version_len; /* 0..32, printable ASCII */
        uint8_t fw_sha256[32];
        uint8_t lifecycle;   /* enum kiln_lifecycle */
        uint8_t debug_port;  /* KILN_DEBUG_CLOSED / KILN_DEBUG_OPEN */
        uint8_t secure_boot; /* 0 / 1 */
        uint8_t key_slots;   /* 0..16 */
        uint16_t key_present;
};

/* Objects: the complete version of a name, or the write in progress under it (§5.4). Both may
 * exist at once: a complete object stays readable until a new write of that name completes. */
enum kiln_agent_obj_view {
        KILN_AGENT_OBJ_COMPLETE = 0,
        KILN_AGENT_OBJ_PENDING = 1,
        KILN_AGENT_OBJ_VIEW_MAX
};

struct kiln_agent_obj_stat {
        uint32_t total_len; /* size of the complete object, or the announced size of the write */
        uint32_t received;  /* bytes held (= total_len for a complete object) */
        uint8_t flags;      /* KILN_OBJ_SECRET */
};

struct kiln_agent_fuse_desc {
        char name[KILN_NAME_MAX];
        uint8_t name_len;    /* 1..32, a valid name */
        uint16_t width_bits; /* 1..512 */
        uint8_t attributes;  /* KILN_FUSE_WRITE_PROTECTED | KILN_FUSE_READ_PROTECTED, as of now */
};

/* Why a digest is signed, so a secure element may restrict key usage. */
enum kiln_agent_sign_purpose {
        KILN_AGENT_SIGN_POP = 0,    /* KEYGEN proof of possession */
        KILN_AGENT_SIGN_ATTEST = 1, /* ATTEST */
        KILN_AGENT_SIGN_PURPOSE_MAX
};

/* Optional frame-level trace (debug logs). Never log payloads of secret objects. */
enum kiln_agent_event_kind {
        KILN_AGENT_EV_RX = 0,       /* a valid frame arrived; called before it is acted on */
        KILN_AGENT_EV_RX_REJECT = 1,/* a candidate was rejected; code says why; a NAK follows */
        KILN_AGENT_EV_TX = 2,       /* a frame is being sent */
        KILN_AGENT_EV_KIND_MAX
};

struct kiln_agent_event {
        enum kiln_agent_event_kind kind;
        const struct kiln_frame *frame; /* RX, TX; NULL for RX_REJECT */
        int code;                       /* RX_REJECT: the KILN_E_PROTO_* code */
        uint8_t resent;                 /* TX: answered from the response memory */
};

struct kiln_agent_ops {
        /* --- required --- */
        /* Send all n bytes (blocking, or queued by the firmware). */
        int (*write)(void *ctx, const uint8_t *p, size_t n);
        /* n bytes from the device's random source (a TRNG or a DRBG seeded from one). */
        int (*random)(void *ctx, uint8_t *out, size_t n);
        int (*get_info)(void *ctx, struct kiln_agent_info *ret_info);

        /* --- objects: all three, or none (no object commands, capability bit 2 clear) --- */
        /* KILN_E_NOT_FOUND when the view does not exist for that name. */
        int (*obj_stat)(void *ctx, const char *name, uint8_t name_len,
                        enum kiln_agent_obj_view view, struct kiln_agent_obj_stat *ret_stat);
        /* Copy n bytes at offset of the view; the agent stays within `received`. */
        int (*obj_read)(void *ctx, const char *name, uint8_t name_len,
                        enum kiln_agent_obj_view view, uint32_t offset, uint8_t *out, size_t n);
        /*
         * Store one chunk. The agent has checked §5.4 already: offset == 0 means "discard any write
         * in progress under this name and start a new one of total_len bytes with these flags";
         * otherwise offset equals the bytes held of the write in progress and total_len and flags
         * equal its own. Then the n bytes are appended. When the bytes held reach total_len
         * (including total_len == 0) the write becomes the complete object, replacing the previous
         * one atomically, before this returns. Nothing may change when it fails.
         * KILN_E_NOSPACE when storage cannot hold the object.
         */
        int (*obj_write)(void *ctx, const char *name, uint8_t name_len, uint8_t flags,
                         uint32_t total_len, uint32_t offset, const uint8_t *data, size_t n);

        /* --- fuses: all three, or none --- */
        /* Field by 0-based index; KILN_E_NOT_FOUND past the last field. */
        int (*fuse_describe)(void *ctx, uint16_t index, struct kiln_agent_fuse_desc *ret_desc);
        /* Raw value, ceil(width/8) bytes (the agent zeroes read-protected fields itself). */
        int (*fuse_read)(void *ctx, uint16_t index, uint8_t *out, size_t n);
        /* Burn every 1 bit of value (n = ceil(width/8) bytes, no bits above the width); the agent
         * has refused write-protected fields. A bit that fails to burn is not an error. */
        int (*fuse_program)(void *ctx, uint16_t index, const uint8_t *value, size_t n);

        /* --- keys: key_generate needs key_sign; key_sign alone gives ATTEST only --- */
        /* New key pair in slot (replacing any), private key kept; SEC1 uncompressed public key. */
        int (*key_generate)(void *ctx, uint8_t slot, uint8_t algorithm, uint8_t *pub, size_t cap,
                            size_t *ret_len);
        /* Sign a 32-byte digest with the slot's key: raw r || s, and the key's algorithm.
         * KILN_E_NOT_FOUND when the slot is empty. */
        int (*key_sign)(void *ctx, uint8_t slot, enum kiln_agent_sign_purpose purpose,
                        const uint8_t digest[KILN_AGENT_SHA256_LEN], uint8_t *sig, size_t cap,
                        size_t *ret_len, uint8_t *ret_algorithm);

        /* --- optional --- */
        /* Persist the new lifecycle state (the agent has checked the transition). */
        int (*lifecycle_set)(void *ctx, uint8_t lifecycle);
        /* Reboot. Called after the RESET response was handed to write(). Need not return. */
        void (*reset)(void *ctx, uint8_t mode);
        void (*trace)(void *ctx, const struct kiln_agent_event *ev);
};

struct kiln_agent_config {
        const struct kiln_agent_ops *ops;
        void *ctx;             /* passed to every callback */
        uint8_t *rx_buf;       /* >= KILN_AGENT_RX_SIZE(max_payload) bytes */
        size_t rx_cap;
        uint8_t *resp_buf;     /* >= KILN_AGENT_RESP_SIZE(max_payload) bytes */
        size_t resp_cap;
        uint32_t max_payload;  /* device_max_payload: 256 .. KILN_PAYLOAD_MAX */
        const char *name; /* agent name in HELLO (NUL-terminated); NULL: KILN_AGENT_NAME_DEFAULT */
        uint32_t caps_extra; /* capability bits the firmware declares itself: KILN_CAP_SIMULATED */
};

/* The agent's state. Allocate it anywhere; its fields are private. */
struct kiln_agent {
        const struct kiln_agent_ops *ops;
        void *ctx;
        struct kiln_decoder dec;
        uint8_t *rx;
        size_t rx_cap;
        uint8_t *resp; /* response memory: payload of the remembered response */
        size_t resp_cap;
        uint32_t device_max;
        uint32_t max_payload; /* current: 256 before HELLO, then negotiated */
        uint8_t nonce[KILN_SESSION_NONCE_LEN];
        uint32_t session;
        uint32_t caps;
        char name[KILN_AGENT_NAME_MAX];
        uint8_t name_len;
        /* response memory (§4.3) */
        uint8_t mem_valid;
        uint8_t mem_type;
        uint8_t mem_status;
        uint32_t mem_request_id;
        uint32_t mem_req_len;
        uint32_t mem_req_crc;
        uint32_t mem_len; /* response payload bytes in resp */
        uint8_t halted;   /* RESET done: waiting for kiln_agent_init */
        int write_err;    /* first failure of ops->write during one feed */
};

/*
 * Boot: check the configuration, draw the session nonce (ops->random), empty the response memory,
 * maximum payload 256 until HELLO. KILN_E_INVAL for a bad configuration, KILN_E_INTERNAL when the
 * random source fails. Call again after every reboot (and after kiln_agent_feed returned
 * KILN_AGENT_RESET).
 */
int kiln_agent_init(const struct kiln_agent_config *cfg, struct kiln_agent *ret_agent);

/*
 * Process received bytes: every complete request is executed (or answered from the response
 * memory, or NAKed) and its response sent through ops->write before this returns. Returns KILN_OK,
 * KILN_AGENT_RESET when a RESET was answered and ops->reset returned (the rest of the input is
 * dropped; call kiln_agent_init), or the first error ops->write returned (input is still consumed).
 */
int kiln_agent_feed(struct kiln_agent *agent, const uint8_t *in, size_t n);

/* This boot's session id (§4.1). */
uint32_t kiln_agent_session(const struct kiln_agent *agent);

#endif
