/*
 * bench_rss: peak resident memory of the real `kiln` binary running S slots (default 16).
 *
 *     bench_rss --kiln PATH --sim PATH --pki DIR --dir WORK --recipe FILE [--slots S]
 *               [--rounds R] [--baud B] [--keygen-ms MS] [--fuse-ms MS]
 *
 * A station configuration in WORK names S slots, each a UART port WORK/ports/N: a symbolic link
 * that a kiln-dut-sim (line model: 115200 baud, key generation 200 ms, 20 ms per fuse program by
 * default) points at its pseudo-terminal, as /dev/serial/by-id names an adapter. The benchmark runs
 * `kiln run --config WORK/station.yaml --units S*R --json` (production code path: the slots wait
 * for a device with a new chip UID on their port) and plays the operator: each time kiln reports a
 * unit, the simulator of that slot is stopped and a factory-fresh one is started on the same link.
 * When kiln exits, its peak resident set comes from wait4() (ru_maxrss: kiln's own, since the
 * simulators are the benchmark's children, not kiln's).
 *
 * Prints rss_mib (the figure), the units kiln reported PASS and its exit status.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_common.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/limits.h"
#include "kiln/simfix.h"
#include "kiln/util.h"

#define PATH_CAP 4096
#define LINE_CAP 8192
#define SLOTS_MAX 64u

struct opts {
        const char *kiln, *sim, *pki, *dir, *recipe;
        uint32_t slots, rounds, baud, keygen_ms, fuse_ms;
};

struct bench {
        const struct opts *o;
        struct simfix_dev dev[SLOTS_MAX];
        unsigned gen[SLOTS_MAX];
        char baud[16], kg[16], fu[16];
};

static int parse_args(int argc, char **argv, struct opts *o)
{
        memset(o, 0, sizeof(*o));
        o->slots = 16;
        o->rounds = 3;
        o->baud = 115200;
        o->keygen_ms = 200;
        o->fuse_ms = 20;
        for (int i = 1; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int ok = v != NULL;

                if (ok && strcmp(argv[i], "--kiln") == 0)
                        o->kiln = v;
                else if (ok && strcmp(argv[i], "--sim") == 0)
                        o->sim = v;
                else if (ok && strcmp(argv[i], "--pki") == 0)
                        o->pki = v;
                else if (ok && strcmp(argv[i], "--dir") == 0)
                        o->dir = v;
                else if (ok && strcmp(argv[i], "--recipe") == 0)
                        o->recipe = v;
                else if (ok && strcmp(argv[i], "--slots") == 0)
                        ok = kiln_parse_u32(v, 1, SLOTS_MAX, &o->slots) == KILN_OK;
                else if (ok && strcmp(argv[i], "--rounds") == 0)
                        ok = kiln_parse_u32(v, 1, 100, &o->rounds) == KILN_OK;
                else if (ok && strcmp(argv[i], "--baud") == 0)
                        ok = kiln_parse_u32(v, 0, 4000000, &o->baud) == KILN_OK &&
                             (o->baud == 0 || o->baud >= 50);
                else if (ok && strcmp(argv[i], "--keygen-ms") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &o->keygen_ms) == KILN_OK;
                else if (ok && strcmp(argv[i], "--fuse-ms") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &o->fuse_ms) == KILN_OK;
                else
                        ok = 0;
                if (!ok)
                        return -1;
        }
        return o->kiln && o->sim && o->pki && o->dir && o->recipe ? 0 : -1;
}

/* A factory-fresh device on slot i's link. */
static int sim_start(struct bench *b, unsigned i)
{
        char state[PATH_CAP], link[PATH_CAP];
        const char *args[16];
        unsigned n = 0;

        if (kiln_snprintf(state, sizeof(state), "%s/devices/%u-%u.state", b->o->dir, i + 1,
                          b->gen[i]) < 0 ||
            kiln_snprintf(link, sizeof(link), "%s/ports/%u", b->o->dir, i + 1) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long");
        b->gen[i]++;
        unlink(state);
        args[n++] = "--state";
        args[n++] = state;
        args[n++] = "--link";
        args[n++] = link;
        if (b->o->baud > 0) { /* 0: unpaced, the simulator's default */
                args[n++] = "--baud";
                args[n++] = b->baud;
        }
        args[n++] = "--keygen-ms";
        args[n++] = b->kg;
        args[n++] = "--fuse-ms";
        args[n++] = b->fu;
        args[n] = NULL;
        return simfix_start(b->o->sim, args, NULL, 10000, &b->dev[i]);
}

static int write_config(const struct opts *o, const char *path)
{
        char recipe[PATH_CAP], pki[PATH_CAP], dir[PATH_CAP];
        FILE *f = NULL;
        int r = KILN_E_IO;

        if (realpath(o->recipe, recipe) == NULL || realpath(o->pki, pki) == NULL ||
            realpath(o->dir, dir) == NULL)
                return kiln_fail(KILN_E_NOT_FOUND, "cannot resolve paths: %s", strerror(errno));
        f = fopen(path, "w");
        if (f == NULL)
                return kiln_fail(KILN_E_IO, "cannot create '%s': %s", path, strerror(errno));
        fprintf(f,
                "# Written by bench_rss on every run.\n"
                "schema: 1\n"
                "station_id: bench-rss\n"
                "mode: development\n"
                "database: rss.db\n"
                "work:\n"
                "  recipe: \"%s\"\n"
                "  work_order: BENCH-RSS\n"
                "  lot: BENCH-LOT\n"
                "  operator: bench\n"
                "hsm:\n"
                "  module: %s\n"
                "  token: \"%s\"\n"
                "  pin_file: \"%s/%s\"\n"
                "  softhsm_conf: \"%s/%s\"\n"
                "  audit_key: \"%s\"\n"
                "  commitment_key: \"%s\"\n"
                "slots:\n",
                recipe, HSM_SOFTHSM_MODULE, HSM_DEV_TOKEN_URI, pki, HSM_DEV_PIN, pki,
                HSM_DEV_CONF, HSM_DEV_AUDIT_URI, HSM_DEV_COMMIT_URI);
        for (unsigned i = 0; i < o->slots; i++)
                fprintf(f, "  - id: \"%u\"\n    port: \"%s/ports/%u\"\n", i + 1, dir, i + 1);
        if (fclose(f) == 0)
                r = KILN_OK;
        f = NULL;
        return r;
}

/* The slot of a JSON "unit" event line, 0 when the line is not one. */
static unsigned unit_event_slot(const char *line, int *ret_pass)
{
        const char *p;
        uint32_t slot = 0;
        char num[8];
        size_t n = 0;

        if (strstr(line, "\"event\":\"unit\"") == NULL)
                return 0;
        p = strstr(line, "\"slot\":\"");
        if (p == NULL)
                return 0;
        p += 8;
        while (p[n] >= '0' && p[n] <= '9' && n + 1 < sizeof(num)) {
                num[n] = p[n];
                n++;
        }
        num[n] = '\0';
        if (kiln_parse_u32(num, 1, SLOTS_MAX, &slot) < 0)
                return 0;
        *ret_pass = strstr(line, "\"verdict\":\"PASS\"") != NULL;
        return slot;
}

int main(int argc, char **argv)
{
        struct opts o;
        struct bench b;
        char cfg[PATH_CAP], dbp[PATH_CAP], sub[PATH_CAP], units[16], logp[PATH_CAP];
        char line[LINE_CAP], load0[64], load1[64], kiln[PATH_CAP];
        char *kargv[12];
        int pipefd[2] = {-1, -1};
        FILE *in = NULL;
        pid_t pid = -1;
        long maxrss = 0;
        unsigned pass = 0, reported = 0;
        int status = 0, r = KILN_OK, rc = 1;

        memset(&b, 0, sizeof(b));
        if (parse_args(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: bench_rss --kiln PATH --sim PATH --pki DIR --dir WORK "
                                "--recipe FILE [--slots S] [--rounds R] [--baud B] "
                                "[--keygen-ms MS] [--fuse-ms MS]\n");
                return 2;
        }
        b.o = &o;
        snprintf(b.baud, sizeof(b.baud), "%u", o.baud);
        snprintf(b.kg, sizeof(b.kg), "%u", o.keygen_ms);
        snprintf(b.fu, sizeof(b.fu), "%u", o.fuse_ms);
        signal(SIGPIPE, SIG_IGN);
        if (kiln_snprintf(sub, sizeof(sub), "%s/ports", o.dir) < 0) {
                r = kiln_fail(KILN_E_RANGE, "path too long");
                goto out;
        }
        r = kiln_mkdirs(sub, 0700);
        if (r == KILN_OK && kiln_snprintf(sub, sizeof(sub), "%s/devices", o.dir) < 0)
                r = kiln_fail(KILN_E_RANGE, "path too long");
        if (r == KILN_OK)
                r = kiln_mkdirs(sub, 0700);
        if (r < 0)
                goto out;
        if (kiln_snprintf(cfg, sizeof(cfg), "%s/station.yaml", o.dir) < 0 ||
            kiln_snprintf(dbp, sizeof(dbp), "%s/rss.db", o.dir) < 0 ||
            kiln_snprintf(logp, sizeof(logp), "%s/kiln-run.err", o.dir) < 0) {
                r = kiln_fail(KILN_E_RANGE, "path too long");
                goto out;
        }
        for (unsigned i = 0; i < 3; i++) {
                static const char *const suffix[3] = {"", "-wal", "-shm"};
                char p[PATH_CAP + 8];

                snprintf(p, sizeof(p), "%s%s", dbp, suffix[i]);
                unlink(p);
        }
        unlink(logp);
        r = write_config(&o, cfg);
        if (r < 0)
                goto out;
        for (unsigned i = 0; i < o.slots; i++) {
                r = sim_start(&b, i);
                if (r < 0)
                        goto out;
        }
        snprintf(units, sizeof(units), "%u", o.slots * o.rounds);
        if (kiln_strlcpy(kiln, o.kiln, sizeof(kiln)) < 0) {
                r = kiln_fail(KILN_E_RANGE, "path too long");
                goto out;
        }
        kargv[0] = kiln;
        kargv[1] = "run";
        kargv[2] = "--config";
        kargv[3] = cfg;
        kargv[4] = "--units";
        kargv[5] = units;
        kargv[6] = "--json";
        kargv[7] = NULL;
        if (pipe(pipefd) < 0) {
                r = kiln_fail(KILN_E_IO, "pipe: %s", strerror(errno));
                goto out;
        }
        bench_loadavg(load0, sizeof(load0));
        r = bench_spawn(kargv, pipefd[1], logp, &pid);
        close(pipefd[1]);
        pipefd[1] = -1;
        if (r < 0)
                goto out;
        in = fdopen(pipefd[0], "r");
        if (in == NULL) {
                r = kiln_fail(KILN_E_IO, "fdopen: %s", strerror(errno));
                goto out;
        }
        pipefd[0] = -1;
        /* the operator: take each finished unit out and put a fresh one in its slot */
        while (fgets(line, sizeof(line), in) != NULL) {
                int ok = 0;
                unsigned slot = unit_event_slot(line, &ok);

                if (slot == 0 || slot > o.slots)
                        continue;
                reported++;
                pass += ok;
                simfix_stop(&b.dev[slot - 1], 5000, NULL);
                if (reported < o.slots * o.rounds) {
                        r = sim_start(&b, slot - 1);
                        if (r < 0)
                                goto out;
                }
        }
        r = bench_wait(pid, &status, &maxrss, NULL);
        pid = -1;
        bench_loadavg(load1, sizeof(load1));
        if (r < 0)
                goto out;
        printf("rss_slots: %u\n", o.slots);
        printf("rss_units: %u\n", reported);
        printf("rss_units_pass: %u\n", pass);
        printf("rss_kiln_exit: %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        printf("rss_mib: %.1f\n", (double)maxrss / 1024.0);
        printf("rss_load_before: %s\n", load0);
        printf("rss_load_after: %s\n", load1);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || pass != o.slots * o.rounds) {
                r = kiln_fail(KILN_E_MISMATCH, "kiln run did not pass every unit (see %s)", logp);
                goto out;
        }
        rc = 0;
out:
        if (rc != 0)
                fprintf(stderr, "bench_rss: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        if (pid > 0) {
                kill(pid, SIGTERM);
                bench_wait(pid, &status, NULL, NULL);
        }
        if (in != NULL)
                fclose(in);
        if (pipefd[0] >= 0)
                close(pipefd[0]);
        if (pipefd[1] >= 0)
                close(pipefd[1]);
        for (unsigned i = 0; i < SLOTS_MAX; i++)
                simfix_stop(&b.dev[i], 2000, NULL);
        return rc;
}
