/*
 * The harness of one campaign case: simulators (through tests/e2e), the station configuration,
 * kiln processes whose stdout can be gated event by event, and the checks run after every kiln run.
 *
 * The event gate. kiln --json prints one event per write(2), each well under PIPE_BUF, so a write
 * to a pipe either goes in whole or blocks. kiln's stdout is a pipe of one page (F_SETPIPE_SZ 4096)
 * that we fill with newlines before kiln starts, leaving room for exactly the events before the
 * gate: their lengths are known from the calibration except the digits of "ms", so the room is
 * their sum with six digits each, and the slack (at most five bytes an event) is far below the
 * length of the next event (over 90 bytes). kiln then blocks inside write(2) of the gate event: it
 * has done all the work of that step and nothing after it. We see that when the pipe holds the
 * earlier events and a thread of kiln sleeps in pipe_write (/proc/PID/task/TID/wchan). No timing is
 * involved: kiln cannot get past the gate until we empty the pipe.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "faults.h"
#include "fc_log.h"
#include "kiln/sim.h"

#define KILN_RUN_TIMEOUT_S 240
#define GATE_TIMEOUT_S 120
#define PIPE_PAGE 4096
#define MS_SLACK 5 /* "ms" of up to six digits where the calibration counted one */

static const char *env_or(const char *name, const char *dflt)
{
        const char *v = getenv(name);

        return v != NULL && v[0] != '\0' ? v : dflt;
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static uint64_t now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void fc_ctx_init(struct fc_ctx *c, const char *name, const char *pki, const char *dir,
                 const struct calib *cal)
{
        char build[512], src[512];

        memset(c, 0, sizeof(*c));
        if (realpath(env_or("KILN_BUILD_DIR", "."), build) == NULL)
                snprintf(build, sizeof(build), "%s", env_or("KILN_BUILD_DIR", "."));
        if (realpath(env_or("KILN_SOURCE_DIR", ".."), src) == NULL)
                snprintf(src, sizeof(src), "%s", env_or("KILN_SOURCE_DIR", ".."));
        snprintf(c->name, sizeof(c->name), "%s", name);
        snprintf(c->x.dir, sizeof(c->x.dir), "%s", dir);
        snprintf(c->x.hsm, sizeof(c->x.hsm), "%s", pki);
        snprintf(c->x.db, sizeof(c->x.db), "%s/kiln.db", dir);
        snprintf(c->x.config, sizeof(c->x.config), "%s/station.yaml", dir);
        snprintf(c->x.kiln, sizeof(c->x.kiln), "%s/kiln", build);
        snprintf(c->x.sim, sizeof(c->x.sim), "%s/kiln-dut-sim", build);
        snprintf(c->x.src, sizeof(c->x.src), "%s", src);
        c->cal = cal;
}

int fc_fail(struct fc_ctx *c, const char *expected, const char *fmt, ...)
{
        va_list ap;

        if (c->failed)
                return -1;
        c->failed = 1;
        snprintf(c->expected, sizeof(c->expected), "%s", expected);
        va_start(ap, fmt);
        vsnprintf(c->got, sizeof(c->got), fmt, ap);
        va_end(ap);
        return -1;
}

/* ------------------------------------------------------------------------- simulators */

static unsigned sim_args(const struct fc_ctx *c, const char *const *extra, const char **args,
                         unsigned cap)
{
        unsigned n = 0;

        args[n++] = "-v";
        if (c->cal != NULL && c->cal->rc->product != NULL) {
                args[n++] = "--product";
                args[n++] = c->cal->rc->product;
        }
        for (unsigned i = 0; extra != NULL && extra[i] != NULL && n + 1 < cap; i++)
                args[n++] = extra[i];
        args[n] = NULL;
        return n;
}

unsigned fc_sim_start(struct fc_ctx *c, const char *uid, const char *const *extra)
{
        const char *args[36];
        unsigned i;

        sim_args(c, extra, args, 36);
        i = e2e_sim(&c->x, uid, args);
        c->simlog_off[i] = 0;
        c->claimed_uid[i][0] = '\0';
        for (unsigned a = 0; extra != NULL && extra[a] != NULL && extra[a + 1] != NULL; a++)
                if (strcmp(extra[a], "--clone-uid") == 0)
                        snprintf(c->claimed_uid[i], sizeof(c->claimed_uid[i]), "%s", extra[a + 1]);
        return i;
}

void fc_sim_restart(struct fc_ctx *c, unsigned i, const char *const *extra)
{
        const char *args[36];

        /* a stopped (SIGSTOP) simulator must run again to save its state on SIGTERM */
        if (c->x.dev[i].pid > 0)
                kill(c->x.dev[i].pid, SIGCONT);
        sim_args(c, extra, args, 36);
        e2e_sim_restart(&c->x, i, args);
}

int fc_sim_stop(struct fc_ctx *c, unsigned i)
{
        if (c->x.dev[i].pid > 0)
                kill(c->x.dev[i].pid, SIGCONT);
        return e2e_sim_stop(&c->x, i);
}

static void simlog_path(const struct fc_ctx *c, unsigned i, char *out, size_t cap)
{
        snprintf(out, cap, "%s/dev-%s.log", c->x.dir, c->x.uid[i]);
}

int fc_sim_state_path(const struct fc_ctx *c, unsigned i, char *out, size_t cap)
{
        return snprintf(out, cap, "%s/dev-%s.state", c->x.dir, c->x.uid[i]) < (int)cap ? 0 : -1;
}

char *fc_simlog(const struct fc_ctx *c, unsigned i, long from)
{
        char path[1400];
        FILE *f;
        long n;
        char *text;

        simlog_path(c, i, path, sizeof(path));
        f = fopen(path, "r");
        if (f == NULL)
                return calloc(1, 1);
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        if (from > n)
                from = n;
        fseek(f, from, SEEK_SET);
        text = malloc((size_t)(n - from) + 1);
        if (text != NULL) {
                size_t got = fread(text, 1, (size_t)(n - from), f);

                text[got] = '\0';
        }
        fclose(f);
        return text;
}

void fc_simlog_mark(struct fc_ctx *c)
{
        for (unsigned i = 0; i < c->x.n_dev; i++) {
                char path[1400];
                struct stat sb;

                simlog_path(c, i, path, sizeof(path));
                c->simlog_off[i] = stat(path, &sb) == 0 ? (long)sb.st_size : 0;
        }
}

unsigned fc_simlog_rx(const struct fc_ctx *c, unsigned i)
{
        char *text = fc_simlog(c, i, c->simlog_off[i]);
        struct fc_log *l = calloc(1, sizeof(*l));
        unsigned n = 0;

        if (text != NULL && l != NULL) {
                fc_log_scan(text, l);
                n = l->n_rx;
        }
        free(text);
        free(l);
        return n;
}

void fc_config(struct fc_ctx *c)
{
        FILE *f = fopen(c->x.config, "w");

        if (f == NULL) {
                fc_fail(c, "a station configuration", "cannot write %s: %s", c->x.config,
                        strerror(errno));
                return;
        }
        fprintf(f,
                "schema: 1\n"
                "station_id: fault-station\n"
                "mode: development\n"
                "database: %s\n"
                "hsm:\n"
                "  module: /usr/lib/softhsm/libsofthsm2.so\n"
                "  token: \"pkcs11:token=kiln-dev\"\n"
                "  pin_file: %s/pin\n"
                "  softhsm_conf: %s/softhsm2.conf\n"
                "  audit_key: \"pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private\"\n"
                "  commitment_key: \"pkcs11:token=kiln-dev;object=kiln-dev-commit;"
                "type=secret-key\"\n"
                "slots:\n",
                c->x.db, c->x.hsm, c->x.hsm);
        for (unsigned i = 0; i < c->x.n_dev; i++) {
                /* a device that was stopped (unplugged) is not in a slot */
                if (c->x.dev[i].pid <= 0)
                        continue;
                if (c->baud > 0)
                        fprintf(f, "  - id: S%u\n    port: uart:%s?baud=%u\n", i + 1,
                                c->x.dev[i].port, c->baud);
                else
                        fprintf(f, "  - id: S%u\n    port: %s\n", i + 1, c->x.dev[i].port);
        }
        fclose(f);
}

/* ------------------------------------------------------------------------------ kiln */

void fc_kiln_argv(struct fc_ctx *c, const char *recipe_path, const char **argv, unsigned cap)
{
        static const char *const fixed[] = {
            "run",        "--config",       NULL,     "--recipe", NULL, "--work-order", "WO-FAULTS",
            "--operator", "fault-operator", "--once", "--json"};
        unsigned n = 0;

        argv[n++] = c->x.kiln;
        for (unsigned i = 0; i < sizeof(fixed) / sizeof(fixed[0]) && n + 1 < cap; i++) {
                if (i == 2)
                        argv[n++] = c->x.config;
                else if (i == 4)
                        argv[n++] = recipe_path;
                else
                        argv[n++] = fixed[i];
        }
        argv[n] = NULL;
}

int fc_json_str(const char *line, const char *key, char *out, size_t cap)
{
        char pat[64];
        const char *p;
        size_t n = 0;

        out[0] = '\0';
        snprintf(pat, sizeof(pat), "\"%s\":", key);
        p = strstr(line, pat);
        if (p == NULL)
                return -1;
        p += strlen(pat);
        if (*p == '"') {
                p++;
                while (*p != '\0' && *p != '"' && n + 1 < cap) {
                        if (*p == '\\' && p[1] != '\0')
                                p++;
                        out[n++] = *p++;
                }
        } else {
                while (*p != '\0' && *p != ',' && *p != '}' && n + 1 < cap)
                        out[n++] = *p++;
        }
        out[n] = '\0';
        return 0;
}

/*
 * kiln makes itself non-dumpable (no core files): then only a reader allowed to ptrace it sees its
 * wait channels; others read "0". Such a reader cannot read its environment either.
 */
static int can_inspect(pid_t pid)
{
        char path[64], c;
        int fd, ok;

        snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ok = read(fd, &c, 1) >= 0;
        close(fd);
        return ok;
}

int fc_wchan_has(pid_t pid, const char *what)
{
        char path[64];
        struct dirent *d;
        DIR *dir;
        int found = 0;

        if (!can_inspect(pid))
                return -1;
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        dir = opendir(path);
        if (dir == NULL)
                return 0;
        while (!found && (d = readdir(dir)) != NULL) {
                char wpath[320], buf[128];
                ssize_t n;
                int fd;

                if (d->d_name[0] == '.')
                        continue;
                snprintf(wpath, sizeof(wpath), "/proc/%d/task/%s/wchan", (int)pid, d->d_name);
                fd = open(wpath, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (n > 0) {
                        buf[n] = '\0';
                        found = strstr(buf, what) != NULL;
                }
        }
        closedir(dir);
        return found;
}

/* Append bytes read from kiln's stdout, dropping the gate's filler at the head. */
static void kout_append(struct fc_krun *k, const char *p, size_t n)
{
        if (k->filler > 0) {
                size_t skip = n < k->filler ? n : k->filler;

                p += skip;
                n -= skip;
                k->filler -= skip;
        }
        if (n > FC_OUT_MAX - 1 - k->len)
                n = FC_OUT_MAX - 1 - k->len;
        memcpy(k->out + k->len, p, n);
        k->len += n;
        k->out[k->len] = '\0';
}

/* Read what is there now (or wait up to wait_ms for something). 1 data, 0 nothing, -1 EOF. */
static int kout_read(struct fc_krun *k, int wait_ms)
{
        struct pollfd p = {.fd = k->rfd, .events = POLLIN};
        char buf[8192];
        ssize_t n;

        if (poll(&p, 1, wait_ms) <= 0)
                return 0;
        n = read(k->rfd, buf, sizeof(buf));
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : -1;
        if (n == 0)
                return -1;
        kout_append(k, buf, (size_t)n);
        return 1;
}

static void kout_save(const struct fc_krun *k)
{
        FILE *f = fopen(k->out_path, "w");

        if (f != NULL) {
                fwrite(k->out, 1, k->len, f);
                fclose(f);
        }
}

int fc_kiln_start(struct fc_ctx *c, int gate_event, struct fc_krun *k)
{
        char recipe[1200];
        const char *argv[24];
        int p[2] = {-1, -1}, errfd = -1, r = -1;
        pid_t pid;

        memset(k, 0, sizeof(*k));
        k->rfd = k->wfd = -1;
        k->out = calloc(1, FC_OUT_MAX);
        if (k->out == NULL)
                return fc_fail(c, "memory", "out of memory");
        c->runs++;
        snprintf(k->err_path, sizeof(k->err_path), "%s/kiln-%u.err", c->x.dir, c->runs);
        snprintf(k->out_path, sizeof(k->out_path), "%s/kiln-%u.out", c->x.dir, c->runs);
        e2e_recipe_path(&c->x, c->cal->rc->file, recipe, sizeof(recipe));
        fc_kiln_argv(c, recipe, argv, 24);
        fc_simlog_mark(c);
        if (pipe2(p, O_CLOEXEC) < 0)
                return fc_fail(c, "a pipe", "pipe2: %s", strerror(errno));
        if (gate_event >= 0) {
                size_t room = 0, off = 0;

                if ((unsigned)gate_event >= c->cal->n_ev) {
                        fc_fail(c, "a gate inside the calibrated events", "gate event %d of %u",
                                gate_event, c->cal->n_ev);
                        goto out;
                }
                for (int i = 0; i < gate_event; i++)
                        room += c->cal->ev_min[i] + MS_SLACK;
                if (fcntl(p[1], F_SETPIPE_SZ, PIPE_PAGE) != PIPE_PAGE ||
                    fcntl(p[1], F_GETPIPE_SZ) != PIPE_PAGE || room >= PIPE_PAGE) {
                        fc_fail(c, "a one-page pipe with room for the events before the gate",
                                "pipe size %d, room %zu: %s", fcntl(p[1], F_GETPIPE_SZ), room,
                                strerror(errno));
                        goto out;
                }
                k->filler = PIPE_PAGE - room;
                k->gate_room = room;
                while (off < k->filler) {
                        char nl[PIPE_PAGE];
                        ssize_t w;

                        memset(nl, '\n', sizeof(nl));
                        w = write(p[1], nl, k->filler - off);
                        if (w <= 0) {
                                fc_fail(c, "the gate filler written", "write: %s", strerror(errno));
                                goto out;
                        }
                        off += (size_t)w;
                }
        }
        errfd = open(k->err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        pid = fork();
        if (pid < 0) {
                fc_fail(c, "fork", "fork: %s", strerror(errno));
                goto out;
        }
        if (pid == 0) {
                dup2(p[1], 1);
                if (errfd >= 0)
                        dup2(errfd, 2);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        k->pid = pid;
        k->rfd = p[0];
        p[0] = -1;
        if (gate_event >= 0) {
                k->wfd = p[1];
                p[1] = -1;
        }
        r = 0;
out:
        if (p[0] >= 0)
                close(p[0]);
        if (p[1] >= 0)
                close(p[1]);
        if (errfd >= 0)
                close(errfd);
        return r;
}

static int kiln_exited(struct fc_krun *k)
{
        if (k->reaped)
                return 1;
        if (waitpid(k->pid, &k->status, WNOHANG) == k->pid) {
                k->reaped = 1;
                return 1;
        }
        return 0;
}

int fc_kiln_wait_gate(struct fc_ctx *c, struct fc_krun *k, int gate_event)
{
        size_t want = k->filler;
        uint64_t deadline = now_ms() + GATE_TIMEOUT_S * 1000u;

        for (int i = 0; i < gate_event; i++)
                want += c->cal->ev_min[i];
        for (;;) {
                int avail = 0;

                /* kiln blocked in write(2) of the gate event; when its wait channel cannot be
                 * seen, the events in the pipe still place it inside the step */
                if (ioctl(k->rfd, FIONREAD, &avail) == 0 && (size_t)avail >= want &&
                    fc_wchan_has(k->pid, "pipe_write") != 0)
                        return 0;
                if (kiln_exited(k) || now_ms() > deadline) {
                        char ev[64];

                        snprintf(ev, sizeof(ev), "kiln blocked before event %d", gate_event);
                        fc_kiln_release(c, k);
                        return fc_fail(c, ev,
                                       "kiln %s (pipe holds %d of %zu bytes); its output so "
                                       "far:\n%s",
                                       k->reaped ? "ended" : "never blocked there", avail, want,
                                       k->out);
                }
                sleep_ms(2);
        }
}

int fc_kiln_release(struct fc_ctx *c, struct fc_krun *k)
{
        (void)c;
        for (;;) {
                int avail = 0;

                if (ioctl(k->rfd, FIONREAD, &avail) < 0 || avail == 0)
                        break;
                if (kout_read(k, 0) < 0)
                        break;
        }
        if (k->wfd >= 0) {
                close(k->wfd);
                k->wfd = -1;
        }
        return 0;
}

const char *fc_step_event(const struct fc_krun *k, const char *step)
{
        char pat[64];
        const char *p = k->out;

        snprintf(pat, sizeof(pat), "\"step\":\"%s\"", step);
        while ((p = strstr(p, pat)) != NULL) {
                const char *bol = p;

                while (bol > k->out && bol[-1] != '\n')
                        bol--;
                if (strncmp(bol, "{\"event\":\"step\"", 15) == 0)
                        return bol;
                p++;
        }
        return NULL;
}

const char *fc_failed_step(const struct fc_krun *k, char *step, size_t cap)
{
        const char *p = k->out;

        step[0] = '\0';
        while ((p = strstr(p, "{\"event\":\"step\"")) != NULL) {
                const char *nl = strchr(p, '\n');
                const char *f = strstr(p, "\"ok\":false");

                if (f != NULL && (nl == NULL || f < nl)) {
                        char line[FC_LINE_MAX];
                        size_t n = nl ? (size_t)(nl - p) : strlen(p);

                        if (n >= sizeof(line))
                                n = sizeof(line) - 1;
                        memcpy(line, p, n);
                        line[n] = '\0';
                        fc_json_str(line, "step", step, cap);
                        return p;
                }
                p++;
        }
        return NULL;
}

int fc_kiln_read_step(struct fc_ctx *c, struct fc_krun *k, const char *step, unsigned timeout_s)
{
        uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000u;

        for (;;) {
                int r;

                if (step == NULL ? strstr(k->out, "\"event\":\"unit\"") != NULL
                    : strcmp(step, "run_start") == 0
                        ? strstr(k->out, "\"event\":\"run_start\"") != NULL
                        : fc_step_event(k, step) != NULL)
                        return 0;
                if (now_ms() > deadline)
                        return fc_fail(c, "a step event", "no '%s' event within %u s:\n%s",
                                       step ? step : "unit", timeout_s, k->out);
                r = kout_read(k, 100);
                if (r < 0)
                        return fc_fail(c, "a step event", "kiln ended before the '%s' event:\n%s",
                                       step ? step : "unit", k->out);
        }
}

static unsigned count_of(const char *hay, const char *needle)
{
        unsigned n = 0;

        for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
                n++;
        return n;
}

int fc_kiln_has_marker(const struct fc_krun *k, const char *marker, unsigned count)
{
        return count_of(k->out, marker) >= count;
}

int fc_kiln_read_marker(struct fc_ctx *c, struct fc_krun *k, const char *marker, unsigned count,
                        unsigned timeout_s)
{
        uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000u;

        for (;;) {
                if (fc_kiln_has_marker(k, marker, count))
                        return 0;
                if (now_ms() > deadline)
                        return fc_fail(c, "an event", "no %s (#%u) within %u s:\n%s", marker, count,
                                       timeout_s, k->out);
                if (kout_read(k, 100) < 0)
                        return fc_fail(c, "an event", "kiln ended before %s (#%u):\n%s", marker,
                                       count, k->out);
        }
}

static void drain_to_eof(struct fc_krun *k, unsigned timeout_s)
{
        uint64_t deadline = now_ms() + (uint64_t)timeout_s * 1000u;

        if (k->wfd >= 0) {
                close(k->wfd);
                k->wfd = -1;
        }
        while (now_ms() < deadline && kout_read(k, 200) >= 0)
                ;
}

int fc_kiln_kill(struct fc_ctx *c, struct fc_krun *k)
{
        (void)c;
        if (!k->reaped) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, &k->status, 0);
                k->reaped = 1;
                k->killed = 1;
        }
        drain_to_eof(k, 30);
        kout_save(k);
        return 0;
}

int fc_kiln_finish(struct fc_ctx *c, struct fc_krun *k)
{
        uint64_t deadline = now_ms() + KILN_RUN_TIMEOUT_S * 1000u;

        if (k->wfd >= 0) {
                close(k->wfd);
                k->wfd = -1;
        }
        for (;;) {
                if (kout_read(k, 200) < 0)
                        break;
                if (now_ms() > deadline) {
                        kill(k->pid, SIGKILL);
                        waitpid(k->pid, &k->status, 0);
                        k->reaped = 1;
                        kout_save(k);
                        return fc_fail(c, "kiln run ends",
                                       "kiln did not finish within %d s; output:\n%s",
                                       KILN_RUN_TIMEOUT_S, k->out);
                }
        }
        if (!k->reaped) {
                waitpid(k->pid, &k->status, 0);
                k->reaped = 1;
        }
        kout_save(k);
        if (WIFSIGNALED(k->status))
                return fc_fail(c, "kiln run ends with an exit status",
                               "kiln died of signal %d (stderr %s)", WTERMSIG(k->status),
                               k->err_path);
        return 0;
}

void fc_kiln_free(struct fc_krun *k)
{
        if (k->pid > 0 && !k->reaped) {
                kill(k->pid, SIGKILL);
                waitpid(k->pid, &k->status, 0);
                k->reaped = 1;
        }
        if (k->rfd >= 0)
                close(k->rfd);
        if (k->wfd >= 0)
                close(k->wfd);
        k->rfd = k->wfd = -1;
        free(k->out);
        k->out = NULL;
}

int fc_kiln_run(struct fc_ctx *c, struct fc_krun *k)
{
        if (fc_kiln_start(c, -1, k) < 0)
                return -1;
        return fc_kiln_finish(c, k);
}

int fc_unit(const struct fc_krun *k, const char *slot, struct fc_unit *ret)
{
        const char *p = k->out;

        memset(ret, 0, sizeof(*ret));
        while ((p = strstr(p, "{\"event\":\"unit\"")) != NULL) {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                char line[FC_LINE_MAX], s[32], v[32];

                if (n >= sizeof(line))
                        n = sizeof(line) - 1;
                memcpy(line, p, n);
                line[n] = '\0';
                p++;
                fc_json_str(line, "slot", s, sizeof(s));
                if (slot != NULL && strcmp(s, slot) != 0)
                        continue;
                ret->present = 1;
                fc_json_str(line, "serial", ret->serial, sizeof(ret->serial));
                fc_json_str(line, "chip_uid", ret->chip_uid, sizeof(ret->chip_uid));
                fc_json_str(line, "mac", ret->mac, sizeof(ret->mac));
                fc_json_str(line, "verdict", ret->verdict, sizeof(ret->verdict));
                fc_json_str(line, "code", ret->code, sizeof(ret->code));
                fc_json_str(line, "attempt", v, sizeof(v));
                ret->attempt = (unsigned)strtoul(v, NULL, 10);
                fc_json_str(line, "resumed", v, sizeof(v));
                ret->resumed = strcmp(v, "true") == 0;
                return 0;
        }
        return -1;
}

/* ---------------------------------------------------------------------------- SQL */

typedef int (*fc_row_fn)(void *ctx, sqlite3_stmt *st);

static int sql_rows(struct fc_ctx *c, const char *sql, fc_row_fn fn, void *ctx)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        int r = 0, rc;

        if (sqlite3_open_v2(c->x.db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
                r = fc_fail(c, "a readable database", "cannot open %s: %s", c->x.db,
                            h ? sqlite3_errmsg(h) : "out of memory");
                goto out;
        }
        sqlite3_busy_timeout(h, 10000);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
                r = fc_fail(c, "valid SQL", "'%s': %s", sql, sqlite3_errmsg(h));
                goto out;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && r == 0)
                if (fn != NULL)
                        r = fn(ctx, st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = fc_fail(c, "a readable database", "'%s': %s", sql, sqlite3_errmsg(h));
out:
        sqlite3_finalize(st);
        sqlite3_close(h);
        return r;
}

struct first_text {
        char *out;
        size_t cap;
        int seen;
};

static int first_text_row(void *ctx, sqlite3_stmt *st)
{
        struct first_text *f = ctx;

        if (!f->seen && sqlite3_column_text(st, 0) != NULL)
                snprintf(f->out, f->cap, "%s", (const char *)sqlite3_column_text(st, 0));
        f->seen = 1;
        return 0;
}

void fc_sql(struct fc_ctx *c, const char *sql, char *out, size_t cap)
{
        struct first_text f = {.out = out, .cap = cap};

        out[0] = '\0';
        sql_rows(c, sql, first_text_row, &f);
}

long fc_sql_int(struct fc_ctx *c, const char *sql)
{
        char v[64];

        fc_sql(c, sql, v, sizeof(v));
        return strtol(v, NULL, 10);
}

/* ------------------------------------------------------------------------- checks */

static struct fc_ctx *invariants_ctx;

static void invariants_test(void **state)
{
        (void)state;
        e2e_check_invariants(&invariants_ctx->x);
}

/* The last lines of the case log (cmocka's message of a failed check). */
static void case_log_tail(const struct fc_ctx *c, char *out, size_t cap)
{
        char path[1200];
        FILE *f;
        long n;

        out[0] = '\0';
        fflush(stdout);
        fflush(stderr);
        snprintf(path, sizeof(path), "%s/case.log", c->x.dir);
        f = fopen(path, "r");
        if (f == NULL)
                return;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, n > (long)cap - 1 ? n - (long)cap + 1 : 0, SEEK_SET);
        n = (long)fread(out, 1, cap - 1, f);
        out[n > 0 ? n : 0] = '\0';
        fclose(f);
}

static int check_e2e_invariants(struct fc_ctx *c)
{
        const struct CMUnitTest t[] = {cmocka_unit_test(invariants_test)};
        char tail[1200];

        invariants_ctx = c;
        if (cmocka_run_group_tests_name("invariants", t, NULL, NULL) == 0)
                return 0;
        case_log_tail(c, tail, sizeof(tail));
        return fc_fail(c, "DESIGN.md §11 invariants hold on the database (e2e_check_invariants)",
                       "violated after kiln run %u:\n%s", c->runs, tail);
}

static int check_audit(struct fc_ctx *c)
{
        char key[1200], out[4096], err[4096];
        const char *args[] = {"audit", "verify", "--db", c->x.db, "--audit-key", key, NULL};
        int st;

        snprintf(key, sizeof(key), "%s/audit-pub.pem", c->x.hsm);
        st = e2e_kiln(&c->x, args, out, sizeof(out), err, sizeof(err));
        if (st != 0 || strstr(out, "audit ok") == NULL)
                return fc_fail(c, "kiln audit verify --audit-key: audit ok",
                               "after kiln run %u: exit %d\n%s%s", c->runs, st, out, err);
        return 0;
}

struct fuse_rows {
        struct fc_ctx *c;
        const struct sim_state *st;
        char uid[65];
        int in_journal[SIM_FUSE_COUNT];
        int failed;
};

static int hexbytes(const char *hex, uint8_t *out, size_t cap, size_t *ret)
{
        size_t n = strlen(hex) / 2;

        if (n > cap)
                return -1;
        for (size_t i = 0; i < n; i++) {
                unsigned v;

                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return -1;
                out[i] = (uint8_t)v;
        }
        *ret = n;
        return 0;
}

/* One fuse_journal row of the unit against the device's fuses: never more than the plan. */
static int fuse_row(void *ctx, sqlite3_stmt *q)
{
        struct fuse_rows *fr = ctx;
        const char *field = (const char *)sqlite3_column_text(q, 0);
        const char *value = (const char *)sqlite3_column_text(q, 1);
        const char *state = (const char *)sqlite3_column_text(q, 2);
        uint8_t want[64];
        size_t n = 0;
        int idx;

        if (field == NULL || value == NULL || state == NULL ||
            hexbytes(value, want, sizeof(want), &n) < 0)
                return fc_fail(fr->c, "well-formed fuse journal rows", "row %s=%s (%s)",
                               field ? field : "?", value ? value : "?", state ? state : "?");
        if (strcmp(field, "lifecycle") == 0) {
                if (strcmp(state, "done") == 0 && (n != 1 || fr->st->lifecycle != want[0]))
                        return fc_fail(fr->c, "the device lifecycle the journal records as done",
                                       "chip %s: lifecycle %u, journal says %s", fr->uid,
                                       fr->st->lifecycle, value);
                return 0;
        }
        idx = sim_fuse_find(field);
        if (idx < 0)
                return fc_fail(fr->c, "journaled fields the device has", "field '%s'", field);
        fr->in_journal[idx] = 1;
        for (size_t i = 0; i < n; i++) {
                uint8_t have = fr->st->fuses[idx][i];

                if (have & (uint8_t)~want[i])
                        return fc_fail(fr->c,
                                       "no fuse holds bits outside its journaled value (never a "
                                       "burn with different data)",
                                       "chip %s fuse '%s' byte %zu is %02x, journal value %s",
                                       fr->uid, field, i, have, value);
                if (strcmp(state, "done") == 0 &&
                    !(sim_state_fuse_attributes(fr->st, (unsigned)idx) &
                      KILN_FUSE_READ_PROTECTED) &&
                    have != want[i])
                        return fc_fail(fr->c, "a fuse journaled done holds its value",
                                       "chip %s fuse '%s' byte %zu is %02x, journal value %s",
                                       fr->uid, field, i, have, value);
        }
        return 0;
}

struct pass_rows {
        struct fc_ctx *c;
        const struct sim_state *st;
        const char *uid;
};

static int object_row(void *ctx, sqlite3_stmt *q)
{
        struct pass_rows *pr = ctx;
        const char *name = (const char *)sqlite3_column_text(q, 0);
        const char *sha = (const char *)sqlite3_column_text(q, 1);

        for (unsigned i = 0; name != NULL && sha != NULL && i < pr->st->n_objects; i++) {
                const struct sim_object *o = &pr->st->objects[i];
                uint8_t md[32];
                char hex[65];

                if (strcmp(o->name, name) != 0 || !o->has_complete)
                        continue;
                SHA256(o->data, o->len, md);
                for (unsigned b = 0; b < 32; b++)
                        snprintf(hex + 2 * b, 3, "%02x", md[b]);
                if (strcmp(hex, sha) != 0)
                        return fc_fail(pr->c, "a PASS device holds the objects its record lists",
                                       "chip %s object '%s' has SHA-256 %s, record %s", pr->uid,
                                       name, hex, sha);
                return 0;
        }
        return fc_fail(pr->c, "a PASS device holds the objects its record lists",
                       "chip %s has no complete object '%s'", pr->uid, name ? name : "?");
}

static int key_row(void *ctx, sqlite3_stmt *q)
{
        struct pass_rows *pr = ctx;
        int slot = sqlite3_column_int(q, 0);
        const void *pub = sqlite3_column_blob(q, 1);
        int n = sqlite3_column_bytes(q, 1);

        if (slot < 0 || slot >= (int)SIM_KEY_SLOTS || !pr->st->keys[slot].present ||
            n != (int)SIM_PUB_LEN || memcmp(pub, pr->st->keys[slot].pub, SIM_PUB_LEN) != 0)
                return fc_fail(pr->c, "a PASS device holds the public keys its record lists",
                               "chip %s key slot %d differs from the current key record", pr->uid,
                               slot);
        return 0;
}

/* Every simulated chip against the database: fuses, and for PASS units objects and keys. */
static int check_devices(struct fc_ctx *c)
{
        for (unsigned i = 0; i < c->x.n_dev; i++) {
                struct fuse_rows fr;
                struct sim_state *st = NULL;
                char path[1200], sql[512], verdict[32];
                long unit;
                int r;

                fc_sim_state_path(c, i, path, sizeof(path));
                if (sim_state_load(path, &st) < 0)
                        return fc_fail(c, "a readable simulator state", "%s does not load", path);
                memset(&fr, 0, sizeof(fr));
                fr.c = c;
                fr.st = st;
                for (unsigned b = 0; b < st->uid_len; b++)
                        snprintf(fr.uid + 2 * b, 3, "%02x", st->uid[b]);
                /* a clone reports another chip's UID: the unit provisioned on this device is the
                 * one of the UID it reported, in its slot */
                if (c->claimed_uid[i][0] != '\0')
                        snprintf(fr.uid, sizeof(fr.uid), "%s", c->claimed_uid[i]);
                snprintf(sql, sizeof(sql),
                         "SELECT id FROM units WHERE chip_uid = '%s' AND slot = 'S%u'", fr.uid,
                         i + 1);
                unit = fc_sql_int(c, sql);
                snprintf(sql, sizeof(sql),
                         "SELECT field, value, state FROM fuse_journal WHERE unit_id = %ld", unit);
                r = sql_rows(c, sql, fuse_row, &fr);
                for (unsigned f = 0; r == 0 && f < SIM_FUSE_COUNT; f++) {
                        unsigned nbytes = (sim_fuse_map[f].width_bits + 7u) / 8u;

                        if (fr.in_journal[f])
                                continue;
                        for (unsigned b = 0; b < nbytes && r == 0; b++)
                                if (st->fuses[f][b] != 0)
                                        r = fc_fail(c,
                                                    "no fuse is burned without a journaled "
                                                    "intent",
                                                    "chip %s fuse '%s' is not zero", fr.uid,
                                                    sim_fuse_map[f].name);
                }
                snprintf(sql, sizeof(sql), "SELECT verdict FROM units WHERE id = %ld", unit);
                fc_sql(c, sql, verdict, sizeof(verdict));
                if (r == 0 && strcmp(verdict, "PASS") == 0) {
                        struct pass_rows pr = {.c = c, .st = st, .uid = fr.uid};

                        snprintf(sql, sizeof(sql),
                                 "SELECT o.name, o.sha256 FROM objects o JOIN units u ON u.id = "
                                 "o.unit_id WHERE u.id = %ld AND o.attempt = u.attempts",
                                 unit);
                        r = sql_rows(c, sql, object_row, &pr);
                        snprintf(sql, sizeof(sql),
                                 "SELECT slot, pubkey FROM keys WHERE unit_id = %ld AND "
                                 "current = 1",
                                 unit);
                        if (r == 0)
                                r = sql_rows(c, sql, key_row, &pr);
                        if (r == 0 && (st->debug_port != 0 || st->lifecycle != 2))
                                r = fc_fail(c,
                                            "a PASS device has its debug port closed and is "
                                            "in production",
                                            "chip %s debug_port %u lifecycle %u", fr.uid,
                                            st->debug_port, st->lifecycle);
                }
                sim_state_free(st);
                if (r < 0)
                        return r;
        }
        return 0;
}

int fc_check_invariants(struct fc_ctx *c)
{
        if (c->failed)
                return -1;
        if (check_e2e_invariants(c) < 0 || check_audit(c) < 0 || check_devices(c) < 0)
                return -1;
        /* allocations: every serial and MAC belongs to one unit; counters ahead of every use */
        if (fc_sql_int(c, "SELECT count(*) - count(DISTINCT serial_seq) FROM units") != 0 ||
            fc_sql_int(c, "SELECT count(*) FROM macs m WHERE NOT EXISTS (SELECT 1 FROM units u "
                          "WHERE u.id = m.unit_id)") != 0)
                return fc_fail(c, "no allocation belongs to two units",
                               "duplicate serial sequence numbers or orphan MACs");
        return c->failed ? -1 : 0;
}
