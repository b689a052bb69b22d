/*
 * bench_slots: units per hour of the real station with S slots over real kiln-dut-sim processes on
 * pseudo-terminals, with the simulator's line model.
 *
 *     bench_slots --pki DIR --dir WORK --recipe FILE --sim PATH --slots S --units N
 *                 [--baud B] [--keygen-ms MS] [--fuse-ms MS] [--flash-ms-per-kib MS]
 *
 * What runs is what `kiln demo` runs (station_run with a simulator fixture: one thread and one
 * unit state machine per slot, the engine, the SoftHSM development token, a SQLite file with WAL
 * and synchronous=FULL), with two differences that make it a measure of the station and the line:
 * the devices are on pseudo-terminals (as a USB-serial adapter is), not sockets, and the N
 * simulators (each a factory-fresh chip with its own state file) are started before the clock
 * starts, so the fixture hands a slot its next device at once, the way an operator with a tray of
 * units does. A finished device stays idle on its pty (as a unit waiting to be taken out of its
 * slot) until the clock stops; then all are stopped and reaped. The database is a fresh file per
 * run (WORK/slots-S.db).
 *
 * Prints units_per_hour (N units / wall time of station_run), the mean time of one unit, and the
 * CPU time the station and the simulators used during the run, as a share of the machine's cores,
 * to tell a line-bound run from a CPU-bound one.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln/db.h"
#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/recipe.h"
#include "kiln/report.h"
#include "kiln/run.h"
#include "kiln/simfix.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"

#define WORK_ORDER "BENCH-SLOTS"
#define LOT "BENCH-LOT"
#define QUOTA 10000000u
#define UNITS_MAX 4096u
#define SIM_START_MS 10000u
#define PATH_CAP 4096

struct opts {
        const char *pki, *dir, *recipe, *sim;
        uint32_t slots, units, baud, keygen_ms, fuse_ms, flash_ms;
};

struct fixture {
        pthread_mutex_t lock;
        struct simfix_dev *devs;
        unsigned n, next;
        double unit_seconds;
        unsigned pass, other;
};

static int parse_args(int argc, char **argv, struct opts *o)
{
        memset(o, 0, sizeof(*o));
        o->slots = 1;
        o->units = 8;
        o->baud = 115200;
        o->keygen_ms = 200;
        o->fuse_ms = 20;
        for (int i = 1; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int ok = v != NULL;

                if (ok && strcmp(argv[i], "--pki") == 0)
                        o->pki = v;
                else if (ok && strcmp(argv[i], "--dir") == 0)
                        o->dir = v;
                else if (ok && strcmp(argv[i], "--recipe") == 0)
                        o->recipe = v;
                else if (ok && strcmp(argv[i], "--sim") == 0)
                        o->sim = v;
                else if (ok && strcmp(argv[i], "--slots") == 0)
                        ok = kiln_parse_u32(v, 1, KILN_SLOTS_MAX, &o->slots) == KILN_OK;
                else if (ok && strcmp(argv[i], "--units") == 0)
                        ok = kiln_parse_u32(v, 1, UNITS_MAX, &o->units) == KILN_OK;
                else if (ok && strcmp(argv[i], "--baud") == 0)
                        ok = kiln_parse_u32(v, 0, 4000000, &o->baud) == KILN_OK &&
                             (o->baud == 0 || o->baud >= 50);
                else if (ok && strcmp(argv[i], "--keygen-ms") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &o->keygen_ms) == KILN_OK;
                else if (ok && strcmp(argv[i], "--fuse-ms") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &o->fuse_ms) == KILN_OK;
                else if (ok && strcmp(argv[i], "--flash-ms-per-kib") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &o->flash_ms) == KILN_OK;
                else
                        ok = 0;
                if (!ok)
                        return -1;
        }
        return o->pki && o->dir && o->recipe && o->sim ? 0 : -1;
}

static int fx_next(void *ctx, unsigned slot, const volatile int *enough, char *port, size_t cap)
{
        struct fixture *fx = ctx;
        int r = KILN_E_NOT_FOUND;

        if (*enough)
                return KILN_E_CANCELLED;
        pthread_mutex_lock(&fx->lock);
        if (fx->next < fx->n) {
                r = kiln_strlcpy(port, fx->devs[fx->next].port, cap);
                fx->next++;
        }
        pthread_mutex_unlock(&fx->lock);
        (void)slot;
        return r;
}

static void fx_done(void *ctx, unsigned slot, const struct unit_result *res)
{
        struct fixture *fx = ctx;

        (void)slot;
        if (res == NULL)
                return; /* handed out but not provisioned: the run ended first */
        pthread_mutex_lock(&fx->lock);
        fx->unit_seconds += res->seconds;
        if (res->verdict == DB_VERDICT_PASS)
                fx->pass++;
        else
                fx->other++;
        pthread_mutex_unlock(&fx->lock);
}

/* Tell every simulator to stop at once (simfix_stop then waits for each in turn). */
static void stop_all(struct fixture *fx)
{
        for (unsigned i = 0; i < fx->n; i++)
                if (fx->devs[i].pid > 0)
                        kill(fx->devs[i].pid, SIGTERM);
}

static double rusage_children_s(void)
{
        struct rusage ru;

        if (getrusage(RUSAGE_CHILDREN, &ru) != 0)
                return 0;
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int start_sims(const struct opts *o, struct fixture *fx)
{
        char state[PATH_CAP], logp[PATH_CAP], devdir[PATH_CAP], baud[16], kg[16], fu[16], fl[16];
        int r;

        if (kiln_snprintf(devdir, sizeof(devdir), "%s/devices-%u", o->dir, o->slots) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long");
        r = kiln_mkdirs(devdir, 0700);
        if (r < 0)
                return r;
        snprintf(baud, sizeof(baud), "%u", o->baud);
        snprintf(kg, sizeof(kg), "%u", o->keygen_ms);
        snprintf(fu, sizeof(fu), "%u", o->fuse_ms);
        snprintf(fl, sizeof(fl), "%u", o->flash_ms);
        for (unsigned i = 0; i < fx->n; i++) {
                const char *args[16];
                unsigned n = 0;

                if (kiln_snprintf(state, sizeof(state), "%s/%u.state", devdir, i) < 0 ||
                    kiln_snprintf(logp, sizeof(logp), "%s/%u.log", devdir, i) < 0)
                        return kiln_fail(KILN_E_RANGE, "path too long");
                /* a factory-fresh chip every run */
                unlink(state);
                unlink(logp);
                args[n++] = "--state";
                args[n++] = state;
                if (o->baud > 0) { /* 0: unpaced, the simulator's default */
                        args[n++] = "--baud";
                        args[n++] = baud;
                }
                args[n++] = "--keygen-ms";
                args[n++] = kg;
                args[n++] = "--fuse-ms";
                args[n++] = fu;
                args[n++] = "--flash-ms-per-kib";
                args[n++] = fl;
                if (getenv("KILN_BENCH_SIM_VERBOSE") != NULL)
                        args[n++] = "-v";
                args[n] = NULL;
                r = simfix_start(o->sim, args, logp, SIM_START_MS, &fx->devs[i]);
                if (r < 0)
                        return r;
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
        struct fixture fx;
        struct run_fixture_ops ops = {.next = fx_next, .done = fx_done};
        struct run_opts ro;
        struct report_summary sum;
        const char *names[KILN_SLOTS_MAX];
        char slot_name[KILN_SLOTS_MAX][16], dbp[PATH_CAP], logp[PATH_CAP], load0[64], load1[64];
        volatile sig_atomic_t stop = 0;
        FILE *log = NULL;
        int have_engine = 0, rc_exit = 1, r;
        uint64_t t0, t1;
        double cpu0, cpu1, ch0, ch1, secs;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        memset(&e, 0, sizeof(e));
        memset(&fx, 0, sizeof(fx));
        pthread_mutex_init(&fx.lock, NULL);
        yaml_doc_diags_init(&diags);
        if (parse_args(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: bench_slots --pki DIR --dir WORK --recipe FILE --sim PATH "
                                "--slots S --units N [--baud B] [--keygen-ms MS] [--fuse-ms MS] "
                                "[--flash-ms-per-kib MS]\n");
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        r = kiln_mkdirs(o.dir, 0700);
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
        cfg.pool_size = o.slots < HSM_POOL_MAX ? o.slots : HSM_POOL_MAX;
        r = hsm_token_open(&cfg, &token);
        if (r < 0)
                goto out;
        if (kiln_snprintf(dbp, sizeof(dbp), "%s/slots-%u.db", o.dir, o.slots) < 0 ||
            kiln_snprintf(logp, sizeof(logp), "%s/slots-%u.log", o.dir, o.slots) < 0) {
                r = kiln_fail(KILN_E_RANGE, "path too long");
                goto out;
        }
        unlink(dbp);
        {
                char p[PATH_CAP + 8];

                snprintf(p, sizeof(p), "%s-wal", dbp);
                unlink(p);
                snprintf(p, sizeof(p), "%s-shm", dbp);
                unlink(p);
        }
        r = db_open(dbp, &db);
        if (r == KILN_OK)
                r = db_recipe_store(db, rc->sha256_hex, rc->id, rc->version, rc->body,
                                    rc->body_len);
        if (r == KILN_OK)
                r = db_work_order_ensure(db, WORK_ORDER, LOT, rc->sha256_hex, QUOTA, &wo);
        if (r < 0)
                goto out;
        log = fopen(logp, "w");
        if (log == NULL) {
                r = kiln_fail(KILN_E_IO, "cannot create '%s'", logp);
                goto out;
        }
        r = report_new(REPORT_LINES, log, o.slots, &rep);
        if (r < 0)
                goto out;
        memset(&es, 0, sizeof(es));
        es.recipe = rc;
        es.db = db;
        es.token = token;
        es.commitment_key_uri = HSM_DEV_COMMIT_URI;
        es.station_id = "bench-slots";
        es.work_order = WORK_ORDER;
        es.operator_id = "bench";
        es.dev_mode = 1;
        es.report = rep;
        es.stop = &stop;
        r = engine_init(&es, &e);
        if (r < 0)
                goto out;
        have_engine = 1;

        fx.n = o.units;
        fx.devs = kiln_calloc(fx.n, sizeof(*fx.devs));
        if (fx.devs == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        r = start_sims(&o, &fx);
        if (r < 0)
                goto out;
        for (unsigned i = 0; i < o.slots; i++) {
                snprintf(slot_name[i], sizeof(slot_name[i]), "%u", i + 1);
                names[i] = slot_name[i];
        }
        memset(&ro, 0, sizeof(ro));
        ro.n_slots = o.slots;
        ro.slot_names = names;
        ro.fx = &ops;
        ro.fx_ctx = &fx;

        bench_loadavg(load0, sizeof(load0));
        cpu0 = bench_cpu_self_s();
        ch0 = rusage_children_s();
        t0 = kiln_now_us();
        r = station_run(&e, &ro, &sum);
        t1 = kiln_now_us();
        cpu1 = bench_cpu_self_s();
        bench_loadavg(load1, sizeof(load1));
        /* the simulators: stop and reap them all, then count their CPU time */
        stop_all(&fx);
        for (unsigned i = 0; i < fx.n; i++)
                simfix_stop(&fx.devs[i], 5000, NULL);
        ch1 = rusage_children_s();
        if (r < 0)
                goto out;
        if (fx.pass != o.units) {
                r = kiln_fail(KILN_E_MISMATCH, "%u of %u units passed (see %s)", fx.pass, o.units,
                              logp);
                goto out;
        }
        secs = (double)(t1 - t0) / 1e6;
        printf("slots: %u\n", o.slots);
        printf("slots_units: %u\n", o.units);
        printf("units_per_hour: %.0f\n", o.units * 3600.0 / secs);
        printf("slots_seconds: %.3f\n", secs);
        printf("slots_unit_s: %.3f\n", fx.unit_seconds / o.units);
        printf("slots_station_cpu_pct: %.1f\n", (cpu1 - cpu0) / secs / (double)ncpu * 100.0);
        /* simulator CPU over their whole life (start-up included), against the run's wall time */
        printf("slots_sim_cpu_pct: %.1f\n", (ch1 - ch0) / secs / (double)ncpu * 100.0);
        printf("slots_load_before: %s\n", load0);
        printf("slots_load_after: %s\n", load1);
        rc_exit = 0;
out:
        if (rc_exit != 0)
                fprintf(stderr, "bench_slots: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        for (unsigned i = 0; fx.devs != NULL && i < fx.n; i++)
                simfix_stop(&fx.devs[i], 2000, NULL);
        kiln_free(fx.devs);
        if (have_engine)
                engine_fini(&e);
        report_free(rep);
        if (log != NULL)
                fclose(log);
        db_close(db);
        hsm_token_free(token);
        recipe_free(rc);
        yaml_doc_diags_free(&diags);
        pthread_mutex_destroy(&fx.lock);
        return rc_exit;
}
