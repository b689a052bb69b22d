/*
 * Production controls and quota, end to end with the real binaries: each production-mode refusal
 * (unreleased recipe, recipe changed after its release, release by an untrusted key, simulated
 * device, extractable signing key, debug flag, configuration rules), the development banner and
 * marking, quota: exhaustion, signed raise, replay, forgery, lowering, --quota on an existing
 * work order, and a run refused without a work order or an operator id.
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

#include "e2e.h"
#include "hsm_internal.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"

#define RELEASE_KEY "pkcs11:token=kiln-dev;object=kiln-dev-release;type=private"
#define OFFICER_KEY "pkcs11:token=kiln-dev;object=kiln-dev-officer;type=private"
#define AUDIT_KEY "pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private"

static char out[1 << 16], err[1 << 16];

/* A production configuration for the running simulators; SoftHSM found through SOFTHSM2_CONF (a
 * production configuration may not name a development token store). */
static void prod_config(struct e2e *x, const char *path, const char *extra_root,
                        const char *port_override)
{
        FILE *f = fopen(path, "w");
        char conf[1200];

        assert_non_null(f);
        fprintf(f,
                "schema: 1\nstation_id: prod-station\nmode: production\ndatabase: %s\n"
                "hsm:\n  module: /usr/lib/softhsm/libsofthsm2.so\n"
                "  token: \"pkcs11:token=kiln-dev\"\n  pin_file: %s/pin\n"
                "  audit_key: \"%s\"\n"
                "  commitment_key: \"pkcs11:token=kiln-dev;object=kiln-dev-commit;"
                "type=secret-key\"\n"
                "%s"
                "slots:\n  - id: P1\n    port: %s\n",
                x->db, x->hsm, AUDIT_KEY,
                extra_root ? extra_root : "", port_override ? port_override : x->dev[0].port);
        fclose(f);
        snprintf(conf, sizeof(conf), "%s/softhsm2.conf", x->hsm);
        setenv("SOFTHSM2_CONF", conf, 1);
}

static int kiln_run_cfg(struct e2e *x, const char *cfg, const char *recipe, const char *extra)
{
        const char *args[] = {"run",     "--config",   cfg,    "--recipe", recipe,
                              "--work-order", "WO-PROD", "--operator", "op1", "--once",
                              "--json",  extra,        NULL};

        return e2e_kiln(x, args, out, sizeof(out), err, sizeof(err));
}

static void copy_recipe(struct e2e *x, const char *name, char *dst, size_t cap)
{
        char src[1200], cmd[3000];

        e2e_recipe_path(x, name, src, sizeof(src));
        snprintf(dst, cap, "%s/%s", x->dir, name);
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
        assert_int_equal(system(cmd), 0);
}

static int release(struct e2e *x, const char *cfg, const char *recipe, const char *key)
{
        const char *args[] = {"recipe", "release", recipe, "--config", cfg, "--key", key, NULL};

        return e2e_kiln(x, args, out, sizeof(out), err, sizeof(err));
}

static void test_production_refusals(void **state)
{
        struct e2e x;
        char cfg[1300], recipe[1300], authority[2600];

        (void)state;
        e2e_setup(&x, "prod");
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x); /* the development configuration, used to sign as the engineer */
        snprintf(cfg, sizeof(cfg), "%s/prod.yaml", x.dir);
        snprintf(authority, sizeof(authority),
                 "authority:\n  release_keys: [%s/release-pub.pem]\n"
                 "  quota_keys: [%s/officer-pub.pem]\n",
                 x.hsm, x.hsm);
        prod_config(&x, cfg, authority, NULL);
        copy_recipe(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));

        /* an unreleased recipe never starts a run */
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, NULL), 2);
        assert_non_null(strstr(err, "is not released"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units"), 0);

        /* released by a key the station does not trust (the audit key) */
        assert_int_equal(release(&x, x.config, recipe, AUDIT_KEY), 0);
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, NULL), 2);
        assert_non_null(strstr(err, "not signed by a key this station trusts"));

        /* released properly, then changed: refused */
        assert_int_equal(release(&x, x.config, recipe, RELEASE_KEY), 0);
        {
                char cmd[1400];

                snprintf(cmd, sizeof(cmd), "echo '# changed after release' >> '%s'", recipe);
                assert_int_equal(system(cmd), 0);
        }
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, NULL), 2);
        assert_non_null(strstr(err, "changed after its release"));

        /* released as it is: the run starts, records the release, and refuses the simulator */
        assert_int_equal(release(&x, x.config, recipe, RELEASE_KEY), 0);
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, NULL), 1);
        assert_non_null(strstr(out, "\"code\":\"E-WRONG-DEVICE\""));
        assert_non_null(strstr(out, "refused in production mode"));
        assert_non_null(strstr(out, "released"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM releases"), 1);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM events WHERE kind = "
                                         "'recipe.release'"),
                         1);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units"), 0);

        /* no debug output in production */
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, "--debug"), 2);
        assert_non_null(strstr(err, "refused in production mode"));
        e2e_check_invariants(&x);
        e2e_teardown(&x);
}

static void test_production_refuses_extractable_key(void **state)
{
        struct e2e x;
        struct hsm_token *t = NULL;
        struct hsm_dev dev;
        CK_SESSION_HANDLE s;
        char cfg[1300], recipe[1300], authority[1400], cmd[4000];
        static const uint8_t id_leaky[] = {0x7e};

        (void)state;
        e2e_setup(&x, "leaky");
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        /* an issuing key that is extractable and not sensitive */
        assert_int_equal(hsm_dev_use(x.hsm, NULL, &dev), KILN_OK);
        dev.cfg.read_write = 1;
        assert_int_equal(hsm_token_open(&dev.cfg, &t), KILN_OK);
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, "kiln-dev-leaky", id_leaky, 1, 1),
                         KILN_OK);
        hsm_session_put(t, s);
        hsm_token_free(t);
        copy_recipe(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));
        snprintf(cmd, sizeof(cmd), "sed -i 's/object=kiln-dev-issuing/object=kiln-dev-leaky/' '%s'",
                 recipe);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(release(&x, x.config, recipe, RELEASE_KEY), 0);
        snprintf(cfg, sizeof(cfg), "%s/prod.yaml", x.dir);
        snprintf(authority, sizeof(authority), "authority:\n  release_keys: [%s/release-pub.pem]\n",
                 x.hsm);
        prod_config(&x, cfg, authority, NULL);
        assert_int_equal(kiln_run_cfg(&x, cfg, recipe, NULL), 1);
        assert_non_null(strstr(err, "extractable"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units"), 0);
        e2e_teardown(&x);
}

static void test_production_config_rules(void **state)
{
        struct e2e x;
        char cfg[1300];
        const char *args[] = {"recipe", "check", "--config", cfg, NULL};

        (void)state;
        e2e_setup(&x, "prodcfg");
        snprintf(cfg, sizeof(cfg), "%s/prod.yaml", x.dir);
        /* no release keys */
        prod_config(&x, cfg, NULL, "/dev/ttyUSB0");
        assert_int_equal(e2e_kiln(&x, args, out, sizeof(out), err, sizeof(err)), 1);
        assert_non_null(strstr(out, "authority.release_keys"));
        /* a simulator port */
        prod_config(&x, cfg, "authority:\n  release_keys: [/etc/hostname]\n", "unix:/tmp/sim.sock");
        assert_int_equal(e2e_kiln(&x, args, out, sizeof(out), err, sizeof(err)), 1);
        assert_non_null(strstr(out, "simulated devices"));
        e2e_teardown(&x);
}

static void test_development_banner_and_marks(void **state)
{
        struct e2e x;
        char recipe[1300];

        (void)state;
        e2e_setup(&x, "devmode");
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        copy_recipe(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));
        {
                const char *a[] = {"run",     "--config", x.config, "--recipe", recipe,
                                   "--work-order", "WO-DEV", "--operator", "op2", "--once",
                                   NULL};

                assert_int_equal(e2e_kiln(&x, a, out, sizeof(out), err, sizeof(err)), 0);
        }
        assert_non_null(strstr(out, "NON-PRODUCTION STATION"));
        assert_non_null(strstr(out, "NOT released"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE dev_mode = 1"), 1);
        e2e_teardown(&x);
}

/* DESIGN.md: a run cannot start without a work order and an operator id; both are recorded. */
static void test_run_needs_work_order_and_operator(void **state)
{
        struct e2e x;
        char recipe[1300];

        (void)state;
        e2e_setup(&x, "whoruns");
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        copy_recipe(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));
        {
                const char *no_op[] = {"run", "--config", x.config, "--recipe", recipe,
                                       "--work-order", "WO-WHO", "--once", NULL};
                const char *no_wo[] = {"run", "--config", x.config, "--recipe", recipe,
                                       "--operator", "op9", "--once", NULL};
                const char *both[] = {"run", "--config", x.config, "--recipe", recipe,
                                      "--work-order", "WO-WHO", "--operator", "op9", "--once",
                                      "--json", NULL};

                assert_int_equal(e2e_kiln(&x, no_op, out, sizeof(out), err, sizeof(err)), 2);
                assert_non_null(strstr(err, "needs a recipe, a work order and an operator id"));
                assert_int_equal(e2e_kiln(&x, no_wo, out, sizeof(out), err, sizeof(err)), 2);
                assert_non_null(strstr(err, "needs a recipe, a work order and an operator id"));
                /* refused before anything was recorded: not even the database exists */
                assert_int_not_equal(access(x.db, F_OK), 0);
                assert_int_equal(e2e_kiln(&x, both, out, sizeof(out), err, sizeof(err)), 0);
        }
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE work_order = 'WO-WHO' "
                                         "AND operator = 'op9' AND verdict = 'PASS'"),
                         1);
        assert_non_null(strstr(out, "\"operator\":\"op9\""));
        e2e_teardown(&x);
}

static int quota(struct e2e *x, const char *const *args)
{
        return e2e_kiln(x, args, out, sizeof(out), err, sizeof(err));
}

static void test_quota(void **state)
{
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char auth[1300], forged[1300], lower[1300];
        const char *q1[] = {"--quota", "1", NULL};
        const char *q5[] = {"--quota", "5", NULL};

        (void)state;
        e2e_setup(&x, "quota");
        e2e_sim(&x, NULL, NULL);
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        e2e_kiln_run(&x, "smartplug-ctm.yaml", q1, r);
        assert_int_equal(r->n_unit, 2);
        /* one unit fits; the other is refused before any certificate is issued for it */
        assert_true((strcmp(r->unit[0].verdict, "PASS") == 0) !=
                    (strcmp(r->unit[1].verdict, "PASS") == 0));
        assert_non_null(strstr(r->out, "\"code\":\"E-QUOTA\""));
        assert_non_null(strstr(r->out, "quota 1, 0 used, 1 left"));
        assert_non_null(strstr(r->out, "\"quota_left\":0"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates"), 1);
        e2e_check_invariants(&x);

        /* --quota cannot change an existing work order's quota */
        e2e_kiln_run(&x, "smartplug-ctm.yaml", q5, r);
        assert_int_equal(r->status, 2);
        assert_non_null(strstr(r->err, "needs a signed authorisation"));

        snprintf(auth, sizeof(auth), "%s/raise.json", x.dir);
        snprintf(forged, sizeof(forged), "%s/forged.json", x.dir);
        snprintf(lower, sizeof(lower), "%s/lower.json", x.dir);
        {
                const char *a[] = {"quota", "authorize", "--config", x.config, "--key",
                                   OFFICER_KEY, "--work-order", "WO-E2E", "--quota", "3", "-o",
                                   auth, NULL};
                const char *f[] = {"quota", "authorize", "--config", x.config, "--key",
                                   AUDIT_KEY, "--work-order", "WO-E2E", "--quota", "100", "-o",
                                   forged, NULL};
                const char *l[] = {"quota", "authorize", "--config", x.config, "--key",
                                   OFFICER_KEY, "--work-order", "WO-E2E", "--quota", "2", "-o",
                                   lower, NULL};
                const char *raise_auth[] = {"quota", "raise", "--config", x.config,
                                            "--authorization", auth, NULL};
                const char *raise_forged[] = {"quota", "raise", "--config", x.config,
                                              "--authorization", forged, NULL};
                const char *raise_lower[] = {"quota", "raise", "--config", x.config,
                                             "--authorization", lower, NULL};
                const char *show[] = {"quota", "show", "--db", x.db, "--work-order", "WO-E2E",
                                      NULL};

                assert_int_equal(quota(&x, a), 0);
                assert_int_equal(quota(&x, f), 0);
                assert_int_equal(quota(&x, l), 0);
                /* signed by a key the station does not trust for quotas */
                assert_int_equal(quota(&x, raise_forged), 1);
                assert_non_null(strstr(err, "not signed by a key this station trusts"));
                assert_int_equal(quota(&x, raise_auth), 0);
                assert_non_null(strstr(out, "raised from 1 to 3"));
                /* an authorisation is applied once */
                assert_int_equal(quota(&x, raise_auth), 1);
                assert_non_null(strstr(err, "applied before"));
                /* and only raises */
                assert_int_equal(quota(&x, raise_lower), 1);
                assert_non_null(strstr(err, "can only raise"));
                assert_int_equal(quota(&x, show), 0);
                assert_non_null(strstr(out, "quota 3, 1 consumed, 0 reserved, 2 left"));
        }
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM events WHERE kind = "
                                         "'work_order.quota_raise'"),
                         1);
        /* the refused unit now goes through */
        e2e_kiln_run(&x, "smartplug-ctm.yaml", NULL, r);
        assert_non_null(strstr(r->out, "\"verdict\":\"PASS\""));
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_production_refusals),
                cmocka_unit_test(test_production_refuses_extractable_key),
                cmocka_unit_test(test_production_config_rules),
                cmocka_unit_test(test_development_banner_and_marks),
                cmocka_unit_test(test_quota),
                cmocka_unit_test(test_run_needs_work_order_and_operator),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
