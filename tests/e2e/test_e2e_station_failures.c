/*
 * The station's own resources failing under it, end to end: the disk holding the database fills up
 * (a small tmpfs), and the HSM stops signing in the middle of a run (a PKCS#11 shim in front of
 * SoftHSM). Each unit gets a stable code and a one-line reason, the station stops starting units,
 * nothing recorded is lost, and once the cause is fixed a new run takes the units back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "e2e.h"

#define PLUG "smartplug-ctm.yaml"

/* Point the station's database at `db` (the harness config names x->db). */
static void use_db(struct e2e *x, const char *db)
{
        snprintf(x->db, sizeof(x->db), "%s", db);
        e2e_config(x);
}

static void test_disk_full(void **state)
{
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char mnt[1000], db[1090];
        unsigned pass = 0;

        (void)state;
        e2e_setup(&x, "diskfull");
        snprintf(mnt, sizeof(mnt), "%.990s/mnt", x.dir);
        assert_int_equal(mkdir(mnt, 0700), 0);
        /* a real ENOSPC: a 1 MiB tmpfs fills within a few units (the WAL keeps every page) */
        if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0)
                fail_msg("this test mounts a small tmpfs (needs root): %s", strerror(errno));
        snprintf(db, sizeof(db), "%.1000s/kiln.db", mnt);
        for (int i = 0; i < 6; i++)
                e2e_sim(&x, NULL, NULL);
        use_db(&x, db);
        e2e_kiln_run(&x, PLUG, NULL, r);
        assert_int_equal(r->status, 1);
        assert_int_equal(r->n_unit, 6);
        for (unsigned i = 0; i < r->n_unit; i++) {
                if (strcmp(r->unit[i].verdict, "PASS") == 0) {
                        pass++;
                        continue;
                }
                /* a stable code; the verdict written when the disk allowed, else none */
                assert_string_equal(r->unit[i].code, "E-DISK-FULL");
                assert_true(strcmp(r->unit[i].verdict, "FAIL") == 0 ||
                            strcmp(r->unit[i].verdict, "IN_PROGRESS") == 0);
        }
        assert_true(pass < 6);
        assert_non_null(strstr(r->out, "disk is full"));
        assert_non_null(strstr(r->out, "the station stops starting new units"));
        /* the operator frees space and runs again: every unit is taken back and passes */
        if (mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=64m") != 0)
                fail_msg("remount: %s", strerror(errno));
        e2e_kiln_run(&x, PLUG, NULL, r);
        if (strstr(r->out, "\"verdict\":\"FAIL\"") != NULL ||
            strstr(r->out, "\"verdict\":\"IN_PROGRESS\"") != NULL)
                fail_msg("after freeing space:\n%s\n%s", r->out, r->err);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 6);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        umount(mnt);
        free(r);
}

static void test_hsm_stops_signing(void **state)
{
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        const char *shim = getenv("KILN_P11_SHIM");
        char cmd[3000];
        const struct e2e_unit *good = NULL, *bad = NULL;

        (void)state;
        assert_non_null(shim);
        e2e_setup(&x, "hsmsign");
        e2e_sim(&x, NULL, NULL);
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        /* the same token through the shim, which refuses every C_Sign after the fourth. The
         * station signs once at start (proving the issuing key matches its certificate), and each
         * unit needs two: its certificate (ECDSA) and its credential commitment (HMAC). Three
         * left for two concurrent units that need two each: exactly one unit gets both, in
         * whatever order the slots reach the HSM */
        snprintf(cmd, sizeof(cmd), "sed -i 's|module: .*|module: %s|' '%s'", shim, x.config);
        assert_int_equal(system(cmd), 0);
        setenv("KILN_SHIM_FAIL_SIGN_AFTER", "4", 1);
        e2e_kiln_run(&x, PLUG, NULL, r);
        unsetenv("KILN_SHIM_FAIL_SIGN_AFTER");
        assert_int_equal(r->status, 1);
        assert_int_equal(r->n_unit, 2);
        for (unsigned i = 0; i < 2; i++) {
                if (strcmp(r->unit[i].verdict, "PASS") == 0)
                        good = &r->unit[i];
                else
                        bad = &r->unit[i];
        }
        assert_non_null(good);
        assert_non_null(bad);
        assert_string_equal(bad->verdict, "FAIL");
        assert_string_equal(bad->code, "E-HSM");
        assert_non_null(strstr(r->out, "CKR_DEVICE_ERROR"));
        assert_non_null(strstr(r->out, "the station stops starting new units"));
        /* the refused unit has no certificate, its quota came back; the audit checkpoint could
         * not be signed either, and says so */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates"), 1);
        assert_int_equal(e2e_sql_int(&x, "SELECT reserved FROM work_orders"), 0);
        assert_non_null(strstr(r->out, "\"kind\":\"audit\""));
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_disk_full),
                cmocka_unit_test(test_hsm_stops_signing),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
