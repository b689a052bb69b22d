/*
 * bench_host: the station's own work per unit, with an instant simulated device.
 *
 *     bench_host --pki DIR --db FILE --recipe FILE [--units N] [--batch B] [--warmup W]
 *                [--log FILE]
 *
 * The real engine (engine_unit_run, one slot) provisions N units of the recipe, each on a fresh
 * in-process device ("loop:", bench_common.h): the real device agent on the real simulated chip, in
 * RAM, answering inside the host's write. Everything the station does is real and durable: the
 * SoftHSM development token of `kiln hsm init-dev --dir DIR` (random numbers, certificate
 * signature, HMAC commitment), certificate build and verification, proof-of-possession and
 * attestation checks, and every commit to a SQLite file (WAL, synchronous=FULL) at FILE, which is
 * created fresh. The time the device itself spends (its key generation, its signatures, the agent)
 * is measured inside the transport and taken out:
 *
 *     host_ms_per_unit = (wall time of the N units - time inside the device) / N
 *
 * The N units run in batches of B (default 50); each batch's figure is printed too
 * (host_batch_ms), so a caller can take the median and shrug off a burst of load from elsewhere
 * on a shared machine. W warm-up units (default 20) run first and are not counted. Also printed, to
 * explain the figure:
 * the durable commits per unit (audit events appended: one per transaction), the cost of one bare
 * durable commit on the same file system (a scratch database next to FILE, same pragmas), and the
 * mean time of each engine step over the counted units.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bench_common.h"
#include "kiln/db.h"
#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/recipe.h"
#include "kiln/report.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"

#define WORK_ORDER "BENCH-HOST"
#define LOT "BENCH-LOT"
#define QUOTA 10000000u
#define COMMIT_PROBES 200
#define PATH_CAP 4096

struct opts {
        const char *pki, *db, *recipe, *log;
        uint32_t units, warmup, batch;
};

static int parse_args(int argc, char **argv, struct opts *o)
{
        memset(o, 0, sizeof(*o));
        o->units = 500;
        o->warmup = 20;
        o->batch = 50;
        for (int i = 1; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int ok = v != NULL;

                if (ok && strcmp(argv[i], "--pki") == 0)
                        o->pki = v;
                else if (ok && strcmp(argv[i], "--db") == 0)
                        o->db = v;
                else if (ok && strcmp(argv[i], "--recipe") == 0)
                        o->recipe = v;
                else if (ok && strcmp(argv[i], "--log") == 0)
                        o->log = v;
                else if (ok && strcmp(argv[i], "--units") == 0)
                        ok = kiln_parse_u32(v, 1, 1000000, &o->units) == KILN_OK;
                else if (ok && strcmp(argv[i], "--batch") == 0)
                        ok = kiln_parse_u32(v, 1, 1000000, &o->batch) == KILN_OK;
                else if (ok && strcmp(argv[i], "--warmup") == 0)
                        ok = kiln_parse_u32(v, 0, 100000, &o->warmup) == KILN_OK;
                else
                        ok = 0;
                if (!ok)
                        return -1;
        }
        return o->pki != NULL && o->db != NULL && o->recipe != NULL ? 0 : -1;
}

static void remove_db(const char *path)
{
        char p[PATH_CAP];

        unlink(path);
        if (kiln_snprintf(p, sizeof(p), "%s-wal", path) == KILN_OK)
                unlink(p);
        if (kiln_snprintf(p, sizeof(p), "%s-shm", path) == KILN_OK)
                unlink(p);
}

/* One integer from a read-only query on the database file (a second connection, as a reader). */
static int64_t query_int(const char *path, const char *sql)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v = -1;

        if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                goto out;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                goto out;
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
out:
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

/* Mean duration of each engine step over the units with an id above after_id, as figures. */
static void print_steps(const char *path, int64_t after_id)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;

        if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                goto out;
        if (sqlite3_prepare_v2(h,
                               "SELECT step, avg(duration_us) FROM steps WHERE unit_id > ?1 "
                               "GROUP BY step ORDER BY min(id)",
                               -1, &st, NULL) != SQLITE_OK)
                goto out;
        sqlite3_bind_int64(st, 1, after_id);
        while (sqlite3_step(st) == SQLITE_ROW) {
                char name[64];
                const unsigned char *s = sqlite3_column_text(st, 0);

                if (kiln_strlcpy(name, s != NULL ? (const char *)s : "?", sizeof(name)) < 0)
                        continue;
                for (char *p = name; *p; p++)
                        if (*p == '.')
                                *p = '_';
                printf("host_step_%s_ms: %.3f\n", name, sqlite3_column_double(st, 1) / 1000.0);
        }
out:
        sqlite3_finalize(st);
        sqlite3_close(h);
}

/*
 * What one durable commit costs on this file system: a scratch database next to the station's,
 * WAL and synchronous=FULL like the station's, one small row per transaction. Milliseconds, -1 on
 * failure.
 */
static double commit_probe(const char *db_path)
{
        char path[PATH_CAP];
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        uint8_t row[512];
        uint64_t t0;
        double ms = -1;

        if (kiln_snprintf(path, sizeof(path), "%s.commit-probe", db_path) < 0)
                return -1;
        remove_db(path);
        memset(row, 0x5a, sizeof(row));
        if (sqlite3_open(path, &h) != SQLITE_OK ||
            sqlite3_exec(h, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
                         NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(h, "INSERT INTO t (v) VALUES (?1)", -1, &st, NULL) != SQLITE_OK)
                goto out;
        t0 = kiln_now_us();
        for (int i = 0; i < COMMIT_PROBES; i++) {
                if (sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                        goto out;
                sqlite3_bind_blob(st, 1, row, sizeof(row), SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        goto out;
                sqlite3_reset(st);
                if (sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                        goto out;
        }
        ms = (double)(kiln_now_us() - t0) / 1000.0 / COMMIT_PROBES;
out:
        sqlite3_finalize(st);
        sqlite3_close(h);
        remove_db(path);
        return ms;
}

static int run_units(struct engine *e, uint32_t n)
{
        for (uint32_t i = 0; i < n; i++) {
                struct unit_result res;
                int r = engine_unit_run(e, "1", 0, "loop:", &res);

                if (r < 0 || res.verdict != DB_VERDICT_PASS)
                        return kiln_fail(r < 0 ? r : KILN_E_MISMATCH,
                                         "unit %u: %s %s: %s", i + 1,
                                         db_verdict_name(res.verdict), failcode_name(res.code),
                                         res.reason);
        }
        return KILN_OK;
}

int main(int argc, char **argv)
{
        struct opts o;
        struct yaml_doc_diags diags;
        struct recipe *rc = NULL;
        struct db *db = NULL;
        struct hsm_token *token = NULL;
        struct report *rep = NULL;
        struct engine e;
        struct engine_setup es;
        struct db_work_order wo;
        struct hsm_dev d;
        struct hsm_config cfg;
        FILE *log = NULL;
        volatile sig_atomic_t stop = 0;
        int have_engine = 0, rc_exit = 1, r;
        int64_t ev0, ev1, last_warm;
        uint64_t t0, t1, dut0, dut1;
        double cpu0, cpu1, wall_ms, dut_ms, commit_ms;
        char load0[64], load1[64];

        memset(&e, 0, sizeof(e));
        yaml_doc_diags_init(&diags);
        if (parse_args(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: bench_host --pki DIR --db FILE --recipe FILE [--units N] "
                                "[--warmup W] [--log FILE]\n");
                return 2;
        }
        r = bench_loop_register();
        if (r < 0)
                goto out;
        r = recipe_load_file(o.recipe, 0, &diags, &rc);
        if (r < 0) {
                yaml_doc_diags_print(&diags, o.recipe, stderr);
                goto out;
        }
        r = hsm_dev_use(o.pki, NULL, &d);
        if (r < 0)
                goto out;
        cfg = d.cfg;
        cfg.pool_size = 1;
        r = hsm_token_open(&cfg, &token);
        if (r < 0)
                goto out;
        remove_db(o.db);
        r = db_open(o.db, &db);
        if (r == KILN_OK)
                r = db_recipe_store(db, rc->sha256_hex, rc->id, rc->version, rc->body,
                                    rc->body_len);
        if (r == KILN_OK)
                r = db_work_order_ensure(db, WORK_ORDER, LOT, rc->sha256_hex, QUOTA, &wo);
        if (r < 0)
                goto out;
        log = fopen(o.log != NULL ? o.log : "/dev/null", "w");
        if (log == NULL) {
                r = kiln_fail(KILN_E_IO, "cannot open the report log");
                goto out;
        }
        r = report_new(REPORT_LINES, log, 1, &rep);
        if (r < 0)
                goto out;
        memset(&es, 0, sizeof(es));
        es.recipe = rc;
        es.db = db;
        es.token = token;
        es.commitment_key_uri = HSM_DEV_COMMIT_URI;
        es.station_id = "bench-host";
        es.work_order = WORK_ORDER;
        es.operator_id = "bench";
        es.dev_mode = 1;
        es.report = rep;
        es.stop = &stop;
        r = engine_init(&es, &e);
        if (r < 0)
                goto out;
        have_engine = 1;

        r = run_units(&e, o.warmup);
        if (r < 0)
                goto out;
        last_warm = query_int(o.db, "SELECT coalesce(max(id), 0) FROM units");
        ev0 = query_int(o.db, "SELECT count(*) FROM events");
        bench_loadavg(load0, sizeof(load0));
        dut0 = bench_loop_device_us();
        cpu0 = bench_cpu_self_s();
        t0 = kiln_now_us();
        for (uint32_t done = 0; done < o.units;) {
                uint32_t n = o.units - done < o.batch ? o.units - done : o.batch;
                uint64_t b0 = kiln_now_us(), d0 = bench_loop_device_us();

                r = run_units(&e, n);
                if (r < 0)
                        goto out;
                printf("host_batch_ms: %.3f\n",
                       (double)((kiln_now_us() - b0) - (bench_loop_device_us() - d0)) / 1000.0 / n);
                done += n;
        }
        t1 = kiln_now_us();
        cpu1 = bench_cpu_self_s();
        dut1 = bench_loop_device_us();
        bench_loadavg(load1, sizeof(load1));
        ev1 = query_int(o.db, "SELECT count(*) FROM events");
        commit_ms = commit_probe(o.db);

        wall_ms = (double)(t1 - t0) / 1000.0;
        dut_ms = (double)(dut1 - dut0) / 1000.0;
        printf("host_units: %u\n", o.units);
        printf("host_ms_per_unit: %.3f\n", (wall_ms - dut_ms) / o.units);
        printf("host_wall_ms_per_unit: %.3f\n", wall_ms / o.units);
        printf("host_device_ms_per_unit: %.3f\n", dut_ms / o.units);
        printf("host_cpu_ms_per_unit: %.3f\n", (cpu1 - cpu0) * 1000.0 / o.units);
        printf("host_commits_per_unit: %.2f\n", (double)(ev1 - ev0) / o.units);
        printf("host_commit_ms: %.3f\n", commit_ms);
        print_steps(o.db, last_warm);
        printf("host_load_before: %s\n", load0);
        printf("host_load_after: %s\n", load1);
        rc_exit = 0;
out:
        if (rc_exit != 0)
                fprintf(stderr, "bench_host: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        if (have_engine)
                engine_fini(&e);
        report_free(rep);
        if (log != NULL)
                fclose(log);
        db_close(db);
        hsm_token_free(token);
        recipe_free(rc);
        yaml_doc_diags_free(&diags);
        return rc_exit;
}
