/*
 * kiln-fault-campaign: the fault campaign of DESIGN.md §11 (see docs/testing.md).
 *
 * For both example recipes it first runs a traced clean unit (the calibration, fc_trace.c), then
 * builds the case matrix from it: for every step of the unit flow a device disconnect placed in
 * that step, kill -9 of the station inside it (at its end, in the middle of a device request, and
 * before its database commit), a corrupted, a dropped and a noisy byte whose seed puts the first
 * fault in that step; a stuck bit and a power cut on every planned fuse field; a bad proof of
 * possession, a cloned UID, a key generation slower than the host's budget. Every case checks the
 * verdict and failure code docs/operator.md promises, that the fault really landed where it was
 * aimed, the invariants (e2e_check_invariants, kiln audit verify, the simulated chips against the
 * database), and the restart with the same device: retried to PASS with the same serial and MACs,
 * resumed to PASS after a kill during the lock, or refused with E-DISPOSITION.
 *
 * Cases run in parallel processes (-j, default 2), each in its own directory under
 * $KILN_BUILD_DIR/faults-tmp, kept when the case fails. The last line is always
 *     fault campaign: N cases, P passed, F failed
 *
 * usage: kiln-fault-campaign [-j N] [--only SUBSTRING]... [--list] [--keep]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "faults.h"
#include "fc_log.h"
#include "kiln/sim.h"

#define CASES_MAX 512
#define CASE_TIMEOUT_S 300
#define EXTRA_MAX 8
#define CORRUPT_RATE 2e-4
#define EXHAUST_RATE 0.2
/* over the host's KEYGEN deadline: budget 10 s + margin 0.5 s + wire time of the largest frame
 * at 115200 baud (0.36 s) */
#define SLOW_KEYGEN_MS "11500"

enum fc_kind {
        K_DISCONNECT,  /* --disconnect-after: the device vanishes on a request of the step */
        K_UNPLUG,      /* the device is unplugged while kiln is held inside a host-only step */
        K_KILL_END,    /* kill -9 while kiln writes the step's own event: its work is done */
        K_KILL_MID,    /* kill -9 while a request of the step is with the device */
        K_KILL_COMMIT, /* kill -9 while the step waits for its database commit */
        K_CORRUPT,     /* --corrupt-rate: the first corrupted byte is in the step */
        K_DROP,        /* --drop-rate: the first dropped byte is in the step */
        K_NOISE,       /* --noise: the first log line after the boot log is in the step */
        K_EXHAUST,     /* corruption on every attempt of the step's request */
        K_STUCK,       /* --stuck-fuse FIELD:BIT on a bit the plan burns */
        K_POWER_CUT,   /* --power-cut FIELD */
        K_BAD_POP,     /* --bad-pop */
        K_CLONE,       /* --clone-uid of a unit already PASS */
        K_CLONE_SLOTS, /* the genuine chip and its clone in two slots at once */
        K_SLOW_KEYGEN, /* --slow-keygen over the host's budget: a retransmitted KEYGEN */
        K_MAX
};

static const char *const kind_names[K_MAX] = {
    "disconnect", "unplug",  "kill-end", "kill-mid",    "kill-commit",
    "corrupt",    "drop",    "noise",    "exhaust",     "stuck",
    "power-cut",  "bad-pop", "clone",    "clone-slots", "slow-keygen"};

/* What the restart with the same device must do. */
enum fc_next {
        NX_PASS1,  /* nothing was admitted: a first attempt that passes */
        NX_RETRY,  /* a retry: PASS, next attempt, same serial and MACs */
        NX_RESUME, /* a resumed lock: PASS, same attempt, resumed */
        NX_DISPO,  /* refused with E-DISPOSITION, nothing written or burned */
        NX_PASSED, /* a PASS unit presented again: refused in identify (its lifecycle is now
                    * production, which no recipe admits), the PASS record untouched */
        NX_MAX
};

enum fc_pos { POS_PRE, POS_ADMITTED, POS_LOCK };

struct fcase {
        char name[FC_NAME_MAX];
        char what[320];
        unsigned rc;
        enum fc_kind kind;
        int step;         /* index into the calibration's steps, -1: none */
        int verdict_gate; /* K_KILL_END after the verdict is recorded */
        unsigned frame;   /* K_DISCONNECT: the request it vanishes on; K_KILL_MID: wait for */
        int field;        /* K_STUCK, K_POWER_CUT: index into the calibration's fields */
        uint64_t seed;
        double rate;
        unsigned baud;
        char extra[EXTRA_MAX][48];
        unsigned n_extra;
};

static struct calib *cals;
static struct fcase *cases;
static unsigned n_cases;
/* One development PKI per parallel worker, shared by the cases that worker runs: SoftHSM rewrites
 * its token file at every login, and a second process reading the token directory at that moment
 * finds no token at all ("tokens present: none"). */
#define JOBS_MAX 16
static char pki_hsm[JOBS_MAX][512];
static char tmp_base[400];

/* ------------------------------------------------------------------------ helpers */

static enum fc_pos step_pos(const char *s)
{
        if (strcmp(s, "connect") == 0 || strcmp(s, "identify") == 0)
                return POS_PRE;
        if (strncmp(s, "lock.", 5) == 0 || strcmp(s, "finish") == 0)
                return POS_LOCK;
        return POS_ADMITTED;
}

static const char *sname(const struct fc_ctx *c, int step)
{
        return step >= 0 ? c->cal->st[step].name : "-";
}

static void extra_add(struct fcase *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void extra_add(struct fcase *k, const char *fmt, ...)
{
        va_list ap;

        if (k->n_extra == EXTRA_MAX)
                return;
        va_start(ap, fmt);
        vsnprintf(k->extra[k->n_extra++], sizeof(k->extra[0]), fmt, ap);
        va_end(ap);
}

static void extra_argv(const struct fcase *k, const char **argv)
{
        unsigned n = 0;

        for (; n < k->n_extra; n++)
                argv[n] = k->extra[n];
        argv[n] = NULL;
}

static void wait_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int event_index(const struct calib *cal, const char *event)
{
        char pat[64];

        snprintf(pat, sizeof(pat), "\"event\":\"%s\"", event);
        for (unsigned i = 0; i < cal->n_ev; i++)
                if (strstr(cal->ev[i], pat) != NULL)
                        return (int)i;
        return -1;
}

/*
 * What identifies calibration event idx in kiln's output: its step ("step":"NAME", closing quote
 * included) or its kind ("event":"NAME"), and how many times that marker occurs up to it.
 */
static unsigned event_marker(const struct calib *cal, unsigned idx, char *marker, size_t cap)
{
        char v[FC_STEP_MAX];
        unsigned n = 0;

        if (fc_json_str(cal->ev[idx], "step", v, sizeof(v)) == 0)
                snprintf(marker, cap, "\"step\":\"%s\"", v);
        else if (fc_json_str(cal->ev[idx], "event", v, sizeof(v)) == 0)
                snprintf(marker, cap, "\"event\":\"%s\"", v);
        else
                snprintf(marker, cap, "%s", cal->ev[idx]);
        for (unsigned i = 0; i <= idx; i++)
                n += strstr(cal->ev[i], marker) != NULL;
        return n;
}

/* Read kiln's output until calibration event idx has been printed. */
static int read_event(struct fc_ctx *c, struct fc_krun *k, unsigned idx)
{
        char marker[FC_LINE_MAX];
        unsigned n = event_marker(c->cal, idx, marker, sizeof(marker));

        return fc_kiln_read_marker(c, k, marker, n, 60);
}

/* The unit event of a slot with the verdict and code expected (code NULL: none). */
static int expect_unit(struct fc_ctx *c, const struct fc_krun *k, const char *slot,
                       const char *verdict, const char *code, const char *failed_step,
                       struct fc_unit *u)
{
        char exp[256], failed[FC_STEP_MAX];

        snprintf(exp, sizeof(exp), "verdict %s%s%s%s%s", verdict, code ? " " : "", code ? code : "",
                 failed_step ? ", failing in step " : "", failed_step ? failed_step : "");
        if (fc_unit(k, slot, u) < 0)
                return fc_fail(c, exp, "no unit event (kiln exit status %d); output:\n%s",
                               WIFEXITED(k->status) ? WEXITSTATUS(k->status) : -1, k->out);
        if (strcmp(u->verdict, verdict) != 0 || strcmp(u->code, code ? code : "null") != 0)
                return fc_fail(c, exp, "verdict %s %s; output:\n%s", u->verdict, u->code, k->out);
        if (failed_step != NULL) {
                fc_failed_step(k, failed, sizeof(failed));
                if (strcmp(failed, failed_step) != 0)
                        return fc_fail(c, exp, "the first failed step is '%s'; output:\n%s", failed,
                                       k->out);
        }
        return 0;
}

/* The verdict a device failure in step `step` gets, and what its restart must do. */
static void device_failure(const char *step, const char **verdict, const char **code,
                           enum fc_next *nx)
{
        switch (step_pos(step)) {
        case POS_PRE:
                *verdict = "FAIL";
                *code = "E-DISCONNECT";
                *nx = NX_PASS1;
                break;
        case POS_ADMITTED:
                *verdict = "FAIL";
                *code = "E-DISCONNECT";
                *nx = NX_RETRY;
                break;
        default:
                *verdict = "LOCK_FAILED";
                *code = "E-LOCK-INTERRUPTED";
                *nx = NX_DISPO;
        }
}

/* --------------------------------------------------------------- database snapshots */

struct snap {
        long units, journal, attempts, verified;
        char serial[64], macs[160], verdict[16], finish[80];
};

static void snap_take(struct fc_ctx *c, const char *uid, struct snap *s)
{
        char q[512];

        memset(s, 0, sizeof(*s));
        s->units = fc_sql_int(c, "SELECT count(*) FROM units");
        s->journal = fc_sql_int(c, "SELECT count(*) FROM fuse_journal");
        snprintf(q, sizeof(q), "SELECT serial FROM units WHERE chip_uid = '%s'", uid);
        fc_sql(c, q, s->serial, sizeof(s->serial));
        snprintf(q, sizeof(q), "SELECT verdict FROM units WHERE chip_uid = '%s'", uid);
        fc_sql(c, q, s->verdict, sizeof(s->verdict));
        snprintf(q, sizeof(q), "SELECT attempts FROM units WHERE chip_uid = '%s'", uid);
        s->attempts = fc_sql_int(c, q);
        snprintf(q, sizeof(q),
                 "SELECT group_concat(mac, ',') FROM (SELECT m.mac FROM macs m JOIN units u ON "
                 "u.id = m.unit_id WHERE u.chip_uid = '%s' ORDER BY m.idx)",
                 uid);
        fc_sql(c, q, s->macs, sizeof(s->macs));
        snprintf(q, sizeof(q),
                 "SELECT e.hash FROM events e JOIN units u ON u.id = e.unit_id WHERE u.chip_uid "
                 "= '%s' AND e.kind = 'unit.finish' ORDER BY e.seq DESC LIMIT 1",
                 uid);
        fc_sql(c, q, s->finish, sizeof(s->finish));
        snprintf(q, sizeof(q),
                 "SELECT count(*) FROM events e JOIN units u ON u.id = e.unit_id WHERE "
                 "u.chip_uid = '%s' AND e.kind = 'unit.verified'",
                 uid);
        s->verified = fc_sql_int(c, q);
}

/* -------------------------------------------------------------------- the restart */

static int restart_check(struct fc_ctx *c, enum fc_next nx, const struct snap *b,
                         const struct fc_krun *k, const struct fc_unit *u)
{
        struct snap a;
        struct fc_log *log = calloc(1, sizeof(*log));
        char *text = fc_simlog(c, 0, c->simlog_off[0]);
        char exp[512];
        int r = -1;

        if (log == NULL || text == NULL) {
                r = fc_fail(c, "memory", "out of memory");
                goto out;
        }
        fc_log_scan(text, log);
        snap_take(c, c->x.uid[0], &a);
        switch (nx) {
        case NX_PASS1:
                snprintf(exp, sizeof(exp), "restart: PASS, attempt 1, not resumed");
                if (strcmp(u->verdict, "PASS") != 0 || u->attempt != 1 || u->resumed)
                        goto mismatch;
                break;
        case NX_RETRY:
                snprintf(exp, sizeof(exp),
                         "restart: retried to PASS, attempt %ld, same serial %s and MACs [%s]",
                         b->attempts + 1, b->serial, b->macs);
                if (strcmp(u->verdict, "PASS") != 0 || u->attempt != (unsigned)b->attempts + 1 ||
                    u->resumed || strcmp(u->serial, b->serial) != 0 || strcmp(a.macs, b->macs) != 0)
                        goto mismatch;
                break;
        case NX_RESUME:
                snprintf(exp, sizeof(exp),
                         "restart: the lock resumed to PASS, attempt %ld, serial %s, no field "
                         "programmed twice",
                         b->attempts, b->serial);
                if (strcmp(u->verdict, "PASS") != 0 || !u->resumed ||
                    u->attempt != (unsigned)b->attempts || strcmp(u->serial, b->serial) != 0 ||
                    log->burned_twice)
                        goto mismatch;
                break;
        case NX_DISPO:
                snprintf(exp, sizeof(exp),
                         "restart: refused with E-DISPOSITION, verdict stays %s, nothing written "
                         "or burned",
                         b->verdict);
                if (strcmp(u->code, "E-DISPOSITION") != 0 || log->n_program != 0 ||
                    log->n_lifecycle != 0 || log->n_write != 0 || log->n_keygen != 0 ||
                    a.journal != b->journal || strcmp(a.verdict, b->verdict) != 0)
                        goto mismatch;
                break;
        case NX_PASSED:
                snprintf(exp, sizeof(exp),
                         "restart: refused with E-LIFECYCLE, the PASS record of serial %s "
                         "untouched",
                         b->serial);
                if (strcmp(u->code, "E-LIFECYCLE") != 0 || a.units != b->units ||
                    strcmp(a.verdict, "PASS") != 0 || strcmp(a.finish, b->finish) != 0 ||
                    log->n_program != 0 || log->n_write != 0 || log->n_keygen != 0)
                        goto mismatch;
                break;
        default:
                break;
        }
        r = 0;
        goto out;
mismatch:
        r = fc_fail(c, exp,
                    "%s %s attempt %u resumed %d serial %s MACs [%s] verdict in db %s; device "
                    "saw %u programs, %u writes, %u keygens%s; output:\n%s",
                    u->verdict, u->code, u->attempt, u->resumed, u->serial, a.macs, a.verdict,
                    log->n_program, log->n_write, log->n_keygen,
                    log->burned_twice ? ", a field burned twice" : "", k->out);
out:
        free(log);
        free(text);
        return r;
}

/* The operator puts the same unit back (same chip, no fault) and runs the station again. */
static int second_run(struct fc_ctx *c, enum fc_next nx)
{
        struct snap b;
        struct fc_krun k;
        struct fc_unit u;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        snap_take(c, c->x.uid[0], &b);
        c->baud = 0;
        fc_sim_restart(c, 0, NULL);
        fc_config(c);
        if (c->failed || fc_kiln_run(c, &k) < 0)
                goto out;
        if (fc_unit(&k, "S1", &u) < 0) {
                r = fc_fail(c, "a unit event on restart", "none; output:\n%s", k.out);
                goto out;
        }
        /* units left IN_PROGRESS are announced before anything starts */
        if (strcmp(b.verdict, "IN_PROGRESS") == 0 &&
            strstr(k.out, "\"kind\":\"interrupted\"") == NULL) {
                r = fc_fail(c, "an 'interrupted' alert for the unit the kill left behind",
                            "none; output:\n%s", k.out);
                goto out;
        }
        if (restart_check(c, nx, &b, &k, &u) < 0 || fc_check_invariants(c) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

/* ------------------------------------------------------------------- kill checks */

enum kstate { KS_NONE, KS_OPEN, KS_LOCK, KS_PASS };

static int check_after_kill(struct fc_ctx *c, const struct fc_krun *k, int step, enum kstate want,
                            int allow_finish_event)
{
        static const char *const names[] = {"no unit row", "the unit IN_PROGRESS before its lock",
                                            "the unit IN_PROGRESS with its lock started",
                                            "the unit PASS"};
        char verdict[32], exp[256];
        long lock = fc_sql_int(c, "SELECT lock_started FROM units");
        long units = fc_sql_int(c, "SELECT count(*) FROM units");
        int ok;

        /* where the kill landed: after the previous step's event, before this step's (finish
         * prints its event before it commits the verdict: there, before the unit event) */
        if (step >= 0 && strcmp(c->cal->st[step].name, "finish") == 0 && want == KS_LOCK &&
            strstr(k->out, "\"event\":\"unit\"") != NULL)
                return fc_fail(c, "the kill lands before the verdict",
                               "kiln printed the unit event; output:\n%s", k->out);
        if (step >= 0 && fc_step_event(k, c->cal->st[step].name) != NULL &&
            !(strcmp(c->cal->st[step].name, "finish") == 0 && allow_finish_event))
                return fc_fail(c, "the kill lands inside the step",
                               "kiln printed the '%s' event before it was killed: the step "
                               "ended first; output:\n%s",
                               c->cal->st[step].name, k->out);
        if (step >= 0 && c->cal->st[step].ev > 0) {
                char marker[FC_LINE_MAX];
                unsigned n = event_marker(c->cal, c->cal->st[step].ev - 1, marker, sizeof(marker));

                if (!fc_kiln_has_marker(k, marker, n))
                        return fc_fail(c, "the kill lands inside the step",
                                       "kiln had not printed %s, the event before the step, "
                                       "when it was killed; output:\n%s",
                                       marker, k->out);
        }
        fc_sql(c, "SELECT verdict FROM units", verdict, sizeof(verdict));
        switch (want) {
        case KS_NONE:
                ok = units == 0;
                break;
        case KS_OPEN:
                ok = units == 1 && strcmp(verdict, "IN_PROGRESS") == 0 && lock == 0;
                break;
        case KS_LOCK:
                ok = units == 1 && strcmp(verdict, "IN_PROGRESS") == 0 && lock == 1;
                break;
        default:
                ok = units == 1 && strcmp(verdict, "PASS") == 0;
        }
        snprintf(exp, sizeof(exp), "after the kill: %s", names[want]);
        if (!ok)
                return fc_fail(c, exp, "%ld unit(s), verdict '%s', lock_started %ld", units,
                               verdict, lock);
        return fc_check_invariants(c);
}

/* Where a kill at the end of the step (or inside a device request of it) leaves the unit. The
 * 'lock' step itself talks to no device: it records steps 1-8 with every fuse intent in one commit
 * and then prints its event, so a kill at its end finds the lock started. */
static enum kstate kill_state(const char *step)
{
        if (strcmp(step, "lock") == 0)
                return KS_LOCK;
        switch (step_pos(step)) {
        case POS_PRE:
                return KS_NONE;
        case POS_ADMITTED:
                return KS_OPEN;
        default:
                return KS_LOCK;
        }
}

static enum fc_next kill_next(enum kstate s)
{
        return s == KS_NONE   ? NX_PASS1
               : s == KS_OPEN ? NX_RETRY
               : s == KS_LOCK ? NX_RESUME
                              : NX_PASSED;
}

/* ----------------------------------------------------------------------- runners */

static int run_disconnect(struct fc_ctx *c, const struct fcase *f)
{
        const char *extra[EXTRA_MAX + 1], *verdict, *code;
        struct fc_krun k;
        struct fc_unit u;
        enum fc_next nx;
        int st, r = -1;

        extra_argv(f, extra);
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0)
                goto out;
        st = fc_sim_stop(c, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 3) {
                r = fc_fail(c, "the device vanished (kiln-dut-sim exit 3)", "wait status %d", st);
                goto out;
        }
        device_failure(sname(c, f->step), &verdict, &code, &nx);
        if (expect_unit(c, &k, "S1", verdict, code, sname(c, f->step), &u) < 0)
                goto out;
        if (nx == NX_PASS1 && strcmp(u.serial, "null") != 0) {
                r = fc_fail(c, "no serial allocated before admission", "serial %s", u.serial);
                goto out;
        }
        if (fc_check_invariants(c) < 0 || second_run(c, nx) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int next_device_step(const struct calib *cal, int step)
{
        for (unsigned i = (unsigned)step + 1; i < cal->n_st; i++)
                if (cal->st[i].first_rx > 0)
                        return (int)i;
        return -1;
}

static int run_unplug(struct fc_ctx *c, const struct fcase *f)
{
        const char *verdict, *code;
        struct fc_krun k;
        struct fc_unit u;
        enum fc_next nx;
        int gate = (int)c->cal->st[f->step].ev, next = next_device_step(c->cal, f->step), st;
        int r = -1;

        fc_sim_start(c, NULL, NULL);
        fc_config(c);
        if (next < 0) {
                r = fc_fail(c, "a device step after the host step", "none after '%s'",
                            sname(c, f->step));
                goto out;
        }
        if (fc_kiln_start(c, gate, &k) < 0 || fc_kiln_wait_gate(c, &k, gate) < 0)
                goto out;
        /* kiln is inside the step, unable to leave it: pull the unit out */
        st = fc_sim_stop(c, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                r = fc_fail(c, "the simulator stops cleanly", "wait status %d", st);
                goto out;
        }
        if (fc_kiln_release(c, &k) < 0 || fc_kiln_finish(c, &k) < 0)
                goto out;
        device_failure(sname(c, next), &verdict, &code, &nx);
        if (expect_unit(c, &k, "S1", verdict, code, sname(c, next), &u) < 0 ||
            fc_check_invariants(c) < 0 || second_run(c, nx) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int run_kill_end(struct fc_ctx *c, const struct fcase *f)
{
        struct fc_krun k;
        enum kstate ks;
        int gate, r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        gate = f->verdict_gate ? event_index(c->cal, "unit") : (int)c->cal->st[f->step].ev;
        fc_sim_start(c, NULL, NULL);
        fc_config(c);
        if (gate < 0) {
                r = fc_fail(c, "a calibrated unit event", "none");
                goto out;
        }
        if (fc_kiln_start(c, gate, &k) < 0 || fc_kiln_wait_gate(c, &k, gate) < 0 ||
            fc_kiln_kill(c, &k) < 0)
                goto out;
        ks = f->verdict_gate ? KS_PASS : kill_state(sname(c, f->step));
        if (check_after_kill(c, &k, f->verdict_gate ? -1 : f->step, ks, 0) < 0 ||
            second_run(c, kill_next(ks)) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

/* Steps whose request gets no simulated busy time: the device is frozen (SIGSTOP) instead. */
static int mid_by_stop(const char *step)
{
        return strcmp(step, "connect") == 0 || strcmp(step, "data") == 0 ||
               strcmp(step, "attest") == 0 || strcmp(step, "lock.lifecycle") == 0 ||
               strcmp(step, "finish") == 0;
}

static int wait_rx(struct fc_ctx *c, unsigned frame)
{
        for (unsigned waited = 0; waited < 60000; waited += 2) {
                if (fc_simlog_rx(c, 0) >= frame)
                        return 0;
                wait_ms(2);
        }
        return fc_fail(c, "the device receives the request the kill waits for",
                       "request %u never came", frame);
}

static int run_kill_mid(struct fc_ctx *c, const struct fcase *f)
{
        const char *extra[EXTRA_MAX + 1];
        const char *step = sname(c, f->step);
        struct fc_krun k;
        enum kstate ks = kill_state(step);
        unsigned prev = c->cal->st[f->step].ev - 1;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        extra_argv(f, extra);
        fc_sim_start(c, NULL, extra);
        c->baud = f->baud;
        fc_config(c);
        if (mid_by_stop(step)) {
                /* hold kiln at the end of the step before, freeze the device, let kiln go: it
                 * sends the step's first request and waits for an answer that cannot come */
                if (fc_kiln_start(c, (int)prev, &k) < 0 || fc_kiln_wait_gate(c, &k, (int)prev) < 0)
                        goto out;
                kill(c->x.dev[0].pid, SIGSTOP);
                if (fc_kiln_release(c, &k) < 0 || read_event(c, &k, prev) < 0)
                        goto out;
        } else {
                /* the device is busy (line model) once it has the request: kill then */
                if (fc_kiln_start(c, -1, &k) < 0 || read_event(c, &k, prev) < 0 ||
                    wait_rx(c, f->frame) < 0)
                        goto out;
        }
        if (fc_kiln_kill(c, &k) < 0 || check_after_kill(c, &k, f->step, ks, 0) < 0 ||
            second_run(c, kill_next(ks)) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int run_kill_commit(struct fc_ctx *c, const struct fcase *f)
{
        const char *step = sname(c, f->step);
        unsigned prev = c->cal->st[f->step].ev - 1;
        struct fc_krun k;
        sqlite3 *h = NULL;
        enum kstate ks;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        fc_sim_start(c, NULL, NULL);
        fc_config(c);
        if (fc_kiln_start(c, (int)prev, &k) < 0 || fc_kiln_wait_gate(c, &k, (int)prev) < 0)
                goto out;
        /* take the database's write lock: the step can do everything up to its commit */
        if (sqlite3_open_v2(c->x.db, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
            sqlite3_busy_timeout(h, 10000) != SQLITE_OK ||
            sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
                r = fc_fail(c, "the database write lock", "%s", h ? sqlite3_errmsg(h) : "open");
                goto out;
        }
        if (fc_kiln_release(c, &k) < 0 || read_event(c, &k, prev) < 0)
                goto out;
        /* finish reads the device back before it commits; admit, record and lock talk to the
         * device not at all (admit: identify asked it everything) */
        if (c->cal->st[f->step].last_rx > 0 && wait_rx(c, c->cal->st[f->step].last_rx) < 0)
                goto out;
        /* SQLite's busy handler sleeps between tries: kiln is waiting for the commit */
        for (unsigned waited = 0; fc_wchan_has(k.pid, "nanosleep") == 0; waited += 2) {
                if (waited > 30000) {
                        r = fc_fail(c, "kiln waits for the database lock in the step",
                                    "it never did; output:\n%s", k.out);
                        goto out;
                }
                wait_ms(2);
        }
        if (fc_kiln_kill(c, &k) < 0)
                goto out;
        sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(h);
        h = NULL;
        if (strcmp(step, "admit") == 0)
                ks = KS_NONE;
        else if (strcmp(step, "finish") == 0)
                ks = KS_LOCK;
        else
                ks = KS_OPEN; /* record, and lock before its one commit */
        if (check_after_kill(c, &k, f->step, ks, 1) < 0)
                goto out;
        if ((strcmp(step, "record") == 0 && fc_sql_int(c, "SELECT count(*) FROM keys") != 0) ||
            (strcmp(step, "lock") == 0 &&
             (fc_sql_int(c, "SELECT count(*) FROM events WHERE kind = 'unit.verified'") != 0 ||
              fc_sql_int(c, "SELECT count(*) FROM fuse_journal") != 0)) ||
            (strcmp(step, "finish") == 0 &&
             fc_sql_int(c, "SELECT count(*) FROM fuse_journal WHERE state <> 'intent'") != 0)) {
                r = fc_fail(c, "nothing of the step committed", "the step's records are there");
                goto out;
        }
        if (second_run(c, kill_next(ks)) < 0)
                goto out;
        r = 0;
out:
        if (h != NULL) {
                sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
                sqlite3_close(h);
        }
        fc_kiln_free(&k);
        return r;
}

static unsigned recipe_keys(const struct calib *cal)
{
        unsigned n = 0;

        for (unsigned i = 0; i < cal->n_rx; i++)
                n += strcmp(cal->rx[i].type, "KEYGEN") == 0;
        return n;
}

static int run_rate(struct fc_ctx *c, const struct fcase *f)
{
        const char *extra[EXTRA_MAX + 1];
        struct fc_log *log = calloc(1, sizeof(*log));
        struct fc_krun k;
        struct fc_unit u;
        char *text = NULL;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        extra_argv(f, extra);
        if (log == NULL || f->seed == 0) {
                r = fc_fail(c, "a seed that puts the first fault in the step",
                            "none found within the search bound");
                goto out;
        }
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0 || expect_unit(c, &k, "S1", "PASS", NULL, NULL, &u) < 0)
                goto out;
        text = fc_simlog(c, 0, c->simlog_off[0]);
        fc_log_scan(text ? text : "", log);
        if (f->kind == K_NOISE) {
                if (log->n_retry != 0) {
                        r = fc_fail(c, "noise never costs a retransmission", "%u retransmissions",
                                    log->n_retry);
                        goto out;
                }
        } else if (log->first_retry == 0 || fc_frame_step(c->cal, log->first_retry) != f->step) {
                r = fc_fail(c, "the first retransmission (the first fault) in the step",
                            "first retransmitted request #%u, in step '%s'", log->first_retry,
                            sname(c, fc_frame_step(c->cal, log->first_retry)));
                goto out;
        }
        if (log->burned_twice || log->n_keygen != recipe_keys(c->cal)) {
                r = fc_fail(c,
                            "retransmissions answered from the response memory: each field "
                            "burned once, each key generated once",
                            "%u keys generated, a field burned twice: %d", log->n_keygen,
                            log->burned_twice);
                goto out;
        }
        if (fc_check_invariants(c) < 0)
                goto out;
        r = 0;
out:
        free(text);
        free(log);
        fc_kiln_free(&k);
        return r;
}

static int run_exhaust(struct fc_ctx *c, const struct fcase *f)
{
        const char *extra[EXTRA_MAX + 1];
        struct fc_log *log = calloc(1, sizeof(*log));
        struct fc_krun k;
        struct fc_unit u;
        char *text = NULL;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        extra_argv(f, extra);
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (log == NULL || fc_kiln_run(c, &k) < 0 ||
            expect_unit(c, &k, "S1", "FAIL", "E-LINK", sname(c, f->step), &u) < 0)
                goto out;
        text = fc_simlog(c, 0, c->simlog_off[0]);
        fc_log_scan(text ? text : "", log);
        if (log->n_retry != 4 || log->first_retry != 1) {
                r = fc_fail(c, "five attempts of the first request, then E-LINK",
                            "%u retransmissions, the first of request #%u", log->n_retry,
                            log->first_retry);
                goto out;
        }
        if (fc_check_invariants(c) < 0 || second_run(c, NX_PASS1) < 0)
                goto out;
        r = 0;
out:
        free(text);
        free(log);
        fc_kiln_free(&k);
        return r;
}

static int popcount_hex(const char *hex)
{
        int n = 0;

        for (; hex[0] != '\0' && hex[1] != '\0'; hex += 2) {
                unsigned v = 0;

                sscanf(hex, "%2x", &v);
                n += __builtin_popcount(v);
        }
        return n;
}

static int run_fuse_fault(struct fc_ctx *c, const struct fcase *f)
{
        const struct fc_field *fld = &c->cal->fld[f->field];
        const char *extra[EXTRA_MAX + 1];
        char step[32], q[256], state[32];
        struct fc_krun k;
        struct fc_unit u;
        int r = -1;

        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        snprintf(step, sizeof(step), "lock.%s", fld->phase);
        extra_argv(f, extra);
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0)
                goto out;
        if (f->kind == K_STUCK) {
                if (expect_unit(c, &k, "S1", "LOCK_FAILED", "E-FUSE-READBACK", step, &u) < 0)
                        goto out;
                snprintf(q, sizeof(q), "SELECT state FROM fuse_journal WHERE field = '%s'",
                         fld->field);
                fc_sql(c, q, state, sizeof(state));
                if (strcmp(state, "failed") != 0) {
                        r = fc_fail(c, "the field journaled as failed", "state '%s'", state);
                        goto out;
                }
        } else {
                struct sim_state *st = NULL;
                char path[1200];
                int st_code = fc_sim_stop(c, 0), want, have = 0, idx = sim_fuse_find(fld->field);

                if (!WIFEXITED(st_code) || WEXITSTATUS(st_code) != 4) {
                        r = fc_fail(c, "power lost mid-program (kiln-dut-sim exit 4)",
                                    "wait status %d", st_code);
                        goto out;
                }
                if (expect_unit(c, &k, "S1", "LOCK_FAILED", "E-LOCK-INTERRUPTED", step, &u) < 0)
                        goto out;
                fc_sim_state_path(c, 0, path, sizeof(path));
                if (idx < 0 || sim_state_load(path, &st) < 0) {
                        r = fc_fail(c, "the chip's state", "cannot load %s", path);
                        goto out;
                }
                for (unsigned b = 0; b < (sim_fuse_map[idx].width_bits + 7u) / 8u; b++)
                        have += __builtin_popcount(st->fuses[idx][b]);
                sim_state_free(st);
                want = (popcount_hex(fld->value_hex) + 1) / 2;
                if (have != want) {
                        r = fc_fail(c, "half of the field's bits burned before the power cut",
                                    "%d of %d bits", have, popcount_hex(fld->value_hex));
                        goto out;
                }
        }
        if (fc_check_invariants(c) < 0 || second_run(c, NX_DISPO) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int run_bad_pop(struct fc_ctx *c, const struct fcase *f)
{
        static const char *const extra[] = {"--bad-pop", NULL};
        struct fc_krun k;
        struct fc_unit u;
        int r = -1;

        (void)f;
        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0 || expect_unit(c, &k, "S1", "FAIL", "E-POP", "keys", &u) < 0)
                goto out;
        if (fc_sql_int(c, "SELECT count(*) FROM certificates") != 0 ||
            fc_sql_int(c, "SELECT count(*) FROM fuse_journal") != 0 ||
            fc_sql_int(c, "SELECT reserved + consumed FROM work_orders") != 0) {
                r = fc_fail(c, "nothing issued or burned, the quota returned",
                            "certificates, journal rows or a reservation remain");
                goto out;
        }
        if (fc_check_invariants(c) < 0 || second_run(c, NX_RETRY) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int run_clone(struct fc_ctx *c, const struct fcase *f)
{
        const char *clone[] = {"--clone-uid", c->x.uid[0], NULL};
        struct fc_krun k, k2;
        struct fc_unit u;
        struct snap b, a;
        int r = -1;

        (void)f;
        memset(&k, 0, sizeof(k));
        memset(&k2, 0, sizeof(k2));
        k.rfd = k.wfd = k2.rfd = k2.wfd = -1;
        fc_sim_start(c, NULL, NULL);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0 || expect_unit(c, &k, "S1", "PASS", NULL, NULL, &u) < 0)
                goto out;
        clone[1] = c->x.uid[0];
        snap_take(c, c->x.uid[0], &b);
        fc_sim_stop(c, 0); /* the genuine unit leaves; a chip claiming its UID arrives */
        fc_sim_start(c, NULL, clone);
        fc_config(c);
        fc_kiln_free(&k);
        for (int pass = 0; pass < 2; pass++) {
                struct fc_krun *kp = pass == 0 ? &k : &k2;

                if (fc_kiln_run(c, kp) < 0 ||
                    expect_unit(c, kp, NULL, "FAIL", "E-CLONE", NULL, &u) < 0)
                        goto out;
                snap_take(c, c->x.uid[0], &a);
                if (strstr(kp->out, "\"kind\":\"clone\"") == NULL || a.units != b.units ||
                    strcmp(a.finish, b.finish) != 0 || strcmp(a.verdict, "PASS") != 0 ||
                    strcmp(u.serial, "null") != 0) {
                        r = fc_fail(c, "a clone alert; the genuine unit's PASS record untouched",
                                    "units %ld -> %ld, verdict %s, finish event %s -> %s; "
                                    "output:\n%s",
                                    b.units, a.units, a.verdict, b.finish, a.finish, kp->out);
                        goto out;
                }
                if (fc_check_invariants(c) < 0)
                        goto out;
        }
        r = 0;
out:
        fc_kiln_free(&k);
        fc_kiln_free(&k2);
        return r;
}

static int run_clone_slots(struct fc_ctx *c, const struct fcase *f)
{
        const char *clone[] = {"--clone-uid", NULL, NULL};
        struct fc_krun k;
        struct fc_unit u1, u2;
        int pass, r = -1;

        (void)f;
        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        fc_sim_start(c, NULL, NULL);
        clone[1] = c->x.uid[0];
        fc_sim_start(c, NULL, clone);
        fc_config(c);
        if (fc_kiln_run(c, &k) < 0)
                goto out;
        if (fc_unit(&k, "S1", &u1) < 0 || fc_unit(&k, "S2", &u2) < 0) {
                r = fc_fail(c, "a unit event per slot", "output:\n%s", k.out);
                goto out;
        }
        pass = (strcmp(u1.verdict, "PASS") == 0) + (strcmp(u2.verdict, "PASS") == 0);
        if (pass != 1 || (strcmp(u1.code, "E-CLONE") != 0 && strcmp(u2.code, "E-CLONE") != 0) ||
            fc_sql_int(c, "SELECT count(*) FROM units") != 1 ||
            strstr(k.out, "\"kind\":\"clone\"") == NULL) {
                r = fc_fail(c, "one slot PASS, the other E-CLONE with a clone alert, one unit",
                            "S1 %s %s, S2 %s %s; output:\n%s", u1.verdict, u1.code, u2.verdict,
                            u2.code, k.out);
                goto out;
        }
        if (fc_check_invariants(c) < 0)
                goto out;
        r = 0;
out:
        fc_kiln_free(&k);
        return r;
}

static int run_slow_keygen(struct fc_ctx *c, const struct fcase *f)
{
        static const char *const extra[] = {"--slow-keygen", SLOW_KEYGEN_MS, NULL};
        struct fc_log *log = calloc(1, sizeof(*log));
        struct fc_krun k;
        struct fc_unit u;
        char *text = NULL;
        int r = -1;

        (void)f;
        memset(&k, 0, sizeof(k));
        k.rfd = k.wfd = -1;
        fc_sim_start(c, NULL, extra);
        fc_config(c);
        if (log == NULL || fc_kiln_run(c, &k) < 0 ||
            expect_unit(c, &k, "S1", "PASS", NULL, NULL, &u) < 0)
                goto out;
        text = fc_simlog(c, 0, c->simlog_off[0]);
        fc_log_scan(text ? text : "", log);
        if (log->n_retry < 1 || log->n_memory < 1 || log->n_keygen != recipe_keys(c->cal)) {
                r = fc_fail(c,
                            "KEYGEN retransmitted after the budget and answered from the "
                            "response memory: one key per slot",
                            "%u retransmissions, %u answers from memory, %u keys generated",
                            log->n_retry, log->n_memory, log->n_keygen);
                goto out;
        }
        if (fc_check_invariants(c) < 0)
                goto out;
        r = 0;
out:
        free(text);
        free(log);
        fc_kiln_free(&k);
        return r;
}

static int run_case(struct fc_ctx *c, const struct fcase *f)
{
        switch (f->kind) {
        case K_DISCONNECT:
                return run_disconnect(c, f);
        case K_UNPLUG:
                return run_unplug(c, f);
        case K_KILL_END:
                return run_kill_end(c, f);
        case K_KILL_MID:
                return run_kill_mid(c, f);
        case K_KILL_COMMIT:
                return run_kill_commit(c, f);
        case K_CORRUPT:
        case K_DROP:
        case K_NOISE:
                return run_rate(c, f);
        case K_EXHAUST:
                return run_exhaust(c, f);
        case K_STUCK:
        case K_POWER_CUT:
                return run_fuse_fault(c, f);
        case K_BAD_POP:
                return run_bad_pop(c, f);
        case K_CLONE:
                return run_clone(c, f);
        case K_CLONE_SLOTS:
                return run_clone_slots(c, f);
        case K_SLOW_KEYGEN:
                return run_slow_keygen(c, f);
        default:
                return fc_fail(c, "a known case kind", "kind %d", (int)f->kind);
        }
}

/* ------------------------------------------------------------------------- matrix */

static struct fcase *case_new(unsigned rc, enum fc_kind kind, int step, const char *suffix)
{
        struct fcase *f;
        const struct calib *cal = &cals[rc];

        if (n_cases == CASES_MAX)
                return NULL;
        f = &cases[n_cases++];
        memset(f, 0, sizeof(*f));
        f->rc = rc;
        f->kind = kind;
        f->step = step;
        f->field = -1;
        snprintf(f->name, sizeof(f->name), "%s/%s/%s%s%s", fc_recipes[rc].tag, kind_names[kind],
                 step >= 0 ? cal->st[step].name : "", suffix[0] && step >= 0 ? "/" : "", suffix);
        return f;
}

/* The n-th request of `type` in step s (1-based frame number), or the last one when n is 0. */
static unsigned nth_frame(const struct calib *cal, int s, const char *type, unsigned n)
{
        unsigned seen = 0, last = 0;

        for (unsigned i = cal->st[s].first_rx; i > 0 && i <= cal->st[s].last_rx; i++) {
                if (strcmp(cal->rx[i - 1].type, type) != 0)
                        continue;
                last = i;
                if (++seen == n)
                        return i;
        }
        return n == 0 ? last : 0;
}

/* A recipe with requests of kilobytes (firmware chunks) gets a lower drop rate, so a chunk is
 * not dropped on all five attempts. */
static int big_requests(const struct calib *cal)
{
        for (unsigned i = 0; i < cal->n_rx; i++)
                if (cal->rx[i].len > 2048)
                        return 1;
        return 0;
}

static void matrix_recipe(unsigned rc)
{
        const struct calib *cal = &cals[rc];
        struct fcase *f;

        for (int s = 0; s < (int)cal->n_st; s++) {
                const struct fc_step *st = &cal->st[s];
                const char *name = st->name;

                if (st->first_rx > 0) {
                        unsigned frames[3] = {st->first_rx, st->last_rx, st->first_program};
                        const char *tag[3] = {"first", "last", "program"};

                        for (unsigned v = 0; v < 3; v++) {
                                if (frames[v] == 0 || (v > 0 && frames[v] == st->first_rx) ||
                                    (v == 2 && frames[v] == st->last_rx))
                                        continue;
                                f = case_new(rc, K_DISCONNECT, s, tag[v]);
                                if (f == NULL)
                                        return;
                                f->frame = frames[v];
                                extra_add(f, "--disconnect-after");
                                extra_add(f, "%u", frames[v] - 1);
                                snprintf(f->what, sizeof(f->what),
                                         "--disconnect-after %u: the device vanishes on request "
                                         "#%u (%s), the %s request of '%s'",
                                         frames[v] - 1, frames[v], cal->rx[frames[v] - 1].type,
                                         tag[v], name);
                        }
                } else {
                        f = case_new(rc, K_UNPLUG, s, "");
                        if (f == NULL)
                                return;
                        snprintf(f->what, sizeof(f->what),
                                 "kiln held at the end of host-only step '%s' (stdout gate), the "
                                 "device stopped, kiln released",
                                 name);
                }
                f = case_new(rc, K_KILL_END, s, "");
                if (f == NULL)
                        return;
                snprintf(f->what, sizeof(f->what),
                         "kill -9 while kiln is blocked writing the '%s' event (all its work "
                         "done, nothing after)",
                         name);
                if (st->first_rx > 0) {
                        f = case_new(rc, K_KILL_MID, s, "");
                        if (f == NULL)
                                return;
                        if (mid_by_stop(name)) {
                                snprintf(f->what, sizeof(f->what),
                                         "kill -9 while '%s' waits for the device, which is "
                                         "frozen (SIGSTOP) before it answers",
                                         name);
                        } else {
                                if (strcmp(name, "identify") == 0) {
                                        f->frame = st->first_rx + 3;
                                        f->baud = 4800;
                                        extra_add(f, "--baud");
                                        extra_add(f, "4800");
                                } else if (strcmp(name, "keys") == 0) {
                                        f->frame = st->first_rx;
                                        extra_add(f, "--keygen-ms");
                                        extra_add(f, "1500");
                                } else if (strcmp(name, "firmware") == 0) {
                                        f->frame = nth_frame(cal, s, "WRITE_OBJECT", 3);
                                        extra_add(f, "--flash-ms-per-kib");
                                        extra_add(f, "150");
                                } else if (strcmp(name, "write") == 0) {
                                        f->frame = nth_frame(cal, s, "WRITE_OBJECT", 1);
                                        extra_add(f, "--flash-ms-per-kib");
                                        extra_add(f, "1500");
                                } else {
                                        /* the lock phases: during a fuse program */
                                        f->frame = strcmp(name, "lock.lockout") == 0
                                                       ? nth_frame(cal, s, "FUSE_PROGRAM", 0)
                                                       : st->first_program;
                                        extra_add(f, "--fuse-ms");
                                        extra_add(f, "800");
                                }
                                snprintf(f->what, sizeof(f->what),
                                         "%s %s: kill -9 once the device has request #%u (%s) "
                                         "and is busy with it",
                                         f->extra[0], f->extra[1], f->frame,
                                         f->frame ? cal->rx[f->frame - 1].type : "?");
                        }
                }
                /* the steps that commit (docs/operator.md): admission, the identity, the
                 * lock's one commit of steps 1-8 and every intent, and the verdict with the
                 * lock's results */
                if (strcmp(name, "admit") == 0 || strcmp(name, "record") == 0 ||
                    strcmp(name, "lock") == 0 || strcmp(name, "finish") == 0) {
                        f = case_new(rc, K_KILL_COMMIT, s, "");
                        if (f == NULL)
                                return;
                        snprintf(f->what, sizeof(f->what),
                                 "the database write lock held from the end of the step before: "
                                 "kill -9 while '%s' waits for its commit",
                                 name);
                }
                if (st->first_rx > 0) {
                        static const enum fc_kind rate_kinds[3] = {K_CORRUPT, K_DROP, K_NOISE};

                        for (unsigned v = 0; v < 3; v++) {
                                double rate = rate_kinds[v] == K_CORRUPT ? CORRUPT_RATE
                                              : big_requests(cal)        ? 2e-5
                                                                         : 1e-4;

                                f = case_new(rc, rate_kinds[v], s, "");
                                if (f == NULL)
                                        return;
                                f->rate = rate;
                                f->seed = rate_kinds[v] == K_CORRUPT ? fc_seed_corrupt(cal, s, rate)
                                          : rate_kinds[v] == K_DROP  ? fc_seed_drop(cal, s, rate)
                                                                     : fc_seed_noise(cal, s);
                                extra_add(f, "--seed");
                                extra_add(f, "%llu", (unsigned long long)f->seed);
                                if (rate_kinds[v] == K_NOISE) {
                                        extra_add(f, "--noise");
                                        snprintf(f->what, sizeof(f->what),
                                                 "--noise --seed %llu: boot log, and a log line "
                                                 "between frames reaches the host as '%s' sends "
                                                 "its first request",
                                                 (unsigned long long)f->seed, name);
                                } else {
                                        extra_add(f, rate_kinds[v] == K_CORRUPT ? "--corrupt-rate"
                                                                                : "--drop-rate");
                                        extra_add(f, "%g", rate);
                                        snprintf(f->what, sizeof(f->what),
                                                 "%s %g --seed %llu: the first %s byte is in a "
                                                 "frame of '%s'",
                                                 f->extra[2], rate, (unsigned long long)f->seed,
                                                 rate_kinds[v] == K_CORRUPT ? "corrupted"
                                                                            : "dropped",
                                                 name);
                                }
                        }
                }
        }
        f = case_new(rc, K_KILL_END, -1, "verdict");
        if (f == NULL)
                return;
        f->verdict_gate = 1;
        snprintf(f->what, sizeof(f->what),
                 "kill -9 while kiln writes the unit event (PASS recorded, not yet shown)");
        f = case_new(rc, K_EXHAUST, fc_step_index(cal, "connect"), "");
        if (f == NULL)
                return;
        {
                /* every attempt of HELLO's answer corrupted: with 20 % of the bytes flipped, the
                 * first seed whose five answers (each on its own draws) all get hit */
                unsigned wire_min, wire_max;
                uint64_t seed = 0;

                fc_wire_len(cal->tx[0].len, &wire_min, &wire_max);
                for (uint64_t s = 1; s < 100000 && seed == 0; s++) {
                        struct sim_prng p;
                        unsigned hit = 0;

                        sim_prng_seed(s, 2, &p);
                        for (unsigned a = 0; a < 5; a++) {
                                unsigned any = 0;

                                for (unsigned b = 0; b < wire_min; b++) {
                                        if (sim_prng_unit(&p) < EXHAUST_RATE) {
                                                any = 1;
                                                (void)sim_prng_below(&p, 8);
                                        }
                                }
                                hit += any;
                        }
                        if (hit == 5)
                                seed = s;
                }
                f->seed = seed;
                extra_add(f, "--seed");
                extra_add(f, "%llu", (unsigned long long)seed);
                extra_add(f, "--corrupt-rate");
                extra_add(f, "%g", EXHAUST_RATE);
                snprintf(f->what, sizeof(f->what),
                         "--corrupt-rate %g --seed %llu: all five attempts of HELLO's answer "
                         "corrupted",
                         EXHAUST_RATE, (unsigned long long)seed);
        }
        for (unsigned i = 0; i < cal->n_fld; i++) {
                const struct fc_field *fld = &cal->fld[i];
                char suffix[48];

                snprintf(suffix, sizeof(suffix), "%s:%u", fld->field, fld->set_bit);
                f = case_new(rc, K_STUCK, -1, suffix);
                if (f == NULL)
                        return;
                f->field = (int)i;
                extra_add(f, "--stuck-fuse");
                extra_add(f, "%s:%u", fld->field, fld->set_bit);
                snprintf(f->what, sizeof(f->what),
                         "--stuck-fuse %s:%u (a bit the plan burns, phase %s)", fld->field,
                         fld->set_bit, fld->phase);
                f = case_new(rc, K_POWER_CUT, -1, fld->field);
                if (f == NULL)
                        return;
                f->field = (int)i;
                extra_add(f, "--power-cut");
                extra_add(f, "%s", fld->field);
                snprintf(f->what, sizeof(f->what),
                         "--power-cut %s: power lost in the middle of its FUSE_PROGRAM (phase %s)",
                         fld->field, fld->phase);
        }
        f = case_new(rc, K_BAD_POP, fc_step_index(cal, "keys"), "");
        if (f == NULL)
                return;
        snprintf(f->what, sizeof(f->what), "--bad-pop: every proof of possession is wrong");
        f = case_new(rc, K_CLONE, fc_step_index(cal, "admit"), "");
        if (f == NULL)
                return;
        snprintf(f->what, sizeof(f->what),
                 "--clone-uid of the unit just provisioned (PASS), presented twice");
        if (rc == 0) {
                f = case_new(rc, K_CLONE_SLOTS, fc_step_index(cal, "identify"), "");
                if (f == NULL)
                        return;
                snprintf(f->what, sizeof(f->what),
                         "the genuine chip in S1 and a --clone-uid of it in S2, one run");
                f = case_new(rc, K_SLOW_KEYGEN, fc_step_index(cal, "keys"), "");
                if (f == NULL)
                        return;
                snprintf(f->what, sizeof(f->what),
                         "--slow-keygen %s: KEYGEN answers after the host's deadline (10.9 s)",
                         SLOW_KEYGEN_MS);
        }
}

/* ---------------------------------------------------------------------- scheduler */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static void rm_tree(const char *dir)
{
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static double mono_s(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The child: one case in dir, result in dir/result, exit 0 when it passed. */
static void case_child(const struct fcase *f, const char *dir, const char *pki)
{
        struct fc_ctx *c = calloc(1, sizeof(*c));
        char path[1200];
        int fd, r;
        FILE *res;

        setpgid(0, 0);
        snprintf(path, sizeof(path), "%s/case.log", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
        }
        if (c == NULL)
                _exit(2);
        fc_ctx_init(c, f->name, pki, dir, &cals[f->rc]);
        printf("case %s: %s\n", f->name, f->what);
        fflush(stdout);
        r = run_case(c, f);
        if (r == 0 && c->failed)
                r = -1;
        for (unsigned i = 0; i < c->x.n_dev; i++)
                if (c->x.dev[i].pid > 0)
                        kill(c->x.dev[i].pid, SIGCONT);
        e2e_teardown(&c->x);
        snprintf(path, sizeof(path), "%s/result", dir);
        res = fopen(path, "w");
        if (res != NULL) {
                if (r < 0)
                        fprintf(res, "expected: %s\ngot:      %s\n", c->expected, c->got);
                fclose(res);
        }
        fflush(stdout);
        _exit(r < 0 ? 1 : 0);
}

struct slot {
        pid_t pid;
        unsigned idx;
        double start;
        char dir[600];
};

static void print_file(const char *path, const char *indent, size_t max)
{
        FILE *f = fopen(path, "r");
        char line[4096];
        size_t n = 0;

        if (f == NULL)
                return;
        while (fgets(line, sizeof(line), f) != NULL && n < max) {
                printf("%s%s", indent, line);
                if (line[strlen(line) - 1] != '\n')
                        putchar('\n');
                n += strlen(line);
        }
        fclose(f);
}

static int case_done(const struct slot *s, int status, int keep, int timed_out)
{
        const struct fcase *f = &cases[s->idx];
        char path[1300];
        int ok = !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;

        if (ok) {
                printf("ok    %-44s %5.1f s\n", f->name, mono_s() - s->start);
                if (!keep)
                        rm_tree(s->dir);
                fflush(stdout);
                return 1;
        }
        printf("FAIL  %s\n", f->name);
        printf("      fault:    %s\n", f->what);
        snprintf(path, sizeof(path), "%s/result", s->dir);
        if (timed_out) {
                printf("      expected: the case ends within %d s\n      got:      it did not "
                       "(killed)\n",
                       CASE_TIMEOUT_S);
        } else if (access(path, R_OK) == 0) {
                print_file(path, "      ", 8000);
        } else {
                printf("      expected: the case runs to its end\n      got:      it exited "
                       "with status %d; the end of its log:\n",
                       status);
                snprintf(path, sizeof(path), "%s/case.log", s->dir);
                print_file(path, "        ", 4000);
        }
        printf("      kept:     %s\n", s->dir);
        printf("                database %s/kiln.db; logs %s/case.log, kiln-N.out, kiln-N.err, "
               "dev-*.log (simulator frame log)\n",
               s->dir, s->dir);
        fflush(stdout);
        return 0;
}

static int run_all(const unsigned *sel, unsigned n_sel, unsigned jobs, int keep,
                   unsigned *ret_passed)
{
        struct slot *slots = calloc(jobs, sizeof(*slots));
        unsigned next = 0, running = 0, passed = 0;

        if (slots == NULL)
                return -1;
        while (next < n_sel || running > 0) {
                while (next < n_sel && running < jobs) {
                        struct slot *s = NULL;
                        char name[FC_NAME_MAX];
                        pid_t pid;

                        for (unsigned j = 0; j < jobs && s == NULL; j++)
                                if (slots[j].pid == 0)
                                        s = &slots[j];
                        s->idx = sel[next++];
                        snprintf(name, sizeof(name), "%s", cases[s->idx].name);
                        for (char *p = name; *p; p++)
                                if (*p == '/' || *p == ':')
                                        *p = '_';
                        snprintf(s->dir, sizeof(s->dir), "%s/%s-XXXXXX", tmp_base, name);
                        if (mkdtemp(s->dir) == NULL) {
                                fprintf(stderr, "mkdtemp %s: %s\n", s->dir, strerror(errno));
                                free(slots);
                                return -1;
                        }
                        fflush(stdout);
                        pid = fork();
                        if (pid == 0)
                                case_child(&cases[s->idx], s->dir, pki_hsm[(size_t)(s - slots)]);
                        s->pid = pid;
                        s->start = mono_s();
                        running++;
                }
                for (unsigned j = 0; j < jobs; j++) {
                        struct slot *s = &slots[j];
                        int status = 0, timed_out = 0;
                        pid_t w;

                        if (s->pid <= 0)
                                continue;
                        w = waitpid(s->pid, &status, WNOHANG);
                        if (w == 0 && mono_s() - s->start > CASE_TIMEOUT_S) {
                                kill(-s->pid, SIGKILL);
                                kill(s->pid, SIGKILL);
                                waitpid(s->pid, &status, 0);
                                timed_out = 1;
                                w = s->pid;
                        }
                        if (w != s->pid)
                                continue;
                        passed += (unsigned)case_done(s, status, keep, timed_out);
                        s->pid = 0;
                        running--;
                }
                wait_ms(20);
        }
        free(slots);
        *ret_passed = passed;
        return 0;
}

static int make_pki(const char *kiln, char *pki_out, size_t cap)
{
        char tmpl[480];
        int status = 0;
        pid_t pid;

        snprintf(tmpl, sizeof(tmpl), "%s/pki-XXXXXX", tmp_base);
        if (mkdtemp(tmpl) == NULL)
                return -1;
        if (snprintf(pki_out, cap, "%s/hsm", tmpl) >= (int)cap)
                return -1;
        pid = fork();
        if (pid == 0) {
                int devnull = open("/dev/null", O_WRONLY);

                if (devnull >= 0)
                        dup2(devnull, 1);
                execl(kiln, kiln, "hsm", "init-dev", "--dir", pki_out, (char *)NULL);
                _exit(127);
        }
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
                return -1;
        return 0;
}

static void usage(FILE *f)
{
        fputs("usage: kiln-fault-campaign [-j N] [--only SUBSTRING]... [--list] [--keep]\n"
              "  -j N        cases in parallel (default: $KILN_FAULTS_JOBS, else 2)\n"
              "  --only S    run the cases whose name contains S (repeatable)\n"
              "  --list      print the case matrix and exit\n"
              "  --keep      keep the directories of passed cases too\n"
              "Environment: KILN_BUILD_DIR (kiln, kiln-dut-sim; cases under faults-tmp/),\n"
              "KILN_SOURCE_DIR (recipes/).\n",
              f);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {{"only", required_argument, NULL, 'o'},
                                             {"list", no_argument, NULL, 'l'},
                                             {"keep", no_argument, NULL, 'k'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
        const char *only[32];
        unsigned n_only = 0, jobs = 2, n_sel = 0, passed = 0, calib_ok = 0, *sel;
        int list = 0, keep = 0, ch;
        double t0 = mono_s();
        char build[PATH_MAX], kiln[PATH_MAX + 8];
        const char *env_jobs = getenv("KILN_FAULTS_JOBS");

        if (env_jobs != NULL && strtoul(env_jobs, NULL, 10) > 0 &&
            strtoul(env_jobs, NULL, 10) <= JOBS_MAX)
                jobs = (unsigned)strtoul(env_jobs, NULL, 10);
        while ((ch = getopt_long(argc, argv, "j:h", opts, NULL)) != -1) {
                switch (ch) {
                case 'j':
                        jobs = (unsigned)strtoul(optarg, NULL, 10);
                        if (jobs == 0 || jobs > JOBS_MAX) {
                                usage(stderr);
                                return 2;
                        }
                        break;
                case 'o':
                        if (n_only < 32)
                                only[n_only++] = optarg;
                        break;
                case 'l':
                        list = 1;
                        break;
                case 'k':
                        keep = 1;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        signal(SIGPIPE, SIG_IGN);
        cals = calloc(fc_n_recipes, sizeof(*cals));
        cases = calloc(CASES_MAX, sizeof(*cases));
        sel = calloc(CASES_MAX, sizeof(*sel));
        if (cals == NULL || cases == NULL || sel == NULL ||
            realpath(getenv("KILN_BUILD_DIR") ? getenv("KILN_BUILD_DIR") : ".", build) == NULL) {
                fprintf(stderr, "kiln-fault-campaign: cannot set up: %s\n", strerror(errno));
                printf("fault campaign: 0 cases, 0 passed, 0 failed\n");
                return 1;
        }
        setenv("KILN_BUILD_DIR", build, 1);
        snprintf(kiln, sizeof(kiln), "%s/kiln", build);
        if (snprintf(tmp_base, sizeof(tmp_base), "%s/faults-tmp", build) >= (int)sizeof(tmp_base)) {
                fprintf(stderr, "kiln-fault-campaign: build directory path too long\n");
                printf("fault campaign: 0 cases, 0 passed, 0 failed\n");
                return 1;
        }
        mkdir(tmp_base, 0700);
        for (unsigned j = 0; j < jobs; j++) {
                if (make_pki(kiln, pki_hsm[j], sizeof(pki_hsm[j])) < 0) {
                        fprintf(stderr, "kiln-fault-campaign: kiln hsm init-dev failed (%s)\n",
                                kiln);
                        printf("fault campaign: 0 cases, 0 passed, 0 failed\n");
                        return 1;
                }
        }
        /* the calibrations are cases too: a clean traced run of each recipe must pass */
        for (unsigned rc = 0; rc < fc_n_recipes; rc++) {
                char dir[480], why[512];

                snprintf(dir, sizeof(dir), "%s/calibrate-%s-XXXXXX", tmp_base, fc_recipes[rc].tag);
                if (mkdtemp(dir) == NULL || fc_calibrate(&fc_recipes[rc], pki_hsm[0], dir,
                                                         &cals[rc], why, sizeof(why)) < 0) {
                        printf("FAIL  %s/calibrate\n      expected: a clean traced run\n      "
                               "got:      %s\n      kept:     %s\n",
                               fc_recipes[rc].tag, why, dir);
                        continue;
                }
                calib_ok++;
                if (!list)
                        printf("ok    %s/calibrate: %u steps, %u device requests, %u planned "
                               "fuse fields\n",
                               fc_recipes[rc].tag, cals[rc].n_st, cals[rc].n_rx, cals[rc].n_fld);
                if (!keep)
                        rm_tree(dir);
                matrix_recipe(rc);
        }
        for (unsigned i = 0; i < n_cases; i++) {
                int pick = n_only == 0;

                for (unsigned o = 0; o < n_only; o++)
                        pick |= strstr(cases[i].name, only[o]) != NULL;
                if (pick)
                        sel[n_sel++] = i;
        }
        if (list) {
                for (unsigned i = 0; i < n_sel; i++)
                        printf("%-46s %s\n", cases[sel[i]].name, cases[sel[i]].what);
                printf("%u cases\n", n_sel);
                return 0;
        }
        printf("running %u cases, %u at a time\n", n_sel, jobs);
        if (run_all(sel, n_sel, jobs, keep, &passed) < 0)
                fprintf(stderr, "kiln-fault-campaign: the scheduler failed\n");
        {
                unsigned total = n_sel + fc_n_recipes, ok = passed + calib_ok;

                printf("campaign time %.0f s\n", mono_s() - t0);
                for (unsigned j = 0; ok == total && !keep && j < jobs; j++) {
                        char *slash = strrchr(pki_hsm[j], '/');

                        if (slash != NULL)
                                *slash = '\0'; /* the pki-XXXXXX directory */
                        rm_tree(pki_hsm[j]);
                }
                printf("fault campaign: %u cases, %u passed, %u failed\n", total, ok, total - ok);
                return ok == total ? 0 : 1;
        }
}
