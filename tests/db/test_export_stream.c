/*
 * The export stream (db_export_records) and schema migration 3 (issuer chains stored once).
 *
 * tests/db/data/schema-v2.sql is a database written by kiln before migration 3, and
 * schema-v2.jsonl / schema-v2.csv are what that kiln's `kiln export` printed for it (see the
 * head of the .sql file). Opening it migrates it; the export afterwards must be the same bytes, and
 * the audit chain (whose record digests that kiln computed) must still verify.
 *
 * The stream reads each table side by side in unit order instead of looking every unit up; it is
 * checked against the per-unit path (db_export_each + db_unit_export + export_render_*) under
 * filters that skip long runs of units, so its cursors both step and seek.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kiln/audit.h"
#include "kiln/buf.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/export.h"
#include "kiln/util.h"

#define OUT_MAX (64u << 20)

struct fx {
        char dir[64];
        char path[128];
};

static char *read_all(const char *path, size_t *len)
{
        FILE *f = fopen(path, "rb");
        char *p;
        long n;

        if (f == NULL)
                fail_msg("cannot open %s", path);
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        p = malloc((size_t)n + 1);
        assert_non_null(p);
        assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
        p[n] = '\0';
        fclose(f);
        if (len != NULL)
                *len = (size_t)n;
        return p;
}

static void data_path(const char *name, char *out, size_t cap)
{
        const char *src = getenv("KILN_SOURCE_DIR");

        snprintf(out, cap, "%s/tests/db/data/%s", src != NULL ? src : ".", name);
}

/* A schema-v2 database from its SQL dump. */
static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        char sql_path[1024];
        char *sql;
        sqlite3 *h;

        snprintf(f->dir, sizeof(f->dir), "%s", "/tmp/kiln-exp-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/kiln.db", f->dir);
        data_path("schema-v2.sql", sql_path, sizeof(sql_path));
        sql = read_all(sql_path, NULL);
        assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
        if (sqlite3_exec(h, sql, NULL, NULL, NULL) != SQLITE_OK)
                fail_msg("load schema-v2.sql: %s", sqlite3_errmsg(h));
        sqlite3_close(h);
        free(sql);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[128];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static long sql_long(const char *path, const char *sql)
{
        sqlite3 *h;
        sqlite3_stmt *st;
        long v = -1;

        assert_int_equal(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("%s: %s", sql, sqlite3_errmsg(h));
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

/* ---- the two export paths, each into one buffer ---- */

struct stream_out {
        struct export_renderer r;
        struct kiln_buf out;
        int csv;
        unsigned n;
};

static int stream_visit(void *ctx, const struct db_export_rec *rec)
{
        struct stream_out *s = ctx;
        int r = s->csv ? export_renderer_csv(&s->r, rec, &s->out)
                       : export_renderer_json(&s->r, rec, &s->out);

        if (r == KILN_OK && !s->csv)
                r = kiln_buf_put_u8(&s->out, '\n');
        s->n++;
        return r;
}

static void export_stream(struct db *db, const struct db_export_filter *flt, int csv,
                          struct kiln_buf *out, unsigned *n)
{
        struct stream_out s = {.csv = csv};

        export_renderer_init(&s.r);
        kiln_buf_init(&s.out, OUT_MAX);
        if (csv)
                assert_int_equal(export_render_csv_header(&s.out), KILN_OK);
        assert_int_equal(db_export_records(db, flt, stream_visit, &s), KILN_OK);
        export_renderer_free(&s.r);
        assert_false(kiln_buf_error(&s.out));
        *out = s.out;
        *n = s.n;
}

struct unit_out {
        struct db *db;
        struct db_export_rec rec;
        struct kiln_buf out;
        int csv;
        unsigned n;
};

static int unit_visit(void *ctx, int64_t unit_id)
{
        struct unit_out *u = ctx;
        int r = db_unit_export(u->db, unit_id, &u->rec);

        if (r == KILN_OK)
                r = u->csv ? export_render_csv(&u->rec, &u->out)
                           : export_render_json(&u->rec, &u->out);
        if (r == KILN_OK && !u->csv)
                r = kiln_buf_put_u8(&u->out, '\n');
        u->n++;
        return r;
}

static void export_per_unit(struct db *db, const struct db_export_filter *flt, int csv,
                            struct kiln_buf *out, unsigned *n)
{
        struct unit_out *u = calloc(1, sizeof(*u));

        assert_non_null(u);
        u->db = db;
        u->csv = csv;
        export_rec_init(&u->rec);
        kiln_buf_init(&u->out, OUT_MAX);
        if (csv)
                assert_int_equal(export_render_csv_header(&u->out), KILN_OK);
        assert_int_equal(db_export_each(db, flt, unit_visit, u), KILN_OK);
        export_rec_free(&u->rec);
        assert_false(kiln_buf_error(&u->out));
        *out = u->out;
        *n = u->n;
        free(u);
}

static void assert_same_bytes(const struct kiln_buf *got, const char *want, size_t want_len,
                              const char *what)
{
        /* memcmp with an empty buffer's NULL data is undefined, even for 0 bytes */
        if (got->len != want_len ||
            (want_len > 0 && memcmp(got->data, want, want_len) != 0)) {
                size_t i = 0;

                while (i < got->len && i < want_len && got->data[i] == (uint8_t)want[i])
                        i++;
                fail_msg("%s: %zu bytes, want %zu; first difference at byte %zu", what, got->len,
                         want_len, i);
        }
}

/* ---- tests ---- */

/* Opening a schema-v2 database migrates it; its export and its audit chain are unchanged. */
static void test_migration_keeps_export(void **state)
{
        struct fx *f = *state;
        struct db_export_filter all = {.verdict = -1};
        struct audit_report rep;
        char path[1024];
        struct kiln_buf got;
        struct db *db;
        unsigned n;
        size_t len;
        char *want;

        assert_int_equal(sql_long(f->path, "PRAGMA user_version"), 2);
        assert_int_equal(db_open(f->path, &db), KILN_OK);
        assert_int_equal(sql_long(f->path, "PRAGMA user_version"), 3);
        /* 9 certificate rows, 3 distinct chains, each stored once */
        assert_int_equal(sql_long(f->path, "SELECT count(*) FROM certificates"), 9);
        assert_int_equal(sql_long(f->path, "SELECT count(*) FROM chains"), 3);
        assert_int_equal(sql_long(f->path, "SELECT count(*) FROM pragma_table_info('certificates') "
                                           "WHERE name = 'chain_pem'"),
                         0);
        assert_int_equal(sql_long(f->path, "SELECT count(*) FROM certificates c LEFT JOIN chains "
                                           "ch ON ch.id = c.chain_id WHERE ch.id IS NULL"),
                         0);

        for (int csv = 0; csv <= 1; csv++) {
                data_path(csv ? "schema-v2.csv" : "schema-v2.jsonl", path, sizeof(path));
                want = read_all(path, &len);
                export_stream(db, &all, csv, &got, &n);
                assert_int_equal(n, 8);
                assert_same_bytes(&got, want, len, csv ? "stream CSV" : "stream JSON Lines");
                kiln_buf_free(&got);
                export_per_unit(db, &all, csv, &got, &n);
                assert_int_equal(n, 8);
                assert_same_bytes(&got, want, len, csv ? "per-unit CSV" : "per-unit JSON Lines");
                kiln_buf_free(&got);
                free(want);
        }

        memset(&rep, 0, sizeof(rep));
        assert_int_equal(audit_verify(db, NULL, &rep), KILN_OK);
        if (!rep.ok)
                fail_msg("audit after migration: %s", rep.problem);
        db_close(db);
        /* a second open finds nothing to migrate */
        assert_int_equal(db_open(f->path, &db), KILN_OK);
        assert_int_equal(sql_long(f->path, "SELECT count(*) FROM chains"), 3);
        db_close(db);
}

/*
 * 40 copies of the 8 units with every side row (MACs, keys, certificates, the fuse journal), unique
 * values suffixed with the copy number. Copies 1-20 belong to WO-B / LOT-2, so a WO-A filter skips
 * 160 units in a row; copies 21-40 keep their unit's work order.
 */
static const char copy_sql[] =
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40) "
        "INSERT INTO units (id, chip_uid, serial, serial_seq, work_order, lot, station_id, slot, "
        "  operator, recipe_sha256, product_id, hw_revision, fw_version, fw_sha256, verdict, "
        "  fail_code, fail_reason, quota_state, lock_started, attempts, debug_closed, secure_boot, "
        "  lifecycle, label_qr, label_prints, dev_mode, started_at, finished_at) "
        "SELECT id + 8 * k, chip_uid || printf('%02x', k), serial || '-' || k, "
        "  serial_seq + 1000 * k, CASE WHEN k <= 20 THEN 'WO-B' ELSE work_order END, "
        "  CASE WHEN k <= 20 THEN 'LOT-2' ELSE lot END, station_id, slot, operator, "
        "  recipe_sha256, product_id, hw_revision, fw_version, fw_sha256, verdict, fail_code, "
        "  fail_reason, quota_state, lock_started, attempts, debug_closed, secure_boot, lifecycle, "
        "  label_qr, label_prints, dev_mode, started_at, finished_at "
        "FROM units, n WHERE id <= 8 ORDER BY k, id;"
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40) "
        "INSERT INTO macs (mac, unit_id, idx) SELECT mac || '-' || k, unit_id + 8 * k, idx "
        "FROM macs, n WHERE unit_id <= 8;"
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40) "
        "INSERT INTO keys (id, unit_id, attempt, name, slot, algorithm, pubkey_sha256, pubkey, "
        "  pop_ok, current) "
        "SELECT id + 1000 * k, unit_id + 8 * k, attempt, name, slot, algorithm, "
        "  pubkey_sha256 || '-' || k, pubkey, pop_ok, current FROM keys, n WHERE unit_id <= 8;"
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40) "
        "INSERT INTO certificates (id, unit_id, attempt, key_name, cert_serial, der, sha256, "
        "  not_after, chain_id, current) "
        "SELECT id + 1000 * k, unit_id + 8 * k, attempt, key_name, cert_serial || '-' || k, der, "
        "  sha256, not_after, chain_id, current FROM certificates, n WHERE unit_id <= 8;"
        "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 40) "
        "INSERT INTO fuse_journal (id, unit_id, phase, field, value, verify, state, readback, "
        "  attrs, intent_at, result_at) "
        "SELECT id + 1000 * k, unit_id + 8 * k, phase, field, value, verify, state, readback, "
        "  attrs, intent_at, result_at FROM fuse_journal, n WHERE unit_id <= 8;";

static void test_stream_equals_per_unit(void **state)
{
        struct fx *f = *state;
        struct db *db;
        sqlite3 *h;
        struct {
                struct db_export_filter flt;
                unsigned want;
        } cases[] = {
                {{.verdict = -1}, 328},
                {{.work_order = "WO-A", .verdict = -1}, 84},  /* skips copies 1-20 */
                {{.work_order = "WO-B", .verdict = -1}, 244}, /* runs of WO-B in between */
                {{.lot = "LOT-1", .verdict = DB_VERDICT_PASS}, 63},
                {{.verdict = DB_VERDICT_FAIL}, 41},
                {{.verdict = DB_VERDICT_SCRAP, .work_order = "WO-B"}, 41},
                {{.work_order = "WO-none", .verdict = -1}, 0},
                /* the units' start times are distinct within one copy: a window of a few */
                {{.since = "2026-11-25T01:32:27.195Z", .until = "2026-11-25T01:32:27.209Z",
                  .verdict = -1},
                 123},
        };

        assert_int_equal(db_open(f->path, &db), KILN_OK); /* migrates */
        db_close(db);
        assert_int_equal(sqlite3_open(f->path, &h), SQLITE_OK);
        if (sqlite3_exec(h, copy_sql, NULL, NULL, NULL) != SQLITE_OK)
                fail_msg("copy units: %s", sqlite3_errmsg(h));
        sqlite3_close(h);
        assert_int_equal(db_open(f->path, &db), KILN_OK);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                for (int csv = 0; csv <= 1; csv++) {
                        struct kiln_buf a, b;
                        unsigned na, nb;
                        char what[64];

                        export_stream(db, &cases[i].flt, csv, &a, &na);
                        export_per_unit(db, &cases[i].flt, csv, &b, &nb);
                        snprintf(what, sizeof(what), "case %zu %s", i, csv ? "CSV" : "JSONL");
                        if (na != cases[i].want || nb != cases[i].want)
                                fail_msg("%s: stream %u records, per unit %u, want %u", what, na,
                                         nb, cases[i].want);
                        assert_same_bytes(&a, (const char *)b.data, b.len, what);
                        kiln_buf_free(&a);
                        kiln_buf_free(&b);
                }
        }
        db_close(db);
}

/* A record that stops the stream stops it, and its error comes back. */
static int stop_at_third(void *ctx, const struct db_export_rec *rec)
{
        unsigned *n = ctx;

        (void)rec;
        return ++*n == 3 ? kiln_fail(KILN_E_IO, "reader went away") : KILN_OK;
}

static void test_stream_stops_on_error(void **state)
{
        struct fx *f = *state;
        struct db_export_filter all = {.verdict = -1};
        struct db *db;
        unsigned n = 0;

        assert_int_equal(db_open(f->path, &db), KILN_OK);
        assert_int_equal(db_export_records(db, &all, stop_at_third, &n), KILN_E_IO);
        assert_int_equal(n, 3);
        db_close(db);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_migration_keeps_export, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream_equals_per_unit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream_stops_on_error, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
