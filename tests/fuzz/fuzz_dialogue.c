/*
 * Fuzz target: a whole station dialogue. The real engine (engine_unit_run) provisions one unit of
 * an example recipe over a "fuzz:" transport, with an in-memory database and a real SoftHSM
 * development token (made once, in LLVMFuzzerInitialize, under a temporary directory). Every byte
 * the engine reads comes from the input: either verbatim, or a frame the input describes, or the
 * answer of a real simulated device (the device agent on kiln_sim's chip, in process) that the
 * input lets through, bends or breaks. So hostile replies reach every step: connect, identify,
 * admit, keys, certificates, credentials, writes, attestation, the phased lock and finish.
 *
 * Expected format of an input:
 *
 *     setup u8 ‖ record*
 *
 *     setup & 1: the recipe (0 recipes/smartplug-ctm.yaml, 1 recipes/gateway-industrial.yaml)
 *
 *     record: ctl u8, [piece u8 when ctl & 0x80], then by kind (ctl & 7), for the pending request:
 *       0 REAL     the device answers it
 *       1 RAW      n u8, n bytes: sent to the host as they are (noise, boot log, hand-made
 *                  frames); then the next record decides about the same request
 *       2 FRAME    status u8, n u16 LE, n bytes: the answer, framed with the request's id, type and
 *                  the device's session (ctl 0x08 another id, 0x10 another type, 0x20 another
 *                  session, 0x40 a NAK instead); the device does not see the request
 *       3 MUTATE   off u16 LE, x u8: the device answers; payload byte off % len ^= x, re-framed
 *                  with a valid CRC (near-valid content for the engine's checks)
 *       4 CORRUPT  off u16 LE, x u8: the device answers; wire byte off % len ^= x (or 1)
 *       5 DROP     the device executes it; its answer is lost
 *       6 HANGUP   the device is gone: every later read reports KILN_E_DEVICE_GONE
 *       7 RUN      n u8: the device answers this request and the next n by itself
 *     ctl & 0x80: the host reads this answer in pieces of (piece % 64) + 1 bytes.
 *   When the input runs out the device hangs up. The transport runs on a virtual clock: a read
 *   with nothing queued advances it by its timeout, so retries and timeouts cost nothing.
 *
 * After each run: no fuse outside the recipe's plan may hold a bit, and no literal fuse value may
 * hold a bit outside the plan (a burn with different data); when every answer came from the device
 * itself, a PASS device must be locked (debug port closed, production).
 *
 * Seeds: with KILN_FUZZ_DIALOGUE_SEEDS=DIR set, LLVMFuzzerInitialize writes the seed corpus into
 * DIR and exits: per recipe a clean dialogue, the device's replies of a clean run recorded as
 * FRAME records, and fault variants (a lost, corrupted, altered answer, a hangup, noise, reads in
 * small pieces) placed across every step.
 */
/* nftw, mkdtemp, open_memstream */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln/agent.h"
#include "kiln/db.h"
#include "kiln/endian.h"
#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/frame.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/log.h"
#include "kiln/recipe.h"
#include "kiln/report.h"
#include "kiln/sim.h"
#include "kiln/transport.h"
#include "kiln/util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEV_PAYLOAD 4096u
#define Q_CAP (4u * KILN_FRAME_WIRE_MAX(DEV_PAYLOAD) + 4096u)
#define RECIPES 2

enum rec_kind { R_REAL, R_RAW, R_FRAME, R_MUTATE, R_CORRUPT, R_DROP, R_HANGUP, R_RUN, R_MAX };

static const char *const recipe_files[RECIPES] = {"smartplug-ctm.yaml", "gateway-industrial.yaml"};
static const char *const recipe_products[RECIPES] = {"smartplug-a1", "gateway-g2"};

struct fz {
        const uint8_t *in;
        size_t len, off;
        int gone;
        unsigned run;     /* requests the device still answers by itself */
        size_t piece;     /* most bytes per read for the queued answer, 0: as asked */
        uint64_t now;     /* virtual clock, ms */
        uint8_t q[Q_CAP]; /* bytes for the host */
        size_t q_len, q_off;
        uint8_t dout[Q_CAP]; /* what the device sent for the current request */
        size_t dout_len;
        struct kiln_decoder dec; /* the host's requests */
        uint8_t dec_buf[KILN_FRAME_WIRE_MAX(DEV_PAYLOAD)];
        uint8_t type;
        uint32_t id;
        uint32_t session; /* the session the host was last told about */
        int faked;        /* the host got an answer the device did not give (FRAME, MUTATE, RAW) */
        struct sim_state *st;
        struct sim_chip chip;
        struct kiln_agent agent;
        struct kiln_agent_config cfg;
        uint8_t rx[KILN_AGENT_RX_SIZE(DEV_PAYLOAD)];
        uint8_t resp[KILN_AGENT_RESP_SIZE(DEV_PAYLOAD)];
        FILE *record; /* seed recording: the device's answers as FRAME records */
};

static struct fz *g;
static char tmp_dir[256];
static struct hsm_token *token;
static struct recipe *recipes[RECIPES];
static struct engine engines[RECIPES];
static struct report *rep;
static FILE *devnull;

/* ------------------------------------------------------------------------- the device */

static int dev_output(void *ctx, const uint8_t *p, size_t n)
{
        struct fz *d = ctx;

        if (n > sizeof(d->dout) - d->dout_len)
                return KILN_E_NOSPACE;
        memcpy(d->dout + d->dout_len, p, n);
        d->dout_len += n;
        return KILN_OK;
}

/* Only a failed save or a fault stops the chip; neither is possible here. */
static void dev_stop(void *ctx, int code, const char *why)
{
        (void)ctx;
        (void)code;
        (void)why;
        abort();
}

static int device_boot(struct fz *d, unsigned rc)
{
        static const uint8_t uid[2][8] = {{0xf0, 0x22, 0, 1, 2, 3, 4, 5},
                                          {0xf0, 0x22, 1, 1, 2, 3, 4, 5}};
        struct sim_identity id;

        memset(&id, 0, sizeof(id));
        id.uid = uid[rc];
        id.uid_len = sizeof(uid[rc]);
        id.product = recipe_products[rc];
        id.hw_rev = 2;
        id.fw_version = "1.0.0";
        id.storage_cap = 1u << 20;
        if (sim_state_new(&id, &d->st) < 0)
                return -1;
        /* no state path: nothing to save, the chip lives for one input */
        sim_chip_init(d->st, NULL, &d->chip);
        d->chip.hooks.ctx = d;
        d->chip.hooks.output = dev_output;
        d->chip.hooks.stop = dev_stop;
        d->cfg.ops = &sim_chip_ops;
        d->cfg.ctx = &d->chip;
        d->cfg.rx_buf = d->rx;
        d->cfg.rx_cap = sizeof(d->rx);
        d->cfg.resp_buf = d->resp;
        d->cfg.resp_cap = sizeof(d->resp);
        d->cfg.max_payload = DEV_PAYLOAD;
        if (kiln_agent_init(&d->cfg, &d->agent) != KILN_OK)
                return -1;
        d->session = kiln_agent_session(&d->agent);
        return 0;
}

/* The device executes one request; its answer is in d->dout. */
static void device_exec(struct fz *d, const uint8_t *req, size_t n)
{
        d->dout_len = 0;
        if (kiln_agent_feed(&d->agent, req, n) == KILN_AGENT_RESET || d->chip.reset_requested) {
                d->chip.reset_requested = 0;
                (void)kiln_agent_init(&d->cfg, &d->agent);
        }
        d->chip.busy_ms = 0; /* time is virtual */
        d->session = kiln_agent_session(&d->agent);
}

/* --------------------------------------------------------------------- the transport */

static void q_add(struct fz *d, const uint8_t *p, size_t n)
{
        if (d->q_off == d->q_len)
                d->q_off = d->q_len = 0;
        if (n > sizeof(d->q) - d->q_len)
                n = sizeof(d->q) - d->q_len;
        memcpy(d->q + d->q_len, p, n);
        d->q_len += n;
}

static unsigned take_u8(struct fz *d)
{
        return d->off < d->len ? d->in[d->off++] : 0;
}

static unsigned take_u16(struct fz *d)
{
        unsigned v = take_u8(d);

        return v | take_u8(d) << 8;
}

/* Record the device's answer as a FRAME record (seed recording). */
static void record_answer(struct fz *d)
{
        uint8_t copy[Q_CAP];
        size_t start = 0, end;
        struct kiln_frame f;

        if (d->record == NULL)
                return;
        while (start < d->dout_len && d->dout[start] == 0)
                start++;
        end = start;
        while (end < d->dout_len && d->dout[end] != 0)
                end++;
        memcpy(copy, d->dout + start, end - start);
        if (kiln_frame_decode(copy, end - start, DEV_PAYLOAD, &f) != KILN_OK)
                return;
        fputc(R_FRAME | ((f.type == KILN_MSG_NAK) ? 0x40 : 0), d->record);
        fputc(f.status, d->record);
        fputc((int)(f.len & 0xff), d->record);
        fputc((int)(f.len >> 8), d->record);
        fwrite(f.payload, 1, f.len, d->record);
}

/* The device's answer with one payload byte altered and a valid CRC. */
static void mutate_answer(struct fz *d, unsigned off, unsigned x)
{
        uint8_t copy[Q_CAP], wire[Q_CAP], payload[KILN_FRAME_WIRE_MAX(DEV_PAYLOAD)];
        size_t start = 0, end, wlen = 0;
        struct kiln_frame f;

        while (start < d->dout_len && d->dout[start] == 0)
                start++;
        end = start;
        while (end < d->dout_len && d->dout[end] != 0)
                end++;
        memcpy(copy, d->dout + start, end - start);
        if (kiln_frame_decode(copy, end - start, DEV_PAYLOAD, &f) != KILN_OK || f.len == 0) {
                q_add(d, d->dout, d->dout_len);
                return;
        }
        memcpy(payload, f.payload, f.len);
        payload[off % f.len] ^= (uint8_t)(x ? x : 1);
        f.payload = payload;
        if (kiln_frame_encode(&f, wire, sizeof(wire), &wlen) == KILN_OK)
                q_add(d, wire, wlen);
}

static void frame_answer(struct fz *d, unsigned ctl)
{
        unsigned status = take_u8(d) % 20, n = take_u16(d);
        uint8_t wire[KILN_FRAME_WIRE_MAX(65535u)];
        struct kiln_frame f;
        size_t wlen = 0;

        if (n > d->len - d->off)
                n = (unsigned)(d->len - d->off);
        memset(&f, 0, sizeof(f));
        f.version = KILN_PROTO_VERSION;
        f.type = (ctl & 0x40) ? KILN_MSG_NAK : d->type;
        if (ctl & 0x10)
                f.type ^= 0x05;
        f.flags = KILN_FLAG_RESPONSE;
        f.status = (uint8_t)status;
        /* a HELLO answer names the session in its nonce (payload bytes 12..15) */
        if (d->type == KILN_MSG_HELLO && status == 0 && n >= 16 && !(ctl & 0x60))
                d->session = kiln_le32(d->in + d->off + 12);
        f.session = d->session ^ ((ctl & 0x20) ? 0x01000000u : 0);
        f.request_id = (ctl & 0x40) ? 0 : d->id + ((ctl & 0x08) ? 1 : 0);
        f.len = n;
        f.payload = d->in + d->off;
        if (kiln_frame_encode(&f, wire, sizeof(wire), &wlen) == KILN_OK)
                q_add(d, wire, wlen);
        d->off += n;
}

/* Decide, from the input, what the host gets for the request it just sent. */
static void answer(struct fz *d, const uint8_t *req, size_t n)
{
        for (;;) {
                unsigned ctl, a, b;

                if (d->run > 0) {
                        d->run--;
                        device_exec(d, req, n);
                        record_answer(d);
                        q_add(d, d->dout, d->dout_len);
                        return;
                }
                if (d->off >= d->len) {
                        d->gone = 1;
                        return;
                }
                ctl = take_u8(d);
                d->piece = (ctl & 0x80) ? (take_u8(d) % 64u) + 1u : 0;
                switch (ctl & 7u) {
                case R_REAL:
                        device_exec(d, req, n);
                        q_add(d, d->dout, d->dout_len);
                        return;
                case R_RAW:
                        d->faked = 1;
                        a = take_u8(d);
                        if (a > d->len - d->off)
                                a = (unsigned)(d->len - d->off);
                        q_add(d, d->in + d->off, a);
                        d->off += a;
                        continue;
                case R_FRAME:
                        d->faked = 1;
                        frame_answer(d, ctl);
                        return;
                case R_MUTATE:
                        d->faked = 1;
                        a = take_u16(d);
                        b = take_u8(d);
                        device_exec(d, req, n);
                        mutate_answer(d, a, b);
                        return;
                case R_CORRUPT:
                        a = take_u16(d);
                        b = take_u8(d);
                        device_exec(d, req, n);
                        if (d->dout_len > 0)
                                d->dout[a % d->dout_len] ^= (uint8_t)(b ? b : 1);
                        q_add(d, d->dout, d->dout_len);
                        return;
                case R_DROP:
                        device_exec(d, req, n);
                        return;
                case R_HANGUP:
                        d->gone = 1;
                        return;
                default:
                        d->run = take_u8(d) + 1u;
                        continue;
                }
        }
}

static int fz_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct fz *d = ctx;
        size_t avail = d->q_len - d->q_off;

        if (avail == 0) {
                if (d->gone)
                        return kiln_fail(KILN_E_DEVICE_GONE, "fuzz device hung up");
                d->now += timeout_ms;
                return KILN_E_TIMEOUT;
        }
        if (d->piece > 0 && n > d->piece)
                n = d->piece;
        if (n > avail)
                n = avail;
        memcpy(buf, d->q + d->q_off, n);
        d->q_off += n;
        d->now += 1;
        return (int)n;
}

static int fz_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct fz *d = ctx;
        size_t off = 0;
        int got = 0;

        (void)timeout_ms;
        if (d->gone)
                return kiln_fail(KILN_E_DEVICE_GONE, "fuzz device hung up");
        while (off < n) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&d->dec, buf + off, n - off, &used, &f);

                off += used;
                if (r == KILN_DEC_FRAME) {
                        d->type = f.type;
                        d->id = f.request_id;
                        got = 1;
                } else if (r < 0) {
                        __builtin_trap(); /* the host only sends well-formed frames */
                }
        }
        if (got)
                answer(d, buf, n);
        return KILN_OK;
}

static uint64_t fz_now(void *ctx)
{
        return ((struct fz *)ctx)->now;
}

static const struct proto_transport_ops fz_ops = {fz_read, fz_write, NULL, fz_now};

static int fz_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        (void)rest;
        if (g == NULL)
                return kiln_fail(KILN_E_PORT_OPEN, "no fuzz device");
        return proto_transport_new(&fz_ops, g, spec, 0, ret);
}

static struct proto_transport_scheme fz_scheme = {"fuzz", fz_open, NULL};

/* ---------------------------------------------------------------------- set-up */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
        (void)sb;
        (void)flag;
        (void)ftw;
        return remove(path);
}

/* Registered before the token is opened: runs after SoftHSM's own exit handlers. */
static void remove_tmp(void)
{
        if (tmp_dir[0] != '\0')
                nftw(tmp_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Registered after the token is opened: runs before SoftHSM tears itself down. */
static void cleanup(void)
{
        for (unsigned i = 0; i < RECIPES; i++) {
                if (recipes[i] != NULL)
                        engine_fini(&engines[i]);
                recipe_free(recipes[i]);
                recipes[i] = NULL;
        }
        hsm_token_free(token);
        token = NULL;
        report_free(rep);
        rep = NULL;
        if (devnull != NULL)
                fclose(devnull);
        devnull = NULL;
        free(g);
        g = NULL;
}

static void quiet(void *ctx, enum kiln_log_level level, const char *line)
{
        (void)ctx;
        (void)level;
        (void)line;
}

static void die(const char *what)
{
        fprintf(stderr, "fuzz_dialogue: %s: %s\n", what,
                kiln_err_detail()[0] ? kiln_err_detail() : "failed");
        exit(1);
}

/* The source tree: $KILN_SOURCE_DIR, else three levels above this file. */
static void source_dir(char *out, size_t cap)
{
        const char *env = getenv("KILN_SOURCE_DIR");
        char *slash;

        if (env != NULL && env[0] != '\0') {
                snprintf(out, cap, "%s", env);
                return;
        }
        snprintf(out, cap, "%s", __FILE__);
        for (int i = 0; i < 3; i++) {
                slash = strrchr(out, '/');
                if (slash == NULL) {
                        snprintf(out, cap, "..");
                        return;
                }
                *slash = '\0';
        }
}

static void write_seeds(const char *dir);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        char src[512], path[1024], dev_dir[300];
        struct yaml_doc_diags diags;
        enum hsm_dev_state state;
        struct hsm_dev dev;
        struct db *db = NULL;
        const char *seeds = getenv("KILN_FUZZ_DIALOGUE_SEEDS");

        (void)argc;
        (void)argv;
        kiln_log_set_sink(quiet, NULL);
        signal(SIGPIPE, SIG_IGN);
        snprintf(tmp_dir, sizeof(tmp_dir), "%s/kiln-fuzz-dialogue-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (mkdtemp(tmp_dir) == NULL) {
                tmp_dir[0] = '\0';
                die("mkdtemp");
        }
        atexit(remove_tmp);
        snprintf(dev_dir, sizeof(dev_dir), "%s/hsm", tmp_dir);
        if (hsm_dev_init(dev_dir, NULL, &state) < 0 || hsm_dev_use(dev_dir, NULL, &dev) < 0 ||
            hsm_token_open(&dev.cfg, &token) < 0)
                die("development token");
        atexit(cleanup);
        devnull = fopen("/dev/null", "w");
        if (devnull == NULL || report_new(REPORT_LINES, devnull, 1, &rep) < 0 ||
            db_open(":memory:", &db) < 0)
                die("report or database");
        source_dir(src, sizeof(src));
        for (unsigned i = 0; i < RECIPES; i++) {
                struct engine_setup es;

                snprintf(path, sizeof(path), "%s/recipes/%s", src, recipe_files[i]);
                yaml_doc_diags_init(&diags);
                if (recipe_load_file(path, 0, &diags, &recipes[i]) < 0) {
                        yaml_doc_diags_print(&diags, path, stderr);
                        die(path);
                }
                yaml_doc_diags_free(&diags);
                memset(&es, 0, sizeof(es));
                es.recipe = recipes[i];
                es.db = db;
                es.token = token;
                es.commitment_key_uri = HSM_DEV_COMMIT_URI;
                es.station_id = "fuzz-station";
                es.work_order = "WO-FUZZ";
                es.operator_id = "fuzz";
                es.dev_mode = 1;
                es.report = rep;
                if (engine_init(&es, &engines[i]) < 0) {
                        recipe_free(recipes[i]);
                        recipes[i] = NULL;
                        die("engine");
                }
                /* request ids from 1: a dialogue replays the same way */
                engines[i].session_opts.first_request_id = 1;
        }
        db_close(db);
        g = calloc(1, sizeof(*g));
        if (g == NULL)
                die("memory");
        if (proto_transport_scheme_register(&fz_scheme) < 0)
                die("scheme");
        if (seeds != NULL && seeds[0] != '\0') {
                write_seeds(seeds);
                exit(0);
        }
        return 0;
}

/* ------------------------------------------------------------------------ one input */

static int fuse_planned(const struct recipe *rc, const char *field, const struct recipe_fuse **ret)
{
        for (unsigned i = 0; i < rc->n_fuses; i++) {
                if (strcmp(rc->fuses[i].field, field) == 0) {
                        *ret = &rc->fuses[i];
                        return 1;
                }
        }
        return 0;
}

/* What the engine did to the device must match what it may do. */
static void check_device(const struct fz *d, const struct recipe *rc, const struct unit_result *res)
{
        for (unsigned f = 0; f < SIM_FUSE_COUNT; f++) {
                const struct recipe_fuse *plan = NULL;
                unsigned nbytes = (sim_fuse_map[f].width_bits + 7u) / 8u;

                if (!fuse_planned(rc, sim_fuse_map[f].name, &plan)) {
                        for (unsigned b = 0; b < nbytes; b++)
                                if (d->st->fuses[f][b] != 0)
                                        __builtin_trap(); /* a burn the plan does not have */
                        continue;
                }
                if (plan->mac_index >= 0)
                        continue; /* the unit's own MAC: allocated, not literal */
                for (unsigned b = 0; b < nbytes && b < plan->value_len; b++)
                        if (d->st->fuses[f][b] & (uint8_t)~plan->value[b])
                                __builtin_trap(); /* a burn with different data */
        }
        /* a device that only ever answered for itself: PASS means it is locked (answers the
         * input made up may lie to the station, which cannot know) */
        if (res->verdict == DB_VERDICT_PASS && !d->faked &&
            (d->st->debug_port != 0 || d->st->lifecycle != KILN_LC_PRODUCTION))
                __builtin_trap(); /* PASS without the device locked */
}

static void run_one(const uint8_t *data, size_t size, FILE *record)
{
        unsigned rc = data[0] & 1u;
        struct unit_result res;
        struct db_work_order wo;
        struct db *db = NULL;
        struct fz *d = g;

        memset(d, 0, sizeof(*d));
        d->in = data;
        d->len = size;
        d->off = 1;
        d->now = 1;
        d->record = record;
        kiln_decoder_init(&d->dec, d->dec_buf, sizeof(d->dec_buf), DEV_PAYLOAD);
        if (device_boot(d, rc) < 0)
                __builtin_trap();
        if (db_open(":memory:", &db) < 0 ||
            db_recipe_store(db, recipes[rc]->sha256_hex, recipes[rc]->id, recipes[rc]->version,
                            recipes[rc]->body, recipes[rc]->body_len) < 0 ||
            db_work_order_ensure(db, "WO-FUZZ", "LOT-FUZZ", recipes[rc]->sha256_hex, 10, &wo) < 0)
                __builtin_trap();
        engines[rc].db = db;
        (void)engine_unit_run(&engines[rc], "F1", 0, "fuzz:dut", &res);
        check_device(d, recipes[rc], &res);
        if (getenv("KILN_FUZZ_DIALOGUE_VERBOSE") != NULL)
                fprintf(stderr, "fuzz_dialogue: %s %s %s (%s)\n", recipes[rc]->id,
                        db_verdict_name(res.verdict), failcode_name(res.code), res.reason);
        engines[rc].db = NULL;
        db_close(db);
        sim_state_free(d->st);
        d->st = NULL;
        kiln_err_reset();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size == 0 || g == NULL)
                return 0;
        run_one(data, size, NULL);
        return 0;
}

/* ------------------------------------------------------------------------- seeds */

static void seed_write(const char *dir, const char *name, const uint8_t *p, size_t n)
{
        char path[1024];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "wb");
        if (f == NULL)
                die(path);
        fwrite(p, 1, n, f);
        fclose(f);
}

/* [rc] RUN(k requests) then the fault record, then RUN(the rest). k = 0: the fault comes first. */
static size_t seed_fault(uint8_t *out, unsigned rc, unsigned k, const uint8_t *fault, size_t n)
{
        size_t len = 0;

        out[len++] = (uint8_t)rc;
        if (k > 0) {
                out[len++] = R_RUN;
                out[len++] = (uint8_t)(k - 1);
        }
        memcpy(out + len, fault, n);
        len += n;
        out[len++] = R_RUN;
        out[len++] = 255;
        return len;
}

static void write_seeds(const char *dir)
{
        for (unsigned rc = 0; rc < RECIPES; rc++) {
                const char *tag = rc == 0 ? "plug" : "gw";
                uint8_t in[8192], clean[3] = {(uint8_t)rc, R_RUN, 255};
                char name[64], *rec_buf = NULL;
                size_t rec_len = 0, n;
                unsigned requests;
                FILE *mem;

                /* a clean dialogue, the device's answers recorded as FRAME records */
                mem = open_memstream(&rec_buf, &rec_len);
                if (mem == NULL)
                        die("open_memstream");
                fputc((int)rc, mem);
                run_one(clean, sizeof(clean), mem);
                fclose(mem);
                snprintf(name, sizeof(name), "%s-clean", tag);
                seed_write(dir, name, clean, sizeof(clean));
                snprintf(name, sizeof(name), "%s-recorded", tag);
                seed_write(dir, name, (const uint8_t *)rec_buf, rec_len);
                /* the number of requests of a clean run: FRAME records in the recording */
                requests = 0;
                for (size_t off = 1; off + 4 <= rec_len; requests++)
                        off += 4 + ((size_t)(uint8_t)rec_buf[off + 2] |
                                    (size_t)(uint8_t)rec_buf[off + 3] << 8);
                free(rec_buf);
                /* faults across every step: every third request, and the last ones */
                for (unsigned k = 0; k < requests; k += (k + 3 < requests ? 3 : 1)) {
                        static const uint8_t drop[] = {R_DROP};
                        static const uint8_t hang[] = {R_HANGUP};
                        static const uint8_t corrupt[] = {R_CORRUPT, 9, 0, 0x10};
                        static const uint8_t mutate[] = {R_MUTATE, 2, 0, 0x01};
                        static const uint8_t noise[] = {R_RAW, 12,   'b',  'o',  'o',
                                                        't',   ' ',  'l',  'o',  'g',
                                                        '\r',  '\n', 0x7e, 0x21, R_REAL};
                        static const uint8_t pieces[] = {0x80 | R_REAL, 2};
                        static const uint8_t nak[] = {R_FRAME | 0x40, 0, 1, 0, 3};
                        static const uint8_t status[] = {R_FRAME, 7, 0, 0};
                        const struct {
                                const char *what;
                                const uint8_t *p;
                                size_t n;
                        } v[] = {{"drop", drop, sizeof(drop)},
                                 {"hangup", hang, sizeof(hang)},
                                 {"corrupt", corrupt, sizeof(corrupt)},
                                 {"mutate", mutate, sizeof(mutate)},
                                 {"noise", noise, sizeof(noise)},
                                 {"pieces", pieces, sizeof(pieces)},
                                 {"nak", nak, sizeof(nak)},
                                 {"status", status, sizeof(status)}};

                        for (unsigned i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
                                /* the rarer variants at every other placement */
                                if (i >= 4 && (k / 3) % 2 != i % 2)
                                        continue;
                                n = seed_fault(in, rc, k, v[i].p, v[i].n);
                                snprintf(name, sizeof(name), "%s-%s-%03u", tag, v[i].what, k);
                                seed_write(dir, name, in, n);
                        }
                }
        }
}
