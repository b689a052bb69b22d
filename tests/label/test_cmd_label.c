/*
 * `kiln label` end to end: units provisioned by the real `kiln demo` (smart plugs: one QR code, no
 * MAC; gateways: two MACs and a GS1 Digital Link code) are labelled by the real binary. Every PNG
 * is decoded with zbarimg and must carry exactly the recorded payloads; ZPL goes to files, a
 * directory, a device node and a TCP listener standing in for a printer; every print is recorded
 * and reprints are counted; refusals exit 1 or 2 with one line. A database with a failed unit and
 * a unit whose recipe has no label is built with the database API.
 */
#include <errno.h>
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

#include "kiln/db.h"
#include "kiln/export.h"
#include "kiln/label.h"
#include "kiln/recipe.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"
#include "e2e.h"
#include "label_test.h"

#define GTIN "09506000134352"
#define UNITS_MAX 4

struct unit {
        int64_t id;
        char serial[DB_SERIAL_MAX];
        char chip_uid[DB_HEX_UID_MAX];
        char macs[DB_MACS_MAX][DB_MAC_STR];
        unsigned n_macs;
        char label_qr[EXPORT_QR_MAX];
};

struct demo_db {
        char dir[4300];
        char db[4400];
        struct unit units[UNITS_MAX];
        unsigned n_units;
};

struct fx {
        char out[4300];         /* where this run's labels go */
        struct demo_db plug;    /* smartplug-ctm: 406 x 203 dots, no MAC */
        struct demo_db gateway; /* gateway-industrial: 609 x 300, two MACs, GS1 */
};

static char *out_buf, *err_buf;

/* ---------------------------------------------------------------- helpers */

static int collect(void *ctx, int64_t unit_id)
{
        struct demo_db *d = ctx;

        assert_true(d->n_units < UNITS_MAX);
        d->units[d->n_units++].id = unit_id;
        return KILN_OK;
}

/* The PASS units of a database, read with the database API. */
static void load_units(struct demo_db *d)
{
        struct db_export_filter flt = {.verdict = DB_VERDICT_PASS};
        struct db_export_rec rec;
        struct db *db = NULL;

        assert_int_equal(db_open(d->db, &db), KILN_OK);
        d->n_units = 0;
        assert_int_equal(db_export_each(db, &flt, collect, d), KILN_OK);
        export_rec_init(&rec);
        for (unsigned i = 0; i < d->n_units; i++) {
                struct unit *u = &d->units[i];

                export_rec_clear(&rec);
                assert_int_equal(db_unit_export(db, u->id, &rec), KILN_OK);
                assert_true(rec.has_label_qr);
                snprintf(u->serial, sizeof(u->serial), "%s", rec.serial);
                snprintf(u->chip_uid, sizeof(u->chip_uid), "%s", rec.chip_uid);
                snprintf(u->label_qr, sizeof(u->label_qr), "%s", rec.label_qr);
                u->n_macs = rec.n_macs;
                for (unsigned k = 0; k < rec.n_macs; k++)
                        snprintf(u->macs[k], sizeof(u->macs[k]), "%s", rec.macs[k]);
        }
        export_rec_free(&rec);
        db_close(db);
}

static void demo(struct demo_db *d, const char *name, const char *recipe, const char *units)
{
        char recipe_path[4300];
        const char *args[] = {"demo", "--units",  units,       "--dir",
                              d->dir, "--recipe", recipe_path, NULL};
        int st;

        lt_tmpdir(name, d->dir, sizeof(d->dir));
        snprintf(d->db, sizeof(d->db), "%s/kiln.db", d->dir);
        snprintf(recipe_path, sizeof(recipe_path), "%s/recipes/%s", lt_source_dir(), recipe);
        st = lt_kiln(args, out_buf, LT_OUT_MAX, err_buf, LT_OUT_MAX);
        if (st != 0)
                fail_msg("kiln demo failed (%d):\n%s\n%s", st, out_buf, err_buf);
        load_units(d);
        assert_int_equal(d->n_units, (unsigned)strtoul(units, NULL, 10));
        /* every certificate a test issues is checked against its chain */
        e2e_verify_db_certs(d->db, d->dir);
}

/* kiln label --db DB ARGS... ; stdout and stderr in out_buf / err_buf. */
static int label(const char *db, const char *const *args)
{
        const char *argv[32];
        unsigned n = 0;

        argv[n++] = "label";
        argv[n++] = "--db";
        argv[n++] = db;
        for (unsigned i = 0; args[i] != NULL; i++) {
                assert_true(n < 31);
                argv[n++] = args[i];
        }
        argv[n] = NULL;
        return lt_kiln(argv, out_buf, LT_OUT_MAX, err_buf, LT_OUT_MAX);
}

static void label_ok(const char *db, const char *const *args)
{
        int st = label(db, args);

        if (st != 0)
                fail_msg("kiln label exited %d: %s%s", st, out_buf, err_buf);
        assert_non_null(strstr(out_buf, "label printed"));
}

/* A refusal: the exit status and exactly one line on stderr, containing `why`. */
static void label_refused(const char *db, const char *const *args, int want, const char *why)
{
        int st = label(db, args);

        if (st != want)
                fail_msg("kiln label exited %d, want %d: %s%s", st, want, out_buf, err_buf);
        if (lt_count_lines(err_buf) != 1 || strncmp(err_buf, "kiln label: ", 12) != 0)
                fail_msg("want one 'kiln label: ' line on stderr, got:\n%s", err_buf);
        if (why != NULL && strstr(err_buf, why) == NULL)
                fail_msg("stderr lacks '%s': %s", why, err_buf);
}

static long sql_int(const char *db, const char *fmt, ...) KILN_PRINTF(2, 3);

static long sql_int(const char *db, const char *fmt, ...)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        char sql[1024];
        va_list ap;
        long v = -1;

        va_start(ap, fmt);
        vsnprintf(sql, sizeof(sql), fmt, ap);
        va_end(ap);
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("SQL error in '%s': %s", sql, sqlite3_errmsg(h));
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

static long prints_of(const char *db, const char *serial)
{
        return sql_int(db,
                       "SELECT count(*) FROM label_prints WHERE unit_id = "
                       "(SELECT id FROM units WHERE serial = '%s')",
                       serial);
}

static void assert_contains(const char *hay, const char *needle)
{
        if (strstr(hay, needle) == NULL)
                fail_msg("'%s' not found in:\n%s", needle, hay);
}

/* ---------------------------------------------------------------- fixture */

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        out_buf = malloc(LT_OUT_MAX);
        err_buf = malloc(LT_OUT_MAX);
        assert_non_null(out_buf);
        assert_non_null(err_buf);
        demo(&f->plug, "demo-plug", "smartplug-ctm.yaml", "2");
        demo(&f->gateway, "demo-gateway", "gateway-industrial.yaml", "2");
        lt_tmpdir("out", f->out, sizeof(f->out));
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        free(*state);
        free(out_buf);
        free(err_buf);
        return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_png_every_unit_decodes(void **state)
{
        struct fx *f = *state;
        struct demo_db *dbs[] = {&f->plug, &f->gateway};

        for (unsigned d = 0; d < 2; d++)
                for (unsigned i = 0; i < dbs[d]->n_units; i++) {
                        const struct unit *u = &dbs[d]->units[i];
                        char path[4500], gs1[256];
                        const char *args[] = {"--serial", u->serial, "--format", "png",
                                              "-o",       path,      NULL};
                        const char *want[2] = {u->label_qr, gs1};

                        snprintf(path, sizeof(path), "%s/%s.png", f->out, u->serial);
                        label_ok(dbs[d]->db, args);
                        if (d == 0) {
                                lt_assert_qr(path, want, 1);
                        } else {
                                /* the demo serials need no percent-encoding */
                                assert_int_equal(strspn(u->serial, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                   "0123456789-"),
                                                 strlen(u->serial));
                                snprintf(gs1, sizeof(gs1), "https://id.gs1.org/01/" GTIN "/21/%s",
                                         u->serial);
                                lt_assert_qr(path, want, 2);
                        }
                }
}

static void test_zpl_every_unit(void **state)
{
        struct fx *f = *state;
        struct demo_db *dbs[] = {&f->plug, &f->gateway};

        for (unsigned d = 0; d < 2; d++)
                for (unsigned i = 0; i < dbs[d]->n_units; i++) {
                        const struct unit *u = &dbs[d]->units[i];
                        char path[4500], want[1200], *z;
                        const char *args[] = {"--serial", u->serial, "--format", "zpl",
                                              "-o",       path,      NULL};
                        size_t n;

                        snprintf(path, sizeof(path), "%s/%s.zpl", f->out, u->serial);
                        label_ok(dbs[d]->db, args);
                        z = lt_read(path, &n);
                        assert_true(n > 8);
                        assert_memory_equal(z, "^XA\n", 4);
                        assert_string_equal(z + n - 4, "^XZ\n");
                        assert_contains(z, d == 0 ? "^PW406\n^LL203\n" : "^PW609\n^LL300\n");
                        assert_contains(z, "^BQN,2,");
                        snprintf(want, sizeof(want), ",M,7^FDMA,%s^FS\n", u->label_qr);
                        assert_contains(z, want);
                        snprintf(want, sizeof(want), "^FDS/N %s^FS", u->serial);
                        assert_contains(z, want);
                        for (unsigned k = 0; k < u->n_macs; k++) {
                                snprintf(want, sizeof(want), "^FDMAC %s^FS", u->macs[k]);
                                assert_contains(z, want);
                        }
                        if (d == 1) {
                                assert_int_equal(u->n_macs, 2);
                                snprintf(want, sizeof(want),
                                         "^FDMA,https://id.gs1.org/01/" GTIN "/21/%s^FS\n",
                                         u->serial);
                                assert_contains(z, want);
                        }
                        free(z);
                }
}

static void test_unit_keys_and_directory(void **state)
{
        struct fx *f = *state;
        const struct unit *u = &f->gateway.units[1];
        const char *want[2];
        char path[4500], gs1[256], dir[4300];
        const char *by_mac[] = {"--unit", u->macs[1], "--format", "png", "-o", dir, NULL};
        const char *by_uid[] = {"--unit", u->chip_uid, "-o", "/dev/null", NULL};

        /* --unit with a MAC address, into a directory: DIR/SERIAL.png */
        lt_tmpdir("out-dir", dir, sizeof(dir));
        label_ok(f->gateway.db, by_mac);
        snprintf(path, sizeof(path), "%s/%s.png", dir, u->serial);
        snprintf(gs1, sizeof(gs1), "https://id.gs1.org/01/" GTIN "/21/%s", u->serial);
        want[0] = u->label_qr;
        want[1] = gs1;
        lt_assert_qr(path, want, 2);
        /* --unit with the chip UID, to a device node (ZPL is the default format) */
        label_ok(f->gateway.db, by_uid);
        assert_int_equal(sql_int(f->gateway.db,
                                 "SELECT count(*) FROM label_prints WHERE unit_id = %lld AND "
                                 "target = '/dev/null' AND format = 'zpl'",
                                 (long long)u->id),
                         1);
}

static void test_reprint_counted(void **state)
{
        struct fx *f = *state;
        struct demo_db d;
        char path[4500], line[4800];
        const char *args[] = {"--serial", NULL, "-o", path, NULL};
        const char *args_png[] = {"--serial", NULL, "--format", "png", "-o", path, NULL};

        (void)f;
        /* kiln demo prints each PASS unit's label once (a PNG into DIR/labels): any print
         * after that is a reprint, counted */
        memset(&d, 0, sizeof(d));
        demo(&d, "demo-once", "smartplug-ctm.yaml", "1");
        args[1] = d.units[0].serial;
        args_png[1] = d.units[0].serial;
        assert_int_equal(prints_of(d.db, d.units[0].serial), 1);
        assert_int_equal(sql_int(d.db,
                                 "SELECT count(*) FROM label_prints WHERE unit_id = %lld AND "
                                 "reprint = 0 AND format = 'png' AND target = 'file:labels'",
                                 (long long)d.units[0].id),
                         1);
        snprintf(path, sizeof(path), "%s/first.zpl", d.dir);
        label_ok(d.db, args);
        snprintf(line, sizeof(line), "kiln label: %s -> %s: label printed (reprint #2)\n",
                 d.units[0].serial, path);
        assert_string_equal(out_buf, line);
        assert_int_equal(prints_of(d.db, d.units[0].serial), 2);

        snprintf(path, sizeof(path), "%s/second.png", d.dir);
        label_ok(d.db, args_png);
        snprintf(line, sizeof(line), "kiln label: %s -> %s: label printed (reprint #3)\n",
                 d.units[0].serial, path);
        assert_string_equal(out_buf, line);
        assert_int_equal(prints_of(d.db, d.units[0].serial), 3);
        assert_int_equal(
            sql_int(d.db, "SELECT label_prints FROM units WHERE serial = '%s'", d.units[0].serial),
            3);
        /* what each print was, in order */
        assert_int_equal(sql_int(d.db,
                                 "SELECT count(*) FROM label_prints WHERE unit_id = %lld AND "
                                 "format = 'png' AND target = '%s'",
                                 (long long)d.units[0].id, path),
                         1);
}

static void test_print_to_tcp_printer(void **state)
{
        struct fx *f = *state;
        const struct unit *u = &f->plug.units[0];
        struct lt_listener l;
        struct kiln_buf want;
        struct db *db = NULL;
        char spec[64];
        const char *args[] = {"--serial", u->serial, "--format", "zpl", "-o", spec, NULL};
        long before = prints_of(f->plug.db, u->serial);

        lt_listener_start(&l);
        snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", l.port);
        label_ok(f->plug.db, args);
        lt_listener_join(&l);
        assert_true(l.ok);
        /* exactly the bytes the library renders for the unit */
        kiln_buf_init(&want, LABEL_ZPL_MAX);
        assert_int_equal(db_open(f->plug.db, &db), KILN_OK);
        assert_int_equal(label_render_unit(db, u->id, STATION_LABEL_ZPL, 0, &want), KILN_OK);
        db_close(db);
        assert_int_equal(l.len, want.len);
        assert_memory_equal(l.data, want.data, want.len);
        assert_memory_equal(l.data, "^XA", 3);
        kiln_buf_free(&want);
        lt_listener_free(&l);
        assert_int_equal(prints_of(f->plug.db, u->serial), before + 1);
        assert_int_equal(sql_int(f->plug.db,
                                 "SELECT count(*) FROM label_prints WHERE unit_id = %lld AND "
                                 "target = '%s'",
                                 (long long)u->id, spec),
                         1);
}

static void test_refusals(void **state)
{
        struct fx *f = *state;
        const struct unit *u = &f->gateway.units[0];
        char path[4500], spec[64], missing_db[4500];
        long before = prints_of(f->gateway.db, u->serial);

        snprintf(path, sizeof(path), "%s/refused.zpl", f->out);
        {
                const char *a[] = {"--serial", "NO-SUCH-SERIAL", "-o", path, NULL};
                label_refused(f->gateway.db, a, 2, "no unit has serial 'NO-SUCH-SERIAL'");
        }
        {
                /* --serial names a unit by its serial only */
                const char *a[] = {"--serial", u->macs[0], "-o", path, NULL};
                label_refused(f->gateway.db, a, 2, "no unit has serial");
        }
        {
                const char *a[] = {"--unit", "ffffffffffffffff", "-o", path, NULL};
                label_refused(f->gateway.db, a, 2, "no unit has");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", "tcp:127.0.0.1", NULL};
                label_refused(f->gateway.db, a, 2, "tcp:HOST:PORT");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", "tcp:127.0.0.1:0", NULL};
                label_refused(f->gateway.db, a, 2, "port");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", "/nonexistent-kiln-dir/x.zpl",
                                   NULL};
                label_refused(f->gateway.db, a, 2, "does not exist");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", "/dev/kiln-no-such-printer", NULL};
                label_refused(f->gateway.db, a, 2, "printer device");
        }
        {
                const char *a[] = {"--serial", u->serial, "--format", "pdf", "-o", path, NULL};
                label_refused(f->gateway.db, a, 2, "unknown format");
        }
        {
                const char *a[] = {"--serial", u->serial, NULL};
                label_refused(f->gateway.db, a, 2, "are needed");
        }
        {
                const char *a[] = {"--serial", u->serial, "--unit", u->chip_uid, "-o", path, NULL};
                label_refused(f->gateway.db, a, 2, "one of --serial or --unit");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", path, "--colour", NULL};
                label_refused(f->gateway.db, a, 2, "unknown option '--colour'");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", NULL};
                label_refused(f->gateway.db, a, 2, "needs a value");
        }
        {
                const char *a[] = {"--serial", u->serial, "-o", path, NULL};

                snprintf(missing_db, sizeof(missing_db), "%s/missing.db", f->out);
                label_refused(missing_db, a, 2, "cannot use database");
                assert_int_equal(access(missing_db, F_OK), -1); /* not created */
        }
        {
                /* a printer that does not answer: the operation fails (1), nothing recorded */
                const char *a[] = {"--serial", u->serial, "-o", spec, NULL};

                snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", lt_closed_port());
                label_refused(f->gateway.db, a, 1, "cannot connect");
        }
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(prints_of(f->gateway.db, u->serial), before);
}

/* ---------------------------------------------------------------- units not PASS, no label */

static int render_serial(void *ctx, uint64_t seq, char *out, size_t cap)
{
        return kiln_snprintf(out, cap, "%s-%06llu", (const char *)ctx, (unsigned long long)seq);
}

/* Admit one unit of the recipe held in body (stored in db first) and finish it. */
static void craft_unit(struct db *db, const char *body, size_t len, const char *uid,
                       const char *prefix, enum db_verdict v, const char *label_qr)
{
        static const char *const snap[] = {"debug_disable=00"};
        struct yaml_doc_diags diags;
        struct recipe *r = NULL;
        struct db_work_order wo;
        struct db_admit_request q;
        struct db_unit u;
        struct db_finish fin;
        enum db_admit_kind kind;
        char wo_id[64];

        yaml_doc_diags_init(&diags);
        assert_int_equal(recipe_load_mem("crafted", NULL, (const uint8_t *)body, len,
                                         RECIPE_LOAD_NO_FILES, &diags, &r),
                         KILN_OK);
        yaml_doc_diags_free(&diags);
        assert_int_equal(
            db_recipe_store(db, r->sha256_hex, r->id, r->version, r->body, r->body_len), KILN_OK);
        snprintf(wo_id, sizeof(wo_id), "WO-%s", prefix);
        assert_int_equal(db_work_order_ensure(db, wo_id, "LOT-1", r->sha256_hex, 10, &wo), KILN_OK);
        memset(&q, 0, sizeof(q));
        q.chip_uid = uid;
        q.work_order = wo_id;
        q.station_id = "st-label";
        q.slot = "1";
        q.operator_id = "op";
        q.recipe_sha256 = r->sha256_hex;
        q.product_id = r->product.id;
        q.hw_revision = 2;
        q.fw_version = "1.0.0";
        q.fw_sha256 = "00";
        q.serial_counter = prefix;
        q.serial_start = 1;
        q.render_serial = render_serial;
        q.render_ctx = (void *)(uintptr_t)prefix;
        q.snapshot = snap;
        q.n_snapshot = 1;
        assert_int_equal(db_unit_admit(db, &q, &u, &kind), KILN_OK);
        memset(&fin, 0, sizeof(fin));
        fin.verdict = v;
        fin.fail_code = v == DB_VERDICT_PASS ? NULL : "E-KEYGEN";
        fin.fail_reason = v == DB_VERDICT_PASS ? NULL : "crafted failure";
        fin.debug_closed = -1;
        fin.secure_boot = -1;
        fin.label_qr = label_qr;
        assert_int_equal(db_unit_finish(db, &u, &fin), KILN_OK);
        recipe_free(r);
}

static void test_unit_not_pass_and_recipe_without_label(void **state)
{
        struct fx *f = *state;
        char dir[4300], dbp[4400], rpath[4300], path[4500], *text, *z, *cut;
        const char *want[] = {"https://registry.ctm.example/product/smartplug-a1?sn="
                              "FAILED-000001"};
        struct db *db = NULL;
        size_t len;

        (void)f;
        lt_tmpdir("crafted", dir, sizeof(dir));
        snprintf(dbp, sizeof(dbp), "%s/kiln.db", dir);
        snprintf(rpath, sizeof(rpath), "%s/recipes/smartplug-ctm.yaml", lt_source_dir());
        text = lt_read(rpath, &len);
        assert_int_equal(db_open(dbp, &db), KILN_OK);
        craft_unit(db, text, len, "f00d01", "FAILED", DB_VERDICT_FAIL, NULL);
        cut = strstr(text, "\nlabel:");
        assert_non_null(cut);
        craft_unit(db, text, (size_t)(cut - text) + 1, "f00d02", "NOLABEL", DB_VERDICT_PASS,
                   "https://registry.ctm.example/x");
        db_close(db);
        free(text);

        snprintf(path, sizeof(path), "%s/failed.zpl", dir);
        {
                const char *a[] = {"--serial", "FAILED-000001", "-o", path, NULL};
                label_refused(dbp, a, 1, "is FAIL, not PASS");
                assert_int_equal(access(path, F_OK), -1);
        }
        {
                /* --force: printed, marked, with a warning */
                const char *a[] = {"--serial", "FAILED-000001", "-o", path, "--force", NULL};

                label_ok(dbp, a);
                assert_non_null(strstr(err_buf, "warning"));
                z = lt_read(path, NULL);
                assert_contains(z, "^FDNOT PASS - FAIL^FS");
                free(z);
        }
        {
                /* no payload was recorded for the failed unit: the recipe's template gives it */
                const char *a[] = {"--unit", "f00d01", "--format", "png",
                                   "-o",     path,     "--force",  NULL};

                snprintf(path, sizeof(path), "%s/failed.png", dir);
                label_ok(dbp, a);
                lt_assert_qr(path, want, 1);
        }
        {
                const char *a[] = {"--serial", "NOLABEL-000001", "-o", path, "--force", NULL};

                snprintf(path, sizeof(path), "%s/nolabel.zpl", dir);
                label_refused(dbp, a, 1, "has no label section");
                assert_int_equal(access(path, F_OK), -1);
        }
        assert_int_equal(prints_of(dbp, "FAILED-000001"), 2);
        assert_int_equal(prints_of(dbp, "NOLABEL-000001"), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_png_every_unit_decodes),
            cmocka_unit_test(test_zpl_every_unit),
            cmocka_unit_test(test_unit_keys_and_directory),
            cmocka_unit_test(test_reprint_counted),
            cmocka_unit_test(test_print_to_tcp_printer),
            cmocka_unit_test(test_refusals),
            cmocka_unit_test(test_unit_not_pass_and_recipe_without_label),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
