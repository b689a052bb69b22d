/*
 * SQLite backend of the traceability database.
 *
 * WAL with synchronous=FULL: a COMMIT returns only once the WAL is on disk, so every recorded step
 * survives a kill -9 or power loss. Prepared statements only (every value is bound). The schema
 * enforces uniqueness of chip UID, serial, each MAC, each public-key fingerprint and each certificate
 * serial, and makes the event log append-only. One connection serves all slot threads, serialised by
 * a mutex: writes are short, and SQLite allows one writer at a time anyway.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "db_internal.h"
#include "kiln/error.h"
#include "kiln/export.h"
#include "kiln/json.h"
#include "kiln/util.h"

/* ---- schema ---- */

/* Migration n brings the schema from version n-1 to n. Never edit a released migration: add one. */
static const char *const migrations[] = {
        /* 1 */
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
        "CREATE TABLE recipes ("
        "  sha256 TEXT PRIMARY KEY, recipe_id TEXT NOT NULL, version TEXT NOT NULL,"
        "  body BLOB NOT NULL, stored_at TEXT NOT NULL) STRICT;"
        "CREATE TABLE work_orders ("
        "  id TEXT PRIMARY KEY, lot TEXT NOT NULL,"
        "  recipe_sha256 TEXT NOT NULL REFERENCES recipes(sha256),"
        "  quota INTEGER NOT NULL CHECK (quota >= 0),"
        "  reserved INTEGER NOT NULL DEFAULT 0, consumed INTEGER NOT NULL DEFAULT 0,"
        "  created_at TEXT NOT NULL,"
        "  CHECK (reserved >= 0 AND consumed >= 0 AND reserved + consumed <= quota)) STRICT;"
        "CREATE TABLE counters (name TEXT PRIMARY KEY, next INTEGER NOT NULL) STRICT;"
        "CREATE TABLE units ("
        "  id INTEGER PRIMARY KEY,"
        "  chip_uid TEXT NOT NULL UNIQUE,"
        "  serial TEXT NOT NULL UNIQUE,"
        "  serial_seq INTEGER NOT NULL,"
        "  work_order TEXT NOT NULL REFERENCES work_orders(id),"
        "  lot TEXT NOT NULL,"
        "  station_id TEXT NOT NULL, slot TEXT NOT NULL, operator TEXT NOT NULL,"
        "  recipe_sha256 TEXT NOT NULL REFERENCES recipes(sha256),"
        "  product_id TEXT NOT NULL, hw_revision INTEGER NOT NULL,"
        "  fw_version TEXT NOT NULL, fw_sha256 TEXT NOT NULL,"
        "  verdict TEXT NOT NULL"
        "    CHECK (verdict IN ('IN_PROGRESS','PASS','FAIL','LOCK_FAILED','SCRAP')),"
        "  fail_code TEXT, fail_reason TEXT,"
        "  quota_state TEXT NOT NULL CHECK (quota_state IN ('reserved','consumed','returned')),"
        "  lock_started INTEGER NOT NULL DEFAULT 0,"
        "  attempts INTEGER NOT NULL DEFAULT 1,"
        "  debug_closed INTEGER, secure_boot INTEGER, lifecycle TEXT,"
        "  label_qr TEXT, label_prints INTEGER NOT NULL DEFAULT 0,"
        "  dev_mode INTEGER NOT NULL,"
        "  started_at TEXT NOT NULL, finished_at TEXT,"
        "  CHECK (verdict <> 'FAIL' OR lock_started = 0)) STRICT;"
        "CREATE INDEX units_work_order ON units(work_order);"
        "CREATE INDEX units_lot ON units(lot);"
        "CREATE INDEX units_started ON units(started_at);"
        "CREATE INDEX units_verdict ON units(verdict);"
        "CREATE TABLE macs ("
        "  mac TEXT PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  idx INTEGER NOT NULL, UNIQUE (unit_id, idx)) STRICT;"
        "CREATE TABLE keys ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, name TEXT NOT NULL, slot INTEGER NOT NULL,"
        "  algorithm TEXT NOT NULL, pubkey_sha256 TEXT NOT NULL UNIQUE, pubkey BLOB NOT NULL,"
        "  pop_ok INTEGER NOT NULL, current INTEGER NOT NULL DEFAULT 1) STRICT;"
        "CREATE INDEX keys_unit ON keys(unit_id);"
        "CREATE TABLE certificates ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, key_name TEXT NOT NULL,"
        "  cert_serial TEXT NOT NULL UNIQUE, der BLOB NOT NULL, sha256 TEXT NOT NULL,"
        "  not_after TEXT NOT NULL, chain_pem TEXT NOT NULL,"
        "  current INTEGER NOT NULL DEFAULT 1) STRICT;"
        "CREATE INDEX certificates_unit ON certificates(unit_id);"
        "CREATE TABLE credentials ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,"
        "  method TEXT NOT NULL, commitment TEXT NOT NULL, salt TEXT, object TEXT NOT NULL,"
        "  current INTEGER NOT NULL DEFAULT 1) STRICT;"
        "CREATE INDEX credentials_unit ON credentials(unit_id);"
        "CREATE TABLE objects ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,"
        "  size INTEGER NOT NULL) STRICT;"
        "CREATE INDEX objects_unit ON objects(unit_id);"
        "CREATE TABLE attestations ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, key_name TEXT NOT NULL, ok INTEGER NOT NULL,"
        "  at TEXT NOT NULL) STRICT;"
        "CREATE INDEX attestations_unit ON attestations(unit_id);"
        "CREATE TABLE steps ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, step TEXT NOT NULL, started_at TEXT NOT NULL,"
        "  duration_us INTEGER NOT NULL, ok INTEGER NOT NULL, code TEXT, detail TEXT) STRICT;"
        "CREATE INDEX steps_unit ON steps(unit_id);"
        "CREATE TABLE fuse_journal ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  phase TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, verify TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN ('intent','done','failed')),"
        "  readback TEXT, attrs INTEGER, intent_at TEXT NOT NULL, result_at TEXT) STRICT;"
        "CREATE INDEX fuse_journal_unit ON fuse_journal(unit_id);"
        "CREATE TABLE fuse_snapshots ("
        "  unit_id INTEGER NOT NULL REFERENCES units(id), phase TEXT NOT NULL,"
        "  field TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (unit_id, phase, field)) STRICT;"
        "CREATE TABLE label_prints ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  at TEXT NOT NULL, format TEXT NOT NULL, target TEXT NOT NULL,"
        "  reprint INTEGER NOT NULL) STRICT;"
        "CREATE TABLE events ("
        "  seq INTEGER PRIMARY KEY, at TEXT NOT NULL, unit_id INTEGER, kind TEXT NOT NULL,"
        "  body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL) STRICT;"
        "CREATE INDEX events_unit ON events(unit_id);"
        "CREATE TABLE checkpoints ("
        "  id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, head_hash TEXT NOT NULL,"
        "  work_order TEXT, at TEXT NOT NULL, key_uri TEXT NOT NULL,"
        "  signature BLOB NOT NULL) STRICT;"
        /* the event log is append-only for the station; the hash chain catches anyone else */
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
        "  BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;"
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
        "  BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;"
        /* allocations are never freed: a unit row, once written, is never deleted */
        "CREATE TRIGGER units_no_delete BEFORE DELETE ON units"
        "  BEGIN SELECT RAISE(ABORT, 'units are never deleted'); END;"
        "CREATE TRIGGER macs_no_delete BEFORE DELETE ON macs"
        "  BEGIN SELECT RAISE(ABORT, 'MAC allocations are never freed'); END;",
        /* 2: recipe releases and quota raises, each a signed statement kept as it was verified */
        "CREATE TABLE releases ("
        "  sha256 TEXT PRIMARY KEY REFERENCES recipes(sha256), recipe_id TEXT NOT NULL,"
        "  version TEXT NOT NULL, statement TEXT NOT NULL, signature BLOB NOT NULL,"
        "  recorded_at TEXT NOT NULL) STRICT;"
        "CREATE TABLE quota_authorizations ("
        "  id INTEGER PRIMARY KEY, work_order TEXT NOT NULL REFERENCES work_orders(id),"
        "  old_quota INTEGER NOT NULL, new_quota INTEGER NOT NULL,"
        "  statement_sha256 TEXT NOT NULL UNIQUE, statement TEXT NOT NULL,"
        "  signature BLOB NOT NULL, applied_at TEXT NOT NULL) STRICT;",
        /*
         * 3: each distinct issuer chain stored once, keyed by its SHA-256 (kiln_sha256(), hex, is
         * registered by sq_migrate), and certificates referring to it: every unit of a station
         * carries the same chain, which was two thirds of each certificate row. The table is built
         * anew (same columns, chain_pem replaced by chain_id), so its rows are packed; the old
         * rows' pages become free pages that new rows reuse (VACUUM returns them to the disk).
         */
        "CREATE TABLE chains ("
        "  id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, pem TEXT NOT NULL) STRICT;"
        "INSERT OR IGNORE INTO chains (sha256, pem)"
        "  SELECT kiln_sha256(chain_pem), chain_pem FROM certificates ORDER BY id;"
        "CREATE TABLE certificates_v3 ("
        "  id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL REFERENCES units(id),"
        "  attempt INTEGER NOT NULL, key_name TEXT NOT NULL,"
        "  cert_serial TEXT NOT NULL UNIQUE, der BLOB NOT NULL, sha256 TEXT NOT NULL,"
        "  not_after TEXT NOT NULL, chain_id INTEGER NOT NULL REFERENCES chains(id),"
        "  current INTEGER NOT NULL DEFAULT 1) STRICT;"
        "INSERT INTO certificates_v3 (id, unit_id, attempt, key_name, cert_serial, der, sha256,"
        "  not_after, chain_id, current)"
        "  SELECT c.id, c.unit_id, c.attempt, c.key_name, c.cert_serial, c.der, c.sha256,"
        "  c.not_after, ch.id, c.current FROM certificates c"
        "  JOIN chains ch ON ch.sha256 = kiln_sha256(c.chain_pem) ORDER BY c.id;"
        "DROP TABLE certificates;"
        "ALTER TABLE certificates_v3 RENAME TO certificates;"
        "CREATE INDEX certificates_unit ON certificates(unit_id);",
};

#define MIGRATIONS (sizeof(migrations) / sizeof(migrations[0]))

/* ---- statements ---- */

enum stmt_id {
        S_WO_GET,
        S_WO_INSERT,
        S_WO_RESERVE,
        S_WO_CONSUME,
        S_WO_RETURN,
        S_RECIPE_INSERT,
        S_COUNTER_GET,
        S_COUNTER_SET,
        S_UNIT_BY_UID,
        S_UNIT_BY_ID,
        S_UNIT_INSERT,
        S_UNIT_REOPEN,
        S_UNIT_LOCK,
        S_UNIT_FINISH,
        S_UNITS_IN_PROGRESS,
        S_MAC_INSERT,
        S_MACS_BY_UNIT,
        S_STEP_INSERT,
        S_KEYS_SUPERSEDE,
        S_KEY_INSERT,
        S_CERTS_SUPERSEDE,
        S_CERT_INSERT,
        S_CREDS_SUPERSEDE,
        S_CRED_INSERT,
        S_OBJ_INSERT,
        S_ATTEST_INSERT,
        S_FUSE_INSERT,
        S_FUSE_RESULT,
        S_FUSE_LIST,
        S_SNAP_INSERT,
        S_EVENT_LAST,
        S_EVENT_INSERT,
        S_EXP_UNIT,
        S_EXP_CERTS,
        S_EXP_FUSES,
        S_EXPORT_IDS,
        S_CHAIN_INSERT,
        S_EXP_UNITS,
        S_EXP_MACS_FROM,
        S_EXP_KEYS_FROM,
        S_EXP_CERTS_FROM,
        S_EXP_FUSES_FROM,
        S_EXP_CHAIN,
        S_EXP_RECIPE,
        S_LOOKUP,
        S_RECIPE_GET,
        S_LABEL_INSERT,
        S_LABEL_COUNT,
        S_EVENTS_ALL,
        S_CP_EXISTS,
        S_CP_INSERT,
        S_CP_ALL,
        S_META_GET,
        S_META_PUT,
        S_UNIT_LAST_EVENT,
        S_FACTS,
        S_SHARED_CREDS,
        S_RELEASE_GET,
        S_RELEASE_INSERT,
        S_QUOTA_AUTH_INSERT,
        S_WO_SET_QUOTA,
        S_MAX
};

/* The export record's unit columns, in the order exp_unit_read reads them; recipe_id is the
 * recipe's (a column of a join) or NULL (the export stream looks it up itself). */
#define EXP_UNIT_COLS(recipe_id)                                                                   \
        "u.serial, u.chip_uid, u.verdict, u.fail_code, u.fail_reason, u.work_order, u.lot, "       \
        "u.station_id, u.slot, u.operator, " recipe_id ", u.recipe_sha256, u.product_id, "         \
        "u.hw_revision, u.fw_version, u.fw_sha256, u.started_at, u.finished_at, u.attempts, "      \
        "u.dev_mode, u.debug_closed, u.secure_boot, u.lifecycle, u.label_qr"
/* struct db_export_filter, bound as ?1 work order, ?2 lot, ?3 since, ?4 until, ?5 verdict */
#define EXP_FILTER                                                                                 \
        "(?1 IS NULL OR u.work_order = ?1) AND (?2 IS NULL OR u.lot = ?2) "                        \
        "AND (?3 IS NULL OR u.started_at >= ?3) AND (?4 IS NULL OR u.started_at < ?4) "            \
        "AND (?5 IS NULL OR u.verdict = ?5)"

static const char *const stmt_sql[S_MAX] = {
        [S_WO_GET] = "SELECT id, lot, recipe_sha256, quota, reserved, consumed FROM work_orders "
                     "WHERE id = ?1",
        [S_WO_INSERT] = "INSERT INTO work_orders (id, lot, recipe_sha256, quota, created_at) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)",
        [S_WO_RESERVE] = "UPDATE work_orders SET reserved = reserved + 1 "
                         "WHERE id = ?1 AND reserved + consumed < quota",
        [S_WO_CONSUME] = "UPDATE work_orders SET reserved = reserved - 1, consumed = consumed + 1 "
                         "WHERE id = ?1 AND reserved > 0",
        [S_WO_RETURN] = "UPDATE work_orders SET reserved = reserved - 1 "
                        "WHERE id = ?1 AND reserved > 0",
        [S_RECIPE_INSERT] = "INSERT OR IGNORE INTO recipes (sha256, recipe_id, version, body, "
                            "stored_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        [S_COUNTER_GET] = "SELECT next FROM counters WHERE name = ?1",
        [S_COUNTER_SET] = "INSERT INTO counters (name, next) VALUES (?1, ?2) "
                          "ON CONFLICT(name) DO UPDATE SET next = excluded.next",
        [S_UNIT_BY_UID] = "SELECT id FROM units WHERE chip_uid = ?1",
        [S_UNIT_BY_ID] = "SELECT id, chip_uid, serial, serial_seq, work_order, verdict, attempts, "
                         "lock_started, started_at, recipe_sha256 FROM units WHERE id = ?1",
        [S_UNIT_INSERT] =
                "INSERT INTO units (chip_uid, serial, serial_seq, work_order, lot, station_id, "
                "slot, operator, recipe_sha256, product_id, hw_revision, fw_version, fw_sha256, "
                "verdict, quota_state, dev_mode, started_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                "?8, ?9, ?10, ?11, ?12, ?13, 'IN_PROGRESS', 'reserved', ?14, ?15)",
        [S_UNIT_REOPEN] = "UPDATE units SET verdict = 'IN_PROGRESS', fail_code = NULL, "
                          "fail_reason = NULL, finished_at = NULL, attempts = attempts + 1, "
                          "quota_state = 'reserved', station_id = ?2, slot = ?3, operator = ?4, "
                          "fw_version = ?5, fw_sha256 = ?6 WHERE id = ?1",
        [S_UNIT_LOCK] = "UPDATE units SET lock_started = 1 WHERE id = ?1",
        [S_UNIT_FINISH] = "UPDATE units SET verdict = ?2, fail_code = ?3, fail_reason = ?4, "
                          "debug_closed = ?5, secure_boot = ?6, lifecycle = ?7, label_qr = ?8, "
                          "quota_state = ?9, finished_at = ?10 WHERE id = ?1",
        [S_UNITS_IN_PROGRESS] = "SELECT id FROM units WHERE verdict = 'IN_PROGRESS' ORDER BY id",
        [S_MAC_INSERT] = "INSERT INTO macs (mac, unit_id, idx) VALUES (?1, ?2, ?3)",
        [S_MACS_BY_UNIT] = "SELECT mac FROM macs WHERE unit_id = ?1 ORDER BY idx",
        [S_STEP_INSERT] = "INSERT INTO steps (unit_id, attempt, step, started_at, duration_us, ok, "
                          "code, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [S_KEYS_SUPERSEDE] = "UPDATE keys SET current = 0 WHERE unit_id = ?1",
        [S_KEY_INSERT] = "INSERT INTO keys (unit_id, attempt, name, slot, algorithm, "
                         "pubkey_sha256, pubkey, pop_ok) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [S_CERTS_SUPERSEDE] = "UPDATE certificates SET current = 0 WHERE unit_id = ?1",
        [S_CERT_INSERT] = "INSERT INTO certificates (unit_id, attempt, key_name, cert_serial, der, "
                          "sha256, not_after, chain_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                          "(SELECT id FROM chains WHERE sha256 = ?8))",
        [S_CREDS_SUPERSEDE] = "UPDATE credentials SET current = 0 WHERE unit_id = ?1",
        [S_CRED_INSERT] = "INSERT INTO credentials (unit_id, attempt, name, kind, method, "
                          "commitment, salt, object) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        [S_OBJ_INSERT] = "INSERT INTO objects (unit_id, attempt, name, sha256, size) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
        [S_ATTEST_INSERT] = "INSERT INTO attestations (unit_id, attempt, key_name, ok, at) "
                            "VALUES (?1, ?2, ?3, ?4, ?5)",
        [S_FUSE_INSERT] = "INSERT INTO fuse_journal (unit_id, phase, field, value, verify, state, "
                          "intent_at) VALUES (?1, ?2, ?3, ?4, ?5, 'intent', ?6)",
        [S_FUSE_RESULT] = "UPDATE fuse_journal SET state = ?3, readback = ?4, attrs = ?5, "
                          "result_at = ?6 WHERE id = ?1 AND unit_id = ?2",
        [S_FUSE_LIST] = "SELECT id, phase, field, value, verify, state, readback, attrs "
                        "FROM fuse_journal WHERE unit_id = ?1 ORDER BY id",
        [S_SNAP_INSERT] = "INSERT OR REPLACE INTO fuse_snapshots (unit_id, phase, field, value) "
                          "VALUES (?1, ?2, ?3, ?4)",
        [S_EVENT_LAST] = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        [S_EVENT_INSERT] = "INSERT INTO events (seq, at, unit_id, kind, body, prev_hash, hash) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [S_EXP_UNIT] = "SELECT " EXP_UNIT_COLS("r.recipe_id") " FROM units u LEFT JOIN recipes r "
                       "ON r.sha256 = u.recipe_sha256 WHERE u.id = ?1",
        [S_EXP_CERTS] = "SELECT c.key_name, k.slot, c.cert_serial, k.pubkey_sha256, c.der, "
                        "ch.pem, c.not_after FROM certificates c JOIN keys k "
                        "ON k.unit_id = c.unit_id AND k.name = c.key_name AND k.current = 1 "
                        "LEFT JOIN chains ch ON ch.id = c.chain_id "
                        "WHERE c.unit_id = ?1 AND c.current = 1 ORDER BY k.slot, c.key_name",
        /* the lifecycle change is journaled like a burn but is not a fuse field */
        [S_EXP_FUSES] = "SELECT field, readback FROM fuse_journal WHERE unit_id = ?1 "
                        "AND state = 'done' AND phase <> 'lifecycle' ORDER BY id",
        /* the export stream: the units, then each side table from a unit id on, in unit order */
        [S_EXP_UNITS] = "SELECT " EXP_UNIT_COLS("NULL") ", u.id FROM units u WHERE " EXP_FILTER
                        " ORDER BY u.id",
        [S_EXP_RECIPE] = "SELECT recipe_id FROM recipes WHERE sha256 = ?1",
        [S_EXP_MACS_FROM] = "SELECT unit_id, mac FROM macs WHERE unit_id >= ?1 "
                            "ORDER BY unit_id, idx",
        [S_EXP_KEYS_FROM] = "SELECT unit_id, name, slot, pubkey_sha256 FROM keys "
                            "WHERE unit_id >= ?1 AND current = 1 ORDER BY unit_id",
        [S_EXP_CERTS_FROM] = "SELECT unit_id, key_name, cert_serial, der, not_after, chain_id "
                             "FROM certificates WHERE unit_id >= ?1 AND current = 1 "
                             "ORDER BY unit_id",
        [S_EXP_FUSES_FROM] = "SELECT unit_id, field, readback FROM fuse_journal "
                             "WHERE unit_id >= ?1 AND state = 'done' AND phase <> 'lifecycle' "
                             "ORDER BY unit_id, id",
        [S_EXP_CHAIN] = "SELECT pem FROM chains WHERE id = ?1",
        [S_CHAIN_INSERT] = "INSERT INTO chains (sha256, pem) VALUES (?1, ?2) "
                           "ON CONFLICT (sha256) DO NOTHING",
        /* every identifier a quality engineer may hold; DISTINCT folds a unit found twice */
        [S_LOOKUP] = "SELECT DISTINCT id FROM ("
                     " SELECT id FROM units WHERE serial = ?1 OR chip_uid = lower(?1)"
                     " UNION ALL SELECT unit_id FROM macs WHERE mac = ?2"
                     " UNION ALL SELECT unit_id FROM certificates WHERE cert_serial = lower(?1)"
                     ") LIMIT 2",
        [S_RECIPE_GET] = "SELECT body FROM recipes WHERE sha256 = ?1",
        [S_LABEL_INSERT] = "INSERT INTO label_prints (unit_id, at, format, target, reprint) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)",
        [S_LABEL_COUNT] = "UPDATE units SET label_prints = label_prints + 1 WHERE id = ?1 "
                          "RETURNING label_prints",
        [S_EVENTS_ALL] = "SELECT seq, at, unit_id, kind, body, prev_hash, hash FROM events "
                         "ORDER BY rowid",
        [S_CP_EXISTS] = "SELECT count(*) FROM checkpoints WHERE event_seq = ?1",
        [S_CP_INSERT] = "INSERT INTO checkpoints (event_seq, head_hash, work_order, at, key_uri, "
                        "signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [S_CP_ALL] = "SELECT id, event_seq, head_hash, work_order, at, key_uri, signature FROM "
                     "checkpoints ORDER BY id",
        [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
        [S_META_PUT] = "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
        [S_UNIT_LAST_EVENT] = "SELECT seq, at, unit_id, kind, body, prev_hash, hash FROM events "
                              "WHERE unit_id = ?1 ORDER BY seq DESC LIMIT 1",
        [S_FACTS] = "SELECT"
                    " (SELECT count(*) FROM keys WHERE unit_id = u.id AND current = 1),"
                    " (SELECT count(*) FROM keys WHERE unit_id = u.id AND current = 1 AND pop_ok),"
                    " (SELECT count(*) FROM certificates WHERE unit_id = u.id AND current = 1),"
                    " (SELECT count(*) FROM attestations WHERE unit_id = u.id AND attempt = "
                    "u.attempts AND ok),"
                    " (SELECT count(*) FROM credentials WHERE unit_id = u.id AND current = 1),"
                    " (SELECT count(*) FROM objects WHERE unit_id = u.id AND attempt = u.attempts)"
                    " FROM units u WHERE u.id = ?1",
        [S_SHARED_CREDS] = "SELECT count(*) FROM (SELECT c.commitment FROM credentials c JOIN "
                           "units u ON u.id = c.unit_id WHERE u.work_order = ?1 AND c.current = 1 "
                           "GROUP BY c.commitment HAVING count(DISTINCT c.unit_id) > 1)",
        [S_RELEASE_GET] = "SELECT count(*) FROM releases WHERE sha256 = ?1",
        [S_RELEASE_INSERT] = "INSERT INTO releases (sha256, recipe_id, version, statement, "
                             "signature, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [S_QUOTA_AUTH_INSERT] = "INSERT INTO quota_authorizations (work_order, old_quota, "
                                "new_quota, statement_sha256, statement, signature, applied_at) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [S_WO_SET_QUOTA] = "UPDATE work_orders SET quota = ?2 WHERE id = ?1",
        [S_EXPORT_IDS] = "SELECT u.id FROM units u WHERE " EXP_FILTER " ORDER BY u.id",
};

struct sq {
        struct db_export_rec rec; /* scratch for event digests, under lock */
        sqlite3 *h;
        char path[KILN_PATH_MAX];
        pthread_mutex_t lock;
        sqlite3_stmt *st[S_MAX];
};

static struct sq *sq_of(struct db *db)
{
        return db->impl;
}

/* Map a SQLite result to a kiln code with the SQLite message as detail. */
static int sq_fail(struct sq *s, int rc, const char *what)
{
        int code;

        switch (rc & 0xFF) {
        case SQLITE_CONSTRAINT:
                code = KILN_E_DB_CONSTRAINT;
                break;
        case SQLITE_FULL:
                code = KILN_E_NOSPACE;
                break;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                code = KILN_E_DB_BUSY;
                break;
        case SQLITE_NOMEM:
                code = KILN_E_NOMEM;
                break;
        default:
                code = KILN_E_DB;
        }
        return kiln_fail(code, "database '%s': %s: %s", s->path, what, sqlite3_errmsg(s->h));
}

static sqlite3_stmt *st_get(struct sq *s, enum stmt_id id)
{
        sqlite3_stmt *st = s->st[id];

        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
        if (v == NULL)
                sqlite3_bind_null(st, i);
        else
                sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static void bind_int(sqlite3_stmt *st, int i, int64_t v)
{
        sqlite3_bind_int64(st, i, v);
}

/* Run a statement that returns no rows. */
static int st_done(struct sq *s, sqlite3_stmt *st, const char *what)
{
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
                return sq_fail(s, rc, what);
        return KILN_OK;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? (const char *)t : "";
}

static int sq_exec(struct sq *s, const char *sql, const char *what)
{
        int rc = sqlite3_exec(s->h, sql, NULL, NULL, NULL);

        if (rc != SQLITE_OK)
                return sq_fail(s, rc, what);
        return KILN_OK;
}

static int tx_begin(struct sq *s)
{
        return sq_exec(s, "BEGIN IMMEDIATE", "begin transaction");
}

static int tx_commit(struct sq *s)
{
        return sq_exec(s, "COMMIT", "commit");
}

static void tx_rollback(struct sq *s)
{
        if (!sqlite3_get_autocommit(s->h))
                sqlite3_exec(s->h, "ROLLBACK", NULL, NULL, NULL);
}

static void now_iso(char out[32])
{
        if (kiln_utc_iso8601(kiln_wall_ms(), out, 32) < 0)
                out[0] = '\0';
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
        uint8_t md[32];

        SHA256(p, n, md);
        kiln_hex_encode(md, sizeof(md), out, 65);
}

/* ---- audit chain ---- */

/*
 * hash = SHA-256(prev_hash "|" seq "|" at "|" unit_id "|" kind "|" body), hex. The genesis
 * prev_hash is 64 zeros. `kiln audit verify` recomputes exactly this.
 */
static int event_append(struct sq *s, int64_t unit_id, const char *kind, const char *body)
{
        sqlite3_stmt *st;
        char prev[65], hash[65], at[32], uid[24];
        int64_t seq = 1;
        EVP_MD_CTX *md = NULL;
        uint8_t digest[32];
        char seqs[24];
        int rc, r;

        memset(prev, '0', 64);
        prev[64] = '\0';
        st = st_get(s, S_EVENT_LAST);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                seq = sqlite3_column_int64(st, 0) + 1;
                kiln_strlcpy(prev, col_text(st, 1), sizeof(prev));
        } else if (rc != SQLITE_DONE) {
                r = sq_fail(s, rc, "read event log head");
                sqlite3_reset(st);
                goto out;
        }
        sqlite3_reset(st);
        now_iso(at);
        snprintf(seqs, sizeof(seqs), "%lld", (long long)seq);
        if (unit_id > 0)
                snprintf(uid, sizeof(uid), "%lld", (long long)unit_id);
        else
                uid[0] = '\0';
        md = EVP_MD_CTX_new();
        if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
            !EVP_DigestUpdate(md, prev, 64) || !EVP_DigestUpdate(md, "|", 1) ||
            !EVP_DigestUpdate(md, seqs, strlen(seqs)) || !EVP_DigestUpdate(md, "|", 1) ||
            !EVP_DigestUpdate(md, at, strlen(at)) || !EVP_DigestUpdate(md, "|", 1) ||
            !EVP_DigestUpdate(md, uid, strlen(uid)) || !EVP_DigestUpdate(md, "|", 1) ||
            !EVP_DigestUpdate(md, kind, strlen(kind)) || !EVP_DigestUpdate(md, "|", 1) ||
            !EVP_DigestUpdate(md, body, strlen(body)) || !EVP_DigestFinal_ex(md, digest, NULL)) {
                r = kiln_fail(KILN_E_CRYPTO, "cannot hash audit event");
                goto out;
        }
        kiln_hex_encode(digest, sizeof(digest), hash, sizeof(hash));
        st = st_get(s, S_EVENT_INSERT);
        bind_int(st, 1, seq);
        bind_text(st, 2, at);
        if (unit_id > 0)
                bind_int(st, 3, unit_id);
        else
                sqlite3_bind_null(st, 3);
        bind_text(st, 4, kind);
        bind_text(st, 5, body);
        bind_text(st, 6, prev);
        bind_text(st, 7, hash);
        r = st_done(s, st, "append audit event");
out:
        EVP_MD_CTX_free(md);
        return r;
}

/* Forward: the export record builder, used for the digest that unit events carry. */
static int sq_unit_export_json_locked(struct sq *s, int64_t unit_id, struct kiln_buf *out);

/*
 * Append a unit event: `details` (a JSON object body without braces, may be "") plus the SHA-256 of
 * the unit's export record as it stands inside this transaction.
 */
static int unit_event(struct sq *s, int64_t unit_id, const char *kind, const char *details)
{
        struct kiln_buf rec, body;
        char digest[65];
        int r;

        kiln_buf_init(&rec, 1u << 20);
        kiln_buf_init(&body, 1u << 20);
        r = sq_unit_export_json_locked(s, unit_id, &rec);
        if (r < 0)
                goto out;
        sha256_hex(rec.data, rec.len, digest);
        kiln_buf_printf(&body, "{\"unit\":%lld,%s%s\"record_sha256\":\"%s\"}", (long long)unit_id,
                        details, details[0] ? "," : "", digest);
        r = kiln_buf_error(&body);
        if (r < 0)
                goto out;
        r = event_append(s, unit_id, kind, kiln_buf_cstr(&body));
out:
        kiln_buf_free(&rec);
        kiln_buf_free(&body);
        return r;
}

/* ---- open / migrate ---- */

/* kiln_sha256(x): hex SHA-256 of a text or blob, NULL for NULL. Migrations use it. */
static void sql_sha256(sqlite3_context *cx, int argc, sqlite3_value **argv)
{
        const void *p;
        char hex[65];

        (void)argc;
        if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
                sqlite3_result_null(cx);
                return;
        }
        p = sqlite3_value_blob(argv[0]);
        sha256_hex(p != NULL ? p : "", (size_t)sqlite3_value_bytes(argv[0]), hex);
        sqlite3_result_text(cx, hex, 64, SQLITE_TRANSIENT);
}

static int sq_migrate(struct sq *s)
{
        sqlite3_stmt *st = NULL;
        int version = 0, rc, r;

        rc = sqlite3_create_function_v2(s->h, "kiln_sha256", 1,
                                        SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY,
                                        NULL, sql_sha256, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return sq_fail(s, rc, "register kiln_sha256");
        rc = sqlite3_prepare_v2(s->h, "PRAGMA user_version", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return sq_fail(s, rc, "read schema version");
        if (sqlite3_step(st) == SQLITE_ROW)
                version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (version > (int)MIGRATIONS)
                return kiln_fail(KILN_E_DB_SCHEMA,
                                 "database '%s' has schema version %d; this kiln knows up to %d "
                                 "(use a newer kiln)",
                                 s->path, version, (int)MIGRATIONS);
        for (int v = version; v < (int)MIGRATIONS; v++) {
                char pragma[64];

                r = tx_begin(s);
                if (r < 0)
                        return r;
                r = sq_exec(s, migrations[v], "migrate schema");
                if (r == KILN_OK) {
                        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
                        r = sq_exec(s, pragma, "set schema version");
                }
                if (r == KILN_OK)
                        r = tx_commit(s);
                if (r < 0) {
                        tx_rollback(s);
                        return r;
                }
        }
        return KILN_OK;
}

static void sq_close(struct db *db)
{
        struct sq *s;

        if (db == NULL)
                return;
        s = sq_of(db);
        if (s != NULL) {
                for (int i = 0; i < S_MAX; i++)
                        sqlite3_finalize(s->st[i]);
                if (s->h != NULL)
                        sqlite3_close(s->h);
                pthread_mutex_destroy(&s->lock);
                export_rec_free(&s->rec);
                kiln_free(s);
        }
        kiln_free(db);
}

static const struct db_ops sqlite_ops;

int db_sqlite_open(const char *path, struct db **ret)
{
        struct db *db = NULL;
        struct sq *s = NULL;
        int rc, r;

        db = kiln_calloc(1, sizeof(*db));
        s = kiln_calloc(1, sizeof(*s));
        if (db == NULL || s == NULL) {
                kiln_free(db);
                kiln_free(s);
                return KILN_E_NOMEM;
        }
        db->ops = &sqlite_ops;
        db->impl = s;
        export_rec_init(&s->rec);
        {
                /* recursive: an export holds the lock across its callback, which reads units */
                pthread_mutexattr_t a;

                pthread_mutexattr_init(&a);
                pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
                pthread_mutex_init(&s->lock, &a);
                pthread_mutexattr_destroy(&a);
        }
        if (kiln_strlcpy(s->path, path, sizeof(s->path)) < 0) {
                r = kiln_fail(KILN_E_RANGE, "database path too long");
                goto out;
        }
        rc = sqlite3_open_v2(path, &s->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = kiln_fail(KILN_E_DB, "cannot open database '%s': %s", path,
                              s->h ? sqlite3_errmsg(s->h) : sqlite3_errstr(rc));
                goto out;
        }
        sqlite3_extended_result_codes(s->h, 1);
        sqlite3_busy_timeout(s->h, 5000);
        /* journal_mode returns a row; exec ignores it. WAL fails on some file systems: check. */
        r = sq_exec(s, "PRAGMA journal_mode = WAL", "enable WAL");
        if (r == KILN_OK)
                r = sq_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                            "set durability");
        if (r < 0)
                goto out;
        {
                sqlite3_stmt *st = NULL;
                int wal = 0;

                if (sqlite3_prepare_v2(s->h, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
                    sqlite3_step(st) == SQLITE_ROW)
                        wal = strcmp(col_text(st, 0), "wal") == 0;
                sqlite3_finalize(st);
                /* ":memory:" (fuzzing, benchmarks of the host path) cannot have a WAL */
                if (!wal && strcmp(path, ":memory:") != 0) {
                        r = kiln_fail(KILN_E_DB, "database '%s': cannot use WAL journaling here",
                                      path);
                        goto out;
                }
        }
        r = sq_migrate(s);
        if (r < 0)
                goto out;
        for (int i = 0; i < S_MAX; i++) {
                rc = sqlite3_prepare_v3(s->h, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                        NULL);
                if (rc != SQLITE_OK) {
                        r = sq_fail(s, rc, "prepare statement");
                        goto out;
                }
        }
        *ret = db;
        db = NULL;
        r = KILN_OK;
out:
        if (db != NULL)
                sq_close(db);
        return r;
}

/* ---- work orders and recipes ---- */

static int wo_read(struct sq *s, const char *id, struct db_work_order *ret)
{
        sqlite3_stmt *st = st_get(s, S_WO_GET);
        int rc;

        bind_text(st, 1, id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
                sqlite3_reset(st);
                return KILN_E_NOT_FOUND;
        }
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return sq_fail(s, rc, "read work order");
        }
        memset(ret, 0, sizeof(*ret));
        kiln_strlcpy(ret->id, col_text(st, 0), sizeof(ret->id));
        kiln_strlcpy(ret->lot, col_text(st, 1), sizeof(ret->lot));
        kiln_strlcpy(ret->recipe_sha256, col_text(st, 2), sizeof(ret->recipe_sha256));
        ret->quota = (uint32_t)sqlite3_column_int64(st, 3);
        ret->reserved = (uint32_t)sqlite3_column_int64(st, 4);
        ret->consumed = (uint32_t)sqlite3_column_int64(st, 5);
        sqlite3_reset(st);
        return KILN_OK;
}

static int sq_work_order_get(struct db *db, const char *id, struct db_work_order *ret)
{
        struct sq *s = sq_of(db);
        int r;

        pthread_mutex_lock(&s->lock);
        r = wo_read(s, id, ret);
        pthread_mutex_unlock(&s->lock);
        if (r == KILN_E_NOT_FOUND)
                kiln_fail(r, "work order '%s' not found", id);
        return r;
}

static int sq_work_order_ensure(struct db *db, const char *id, const char *lot,
                                const char *recipe_sha256, uint32_t quota,
                                struct db_work_order *ret)
{
        struct sq *s = sq_of(db);
        struct db_work_order wo;
        struct kiln_buf body;
        struct json_w w;
        char at[32];
        int r;

        kiln_buf_init(&body, 4096);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r < 0)
                goto out;
        r = wo_read(s, id, &wo);
        if (r == KILN_OK) {
                if (strcmp(wo.recipe_sha256, recipe_sha256) != 0) {
                        r = kiln_fail(KILN_E_MISMATCH,
                                      "work order '%s' was started with recipe %.12s…, not %.12s…",
                                      id, wo.recipe_sha256, recipe_sha256);
                        goto out;
                }
                if (lot != NULL && lot[0] != '\0' && strcmp(wo.lot, lot) != 0) {
                        r = kiln_fail(KILN_E_MISMATCH, "work order '%s' belongs to lot '%s', not '%s'",
                                      id, wo.lot, lot);
                        goto out;
                }
                tx_rollback(s);
                *ret = wo;
                r = KILN_OK;
                goto out;
        }
        if (r != KILN_E_NOT_FOUND)
                goto out;
        now_iso(at);
        {
                sqlite3_stmt *st = st_get(s, S_WO_INSERT);

                bind_text(st, 1, id);
                bind_text(st, 2, lot != NULL && lot[0] ? lot : id);
                bind_text(st, 3, recipe_sha256);
                bind_int(st, 4, quota);
                bind_text(st, 5, at);
                r = st_done(s, st, "create work order");
                if (r < 0)
                        goto out;
        }
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_str(&w, "work_order", id);
        json_kv_str(&w, "lot", lot != NULL && lot[0] ? lot : id);
        json_kv_str(&w, "recipe_sha256", recipe_sha256);
        json_kv_int(&w, "quota", quota);
        json_obj_end(&w);
        r = json_error(&w);
        if (r == KILN_OK)
                r = event_append(s, 0, "work_order.create", kiln_buf_cstr(&body));
        if (r == KILN_OK)
                r = wo_read(s, id, &wo);
        if (r == KILN_OK)
                r = tx_commit(s);
        if (r == KILN_OK)
                *ret = wo;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&body);
        return r;
}

static int sq_station_event(struct db *db, const char *kind, const char *body_json)
{
        struct sq *s = sq_of(db);
        int r;

        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = event_append(s, 0, kind, body_json);
        if (r == KILN_OK)
                r = tx_commit(s);
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_recipe_store(struct db *db, const char *sha256_hex, const char *recipe_id,
                           const char *version, const uint8_t *body, size_t len)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        char at[32];
        int r;

        now_iso(at);
        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_RECIPE_INSERT);
        bind_text(st, 1, sha256_hex);
        bind_text(st, 2, recipe_id);
        bind_text(st, 3, version);
        sqlite3_bind_blob(st, 4, body, (int)len, SQLITE_TRANSIENT);
        bind_text(st, 5, at);
        r = st_done(s, st, "store recipe");
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---- units ---- */

static int unit_load(struct sq *s, int64_t id, struct db_unit *u)
{
        sqlite3_stmt *st = st_get(s, S_UNIT_BY_ID);
        int rc, r = KILN_OK;
        enum db_verdict v = DB_VERDICT_IN_PROGRESS;

        bind_int(st, 1, id);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                r = rc == SQLITE_DONE ? KILN_E_NOT_FOUND : sq_fail(s, rc, "read unit");
                sqlite3_reset(st);
                return r;
        }
        memset(u, 0, sizeof(*u));
        u->id = sqlite3_column_int64(st, 0);
        kiln_strlcpy(u->chip_uid, col_text(st, 1), sizeof(u->chip_uid));
        kiln_strlcpy(u->serial, col_text(st, 2), sizeof(u->serial));
        u->serial_seq = (uint64_t)sqlite3_column_int64(st, 3);
        kiln_strlcpy(u->work_order, col_text(st, 4), sizeof(u->work_order));
        if (db_verdict_parse(col_text(st, 5), &v) < 0)
                r = kiln_fail(KILN_E_DB, "unit %lld has an unknown verdict '%s'", (long long)id,
                              col_text(st, 5));
        u->verdict = v;
        u->attempt = (unsigned)sqlite3_column_int(st, 6);
        u->lock_started = sqlite3_column_int(st, 7);
        kiln_strlcpy(u->recipe_sha256, col_text(st, 9), sizeof(u->recipe_sha256));
        sqlite3_reset(st);
        if (r < 0)
                return r;
        st = st_get(s, S_MACS_BY_UNIT);
        bind_int(st, 1, id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && u->n_macs < DB_MACS_MAX)
                kiln_strlcpy(u->macs[u->n_macs++], col_text(st, 0), DB_MAC_STR);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return sq_fail(s, rc, "read MAC addresses");
        return KILN_OK;
}

static int unit_find_uid(struct sq *s, const char *uid, int64_t *ret_id)
{
        sqlite3_stmt *st = st_get(s, S_UNIT_BY_UID);
        int rc;

        bind_text(st, 1, uid);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_id = sqlite3_column_int64(st, 0);
                sqlite3_reset(st);
                return KILN_OK;
        }
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? KILN_E_NOT_FOUND : sq_fail(s, rc, "look up chip UID");
}

static int counter_next(struct sq *s, const char *name, uint64_t start, uint64_t *ret)
{
        sqlite3_stmt *st = st_get(s, S_COUNTER_GET);
        int rc;

        bind_text(st, 1, name);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = (uint64_t)sqlite3_column_int64(st, 0);
        else if (rc == SQLITE_DONE)
                *ret = start;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return sq_fail(s, rc, "read allocation counter");
        return KILN_OK;
}

static int counter_set(struct sq *s, const char *name, uint64_t next)
{
        sqlite3_stmt *st = st_get(s, S_COUNTER_SET);

        if (next > INT64_MAX)
                return kiln_fail(KILN_E_POOL_EXHAUSTED, "allocation counter '%s' overflows", name);
        bind_text(st, 1, name);
        bind_int(st, 2, (int64_t)next);
        return st_done(s, st, "advance allocation counter");
}

static void mac_format(uint64_t v, char out[DB_MAC_STR])
{
        snprintf(out, DB_MAC_STR, "%02x:%02x:%02x:%02x:%02x:%02x", (unsigned)(v >> 40) & 0xFF,
                 (unsigned)(v >> 32) & 0xFF, (unsigned)(v >> 24) & 0xFF, (unsigned)(v >> 16) & 0xFF,
                 (unsigned)(v >> 8) & 0xFF, (unsigned)v & 0xFF);
}

static int steps_flush(struct sq *s, struct db_unit *u)
{
        for (unsigned i = 0; i < u->n_pending; i++) {
                const struct db_step *p = &u->pending[i];
                sqlite3_stmt *st = st_get(s, S_STEP_INSERT);
                char at[32];
                int r;

                if (kiln_utc_iso8601(p->started_ms, at, sizeof(at)) < 0)
                        at[0] = '\0';
                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, p->name);
                bind_text(st, 4, at);
                bind_int(st, 5, (int64_t)p->duration_us);
                bind_int(st, 6, p->ok);
                bind_text(st, 7, p->code[0] ? p->code : NULL);
                bind_text(st, 8, p->detail[0] ? p->detail : NULL);
                r = st_done(s, st, "record step");
                if (r < 0)
                        return r;
        }
        return KILN_OK;
}

/* Steps are written inside the transaction; the queue is emptied only once it committed. */
static int tx_commit_unit(struct sq *s, struct db_unit *u)
{
        int r = tx_commit(s);

        if (r == KILN_OK)
                u->n_pending = 0;
        return r;
}

/* The end of every transaction that changes a unit: its audit event (the details built in w, plus
 * the record digest), then the commit. */
static int unit_tx_commit(struct sq *s, struct db_unit *u, const char *kind, struct json_w *w)
{
        int r = json_error(w);

        if (r == KILN_OK)
                r = unit_event(s, u->id, kind, kiln_buf_cstr(w->b));
        if (r == KILN_OK)
                r = tx_commit_unit(s, u);
        return r;
}

static int snapshot_store(struct sq *s, int64_t unit_id, const char *phase,
                          const char *const *snap, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                const char *eq = strchr(snap[i], '=');
                char field[KILN_NAME_MAX + 1];
                sqlite3_stmt *st;
                int r;

                if (eq == NULL || (size_t)(eq - snap[i]) > KILN_NAME_MAX)
                        return kiln_fail(KILN_E_INVAL, "bad fuse snapshot entry");
                memcpy(field, snap[i], (size_t)(eq - snap[i]));
                field[eq - snap[i]] = '\0';
                st = st_get(s, S_SNAP_INSERT);
                bind_int(st, 1, unit_id);
                bind_text(st, 2, phase);
                bind_text(st, 3, field);
                bind_text(st, 4, eq + 1);
                r = st_done(s, st, "record fuse snapshot");
                if (r < 0)
                        return r;
        }
        return KILN_OK;
}

static int quota_reserve(struct sq *s, const char *work_order)
{
        sqlite3_stmt *st = st_get(s, S_WO_RESERVE);
        struct db_work_order wo;
        int r;

        bind_text(st, 1, work_order);
        r = st_done(s, st, "reserve quota");
        if (r < 0)
                return r;
        if (sqlite3_changes(s->h) == 1)
                return KILN_OK;
        r = wo_read(s, work_order, &wo);
        if (r == KILN_E_NOT_FOUND)
                return kiln_fail(r, "work order '%s' not found", work_order);
        if (r < 0)
                return r;
        return kiln_fail(KILN_E_QUOTA, "work order '%s' has no quota left (%u of %u used)",
                         work_order, wo.consumed + wo.reserved, wo.quota);
}

static int admit_new(struct sq *s, const struct db_admit_request *q, int64_t *ret_id)
{
        struct db_work_order wo;
        sqlite3_stmt *st;
        uint64_t seq = 0, mac = 0;
        char serial[DB_SERIAL_MAX], at[32];
        int64_t id;
        int r;

        r = quota_reserve(s, q->work_order);
        if (r < 0)
                return r;
        r = wo_read(s, q->work_order, &wo);
        if (r < 0)
                return r;
        r = counter_next(s, q->serial_counter, q->serial_start, &seq);
        if (r < 0)
                return r;
        r = q->render_serial(q->render_ctx, seq, serial, sizeof(serial));
        if (r < 0)
                return r;
        r = counter_set(s, q->serial_counter, seq + 1);
        if (r < 0)
                return r;
        if (q->mac_counter != NULL && q->mac_count > 0) {
                if (q->mac_count > DB_MACS_MAX)
                        return kiln_fail(KILN_E_RANGE, "too many MAC addresses per unit");
                r = counter_next(s, q->mac_counter, q->mac_first, &mac);
                if (r < 0)
                        return r;
                if (mac < q->mac_first || mac > q->mac_last ||
                    q->mac_last - mac < (uint64_t)q->mac_count - 1)
                        return kiln_fail(KILN_E_POOL_EXHAUSTED,
                                         "MAC pool '%s' is exhausted (%u addresses needed)",
                                         q->mac_counter, q->mac_count);
                r = counter_set(s, q->mac_counter, mac + q->mac_count);
                if (r < 0)
                        return r;
        }

        now_iso(at);
        st = st_get(s, S_UNIT_INSERT);
        bind_text(st, 1, q->chip_uid);
        bind_text(st, 2, serial);
        bind_int(st, 3, (int64_t)seq);
        bind_text(st, 4, q->work_order);
        bind_text(st, 5, wo.lot);
        bind_text(st, 6, q->station_id);
        bind_text(st, 7, q->slot);
        bind_text(st, 8, q->operator_id);
        bind_text(st, 9, q->recipe_sha256);
        bind_text(st, 10, q->product_id);
        bind_int(st, 11, q->hw_revision);
        bind_text(st, 12, q->fw_version);
        bind_text(st, 13, q->fw_sha256);
        bind_int(st, 14, q->dev_mode ? 1 : 0);
        bind_text(st, 15, at);
        r = st_done(s, st, "create unit");
        if (r < 0)
                return r;
        id = sqlite3_last_insert_rowid(s->h);
        for (unsigned i = 0; q->mac_counter != NULL && i < q->mac_count; i++) {
                char m[DB_MAC_STR];

                mac_format(mac + i, m);
                st = st_get(s, S_MAC_INSERT);
                bind_text(st, 1, m);
                bind_int(st, 2, id);
                bind_int(st, 3, i);
                r = st_done(s, st, "allocate MAC address");
                if (r < 0)
                        return r;
        }
        *ret_id = id;
        return KILN_OK;
}

static int sq_unit_admit(struct db *db, const struct db_admit_request *q, struct db_unit *ret,
                         enum db_admit_kind *ret_kind)
{
        struct sq *s = sq_of(db);
        struct db_unit u;
        enum db_admit_kind kind = DB_ADMIT_NEW;
        int64_t id = 0;
        char details[512];
        int r;

        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r < 0)
                goto out;
        r = unit_find_uid(s, q->chip_uid, &id);
        if (r == KILN_OK) {
                r = unit_load(s, id, &u);
                if (r < 0)
                        goto out;
                switch (u.verdict) {
                case DB_VERDICT_PASS:
                        snprintf(details,
                                 sizeof(details), "\"alert\":\"clone\",\"chip_uid\":\"%s\","
                                 "\"existing_serial\":\"%s\",\"slot\":\"%s\"",
                                 q->chip_uid, u.serial, q->slot);
                        r = unit_event(s, id, "unit.clone_alert", details);
                        if (r == KILN_OK)
                                r = tx_commit(s);
                        if (r == KILN_OK)
                                r = kiln_fail(KILN_E_CLONE,
                                              "chip UID %s was already provisioned as %s: clone "
                                              "alert",
                                              q->chip_uid, u.serial);
                        goto out;
                case DB_VERDICT_LOCK_FAILED:
                case DB_VERDICT_SCRAP:
                        r = kiln_fail(KILN_E_PERM, "unit %s (chip %s) is %s and awaits a quality "
                                                   "disposition",
                                      u.serial, q->chip_uid, db_verdict_name(u.verdict));
                        goto out;
                case DB_VERDICT_IN_PROGRESS:
                case DB_VERDICT_FAIL:
                        if (strcmp(u.recipe_sha256, q->recipe_sha256) != 0) {
                                r = kiln_fail(KILN_E_MISMATCH,
                                              "unit %s (chip %s) was started with recipe %.12s, "
                                              "not %.12s",
                                              u.serial, q->chip_uid, u.recipe_sha256,
                                              q->recipe_sha256);
                                goto out;
                        }
                        if (u.verdict == DB_VERDICT_IN_PROGRESS) {
                                /* interrupted: continue the lock if it started, else a new attempt
                                 * (its quota is still reserved) */
                                kind = u.lock_started ? DB_ADMIT_RESUME : DB_ADMIT_RETRY;
                                break;
                        }
                        kind = DB_ADMIT_RETRY;
                        r = quota_reserve(s, u.work_order);
                        if (r < 0)
                                goto out;
                        break;
                default:
                        r = KILN_E_INTERNAL;
                        goto out;
                }
                if (kind == DB_ADMIT_RETRY) {
                        sqlite3_stmt *st = st_get(s, S_UNIT_REOPEN);

                        bind_int(st, 1, id);
                        bind_text(st, 2, q->station_id);
                        bind_text(st, 3, q->slot);
                        bind_text(st, 4, q->operator_id);
                        bind_text(st, 5, q->fw_version);
                        bind_text(st, 6, q->fw_sha256);
                        r = st_done(s, st, "reopen unit");
                        if (r < 0)
                                goto out;
                }
        } else if (r == KILN_E_NOT_FOUND) {
                r = admit_new(s, q, &id);
                if (r < 0)
                        goto out;
        } else {
                goto out;
        }
        r = snapshot_store(s, id, "pre", q->snapshot, q->n_snapshot);
        if (r < 0)
                goto out;
        r = unit_load(s, id, &u);
        if (r < 0)
                goto out;
        snprintf(details, sizeof(details), "\"admission\":\"%s\",\"attempt\":%u,\"slot\":\"%s\"",
                 kind == DB_ADMIT_NEW ? "new" : kind == DB_ADMIT_RETRY ? "retry" : "resume",
                 u.attempt, q->slot);
        r = unit_event(s, id, "unit.admit", details);
        if (r == KILN_OK)
                r = tx_commit(s);
        if (r < 0)
                goto out;
        *ret = u;
        *ret_kind = kind;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_unit_record_identity(struct db *db, struct db_unit *u, const struct db_key_rec *keys,
                                   unsigned n_keys, const struct db_cert_rec *certs,
                                   unsigned n_certs, const struct db_cred_rec *creds,
                                   unsigned n_creds)
{
        static const enum stmt_id supersede[] = {S_KEYS_SUPERSEDE, S_CERTS_SUPERSEDE,
                                                 S_CREDS_SUPERSEDE};
        struct sq *s = sq_of(db);
        struct kiln_buf details;
        struct json_w w;
        sqlite3_stmt *st;
        int r;

        kiln_buf_init(&details, 64u << 10);
        json_init(&w, &details);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r < 0)
                goto out;
        r = steps_flush(s, u);
        for (unsigned i = 0; r == KILN_OK && i < 3; i++) {
                st = st_get(s, supersede[i]);
                bind_int(st, 1, u->id);
                r = st_done(s, st, "supersede earlier attempt");
        }
        if (r < 0)
                goto out;
        /* details: the body of the event, without the outer braces */
        json_key(&w, "keys");
        json_arr_begin(&w);
        for (unsigned i = 0; i < n_keys; i++) {
                const char *fp = keys[i].fingerprint;

                st = st_get(s, S_KEY_INSERT);
                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, keys[i].name);
                bind_int(st, 4, keys[i].slot);
                bind_text(st, 5, keys[i].algorithm);
                bind_text(st, 6, fp);
                sqlite3_bind_blob(st, 7, keys[i].pubkey, (int)keys[i].pubkey_len, SQLITE_TRANSIENT);
                bind_int(st, 8, keys[i].pop_ok ? 1 : 0);
                r = st_done(s, st, "record device key");
                if (r == KILN_E_DB_CONSTRAINT)
                        r = kiln_fail_append(r, "public key %s of key '%s' already belongs to "
                                                "another unit",
                                             fp, keys[i].name);
                if (r < 0)
                        goto out;
                json_obj_begin(&w);
                json_kv_str(&w, "name", keys[i].name);
                json_kv_int(&w, "slot", keys[i].slot);
                json_kv_str(&w, "pubkey_sha256", fp);
                json_kv_bool(&w, "pop_ok", keys[i].pop_ok);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_key(&w, "certificates");
        json_arr_begin(&w);
        for (unsigned i = 0; i < n_certs; i++) {
                char fp[65], chain[65];

                /* the chain once per database, the certificate refers to it by its hash */
                if (certs[i].chain_pem == NULL) {
                        r = kiln_fail(KILN_E_INVAL, "certificate %s without its chain",
                                      certs[i].serial_hex);
                        goto out;
                }
                sha256_hex(certs[i].chain_pem, strlen(certs[i].chain_pem), chain);
                st = st_get(s, S_CHAIN_INSERT);
                bind_text(st, 1, chain);
                bind_text(st, 2, certs[i].chain_pem);
                r = st_done(s, st, "record certificate chain");
                if (r < 0)
                        goto out;
                sha256_hex(certs[i].der, certs[i].der_len, fp);
                st = st_get(s, S_CERT_INSERT);
                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, certs[i].key_name);
                bind_text(st, 4, certs[i].serial_hex);
                sqlite3_bind_blob(st, 5, certs[i].der, (int)certs[i].der_len, SQLITE_TRANSIENT);
                bind_text(st, 6, fp);
                bind_text(st, 7, certs[i].not_after);
                bind_text(st, 8, chain);
                r = st_done(s, st, "record certificate");
                if (r == KILN_E_DB_CONSTRAINT)
                        r = kiln_fail_append(r, "certificate serial %s already belongs to "
                                                "another unit",
                                             certs[i].serial_hex);
                if (r < 0)
                        goto out;
                json_obj_begin(&w);
                json_kv_str(&w, "key", certs[i].key_name);
                json_kv_str(&w, "serial", certs[i].serial_hex);
                json_kv_str(&w, "sha256", fp);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_key(&w, "credentials");
        json_arr_begin(&w);
        for (unsigned i = 0; i < n_creds; i++) {
                st = st_get(s, S_CRED_INSERT);
                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, creds[i].name);
                bind_text(st, 4, creds[i].kind);
                bind_text(st, 5, creds[i].method);
                bind_text(st, 6, creds[i].commitment);
                bind_text(st, 7, creds[i].salt);
                bind_text(st, 8, creds[i].object);
                r = st_done(s, st, "record credential commitment");
                if (r < 0)
                        goto out;
                json_obj_begin(&w);
                json_kv_str(&w, "name", creds[i].name);
                json_kv_str(&w, "method", creds[i].method);
                json_kv_str(&w, "commitment", creds[i].commitment);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        r = unit_tx_commit(s, u, "unit.identity", &w);
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&details);
        return r;
}

static const char *const fuse_state_names[DB_FUSE_STATE_MAX] = {"intent", "done", "failed"};

/* Results of burns done (DONE/FAILED with read-back) onto their journal rows, into w as "fuses". */
static int fuse_results_store(struct sq *s, struct db_unit *u, const struct db_fuse_rec *results,
                              unsigned n, const char *at, struct json_w *w)
{
        json_key(w, "fuses");
        json_arr_begin(w);
        for (unsigned i = 0; i < n; i++) {
                const struct db_fuse_rec *f = &results[i];
                sqlite3_stmt *st = st_get(s, S_FUSE_RESULT);
                int r;

                if ((unsigned)f->state >= DB_FUSE_STATE_MAX || f->state == DB_FUSE_INTENT)
                        return kiln_fail(KILN_E_INVAL, "fuse result without an outcome");
                bind_int(st, 1, f->id);
                bind_int(st, 2, u->id);
                bind_text(st, 3, fuse_state_names[f->state]);
                bind_text(st, 4, f->readback);
                bind_int(st, 5, f->attrs);
                bind_text(st, 6, at);
                r = st_done(s, st, "record fuse result");
                if (r < 0)
                        return r;
                if (sqlite3_changes(s->h) != 1)
                        return kiln_fail(KILN_E_NOT_FOUND, "fuse journal entry %lld not found",
                                         (long long)f->id);
                json_obj_begin(w);
                json_kv_int(w, "id", f->id);
                json_kv_str(w, "field", f->field);
                json_kv_str(w, "state", fuse_state_names[f->state]);
                json_kv_str(w, "readback", f->readback);
                json_obj_end(w);
        }
        json_arr_end(w);
        return KILN_OK;
}

/* The intents of every burn of the lock, into w as "intents"; the first sets lock_started. */
static int fuse_intents_store(struct sq *s, struct db_unit *u, struct db_fuse_rec *intents,
                              unsigned n, const char *at, struct json_w *w)
{
        int r;

        json_key(w, "intents");
        json_arr_begin(w);
        if (n > 0 && !u->lock_started) {
                sqlite3_stmt *st = st_get(s, S_UNIT_LOCK);

                bind_int(st, 1, u->id);
                r = st_done(s, st, "mark lock started");
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < n; i++) {
                struct db_fuse_rec *f = &intents[i];
                sqlite3_stmt *st = st_get(s, S_FUSE_INSERT);

                bind_int(st, 1, u->id);
                bind_text(st, 2, f->phase);
                bind_text(st, 3, f->field);
                bind_text(st, 4, f->value);
                bind_text(st, 5, f->verify);
                bind_text(st, 6, at);
                r = st_done(s, st, "journal fuse intent");
                if (r < 0)
                        return r;
                f->id = sqlite3_last_insert_rowid(s->h);
                json_obj_begin(w);
                json_kv_int(w, "id", f->id);
                json_kv_str(w, "phase", f->phase);
                json_kv_str(w, "field", f->field);
                json_kv_str(w, "value", f->value);
                json_obj_end(w);
        }
        json_arr_end(w);
        return KILN_OK;
}

static int sq_unit_record_verified(struct db *db, struct db_unit *u,
                                   const struct db_object_rec *objs, unsigned n_objs,
                                   const struct db_attest_rec *att, unsigned n_att,
                                   struct db_fuse_rec *intents, unsigned n_intents)
{
        struct sq *s = sq_of(db);
        struct kiln_buf details;
        struct json_w w;
        char at[32];
        int r;

        kiln_buf_init(&details, 64u << 10);
        json_init(&w, &details);
        now_iso(at);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = steps_flush(s, u);
        if (r < 0)
                goto out;
        json_key(&w, "objects");
        json_arr_begin(&w);
        for (unsigned i = 0; i < n_objs; i++) {
                sqlite3_stmt *st = st_get(s, S_OBJ_INSERT);

                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, objs[i].name);
                bind_text(st, 4, objs[i].sha256);
                bind_int(st, 5, (int64_t)objs[i].size);
                r = st_done(s, st, "record object");
                if (r < 0)
                        goto out;
                json_obj_begin(&w);
                json_kv_str(&w, "name", objs[i].name);
                json_kv_str(&w, "sha256", objs[i].sha256);
                json_kv_int(&w, "size", (int64_t)objs[i].size);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_key(&w, "attestations");
        json_arr_begin(&w);
        for (unsigned i = 0; i < n_att; i++) {
                sqlite3_stmt *st = st_get(s, S_ATTEST_INSERT);

                bind_int(st, 1, u->id);
                bind_int(st, 2, u->attempt);
                bind_text(st, 3, att[i].key_name);
                bind_int(st, 4, att[i].ok ? 1 : 0);
                bind_text(st, 5, at);
                r = st_done(s, st, "record attestation");
                if (r < 0)
                        goto out;
                json_obj_begin(&w);
                json_kv_str(&w, "key", att[i].key_name);
                json_kv_bool(&w, "ok", att[i].ok);
                json_obj_end(&w);
        }
        json_arr_end(&w);
        r = fuse_intents_store(s, u, intents, n_intents, at, &w);
        if (r == KILN_OK)
                r = unit_tx_commit(s, u, "unit.verified", &w);
        if (r == KILN_OK && n_intents > 0)
                u->lock_started = 1;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&details);
        return r;
}

static int sq_fuse_list(struct db *db, int64_t unit_id, db_fuse_visit_fn fn, void *ctx)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_FUSE_LIST);
        bind_int(st, 1, unit_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct db_fuse_rec f;
                const char *state = col_text(st, 5);

                memset(&f, 0, sizeof(f));
                f.id = sqlite3_column_int64(st, 0);
                f.phase = col_text(st, 1);
                f.field = col_text(st, 2);
                f.value = col_text(st, 3);
                f.verify = col_text(st, 4);
                f.state = strcmp(state, "done") == 0     ? DB_FUSE_DONE
                          : strcmp(state, "failed") == 0 ? DB_FUSE_FAILED
                                                         : DB_FUSE_INTENT;
                f.readback = sqlite3_column_type(st, 6) == SQLITE_NULL ? NULL : col_text(st, 6);
                f.attrs = (unsigned)sqlite3_column_int(st, 7);
                r = fn(ctx, &f);
                if (r != KILN_OK)
                        break;
        }
        if (r == KILN_OK && rc != SQLITE_DONE)
                r = sq_fail(s, rc, "read fuse journal");
        sqlite3_reset(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_unit_finish(struct db *db, struct db_unit *u, const struct db_finish *f)
{
        struct sq *s = sq_of(db);
        struct kiln_buf details;
        struct json_w w;
        sqlite3_stmt *st;
        const char *quota_state;
        char at[32];
        int r;

        kiln_buf_init(&details, 16u << 10);
        json_init(&w, &details);
        if (f->verdict == DB_VERDICT_IN_PROGRESS || (unsigned)f->verdict >= DB_VERDICT_MAX)
                return kiln_fail(KILN_E_INVAL, "finish needs a final verdict");
        if (f->verdict == DB_VERDICT_FAIL && u->lock_started)
                return kiln_fail(KILN_E_INVAL, "unit %s: a failure after the lock started is "
                                               "LOCK_FAILED or SCRAP, not FAIL",
                                 u->serial);
        now_iso(at);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = steps_flush(s, u);
        if (r < 0)
                goto out;
        st = st_get(s, f->verdict == DB_VERDICT_FAIL ? S_WO_RETURN : S_WO_CONSUME);
        bind_text(st, 1, u->work_order);
        r = st_done(s, st, "settle quota");
        if (r < 0)
                goto out;
        if (sqlite3_changes(s->h) != 1) {
                r = kiln_fail(KILN_E_DB, "work order '%s' has no reservation for unit %s",
                              u->work_order, u->serial);
                goto out;
        }
        quota_state = f->verdict == DB_VERDICT_FAIL ? "returned" : "consumed";
        r = fuse_results_store(s, u, f->fuse_results, f->n_fuse_results, at, &w);
        if (r == KILN_OK)
                r = snapshot_store(s, u->id, "post", f->snapshot, f->n_snapshot);
        if (r < 0)
                goto out;
        st = st_get(s, S_UNIT_FINISH);
        bind_int(st, 1, u->id);
        bind_text(st, 2, db_verdict_name(f->verdict));
        bind_text(st, 3, f->fail_code);
        bind_text(st, 4, f->fail_reason);
        if (f->debug_closed < 0)
                sqlite3_bind_null(st, 5);
        else
                bind_int(st, 5, f->debug_closed);
        if (f->secure_boot < 0)
                sqlite3_bind_null(st, 6);
        else
                bind_int(st, 6, f->secure_boot);
        bind_text(st, 7, f->lifecycle);
        bind_text(st, 8, f->label_qr);
        bind_text(st, 9, quota_state);
        bind_text(st, 10, at);
        r = st_done(s, st, "record verdict");
        if (r < 0)
                goto out;
        json_kv_str(&w, "verdict", db_verdict_name(f->verdict));
        json_kv_str(&w, "fail_code", f->fail_code);
        json_kv_str(&w, "quota", quota_state);
        r = unit_tx_commit(s, u, "unit.finish", &w);
        if (r == KILN_OK)
                u->verdict = f->verdict;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&details);
        return r;
}

static int sq_unit_flush_steps(struct db *db, struct db_unit *u)
{
        struct sq *s = sq_of(db);
        int r;

        if (u->n_pending == 0)
                return KILN_OK;
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = steps_flush(s, u);
        if (r == KILN_OK)
                r = tx_commit_unit(s, u);
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_units_in_progress(struct db *db, db_unit_visit_fn fn, void *ctx)
{
        struct sq *s = sq_of(db);
        int64_t ids[256];
        int64_t after = 0;
        int r = KILN_OK;

        /* collect ids in batches so the callback runs without the statement open */
        for (;;) {
                sqlite3_stmt *st;
                unsigned n = 0;
                int rc;

                pthread_mutex_lock(&s->lock);
                st = st_get(s, S_UNITS_IN_PROGRESS);
                while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 256) {
                        int64_t id = sqlite3_column_int64(st, 0);

                        if (id > after)
                                ids[n++] = id;
                }
                sqlite3_reset(st);
                pthread_mutex_unlock(&s->lock);
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        return sq_fail(s, rc, "list units in progress");
                if (n == 0)
                        break;
                for (unsigned i = 0; i < n; i++) {
                        struct db_unit u;

                        pthread_mutex_lock(&s->lock);
                        r = unit_load(s, ids[i], &u);
                        pthread_mutex_unlock(&s->lock);
                        if (r == KILN_OK)
                                r = fn(ctx, &u);
                        if (r != KILN_OK)
                                return r;
                        after = ids[i];
                }
        }
        return r;
}

static int sq_unit_by_uid(struct db *db, const char *chip_uid, struct db_unit *ret)
{
        struct sq *s = sq_of(db);
        int64_t id;
        int r;

        pthread_mutex_lock(&s->lock);
        r = unit_find_uid(s, chip_uid, &id);
        if (r == KILN_OK)
                r = unit_load(s, id, ret);
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---- the export record ---- */

static void col_copy(sqlite3_stmt *st, int col, char *dst, size_t cap, int *has)
{
        int null = sqlite3_column_type(st, col) == SQLITE_NULL;

        kiln_strlcpy(dst, null ? "" : col_text(st, col), cap);
        if (has != NULL)
                *has = !null;
}

static int col_tri(sqlite3_stmt *st, int col)
{
        return sqlite3_column_type(st, col) == SQLITE_NULL ? -1 : sqlite3_column_int(st, col) != 0;
}

/* The columns of EXP_UNIT_COLS, from column 0 of st. */
static void exp_unit_read(sqlite3_stmt *st, struct db_export_rec *r)
{
        col_copy(st, 0, r->serial, sizeof(r->serial), NULL);
        col_copy(st, 1, r->chip_uid, sizeof(r->chip_uid), NULL);
        col_copy(st, 2, r->verdict, sizeof(r->verdict), NULL);
        col_copy(st, 3, r->fail_code, sizeof(r->fail_code), &r->has_fail_code);
        col_copy(st, 4, r->fail_reason, sizeof(r->fail_reason), &r->has_fail_reason);
        col_copy(st, 5, r->work_order, sizeof(r->work_order), NULL);
        col_copy(st, 6, r->lot, sizeof(r->lot), NULL);
        col_copy(st, 7, r->station_id, sizeof(r->station_id), NULL);
        col_copy(st, 8, r->slot, sizeof(r->slot), NULL);
        col_copy(st, 9, r->operator_id, sizeof(r->operator_id), NULL);
        col_copy(st, 10, r->recipe_id, sizeof(r->recipe_id), &r->has_recipe_id);
        col_copy(st, 11, r->recipe_sha256, sizeof(r->recipe_sha256), NULL);
        col_copy(st, 12, r->product_id, sizeof(r->product_id), NULL);
        r->hw_revision = (unsigned)sqlite3_column_int(st, 13);
        col_copy(st, 14, r->fw_version, sizeof(r->fw_version), NULL);
        col_copy(st, 15, r->fw_sha256, sizeof(r->fw_sha256), NULL);
        col_copy(st, 16, r->started_at, sizeof(r->started_at), NULL);
        col_copy(st, 17, r->finished_at, sizeof(r->finished_at), &r->has_finished_at);
        r->attempts = (unsigned)sqlite3_column_int(st, 18);
        r->development = sqlite3_column_int(st, 19) != 0;
        r->debug_closed = col_tri(st, 20);
        r->secure_boot = col_tri(st, 21);
        col_copy(st, 22, r->lifecycle, sizeof(r->lifecycle), &r->has_lifecycle);
        col_copy(st, 23, r->label_qr, sizeof(r->label_qr), &r->has_label_qr);
}

/* One verified burn (field, and its read-back in column col of st): the record keeps each field's
 * last read-back, fields in first-burn order. */
static void exp_fuse_add(struct db_export_rec *r, const char *field, sqlite3_stmt *st, int col)
{
        unsigned i;

        for (i = 0; i < r->n_fuses; i++)
                if (strcmp(r->fuses[i].field, field) == 0)
                        break;
        if (i == r->n_fuses) {
                if (r->n_fuses == EXPORT_FUSES_MAX)
                        return;
                r->n_fuses++;
                kiln_strlcpy(r->fuses[i].field, field, sizeof(r->fuses[i].field));
        }
        col_copy(st, col, r->fuses[i].value, sizeof(r->fuses[i].value), NULL);
}

/* A certificate's DER into c, refused over the record's limit. */
static int exp_cert_der(sqlite3_stmt *st, int col, int64_t unit_id, struct export_cert *c)
{
        kiln_buf_clear(&c->der);
        kiln_buf_put(&c->der, sqlite3_column_blob(st, col), (size_t)sqlite3_column_bytes(st, col));
        if (kiln_buf_error(&c->der))
                return kiln_fail(KILN_E_LIMIT, "unit %lld: certificate too large",
                                 (long long)unit_id);
        return KILN_OK;
}

/* The unit's current certificates joined with their keys, lowest key slot first. */
static int exp_certs_by_unit(struct sq *s, int64_t unit_id, struct db_export_rec *r)
{
        sqlite3_stmt *st = st_get(s, S_EXP_CERTS);
        int rc, e = KILN_OK;

        r->n_certs = 0;
        bind_int(st, 1, unit_id);
        while (e == KILN_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
               r->n_certs < EXPORT_CERTS_MAX) {
                struct export_cert *c = &r->certs[r->n_certs++];

                col_copy(st, 0, c->key, sizeof(c->key), NULL);
                c->slot = (unsigned)sqlite3_column_int(st, 1);
                col_copy(st, 2, c->serial, sizeof(c->serial), NULL);
                col_copy(st, 3, c->pubkey_sha256, sizeof(c->pubkey_sha256), NULL);
                e = exp_cert_der(st, 4, unit_id, c);
                kiln_buf_clear(&c->chain_pem);
                kiln_buf_put(&c->chain_pem, sqlite3_column_text(st, 5),
                             (size_t)sqlite3_column_bytes(st, 5));
                col_copy(st, 6, c->not_after, sizeof(c->not_after), NULL);
                if (e == KILN_OK && kiln_buf_error(&c->chain_pem))
                        e = kiln_fail(KILN_E_LIMIT, "unit %lld: certificate too large",
                                      (long long)unit_id);
        }
        sqlite3_reset(st);
        if (e == KILN_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
                e = sq_fail(s, rc, "read certificates");
        return e;
}

static int sq_unit_export_locked(struct sq *s, int64_t unit_id, struct db_export_rec *r)
{
        sqlite3_stmt *st;
        int rc, e;

        export_rec_clear(r);
        st = st_get(s, S_EXP_UNIT);
        bind_int(st, 1, unit_id);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_reset(st);
                return rc == SQLITE_DONE
                               ? kiln_fail(KILN_E_NOT_FOUND, "unit %lld not found", (long long)unit_id)
                               : sq_fail(s, rc, "read unit");
        }
        r->id = unit_id;
        exp_unit_read(st, r);
        sqlite3_reset(st);

        st = st_get(s, S_MACS_BY_UNIT);
        bind_int(st, 1, unit_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && r->n_macs < DB_MACS_MAX)
                col_copy(st, 0, r->macs[r->n_macs++], DB_MAC_STR, NULL);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return sq_fail(s, rc, "read MAC addresses");

        e = exp_certs_by_unit(s, unit_id, r);
        if (e < 0)
                return e;

        st = st_get(s, S_EXP_FUSES);
        bind_int(st, 1, unit_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                exp_fuse_add(r, col_text(st, 0), st, 1);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
                return sq_fail(s, rc, "read fuse journal");
        return KILN_OK;
}

static int sq_unit_export_json_locked(struct sq *s, int64_t unit_id, struct kiln_buf *out)
{
        int r = sq_unit_export_locked(s, unit_id, &s->rec);

        if (r == KILN_OK)
                r = export_render_json(&s->rec, out);
        return r;
}

static int sq_unit_export(struct db *db, int64_t unit_id, struct db_export_rec *rec)
{
        struct sq *s = sq_of(db);
        int r;

        pthread_mutex_lock(&s->lock);
        r = sq_unit_export_locked(s, unit_id, rec);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static void exp_filter_bind(sqlite3_stmt *st, const struct db_export_filter *flt)
{
        bind_text(st, 1, flt->work_order);
        bind_text(st, 2, flt->lot);
        bind_text(st, 3, flt->since);
        bind_text(st, 4, flt->until);
        bind_text(st, 5, flt->verdict >= 0 ? db_verdict_name((enum db_verdict)flt->verdict) : NULL);
}

static int sq_export_each(struct db *db, const struct db_export_filter *flt, db_export_visit_fn fn,
                          void *ctx)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st = NULL;
        int rc, r = KILN_OK;

        /*
         * A statement of its own: the callback reads each unit through the shared statements. The
         * lock is held for the whole stream, so no slot writes inside the export's read snapshot.
         */
        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->h, stmt_sql[S_EXPORT_IDS], -1, &st, NULL);
        if (rc != SQLITE_OK) {
                r = sq_fail(s, rc, "prepare export");
                goto out;
        }
        exp_filter_bind(st, flt);
        /* one read transaction for the whole stream: a consistent snapshot */
        r = sq_exec(s, "BEGIN", "begin export");
        if (r < 0)
                goto out;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                r = fn(ctx, sqlite3_column_int64(st, 0));
                if (r != KILN_OK)
                        break;
        }
        if (r == KILN_OK && rc != SQLITE_DONE)
                r = sq_fail(s, rc, "export");
        sqlite3_finalize(st);
        st = NULL;
        sq_exec(s, "COMMIT", "end export");
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

/* ---- the export stream ---- */

/*
 * Exporting many units reads each table once, in unit order, instead of looking every unit up in
 * four statements: the filtered units drive, and MACs, keys, certificates and the fuse journal are
 * each an ordered cursor "WHERE unit_id >= ?1 ORDER BY unit_id" whose rows are taken when it
 * reaches the unit. A cursor more than EXP_SEEK_GAP units behind the next unit (a filter skipped
 * them) is sought again instead of stepped over the rows between. A unit whose certificates the
 * merge cannot order exactly as S_EXP_CERTS does (more than a record holds, names that do not fit,
 * odd slots, ties) is read with S_EXP_CERTS, so the record is always db_unit_export()'s.
 */
#define EXP_SEEK_GAP 64

enum exp_side_id {
        EXP_MACS,
        EXP_KEYS,
        EXP_CERTS,
        EXP_FUSES,
        EXP_SIDE_MAX
};

static const enum stmt_id exp_side_sql[EXP_SIDE_MAX] = {S_EXP_MACS_FROM, S_EXP_KEYS_FROM,
                                                        S_EXP_CERTS_FROM, S_EXP_FUSES_FROM};

struct exp_side {
        sqlite3_stmt *st;
        int rc; /* of its last step; SQLITE_OK before the first */
};

struct exp_key {
        char name[DB_TEXT_MAX];
        unsigned slot;
        char pubkey_sha256[65];
};

struct exp_stream {
        struct sq *s;
        sqlite3_stmt *units;
        struct exp_side side[EXP_SIDE_MAX];
        sqlite3_stmt *chain;
        struct exp_key keys[EXPORT_CERTS_MAX]; /* the unit's current keys */
        unsigned n_keys;
        struct kiln_buf chain_pem;             /* the last chain read, by id */
        int64_t chain_id;
        int chain_valid;
        sqlite3_stmt *recipe;
        char recipe_sha256[65];                /* the last recipe looked up, and its id */
        char recipe_id[DB_TEXT_MAX];
        int has_recipe_id;
        int recipe_valid;
        struct db_export_rec *rec;
};

/* Text in column col that strcmp compares as SQLite does and that fits cap with its NUL. */
static int col_fits(sqlite3_stmt *st, int col, size_t cap)
{
        const char *t = col_text(st, col);
        size_t n = (size_t)sqlite3_column_bytes(st, col);

        return n < cap && strlen(t) == n;
}

/* Move side c to its first row of unit id or after: sought afresh, or stepped from where it is. */
static int exp_side_goto(struct sq *s, struct exp_side *c, int64_t id, int seek)
{
        if (c->rc == SQLITE_OK || (seek && c->rc == SQLITE_ROW)) {
                sqlite3_reset(c->st);
                bind_int(c->st, 1, id);
                c->rc = sqlite3_step(c->st);
        }
        while (c->rc == SQLITE_ROW && sqlite3_column_int64(c->st, 0) < id)
                c->rc = sqlite3_step(c->st);
        if (c->rc != SQLITE_ROW && c->rc != SQLITE_DONE)
                return sq_fail(s, c->rc, "export");
        return KILN_OK;
}

static int exp_side_at(const struct exp_side *c, int64_t id)
{
        return c->rc == SQLITE_ROW && sqlite3_column_int64(c->st, 0) == id;
}

/* After taking a unit's rows: the step that ended them must not have failed. */
static int exp_side_check(struct sq *s, const struct exp_side *c)
{
        return c->rc == SQLITE_ROW || c->rc == SQLITE_DONE ? KILN_OK : sq_fail(s, c->rc, "export");
}

/* The chain with this id (NULL: none) into c: read once, then copied while it stays the same. */
static int exp_chain(struct exp_stream *x, sqlite3_stmt *row, int col, struct export_cert *c)
{
        int null = sqlite3_column_type(row, col) == SQLITE_NULL;
        int64_t id = sqlite3_column_int64(row, col);
        int rc;

        if (null || !x->chain_valid || x->chain_id != id) {
                kiln_buf_clear(&x->chain_pem);
                x->chain_valid = 0;
                if (!null) {
                        sqlite3_reset(x->chain);
                        bind_int(x->chain, 1, id);
                        rc = sqlite3_step(x->chain);
                        if (rc == SQLITE_ROW)
                                kiln_buf_put(&x->chain_pem, sqlite3_column_text(x->chain, 0),
                                             (size_t)sqlite3_column_bytes(x->chain, 0));
                        sqlite3_reset(x->chain);
                        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                                return sq_fail(x->s, rc, "read certificate chain");
                }
                /* a NULL chain id reads as none, like the LEFT JOIN of S_EXP_CERTS */
                x->chain_id = id;
                x->chain_valid = !null;
        }
        kiln_buf_clear(&c->chain_pem);
        kiln_buf_put(&c->chain_pem, x->chain_pem.data, x->chain_pem.len);
        if (kiln_buf_error(&x->chain_pem) || kiln_buf_error(&c->chain_pem))
                return kiln_fail(KILN_E_LIMIT, "certificate chain too large");
        return KILN_OK;
}

/* The unit's recipe id, as the LEFT JOIN of S_EXP_UNIT has it ("" and has_recipe_id 0 when the
 * recipe is not stored): looked up when the unit's recipe is not the previous unit's. */
static int exp_recipe(struct exp_stream *x)
{
        struct db_export_rec *r = x->rec;
        sqlite3_stmt *u = x->units;
        int cacheable = sqlite3_column_type(u, 11) != SQLITE_NULL &&
                        col_fits(u, 11, sizeof(x->recipe_sha256));
        int rc;

        if (!x->recipe_valid || !cacheable || strcmp(col_text(u, 11), x->recipe_sha256) != 0) {
                x->recipe_valid = 0;
                sqlite3_reset(x->recipe);
                sqlite3_bind_value(x->recipe, 1, sqlite3_column_value(u, 11));
                rc = sqlite3_step(x->recipe);
                x->recipe_id[0] = '\0';
                x->has_recipe_id = 0;
                if (rc == SQLITE_ROW)
                        col_copy(x->recipe, 0, x->recipe_id, sizeof(x->recipe_id),
                                 &x->has_recipe_id);
                sqlite3_reset(x->recipe);
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        return sq_fail(x->s, rc, "read recipe");
                if (cacheable) {
                        kiln_strlcpy(x->recipe_sha256, col_text(u, 11), sizeof(x->recipe_sha256));
                        x->recipe_valid = 1;
                }
        }
        memcpy(r->recipe_id, x->recipe_id, sizeof(r->recipe_id));
        r->has_recipe_id = x->has_recipe_id;
        return KILN_OK;
}

static int exp_cert_cmp(const struct export_cert *a, const struct export_cert *b)
{
        if (a->slot != b->slot)
                return a->slot < b->slot ? -1 : 1;
        return strcmp(a->key, b->key);
}

/*
 * The unit's current keys and certificates from their cursors, joined by key name and ordered by
 * (slot, key name) as S_EXP_CERTS does. *ret_exact = 0 when that order cannot be reproduced here.
 */
static int exp_certs_merge(struct exp_stream *x, int64_t id, int *ret_exact)
{
        struct exp_side *k = &x->side[EXP_KEYS], *cs = &x->side[EXP_CERTS];
        struct db_export_rec *r = x->rec;
        int exact = 1, e = KILN_OK;

        x->n_keys = 0;
        for (; exp_side_at(k, id); k->rc = sqlite3_step(k->st)) {
                struct exp_key *kk = &x->keys[x->n_keys];
                int64_t slot = sqlite3_column_int64(k->st, 2);

                if (x->n_keys == EXPORT_CERTS_MAX || !col_fits(k->st, 1, sizeof(kk->name)) ||
                    sqlite3_column_type(k->st, 2) != SQLITE_INTEGER || slot < 0 || slot > 255) {
                        exact = 0;
                        continue;
                }
                col_copy(k->st, 1, kk->name, sizeof(kk->name), NULL);
                kk->slot = (unsigned)slot;
                col_copy(k->st, 3, kk->pubkey_sha256, sizeof(kk->pubkey_sha256), NULL);
                x->n_keys++;
        }
        r->n_certs = 0;
        for (; e == KILN_OK && exp_side_at(cs, id); cs->rc = sqlite3_step(cs->st)) {
                const char *name = col_text(cs->st, 1);

                if (!exact || !col_fits(cs->st, 1, sizeof(r->certs[0].key))) {
                        exact = 0;
                        continue;
                }
                for (unsigned i = 0; e == KILN_OK && i < x->n_keys; i++) {
                        struct export_cert *c;

                        if (strcmp(x->keys[i].name, name) != 0)
                                continue;
                        if (r->n_certs == EXPORT_CERTS_MAX) {
                                exact = 0;
                                break;
                        }
                        c = &r->certs[r->n_certs++];
                        memcpy(c->key, x->keys[i].name, sizeof(c->key));
                        c->slot = x->keys[i].slot;
                        memcpy(c->pubkey_sha256, x->keys[i].pubkey_sha256,
                               sizeof(c->pubkey_sha256));
                        col_copy(cs->st, 2, c->serial, sizeof(c->serial), NULL);
                        e = exp_cert_der(cs->st, 3, id, c);
                        col_copy(cs->st, 4, c->not_after, sizeof(c->not_after), NULL);
                        if (e == KILN_OK)
                                e = exp_chain(x, cs->st, 5, c);
                }
        }
        if (e == KILN_OK)
                e = exp_side_check(x->s, k);
        if (e == KILN_OK)
                e = exp_side_check(x->s, cs);
        /* insertion sort: a handful of entries, moved whole (their buffers with them) */
        for (unsigned i = 1; e == KILN_OK && exact && i < r->n_certs; i++) {
                for (unsigned j = i; j > 0; j--) {
                        int cmp = exp_cert_cmp(&r->certs[j - 1], &r->certs[j]);
                        struct export_cert t;

                        if (cmp == 0)
                                exact = 0; /* SQLite's order among ties is its own */
                        if (cmp <= 0)
                                break;
                        t = r->certs[j - 1];
                        r->certs[j - 1] = r->certs[j];
                        r->certs[j] = t;
                }
        }
        if (e == KILN_OK)
                *ret_exact = exact;
        return e;
}

/* The next unit's record from the cursors; st is at its row of the units statement. */
static int exp_stream_unit(struct exp_stream *x, int64_t prev)
{
        struct db_export_rec *r = x->rec;
        struct exp_side *m = &x->side[EXP_MACS], *f = &x->side[EXP_FUSES];
        int64_t id = sqlite3_column_int64(x->units, 24);
        int seek = prev == 0 || id - prev > EXP_SEEK_GAP, exact = 1, e = KILN_OK;

        /* every field is written below or by exp_unit_read: no need to clear the whole record */
        r->id = id;
        r->n_macs = r->n_certs = r->n_fuses = 0;
        exp_unit_read(x->units, r);
        e = exp_recipe(x);
        for (int i = 0; e == KILN_OK && i < EXP_SIDE_MAX; i++)
                e = exp_side_goto(x->s, &x->side[i], id, seek);
        if (e < 0)
                return e;
        for (; exp_side_at(m, id); m->rc = sqlite3_step(m->st))
                if (r->n_macs < DB_MACS_MAX)
                        col_copy(m->st, 1, r->macs[r->n_macs++], DB_MAC_STR, NULL);
        e = exp_side_check(x->s, m);
        if (e == KILN_OK)
                e = exp_certs_merge(x, id, &exact);
        if (e == KILN_OK && !exact)
                e = exp_certs_by_unit(x->s, id, r);
        for (; e == KILN_OK && exp_side_at(f, id); f->rc = sqlite3_step(f->st))
                exp_fuse_add(r, col_text(f->st, 1), f->st, 2);
        if (e == KILN_OK)
                e = exp_side_check(x->s, f);
        return e;
}

static int sq_export_records(struct db *db, const struct db_export_filter *flt,
                             db_export_rec_fn fn, void *ctx)
{
        struct exp_stream x;
        int64_t prev = 0;
        int rc, r = KILN_OK, began = 0;

        memset(&x, 0, sizeof(x));
        x.s = sq_of(db);
        kiln_buf_init(&x.chain_pem, 8 * KILN_CERT_DER_MAX);
        x.rec = kiln_malloc(sizeof(*x.rec));
        if (x.rec == NULL)
                return KILN_E_NOMEM;
        export_rec_init(x.rec);
        /* statements of its own, and the lock for the whole stream, as sq_export_each */
        pthread_mutex_lock(&x.s->lock);
        rc = sqlite3_prepare_v2(x.s->h, stmt_sql[S_EXP_UNITS], -1, &x.units, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(x.s->h, stmt_sql[S_EXP_CHAIN], -1, &x.chain, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_prepare_v2(x.s->h, stmt_sql[S_EXP_RECIPE], -1, &x.recipe, NULL);
        for (int i = 0; rc == SQLITE_OK && i < EXP_SIDE_MAX; i++)
                rc = sqlite3_prepare_v2(x.s->h, stmt_sql[exp_side_sql[i]], -1, &x.side[i].st,
                                        NULL);
        if (rc != SQLITE_OK) {
                r = sq_fail(x.s, rc, "prepare export");
                goto out;
        }
        exp_filter_bind(x.units, flt);
        /* one read transaction for the whole stream: a consistent snapshot */
        r = sq_exec(x.s, "BEGIN", "begin export");
        if (r < 0)
                goto out;
        began = 1;
        while ((rc = sqlite3_step(x.units)) == SQLITE_ROW) {
                r = exp_stream_unit(&x, prev);
                if (r == KILN_OK)
                        r = fn(ctx, x.rec);
                if (r != KILN_OK)
                        break;
                prev = x.rec->id;
        }
        if (r == KILN_OK && rc != SQLITE_DONE)
                r = sq_fail(x.s, rc, "export");
out:
        sqlite3_finalize(x.units);
        sqlite3_finalize(x.chain);
        sqlite3_finalize(x.recipe);
        for (int i = 0; i < EXP_SIDE_MAX; i++)
                sqlite3_finalize(x.side[i].st);
        if (began)
                sq_exec(x.s, "COMMIT", "end export");
        pthread_mutex_unlock(&x.s->lock);
        export_rec_free(x.rec);
        kiln_free(x.rec);
        kiln_buf_free(&x.chain_pem);
        return r;
}

/* "02:00:5e:10:00:01", "02-00-5E-10-00-01" or "02005e100001" to the stored form, else "". */
static void mac_normalise(const char *in, char out[DB_MAC_STR])
{
        char hex[13];
        size_t n = 0;

        out[0] = '\0';
        for (const char *p = in; *p; p++) {
                char c = *p;

                if (c == ':' || c == '-')
                        continue;
                if (c >= 'A' && c <= 'F')
                        c = (char)(c - 'A' + 'a');
                if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) || n == 12)
                        return;
                hex[n++] = c;
        }
        if (n != 12)
                return;
        snprintf(out, DB_MAC_STR, "%.2s:%.2s:%.2s:%.2s:%.2s:%.2s", hex, hex + 2, hex + 4, hex + 6,
                 hex + 8, hex + 10);
}

static int sq_unit_lookup(struct db *db, const char *key, int64_t *ret_unit_id)
{
        struct sq *s = sq_of(db);
        char mac[DB_MAC_STR];
        sqlite3_stmt *st;
        int64_t ids[2];
        int n = 0, rc, r = KILN_OK;

        mac_normalise(key, mac);
        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_LOOKUP);
        bind_text(st, 1, key);
        bind_text(st, 2, mac);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 2)
                ids[n++] = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                r = sq_fail(s, rc, "look up unit");
        else if (n == 0)
                r = kiln_fail(KILN_E_NOT_FOUND, "no unit has serial, chip UID, MAC or certificate "
                                                "serial '%s'",
                              key);
        else if (n > 1)
                r = kiln_fail(KILN_E_MISMATCH, "'%s' names units %lld and %lld", key,
                              (long long)ids[0], (long long)ids[1]);
        else
                *ret_unit_id = ids[0];
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_recipe_get(struct db *db, const char *sha256_hex, uint8_t **ret, size_t *ret_len)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_RECIPE_GET);
        bind_text(st, 1, sha256_hex);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                size_t n = (size_t)sqlite3_column_bytes(st, 0);
                uint8_t *p = kiln_malloc(n + 1);

                if (p == NULL) {
                        r = KILN_E_NOMEM;
                } else {
                        if (n > 0)
                                memcpy(p, sqlite3_column_blob(st, 0), n);
                        p[n] = '\0';
                        *ret = p;
                        *ret_len = n;
                }
        } else {
                r = rc == SQLITE_DONE ? kiln_fail(KILN_E_NOT_FOUND, "recipe %.12s not recorded",
                                                  sha256_hex)
                                      : sq_fail(s, rc, "read recipe");
        }
        sqlite3_reset(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_label_print(struct db *db, int64_t unit_id, const char *format, const char *target,
                          unsigned *ret_count)
{
        struct sq *s = sq_of(db);
        struct kiln_buf details;
        struct json_w w;
        sqlite3_stmt *st;
        unsigned count = 0;
        char at[32];
        int rc, r;

        kiln_buf_init(&details, 4096);
        json_init(&w, &details);
        now_iso(at);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r < 0)
                goto out;
        st = st_get(s, S_LABEL_COUNT);
        bind_int(st, 1, unit_id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                count = (unsigned)sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW) {
                r = rc == SQLITE_DONE ? kiln_fail(KILN_E_NOT_FOUND, "unit %lld not found",
                                                  (long long)unit_id)
                                      : sq_fail(s, rc, "count label print");
                goto out;
        }
        st = st_get(s, S_LABEL_INSERT);
        bind_int(st, 1, unit_id);
        bind_text(st, 2, at);
        bind_text(st, 3, format);
        bind_text(st, 4, target);
        bind_int(st, 5, count > 1);
        r = st_done(s, st, "record label print");
        if (r < 0)
                goto out;
        json_kv_str(&w, "format", format);
        json_kv_str(&w, "target", target);
        json_kv_int(&w, "print", count);
        r = json_error(&w);
        if (r == KILN_OK)
                r = unit_event(s, unit_id, "label.print", kiln_buf_cstr(&details));
        if (r == KILN_OK)
                r = tx_commit(s);
        if (r == KILN_OK)
                *ret_count = count;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&details);
        return r;
}

static void event_from_row(sqlite3_stmt *st, struct db_event *ev)
{
        ev->seq = sqlite3_column_int64(st, 0);
        ev->at = col_text(st, 1);
        ev->unit_id = sqlite3_column_type(st, 2) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 2);
        ev->kind = col_text(st, 3);
        ev->body = col_text(st, 4);
        ev->prev_hash = col_text(st, 5);
        ev->hash = col_text(st, 6);
}

/* A statement of its own so the callback may use the shared ones (the lock is recursive). */
static int sq_events_each(struct db *db, db_event_visit_fn fn, void *ctx)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st = NULL;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->h, stmt_sql[S_EVENTS_ALL], -1, &st, NULL);
        if (rc != SQLITE_OK) {
                r = sq_fail(s, rc, "read event log");
                goto out;
        }
        r = sq_exec(s, "BEGIN", "begin read");
        if (r < 0)
                goto out;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct db_event ev;

                event_from_row(st, &ev);
                r = fn(ctx, &ev);
                if (r != KILN_OK)
                        break;
        }
        if (r == KILN_OK && rc != SQLITE_DONE)
                r = sq_fail(s, rc, "read event log");
        sqlite3_finalize(st);
        st = NULL;
        sq_exec(s, "COMMIT", "end read");
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int event_head_locked(struct sq *s, int64_t *ret_seq, char ret_hash[65])
{
        sqlite3_stmt *st = st_get(s, S_EVENT_LAST);
        int rc = sqlite3_step(st);

        if (rc == SQLITE_ROW) {
                *ret_seq = sqlite3_column_int64(st, 0);
                kiln_strlcpy(ret_hash, col_text(st, 1), 65);
        } else if (rc == SQLITE_DONE) {
                *ret_seq = 0;
                memset(ret_hash, '0', 64);
                ret_hash[64] = '\0';
        }
        sqlite3_reset(st);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? KILN_OK : sq_fail(s, rc, "read event head");
}

static int sq_event_head(struct db *db, int64_t *ret_seq, char ret_hash[65])
{
        struct sq *s = sq_of(db);
        int r;

        pthread_mutex_lock(&s->lock);
        r = event_head_locked(s, ret_seq, ret_hash);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_checkpoint_add(struct db *db, const char *work_order, const char *key_uri,
                             const char *pubkey_pem, db_sign_fn sign, void *sign_ctx)
{
        struct sq *s = sq_of(db);
        struct kiln_buf msg;
        uint8_t sig[512];
        size_t sig_len = 0;
        char head[65], at[32], meta_key[KILN_URI_MAX + 16];
        int64_t seq = 0;
        sqlite3_stmt *st;
        int rc, r;

        kiln_buf_init(&msg, 4096);
        now_iso(at);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = event_head_locked(s, &seq, head);
        if (r < 0 || seq == 0)
                goto out;
        st = st_get(s, S_CP_EXISTS);
        bind_int(st, 1, seq);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_int(st, 0) > 0) {
                sqlite3_reset(st);
                goto out; /* already checkpointed */
        }
        sqlite3_reset(st);
        r = db_checkpoint_message(seq, head, at, work_order, &msg);
        if (r == KILN_OK)
                r = sign(sign_ctx, msg.data, msg.len, sig, sizeof(sig), &sig_len);
        if (r < 0)
                goto out;
        st = st_get(s, S_CP_INSERT);
        bind_int(st, 1, seq);
        bind_text(st, 2, head);
        bind_text(st, 3, work_order);
        bind_text(st, 4, at);
        bind_text(st, 5, key_uri);
        sqlite3_bind_blob(st, 6, sig, (int)sig_len, SQLITE_TRANSIENT);
        r = st_done(s, st, "store checkpoint");
        if (r == KILN_OK && pubkey_pem != NULL) {
                snprintf(meta_key, sizeof(meta_key), "audit_pubkey:%s", key_uri);
                st = st_get(s, S_META_PUT);
                bind_text(st, 1, meta_key);
                bind_text(st, 2, pubkey_pem);
                r = st_done(s, st, "record audit public key");
        }
        if (r == KILN_OK)
                r = tx_commit(s);
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&msg);
        return r;
}

static int sq_checkpoints_each(struct db *db, db_checkpoint_visit_fn fn, void *ctx)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st = NULL;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        rc = sqlite3_prepare_v2(s->h, stmt_sql[S_CP_ALL], -1, &st, NULL);
        if (rc != SQLITE_OK) {
                r = sq_fail(s, rc, "read checkpoints");
                goto out;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct db_checkpoint cp = {
                        .id = sqlite3_column_int64(st, 0),
                        .event_seq = sqlite3_column_int64(st, 1),
                        .head_hash = col_text(st, 2),
                        .work_order = sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL
                                                                                : col_text(st, 3),
                        .at = col_text(st, 4),
                        .key_uri = col_text(st, 5),
                        .signature = sqlite3_column_blob(st, 6),
                        .signature_len = (size_t)sqlite3_column_bytes(st, 6),
                };

                r = fn(ctx, &cp);
                if (r != KILN_OK)
                        break;
        }
        if (r == KILN_OK && rc != SQLITE_DONE)
                r = sq_fail(s, rc, "read checkpoints");
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_audit_pubkey(struct db *db, const char *key_uri, char **ret_pem)
{
        struct sq *s = sq_of(db);
        char meta_key[KILN_URI_MAX + 16];
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        snprintf(meta_key, sizeof(meta_key), "audit_pubkey:%s", key_uri);
        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_META_GET);
        bind_text(st, 1, meta_key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_pem = kiln_strdup(col_text(st, 0));
                if (*ret_pem == NULL)
                        r = KILN_E_NOMEM;
        } else {
                r = rc == SQLITE_DONE ? KILN_E_NOT_FOUND : sq_fail(s, rc, "read meta");
        }
        sqlite3_reset(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_unit_last_event(struct db *db, int64_t unit_id, struct db_event *ret)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        /* the strings stay valid until the next call: the statement is reset then */
        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_UNIT_LAST_EVENT);
        bind_int(st, 1, unit_id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                event_from_row(st, ret);
        else
                r = rc == SQLITE_DONE ? KILN_E_NOT_FOUND : sq_fail(s, rc, "read unit event");
        pthread_mutex_unlock(&s->lock);
        return r;
}

static const struct {
        const char *section;
        const char *sql;
} history_sql[] = {
        {"steps", "SELECT attempt, step, started_at, duration_us, ok, code, detail FROM steps "
                  "WHERE unit_id = ?1 ORDER BY id"},
        {"keys", "SELECT attempt, name, slot, algorithm, pubkey_sha256, pop_ok, current FROM keys "
                 "WHERE unit_id = ?1 ORDER BY id"},
        {"certificates", "SELECT attempt, key_name, cert_serial, sha256, not_after, current FROM "
                         "certificates WHERE unit_id = ?1 ORDER BY id"},
        {"credentials", "SELECT attempt, name, kind, method, commitment, object, current FROM "
                        "credentials WHERE unit_id = ?1 ORDER BY id"},
        {"objects", "SELECT attempt, name, size, sha256 FROM objects WHERE unit_id = ?1 "
                    "ORDER BY id"},
        {"attestations", "SELECT attempt, key_name, ok, at FROM attestations WHERE unit_id = ?1 "
                         "ORDER BY id"},
        {"fuse_journal", "SELECT id, phase, field, value, verify, state, readback, attrs, "
                         "intent_at, result_at FROM fuse_journal WHERE unit_id = ?1 ORDER BY id"},
        {"fuse_snapshots", "SELECT phase, field, value FROM fuse_snapshots WHERE unit_id = ?1 "
                           "ORDER BY phase DESC, rowid"},
        {"label_prints", "SELECT at, format, target, reprint FROM label_prints WHERE unit_id = ?1 "
                         "ORDER BY id"},
        {"events", "SELECT seq, at, kind, hash FROM events WHERE unit_id = ?1 ORDER BY seq"},
};

static int sq_unit_history(struct db *db, int64_t unit_id, db_history_row_fn fn, void *ctx)
{
        struct sq *s = sq_of(db);
        int r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; r == KILN_OK && i < sizeof(history_sql) / sizeof(history_sql[0]); i++) {
                sqlite3_stmt *st = NULL;
                int rc = sqlite3_prepare_v2(s->h, history_sql[i].sql, -1, &st, NULL);

                if (rc != SQLITE_OK) {
                        r = sq_fail(s, rc, "read unit history");
                        break;
                }
                bind_int(st, 1, unit_id);
                while (r == KILN_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                        const char *names[16], *values[16];
                        unsigned n = (unsigned)sqlite3_column_count(st);

                        for (unsigned c = 0; c < n && c < 16; c++) {
                                names[c] = sqlite3_column_name(st, (int)c);
                                values[c] = sqlite3_column_type(st, (int)c) == SQLITE_NULL
                                                    ? NULL
                                                    : col_text(st, (int)c);
                        }
                        r = fn(ctx, history_sql[i].section, names, values, n < 16 ? n : 16);
                }
                if (r == KILN_OK && rc != SQLITE_DONE)
                        r = sq_fail(s, rc, "read unit history");
                sqlite3_finalize(st);
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_unit_facts(struct db *db, int64_t unit_id, struct db_unit_facts *ret)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_FACTS);
        bind_int(st, 1, unit_id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                ret->keys = (unsigned)sqlite3_column_int(st, 0);
                ret->keys_pop_ok = (unsigned)sqlite3_column_int(st, 1);
                ret->certs = (unsigned)sqlite3_column_int(st, 2);
                ret->attest_ok = (unsigned)sqlite3_column_int(st, 3);
                ret->creds = (unsigned)sqlite3_column_int(st, 4);
                ret->objects = (unsigned)sqlite3_column_int(st, 5);
        } else {
                r = rc == SQLITE_DONE ? KILN_E_NOT_FOUND : sq_fail(s, rc, "read unit facts");
        }
        sqlite3_reset(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_shared_creds(struct db *db, const char *work_order, unsigned *ret_count)
{
        struct sq *s = sq_of(db);
        sqlite3_stmt *st;
        int rc, r = KILN_OK;

        pthread_mutex_lock(&s->lock);
        st = st_get(s, S_SHARED_CREDS);
        bind_text(st, 1, work_order);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret_count = (unsigned)sqlite3_column_int(st, 0);
        else
                r = sq_fail(s, rc, "check credential uniqueness");
        sqlite3_reset(st);
        pthread_mutex_unlock(&s->lock);
        return r;
}

static int sq_recipe_release(struct db *db, const char *sha256_hex, const char *recipe_id,
                             const char *version, const char *statement, const uint8_t *sig,
                             size_t sig_len)
{
        struct sq *s = sq_of(db);
        struct kiln_buf body;
        struct json_w w;
        sqlite3_stmt *st;
        char at[32];
        int rc, r;

        kiln_buf_init(&body, 4096);
        now_iso(at);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r < 0)
                goto out;
        st = st_get(s, S_RELEASE_GET);
        bind_text(st, 1, sha256_hex);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_int(st, 0) > 0) {
                sqlite3_reset(st);
                goto out; /* recorded before */
        }
        sqlite3_reset(st);
        st = st_get(s, S_RELEASE_INSERT);
        bind_text(st, 1, sha256_hex);
        bind_text(st, 2, recipe_id);
        bind_text(st, 3, version);
        bind_text(st, 4, statement);
        sqlite3_bind_blob(st, 5, sig, (int)sig_len, SQLITE_TRANSIENT);
        bind_text(st, 6, at);
        r = st_done(s, st, "record recipe release");
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_str(&w, "recipe_sha256", sha256_hex);
        json_kv_str(&w, "recipe_id", recipe_id);
        json_kv_str(&w, "version", version);
        json_obj_end(&w);
        if (r == KILN_OK)
                r = json_error(&w);
        if (r == KILN_OK)
                r = event_append(s, 0, "recipe.release", kiln_buf_cstr(&body));
        if (r == KILN_OK)
                r = tx_commit(s);
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&body);
        return r;
}

static int sq_work_order_raise(struct db *db, const char *work_order, uint32_t new_quota,
                               const char *statement, const uint8_t *sig, size_t sig_len,
                               uint32_t *ret_old)
{
        struct sq *s = sq_of(db);
        struct db_work_order wo;
        struct kiln_buf body;
        struct json_w w;
        sqlite3_stmt *st;
        char at[32], digest[65];
        int r;

        kiln_buf_init(&body, 4096);
        now_iso(at);
        sha256_hex(statement, strlen(statement), digest);
        pthread_mutex_lock(&s->lock);
        r = tx_begin(s);
        if (r == KILN_OK)
                r = wo_read(s, work_order, &wo);
        if (r == KILN_E_NOT_FOUND)
                r = kiln_fail(r, "work order '%s' not found", work_order);
        if (r < 0)
                goto out;
        st = st_get(s, S_QUOTA_AUTH_INSERT);
        bind_text(st, 1, work_order);
        bind_int(st, 2, wo.quota);
        bind_int(st, 3, new_quota);
        bind_text(st, 4, digest);
        bind_text(st, 5, statement);
        sqlite3_bind_blob(st, 6, sig, (int)sig_len, SQLITE_TRANSIENT);
        bind_text(st, 7, at);
        r = st_done(s, st, "record quota authorisation");
        if (r == KILN_E_DB_CONSTRAINT)
                r = kiln_fail_append(r, "this authorisation was applied before");
        if (r < 0)
                goto out;
        /* checked after the replay check, so a replay is named as one */
        if (new_quota <= wo.quota) {
                r = kiln_fail(KILN_E_RANGE, "work order '%s' already has quota %u: an "
                                            "authorisation can only raise it",
                              work_order, wo.quota);
                goto out;
        }
        st = st_get(s, S_WO_SET_QUOTA);
        bind_text(st, 1, work_order);
        bind_int(st, 2, new_quota);
        r = st_done(s, st, "raise quota");
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_str(&w, "work_order", work_order);
        json_kv_int(&w, "old_quota", wo.quota);
        json_kv_int(&w, "new_quota", new_quota);
        json_kv_str(&w, "authorization_sha256", digest);
        json_obj_end(&w);
        if (r == KILN_OK)
                r = json_error(&w);
        if (r == KILN_OK)
                r = event_append(s, 0, "work_order.quota_raise", kiln_buf_cstr(&body));
        if (r == KILN_OK)
                r = tx_commit(s);
        if (r == KILN_OK)
                *ret_old = wo.quota;
out:
        tx_rollback(s);
        pthread_mutex_unlock(&s->lock);
        kiln_buf_free(&body);
        return r;
}

static const struct db_ops sqlite_ops = {
        .name = "sqlite",
        .close = sq_close,
        .work_order_ensure = sq_work_order_ensure,
        .work_order_get = sq_work_order_get,
        .recipe_store = sq_recipe_store,
        .station_event = sq_station_event,
        .unit_admit = sq_unit_admit,
        .unit_record_identity = sq_unit_record_identity,
        .unit_record_verified = sq_unit_record_verified,
        .fuse_list = sq_fuse_list,
        .unit_finish = sq_unit_finish,
        .unit_flush_steps = sq_unit_flush_steps,
        .units_in_progress = sq_units_in_progress,
        .unit_by_uid = sq_unit_by_uid,
        .unit_export = sq_unit_export,
        .unit_lookup = sq_unit_lookup,
        .recipe_get = sq_recipe_get,
        .label_print = sq_label_print,
        .recipe_release = sq_recipe_release,
        .work_order_raise = sq_work_order_raise,
        .unit_facts = sq_unit_facts,
        .shared_creds = sq_shared_creds,
        .unit_history = sq_unit_history,
        .events_each = sq_events_each,
        .event_head = sq_event_head,
        .checkpoint_add = sq_checkpoint_add,
        .checkpoints_each = sq_checkpoints_each,
        .audit_pubkey = sq_audit_pubkey,
        .unit_last_event = sq_unit_last_event,
        .export_each = sq_export_each,
        .export_records = sq_export_records,
};
