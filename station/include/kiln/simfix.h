/*
 * Simulated devices for the demo and tests: start kiln-dut-sim processes and find the
 * pseudo-terminal each one opened. A simulator dies with the station (PR_SET_PDEATHSIG), so a
 * station killed with kill -9 leaves no orphans holding ports.
 */
#ifndef KILN_SIMFIX_H
#define KILN_SIMFIX_H

#include <stddef.h>
#include <sys/types.h>

#include "kiln/limits.h"

struct simfix_dev {
        pid_t pid;
        char port[KILN_PORT_SPEC_MAX];
};

/*
 * Start `sim_path` with `args` (NULL-terminated, not including argv[0]) plus `--pty` unless args
 * name a `--socket`, send its stderr to `log_path` (or /dev/null when NULL), and wait up to
 * timeout_ms for its `PTY <path>` or `SOCKET <path>` line; ret->port is then the pts path or
 * "unix:<path>".
 */
int simfix_start(const char *sim_path, const char *const *args, const char *log_path,
                 unsigned timeout_ms, struct simfix_dev *ret);
/* SIGTERM, wait up to timeout_ms, then SIGKILL. *ret_status is the wait status (may be NULL). */
int simfix_stop(struct simfix_dev *d, unsigned timeout_ms, int *ret_status);
/* The kiln-dut-sim next to the running kiln binary, else $KILN_DUT_SIM. */
int simfix_find_sim(char *out, size_t cap);

#endif
