/* Helpers shared by the benchmark programs. See bench_common.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "bench_common.h"
#include "kiln/agent.h"
#include "kiln/error.h"
#include "kiln/log.h"
#include "kiln/sim.h"
#include "kiln/transport.h"
#include "kiln/util.h"

/* ------------------------------------------------------------------------- loop devices */

#define LOOP_MAX_PAYLOAD 4096u
/* every request gets one response; a few frames of room is plenty */
#define LOOP_OUT_CAP (4u * KILN_FRAME_WIRE_MAX(LOOP_MAX_PAYLOAD))
#define LOOP_UID_LEN 8u

struct loop_dev {
        struct sim_state *st;
        struct sim_chip chip;
        struct kiln_agent agent;
        struct kiln_agent_config cfg;
        uint8_t rx[KILN_AGENT_RX_SIZE(LOOP_MAX_PAYLOAD)];
        uint8_t resp[KILN_AGENT_RESP_SIZE(LOOP_MAX_PAYLOAD)];
        uint8_t out[LOOP_OUT_CAP];
        size_t out_head, out_len;
};

static atomic_uint_fast64_t loop_us;
static atomic_uint_fast64_t loop_opened;

uint64_t bench_loop_device_us(void)
{
        return atomic_load(&loop_us);
}

uint64_t bench_loop_opened(void)
{
        return atomic_load(&loop_opened);
}

/* hooks.output: the agent's response frames, queued for the host's next read */
static int loop_output(void *ctx, const uint8_t *p, size_t n)
{
        struct loop_dev *d = ctx;

        if (d->out_head > 0 && d->out_head + d->out_len + n > sizeof(d->out)) {
                memmove(d->out, d->out + d->out_head, d->out_len);
                d->out_head = 0;
        }
        if (d->out_head + d->out_len + n > sizeof(d->out))
                return KILN_E_NOSPACE;
        memcpy(d->out + d->out_head + d->out_len, p, n);
        d->out_len += n;
        return KILN_OK;
}

/* hooks.stop: only faults (none configured) or a failed save (no state file) call it */
static void loop_stop(void *ctx, int code, const char *why)
{
        (void)ctx;
        fprintf(stderr, "bench: in-process device stopped (%d): %s\n", code, why);
        abort();
}

/* Feed the host's bytes to the agent one candidate at a time, as kiln-dut-sim does. */
static int loop_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct loop_dev *d = ctx;
        uint64_t t0 = kiln_now_us();
        int r = KILN_OK;

        (void)timeout_ms;
        while (n > 0) {
                const uint8_t *z = memchr(buf, 0, n);
                size_t k = z != NULL ? (size_t)(z - buf) + 1 : n;
                int fr = kiln_agent_feed(&d->agent, buf, k);

                if (fr == KILN_AGENT_RESET || d->chip.reset_requested) {
                        d->chip.reset_requested = 0;
                        r = kiln_agent_init(&d->cfg, &d->agent);
                        if (r < 0)
                                break;
                } else if (fr < 0) {
                        r = kiln_fail(fr, "in-process device: output lost");
                        break;
                }
                d->chip.busy_ms = 0; /* instant device: no line model */
                buf += k;
                n -= k;
        }
        atomic_fetch_add(&loop_us, kiln_now_us() - t0);
        return r;
}

static int loop_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct loop_dev *d = ctx;

        (void)timeout_ms;
        /* the device answers inside write(): nothing queued means nothing will come */
        if (d->out_len == 0)
                return KILN_E_TIMEOUT;
        if (n > d->out_len)
                n = d->out_len;
        memcpy(buf, d->out + d->out_head, n);
        d->out_head += n;
        d->out_len -= n;
        if (d->out_len == 0)
                d->out_head = 0;
        return (int)n;
}

static void loop_close(void *ctx)
{
        struct loop_dev *d = ctx;

        sim_state_free(d->st);
        kiln_free(d);
}

static const struct proto_transport_ops loop_ops = {
        .read = loop_read,
        .write = loop_write,
        .close = loop_close,
};

static int loop_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        struct loop_dev *d = kiln_calloc(1, sizeof(*d));
        uint8_t uid[LOOP_UID_LEN];
        struct sim_identity id;
        uint64_t t0 = kiln_now_us();
        int r;

        (void)rest;
        if (d == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (RAND_bytes(uid, sizeof(uid)) != 1) {
                r = kiln_fail(KILN_E_CRYPTO, "no random bytes for a chip UID");
                goto out;
        }
        memset(&id, 0, sizeof(id));
        id.uid = uid;
        id.uid_len = sizeof(uid);
        id.product = BENCH_LOOP_PRODUCT;
        id.hw_rev = BENCH_LOOP_HW_REV;
        id.fw_version = BENCH_LOOP_FW;
        id.storage_cap = SIM_STORAGE_DEFAULT;
        r = sim_state_new(&id, &d->st);
        if (r < 0)
                goto out;
        /* no state path: sim_chip_persist() saves nothing, so the device never touches a disk */
        sim_chip_init(d->st, NULL, &d->chip);
        d->chip.hooks.ctx = d;
        d->chip.hooks.output = loop_output;
        d->chip.hooks.stop = loop_stop;
        d->cfg.ops = &sim_chip_ops;
        d->cfg.ctx = &d->chip;
        d->cfg.rx_buf = d->rx;
        d->cfg.rx_cap = sizeof(d->rx);
        d->cfg.resp_buf = d->resp;
        d->cfg.resp_cap = sizeof(d->resp);
        d->cfg.max_payload = LOOP_MAX_PAYLOAD;
        r = kiln_agent_init(&d->cfg, &d->agent);
        if (r < 0)
                goto out;
        r = proto_transport_new(&loop_ops, d, spec, 0, ret);
        if (r < 0)
                goto out;
        d = NULL; /* the transport owns it */
        atomic_fetch_add(&loop_opened, 1);
out:
        if (d != NULL) {
                sim_state_free(d->st);
                kiln_free(d);
        }
        atomic_fetch_add(&loop_us, kiln_now_us() - t0);
        return r;
}

static struct proto_transport_scheme loop_scheme = {"loop", loop_open, NULL};

int bench_loop_register(void)
{
        /* the chip logs each key and fuse at info level: a person watching kiln-dut-sim wants
         * that, a benchmark does not */
        kiln_log_set_level(KILN_LOG_WARN);
        return proto_transport_scheme_register(&loop_scheme);
}

/* ------------------------------------------------------------------------------ machine */

void bench_loadavg(char *out, size_t cap)
{
        char buf[128];
        FILE *f = fopen("/proc/loadavg", "r");
        double a = 0, b = 0, c = 0;

        (void)kiln_strlcpy(out, "?", cap);
        if (f == NULL)
                return;
        if (fgets(buf, sizeof(buf), f) != NULL && sscanf(buf, "%lf %lf %lf", &a, &b, &c) == 3)
                (void)kiln_snprintf(out, cap, "%.2f %.2f %.2f", a, b, c);
        fclose(f);
}

double bench_load1(void)
{
        char buf[128];
        FILE *f = fopen("/proc/loadavg", "r");
        double a = -1;

        if (f == NULL)
                return -1;
        if (fgets(buf, sizeof(buf), f) == NULL || sscanf(buf, "%lf", &a) != 1)
                a = -1;
        fclose(f);
        return a;
}

double bench_cpu_self_s(void)
{
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) != 0)
                return 0;
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ----------------------------------------------------------------------------- children */

int bench_spawn(char *const *argv, int out_fd, const char *err_path, pid_t *ret_pid)
{
        pid_t pid = fork();

        if (pid < 0)
                return kiln_fail(KILN_E_IO, "fork: %s", strerror(errno));
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                int err = err_path != NULL
                                  ? open(err_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)
                                  : null;

                dup2(null, STDIN_FILENO);
                dup2(out_fd >= 0 ? out_fd : null, STDOUT_FILENO);
                dup2(err >= 0 ? err : null, STDERR_FILENO);
                execv(argv[0], argv);
                _exit(127);
        }
        *ret_pid = pid;
        return KILN_OK;
}

int bench_wait(pid_t pid, int *ret_status, long *ret_maxrss_kib, double *ret_cpu_s)
{
        struct rusage ru;
        int status = 0;
        pid_t w;

        do {
                w = wait4(pid, &status, 0, &ru);
        } while (w < 0 && errno == EINTR);
        if (w != pid)
                return kiln_fail(KILN_E_IO, "wait4: %s", strerror(errno));
        *ret_status = status;
        if (ret_maxrss_kib != NULL)
                *ret_maxrss_kib = ru.ru_maxrss;
        if (ret_cpu_s != NULL)
                *ret_cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        return KILN_OK;
}
