/*
 * kiln run: the production station. Reads the station configuration and a recipe, opens the HSM and
 * the database, and runs every configured slot.
 *
 * --once: provision the device present on each slot's port, once, then exit (tests, rework).
 * Otherwise each slot provisions, then waits for the operator to swap the unit: it polls the port
 * until a device with another chip UID answers, and goes on until --units are done or ^C.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/audit.h"
#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/label.h"
#include "kiln/log.h"
#include "kiln/recipe.h"
#include "kiln/release.h"
#include "kiln/run.h"
#include "kiln/session.h"
#include "kiln/station.h"
#include "kiln/util.h"

#define POLL_MS 500u

static volatile sig_atomic_t run_stop;

static void on_signal(int sig)
{
        (void)sig;
        run_stop = 1;
}

struct line_fx {
        const struct station_config *cfg;
        int once;
        int served[KILN_SLOTS_MAX];
        char last_uid[KILN_SLOTS_MAX][DB_HEX_UID_MAX];
        char last_port_state[KILN_SLOTS_MAX];
};

/* The chip UID answering on port, or an error when nothing (valid) answers. */
static int probe_uid(const char *port, char *uid, size_t cap)
{
        struct proto_transport *t = NULL;
        struct proto_session *s = NULL;
        struct proto_session_opts o;
        struct proto_info info;
        int r;

        proto_session_opts_default(&o);
        o.attempts = 1;
        r = proto_transport_open(port, &t);
        if (r == KILN_OK)
                r = proto_session_new(t, &o, &s);
        if (r == KILN_OK)
                r = proto_session_hello(s, NULL);
        if (r == KILN_OK)
                r = proto_session_get_info(s, &info);
        if (r == KILN_OK)
                r = kiln_hex_encode(info.chip_uid, info.chip_uid_len, uid, cap);
        proto_session_free(s);
        proto_transport_free(t);
        return r;
}

static int line_next(void *ctx, unsigned slot, const volatile int *enough, char *port,
                     size_t cap)
{
        struct line_fx *fx = ctx;
        const char *spec = fx->cfg->slots[slot].port.open_spec;
        char uid[DB_HEX_UID_MAX];

        if (fx->once) {
                if (fx->served[slot])
                        return KILN_E_NOT_FOUND;
                fx->served[slot] = 1;
                return kiln_strlcpy(port, spec, cap);
        }
        /* wait for a unit other than the one just finished */
        while (!run_stop && !*enough) {
                kiln_err_reset();
                if (probe_uid(spec, uid, sizeof(uid)) == KILN_OK &&
                    strcmp(uid, fx->last_uid[slot]) != 0)
                        return kiln_strlcpy(port, spec, cap);
                kiln_sleep_ms(POLL_MS);
        }
        return KILN_E_CANCELLED;
}

static void line_done(void *ctx, unsigned slot, const struct unit_result *res)
{
        struct line_fx *fx = ctx;

        if (res == NULL)
                return;
        kiln_strlcpy(fx->last_uid[slot], res->chip_uid, sizeof(fx->last_uid[slot]));
}

static int interrupted_visit(void *ctx, const struct db_unit *u)
{
        char text[256];

        snprintf(text, sizeof(text),
                 "unit %s (chip %s) was interrupted %s: put it in a slot to %s", u->serial,
                 u->chip_uid, u->lock_started ? "during the lock" : "before the lock",
                 u->lock_started ? "finish its lock" : "retry it");
        report_alert(ctx, NULL, "interrupted", text);
        return KILN_OK;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: kiln run --config FILE [--recipe FILE] [--work-order W] [--lot L]\n"
                "                [--operator ID] [--quota N] [--units N] [--once] [--json]\n"
                "\n"
                "Runs every slot of the station configuration. The work order and the operator id\n"
                "are required (here or in the configuration's `work` section); the HSM PIN comes\n"
                "from the configured environment variable or owner-only file, never from here.\n"
                "  --once   provision the unit on each slot's port once, then exit\n"
                "  --units  stop after N units (default: until ^C)\n"
                "  --json   one JSON object per line per event on stdout, for line systems\n"
                "  --debug  debug logging (refused in production mode)\n"
                "A production station (mode: production) runs only a released recipe (kiln\n"
                "recipe release) and refuses simulated devices and development tokens.\n");
}

int station_cmd_run(int argc, char **argv)
{
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"recipe", required_argument, NULL, 'r'},
                {"work-order", required_argument, NULL, 'w'},
                {"lot", required_argument, NULL, 'l'},
                {"operator", required_argument, NULL, 'o'},
                {"quota", required_argument, NULL, 'q'},
                {"units", required_argument, NULL, 'n'},
                {"once", no_argument, NULL, '1'},
                {"json", no_argument, NULL, 'j'},
                {"debug", no_argument, NULL, 'D'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *cfg_path = NULL, *recipe_path = NULL, *work_order = NULL, *lot = NULL,
                   *operator_id = NULL;
        uint32_t quota = 0, units = 0;
        int quota_given = 0;
        int once = 0, json = 0, debug = 0, released = 0, have_engine = 0, c, r, status = 1;
        struct yaml_doc_diags diags;
        struct station_config *cfg = NULL;
        struct recipe *rc = NULL;
        struct db *db = NULL;
        struct hsm_token *token = NULL;
        struct report *rep = NULL;
        struct engine e;
        struct engine_setup es;
        struct db_work_order wo;
        struct line_fx *fx = NULL;
        struct run_fixture_ops ops = {.next = line_next, .done = line_done};
        struct run_opts ro;
        struct report_summary sum;
        const char *slot_names[KILN_SLOTS_MAX];
        struct label_target *labels = NULL;
        const struct label_target *label_of[KILN_SLOTS_MAX];

        memset(&e, 0, sizeof(e));
        yaml_doc_diags_init(&diags);
        optind = 1;
        while ((c = getopt_long(argc, argv, "c:r:w:l:o:q:n:1jDh", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        cfg_path = optarg;
                        break;
                case 'r':
                        recipe_path = optarg;
                        break;
                case 'w':
                        work_order = optarg;
                        break;
                case 'l':
                        lot = optarg;
                        break;
                case 'o':
                        operator_id = optarg;
                        break;
                case 'q':
                        if (kiln_parse_u32(optarg, 1, UINT32_MAX, &quota) < 0) {
                                fprintf(stderr, "kiln run: --quota takes a positive number\n");
                                return 2;
                        }
                        break;
                case 'n':
                        if (kiln_parse_u32(optarg, 1, UINT32_MAX, &units) < 0) {
                                fprintf(stderr, "kiln run: --units takes a positive number\n");
                                return 2;
                        }
                        break;
                case '1':
                        once = 1;
                        break;
                case 'j':
                        json = 1;
                        break;
                case 'D':
                        debug = 1;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (cfg_path == NULL || optind != argc) {
                usage(stderr);
                return 2;
        }
        kiln_err_reset();
        r = station_config_load_file(cfg_path, &diags, &cfg);
        if (r < 0) {
                yaml_doc_diags_print(&diags, cfg_path, stderr);
                if (yaml_doc_diags_count(&diags) == 0)
                        fprintf(stderr, "kiln run: %s\n", kiln_err_detail());
                status = 2;
                goto done;
        }
        recipe_path = recipe_path ? recipe_path : cfg->work.recipe;
        work_order = work_order ? work_order : cfg->work.work_order;
        lot = lot ? lot : cfg->work.lot;
        operator_id = operator_id ? operator_id : cfg->work.operator_id;
        quota = quota ? quota : cfg->work.quota;
        if (recipe_path == NULL || work_order == NULL || operator_id == NULL) {
                fprintf(stderr, "kiln run: a run needs a recipe, a work order and an operator id "
                                "(--recipe, --work-order, --operator, or the configuration's "
                                "work section)\n");
                status = 2;
                goto done;
        }
        r = recipe_load_file(recipe_path, 0, &diags, &rc);
        if (r < 0) {
                yaml_doc_diags_print(&diags, recipe_path, stderr);
                if (yaml_doc_diags_count(&diags) == 0)
                        fprintf(stderr, "kiln run: %s\n", kiln_err_detail());
                status = 2;
                goto done;
        }
        if (cfg->production && debug) {
                fprintf(stderr, "kiln run: --debug is refused in production mode: debug output "
                                "may carry device traffic\n");
                status = 2;
                goto done;
        }
        if (debug)
                kiln_log_set_level(KILN_LOG_DEBUG);
        quota_given = quota != 0;
        if (quota == 0)
                quota = rc->quota.default_units;
        if (quota > rc->quota.max_units) {
                fprintf(stderr, "kiln run: quota %u is over the recipe's maximum of %u\n", quota,
                        rc->quota.max_units);
                status = 2;
                goto done;
        }
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        r = station_hsm_open(cfg, cfg->n_slots, &token);
        if (r < 0)
                goto out;
        r = db_open(cfg->database, &db);
        if (r == KILN_OK)
                r = db_recipe_store(db, rc->sha256_hex, rc->id, rc->version, rc->body,
                                    rc->body_len);
        if (r < 0)
                goto out;
        /* production runs only released recipes; a development station records a release if
         * there is one */
        r = station_release_check(cfg, rc, db, &released);
        if (r < 0 && cfg->production) {
                fprintf(stderr, "kiln run: %s\n", kiln_err_detail());
                status = 2;
                goto done;
        }
        if (r < 0 && r != KILN_E_NOT_FOUND)
                fprintf(stderr, "kiln run: warning: %s\n", kiln_err_detail());
        kiln_err_reset();
        r = db_work_order_get(db, work_order, &wo);
        if (r == KILN_OK && quota_given && quota != wo.quota) {
                fprintf(stderr,
                        "kiln run: work order '%s' has quota %u; changing it needs a signed "
                        "authorisation (kiln quota raise)\n",
                        work_order, wo.quota);
                status = 2;
                goto done;
        }
        kiln_err_reset();
        r = db_work_order_ensure(db, work_order, lot, rc->sha256_hex, quota, &wo);
        if (r < 0)
                goto out;
        r = report_new(json ? REPORT_JSON : isatty(STDOUT_FILENO) ? REPORT_TTY : REPORT_LINES,
                       stdout, cfg->n_slots, &rep);
        if (r < 0)
                goto out;
        /* label printers: a slot's own, else the station's */
        labels = kiln_calloc(cfg->n_slots, sizeof(*labels));
        if (labels == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        for (unsigned i = 0; i < cfg->n_slots; i++) {
                const struct station_printer *p =
                        cfg->slots[i].has_printer ? &cfg->slots[i].printer
                        : cfg->labels.present     ? &cfg->labels.printer
                                                  : NULL;

                label_of[i] = NULL;
                if (p == NULL)
                        continue;
                r = label_target_from_printer(p, &labels[i]);
                if (r < 0)
                        goto out;
                label_of[i] = &labels[i];
        }
        memset(&es, 0, sizeof(es));
        es.labels = label_of;
        es.label_format = cfg->labels.present ? (int)cfg->labels.format : (int)STATION_LABEL_ZPL;
        es.recipe = rc;
        es.db = db;
        es.token = token;
        es.commitment_key_uri = cfg->hsm.commitment_key;
        es.station_id = cfg->station_id;
        es.work_order = work_order;
        es.operator_id = operator_id;
        es.dev_mode = !cfg->production;
        es.report = rep;
        es.stop = &run_stop;
        r = engine_init(&es, &e);
        if (r < 0)
                goto out;
        have_engine = 1;
        fx = kiln_calloc(1, sizeof(*fx));
        if (fx == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        fx->cfg = cfg;
        fx->once = once;
        for (unsigned i = 0; i < cfg->n_slots; i++)
                slot_names[i] = cfg->slots[i].id;
        memset(&ro, 0, sizeof(ro));
        ro.n_slots = cfg->n_slots;
        ro.slot_names = slot_names;
        ro.max_units = units;
        ro.fx = &ops;
        ro.fx_ctx = fx;
        report_run_start(rep, cfg->station_id, work_order, operator_id, rc->id, !cfg->production);
        {
                char note[256];

                snprintf(note, sizeof(note),
                         "recipe %s version %s (%.12s…) %s; work order %s: quota %u, %u used, "
                         "%u left",
                         rc->id, rc->version, rc->sha256_hex,
                         released ? "released" : "NOT released", work_order, wo.quota,
                         wo.consumed + wo.reserved, wo.quota - wo.consumed - wo.reserved);
                report_note(rep, "start", note);
        }
        /* units an interrupted run left behind: the operator must bring them back */
        r = db_units_in_progress(db, interrupted_visit, rep);
        if (r < 0)
                goto out;
        r = station_run(&e, &ro, &sum);
        report_run_end(rep, &sum);
        {
                /* sign the chain head: at least one checkpoint per work order and run */
                int cr = audit_checkpoint(db, token, cfg->hsm.audit_key, work_order);

                if (cr < 0) {
                        report_alert(rep, NULL, "audit", kiln_err_detail());
                        if (r == KILN_OK)
                                r = cr;
                }
        }
        if (r < 0 && r != KILN_E_PERM)
                goto out;
        status = sum.fail + sum.lock_failed + sum.scrap + sum.unrecorded > 0 || r == KILN_E_PERM
                         ? 1
                         : 0;
        r = KILN_OK;
out:
        if (r < 0)
                fprintf(stderr, "kiln run: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
done:
        report_free(rep);
        if (have_engine)
                engine_fini(&e);
        kiln_free(fx);
        kiln_free(labels);
        hsm_token_free(token);
        db_close(db);
        recipe_free(rc);
        station_config_free(cfg);
        yaml_doc_diags_free(&diags);
        return status;
}
