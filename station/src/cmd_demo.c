/*
 * kiln demo: provision simulated devices end to end with a development SoftHSM token.
 *
 *   DIR/station.yaml the demo station's configuration (rewritten by each run): its database, its
 *                    HSM token, and its slots, unix sockets where the demo starts one simulated
 *                    device (kiln-dut-sim --socket) per unit
 *   DIR/hsm/         the development PKI (kiln hsm init-dev), created on first use
 *   DIR/kiln.db      the traceability database
 *   DIR/devices/     one simulator state file per device, named by chip UID, and its log
 *   DIR/slots/       the slots' sockets
 *
 * Run again on the same DIR, it first takes back every unit an interrupted run left IN_PROGRESS
 * (even after kill -9): it restarts that unit's simulator from its state file, and the station
 * resumes the lock or retries the unit as the database says. Then it provisions N new units.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "kiln/audit.h"
#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/label.h"
#include "kiln/recipe.h"
#include "kiln/run.h"
#include "kiln/simfix.h"
#include "kiln/station.h"
#include "kiln/util.h"

#ifndef KILN_RECIPES_DIR
#define KILN_RECIPES_DIR "recipes"
#endif

#define DEMO_WORK_ORDER "DEMO-WO"
#define DEMO_LOT "DEMO-LOT"
#define DEMO_QUOTA 1000000u
#define DEMO_UNITS_MAX 100000u
#define DEMO_SIM_START_MS 10000u

static volatile sig_atomic_t demo_stop;

static void on_signal(int sig)
{
        (void)sig;
        demo_stop = 1;
}

struct demo_device {
        char uid[DB_HEX_UID_MAX];
        int resume; /* left in progress by an earlier run */
};

struct demo {
        const struct station_config *cfg;
        char dir[KILN_PATH_MAX];
        char devices[KILN_PATH_MAX];
        char sim[KILN_PATH_MAX];
        const struct recipe *rc;
        pthread_mutex_t lock;
        struct demo_device *queue;
        unsigned n_queue, next, cap;
        struct simfix_dev running[KILN_SLOTS_MAX];
        struct unit_result *results;
        unsigned n_results;
};

static int queue_add(struct demo *d, const char *uid, int resume)
{
        if (d->n_queue == d->cap) {
                unsigned cap = d->cap ? 2 * d->cap : 64;
                struct demo_device *q = kiln_realloc(d->queue, cap * sizeof(*q));

                if (q == NULL)
                        return KILN_E_NOMEM;
                d->queue = q;
                d->cap = cap;
        }
        kiln_strlcpy(d->queue[d->n_queue].uid, uid, DB_HEX_UID_MAX);
        d->queue[d->n_queue].resume = resume;
        d->n_queue++;
        return KILN_OK;
}

static int leftover_visit(void *ctx, const struct db_unit *u)
{
        struct demo *d = ctx;
        char path[KILN_PATH_MAX];

        if (kiln_snprintf(path, sizeof(path), "%s/%s.state", d->devices, u->chip_uid) < 0)
                return KILN_E_RANGE;
        if (access(path, R_OK) != 0) {
                fprintf(stderr,
                        "kiln demo: unit %s (chip %s) was interrupted but its simulator state "
                        "is missing; it stays IN_PROGRESS for a quality disposition\n",
                        u->serial, u->chip_uid);
                return KILN_OK;
        }
        printf("kiln demo: unit %s (chip %s) was interrupted %s; taking it back first\n", u->serial,
               u->chip_uid, u->lock_started ? "during the lock" : "before the lock");
        return queue_add(d, u->chip_uid, 1);
}

static int demo_next(void *ctx, unsigned slot, const volatile int *enough, char *port,
                     size_t cap)
{
        struct demo *d = ctx;
        struct demo_device dev;
        char state[KILN_PATH_MAX], logp[KILN_PATH_MAX], hw[16];
        const char *args[16];
        unsigned n = 0;
        int r;

        if (demo_stop || *enough)
                return KILN_E_CANCELLED;
        pthread_mutex_lock(&d->lock);
        if (d->next == d->n_queue) {
                pthread_mutex_unlock(&d->lock);
                return KILN_E_NOT_FOUND;
        }
        dev = d->queue[d->next++];
        pthread_mutex_unlock(&d->lock);

        if (kiln_snprintf(state, sizeof(state), "%s/%s.state", d->devices, dev.uid) < 0 ||
            kiln_snprintf(logp, sizeof(logp), "%s/%s.log", d->devices, dev.uid) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long");
        snprintf(hw, sizeof(hw), "%u", d->rc->product.hw_revisions[0]);
        args[n++] = "--state";
        args[n++] = state;
        args[n++] = "--socket";
        args[n++] = d->cfg->slots[slot].port.path;
        if (!dev.resume) {
                /* a factory-fresh chip of the recipe's product */
                args[n++] = "--uid";
                args[n++] = dev.uid;
                args[n++] = "--product";
                args[n++] = d->rc->product.id;
                args[n++] = "--hw-rev";
                args[n++] = hw;
                if (d->rc->product.fw_version != NULL) {
                        args[n++] = "--fw-version";
                        args[n++] = d->rc->product.fw_version;
                }
        }
        args[n] = NULL;
        r = simfix_start(d->sim, args, logp, DEMO_SIM_START_MS, &d->running[slot]);
        if (r < 0)
                return r;
        return kiln_strlcpy(port, d->running[slot].port, cap);
}

static void demo_done(void *ctx, unsigned slot, const struct unit_result *res)
{
        struct demo *d = ctx;

        (void)res;
        simfix_stop(&d->running[slot], 5000, NULL);
}

static void demo_on_unit(void *ctx, const struct unit_result *res)
{
        struct demo *d = ctx;

        if (d->n_results < d->n_queue)
                d->results[d->n_results++] = *res;
}

static void print_table(const struct demo *d, const struct report_summary *s,
                        const char *db_path, const char *labels_dir)
{
        printf("\n  %-3s %-22s %-34s %-17s %-11s %7s\n", "#", "serial", "chip UID", "MAC",
               "verdict", "seconds");
        for (unsigned i = 0; i < d->n_results; i++) {
                const struct unit_result *u = &d->results[i];

                printf("  %-3u %-22s %-34s %-17s %-11s %7.2f%s%s\n", i + 1,
                       u->serial[0] ? u->serial : "-", u->chip_uid[0] ? u->chip_uid : "-",
                       u->mac[0] ? u->mac : "-", db_verdict_name(u->verdict), u->seconds,
                       u->code != FC_NONE ? "  " : "", u->code != FC_NONE ? failcode_name(u->code)
                                                                           : "");
        }
        printf("\n  %u units: %u PASS, %u FAIL, %u LOCK_FAILED, %u SCRAP in %.1f s", d->n_results,
               s->pass, s->fail, s->lock_failed, s->scrap, s->seconds);
        if (s->quota_left >= 0)
                printf(" (work order %s, quota left %lld)", DEMO_WORK_ORDER,
                       (long long)s->quota_left);
        printf("\n  database: %s\n  labels:   %s\n  records:  kiln export --db %s --format csv\n\n",
               db_path, labels_dir, db_path);
}

/* The demo station: development mode, the dev token, one unix-socket slot per --slots. */
static int write_config(const struct demo *d, const char *path, const char *recipe_path,
                        unsigned slots)
{
        struct kiln_buf b;
        char recipe_abs[KILN_PATH_MAX];
        int r;

        if (realpath(recipe_path, recipe_abs) == NULL)
                return kiln_fail(KILN_E_NOT_FOUND, "cannot find recipe '%s': %s", recipe_path,
                                 strerror(errno));
        kiln_buf_init(&b, 64u << 10);
        kiln_buf_printf(&b,
                        "# Written by `kiln demo` on every run: the demo station (docs/station-"
                        "config.md).\n"
                        "# Each slot is a unix socket where the demo starts one simulated device\n"
                        "# (kiln-dut-sim --socket) per unit. `kiln run --config` works with it too,\n"
                        "# once simulators listen on those sockets.\n"
                        "schema: 1\n"
                        "station_id: demo-station\n"
                        "mode: development\n"
                        "database: kiln.db\n"
                        "work:\n"
                        "  recipe: \"%s\"\n"
                        "  work_order: %s\n"
                        "  lot: %s\n"
                        "  operator: demo\n"
                        "hsm:\n"
                        "  module: %s\n"
                        "  token: \"%s\"\n"
                        "  pin_file: hsm/%s\n"
                        "  softhsm_conf: hsm/%s\n"
                        "  audit_key: \"%s\"\n"
                        "  commitment_key: \"%s\"\n"
                        "authority:\n"
                        "  release_keys: [hsm/%s]\n"
                        "  quota_keys: [hsm/%s]\n"
                        "labels:\n"
                        "  printer: file:labels\n"
                        "  format: png\n"
                        "slots:\n",
                        recipe_abs, DEMO_WORK_ORDER, DEMO_LOT, HSM_SOFTHSM_MODULE,
                        HSM_DEV_TOKEN_URI, HSM_DEV_PIN, HSM_DEV_CONF, HSM_DEV_AUDIT_URI,
                        HSM_DEV_COMMIT_URI, HSM_DEV_RELEASE_PEM, HSM_DEV_OFFICER_PEM);
        for (unsigned i = 0; i < slots; i++)
                kiln_buf_printf(&b, "  - id: \"%u\"\n    port: unix:slots/%u.sock\n", i + 1, i + 1);
        r = kiln_buf_error(&b);
        if (r == KILN_OK)
                r = kiln_file_write_atomic(path, b.data, b.len, 0644);
        kiln_buf_free(&b);
        (void)d;
        return r;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln demo --units N --dir DIR [--slots S] [--recipe FILE] [--json]\n"
                   "\n"
                   "Provisions N simulated devices with a development SoftHSM token kept in DIR,\n"
                   "finishing first whatever an interrupted run on DIR left behind.\n");
}

int station_cmd_demo(int argc, char **argv)
{
        static const struct option opts[] = {
                {"units", required_argument, NULL, 'n'}, {"dir", required_argument, NULL, 'd'},
                {"slots", required_argument, NULL, 's'}, {"recipe", required_argument, NULL, 'r'},
                {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        struct demo d;
        struct yaml_doc_diags diags;
        struct recipe *rc = NULL;
        struct db *db = NULL;
        struct station_config *cfg = NULL;
        struct hsm_token *token = NULL;
        struct engine e;
        struct engine_setup es;
        struct report *rep = NULL;
        struct report_summary sum;
        struct db_work_order wo;
        struct run_fixture_ops fx = {.next = demo_next, .done = demo_done};
        struct run_opts ro;
        enum hsm_dev_state hstate;
        char hsm_dir[KILN_PATH_MAX], cfg_path[KILN_PATH_MAX], slots_dir[KILN_PATH_MAX];
        char recipe_path[KILN_PATH_MAX];
        const char *slot_names[KILN_SLOTS_MAX];
        struct label_target label_target;
        const struct label_target *label_of[KILN_SLOTS_MAX];
        char labels_dir[KILN_PATH_MAX];
        uint32_t units = 0, slots = 4;
        int json = 0, have_engine = 0, c, r, status = 1;

        memset(&d, 0, sizeof(d));
        memset(&e, 0, sizeof(e));
        pthread_mutex_init(&d.lock, NULL);
        yaml_doc_diags_init(&diags);
        snprintf(recipe_path, sizeof(recipe_path), "%s/smartplug-ctm.yaml", KILN_RECIPES_DIR);
        optind = 1;
        while ((c = getopt_long(argc, argv, "n:d:s:r:jh", opts, NULL)) != -1) {
                switch (c) {
                case 'n':
                        if (kiln_parse_u32(optarg, 1, DEMO_UNITS_MAX, &units) < 0) {
                                fprintf(stderr, "kiln demo: --units takes 1..%u\n",
                                        DEMO_UNITS_MAX);
                                return 2;
                        }
                        break;
                case 'd':
                        if (kiln_strlcpy(d.dir, optarg, sizeof(d.dir)) < 0) {
                                fprintf(stderr, "kiln demo: --dir path too long\n");
                                return 2;
                        }
                        break;
                case 's':
                        if (kiln_parse_u32(optarg, 1, KILN_SLOTS_MAX, &slots) < 0) {
                                fprintf(stderr, "kiln demo: --slots takes 1..%u\n",
                                        KILN_SLOTS_MAX);
                                return 2;
                        }
                        break;
                case 'r':
                        if (kiln_strlcpy(recipe_path, optarg, sizeof(recipe_path)) < 0) {
                                fprintf(stderr, "kiln demo: --recipe path too long\n");
                                return 2;
                        }
                        break;
                case 'j':
                        json = 1;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (units == 0 || d.dir[0] == '\0' || optind != argc) {
                usage(stderr);
                return 2;
        }
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        kiln_err_reset();

        /* everything the demo keeps lives under DIR */
        if (kiln_snprintf(hsm_dir, sizeof(hsm_dir), "%s/hsm", d.dir) < 0 ||
            kiln_snprintf(d.devices, sizeof(d.devices), "%s/devices", d.dir) < 0 ||
            kiln_snprintf(slots_dir, sizeof(slots_dir), "%s/slots", d.dir) < 0 ||
            kiln_snprintf(cfg_path, sizeof(cfg_path), "%s/station.yaml", d.dir) < 0 ||
            kiln_snprintf(labels_dir, sizeof(labels_dir), "%s/labels", d.dir) < 0) {
                r = kiln_fail(KILN_E_RANGE, "--dir path too long");
                goto out;
        }
        r = kiln_mkdirs(d.devices, 0700);
        if (r == KILN_OK)
                r = kiln_mkdirs(slots_dir, 0700);
        if (r == KILN_OK)
                r = kiln_mkdirs(labels_dir, 0755);
        if (r < 0)
                goto out;
        /* from here on every path is absolute: the simulators and the station agree on them */
        {
                char abs[KILN_PATH_MAX];

                if (realpath(d.dir, abs) == NULL) {
                        r = kiln_fail(KILN_E_IO, "cannot resolve '%s': %s", d.dir, strerror(errno));
                        goto out;
                }
                kiln_strlcpy(d.dir, abs, sizeof(d.dir));
                if (kiln_snprintf(hsm_dir, sizeof(hsm_dir), "%s/hsm", d.dir) < 0 ||
                    kiln_snprintf(d.devices, sizeof(d.devices), "%s/devices", d.dir) < 0 ||
                    kiln_snprintf(slots_dir, sizeof(slots_dir), "%s/slots", d.dir) < 0 ||
                    kiln_snprintf(cfg_path, sizeof(cfg_path), "%s/station.yaml", d.dir) < 0 ||
                    kiln_snprintf(labels_dir, sizeof(labels_dir), "%s/labels", d.dir) < 0) {
                        r = kiln_fail(KILN_E_RANGE, "--dir path too long");
                        goto out;
                }
        }
        r = simfix_find_sim(d.sim, sizeof(d.sim));
        if (r < 0)
                goto out;
        r = recipe_load_file(recipe_path, 0, &diags, &rc);
        if (r < 0) {
                yaml_doc_diags_print(&diags, recipe_path, stderr);
                goto out;
        }
        d.rc = rc;
        r = hsm_dev_init(hsm_dir, NULL, &hstate);
        if (r < 0)
                goto out;
        if (!json)
                printf("kiln demo: %s development PKI in %s\n",
                       hstate == HSM_DEV_CREATED ? "created a" : "using the", hsm_dir);
        r = write_config(&d, cfg_path, recipe_path, slots);
        if (r < 0)
                goto out;
        r = station_config_load_file(cfg_path, &diags, &cfg);
        if (r < 0) {
                yaml_doc_diags_print(&diags, cfg_path, stderr);
                goto out;
        }
        d.cfg = cfg;
        r = station_hsm_open(cfg, slots, &token);
        if (r < 0)
                goto out;
        r = db_open(cfg->database, &db);
        if (r == KILN_OK)
                r = db_recipe_store(db, rc->sha256_hex, rc->id, rc->version, rc->body,
                                    rc->body_len);
        if (r == KILN_OK)
                r = db_work_order_ensure(db, DEMO_WORK_ORDER, DEMO_LOT, rc->sha256_hex, DEMO_QUOTA,
                                         &wo);
        if (r < 0)
                goto out;

        /* the queue: interrupted units first, then N factory-fresh chips */
        r = db_units_in_progress(db, leftover_visit, &d);
        if (r < 0)
                goto out;
        for (uint32_t i = 0; i < units; i++) {
                uint8_t uid[8];
                char hex[2 * sizeof(uid) + 1];

                if (RAND_bytes(uid, sizeof(uid)) != 1) {
                        r = kiln_fail(KILN_E_CRYPTO, "no random bytes for a chip UID");
                        goto out;
                }
                kiln_hex_encode(uid, sizeof(uid), hex, sizeof(hex));
                r = queue_add(&d, hex, 0);
                if (r < 0)
                        goto out;
        }
        d.results = kiln_calloc(d.n_queue, sizeof(*d.results));
        if (d.results == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }

        r = report_new(json ? REPORT_JSON : isatty(STDOUT_FILENO) ? REPORT_TTY : REPORT_LINES,
                       stdout, slots, &rep);
        if (r < 0)
                goto out;
        /* every unit that passes gets its label as a PNG in DIR/labels */
        r = label_target_from_printer(&cfg->labels.printer, &label_target);
        if (r < 0)
                goto out;
        for (unsigned i = 0; i < KILN_SLOTS_MAX; i++)
                label_of[i] = &label_target;
        memset(&es, 0, sizeof(es));
        es.labels = label_of;
        es.label_format = (int)cfg->labels.format;
        es.recipe = rc;
        es.db = db;
        es.token = token;
        es.commitment_key_uri = cfg->hsm.commitment_key;
        es.station_id = cfg->station_id;
        es.work_order = DEMO_WORK_ORDER;
        es.operator_id = "demo";
        es.dev_mode = 1;
        es.report = rep;
        es.stop = &demo_stop;
        r = engine_init(&es, &e);
        if (r < 0)
                goto out;
        have_engine = 1;
        for (unsigned i = 0; i < cfg->n_slots; i++)
                slot_names[i] = cfg->slots[i].id;
        memset(&ro, 0, sizeof(ro));
        ro.n_slots = cfg->n_slots;
        ro.slot_names = slot_names;
        ro.fx = &fx;
        ro.fx_ctx = &d;
        ro.on_unit = demo_on_unit;
        ro.on_unit_ctx = &d;
        report_run_start(rep, cfg->station_id, DEMO_WORK_ORDER, "demo", rc->id, 1);
        r = station_run(&e, &ro, &sum);
        report_run_end(rep, &sum);
        {
                int cr = audit_checkpoint(db, token, cfg->hsm.audit_key, DEMO_WORK_ORDER);

                if (cr < 0) {
                        report_alert(rep, NULL, "audit", kiln_err_detail());
                        if (r == KILN_OK)
                                r = cr;
                }
        }
        report_free(rep);
        rep = NULL;
        if (!json)
                print_table(&d, &sum, cfg->database, labels_dir);
        if (r < 0 && r != KILN_E_PERM)
                goto out;
        status = demo_stop || sum.fail + sum.lock_failed + sum.scrap + sum.unrecorded > 0 ? 1 : 0;
        r = KILN_OK;
out:
        if (r < 0)
                fprintf(stderr, "kiln demo: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        report_free(rep);
        for (unsigned i = 0; i < KILN_SLOTS_MAX; i++)
                simfix_stop(&d.running[i], 2000, NULL);
        if (have_engine)
                engine_fini(&e);
        hsm_token_free(token);
        db_close(db);
        station_config_free(cfg);
        recipe_free(rc);
        yaml_doc_diags_free(&diags);
        kiln_free(d.queue);
        kiln_free(d.results);
        pthread_mutex_destroy(&d.lock);
        return status;
}
