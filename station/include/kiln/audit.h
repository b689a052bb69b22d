/*
 * The tamper-evident audit trail.
 *
 * Every change to a unit record appends an event to a hash chain:
 *
 *     hash(n) = SHA-256( hash(n-1) "|" seq "|" at "|" unit_id "|" kind "|" body )
 *
 * (genesis hash(0) = 64 zeros; unit_id empty for station events), and each unit event's body ends
 * with "record_sha256": the SHA-256 of the unit's canonical export record after the change.
 * Checkpoints sign the chain head with the station's HSM audit key.
 *
 * audit_verify() finds:
 *   - an event edited, deleted, inserted or reordered (the chain or its seq numbering breaks);
 *   - a unit whose exported fields were changed outside the station (its record no longer hashes
 *     to what its last event recorded), or a unit with no event at all;
 *   - a checkpoint that does not match the chain, or whose signature does not verify, and events
 *     missing after the last checkpoint.
 * It names the first problem.
 */
#ifndef KILN_AUDIT_H
#define KILN_AUDIT_H

#include <stdint.h>

#include "kiln/db.h"

struct hsm_token;

struct audit_report {
        uint64_t events;
        uint64_t units;
        uint64_t checkpoints;
        char head[65];
        int ok;
        char problem[512]; /* the first problem, when !ok */
        int64_t bad_seq;   /* the event it names, 0 when none */
};

/* trusted_key_pem: the audit public key to check signatures against (NULL: the key recorded in the
 * database, which only proves internal consistency). Returns KILN_OK when the verification ran
 * (whatever it found: see ret->ok), a negative code when it could not run. */
int audit_verify(struct db *db, const char *trusted_key_pem, struct audit_report *ret);

/* Sign a checkpoint of the chain head with the HSM audit key. */
int audit_checkpoint(struct db *db, struct hsm_token *token, const char *audit_key_uri,
                     const char *work_order);

#endif
