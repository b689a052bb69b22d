/*
 * Calibration and fault placement.
 *
 * The calibration is one clean run per recipe with the simulator's frame log (-v) and kiln's JSON
 * event stream appended to the same file (both O_APPEND). The order in that file is causal: the
 * device logs a request before it answers it, kiln prints a step's event after the last answer of
 * the step and before the first request of the next one. So every request frame belongs to the
 * first step event that follows it, and every response to the step of its request.
 *
 * Expected format of the simulator's lines (fixtures/src/sim_chip.c, chip_trace):
 *     <time> debug rx <TYPE> request=<id> session=0x<hex> len=<n> flags=0x<hex>
 *     <time> debug tx <TYPE> request=<id> status=<n> len=<n>[ (from response memory)]
 *     <time> debug rx rejected candidate: <why>, sending NAK
 * and of kiln's lines (docs/operator.md "Events for line systems"): one JSON object per line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faults.h"
#include "fc_log.h"
#include "kiln/sim.h"

#define NOISE_RATE 0.35          /* fixtures/src/sim_run.c */
#define SEED_SEARCH_MAX 4000000u /* seeds tried before giving up on a placement */

const struct fc_recipe fc_recipes[] = {
    {"plug", "smartplug-ctm.yaml", NULL},
    {"gw", "gateway-industrial.yaml", "gateway-g2"},
};
const unsigned fc_n_recipes = sizeof(fc_recipes) / sizeof(fc_recipes[0]);

/* ------------------------------------------------------------------------- log lines */

static const char *field_after(const char *s, const char *key)
{
        const char *p = strstr(s, key);

        return p == NULL ? NULL : p + strlen(key);
}

static unsigned long num_after(const char *s, const char *key, int base)
{
        const char *p = field_after(s, key);

        return p == NULL ? 0 : strtoul(p, NULL, base);
}

/* The word after "rx " or "tx " into type. */
static void frame_type(const char *p, char *type, size_t cap)
{
        size_t n = 0;

        while (p[n] != '\0' && p[n] != ' ' && n + 1 < cap) {
                type[n] = p[n];
                n++;
        }
        type[n] = '\0';
}

int fc_log_line(const char *line, struct fc_log_line *ret)
{
        const char *p;

        memset(ret, 0, sizeof(*ret));
        if (line[0] == '{') {
                ret->kind = FC_LINE_EVENT;
                return 0;
        }
        if ((p = strstr(line, " debug rx rejected candidate")) != NULL) {
                ret->kind = FC_LINE_REJECT;
                return 0;
        }
        if ((p = strstr(line, " debug rx ")) != NULL) {
                ret->kind = FC_LINE_RX;
                frame_type(p + 10, ret->type, sizeof(ret->type));
                ret->id = (uint32_t)num_after(p, "request=", 10);
                ret->len = (unsigned)num_after(p, " len=", 10);
                ret->flags = (unsigned)num_after(p, "flags=0x", 16);
                return 0;
        }
        if ((p = strstr(line, " debug tx ")) != NULL) {
                ret->kind = FC_LINE_TX;
                frame_type(p + 10, ret->type, sizeof(ret->type));
                ret->id = (uint32_t)num_after(p, "request=", 10);
                ret->len = (unsigned)num_after(p, " len=", 10);
                ret->from_memory = strstr(p, "(from response memory)") != NULL;
                return 0;
        }
        if (strstr(line, " info key slot ") != NULL && strstr(line, ": new ") != NULL) {
                ret->kind = FC_LINE_KEYGEN;
                return 0;
        }
        if ((p = strstr(line, " info fuse '")) != NULL && strstr(p, " burned") != NULL) {
                ret->kind = FC_LINE_BURN;
                frame_type(p + 12, ret->type, sizeof(ret->type));
                if (strchr(ret->type, '\'') != NULL)
                        *strchr(ret->type, '\'') = '\0';
                return 0;
        }
        ret->kind = FC_LINE_OTHER;
        return 0;
}

void fc_log_scan(const char *text, struct fc_log *ret)
{
        const char *p = text;

        memset(ret, 0, sizeof(*ret));
        while (p != NULL && *p != '\0') {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                char line[FC_LINE_MAX];
                struct fc_log_line l;

                if (n >= sizeof(line))
                        n = sizeof(line) - 1;
                memcpy(line, p, n);
                line[n] = '\0';
                p = nl ? nl + 1 : NULL;
                fc_log_line(line, &l);
                switch (l.kind) {
                case FC_LINE_RX: {
                        unsigned ord = 0;

                        ret->n_rx++;
                        for (unsigned i = 0; i < ret->n_ids; i++)
                                if (ret->ids[i] == l.id)
                                        ord = i + 1;
                        if (ord == 0 && ret->n_ids < FC_FRAMES_MAX) {
                                ret->ids[ret->n_ids++] = l.id;
                                ord = ret->n_ids;
                        }
                        if ((l.flags & 0x02u) != 0) {
                                ret->n_retry++;
                                if (ret->first_retry == 0)
                                        ret->first_retry = ord;
                        }
                        if (strcmp(l.type, "FUSE_PROGRAM") == 0)
                                ret->n_program++;
                        if (strcmp(l.type, "SET_LIFECYCLE") == 0)
                                ret->n_lifecycle++;
                        if (strcmp(l.type, "WRITE_OBJECT") == 0)
                                ret->n_write++;
                        break;
                }
                case FC_LINE_TX:
                        ret->n_tx++;
                        ret->n_memory += (unsigned)l.from_memory;
                        break;
                case FC_LINE_REJECT:
                        ret->n_rejected++;
                        break;
                case FC_LINE_KEYGEN:
                        ret->n_keygen++;
                        break;
                case FC_LINE_BURN:
                        ret->n_burn++;
                        for (unsigned i = 0; i < ret->n_burned && i < FC_FIELDS_MAX; i++)
                                if (strcmp(ret->burned[i], l.type) == 0)
                                        ret->burned_twice = 1;
                        if (ret->n_burned < FC_FIELDS_MAX)
                                snprintf(ret->burned[ret->n_burned++], sizeof(ret->burned[0]), "%s",
                                         l.type);
                        break;
                default:
                        break;
                }
        }
}

/* ----------------------------------------------------------------------- calibration */

int fc_step_index(const struct calib *cal, const char *name)
{
        for (unsigned i = 0; i < cal->n_st; i++)
                if (strcmp(cal->st[i].name, name) == 0)
                        return (int)i;
        return -1;
}

int fc_frame_step(const struct calib *cal, unsigned n)
{
        if (n == 0 || n > cal->n_rx)
                return -1;
        return cal->rx[n - 1].step;
}

void fc_wire_len(unsigned payload, unsigned *ret_min, unsigned *ret_max)
{
        /* 0x00 COBS(16 + payload + 4) 0x00: COBS adds one code byte, plus one per 254-byte run
         * without a zero (none below 254 bytes of input) */
        unsigned n = 16u + payload + 4u;

        *ret_min = n + 1u + 2u;
        *ret_max = n + 1u + n / 254u + 2u;
}

/* Length of an event line with its "ms" value written with one digit, newline included. */
static size_t event_min_len(const char *line)
{
        const char *p = strstr(line, "\"ms\":");
        size_t n = strlen(line) + 1, digits = 0;

        if (p == NULL)
                return n;
        p += 5;
        while (p[digits] >= '0' && p[digits] <= '9')
                digits++;
        return digits > 0 ? n - (digits - 1) : n;
}

static void lowest_set_bit(struct fc_field *f)
{
        size_t n = strlen(f->value_hex) / 2;

        f->set_bit = 0;
        for (size_t i = 0; i < n; i++) {
                unsigned v = 0;

                sscanf(f->value_hex + 2 * i, "%2x", &v);
                for (unsigned b = 0; b < 8; b++) {
                        if (v & (1u << b)) {
                                /* the simulator's bit b is bit b % 8 of value byte b / 8 */
                                f->set_bit = (unsigned)(8 * i + b);
                                return;
                        }
                }
        }
}

static int parse_trace(const char *text, struct calib *cal, char *why, size_t why_cap)
{
        const char *p = text;
        unsigned pending_from = 0; /* first rx not yet given a step */

        while (p != NULL && *p != '\0') {
                const char *nl = strchr(p, '\n');
                size_t n = nl ? (size_t)(nl - p) : strlen(p);
                char line[FC_LINE_MAX];
                struct fc_log_line l;

                if (n >= sizeof(line)) {
                        snprintf(why, why_cap, "trace line over %zu bytes", sizeof(line));
                        return -1;
                }
                memcpy(line, p, n);
                line[n] = '\0';
                p = nl ? nl + 1 : NULL;
                fc_log_line(line, &l);
                if (l.kind == FC_LINE_EVENT) {
                        char step[FC_STEP_MAX];

                        if (cal->n_ev == FC_EVENTS_MAX) {
                                snprintf(why, why_cap, "more than %d events", FC_EVENTS_MAX);
                                return -1;
                        }
                        snprintf(cal->ev[cal->n_ev], FC_LINE_MAX, "%s", line);
                        cal->ev_min[cal->n_ev] = event_min_len(line);
                        if (strstr(line, "\"event\":\"step\"") != NULL &&
                            fc_json_str(line, "step", step, sizeof(step)) == 0) {
                                struct fc_step *s = &cal->st[cal->n_st];

                                if (cal->n_st == FC_STEPS_MAX) {
                                        snprintf(why, why_cap, "more than %d steps", FC_STEPS_MAX);
                                        return -1;
                                }
                                if (strstr(line, "\"ok\":true") == NULL) {
                                        snprintf(why, why_cap, "step %s failed in the clean run",
                                                 step);
                                        return -1;
                                }
                                memset(s, 0, sizeof(*s));
                                snprintf(s->name, sizeof(s->name), "%s", step);
                                s->ev = cal->n_ev;
                                for (unsigned i = pending_from; i < cal->n_rx; i++) {
                                        cal->rx[i].step = (int)cal->n_st;
                                        if (s->first_rx == 0)
                                                s->first_rx = i + 1;
                                        s->last_rx = i + 1;
                                        if (s->first_program == 0 &&
                                            strcmp(cal->rx[i].type, "FUSE_PROGRAM") == 0)
                                                s->first_program = i + 1;
                                }
                                pending_from = cal->n_rx;
                                cal->n_st++;
                        }
                        cal->n_ev++;
                } else if (l.kind == FC_LINE_RX) {
                        if (cal->n_rx == FC_FRAMES_MAX || (l.flags & 0x02u)) {
                                snprintf(why, why_cap,
                                         "too many frames, or a retry in the clean "
                                         "run");
                                return -1;
                        }
                        snprintf(cal->rx[cal->n_rx].type, sizeof(cal->rx[0].type), "%s", l.type);
                        cal->rx[cal->n_rx].id = l.id;
                        cal->rx[cal->n_rx].len = l.len;
                        cal->rx[cal->n_rx].step = -1;
                        cal->n_rx++;
                } else if (l.kind == FC_LINE_TX) {
                        if (cal->n_tx == FC_FRAMES_MAX || cal->n_rx == 0) {
                                snprintf(why, why_cap, "unexpected response in the trace");
                                return -1;
                        }
                        snprintf(cal->tx[cal->n_tx].type, sizeof(cal->tx[0].type), "%s", l.type);
                        cal->tx[cal->n_tx].len = l.len;
                        cal->tx[cal->n_tx].step = -1;
                        cal->n_tx++;
                } else if (l.kind == FC_LINE_REJECT) {
                        snprintf(why, why_cap, "the device rejected a frame in the clean run");
                        return -1;
                }
        }
        if (pending_from != cal->n_rx) {
                snprintf(why, why_cap, "requests after the last step event");
                return -1;
        }
        /* a response belongs to the step of its request: responses follow requests one to one */
        if (cal->n_tx != cal->n_rx) {
                snprintf(why, why_cap, "%u requests but %u responses", cal->n_rx, cal->n_tx);
                return -1;
        }
        for (unsigned i = 0; i < cal->n_tx; i++)
                cal->tx[i].step = cal->rx[i].step;
        return 0;
}

int fc_calibrate(const struct fc_recipe *rc, const char *pki, const char *dir, struct calib *cal,
                 char *why, size_t why_cap)
{
        struct fc_ctx *c = calloc(1, sizeof(*c));
        char logp[1400], recipe[1200], *text = NULL;
        const char *argv[20];
        int status = 0, r = -1, fd = -1;
        pid_t pid;

        memset(cal, 0, sizeof(*cal));
        cal->rc = rc;
        if (c == NULL) {
                snprintf(why, why_cap, "out of memory");
                return -1;
        }
        fc_ctx_init(c, "calibration", pki, dir, cal);
        fc_sim_start(c, NULL, NULL);
        fc_config(c);
        snprintf(logp, sizeof(logp), "%s/dev-%s.log", c->x.dir, c->x.uid[0]);
        e2e_recipe_path(&c->x, rc->file, recipe, sizeof(recipe));
        fd = open(logp, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0) {
                snprintf(why, why_cap, "cannot open %s: %s", logp, strerror(errno));
                goto out;
        }
        fc_kiln_argv(c, recipe, argv, 20);
        pid = fork();
        if (pid < 0) {
                snprintf(why, why_cap, "fork: %s", strerror(errno));
                goto out;
        }
        if (pid == 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                execv(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        waitpid(pid, &status, 0);
        fc_sim_stop(c, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                snprintf(why, why_cap, "the clean run of %s did not pass (status %d): see %s",
                         rc->file, status, logp);
                goto out;
        }
        text = fc_simlog(c, 0, 0);
        if (text == NULL || parse_trace(text, cal, why, why_cap) < 0)
                goto out;
        {
                /* the fuse plan, as journaled */
                char q[256], v[512];
                long n = fc_sql_int(c, "SELECT count(*) FROM fuse_journal WHERE field <> "
                                       "'lifecycle'");

                for (long i = 0; i < n && cal->n_fld < FC_FIELDS_MAX; i++) {
                        struct fc_field *f = &cal->fld[cal->n_fld];

                        snprintf(q, sizeof(q),
                                 "SELECT phase || ' ' || field || ' ' || value FROM fuse_journal "
                                 "WHERE field <> 'lifecycle' ORDER BY id LIMIT 1 OFFSET %ld",
                                 i);
                        fc_sql(c, q, v, sizeof(v));
                        if (sscanf(v, "%15s %31s %128s", f->phase, f->field, f->value_hex) != 3) {
                                snprintf(why, why_cap, "cannot read the fuse plan: '%s'", v);
                                goto out;
                        }
                        lowest_set_bit(f);
                        cal->n_fld++;
                }
        }
        if (cal->n_st == 0 || cal->n_fld == 0) {
                snprintf(why, why_cap, "the clean run shows no steps or no fuse plan");
                goto out;
        }
        r = 0;
out:
        if (fd >= 0)
                close(fd);
        free(text);
        e2e_teardown(&c->x);
        free(c);
        return r;
}

/* ------------------------------------------------------------------------ placement */

/* Byte ranges of each frame on its stream: [lo, hi) with lo and hi bounds for COBS growth. */
struct span {
        uint64_t lo_start, hi_start, lo_end, hi_end;
};

static void stream_spans(const struct calib *cal, int tx, struct span *sp, unsigned n)
{
        uint64_t lo = 0, hi = 0;

        for (unsigned i = 0; i < n; i++) {
                unsigned a, b;

                fc_wire_len(tx ? cal->tx[i].len : cal->rx[i].len, &a, &b);
                sp[i].lo_start = lo;
                sp[i].hi_start = hi;
                lo += a;
                hi += b;
                sp[i].lo_end = lo;
                sp[i].hi_end = hi;
        }
}

/*
 * The frame a byte position certainly falls in, past its leading 0x00, or -1 when that is not
 * certain. A frame's leading delimiter follows the trailing one of the frame before: dropping it
 * changes nothing, so a fault placed there would not be a fault.
 */
static int frame_of(const struct span *sp, unsigned n, uint64_t pos)
{
        for (unsigned i = 0; i < n; i++)
                if (pos > sp[i].hi_start && pos < sp[i].lo_end)
                        return (int)i;
        return -1;
}

/* First draw below rate among the first `limit` draws of a stream, or UINT64_MAX. */
static uint64_t first_hit(uint64_t seed, uint64_t stream, double rate, uint64_t limit)
{
        struct sim_prng r;

        sim_prng_seed(seed, stream, &r);
        for (uint64_t i = 0; i < limit; i++)
                if (sim_prng_unit(&r) < rate)
                        return i;
        return UINT64_MAX;
}

uint64_t fc_seed_corrupt(const struct calib *cal, int step, double rate)
{
        static struct span sp[FC_FRAMES_MAX];
        uint64_t total;

        stream_spans(cal, 1, sp, cal->n_tx);
        total = sp[cal->n_tx - 1].lo_end;
        for (uint64_t seed = 1; seed < SEED_SEARCH_MAX; seed++) {
                /* without drops, each byte the device sends costs one draw (sim_run.c send_byte) */
                uint64_t pos = first_hit(seed, 2, rate, total);
                int f = pos == UINT64_MAX ? -1 : frame_of(sp, cal->n_tx, pos);

                if (f >= 0 && cal->tx[f].step == step)
                        return seed;
        }
        return 0;
}

uint64_t fc_seed_drop(const struct calib *cal, int step, double rate)
{
        static struct span srx[FC_FRAMES_MAX], stx[FC_FRAMES_MAX];
        uint64_t total_rx, total_tx;

        stream_spans(cal, 0, srx, cal->n_rx);
        stream_spans(cal, 1, stx, cal->n_tx);
        total_rx = srx[cal->n_rx - 1].hi_end;
        total_tx = stx[cal->n_tx - 1].lo_end;
        for (uint64_t seed = 1; seed < SEED_SEARCH_MAX; seed++) {
                /* received bytes draw from stream 1, sent bytes from stream 2 */
                uint64_t prx = first_hit(seed, 1, rate, total_rx);
                uint64_t ptx = first_hit(seed, 2, rate, total_tx);
                int frx = -2, ftx = -2, first;

                if (prx != UINT64_MAX)
                        frx = frame_of(srx, cal->n_rx, prx);
                if (ptx != UINT64_MAX)
                        ftx = frame_of(stx, cal->n_tx, ptx);
                if (frx == -1 || ftx == -1)
                        continue; /* a position we cannot place for certain */
                if (frx == -2 && ftx == -2)
                        continue;
                /* request i goes before response i, which goes before request i + 1 */
                if (frx == -2)
                        first = ftx;
                else if (ftx == -2)
                        first = frx;
                else
                        first = frx <= ftx ? frx : ftx;
                if (cal->rx[first].step == step)
                        return seed;
        }
        return 0;
}

/* The draws of one noise line (fixtures/src/sim_run.c noise_line). */
static void noise_line_draws(struct sim_prng *r)
{
        uint32_t pick = sim_prng_below(r, 4);

        (void)sim_prng_below(r, 1000);
        (void)sim_prng_below(r, 90000);
        if (pick == 3) {
                uint32_t n = 1 + sim_prng_below(r, 60);

                for (uint32_t i = 0; i < n; i++)
                        (void)sim_prng_below(r, 0x5E);
        }
}

uint64_t fc_seed_noise(const struct calib *cal, int step)
{
        unsigned first = cal->st[step].first_rx;

        /* connect meets the boot log, whatever the seed */
        if (first <= 1)
                return 1;
        for (uint64_t seed = 1; seed < SEED_SEARCH_MAX; seed++) {
                struct sim_prng r;
                int hit = 0;

                sim_prng_seed(seed, 3, &r);
                noise_line_draws(&r); /* the boot log's random line */
                /* after response i the device may print a line, which the host meets while it
                 * waits for response i + 1: we want one right before the step's first request */
                for (unsigned i = 0; i + 1 < first; i++) {
                        int line = sim_prng_unit(&r) < NOISE_RATE;

                        if (line)
                                noise_line_draws(&r);
                        hit = line && i + 2 == first;
                }
                if (hit)
                        return seed;
        }
        return 0;
}
