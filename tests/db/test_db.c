/* Traceability database: admission, allocations, quota, uniqueness, fuse journal, verdicts, export,
 * and the audit event chain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/util.h"

#define RECIPE "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11"

struct fx {
        char dir[64];
        char path[128];
        struct db *db;
};

static int render(void *ctx, uint64_t seq, char *out, size_t cap)
{
        (void)ctx;
        return kiln_snprintf(out, cap, "SN-%06llu", (unsigned long long)seq);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        struct db_work_order wo;

        snprintf(f->dir, sizeof(f->dir), "%s", "/tmp/kiln-db-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/kiln.db", f->dir);
        assert_int_equal(db_open(f->path, &f->db), KILN_OK);
        assert_int_equal(db_recipe_store(f->db, RECIPE, "plug", "1", (const uint8_t *)"x: 1\n", 5),
                         KILN_OK);
        assert_int_equal(db_work_order_ensure(f->db, "WO-1", "LOT-A", RECIPE, 3, &wo), KILN_OK);
        assert_int_equal(wo.quota, 3);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[128];

        db_close(f->db);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void admit_req(struct db_admit_request *q, const char *uid, unsigned macs)
{
        static const char *const snap[] = {"debug_disable=00", "secure_boot=00"};

        memset(q, 0, sizeof(*q));
        q->chip_uid = uid;
        q->work_order = "WO-1";
        q->station_id = "st1";
        q->slot = "1";
        q->operator_id = "op7";
        q->recipe_sha256 = RECIPE;
        q->product_id = "smartplug-a1";
        q->hw_revision = 2;
        q->fw_version = "1.0";
        q->fw_sha256 = "00";
        q->serial_counter = "serial:plug";
        q->serial_start = 100;
        q->render_serial = render;
        q->mac_counter = macs ? "mac:pool" : NULL;
        q->mac_first = 0x020000000000ull;
        q->mac_last = 0x020000000004ull;
        q->mac_count = macs;
        q->snapshot = snap;
        q->n_snapshot = 2;
}

static void finish(struct db *db, struct db_unit *u, enum db_verdict v, const char *code)
{
        struct db_finish fin = {.verdict = v, .fail_code = code, .fail_reason = code ? "x" : NULL,
                                .debug_closed = -1, .secure_boot = -1};

        assert_int_equal(db_unit_finish(db, u, &fin), KILN_OK);
}

static void test_admit_allocates(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a, b;
        enum db_admit_kind kind;
        struct db_work_order wo;

        admit_req(&q, "aa01", 2);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(kind, DB_ADMIT_NEW);
        assert_string_equal(a.serial, "SN-000100");
        assert_int_equal(a.n_macs, 2);
        assert_string_equal(a.macs[0], "02:00:00:00:00:00");
        assert_string_equal(a.macs[1], "02:00:00:00:00:01");
        assert_int_equal(a.attempt, 1);
        admit_req(&q, "aa02", 2);
        assert_int_equal(db_unit_admit(f->db, &q, &b, &kind), KILN_OK);
        assert_string_equal(b.serial, "SN-000101");
        assert_string_equal(b.macs[0], "02:00:00:00:00:02");
        assert_int_equal(db_work_order_get(f->db, "WO-1", &wo), KILN_OK);
        assert_int_equal(wo.reserved, 2);
        /* pool 00..04 has one address left: a unit needing two is refused, nothing is allocated */
        admit_req(&q, "aa03", 2);
        kiln_err_reset();
        assert_int_equal(db_unit_admit(f->db, &q, &b, &kind), KILN_E_POOL_EXHAUSTED);
        assert_int_equal(db_unit_by_uid(f->db, "aa03", &b), KILN_E_NOT_FOUND);
        assert_int_equal(db_work_order_get(f->db, "WO-1", &wo), KILN_OK);
        assert_int_equal(wo.reserved, 2); /* the reservation rolled back */
        /* the serial counter rolled back too: the next unit gets 102 */
        admit_req(&q, "aa03", 1);
        assert_int_equal(db_unit_admit(f->db, &q, &b, &kind), KILN_OK);
        assert_string_equal(b.serial, "SN-000102");
        assert_string_equal(b.macs[0], "02:00:00:00:00:04");
}

static void test_quota_and_retry(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a, u;
        enum db_admit_kind kind;
        struct db_work_order wo;

        for (int i = 0; i < 3; i++) {
                char uid[8];

                snprintf(uid, sizeof(uid), "b%d", i);
                admit_req(&q, uid, 0);
                assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        }
        admit_req(&q, "b9", 0);
        kiln_err_reset();
        assert_int_equal(db_unit_admit(f->db, &q, &u, &kind), KILN_E_QUOTA);
        assert_non_null(strstr(kiln_err_detail(), "no quota left"));
        /* b2 fails before the lock: quota returned, so b9 can now be admitted */
        assert_int_equal(db_unit_by_uid(f->db, "b2", &u), KILN_OK);
        finish(f->db, &u, DB_VERDICT_FAIL, "E-TEST");
        assert_int_equal(db_work_order_get(f->db, "WO-1", &wo), KILN_OK);
        assert_int_equal(wo.reserved, 2);
        admit_req(&q, "b9", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        /* b2 retried: refused for quota now; after b0 passes it is still full (3 = 2 + 1) */
        admit_req(&q, "b2", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_E_QUOTA);
        assert_int_equal(db_unit_by_uid(f->db, "b9", &u), KILN_OK);
        finish(f->db, &u, DB_VERDICT_FAIL, "E-TEST");
        /* a retry under another recipe is refused */
        admit_req(&q, "b2", 0);
        q.recipe_sha256 = "bb22";
        kiln_err_reset();
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_E_MISMATCH);
        assert_non_null(strstr(kiln_err_detail(), "was started with recipe"));
        /* b2 retry keeps its serial, gets attempt 2 */
        admit_req(&q, "b2", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(kind, DB_ADMIT_RETRY);
        assert_string_equal(a.serial, "SN-000102");
        assert_int_equal(a.attempt, 2);
        /* re-admitting an IN_PROGRESS unit before the lock is a retry without a new reservation */
        assert_int_equal(db_work_order_get(f->db, "WO-1", &wo), KILN_OK);
        assert_int_equal(wo.reserved, 3);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(kind, DB_ADMIT_RETRY);
        assert_int_equal(a.attempt, 3);
        assert_int_equal(db_work_order_get(f->db, "WO-1", &wo), KILN_OK);
        assert_int_equal(wo.reserved, 3);
}

static const uint8_t spki_a[] = {0x30, 0x01, 0xAA}, spki_b[] = {0x30, 0x01, 0xBB};
static const uint8_t der_a[] = {0x30, 0x03, 1, 2, 3};

static void test_identity_uniqueness(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a, b;
        enum db_admit_kind kind;
        struct db_key_rec k = {.name = "device", .slot = 0, .algorithm = "ecdsa-p256",
                               .pubkey = spki_a, .pubkey_len = sizeof(spki_a),
                               .fingerprint = "aa", .pop_ok = 1};
        struct db_cert_rec c = {.key_name = "device", .serial_hex = "01ab", .der = der_a,
                                .der_len = sizeof(der_a), .not_after = "9999-12-31T23:59:59Z",
                                .chain_pem = "CHAIN"};
        struct db_cred_rec cr = {.name = "pw", .kind = "password", .method = "hmac-sha256",
                                 .commitment = "c0ffee", .object = "admin_pw"};

        admit_req(&q, "c1", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        db_unit_step(&a, "identify", kiln_wall_ms(), 1200, 1, NULL, NULL);
        assert_int_equal(db_unit_record_identity(f->db, &a, &k, 1, &c, 1, &cr, 1), KILN_OK);
        assert_int_equal(a.n_pending, 0);
        admit_req(&q, "c2", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &b, &kind), KILN_OK);
        /* same public key on another unit: refused by the schema */
        kiln_err_reset();
        assert_int_equal(db_unit_record_identity(f->db, &b, &k, 1, NULL, 0, NULL, 0),
                         KILN_E_DB_CONSTRAINT);
        assert_non_null(strstr(kiln_err_detail(), "public key aa of key 'device' already belongs"));
        /* a new key but the same certificate serial: refused too */
        k.pubkey = spki_b;
        k.fingerprint = "bb";
        kiln_err_reset();
        assert_int_equal(db_unit_record_identity(f->db, &b, &k, 1, &c, 1, NULL, 0),
                         KILN_E_DB_CONSTRAINT);
        c.serial_hex = "01ac";
        assert_int_equal(db_unit_record_identity(f->db, &b, &k, 1, &c, 1, NULL, 0), KILN_OK);
}

static int count_rows(const char *path, const char *sql)
{
        sqlite3 *h;
        sqlite3_stmt *st;
        int n = -1;

        assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return n;
}

struct fuse_seen {
        unsigned n;
        unsigned done;
};

static int fuse_visit(void *ctx, const struct db_fuse_rec *r)
{
        struct fuse_seen *s = ctx;

        s->n++;
        if (r->state == DB_FUSE_DONE)
                s->done++;
        return KILN_OK;
}

static void test_lock_and_verdicts(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a, r;
        enum db_admit_kind kind;
        struct db_fuse_rec in[2] = {
                {.phase = "data", .field = "sb_key_hash", .value = "ab", .verify = "readback"},
                {.phase = "lockout", .field = "debug_disable", .value = "01",
                 .verify = "debug_closed"},
        };
        struct db_fuse_rec res;
        struct fuse_seen seen = {0};
        struct db_finish fin = {.verdict = DB_VERDICT_FAIL, .fail_code = "E-X", .debug_closed = -1,
                                .secure_boot = -1};
        struct kiln_buf out;

        admit_req(&q, "d1", 1);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(db_unit_record_verified(f->db, &a, NULL, 0, NULL, 0, in, 2), KILN_OK);
        assert_true(in[0].id > 0 && in[1].id > in[0].id);
        assert_true(a.lock_started);
        assert_int_equal(db_fuse_list(f->db, a.id, fuse_visit, &seen), KILN_OK);
        assert_int_equal(seen.n, 2);
        assert_int_equal(seen.done, 0);
        /* after the lock started a plain FAIL is refused */
        kiln_err_reset();
        assert_int_equal(db_unit_finish(f->db, &a, &fin), KILN_E_INVAL);
        /* the station "crashes" here; the same chip comes back: resume, not retry */
        assert_int_equal(db_unit_admit(f->db, &q, &r, &kind), KILN_OK);
        assert_int_equal(kind, DB_ADMIT_RESUME);
        assert_string_equal(r.serial, a.serial);
        assert_int_equal(r.attempt, a.attempt);
        /* the results go in with the verdict; a result for a row that is not the unit's is refused */
        res = in[0];
        res.state = DB_FUSE_DONE;
        res.readback = "ab";
        fin.verdict = DB_VERDICT_LOCK_FAILED;
        fin.fail_code = "E-FUSE-READBACK";
        fin.fuse_results = &res;
        fin.n_fuse_results = 1;
        res.id = in[1].id + 1000;
        kiln_err_reset();
        assert_int_equal(db_unit_finish(f->db, &r, &fin), KILN_E_NOT_FOUND);
        res.id = in[0].id;
        assert_int_equal(db_unit_finish(f->db, &r, &fin), KILN_OK);
        memset(&seen, 0, sizeof(seen));
        assert_int_equal(db_fuse_list(f->db, r.id, fuse_visit, &seen), KILN_OK);
        assert_int_equal(seen.n, 2);
        assert_int_equal(seen.done, 1);
        /* awaiting disposition: refused at admission */
        kiln_err_reset();
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_E_PERM);
        assert_non_null(strstr(kiln_err_detail(), "disposition"));
        /* export record: fuses carry the verified read-back */
        kiln_buf_init(&out, 1 << 20);
        assert_int_equal(db_unit_export_json(f->db, r.id, &out), KILN_OK);
        assert_non_null(strstr(kiln_buf_cstr(&out), "\"fuses\":{\"sb_key_hash\":\"ab\"}"));
        assert_non_null(strstr(kiln_buf_cstr(&out), "\"verdict\":\"LOCK_FAILED\""));
        assert_non_null(strstr(kiln_buf_cstr(&out), "\"mac\":\"02:00:00:00:00:00\""));
        kiln_buf_free(&out);
}

static void test_clone_alert(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a;
        enum db_admit_kind kind;

        admit_req(&q, "e1", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        finish(f->db, &a, DB_VERDICT_PASS, NULL);
        kiln_err_reset();
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_E_CLONE);
        assert_non_null(strstr(kiln_err_detail(), "clone"));
        assert_int_equal(count_rows(f->path, "SELECT count(*) FROM events WHERE kind = "
                                             "'unit.clone_alert'"),
                         1);
}

/* Recompute the chain the way `kiln audit verify` does; also check append-only triggers. */
static void test_event_chain(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a;
        enum db_admit_kind kind;
        sqlite3 *h;
        sqlite3_stmt *st;
        char prev[65];
        int n = 0;

        admit_req(&q, "f1", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        finish(f->db, &a, DB_VERDICT_PASS, NULL);
        memset(prev, '0', 64);
        prev[64] = 0;
        assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h, "SELECT seq, at, ifnull(unit_id, ''), kind, body, "
                                               "prev_hash, hash FROM events ORDER BY seq",
                                            -1, &st, NULL),
                         SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
                char buf[8192], hex[65];
                uint8_t md[32];
                int len = snprintf(buf, sizeof(buf), "%s|%lld|%s|%s|%s|%s", prev,
                                   (long long)sqlite3_column_int64(st, 0),
                                   sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
                                   sqlite3_column_text(st, 3), sqlite3_column_text(st, 4));

                assert_string_equal((const char *)sqlite3_column_text(st, 5), prev);
                SHA256((const uint8_t *)buf, (size_t)len, md);
                kiln_hex_encode(md, 32, hex, sizeof(hex));
                assert_string_equal((const char *)sqlite3_column_text(st, 6), hex);
                memcpy(prev, hex, 65);
                n++;
        }
        sqlite3_finalize(st);
        assert_int_equal(n, 3); /* work order, admit, finish */
        assert_int_not_equal(sqlite3_exec(h, "DELETE FROM events", NULL, NULL, NULL), SQLITE_OK);
        assert_int_not_equal(sqlite3_exec(h, "UPDATE events SET body = 'x'", NULL, NULL, NULL),
                             SQLITE_OK);
        assert_int_not_equal(sqlite3_exec(h, "DELETE FROM units", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(h);
}

static void test_reopen_and_schema(void **state)
{
        struct fx *f = *state;
        sqlite3 *h;

        db_close(f->db);
        assert_int_equal(db_open(f->path, &f->db), KILN_OK);
        db_close(f->db);
        f->db = NULL;
        assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
        assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(h);
        kiln_err_reset();
        assert_int_equal(db_open(f->path, &f->db), KILN_E_DB_SCHEMA);
        assert_non_null(strstr(kiln_err_detail(), "schema version 99"));
        {
                sqlite3_stmt *st;

                assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
                assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL),
                                 SQLITE_OK);
                assert_int_equal(sqlite3_step(st), SQLITE_ROW);
                assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
                sqlite3_finalize(st);
                sqlite3_close(h);
        }
}

static int visit(void *ctx, int64_t id)
{
        (void)id;
        (*(int64_t *)ctx)++;
        return KILN_OK;
}

static void test_export_filter(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a;
        enum db_admit_kind kind;
        struct db_export_filter flt = {.verdict = -1};
        int64_t n = 0;

        admit_req(&q, "g1", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        finish(f->db, &a, DB_VERDICT_PASS, NULL);
        admit_req(&q, "g2", 0);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(db_export_each(f->db, &flt, visit, &n), KILN_OK);
        assert_int_equal(n, 2);
        n = 0;
        flt.verdict = DB_VERDICT_PASS;
        assert_int_equal(db_export_each(f->db, &flt, visit, &n), KILN_OK);
        assert_int_equal(n, 1);
        n = 0;
        flt.verdict = -1;
        flt.work_order = "WO-NONE";
        assert_int_equal(db_export_each(f->db, &flt, visit, &n), KILN_OK);
        assert_int_equal(n, 0);
}

static void test_lookup_and_labels(void **state)
{
        struct fx *f = *state;
        struct db_admit_request q;
        struct db_unit a;
        enum db_admit_kind kind;
        struct db_key_rec k = {.name = "device", .slot = 0, .algorithm = "ecdsa-p256",
                               .pubkey = spki_a, .pubkey_len = sizeof(spki_a),
                               .fingerprint = "aa", .pop_ok = 1};
        struct db_cert_rec c = {.key_name = "device", .serial_hex = "7f01", .der = der_a,
                                .der_len = sizeof(der_a), .not_after = "x", .chain_pem = "C"};
        int64_t id = 0;
        unsigned count = 0;
        uint8_t *body = NULL;
        size_t len = 0;

        admit_req(&q, "abcdef", 1);
        assert_int_equal(db_unit_admit(f->db, &q, &a, &kind), KILN_OK);
        assert_int_equal(db_unit_record_identity(f->db, &a, &k, 1, &c, 1, NULL, 0), KILN_OK);
        const char *keys[] = {"SN-000100", "abcdef", "ABCDEF", "02:00:00:00:00:00",
                              "02-00-00-00-00-00", "020000000000", "7F01"};
        for (unsigned i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
                id = 0;
                assert_int_equal(db_unit_lookup(f->db, keys[i], &id), KILN_OK);
                assert_int_equal(id, a.id);
        }
        kiln_err_reset();
        assert_int_equal(db_unit_lookup(f->db, "nope", &id), KILN_E_NOT_FOUND);
        assert_non_null(strstr(kiln_err_detail(), "'nope'"));
        assert_int_equal(db_label_print(f->db, a.id, "zpl", "file:/tmp/x", &count), KILN_OK);
        assert_int_equal(count, 1);
        assert_int_equal(db_label_print(f->db, a.id, "png", "out.png", &count), KILN_OK);
        assert_int_equal(count, 2);
        assert_int_equal(count_rows(f->path, "SELECT count(*) FROM label_prints WHERE reprint = 1"),
                         1);
        assert_int_equal(db_label_print(f->db, 9999, "zpl", "x", &count), KILN_E_NOT_FOUND);
        assert_int_equal(db_recipe_get(f->db, RECIPE, &body, &len), KILN_OK);
        assert_int_equal(len, 5);
        assert_memory_equal(body, "x: 1\n", 5);
        kiln_free(body);
        assert_int_equal(db_recipe_get(f->db, "00", &body, &len), KILN_E_NOT_FOUND);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_admit_allocates, setup, teardown),
                cmocka_unit_test_setup_teardown(test_quota_and_retry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_identity_uniqueness, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lock_and_verdicts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_clone_alert, setup, teardown),
                cmocka_unit_test_setup_teardown(test_event_chain, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reopen_and_schema, setup, teardown),
                cmocka_unit_test_setup_teardown(test_export_filter, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lookup_and_labels, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
