/*
 * One end-to-end test per failure class of the station issue: bad proof of possession, cloned
 * UID, disconnect mid-step (then a retry), corrupted bytes, a stuck fuse bit, a power cut during a
 * fuse program, and the station killed mid-unit and restarted (during the lock: resume; before
 * it: retry). Each ends with the invariants of DESIGN.md §11.
 */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "e2e.h"

#define PLUG "smartplug-ctm.yaml"

static struct e2e_run *run_one(struct e2e *x, const char *const *sim_args)
{
        struct e2e_run *r = calloc(1, sizeof(*r));

        e2e_sim(x, NULL, sim_args);
        e2e_config(x);
        e2e_kiln_run(x, PLUG, NULL, r);
        if (r->n_unit != 1)
                fail_msg("expected one unit event; exit %d\n%s\n%s", r->status, r->out, r->err);
        return r;
}

static void expect(const struct e2e_run *r, const char *verdict, const char *code)
{
        if (strcmp(r->unit[0].verdict, verdict) != 0 || strcmp(r->unit[0].code, code) != 0)
                fail_msg("expected %s %s, got %s %s\n%s", verdict, code, r->unit[0].verdict,
                         r->unit[0].code, r->out);
}

static void test_bad_pop(void **state)
{
        static const char *const sim[] = {"--bad-pop", NULL};
        struct e2e x;
        struct e2e_run *r;

        (void)state;
        e2e_setup(&x, "badpop");
        r = run_one(&x, sim);
        assert_int_equal(r->status, 1);
        expect(r, "FAIL", "E-POP");
        /* nothing was issued, nothing burned, the quota came back */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates"), 0);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal"), 0);
        assert_int_equal(e2e_sql_int(&x, "SELECT reserved + consumed FROM work_orders"), 0);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

static void test_clone(void **state)
{
        struct e2e x;
        struct e2e_run *r;
        char clone_arg[80], before[128], after[128];
        const char *sim[] = {"--clone-uid", clone_arg, NULL};

        (void)state;
        e2e_setup(&x, "clone");
        r = run_one(&x, NULL);
        expect(r, "PASS", "null");
        e2e_sql(&x, "SELECT hash FROM events WHERE kind = 'unit.finish'", before, sizeof(before));
        snprintf(clone_arg, sizeof(clone_arg), "%s", x.uid[0]);
        e2e_sim_stop(&x, 0);
        x.n_dev = 0;
        free(r);
        /* another chip claiming the first one's UID */
        r = run_one(&x, sim);
        assert_int_equal(r->status, 1);
        expect(r, "FAIL", "E-CLONE");
        assert_non_null(strstr(r->out, "\"event\":\"alert\""));
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM events WHERE kind = "
                                         "'unit.clone_alert'"),
                         1);
        /* the genuine unit is untouched */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units"), 1);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 1);
        e2e_sql(&x, "SELECT hash FROM events WHERE kind = 'unit.finish'", after, sizeof(after));
        assert_string_equal(before, after);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

static void test_disconnect_then_retry(void **state)
{
        static const char *const sim[] = {"--disconnect-after", "20", NULL};
        struct e2e x;
        struct e2e_run *r, *r2 = calloc(1, sizeof(*r2));
        char serial[64];

        (void)state;
        e2e_setup(&x, "disconnect");
        r = run_one(&x, sim);
        expect(r, "FAIL", "E-DISCONNECT");
        snprintf(serial, sizeof(serial), "%s", r->unit[0].serial);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal"), 0);
        e2e_check_invariants(&x);
        /* the operator reseats the unit: same chip, same serial, attempt 2, PASS */
        e2e_sim_restart(&x, 0, NULL);
        e2e_config(&x);
        e2e_kiln_run(&x, PLUG, NULL, r2);
        assert_int_equal(r2->n_unit, 1);
        assert_string_equal(r2->unit[0].verdict, "PASS");
        assert_string_equal(r2->unit[0].serial, serial);
        assert_int_equal(r2->unit[0].attempt, 2);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates WHERE current = 0"),
                         1);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
        free(r2);
}

static void test_corrupted_link(void **state)
{
        /* about one frame in ten damaged each way, plus boot log and noise between frames */
        static const char *const sim[] = {"--corrupt-rate", "0.0002", "--drop-rate", "0.0001",
                                          "--noise",        "--seed",   "7",           NULL};
        struct e2e x;
        struct e2e_run *r;

        (void)state;
        e2e_setup(&x, "corrupt");
        r = run_one(&x, sim);
        /* retries with the same request id carry the unit through */
        expect(r, "PASS", "null");
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

static void test_stuck_fuse_bit(void **state)
{
        static const char *const sim[] = {"--stuck-fuse", "debug_disable:0", NULL};
        struct e2e x;
        struct e2e_run *r, *r2 = calloc(1, sizeof(*r2));

        (void)state;
        e2e_setup(&x, "stuck");
        r = run_one(&x, sim);
        expect(r, "LOCK_FAILED", "E-FUSE-READBACK");
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal WHERE field = "
                                         "'debug_disable' AND state = 'failed'"),
                         1);
        e2e_check_invariants(&x);
        /* it now needs a quality disposition: the station refuses to touch it again */
        e2e_kiln_run(&x, PLUG, NULL, r2);
        assert_int_equal(r2->n_unit, 1);
        assert_string_equal(r2->unit[0].code, "E-DISPOSITION");
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal"),
                         e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal WHERE "
                                         "intent_at IS NOT NULL"));
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
        free(r2);
}

static void test_power_cut_during_fuse(void **state)
{
        static const char *const sim[] = {"--power-cut", "sb_key_hash", NULL};
        struct e2e x;
        struct e2e_run *r;

        (void)state;
        e2e_setup(&x, "powercut");
        r = run_one(&x, sim);
        expect(r, "LOCK_FAILED", "E-LOCK-INTERRUPTED");
        /* the device died mid-program (exit 4): every intent was journaled before the first
         * burn, the interrupted one failed, and no burn followed it */
        assert_int_equal(WEXITSTATUS(e2e_sim_stop(&x, 0)), 4);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal WHERE field = "
                                         "'sb_key_hash' AND state = 'failed'"),
                         1);
        assert_true(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal WHERE field <> "
                                    "'sb_key_hash'") > 0);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM fuse_journal WHERE field <> "
                                         "'sb_key_hash' AND state <> 'intent'"),
                         0);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

/* Read kiln's JSON stream until a line contains `marker`, wait delay_ms, then kill -9 it. */
static void kill_at(int pid, int fd, const char *marker, unsigned delay_ms)
{
        char buf[65536];
        size_t n = 0;
        time_t deadline = time(NULL) + 60;

        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t k;

                if (time(NULL) > deadline) {
                        kill(pid, SIGKILL);
                        fail_msg("marker '%s' never came:\n%s", marker, buf);
                }
                if (poll(&p, 1, 1000) <= 0)
                        continue;
                k = read(fd, buf + n, sizeof(buf) - 1 - n);
                if (k <= 0) {
                        buf[n] = '\0';
                        fail_msg("kiln ended before '%s':\n%s", marker, buf);
                }
                n += (size_t)k;
                buf[n] = '\0';
                if (strstr(buf, marker) != NULL)
                        break;
        }
        usleep(delay_ms * 1000u);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(fd);
}

static void test_kill_during_lock_then_resume(void **state)
{
        /* each fuse program takes 400 ms, so the kill lands inside the lock */
        static const char *const sim[] = {"--fuse-ms", "400", NULL};
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        int fd, pid;

        (void)state;
        e2e_setup(&x, "killlock");
        e2e_sim(&x, NULL, sim);
        e2e_config(&x);
        pid = e2e_kiln_run_bg(&x, PLUG, NULL, &fd);
        /* 200 ms into the 400 ms burn of the first field */
        kill_at(pid, fd, "\"step\":\"lock\"", 200);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = "
                                         "'IN_PROGRESS' AND lock_started = 1"),
                         1);
        e2e_check_invariants(&x);
        /* restart: the unit is resumed from its journal and finished */
        e2e_kiln_run(&x, PLUG, NULL, r);
        assert_int_equal(r->n_unit, 1);
        if (strcmp(r->unit[0].verdict, "PASS") != 0 || !r->unit[0].resumed)
                fail_msg("expected a resumed PASS:\n%s\n%s", r->out, r->err);
        assert_int_equal(r->unit[0].attempt, 1);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

/* The station dies mid-lock; a clone of the chip UID shows up before the real unit does: it cannot
 * prove the unit's keys, so it is refused as a clone and the unit waits, untouched, for its own
 * device, which then finishes. */
static void test_resume_refuses_impostor(void **state)
{
        static const char *const slow[] = {"--fuse-ms", "400", NULL};
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char clone_arg[65], fuses_before[32];
        const char *impostor[] = {"--clone-uid", clone_arg, NULL};
        int fd, pid;

        (void)state;
        e2e_setup(&x, "impostor");
        e2e_sim(&x, NULL, slow);
        e2e_config(&x);
        pid = e2e_kiln_run_bg(&x, PLUG, NULL, &fd);
        kill_at(pid, fd, "\"step\":\"lock\"", 200);
        e2e_sql(&x, "SELECT count(*) FROM fuse_journal", fuses_before, sizeof(fuses_before));
        /* swap in another chip that claims the interrupted unit's UID */
        snprintf(clone_arg, sizeof(clone_arg), "%s", x.uid[0]);
        e2e_sim_stop(&x, 0);
        x.n_dev = 0;
        e2e_sim(&x, NULL, impostor);
        e2e_config(&x);
        e2e_kiln_run(&x, PLUG, NULL, r);
        assert_int_equal(r->n_unit, 1);
        assert_string_equal(r->unit[0].code, "E-CLONE");
        assert_non_null(strstr(r->out, "not the device the unit was started on"));
        /* nothing about the unit changed: still in progress, no new burn */
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = "
                                         "'IN_PROGRESS' AND lock_started = 1"),
                         1);
        {
                char fuses_after[32];

                e2e_sql(&x, "SELECT count(*) FROM fuse_journal", fuses_after, sizeof(fuses_after));
                assert_string_equal(fuses_before, fuses_after);
        }
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM events WHERE kind = "
                                         "'device.clone_alert'"),
                         1);
        e2e_check_invariants(&x);
        /* the real unit comes back and is finished */
        e2e_sim_stop(&x, 0);
        x.n_dev = 0;
        snprintf(x.uid[0], sizeof(x.uid[0]), "%s", clone_arg);
        e2e_sim_restart(&x, 0, NULL);
        x.n_dev = 1;
        e2e_config(&x);
        e2e_kiln_run(&x, PLUG, NULL, r);
        assert_int_equal(r->n_unit, 1);
        if (strcmp(r->unit[0].verdict, "PASS") != 0 || !r->unit[0].resumed)
                fail_msg("expected the real unit to resume to PASS:\n%s\n%s", r->out, r->err);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

/* A unit failed after its certificates were recorded; a clone of its chip UID comes for the retry:
 * it cannot prove the unit's keys, so it gets E-CLONE and no new keys, certificates or serial. */
static void test_retry_refuses_impostor(void **state)
{
        static const char *const dies[] = {"--disconnect-after", "20", NULL};
        struct e2e x;
        struct e2e_run *r;
        char clone_arg[65];
        const char *impostor[] = {"--clone-uid", clone_arg, NULL};

        (void)state;
        e2e_setup(&x, "retryclone");
        r = run_one(&x, dies);
        expect(r, "FAIL", "E-DISCONNECT");
        if (e2e_sql_int(&x, "SELECT count(*) FROM certificates") != 1)
                fail_msg("the first attempt must get as far as recording its certificate");
        snprintf(clone_arg, sizeof(clone_arg), "%s", x.uid[0]);
        e2e_sim_stop(&x, 0);
        x.n_dev = 0;
        free(r);
        r = run_one(&x, impostor);
        expect(r, "FAIL", "E-CLONE");
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM certificates"), 1);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM keys"), 1);
        assert_int_equal(e2e_sql_int(&x, "SELECT count(*) FROM units WHERE verdict = 'FAIL' AND "
                                         "fail_code = 'E-CLONE'"),
                         1);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

static void test_kill_before_lock_then_retry(void **state)
{
        static const char *const sim[] = {"--slow-keygen", "1500", NULL};
        struct e2e x;
        struct e2e_run *r = calloc(1, sizeof(*r));
        char serial[64];
        int fd, pid;

        (void)state;
        e2e_setup(&x, "killkeys");
        e2e_sim(&x, NULL, sim);
        e2e_config(&x);
        pid = e2e_kiln_run_bg(&x, PLUG, NULL, &fd);
        kill_at(pid, fd, "\"step\":\"admit\"", 100);
        e2e_sql(&x, "SELECT serial FROM units WHERE verdict = 'IN_PROGRESS' AND lock_started = 0",
                serial, sizeof(serial));
        assert_true(serial[0] != '\0');
        e2e_check_invariants(&x);
        e2e_kiln_run(&x, PLUG, NULL, r);
        assert_int_equal(r->n_unit, 1);
        if (strcmp(r->unit[0].verdict, "PASS") != 0)
                fail_msg("expected PASS on retry:\n%s\n%s", r->out, r->err);
        assert_string_equal(r->unit[0].serial, serial); /* the allocation is kept */
        assert_int_equal(r->unit[0].attempt, 2);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        free(r);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_pop),
                cmocka_unit_test(test_clone),
                cmocka_unit_test(test_disconnect_then_retry),
                cmocka_unit_test(test_corrupted_link),
                cmocka_unit_test(test_stuck_fuse_bit),
                cmocka_unit_test(test_power_cut_during_fuse),
                cmocka_unit_test(test_kill_during_lock_then_resume),
                cmocka_unit_test(test_kill_before_lock_then_retry),
                cmocka_unit_test(test_resume_refuses_impostor),
                cmocka_unit_test(test_retry_refuses_impostor),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
