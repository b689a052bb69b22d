/*
 * Fault campaign (tests/faults): every step of the unit flow of both example recipes under every
 * fault kiln-dut-sim offers, and kill -9 of the station at every step; each case is checked against
 * DESIGN.md §11 and against the verdict and restart behaviour docs/operator.md promises.
 *
 *   fc_trace.c   the calibration (a traced clean run per recipe: which device frames, bytes and
 *                events belong to which step) and the placement of seeded byte faults
 *   fc_run.c     the harness of one case: simulators, station configuration, kiln processes with
 *                an event gate on their stdout, the simulator's frame log, the checks
 *   campaign.c   the case matrix, the case runners, the parallel scheduler and the summary
 */
#ifndef KILN_FAULTS_H
#define KILN_FAULTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "e2e.h"

#define FC_NAME_MAX 96
#define FC_STEP_MAX 24
#define FC_STEPS_MAX 24
#define FC_EVENTS_MAX 40
#define FC_LINE_MAX 1024
#define FC_FRAMES_MAX 1024
#define FC_FIELDS_MAX 16
#define FC_OUT_MAX (256u << 10)
#define FC_DETAIL_MAX 2048

/* ------------------------------------------------------------------------------ recipes */

struct fc_recipe {
        const char *tag;     /* short name in case names: plug, gw */
        const char *file;    /* under recipes/ */
        const char *product; /* --product of the simulator */
};

extern const struct fc_recipe fc_recipes[];
extern const unsigned fc_n_recipes;

/* ---------------------------------------------------------------------------- calibration */

/* One frame the device received (a host request), in the order of the clean run. */
struct fc_rx {
        char type[32];
        uint32_t id;
        unsigned len; /* payload bytes */
        int step;     /* index into calib.st */
};

/* One frame the device sent (a response). */
struct fc_tx {
        char type[32];
        unsigned len;
        int step;
};

struct fc_step {
        char name[FC_STEP_MAX];
        unsigned ev;       /* index of its event in calib.ev */
        unsigned first_rx; /* 1-based number of its first request frame, 0: the step has none */
        unsigned last_rx;
        unsigned first_program; /* first FUSE_PROGRAM of the step, 0: none */
};

/* A fuse field the recipe plans (what the clean run journaled). */
struct fc_field {
        char phase[16];
        char field[32];
        char value_hex[2 * 64 + 1];
        unsigned set_bit; /* lowest bit that is 1 in the planned value */
};

struct calib {
        const struct fc_recipe *rc;
        char ev[FC_EVENTS_MAX][FC_LINE_MAX]; /* kiln's JSON lines of the clean run */
        size_t ev_min[FC_EVENTS_MAX];        /* their length (newline included), ms of 1 digit */
        unsigned n_ev;
        struct fc_step st[FC_STEPS_MAX];
        unsigned n_st;
        struct fc_rx rx[FC_FRAMES_MAX];
        unsigned n_rx;
        struct fc_tx tx[FC_FRAMES_MAX];
        unsigned n_tx;
        struct fc_field fld[FC_FIELDS_MAX];
        unsigned n_fld;
};

/* Run the traced clean run of recipe rc in dir (a fresh directory); fills *cal. 0 or -1 with why.
 */
int fc_calibrate(const struct fc_recipe *rc, const char *pki, const char *dir, struct calib *cal,
                 char *why, size_t why_cap);
int fc_step_index(const struct calib *cal, const char *name);
/* The step the 1-based request frame n belongs to, -1 when out of range. */
int fc_frame_step(const struct calib *cal, unsigned n);
/* Bytes of a frame with an n-byte payload on the wire, both delimiters (exact below 234 bytes). */
void fc_wire_len(unsigned payload, unsigned *ret_min, unsigned *ret_max);

/*
 * Seeded byte faults. The simulator draws every fault decision from sim_prng (kiln/sim.h): one
 * stream for received bytes, one for sent bytes, one for noise. Before the first fault a faulted
 * run exchanges exactly the frames of the clean run, so the seed decides which frame meets the
 * first fault. These find a seed whose first fault lands in a frame of step `step`; 0 when none was
 * found within the search bound.
 */
uint64_t fc_seed_corrupt(const struct calib *cal, int step, double rate);
uint64_t fc_seed_drop(const struct calib *cal, int step, double rate);
uint64_t fc_seed_noise(const struct calib *cal, int step);

/* -------------------------------------------------------------------------- one case */

/* What a kiln run printed, parsed. */
struct fc_unit {
        int present;
        char serial[64];
        char chip_uid[65];
        char mac[32];
        char verdict[16];
        char code[32];
        unsigned attempt;
        int resumed;
};

struct fc_krun {
        pid_t pid;
        int rfd;          /* read end of kiln's stdout */
        int wfd;          /* our copy of the write end while an event gate is armed, else -1 */
        size_t filler;    /* gate filler bytes still at the head of the pipe */
        size_t gate_room; /* bytes of events the gate lets through */
        char *out;        /* everything kiln printed (filler removed) */
        size_t len;
        int status; /* wait status */
        int reaped;
        int killed; /* we sent SIGKILL */
        char err_path[1200];
        char out_path[1200];
};

struct fc_ctx {
        struct e2e x;
        const struct calib *cal;
        char name[FC_NAME_MAX];
        unsigned runs;                  /* kiln runs so far */
        long simlog_off[E2E_SLOTS_MAX]; /* simulator log offset where the current run began */
        unsigned baud; /* line rate written into the station configuration, 0: none */
        char claimed_uid[E2E_SLOTS_MAX][65]; /* --clone-uid of a simulator, "" for its own UID */
        int failed;
        char expected[FC_DETAIL_MAX];
        char got[FC_DETAIL_MAX];
};

/* A case context over directory dir with the shared development PKI pki (its hsm directory). */
void fc_ctx_init(struct fc_ctx *c, const char *name, const char *pki, const char *dir,
                 const struct calib *cal);
/* kiln run's argument vector for recipe_path (NULL-terminated, at most cap entries). */
void fc_kiln_argv(struct fc_ctx *c, const char *recipe_path, const char **argv, unsigned cap);

/* Record the first failure of the case; always returns -1. */
int fc_fail(struct fc_ctx *c, const char *expected, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Simulator helpers: -v is always given (the frame log is the campaign's trace). */
unsigned fc_sim_start(struct fc_ctx *c, const char *uid, const char *const *extra);
void fc_sim_restart(struct fc_ctx *c, unsigned i, const char *const *extra);
int fc_sim_stop(struct fc_ctx *c, unsigned i);
char *fc_simlog(const struct fc_ctx *c, unsigned i, long from); /* malloc'ed, NUL-terminated */
void fc_simlog_mark(struct fc_ctx *c);
/* Count of frames received by simulator i since the current run began. */
unsigned fc_simlog_rx(const struct fc_ctx *c, unsigned i);
int fc_sim_state_path(const struct fc_ctx *c, unsigned i, char *out, size_t cap);

void fc_config(struct fc_ctx *c);

/*
 * kiln run --once --json. gate_event < 0: no gate. Otherwise kiln's stdout is a one-page pipe we
 * pre-fill so that exactly the events before index gate_event (as the calibration printed them)
 * fit: kiln then blocks inside write(2) of event gate_event, i.e. inside the step that event ends.
 */
int fc_kiln_start(struct fc_ctx *c, int gate_event, struct fc_krun *k);
/* Wait until kiln is blocked writing event gate_event (its earlier events all in the pipe). */
int fc_kiln_wait_gate(struct fc_ctx *c, struct fc_krun *k, int gate_event);
/* Let kiln go on: empty the pipe and drop our write end. */
int fc_kiln_release(struct fc_ctx *c, struct fc_krun *k);
/* Read kiln's output until the event of step `step` (or any unit event when step is NULL). */
int fc_kiln_read_step(struct fc_ctx *c, struct fc_krun *k, const char *step, unsigned timeout_s);
/* Read kiln's output until `marker` occurs `count` times; whether it does already. */
int fc_kiln_read_marker(struct fc_ctx *c, struct fc_krun *k, const char *marker, unsigned count,
                        unsigned timeout_s);
int fc_kiln_has_marker(const struct fc_krun *k, const char *marker, unsigned count);
int fc_kiln_kill(struct fc_ctx *c, struct fc_krun *k);
int fc_kiln_finish(struct fc_ctx *c, struct fc_krun *k);
void fc_kiln_free(struct fc_krun *k);
/* One complete run; *ret is the unit event of slot S1 (or of any slot when slot is NULL). */
int fc_kiln_run(struct fc_ctx *c, struct fc_krun *k);
int fc_unit(const struct fc_krun *k, const char *slot, struct fc_unit *ret);
/* The step event of `step` in the output, NULL when absent. */
const char *fc_step_event(const struct fc_krun *k, const char *step);
/* The first failed step event, NULL when none. */
const char *fc_failed_step(const struct fc_krun *k, char *step, size_t cap);
int fc_json_str(const char *line, const char *key, char *out, size_t cap);
/* Some thread of pid sleeps in a kernel function whose name contains `what`: 1 yes, 0 no, -1 we
 * may not see its wait channels (not allowed to ptrace it). */
int fc_wchan_has(pid_t pid, const char *what);

/* Checks; each returns 0 or fc_fail()'s -1. */
int fc_check_invariants(struct fc_ctx *c); /* e2e_check_invariants + kiln audit verify + device */
long fc_sql_int(struct fc_ctx *c, const char *sql);
void fc_sql(struct fc_ctx *c, const char *sql, char *out, size_t cap);

#endif
