/*
 * End-to-end harness: the real `kiln` binary against real `kiln-dut-sim` processes over
 * pseudo-terminals, with a private SoftHSM development token under the build directory.
 */
#ifndef KILN_E2E_H
#define KILN_E2E_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/simfix.h"

#define E2E_UNITS_MAX 32
#define E2E_SLOTS_MAX 8

struct e2e {
        char dir[1024];     /* this test's private directory */
        char hsm[1024];     /* dev PKI (shared by the tests of one executable) */
        char db[1100];
        char config[1100];
        char kiln[600];
        char sim[600];
        char src[600];      /* source tree: recipes */
        struct simfix_dev dev[E2E_SLOTS_MAX];
        char uid[E2E_SLOTS_MAX][65];
        unsigned n_dev;
};

struct e2e_unit {
        char slot[16];
        char serial[64];
        char chip_uid[65];
        char verdict[16];
        char code[32];
        int resumed;
        unsigned attempt;
};

struct e2e_run {
        int status; /* exit status of kiln, or -signal */
        struct e2e_unit unit[E2E_UNITS_MAX];
        unsigned n_unit;
        char out[65536]; /* stdout (JSON lines) */
        char err[16384]; /* stderr */
};

/* A fresh directory for one test case, sharing the executable's dev PKI. */
void e2e_setup(struct e2e *x, const char *name);
/* Stop simulators. */
void e2e_teardown(struct e2e *x);

/* Start a simulator in the next slot; uid NULL picks one. extra: NULL-terminated options. Returns
 * the slot index. A restart with the same uid reuses its state file. */
unsigned e2e_sim(struct e2e *x, const char *uid, const char *const *extra);
/* Stop the simulator of slot i (SIGTERM); returns its wait status. */
int e2e_sim_stop(struct e2e *x, unsigned i);
/* Restart the simulator of slot i from its state file (new pty). */
void e2e_sim_restart(struct e2e *x, unsigned i, const char *const *extra);

/* Write the station config for the running simulators' ports. */
void e2e_config(struct e2e *x);

/* kiln run --config --once --json with the recipe from recipes/ (file name), extra args. */
void e2e_kiln_run(struct e2e *x, const char *recipe, const char *const *extra,
                  struct e2e_run *ret);
/* Run any kiln command; stdout/stderr captured. Returns the exit status. */
int e2e_kiln(struct e2e *x, const char *const *args, char *out, size_t out_cap, char *err,
             size_t err_cap);
/* Start kiln run in the background (for kill tests); returns its pid. */
int e2e_kiln_run_bg(struct e2e *x, const char *recipe, const char *const *extra, int *ret_out_fd);

const struct e2e_unit *e2e_unit_by_slot(const struct e2e_run *r, const char *slot);

/* DESIGN.md §11 invariants on the database; fails the test on any violation. Also verifies every
 * current certificate with `openssl verify -x509_strict` against its recorded chain. */
void e2e_check_invariants(struct e2e *x);

/* `openssl verify -x509_strict` of every current certificate in the database at db_path against its
 * recorded chain; scratch files go to workdir. Fails the test on any that does not verify. */
void e2e_verify_db_certs(const char *db_path, const char *workdir);

/* One value from the database (first column of the first row), "" when no row. */
void e2e_sql(struct e2e *x, const char *sql, char *out, size_t cap);
long e2e_sql_int(struct e2e *x, const char *sql);

/* Path of the recipes directory's file into out. */
void e2e_recipe_path(const struct e2e *x, const char *file, char *out, size_t cap);

#endif
