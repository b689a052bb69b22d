/*
 * The traceability database: one interface for the station engine, export, audit and trace.
 *
 * The engine never sees SQL. Every call that changes a unit is one durable transaction that also
 * appends a hash-chained event to the audit log; the event carries the SHA-256 of the unit's
 * canonical export record after the change, so `kiln audit verify` can tell when any field that
 * export prints was edited behind the station's back.
 *
 * Backends implement struct db_ops (db_internal.h). SQLite is built in; db_open() picks the backend
 * from the location (a file path = SQLite). A PostgreSQL backend plugs in behind the same calls.
 *
 * Thread-safe: a struct db may be shared by all slot threads; each call is serialised inside.
 */
#ifndef KILN_DB_H
#define KILN_DB_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/buf.h"
#include "kiln/limits.h"

#define DB_SCHEMA_VERSION 2
#define DB_TEXT_MAX 128          /* ids, names, codes */
#define DB_SERIAL_MAX 64         /* rendered serial numbers */
#define DB_HEX_UID_MAX (2 * KILN_UID_MAX + 1)
#define DB_MACS_MAX 8            /* MAC addresses per unit */
#define DB_MAC_STR 18            /* "02:00:00:00:00:01" */
#define DB_STEPS_PENDING_MAX 64  /* step records held until the next commit */
#define DB_DETAIL_MAX 256        /* failure reason text */

enum db_verdict {
        DB_VERDICT_IN_PROGRESS,
        DB_VERDICT_PASS,
        DB_VERDICT_FAIL,
        DB_VERDICT_LOCK_FAILED,
        DB_VERDICT_SCRAP,
        DB_VERDICT_MAX
};

const char *db_verdict_name(enum db_verdict v);
int db_verdict_parse(const char *s, enum db_verdict *ret);

struct db;

/* Open (creating and migrating) the database. `location` is a file path for SQLite, or ":memory:"
 * for a throwaway in-memory database (fuzzing and benchmarks: nothing is durable). */
int db_open(const char *location, struct db **ret);
void db_close(struct db *db);

/* ---- work orders ---- */

struct db_work_order {
        char id[DB_TEXT_MAX];
        char lot[DB_TEXT_MAX];
        char recipe_sha256[65];
        uint32_t quota;
        uint32_t reserved;
        uint32_t consumed;
};

/* Create the work order if new, else check it matches (same recipe). Returns the current counts. */
int db_work_order_ensure(struct db *db, const char *id, const char *lot, const char *recipe_sha256,
                         uint32_t quota, struct db_work_order *ret);
int db_work_order_get(struct db *db, const char *id, struct db_work_order *ret);

/* Record a verified recipe release (the signed statement as verified; idempotent, audited). */
int db_recipe_release(struct db *db, const char *sha256_hex, const char *recipe_id,
                      const char *version, const char *statement, const uint8_t *sig,
                      size_t sig_len);

/* Raise a work order's quota under a verified signed authorisation, in one audited transaction.
 * The quota only goes up; an authorisation (by its SHA-256) is applied at most once. */
int db_work_order_raise(struct db *db, const char *work_order, uint32_t new_quota,
                        const char *statement, const uint8_t *sig, size_t sig_len,
                        uint32_t *ret_old);

/* Store the exact recipe bytes (idempotent) so every unit's recipe hash resolves to its text. */
int db_recipe_store(struct db *db, const char *sha256_hex, const char *recipe_id,
                    const char *version, const uint8_t *body, size_t len);

/* An audit event not tied to one unit (run start/stop, a refused device). body is a JSON object. */
int db_station_event(struct db *db, const char *kind, const char *body_json);

/* ---- units ---- */

struct db_step {
        char name[32];
        int64_t started_ms; /* wall clock, epoch ms */
        uint64_t duration_us;
        int ok;
        char code[32];              /* stable failure code, "" on success */
        char detail[DB_DETAIL_MAX]; /* one line, no secrets */
};

struct db_unit {
        int64_t id;
        char chip_uid[DB_HEX_UID_MAX];
        char serial[DB_SERIAL_MAX];
        uint64_t serial_seq;
        char macs[DB_MACS_MAX][DB_MAC_STR];
        unsigned n_macs;
        char work_order[DB_TEXT_MAX];
        char recipe_sha256[65];
        enum db_verdict verdict;
        unsigned attempt;  /* 1 for the first attempt, incremented by each retry */
        int lock_started;  /* a fuse intent has been journaled: only LOCK_FAILED/SCRAP/PASS now */
        int64_t started_ms;
        /* step records waiting for the next transaction (owned by the engine's thread) */
        struct db_step pending[DB_STEPS_PENDING_MAX];
        unsigned n_pending;
};

enum db_admit_kind {
        DB_ADMIT_NEW,    /* first time this chip is seen: fresh allocations */
        DB_ADMIT_RETRY,  /* failed before the lock earlier: same serial and MACs, new attempt */
        DB_ADMIT_RESUME, /* left IN_PROGRESS by an interrupted station: reconcile and continue */
        DB_ADMIT_MAX
};

/* Renders a serial number from its allocation sequence, inside the admission transaction. */
typedef int (*db_serial_render_fn)(void *ctx, uint64_t seq, char *out, size_t cap);

struct db_admit_request {
        const char *chip_uid;     /* hex */
        const char *work_order;
        const char *station_id;
        const char *slot;
        const char *operator_id;
        const char *recipe_sha256;
        const char *product_id;
        uint16_t hw_revision;
        const char *fw_version;
        const char *fw_sha256;    /* hex */
        const char *serial_counter; /* allocation counter name, e.g. "serial:smartplug-ctm" */
        uint64_t serial_start;
        db_serial_render_fn render_serial;
        void *render_ctx;
        const char *mac_counter;  /* NULL when the recipe allocates no MAC */
        uint64_t mac_first;
        uint64_t mac_last;
        unsigned mac_count;       /* addresses per unit, 1..DB_MACS_MAX */
        int dev_mode;             /* record written by a non-production station */
        /* pre-lock fuse snapshot from identification: "field=hex" entries */
        const char *const *snapshot;
        unsigned n_snapshot;
};

/*
 * Admission, in one transaction: refuse a chip already PASS (KILN_E_CLONE, with a clone-alert event),
 * a unit waiting for a quality disposition (KILN_E_PERM), a unit started under another recipe
 * (KILN_E_MISMATCH), quota exhausted (KILN_E_QUOTA), a pool
 * exhausted (KILN_E_POOL_EXHAUSTED); else create or reopen the unit, allocate serial and MACs
 * (kept for a retried chip, never given to another), reserve quota.
 */
int db_unit_admit(struct db *db, const struct db_admit_request *req, struct db_unit *ret,
                  enum db_admit_kind *ret_kind);

/* Queue a step record on the unit (written by the next transaction). Never fails: a full queue
 * keeps the newest records and notes the overflow. */
void db_unit_step(struct db_unit *u, const char *name, int64_t started_ms, uint64_t duration_us,
                  int ok, const char *code, const char *detail);

/* ---- identity: keys, certificates and credentials, recorded before they reach the device ---- */

struct db_key_rec {
        const char *name;
        uint8_t slot;
        const char *algorithm;
        const uint8_t *pubkey;   /* as the device sent it (SEC1 point) */
        size_t pubkey_len;
        const char *fingerprint; /* hex SHA-256 of the SubjectPublicKeyInfo DER */
        int pop_ok;
};

struct db_cert_rec {
        const char *key_name;
        const char *serial_hex; /* certificate serial number */
        const uint8_t *der;
        size_t der_len;
        const char *not_after;  /* ISO 8601 or "9999-12-31T23:59:59Z" */
        const char *chain_pem;  /* issuing CA first, root last */
};

struct db_cred_rec {
        const char *name;
        const char *kind;       /* password | random */
        const char *method;     /* hmac-sha256 | salted-sha256 */
        const char *commitment; /* hex; never the secret */
        const char *salt;       /* hex or NULL */
        const char *object;     /* device object it was written to */
};

/* Keys, certificates and credential commitments of this attempt. Uniqueness of the public key
 * fingerprint and the certificate serial is enforced here (KILN_E_DB_CONSTRAINT). */
int db_unit_record_identity(struct db *db, struct db_unit *u, const struct db_key_rec *keys,
                            unsigned n_keys, const struct db_cert_rec *certs, unsigned n_certs,
                            const struct db_cred_rec *creds, unsigned n_creds);

struct db_object_rec {
        const char *name;
        const char *sha256; /* hex, as verified on the device */
        uint64_t size;
};

struct db_attest_rec {
        const char *key_name;
        int ok;
};

/* ---- the lock: fuse journal ---- */

enum db_fuse_state {
        DB_FUSE_INTENT,
        DB_FUSE_DONE,
        DB_FUSE_FAILED,
        DB_FUSE_STATE_MAX
};

struct db_fuse_rec {
        int64_t id;          /* journal row; set by db_unit_record_verified for intents */
        const char *phase;   /* data | protect | lockout */
        const char *field;
        const char *value;   /* hex, the value to burn */
        const char *verify;  /* verify policy name */
        enum db_fuse_state state;
        const char *readback; /* hex, for results */
        unsigned attrs;
};

/*
 * Steps 1-8 complete — everything written verified on the device, attestation passed — and the
 * intents of every burn of the lock, in one transaction: after it returns KILN_OK the lock may
 * start, and a resumed unit finds the exact values to burn. Intents get their journal ids written
 * back into intents[i].id; with n_intents > 0 the unit is marked lock_started. The results of the
 * burns are written with the verdict (db_finish.fuse_results): a burn whose result was lost to a
 * crash is read back before anything is programmed again.
 */
int db_unit_record_verified(struct db *db, struct db_unit *u, const struct db_object_rec *objs,
                            unsigned n_objs, const struct db_attest_rec *att, unsigned n_att,
                            struct db_fuse_rec *intents, unsigned n_intents);

/* The journal of a unit, oldest first, for reconciliation. The callback's strings are valid only
 * during the call. */
typedef int (*db_fuse_visit_fn)(void *ctx, const struct db_fuse_rec *rec);
int db_fuse_list(struct db *db, int64_t unit_id, db_fuse_visit_fn fn, void *ctx);

/* ---- finish ---- */

struct db_finish {
        enum db_verdict verdict;
        const char *fail_code;   /* NULL on PASS */
        const char *fail_reason; /* one line, no secrets */
        int debug_closed;        /* -1 unknown */
        int secure_boot;         /* -1 unknown */
        const char *lifecycle;   /* device lifecycle at the end, or NULL */
        const char *label_qr;    /* QR payload, NULL when none */
        const char *const *snapshot; /* post-lock fuse snapshot "field=hex" */
        unsigned n_snapshot;
        const struct db_fuse_rec *fuse_results; /* burns done: state DONE/FAILED, read-back */
        unsigned n_fuse_results;
};

/* Final verdict. Quota: consumed on PASS, LOCK_FAILED and SCRAP; returned on FAIL (before the lock,
 * which the database checks). */
int db_unit_finish(struct db *db, struct db_unit *u, const struct db_finish *f);

/* Flush queued step records without another change (e.g. before waiting on the operator). */
int db_unit_flush_steps(struct db *db, struct db_unit *u);

/* ---- reading ---- */

/* Units left IN_PROGRESS (by any slot of this database), for start-up reconciliation. */
typedef int (*db_unit_visit_fn)(void *ctx, const struct db_unit *u);
int db_units_in_progress(struct db *db, db_unit_visit_fn fn, void *ctx);
int db_unit_by_uid(struct db *db, const char *chip_uid, struct db_unit *ret);

struct db_export_rec; /* kiln/export.h */

typedef int (*db_export_visit_fn)(void *ctx, int64_t unit_id);

/* Fill the export record of one unit (kiln/export.h renders it). */
int db_unit_export(struct db *db, int64_t unit_id, struct db_export_rec *rec);

/*
 * The canonical export record of one unit, one JSON object without a trailing newline: what
 * `kiln export --format jsonl` prints and what the audit event digest covers.
 */
int db_unit_export_json(struct db *db, int64_t unit_id, struct kiln_buf *out);

/*
 * Find a unit by any of its identifiers: serial, chip UID (hex), MAC address ("02:00:..:01" or 12 hex
 * digits) or certificate serial (hex, any certificate the unit ever had). KILN_E_NOT_FOUND when none;
 * KILN_E_MISMATCH (naming them) if the key matches more than one unit in different roles.
 */
int db_unit_lookup(struct db *db, const char *key, int64_t *ret_unit_id);

/* The exact recipe bytes recorded under a SHA-256 (hex). Caller frees *ret with kiln_free. */
int db_recipe_get(struct db *db, const char *sha256_hex, uint8_t **ret, size_t *ret_len);

/* Record one label print of a unit (format "zpl"/"png", target as given). *ret_count is the number of
 * prints of this unit so far, this one included: above 1 it was a reprint. */
int db_label_print(struct db *db, int64_t unit_id, const char *format, const char *target,
                   unsigned *ret_count);

/*
 * The whole history of a unit, section by section (steps, keys, certificates, credentials, objects,
 * attestations, fuse_journal, fuse_snapshots, label_prints, events), oldest first. Each row comes
 * as column names and text values (NULL for SQL NULL); strings are valid during the call only.
 */
typedef int (*db_history_row_fn)(void *ctx, const char *section, const char *const *names,
                                 const char *const *values, unsigned n);
int db_unit_history(struct db *db, int64_t unit_id, db_history_row_fn fn, void *ctx);

/* Facts about a unit's current attempt that the compliance evidence pack needs. */
struct db_unit_facts {
        unsigned keys;         /* device keys recorded */
        unsigned keys_pop_ok;  /* of which the proof of possession verified */
        unsigned certs;        /* certificates issued */
        unsigned attest_ok;    /* keys attested successfully */
        unsigned creds;        /* credential commitments */
        unsigned objects;      /* objects written and verified by hash */
};

int db_unit_facts(struct db *db, int64_t unit_id, struct db_unit_facts *ret);

/* Credential commitments that occur on more than one unit of the work order (0 when every unit's
 * credentials are unique, as they must be). */
int db_work_order_shared_creds(struct db *db, const char *work_order, unsigned *ret_count);

/* ---- audit trail ---- */

struct db_event {
        int64_t seq;
        const char *at;
        int64_t unit_id; /* 0: a station event */
        const char *kind;
        const char *body;
        const char *prev_hash;
        const char *hash;
};

/* Every event in storage order (rowid), whatever its seq says: the verifier checks the order. */
typedef int (*db_event_visit_fn)(void *ctx, const struct db_event *ev);
int db_events_each(struct db *db, db_event_visit_fn fn, void *ctx);

/* The chain head: the last event's seq and hash (seq 0 and 64 zeros for an empty log). */
int db_event_head(struct db *db, int64_t *ret_seq, char ret_hash[65]);

struct db_checkpoint {
        int64_t id;
        int64_t event_seq;
        const char *head_hash;
        const char *work_order; /* NULL when not tied to one */
        const char *at;
        const char *key_uri;
        const uint8_t *signature; /* DER ECDSA over db_checkpoint_message() */
        size_t signature_len;
};

/*
 * The exact bytes a checkpoint signature covers:
 *   "KILN-CHECKPOINT-V1\n" seq "\n" head_hash "\n" at "\n" work_order "\n"
 * (work_order empty when none). `openssl dgst -sha256 -verify` checks them.
 */
int db_checkpoint_message(int64_t seq, const char *head_hash, const char *at,
                          const char *work_order, struct kiln_buf *out);

/* Signs a checkpoint message; the station passes its HSM audit key. Writes a DER signature. */
typedef int (*db_sign_fn)(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                          size_t *ret_len);

/*
 * Sign the current chain head and store the checkpoint, in one transaction (the head cannot move
 * between reading and storing). Does nothing when the head is already checkpointed. pubkey_pem is
 * the audit key's public key, kept in the database so a verifier without the HSM can check the
 * signatures (a quality engineer should still check against a trusted copy: --audit-key).
 */
int db_checkpoint_add(struct db *db, const char *work_order, const char *key_uri,
                      const char *pubkey_pem, db_sign_fn sign, void *sign_ctx);

/* The public key PEM recorded for an audit key URI; caller frees. KILN_E_NOT_FOUND when none. */
int db_audit_pubkey(struct db *db, const char *key_uri, char **ret_pem);

/* The last event of a unit (strings valid until the next call on db). */
int db_unit_last_event(struct db *db, int64_t unit_id, struct db_event *ret);

typedef int (*db_checkpoint_visit_fn)(void *ctx, const struct db_checkpoint *cp);
int db_checkpoints_each(struct db *db, db_checkpoint_visit_fn fn, void *ctx);

/* All unit ids in id order (the audit checks every unit, whatever its state). */
int db_units_each(struct db *db, db_export_visit_fn fn, void *ctx);

struct db_export_filter {
        const char *work_order; /* NULL = any */
        const char *lot;
        const char *since;      /* ISO 8601, on started_at; inclusive */
        const char *until;      /* exclusive */
        int verdict;            /* enum db_verdict, or -1 = any */
};

/* Stream matching units in id order; the callback gets each unit's id. Constant memory. */
int db_export_each(struct db *db, const struct db_export_filter *flt, db_export_visit_fn fn,
                   void *ctx);

/*
 * Stream the export records of matching units in id order, each one what db_unit_export() fills,
 * from one read snapshot. The record is valid during the call only. Constant memory: the export
 * reads the tables side by side in unit order instead of looking each unit up.
 */
typedef int (*db_export_rec_fn)(void *ctx, const struct db_export_rec *rec);
int db_export_records(struct db *db, const struct db_export_filter *flt, db_export_rec_fn fn,
                      void *ctx);

#endif
