/*
 * Helpers shared by the benchmark programs (bench/README.md). Nothing here is timed on its own.
 *
 *   loop:     an in-process transport to an instant simulated device: the real device agent on the
 *             real simulated chip (kiln_sim), in RAM, without a state file, answering every request
 *             synchronously inside the host's write. Each proto_transport_open("loop:") is a new,
 *             factory-fresh chip of the smart plug's identity. The time spent inside the device
 *             (agent, chip, its key generation and signatures) is counted, so a benchmark can take
 *             it out of the host's figure.
 *   machine:  load average and CPU model, printed next to every figure.
 *   children: run a program and collect its peak resident memory (wait4).
 */
#ifndef KILN_BENCH_COMMON_H
#define KILN_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What the loop device reports as itself: the simulator's defaults (the smart plug admits
 * them). */
#define BENCH_LOOP_PRODUCT "smartplug-a1"
#define BENCH_LOOP_HW_REV 2u
#define BENCH_LOOP_FW "1.0.0"

/* Register the "loop" port scheme (once per process). */
int bench_loop_register(void);
/* Microseconds spent inside loop devices so far, and how many were opened. Thread-safe. */
uint64_t bench_loop_device_us(void);
uint64_t bench_loop_opened(void);

/* "1.23 0.98 0.75" from /proc/loadavg ("?" when unreadable). */
void bench_loadavg(char *out, size_t cap);
/* The 1-minute load average, -1 when unreadable. */
double bench_load1(void);

/* User + system CPU seconds of this process so far. */
double bench_cpu_self_s(void);

/*
 * Fork and exec argv (argv[0] a path), stdout to out_fd (-1: /dev/null), stderr to err_path
 * (NULL: /dev/null). *ret_pid is the child.
 */
int bench_spawn(char *const *argv, int out_fd, const char *err_path, pid_t *ret_pid);
/* Wait for pid; its exit status, peak resident set (KiB, wait4 ru_maxrss of the child itself and
 * any descendants it waited for) and CPU seconds (user + system). Outputs may be NULL. */
int bench_wait(pid_t pid, int *ret_status, long *ret_maxrss_kib, double *ret_cpu_s);

#endif
