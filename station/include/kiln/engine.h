/*
 * The unit state machine (DESIGN.md §3): one call provisions the device on one port, from connect to
 * verdict. A station runs one per slot, concurrently; struct engine is shared by all of them and is
 * read-only during a run (the database and HSM handles are thread-safe).
 *
 * Steps: connect, identify, admit, keys, certificates, credentials, write, data, attest, lock,
 * finish. Every step is timed and recorded on the unit. Before the lock a failure gives FAIL with a
 * stable code; once the first fuse intent is journaled a failure gives LOCK_FAILED or SCRAP. A unit
 * the database holds IN_PROGRESS with the lock started (the station died mid-lock) is resumed:
 * the fuse journal is reconciled against what the device reads back, and a field is only ever
 * programmed again with the very value its intent recorded.
 */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "kiln/db.h"
#include "kiln/failcode.h"
#include "kiln/recipe.h"
#include "kiln/report.h"
#include "kiln/session.h"

struct hsm_token;
struct hsm_key;
struct hsm_issuer;
struct label_target;

#define ENGINE_STATION_ID_MAX 64
#define ENGINE_ACTIVE_MAX KILN_SLOTS_MAX

struct engine {
        const struct recipe *recipe;
        struct db *db;
        struct hsm_token *token;
        struct hsm_issuer *issuer[KILN_RECIPE_KEYS_MAX]; /* per recipe key (shared when equal) */
        char *chain_pem[KILN_RECIPE_KEYS_MAX];           /* issuing CA first, root last */
        struct hsm_key *commit_key;                      /* NULL when no HMAC commitment */
        char station_id[ENGINE_STATION_ID_MAX];
        char work_order[DB_TEXT_MAX];
        char operator_id[DB_TEXT_MAX];
        int dev_mode;
        struct report *report;
        volatile sig_atomic_t *stop; /* set by a signal handler: stop before the next unit/step */
        struct proto_session_opts session_opts;
        /* label printer per slot (NULL: no label printed at PASS) and the format */
        const struct label_target *const *labels;
        int label_format; /* enum station_label_format */

        /* chips being worked on right now, so one UID in two slots at once is a clone alert */
        pthread_mutex_t active_lock;
        char active[ENGINE_ACTIVE_MAX][DB_HEX_UID_MAX];
};

struct engine_setup {
        const struct recipe *recipe;
        struct db *db;
        struct hsm_token *token;       /* logged in */
        const char *commitment_key_uri; /* needed when a credential uses an HMAC commitment */
        const char *station_id;
        const char *work_order;
        const char *operator_id;
        int dev_mode;
        struct report *report;
        volatile sig_atomic_t *stop;
        const struct label_target *const *labels; /* per slot, may be NULL */
        int label_format;
};

/* Load issuers (and their chains) and the commitment key; check the recipe against the token. */
int engine_init(const struct engine_setup *s, struct engine *ret);
void engine_fini(struct engine *e);

struct unit_result {
        enum db_verdict verdict; /* IN_PROGRESS: no verdict could be recorded (see code) */
        enum failcode code;
        char reason[DB_DETAIL_MAX];
        char serial[DB_SERIAL_MAX];
        char chip_uid[DB_HEX_UID_MAX];
        char mac[DB_MAC_STR];
        unsigned attempt;
        int admitted; /* a unit row exists */
        int resumed;
        double seconds;
};

/* Provision the device on `port`. Always fills *ret; returns KILN_OK when a verdict was recorded
 * (PASS or not), a negative code when the station itself failed (database, HSM). */
int engine_unit_run(struct engine *e, const char *slot, unsigned slot_index, const char *port,
                    struct unit_result *ret);

#endif
