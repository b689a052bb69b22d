/* Provisioning end to end with both example recipes, several slots, export and the demo. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "e2e.h"

static void test_smartplug_two_slots(void **state)
{
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char v[512], sql[512];

        (void)state;
        e2e_setup(&x, "plug");
        e2e_sim(&x, NULL, NULL);
        e2e_sim(&x, NULL, NULL);
        e2e_config(&x);
        e2e_kiln_run(&x, "smartplug-ctm.yaml", NULL, r);
        if (r->status != 0)
                fail_msg("kiln run exit %d\n%s\n%s", r->status, r->out, r->err);
        assert_int_equal(r->n_unit, 2);
        for (unsigned i = 0; i < 2; i++) {
                assert_string_equal(r->unit[i].verdict, "PASS");
                assert_string_equal(r->unit[i].code, "null");
        }
        assert_string_not_equal(r->unit[0].serial, r->unit[1].serial);
        assert_non_null(strstr(r->out, "\"event\":\"run_end\""));
        assert_non_null(strstr(r->out, "\"step\":\"attest\""));
        /* the record: certificate, lifecycle, debug closed, QR payload naming the serial */
        snprintf(sql, sizeof(sql),
                 "SELECT label_qr FROM units WHERE serial = '%s' AND verdict = 'PASS' AND "
                 "debug_closed = 1 AND secure_boot = 1 AND lifecycle = 'PRODUCTION' AND "
                 "dev_mode = 1 AND operator = 'e2e-operator' AND work_order = 'WO-E2E'",
                 r->unit[0].serial);
        e2e_sql(&x, sql, v, sizeof(v));
        assert_non_null(strstr(v, r->unit[0].serial));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates WHERE current = 1"),
                         2);
        /* the password is kept only as an HMAC commitment */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM credentials WHERE method = "
                                         "'hmac-sha256' AND length(commitment) = 64"),
                         2);
        e2e_check_invariants(&x);
        {
                const char *args[] = {"export", "--db", x.db, "--format", "csv", NULL};
                char *out = calloc(1, 1 << 20);

                assert_int_equal(e2e_kiln(&x, args, out, 1 << 20, NULL, 0), 0);
                assert_non_null(strstr(out, "serial,chip_uid,mac,macs,verdict"));
                assert_non_null(strstr(out, r->unit[1].serial));
                assert_non_null(strstr(out, "\"-----BEGIN CERTIFICATE-----\n"));
                free(out);
        }
        e2e_teardown(&x);
        free(r);
}

static void test_gateway(void **state)
{
        static const char *const gw[] = {"--product", "gateway-g2", NULL};
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char mac0[64], fuse[64], sql[256];

        (void)state;
        e2e_setup(&x, "gateway");
        e2e_sim(&x, NULL, gw);
        e2e_config(&x);
        e2e_kiln_run(&x, "gateway-industrial.yaml", NULL, r);
        if (r->status != 0 || r->n_unit != 1 || strcmp(r->unit[0].verdict, "PASS") != 0)
                fail_msg("kiln run exit %d\n%s\n%s", r->status, r->out, r->err);
        /* two keys, two certificates, two MACs, the first burned into mac0, the firmware sent */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates WHERE current = 1"),
                         2);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM macs"), 2);
        e2e_sql(&x, "SELECT replace(mac, ':', '') FROM macs WHERE idx = 0", mac0, sizeof(mac0));
        e2e_sql(&x, "SELECT readback FROM fuse_journal WHERE field = 'mac0' AND state = 'done'",
                fuse, sizeof(fuse));
        assert_string_equal(mac0, fuse);
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM objects WHERE name = 'fw_image' AND "
                                   "sha256 = '12750f8ef03b437e0e4468ff55cfd59729f915c9bae3f3f0e"
                                   "de3b0ecf85e3bed'");
        assert_int_equal(e2e_sql_int(&x, sql), 1);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

static void test_demo_twice(void **state)
{
        struct e2e x;
        char dir[1100], *out = calloc(1, 1 << 16), *err = calloc(1, 1 << 16);
        const char *args[] = {"demo", "--units", "3", "--dir", dir, "--slots", "2", NULL};

        (void)state;
        e2e_setup(&x, "demo");
        /* a relative --dir, as the README's quick start gives it */
        assert_int_equal(chdir(x.dir), 0);
        snprintf(dir, sizeof(dir), "demo");
        snprintf(x.db, sizeof(x.db), "%.1000s/demo/kiln.db", x.dir);
        if (e2e_kiln(&x, args, out, 1 << 16, err, 1 << 16) != 0)
                fail_msg("demo failed\n%s\n%s", out, err);
        assert_non_null(strstr(out, "3 units: 3 PASS"));
        if (e2e_kiln(&x, args, out, 1 << 16, err, 1 << 16) != 0)
                fail_msg("second demo failed\n%s\n%s", out, err);
        assert_non_null(strstr(out, "using the development PKI"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 6);
        e2e_check_invariants(&x);
        free(out);
        free(err);
}

/*
 * The README's promise: kill -9 the demo in the middle of a run, run it again on the same
 * directory, and it first finishes or dispositions what was left, then provisions new units.
 */
static void test_demo_killed_then_rerun(void **state)
{
        struct e2e x;
        char dir[1100], buf[65536] = "";
        char *out = calloc(1, 1 << 16), *err = calloc(1, 1 << 16);
        const char *again[] = {"demo", "--units", "2", "--dir", dir, "--slots", "4", NULL};
        size_t n = 0;
        int po[2], pid, seen = 0;

        (void)state;
        e2e_setup(&x, "demokill");
        snprintf(dir, sizeof(dir), "%.1000s/demo", x.dir);
        snprintf(x.db, sizeof(x.db), "%.1000s/kiln.db", dir);
        assert_int_equal(pipe(po), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                const char *argv[] = {x.kiln, "demo",    "--units", "200", "--dir",
                                      dir,    "--slots", "4",       "--json", NULL};

                dup2(po[1], 1);
                close(po[0]);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        close(po[1]);
        /* kill it while the four slots are busy: after the third unit */
        while (seen < 3) {
                ssize_t k = read(po[0], buf + n, sizeof(buf) - 1 - n);
                const char *p = buf;

                if (k <= 0)
                        fail_msg("the demo ended early:\n%s", buf);
                n += (size_t)k;
                buf[n] = '\0';
                for (seen = 0; (p = strstr(p, "\"event\":\"unit\"")) != NULL; p++)
                        seen++;
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(po[0]);
        e2e_check_invariants(&x);
        if (e2e_kiln(&x, again, out, 1 << 16, err, 1 << 16) != 0)
                fail_msg("demo after kill -9 failed\n%s\n%s", out, err);
        /* nothing is left in progress: the leftovers were resumed or retried to PASS */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict <> 'PASS'"), 0);
        assert_true(e2e_sql_int(&x, "SELECT count(*) FROM units") >= 5);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(out);
        free(err);
}

/*
 * Continuous mode (no --once): a slot provisions its unit, waits for the operator to swap it, and
 * provisions the next one on the same port; a second slot with nothing in it must not hold the
 * run up. The port is a stable symlink, as /dev/serial/by-id gives on a line.
 */
static void test_continuous_swap(void **state)
{
        struct e2e x;
        char link[1200], cfg_body[4096], buf[65536] = "";
        const char *a_args[] = {"--link", link, NULL};
        int fd, pid, status = 0;
        size_t n = 0;
        FILE *f;

        (void)state;
        e2e_setup(&x, "swap");
        snprintf(link, sizeof(link), "%s/slot-a.tty", x.dir);
        e2e_sim(&x, NULL, a_args);
        e2e_config(&x);
        /* slot A on the link, slot B on a port where no device will ever answer */
        f = fopen(x.config, "r");
        assert_non_null(f);
        n = fread(cfg_body, 1, sizeof(cfg_body) - 1, f);
        fclose(f);
        cfg_body[n] = '\0';
        *strstr(cfg_body, "slots:\n") = '\0';
        f = fopen(x.config, "w");
        assert_non_null(f);
        fprintf(f, "%sslots:\n  - id: A\n    port: %s\n  - id: B\n    port: unix:%s/none.sock\n",
                cfg_body, link, x.dir);
        fclose(f);
        {
                const char *argv[] = {x.kiln, "run", "--config", x.config, "--recipe", NULL,
                                      "--work-order", "WO-SWAP", "--operator", "op", "--units",
                                      "2", "--json", NULL};
                char recipe[1300];
                int po[2];

                e2e_recipe_path(&x, "smartplug-ctm.yaml", recipe, sizeof(recipe));
                argv[5] = recipe;
                assert_int_equal(pipe(po), 0);
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        dup2(po[1], 1);
                        close(po[0]);
                        execv(argv[0], (char *const *)(uintptr_t)argv);
                        _exit(127);
                }
                close(po[1]);
                fd = po[0];
        }
        /* the first unit passes; then the operator swaps it for another one */
        n = 0;
        while (strstr(buf, "\"event\":\"unit\"") == NULL || n == 0) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);

                if (k <= 0)
                        fail_msg("kiln ended before the first unit:\n%.*s", (int)n, buf);
                n += (size_t)k;
                buf[n] = '\0';
        }
        assert_non_null(strstr(buf, "\"verdict\":\"PASS\""));
        e2e_sim_stop(&x, 0);
        x.n_dev = 0;
        e2e_sim(&x, NULL, a_args);
        for (;;) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);

                if (k <= 0)
                        break;
                n += (size_t)k;
                buf[n] = '\0';
        }
        close(fd);
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("kiln run exit %d:\n%s", status, buf);
        assert_non_null(strstr(buf, "\"units\":2,\"pass\":2"));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(DISTINCT chip_uid) FROM units WHERE "
                                         "verdict = 'PASS' AND slot = 'A'"),
                         2);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_smartplug_two_slots),
                cmocka_unit_test(test_gateway),
                cmocka_unit_test(test_demo_twice),
                cmocka_unit_test(test_demo_killed_then_rerun),
                cmocka_unit_test(test_continuous_swap),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
