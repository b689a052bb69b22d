/*
 * Host session (docs/protocol.md §4): request ids, deadlines, retries, NAK handling, the per-boot
 * session, and typed calls for every command. One thread uses a session at a time; the session
 * borrows its transport (the caller frees both).
 *
 * One request: the host sends it with a new request id (counted up from a random non-zero start,
 * skipping 0) and waits for its response until the attempt deadline
 *
 *     wire time of the request + wire time of the largest response (10 bits/byte at the
 *     transport's baud, 0 when unpaced) + margin_ms (500) + the command budget (KEYGEN 10 s,
 *     WRITE_OBJECT, FUSE_PROGRAM, ATTEST, SET_LIFECYCLE 2 s, others 0)
 *
 * On a timeout or a NAK it retransmits the same request (same id, RETRY flag), up to `attempts`
 * attempts (5), then fails with KILN_E_PROTO_NO_RESPONSE (or KILN_E_PROTO_NAK when the last attempt
 * was NAKed). Rejected candidates (boot log, noise, corrupt frames) are skipped, up to
 * KILN_NOISE_SKIP_MAX bytes per request; frames with another request id or type are discarded.
 *
 * Errors of every call:
 *   KILN_E_PROTO_SESSION   status SESSION, or a response/NAK with another session id: the device
 *                          rebooted. The caller MUST call proto_session_hello() again and find out
 * by reading state whether the outstanding command ran. Also returned before any exchange when no
 * HELLO has succeeded yet. KILN_E_PROTO_DEVICE    the device answered an error status;
 * proto_session_device_error() has the status, detail and message, and the kiln_fail detail reads
 *                          "device answered LIFECYCLE to FUSE_PROGRAM: <msg> (detail N)".
 *   KILN_E_PROTO_MALFORMED the response payload is malformed (see kiln/msg.h).
 *   KILN_E_PROTO_UNEXPECTED the response does not answer the request (other slot, name, offset).
 *   KILN_E_DEVICE_GONE     the transport reports hangup or unplug.
 * Outputs are written only on success.
 */
#ifndef KILN_SESSION_H
#define KILN_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/limits.h"
#include "kiln/msg.h"
#include "kiln/proto.h"
#include "kiln/transport.h"

#define PROTO_ATTEMPTS_DEFAULT 5u
#define PROTO_ATTEMPTS_MAX 100u /* sanity bound of the option, not a protocol figure */
#define PROTO_MARGIN_MS_DEFAULT 500u
#define PROTO_HOST_MAX_PAYLOAD_DEFAULT 4096u

struct proto_session;

struct proto_session_opts {
        uint32_t host_max_payload; /* offered in HELLO: KILN_PAYLOAD_MIN_MAX..KILN_PAYLOAD_MAX */
        unsigned attempts;         /* attempts per request, 1..PROTO_ATTEMPTS_MAX */
        unsigned margin_ms;        /* added to every attempt deadline */
        unsigned budget_ms[KILN_MSG_MAX]; /* per message type, indexed by enum kiln_msg_type */
        uint32_t first_request_id;        /* 0: random (the default); tests and fuzzing fix it */
};

/* Defaults: 4096 offered, 5 attempts, 500 ms margin, the §4.2 budgets, random first id. */
void proto_session_opts_default(struct proto_session_opts *ret);

struct proto_session_stats {
        uint64_t requests;  /* requests started */
        uint64_t attempts;  /* frames sent, retransmissions included */
        uint64_t retries;   /* retransmissions */
        uint64_t naks;      /* NAKs received */
        uint64_t timeouts;  /* attempts that ended without a response */
        uint64_t rejected;  /* rejected candidates (noise, boot log, corrupt frames) */
        uint64_t discarded; /* valid frames that did not answer the outstanding request */
        uint64_t bytes_in;
        uint64_t bytes_out;
};

/* opts NULL: defaults. The session borrows t, which must outlive it. */
int proto_session_new(struct proto_transport *t, const struct proto_session_opts *opts,
                      struct proto_session **ret);
void proto_session_free(struct proto_session *s); /* NULL-safe */

/* Maximum payload in use: KILN_PAYLOAD_MIN_MAX until HELLO, then the negotiated one. */
uint32_t proto_session_max_payload(const struct proto_session *s);
/* Session id from the last HELLO, 0 when there is none (never HELLOed, or invalidated). */
uint32_t proto_session_id(const struct proto_session *s);
/* The last HELLO response, NULL when there is no session. */
const struct proto_hello *proto_session_hello_info(const struct proto_session *s);
/* The device error of the last call (status 0 when the last call got no error status). */
const struct proto_device_error *proto_session_device_error(const struct proto_session *s);
void proto_session_stats_get(const struct proto_session *s, struct proto_session_stats *ret);

/*
 * One request/response exchange of any type with the rules above. On success *ret_payload (a view
 * into the session, valid until the next call on it) and *ret_len hold the response payload of a
 * status-0 response. HELLO through this call does not update the session: use
 * proto_session_hello().
 */
int proto_session_call(struct proto_session *s, uint8_t type, const uint8_t *payload, size_t len,
                       const uint8_t **ret_payload, size_t *ret_len);

/*
 * HELLO: negotiates the maximum payload and records the session nonce and id. ret may be NULL.
 * It ends any previous session first: on failure the session has none (HELLO again).
 */
int proto_session_hello(struct proto_session *s, struct proto_hello *ret);
int proto_session_get_info(struct proto_session *s, struct proto_info *ret);
int proto_session_keygen(struct proto_session *s, uint8_t key_slot, uint8_t algorithm,
                         const uint8_t nonce[KILN_NONCE_LEN], struct proto_keygen *ret);
/* One WRITE_OBJECT chunk; the answer must acknowledge exactly offset + data_len bytes. */
int proto_session_write_chunk(struct proto_session *s, const struct proto_write_req *req,
                              struct proto_write_result *ret);
/* One READ_OBJECT chunk; ret->data is a view valid until the next call on the session. */
int proto_session_read_chunk(struct proto_session *s, const char *name, uint32_t offset,
                             uint32_t max_len, struct proto_read_result *ret);
int proto_session_object_hash(struct proto_session *s, const char *name,
                              struct proto_object_hash *ret);
int proto_session_fuse_read(struct proto_session *s, const char *name, struct proto_fuse *ret);
int proto_session_fuse_read_index(struct proto_session *s, uint16_t index, struct proto_fuse *ret);
/* The read-back after programming is in *ret; comparing it with value is the caller's job. */
int proto_session_fuse_program(struct proto_session *s, const char *name, const uint8_t *value,
                               size_t value_len, struct proto_fuse *ret);
int proto_session_attest(struct proto_session *s, uint8_t key_slot,
                         const uint8_t nonce[KILN_NONCE_LEN], struct proto_attest *ret);
int proto_session_set_lifecycle(struct proto_session *s, uint8_t target, uint8_t *ret_lifecycle);
/*
 * RESET (mode 0 = reboot). Afterwards the session has no session id: HELLO again. A retransmitted
 * RESET whose first response was lost meets the rebooted device, which answers SESSION; that counts
 * as success (the device did reboot).
 */
int proto_session_reset(struct proto_session *s, uint8_t mode);

/*
 * Whole-object helpers.
 *
 * proto_object_write() writes data[0..len) (len <= KILN_OBJECT_MAX) as object `name` in chunks
 * sized to the negotiated payload. It first asks OBJECT_HASH: an identical complete object (same
 * size, flags and SHA-256) is left alone; a write in progress with the same size and flags whose
 * prefix hash matches the local data is resumed from the bytes held; anything else starts from
 * offset 0. An OFFSET error in the middle re-synchronises the same way. At the end OBJECT_HASH must
 * report the object complete with the SHA-256 of data, else KILN_E_MISMATCH. progress (may be NULL)
 * is called after every acknowledged chunk; a negative return stops the write with that code.
 *
 * proto_object_read() reads a whole complete object of at most max bytes (KILN_E_LIMIT beyond) into
 * a kiln_malloc'ed buffer the caller frees with kiln_free(), and checks it against OBJECT_HASH.
 */
typedef int (*proto_progress_fn)(void *ctx, uint32_t done, uint32_t total);

int proto_object_write(struct proto_session *s, const char *name, uint8_t flags,
                       const uint8_t *data, size_t len, proto_progress_fn progress,
                       void *progress_ctx);
int proto_object_read(struct proto_session *s, const char *name, size_t max, uint8_t **ret_data,
                      size_t *ret_len);

#endif
