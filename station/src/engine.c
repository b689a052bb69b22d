/*
 * The unit state machine. See kiln/engine.h for the contract and DESIGN.md §3 for the flow.
 *
 * Ordering rules that make a crash at any instant safe:
 *   - keys, certificates and credential commitments are committed before anything reaches the
 *     device, so no certificate exists on a device that the database does not know;
 *   - everything written and attested is committed together with the intents of every burn
 *     (db_unit_record_verified) before the first fuse is touched, so nothing is burned before
 *     steps 1-8 are recorded and a resumed unit only ever burns the journaled values;
 *   - the burns' results are committed with the verdict; on resume a field is read back first and
 *     programmed again only with its journaled value, so a result lost to a crash costs nothing.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/sha.h>
#include <openssl/x509.h>

#include "kiln/engine.h"
#include "kiln/error.h"
#include "kiln/export.h"
#include "kiln/hsm.h"
#include "kiln/hsm_cert.h"
#include "kiln/hsm_devkey.h"
#include "kiln/label.h"
#include "kiln/secret.h"
#include "kiln/util.h"

#define SNAP_MAX 64              /* fuse fields read in a snapshot */
#define LOCK_ENTRIES_MAX (KILN_RECIPE_FUSES_MAX + 1)
#define CRED_LABEL "KILN-CRED-V1"

/* ------------------------------------------------------------------------------------ setup */

int engine_init(const struct engine_setup *s, struct engine *e)
{
        const struct recipe *rc = s->recipe;
        int r, need_hmac = 0;

        memset(e, 0, sizeof(*e));
        pthread_mutex_init(&e->active_lock, NULL);
        e->recipe = rc;
        e->db = s->db;
        e->token = s->token;
        e->dev_mode = s->dev_mode;
        e->report = s->report;
        e->stop = s->stop;
        e->labels = s->labels;
        e->label_format = s->label_format;
        proto_session_opts_default(&e->session_opts);
        if (kiln_strlcpy(e->station_id, s->station_id, sizeof(e->station_id)) < 0 ||
            kiln_strlcpy(e->work_order, s->work_order, sizeof(e->work_order)) < 0 ||
            kiln_strlcpy(e->operator_id, s->operator_id, sizeof(e->operator_id)) < 0) {
                r = kiln_fail(KILN_E_RANGE, "station id, work order or operator id too long");
                goto out;
        }
        for (unsigned i = 0; i < rc->n_keys; i++) {
                const struct recipe_key *k = &rc->keys[i];
                struct kiln_buf pem;
                unsigned j;

                if (!k->has_cert)
                        continue;
                /* keys that name the same issuer share one loaded issuer */
                for (j = 0; j < i; j++)
                        if (rc->keys[j].has_cert &&
                            strcmp(rc->keys[j].cert.issuer_uri, k->cert.issuer_uri) == 0)
                                break;
                if (j < i) {
                        e->issuer[i] = e->issuer[j];
                        e->chain_pem[i] = e->chain_pem[j];
                        continue;
                }
                r = hsm_issuer_load(e->token, k->cert.issuer_uri, &e->issuer[i]);
                if (r < 0)
                        goto out;
                kiln_buf_init(&pem, 8 * KILN_CERT_DER_MAX);
                for (size_t c = 0; c < hsm_issuer_chain_len(e->issuer[i]); c++) {
                        const uint8_t *der;
                        size_t len;

                        r = hsm_issuer_chain_der(e->issuer[i], c, &der, &len);
                        if (r == KILN_OK)
                                r = export_pem_cert(der, len, &pem);
                        if (r < 0) {
                                kiln_buf_free(&pem);
                                goto out;
                        }
                }
                e->chain_pem[i] = kiln_strdup(kiln_buf_cstr(&pem));
                kiln_buf_free(&pem);
                if (e->chain_pem[i] == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
        }
        for (unsigned i = 0; i < rc->n_creds; i++)
                need_hmac |= rc->creds[i].commitment == RECIPE_COMMIT_HMAC;
        if (need_hmac) {
                if (s->commitment_key_uri == NULL || s->commitment_key_uri[0] == '\0') {
                        r = kiln_fail(KILN_E_CONFIG, "recipe '%s' commits credentials with HMAC "
                                                     "but no hsm.commitment_key is configured",
                                      rc->id);
                        goto out;
                }
                r = hsm_key_find(e->token, s->commitment_key_uri, HSM_USE_HMAC, &e->commit_key);
                if (r < 0)
                        goto out;
        }
        r = KILN_OK;
out:
        if (r < 0)
                engine_fini(e);
        return r;
}

void engine_fini(struct engine *e)
{
        for (unsigned i = 0; i < KILN_RECIPE_KEYS_MAX; i++) {
                int shared = 0;

                for (unsigned j = 0; j < i; j++)
                        shared |= e->issuer[j] != NULL && e->issuer[j] == e->issuer[i];
                if (!shared) {
                        hsm_issuer_free(e->issuer[i]);
                        kiln_free(e->chain_pem[i]);
                }
        }
        memset(e->issuer, 0, sizeof(e->issuer));
        memset(e->chain_pem, 0, sizeof(e->chain_pem));
        hsm_key_free(e->commit_key);
        e->commit_key = NULL;
        pthread_mutex_destroy(&e->active_lock);
}

/* ------------------------------------------------------------------------------- unit state */

struct lock_entry {
        const struct recipe_fuse *f; /* NULL: the final lifecycle change */
        enum recipe_phase phase;     /* RECIPE_PHASE_MAX for the lifecycle */
        uint8_t want[KILN_FUSE_BYTES_MAX];
        size_t len;
        char want_hex[2 * KILN_FUSE_BYTES_MAX + 1];
        int64_t id;     /* journal row, 0 until the intent is journaled */
        int done;
        uint8_t readback[KILN_FUSE_BYTES_MAX];
        char readback_hex[2 * KILN_FUSE_BYTES_MAX + 1];
        unsigned attrs;
};

struct unit_ctx {
        struct engine *e;
        const struct recipe *rc;
        const char *slot;
        unsigned slot_index;
        struct proto_transport *t;
        struct proto_session *s;
        struct proto_info info;
        char uid_hex[DB_HEX_UID_MAX];
        struct proto_fuse snap[SNAP_MAX];
        unsigned n_snap;
        int active; /* uid_hex is in e->active */

        struct db_unit unit;
        int admitted;
        enum db_admit_kind kind;
        uint64_t macs[DB_MACS_MAX];
        struct recipe_values vals;

        struct hsm_devkey *devkey[KILN_RECIPE_KEYS_MAX];
        struct proto_keygen kg[KILN_RECIPE_KEYS_MAX];
        char fp_hex[KILN_RECIPE_KEYS_MAX][65];
        struct hsm_cert *cert[KILN_RECIPE_KEYS_MAX];
        char cert_serial[KILN_RECIPE_KEYS_MAX][2 * HSM_SERIAL_LEN + 1];
        char cert_not_after[KILN_RECIPE_KEYS_MAX][32];
        struct kiln_secret *cred[KILN_RECIPE_CREDENTIALS_MAX];
        char cred_commit[KILN_RECIPE_CREDENTIALS_MAX][65];
        char cred_salt[KILN_RECIPE_CREDENTIALS_MAX][33];

        struct db_attest_rec att[KILN_RECIPE_KEYS_MAX];
        unsigned n_att;
        struct lock_entry lock[LOCK_ENTRIES_MAX];
        unsigned n_lock;
        struct db_fuse_rec res[LOCK_ENTRIES_MAX]; /* burns done, written with the verdict */
        unsigned n_res;

        /* the running step */
        const char *step;
        uint64_t step_us;
        int64_t step_wall_ms;
        uint64_t start_us;
        enum failcode fc;
        char reason[DB_DETAIL_MAX];
        int scrap; /* the failure leaves the unit unusable for good */
        int impostor; /* the device is not the unit's: leave the unit as it is */
};

static int stop_requested(const struct unit_ctx *u)
{
        return u->e->stop != NULL && *u->e->stop;
}

static void step_begin(struct unit_ctx *u, const char *name)
{
        u->step = name;
        u->step_us = kiln_now_us();
        u->step_wall_ms = kiln_wall_ms();
        kiln_err_reset();
        report_slot(u->e->report, u->slot_index, u->slot, u->admitted ? u->unit.serial : NULL,
                    name);
}

static void step_ok(struct unit_ctx *u)
{
        uint64_t us = kiln_now_us() - u->step_us;

        db_unit_step(&u->unit, u->step, u->step_wall_ms, us, 1, NULL, NULL);
        report_step(u->e->report, u->slot, u->admitted ? u->unit.serial : NULL, u->step, 1,
                    (double)us / 1000.0, FC_NONE, NULL);
}

/* Record the failure of the running step; the first failure of a unit is the one kept. */
static int step_fail(struct unit_ctx *u, enum failcode fc, int r, const char *fmt, ...)
        KILN_PRINTF(4, 5);

static int step_fail(struct unit_ctx *u, enum failcode fc, int r, const char *fmt, ...)
{
        uint64_t us = kiln_now_us() - u->step_us;
        char why[DB_DETAIL_MAX];
        const char *detail = kiln_err_detail();

        if (fmt != NULL) {
                va_list ap;

                va_start(ap, fmt);
                vsnprintf(why, sizeof(why), fmt, ap);
                va_end(ap);
        } else {
                snprintf(why, sizeof(why), "%s", detail[0] ? detail : kiln_strerror(r));
        }
        if (u->fc == FC_NONE) {
                u->fc = fc;
                kiln_strlcpy(u->reason, why, sizeof(u->reason));
        }
        db_unit_step(&u->unit, u->step, u->step_wall_ms, us, 0, failcode_name(fc), why);
        report_step(u->e->report, u->slot, u->admitted ? u->unit.serial : NULL, u->step, 0,
                    (double)us / 1000.0, fc, why);
        return r < 0 ? r : KILN_E_INTERNAL;
}

/* Failure code of a link-level error, or `dflt` for what the device itself refused. */
static enum failcode fc_of(int r, enum failcode dflt)
{
        switch (r) {
        case KILN_E_DEVICE_GONE:
                return FC_DISCONNECT;
        case KILN_E_PROTO_NO_RESPONSE:
        case KILN_E_PROTO_NAK:
        case KILN_E_PROTO_SESSION:
        case KILN_E_PROTO_UNEXPECTED:
        case KILN_E_PROTO_MALFORMED:
        case KILN_E_TIMEOUT:
        case KILN_E_IO:
        case KILN_E_USB:
                return FC_LINK;
        case KILN_E_PORT_OPEN:
        case KILN_E_PORT_BUSY:
        case KILN_E_PORT_CONFIG:
        case KILN_E_PORT_SPEC:
                return FC_PORT;
        case KILN_E_NOSPACE:
                return FC_DISK_FULL;
        case KILN_E_DB:
        case KILN_E_DB_BUSY:
        case KILN_E_DB_SCHEMA:
                return FC_DB;
        case KILN_E_DB_CONSTRAINT:
                return FC_DUPLICATE;
        case KILN_E_WRONG_DEVICE:
                return FC_WRONG_DEVICE;
        default:
                if (r <= KILN_E_HSM_MODULE && r > KILN_E_CERT_BUILD)
                        return FC_HSM;
                return dflt;
        }
}

/* During the lock a lost link is not a plain link error: the unit is mid-burn. */
static enum failcode fc_lock(int r, enum failcode dflt)
{
        enum failcode fc = fc_of(r, dflt);

        return fc == FC_DISCONNECT || fc == FC_LINK ? FC_LOCK_INTERRUPTED : fc;
}

static void hex(const uint8_t *p, size_t n, char *out, size_t cap)
{
        if (kiln_hex_encode(p, n, out, cap) < 0 && cap > 0)
                out[0] = '\0';
}

static const char *snap_value_hex(const struct proto_fuse *f, char *out, size_t cap)
{
        hex(f->value, f->value_len, out, cap);
        return out;
}

static const struct proto_fuse *snap_find(const struct unit_ctx *u, const char *field)
{
        for (unsigned i = 0; i < u->n_snap; i++)
                if (strcmp(u->snap[i].name, field) == 0)
                        return &u->snap[i];
        return NULL;
}

/* Read every fuse field by index until the device says NOT_FOUND. */
static int fuse_snapshot(struct unit_ctx *u)
{
        u->n_snap = 0;
        for (uint16_t i = 0; i < SNAP_MAX; i++) {
                int r = proto_session_fuse_read_index(u->s, i, &u->snap[i]);

                if (r == KILN_E_PROTO_DEVICE &&
                    proto_session_device_error(u->s)->status == KILN_ST_NOT_FOUND) {
                        kiln_err_reset();
                        return KILN_OK;
                }
                if (r < 0)
                        return r;
                u->n_snap = i + 1u;
        }
        return kiln_fail(KILN_E_LIMIT, "device lists more than %u fuse fields", SNAP_MAX);
}

/* "field=hex" strings for the database, pointing into storage. */
static unsigned snapshot_strings(const struct unit_ctx *u, char storage[][KILN_NAME_MAX + 2 +
                                                                      2 * KILN_FUSE_BYTES_MAX],
                                 const char *ptrs[])
{
        for (unsigned i = 0; i < u->n_snap; i++) {
                char v[2 * KILN_FUSE_BYTES_MAX + 1];

                snprintf(storage[i], KILN_NAME_MAX + 2 + 2 * KILN_FUSE_BYTES_MAX, "%s=%s",
                         u->snap[i].name, snap_value_hex(&u->snap[i], v, sizeof(v)));
                ptrs[i] = storage[i];
        }
        return u->n_snap;
}

static int mac_parse(const char *s, uint64_t *ret)
{
        unsigned b[6];

        if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
                return KILN_E_SYNTAX;
        *ret = 0;
        for (int i = 0; i < 6; i++)
                *ret = (*ret << 8) | (b[i] & 0xFF);
        return KILN_OK;
}

/* ------------------------------------------------------------------------------- 1 connect */

static int do_connect(struct unit_ctx *u, const char *port)
{
        int r;

        step_begin(u, "connect");
        r = proto_transport_open(port, &u->t);
        if (r < 0)
                return step_fail(u, FC_PORT, r, NULL);
        r = proto_session_new(u->t, &u->e->session_opts, &u->s);
        if (r == KILN_OK)
                r = proto_session_hello(u->s, NULL);
        if (r < 0)
                return step_fail(u, fc_of(r, FC_LINK), r, NULL);
        if (!u->e->dev_mode &&
            (proto_session_hello_info(u->s)->capabilities & KILN_CAP_SIMULATED))
                return step_fail(u, FC_WRONG_DEVICE, KILN_E_WRONG_DEVICE,
                                 "a simulated device (agent '%s') is refused in production mode",
                                 proto_session_hello_info(u->s)->agent);
        step_ok(u);
        return KILN_OK;
}

/* ------------------------------------------------------------------------------ 2 identify */

/*
 * The database holds this chip as a unit whose lock started and did not pass: left in progress by
 * an interrupted station, or awaiting a quality disposition. Its own lock may have moved it out
 * of the lifecycles the recipe admits (lifecycle_final), so the lifecycle check is not for it:
 * admission decides (resume, or E-DISPOSITION).
 */
static int lock_started_unit(struct unit_ctx *u)
{
        struct db_unit *du = kiln_calloc(1, sizeof(*du));
        int started = 0;

        if (du != NULL && db_unit_by_uid(u->e->db, u->uid_hex, du) == KILN_OK)
                started = du->lock_started && du->verdict != DB_VERDICT_PASS;
        kiln_free(du);
        kiln_err_reset(); /* not found is the common answer, and not a failure */
        return started;
}

static int do_identify(struct unit_ctx *u)
{
        const struct recipe *rc = u->rc;
        int r;

        step_begin(u, "identify");
        r = proto_session_get_info(u->s, &u->info);
        if (r == KILN_OK)
                r = fuse_snapshot(u);
        if (r < 0)
                return step_fail(u, fc_of(r, FC_LINK), r, NULL);
        hex(u->info.chip_uid, u->info.chip_uid_len, u->uid_hex, sizeof(u->uid_hex));
        if (strcmp(u->info.product_id, rc->product.id) != 0)
                return step_fail(u, FC_WRONG_DEVICE, KILN_E_WRONG_DEVICE,
                                 "device is product '%s', recipe '%s' is for '%s'",
                                 u->info.product_id, rc->id, rc->product.id);
        if (!recipe_admits_hw_revision(rc, u->info.hw_revision))
                return step_fail(u, FC_WRONG_DEVICE, KILN_E_WRONG_DEVICE,
                                 "hardware revision %u is not one recipe '%s' accepts",
                                 u->info.hw_revision, rc->id);
        if (!recipe_admits_lifecycle(rc, u->info.lifecycle) && !lock_started_unit(u))
                return step_fail(u, FC_LIFECYCLE, KILN_E_LIFECYCLE,
                                 "device lifecycle is %s; recipe '%s' does not admit it",
                                 proto_lifecycle_name(u->info.lifecycle), rc->id);
        if (rc->product.fw_version != NULL && strcmp(rc->product.fw_version, u->info.fw_version))
                return step_fail(u, FC_FIRMWARE, KILN_E_MISMATCH,
                                 "device runs firmware '%s', recipe expects '%s'",
                                 u->info.fw_version, rc->product.fw_version);
        if (rc->product.has_fw_sha256 &&
            memcmp(rc->product.fw_sha256, u->info.fw_sha256, sizeof(u->info.fw_sha256)) != 0)
                return step_fail(u, FC_FIRMWARE, KILN_E_MISMATCH,
                                 "running firmware image hash differs from the recipe's");
        for (unsigned i = 0; i < rc->n_keys; i++)
                if (rc->keys[i].slot >= u->info.key_slots)
                        return step_fail(u, FC_WRONG_DEVICE, KILN_E_WRONG_DEVICE,
                                         "device has %u key slots; key '%s' needs slot %u",
                                         u->info.key_slots, rc->keys[i].name, rc->keys[i].slot);
        for (unsigned i = 0; i < rc->n_fuses; i++) {
                const struct proto_fuse *f = snap_find(u, rc->fuses[i].field);

                if (f == NULL || f->width_bits != rc->fuses[i].bits)
                        return step_fail(u, FC_WRONG_DEVICE, KILN_E_WRONG_DEVICE,
                                         "device has no %u-bit fuse field '%s'",
                                         rc->fuses[i].bits, rc->fuses[i].field);
        }
        /* the same chip in two slots at once can only be a clone */
        pthread_mutex_lock(&u->e->active_lock);
        for (unsigned i = 0; i < ENGINE_ACTIVE_MAX && !u->active; i++)
                if (strcmp(u->e->active[i], u->uid_hex) == 0)
                        r = KILN_E_CLONE;
        for (unsigned i = 0; r == KILN_OK && i < ENGINE_ACTIVE_MAX; i++) {
                if (u->e->active[i][0] == '\0') {
                        kiln_strlcpy(u->e->active[i], u->uid_hex, DB_HEX_UID_MAX);
                        u->active = 1;
                        break;
                }
        }
        pthread_mutex_unlock(&u->e->active_lock);
        if (r == KILN_E_CLONE) {
                report_alert(u->e->report, u->slot, "clone", "chip UID seen in two slots at once");
                return step_fail(u, FC_CLONE, r, "chip UID %s is in another slot right now",
                                 u->uid_hex);
        }
        step_ok(u);
        return KILN_OK;
}

static void active_release(struct unit_ctx *u)
{
        if (!u->active)
                return;
        pthread_mutex_lock(&u->e->active_lock);
        for (unsigned i = 0; i < ENGINE_ACTIVE_MAX; i++)
                if (strcmp(u->e->active[i], u->uid_hex) == 0)
                        u->e->active[i][0] = '\0';
        pthread_mutex_unlock(&u->e->active_lock);
        u->active = 0;
}

/* ------------------------------------------------------------------------------- 3 admit */

static int render_serial(void *ctx, uint64_t seq, char *out, size_t cap)
{
        struct unit_ctx *u = ctx;

        return recipe_serial_render(u->rc, seq, &u->vals, out, cap);
}

static int do_admit(struct unit_ctx *u)
{
        char storage[SNAP_MAX][KILN_NAME_MAX + 2 + 2 * KILN_FUSE_BYTES_MAX];
        const char *snap[SNAP_MAX];
        struct db_admit_request q;
        struct db_unit admitted;
        struct db_step pending[DB_STEPS_PENDING_MAX];
        unsigned n_pending = u->unit.n_pending;
        char fw_hex[65];
        char serial_counter[KILN_RECIPE_ID_MAX + 8], mac_counter[KILN_RECIPE_ID_MAX + 8];
        int r;

        step_begin(u, "admit");
        /* serial and MAC pools are separate allocation counters even when named alike */
        snprintf(serial_counter, sizeof(serial_counter), "serial:%s", u->rc->serial.pool);
        snprintf(mac_counter, sizeof(mac_counter), "mac:%s", u->rc->mac.pool);
        memset(&q, 0, sizeof(q));
        hex(u->info.fw_sha256, sizeof(u->info.fw_sha256), fw_hex, sizeof(fw_hex));
        u->vals.chip_uid = u->info.chip_uid;
        u->vals.chip_uid_len = u->info.chip_uid_len;
        u->vals.station = u->e->station_id;
        u->vals.time_ms = kiln_wall_ms();
        q.chip_uid = u->uid_hex;
        q.work_order = u->e->work_order;
        q.station_id = u->e->station_id;
        q.slot = u->slot;
        q.operator_id = u->e->operator_id;
        q.recipe_sha256 = u->rc->sha256_hex;
        q.product_id = u->info.product_id;
        q.hw_revision = u->info.hw_revision;
        q.fw_version = u->info.fw_version;
        q.fw_sha256 = fw_hex;
        q.serial_counter = serial_counter;
        q.serial_start = u->rc->serial.start;
        q.render_serial = render_serial;
        q.render_ctx = u;
        if (u->rc->mac.enabled) {
                q.mac_counter = mac_counter;
                q.mac_first = u->rc->mac.first;
                q.mac_last = u->rc->mac.last;
                q.mac_count = u->rc->mac.per_unit;
        }
        q.dev_mode = u->e->dev_mode;
        q.n_snapshot = snapshot_strings(u, storage, snap);
        q.snapshot = snap;
        /* the steps so far belong to the unit the admission returns */
        memcpy(pending, u->unit.pending, sizeof(pending[0]) * n_pending);
        r = db_unit_admit(u->e->db, &q, &admitted, &u->kind);
        if (r < 0) {
                enum failcode fc = r == KILN_E_CLONE            ? FC_CLONE
                                   : r == KILN_E_QUOTA          ? FC_QUOTA
                                   : r == KILN_E_POOL_EXHAUSTED ? FC_POOL
                                   : r == KILN_E_PERM           ? FC_DISPOSITION
                                   : r == KILN_E_MISMATCH       ? FC_RECIPE_MISMATCH
                                                                : fc_of(r, FC_DB);

                if (fc == FC_CLONE)
                        report_alert(u->e->report, u->slot, "clone", kiln_err_detail());
                step_fail(u, fc, r, NULL);
                /* a refused device is not a station failure */
                return fc == FC_DB || fc == FC_DISK_FULL ? r : KILN_E_PERM;
        }
        u->unit = admitted;
        memcpy(u->unit.pending, pending, sizeof(pending[0]) * n_pending);
        u->unit.n_pending = n_pending;
        u->admitted = 1;
        for (unsigned i = 0; i < u->unit.n_macs; i++) {
                r = mac_parse(u->unit.macs[i], &u->macs[i]);
                if (r < 0)
                        return step_fail(u, FC_INTERNAL, r, "bad MAC '%s' in the database",
                                         u->unit.macs[i]);
        }
        u->vals.serial = u->unit.serial;
        u->vals.seq = u->unit.serial_seq;
        u->vals.macs = u->macs;
        u->vals.n_macs = u->unit.n_macs;
        step_ok(u);
        return KILN_OK;
}

/* ------------------------------------------------------------------------- 4 keys, 5 certs */

static int do_keys(struct unit_ctx *u)
{
        int r;

        step_begin(u, "keys");
        for (unsigned i = 0; i < u->rc->n_keys; i++) {
                const struct recipe_key *k = &u->rc->keys[i];
                uint8_t nonce[KILN_NONCE_LEN], fp[32];

                r = hsm_token_random(u->e->token, nonce, sizeof(nonce));
                if (r < 0)
                        return step_fail(u, FC_HSM, r, NULL);
                r = proto_session_keygen(u->s, k->slot, KILN_ALG_ECDSA_P256_SHA256, nonce,
                                         &u->kg[i]);
                if (r < 0)
                        return step_fail(u, fc_of(r, FC_KEYGEN), r, NULL);
                r = hsm_devkey_parse(u->kg[i].public_key, u->kg[i].public_key_len,
                                     &u->devkey[i]);
                if (r == KILN_OK)
                        r = hsm_devkey_verify_pop(u->devkey[i], nonce, u->info.chip_uid,
                                                  u->info.chip_uid_len, k->slot,
                                                  u->kg[i].signature, u->kg[i].signature_len);
                if (r < 0)
                        return step_fail(u, FC_POP, r, "key '%s': %s", k->name,
                                         kiln_err_detail()[0] ? kiln_err_detail()
                                                              : kiln_strerror(r));
                hsm_devkey_fingerprint(u->devkey[i], fp);
                hex(fp, sizeof(fp), u->fp_hex[i], sizeof(u->fp_hex[i]));
        }
        step_ok(u);
        return KILN_OK;
}

static const char *rdn_type_for_hsm(enum recipe_rdn_type t)
{
        switch (t) {
        case RECIPE_RDN_CN:
        case RECIPE_RDN_C:
        case RECIPE_RDN_ST:
        case RECIPE_RDN_L:
        case RECIPE_RDN_O:
        case RECIPE_RDN_OU:
        case RECIPE_RDN_SERIAL_NUMBER:
                return recipe_rdn_name(t);
        default:
                return recipe_rdn_oid(t);
        }
}

/* notAfter as the certificate carries it: the template's, to the second (ASN1_TIME_set). */
static int not_after_iso(int64_t not_after, char out[32])
{
        time_t secs = (time_t)not_after;
        struct tm tm;

        if (gmtime_r(&secs, &tm) == NULL)
                return kiln_fail(KILN_E_CERT_BUILD, "notAfter %lld out of range",
                                 (long long)not_after);
        return kiln_snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Build the template of key i from the recipe and the unit's values, and have the HSM sign it. */
static int issue_cert(struct unit_ctx *u, unsigned i)
{
        const struct recipe_cert *c = &u->rc->keys[i].cert;
        static _Thread_local char rdn_val[KILN_RECIPE_RDNS_MAX][HSM_NAME_VALUE_MAX + 1];
        static _Thread_local char san_val[KILN_RECIPE_SANS_MAX][HSM_NAME_VALUE_MAX + 1];
        static _Thread_local char ext_val[KILN_RECIPE_EXTENSIONS_MAX][HSM_EXT_VALUE_MAX + 1];
        struct hsm_name_attr subject[KILN_RECIPE_RDNS_MAX];
        struct hsm_san san[KILN_RECIPE_SANS_MAX];
        struct hsm_extension ext[KILN_RECIPE_EXTENSIONS_MAX];
        struct hsm_cert_template t;
        size_t n;
        int r;

        memset(&t, 0, sizeof(t));
        for (unsigned j = 0; j < c->n_subject; j++) {
                r = recipe_tmpl_render(&c->subject[j].value, &u->vals, rdn_val[j],
                                       sizeof(rdn_val[j]), &n);
                if (r < 0)
                        return r;
                subject[j].type = rdn_type_for_hsm(c->subject[j].type);
                subject[j].value = rdn_val[j];
        }
        for (unsigned j = 0; j < c->n_san; j++) {
                static const enum hsm_san_type map[RECIPE_SAN_MAX] = {
                        [RECIPE_SAN_DNS] = HSM_SAN_DNS, [RECIPE_SAN_URI] = HSM_SAN_URI,
                        [RECIPE_SAN_EMAIL] = HSM_SAN_EMAIL, [RECIPE_SAN_IP] = HSM_SAN_IP};

                san[j].type = map[c->san[j].type];
                if (c->san[j].type == RECIPE_SAN_IP) {
                        if (inet_ntop(c->san[j].ip_len == 4 ? AF_INET : AF_INET6, c->san[j].ip,
                                      san_val[j], sizeof(san_val[j])) == NULL)
                                return kiln_fail(KILN_E_CERT_TEMPLATE, "bad IP address");
                } else {
                        r = recipe_tmpl_render(&c->san[j].value, &u->vals, san_val[j],
                                               sizeof(san_val[j]), &n);
                        if (r < 0)
                                return r;
                }
                san[j].value = san_val[j];
        }
        for (unsigned j = 0; j < c->n_ext; j++) {
                ext[j].oid = c->ext[j].oid;
                ext[j].critical = c->ext[j].critical;
                if (c->ext[j].is_der) {
                        ext[j].encoding = HSM_EXT_DER_HEX;
                        r = kiln_hex_encode(c->ext[j].der, c->ext[j].der_len, ext_val[j],
                                            sizeof(ext_val[j]));
                } else {
                        ext[j].encoding = HSM_EXT_UTF8;
                        r = recipe_tmpl_render(&c->ext[j].utf8, &u->vals, ext_val[j],
                                               sizeof(ext_val[j]), &n);
                }
                if (r < 0)
                        return r;
                ext[j].value = ext_val[j];
        }
        t.subject = subject;
        t.n_subject = c->n_subject;
        t.not_before = c->not_before_now ? 0 : c->not_before;
        switch (c->not_after_kind) {
        case RECIPE_NOT_AFTER_NEVER:
                t.not_after = HSM_TIME_NO_EXPIRY;
                break;
        case RECIPE_NOT_AFTER_DAYS:
                t.not_after = (c->not_before_now ? kiln_wall_ms() / 1000 : c->not_before) +
                              (int64_t)c->days * 86400;
                break;
        default:
                t.not_after = c->not_after;
        }
        t.key_usage = c->key_usage; /* RECIPE_KU_* use the RFC 5280 bit numbers, as HSM_KU_* */
        t.eku = c->eku;
        t.n_eku = c->n_eku;
        t.san = san;
        t.n_san = c->n_san;
        t.ext = ext;
        t.n_ext = c->n_ext;
        r = hsm_cert_issue(u->e->issuer[i], &t, u->devkey[i], &u->cert[i]);
        if (r < 0)
                return r;
        hex(u->cert[i]->serial, HSM_SERIAL_LEN, u->cert_serial[i], sizeof(u->cert_serial[i]));
        return not_after_iso(t.not_after, u->cert_not_after[i]);
}

static int do_certs(struct unit_ctx *u)
{
        int r;

        step_begin(u, "certificates");
        for (unsigned i = 0; i < u->rc->n_keys; i++) {
                if (!u->rc->keys[i].has_cert)
                        continue;
                r = issue_cert(u, i);
                if (r < 0)
                        return step_fail(u, fc_of(r, FC_CERT), r, "key '%s': %s",
                                         u->rc->keys[i].name,
                                         kiln_err_detail()[0] ? kiln_err_detail()
                                                              : kiln_strerror(r));
        }
        step_ok(u);
        return KILN_OK;
}

/* ----------------------------------------------------------------------- 6 credentials */

/* Unbiased: a random byte is used only when it falls below the largest multiple of the alphabet. */
static int make_password(struct unit_ctx *u, const struct recipe_cred *c, struct kiln_secret *s)
{
        uint8_t pool[64];
        unsigned limit = 256u - (256u % c->alphabet_len);
        size_t got = 0;
        int r = KILN_OK;

        while (got < c->length) {
                r = hsm_token_random(u->e->token, pool, sizeof(pool));
                if (r < 0)
                        break;
                for (size_t i = 0; i < sizeof(pool) && got < c->length; i++)
                        if (pool[i] < limit)
                                s->p[got++] = (uint8_t)c->alphabet[pool[i] % c->alphabet_len];
        }
        kiln_memzero(pool, sizeof(pool));
        s->len = got;
        return r;
}

/*
 * Commitment to a credential, the only form the database keeps:
 *   hmac-sha256:   HMAC(commitment key, "KILN-CRED-V1" 0 chip_uid_hex 0 name 0 secret), in the HSM
 *   salted-sha256: SHA-256(salt ‖ secret), 16-byte salt from the HSM
 */
static int commit_cred(struct unit_ctx *u, unsigned i)
{
        const struct recipe_cred *c = &u->rc->creds[i];
        const struct kiln_secret *sec = u->cred[i];
        struct kiln_secret *msg = NULL;
        uint8_t mac[32], salt[16];
        size_t n = 0, need;
        int r;

        if (c->commitment == RECIPE_COMMIT_SALTED_SHA256) {
                r = hsm_token_random(u->e->token, salt, sizeof(salt));
                if (r == KILN_OK)
                        r = kiln_secret_new(sizeof(salt) + sec->len, &msg);
                if (r < 0)
                        return r;
                memcpy(msg->p, salt, sizeof(salt));
                memcpy(msg->p + sizeof(salt), sec->p, sec->len);
                SHA256(msg->p, sizeof(salt) + sec->len, mac);
                kiln_secret_free(msg);
                hex(salt, sizeof(salt), u->cred_salt[i], sizeof(u->cred_salt[i]));
                hex(mac, sizeof(mac), u->cred_commit[i], sizeof(u->cred_commit[i]));
                return KILN_OK;
        }
        need = sizeof(CRED_LABEL) + strlen(u->uid_hex) + 1 + strlen(c->name) + 1 + sec->len;
        r = kiln_secret_new(need, &msg);
        if (r < 0)
                return r;
        memcpy(msg->p, CRED_LABEL, sizeof(CRED_LABEL)); /* with its terminating 0 */
        n = sizeof(CRED_LABEL);
        memcpy(msg->p + n, u->uid_hex, strlen(u->uid_hex) + 1);
        n += strlen(u->uid_hex) + 1;
        memcpy(msg->p + n, c->name, strlen(c->name) + 1);
        n += strlen(c->name) + 1;
        memcpy(msg->p + n, sec->p, sec->len);
        n += sec->len;
        r = hsm_key_hmac(u->e->commit_key, msg->p, n, mac);
        kiln_secret_free(msg);
        if (r < 0)
                return r;
        u->cred_salt[i][0] = '\0';
        hex(mac, sizeof(mac), u->cred_commit[i], sizeof(u->cred_commit[i]));
        return KILN_OK;
}

static int do_credentials(struct unit_ctx *u)
{
        int r;

        step_begin(u, "credentials");
        for (unsigned i = 0; i < u->rc->n_creds; i++) {
                const struct recipe_cred *c = &u->rc->creds[i];

                r = kiln_secret_new(c->length, &u->cred[i]);
                if (r < 0)
                        return step_fail(u, FC_INTERNAL, r, NULL);
                if (c->kind == RECIPE_CRED_PASSWORD) {
                        r = make_password(u, c, u->cred[i]);
                } else {
                        r = hsm_token_random(u->e->token, u->cred[i]->p, c->length);
                        u->cred[i]->len = c->length;
                }
                if (r == KILN_OK)
                        r = commit_cred(u, i);
                if (r < 0)
                        return step_fail(u, FC_HSM, r, "credential '%s': %s", c->name,
                                         kiln_err_detail()[0] ? kiln_err_detail()
                                                              : kiln_strerror(r));
        }
        step_ok(u);
        return KILN_OK;
}

/* Commit keys, certificates and commitments before any of them reaches the device. */
static int record_identity(struct unit_ctx *u)
{
        struct db_key_rec keys[KILN_RECIPE_KEYS_MAX];
        struct db_cert_rec certs[KILN_RECIPE_KEYS_MAX];
        struct db_cred_rec creds[KILN_RECIPE_CREDENTIALS_MAX];
        unsigned nc = 0;
        int r;

        step_begin(u, "record");
        for (unsigned i = 0; i < u->rc->n_keys; i++) {
                keys[i] = (struct db_key_rec){.name = u->rc->keys[i].name,
                                              .slot = u->rc->keys[i].slot,
                                              .algorithm = "ecdsa-p256",
                                              .pubkey = u->kg[i].public_key,
                                              .pubkey_len = u->kg[i].public_key_len,
                                              .fingerprint = u->fp_hex[i],
                                              .pop_ok = 1};
                if (u->cert[i] == NULL)
                        continue;
                certs[nc++] = (struct db_cert_rec){.key_name = u->rc->keys[i].name,
                                                   .serial_hex = u->cert_serial[i],
                                                   .der = u->cert[i]->der,
                                                   .der_len = u->cert[i]->len,
                                                   .not_after = u->cert_not_after[i],
                                                   .chain_pem = u->e->chain_pem[i]};
        }
        for (unsigned i = 0; i < u->rc->n_creds; i++) {
                const struct recipe_cred *c = &u->rc->creds[i];

                creds[i] = (struct db_cred_rec){
                        .name = c->name,
                        .kind = c->kind == RECIPE_CRED_PASSWORD ? "password" : "random",
                        .method = c->commitment == RECIPE_COMMIT_HMAC ? "hmac-sha256"
                                                                      : "salted-sha256",
                        .commitment = u->cred_commit[i],
                        .salt = u->cred_salt[i][0] ? u->cred_salt[i] : NULL,
                        .object = c->object};
        }
        r = db_unit_record_identity(u->e->db, &u->unit, keys, u->rc->n_keys, certs, nc, creds,
                                    u->rc->n_creds);
        if (r < 0)
                return step_fail(u, fc_of(r, FC_DB), r, NULL);
        step_ok(u); /* goes to the database with the next transaction */
        return KILN_OK;
}

/* ------------------------------------------------------------------- 7 write and data */

static int write_progress(void *ctx, uint32_t done, uint32_t total)
{
        struct unit_ctx *u = ctx;
        char act[64];

        snprintf(act, sizeof(act), "%s %u%%", u->step, total ? (unsigned)(100ull * done / total)
                                                           : 100u);
        report_slot(u->e->report, u->slot_index, u->slot, u->unit.serial, act);
        return stop_requested(u) ? KILN_E_CANCELLED : KILN_OK;
}

static int write_object(struct unit_ctx *u, const char *name, uint8_t flags, const uint8_t *data,
                        size_t len, struct db_object_rec *rec, char sha_hex[65])
{
        uint8_t md[32];
        int r = proto_object_write(u->s, name, flags, data, len, write_progress, u);

        if (r < 0)
                return r;
        if (rec != NULL) {
                SHA256(data, len, md);
                hex(md, sizeof(md), sha_hex, 65);
                rec->name = name;
                rec->sha256 = sha_hex;
                rec->size = len;
        }
        return KILN_OK;
}

static enum failcode fc_write(int r)
{
        if (r == KILN_E_MISMATCH)
                return FC_WRITE_VERIFY;
        if (r == KILN_E_CANCELLED)
                return FC_CANCELLED;
        return fc_of(r, FC_WRITE);
}

#define OBJ_RECS_MAX (2 * KILN_RECIPE_KEYS_MAX + KILN_RECIPE_OBJECTS_MAX + 1)

struct obj_recs {
        struct db_object_rec rec[OBJ_RECS_MAX];
        char sha[OBJ_RECS_MAX][65];
        unsigned n;
};

/* Keys of one issuer may share a chain object: it is written once. */
static int chain_written_before(const struct unit_ctx *u, unsigned i)
{
        const char *name = u->rc->keys[i].cert.chain_object;

        for (unsigned j = 0; j < i; j++)
                if (u->cert[j] != NULL && strcmp(u->rc->keys[j].cert.chain_object, name) == 0)
                        return 1;
        return 0;
}

static int do_write(struct unit_ctx *u, struct obj_recs *o)
{
        struct kiln_buf chain;
        int r = KILN_OK;

        step_begin(u, "write");
        kiln_buf_init(&chain, 8 * KILN_CERT_DER_MAX);
        for (unsigned i = 0; i < u->rc->n_keys && r == KILN_OK; i++) {
                const struct recipe_cert *c = &u->rc->keys[i].cert;

                if (u->cert[i] == NULL)
                        continue;
                r = write_object(u, c->object, 0, u->cert[i]->der, u->cert[i]->len,
                                 &o->rec[o->n], o->sha[o->n]);
                if (r < 0)
                        break;
                o->n++;
                if (c->chain_object[0] == '\0')
                        continue;
                if (chain_written_before(u, i))
                        continue;
                /* the chain object: DER certificates back to back, issuing CA first */
                kiln_buf_clear(&chain);
                for (size_t k = 0; k < hsm_issuer_chain_len(u->e->issuer[i]); k++) {
                        const uint8_t *der;
                        size_t len;

                        r = hsm_issuer_chain_der(u->e->issuer[i], k, &der, &len);
                        if (r == KILN_OK)
                                r = kiln_buf_put(&chain, der, len);
                        if (r < 0)
                                break;
                }
                if (r == KILN_OK)
                        r = write_object(u, c->chain_object, 0, chain.data, chain.len,
                                         &o->rec[o->n], o->sha[o->n]);
                if (r == KILN_OK)
                        o->n++;
        }
        kiln_buf_free(&chain);
        if (r < 0)
                return step_fail(u, fc_write(r), r, NULL);
        /* credentials: secret objects, verified by hash, never recorded beyond the commitment */
        for (unsigned i = 0; i < u->rc->n_creds; i++) {
                r = write_object(u, u->rc->creds[i].object, KILN_OBJ_SECRET, u->cred[i]->p,
                                 u->cred[i]->len, NULL, NULL);
                kiln_secret_free(u->cred[i]);
                u->cred[i] = NULL;
                if (r < 0)
                        return step_fail(u, fc_write(r), r, "credential '%s': %s",
                                         u->rc->creds[i].name,
                                         kiln_err_detail()[0] ? kiln_err_detail()
                                                              : kiln_strerror(r));
        }
        step_ok(u);
        return KILN_OK;
}

static int do_data(struct unit_ctx *u, struct obj_recs *o)
{
        char *text = NULL;
        int r = KILN_OK;

        if (u->rc->n_objects == 0 && !u->rc->firmware.present)
                return KILN_OK;
        step_begin(u, "data");
        for (unsigned i = 0; i < u->rc->n_objects && r == KILN_OK; i++) {
                const struct recipe_object *ob = &u->rc->objects[i];
                uint8_t flags = ob->secret ? KILN_OBJ_SECRET : 0;

                if (ob->from_file) {
                        r = write_object(u, ob->name, flags, ob->data, ob->len, &o->rec[o->n],
                                         o->sha[o->n]);
                } else {
                        size_t n = 0;

                        kiln_free(text);
                        text = kiln_malloc(ob->content.max_len + 1);
                        r = text == NULL ? KILN_E_NOMEM
                                         : recipe_tmpl_render(&ob->content, &u->vals, text,
                                                              ob->content.max_len + 1, &n);
                        if (r == KILN_OK)
                                r = write_object(u, ob->name, flags, (const uint8_t *)text, n,
                                                 &o->rec[o->n], o->sha[o->n]);
                }
                if (r == KILN_OK)
                        o->n++;
        }
        kiln_free(text);
        if (r < 0)
                return step_fail(u, fc_write(r), r, NULL);
        if (u->rc->firmware.present) {
                step_ok(u);
                step_begin(u, "firmware");
                r = write_object(u, u->rc->firmware.object, 0, u->rc->firmware.data,
                                 u->rc->firmware.len, &o->rec[o->n], o->sha[o->n]);
                if (r < 0)
                        return step_fail(u, fc_write(r), r, NULL);
                o->n++;
        }
        step_ok(u);
        return KILN_OK;
}

/* --------------------------------------------------------------------------- 8 attest */

/* Recorded with the fuse intents at the start of the lock (db_unit_record_verified). */
static int do_attest(struct unit_ctx *u)
{
        int r;

        step_begin(u, "attest");
        for (unsigned i = 0; i < u->rc->n_keys; i++) {
                const struct recipe_key *k = &u->rc->keys[i];
                struct proto_attest a;
                uint8_t nonce[KILN_NONCE_LEN];

                if (!k->attest)
                        continue;
                r = hsm_token_random(u->e->token, nonce, sizeof(nonce));
                if (r < 0)
                        return step_fail(u, FC_HSM, r, NULL);
                r = proto_session_attest(u->s, k->slot, nonce, &a);
                if (r < 0)
                        return step_fail(u, fc_of(r, FC_ATTEST), r, NULL);
                /* the key the certificate was issued for (hsm_cert_issue verified that the
                 * certificate carries it): proves the device holds the certified key */
                r = hsm_devkey_verify_attest(u->devkey[i], nonce, u->info.chip_uid,
                                             u->info.chip_uid_len, k->slot, a.signature,
                                             a.signature_len);
                if (r < 0)
                        return step_fail(u, FC_ATTEST, r, "key '%s': %s", k->name,
                                         kiln_err_detail()[0] ? kiln_err_detail()
                                                              : kiln_strerror(r));
                u->att[u->n_att++] = (struct db_attest_rec){.key_name = k->name, .ok = 1};
        }
        step_ok(u);
        return KILN_OK;
}

/*
 * A unit seen before: before anything is done to it again, the device in the slot must prove it
 * holds the keys whose certificates the database recorded for this unit. A clone presenting the
 * genuine chip's UID cannot: it gets neither the genuine unit's lock finished (resume) nor its
 * serial and MACs (retry). `required`: a resumed unit always has certificates; a retried one has
 * them only if its earlier attempt got that far, else there is nothing to prove and it goes on.
 */
static int do_reattest(struct unit_ctx *u, int required)
{
        struct db_export_rec *rec = kiln_malloc(sizeof(*rec));
        unsigned attested = 0;
        int r;

        if (rec == NULL)
                return KILN_E_NOMEM;
        export_rec_init(rec);
        step_begin(u, "reattest");
        r = db_unit_export(u->e->db, u->unit.id, rec);
        if (r < 0) {
                r = step_fail(u, fc_of(r, FC_DB), r, NULL);
                goto out;
        }
        for (unsigned i = 0; i < u->rc->n_keys; i++) {
                const struct recipe_key *k = &u->rc->keys[i];
                struct hsm_devkey *key = NULL;
                struct proto_attest a;
                uint8_t nonce[KILN_NONCE_LEN];

                for (unsigned c = 0; c < rec->n_certs && key == NULL; c++)
                        if (strcmp(rec->certs[c].key, k->name) == 0)
                                r = hsm_devkey_from_cert(rec->certs[c].der.data,
                                                         rec->certs[c].der.len, &key);
                if (key == NULL)
                        continue;
                r = hsm_token_random(u->e->token, nonce, sizeof(nonce));
                if (r == KILN_OK)
                        r = proto_session_attest(u->s, k->slot, nonce, &a);
                if (r == KILN_OK)
                        r = hsm_devkey_verify_attest(key, nonce, u->info.chip_uid,
                                                     u->info.chip_uid_len, k->slot, a.signature,
                                                     a.signature_len);
                hsm_devkey_free(key);
                if (r < 0 && fc_of(r, FC_ATTEST) == FC_ATTEST) {
                        /* the device cannot prove the unit's keys: a clone of its chip UID */
                        u->impostor = 1;
                        report_alert(u->e->report, u->slot, "clone",
                                     "this device presents an interrupted unit's chip UID but not "
                                     "its keys: clone alert");
                        r = step_fail(u, FC_CLONE, r,
                                      "key '%s' does not match the certificate recorded for unit "
                                      "%s (%s): not the device the unit was started on",
                                      k->name, u->unit.serial,
                                      kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
                        goto out;
                }
                if (r < 0) {
                        r = step_fail(u, fc_lock(r, FC_ATTEST), r, NULL);
                        goto out;
                }
                attested++;
        }
        if (attested == 0 && required) {
                r = step_fail(u, FC_ATTEST, KILN_E_MISMATCH,
                              "the unit has no recorded certificate to prove the device with");
                goto out;
        }
        step_ok(u);
        r = KILN_OK;
out:
        export_rec_free(rec);
        kiln_free(rec);
        return r;
}

/* ----------------------------------------------------------------------------- 9 lock */

static int lock_plan(struct unit_ctx *u)
{
        u->n_lock = 0;
        for (unsigned i = 0; i < u->rc->n_fuses; i++) {
                struct lock_entry *le = &u->lock[u->n_lock++];
                int r;

                memset(le, 0, sizeof(*le));
                le->f = &u->rc->fuses[i];
                le->phase = le->f->phase;
                r = recipe_fuse_value(le->f, &u->vals, le->want, &le->len);
                if (r < 0)
                        return r;
                hex(le->want, le->len, le->want_hex, sizeof(le->want_hex));
        }
        if (u->rc->lifecycle_final) {
                struct lock_entry *le = &u->lock[u->n_lock++];

                memset(le, 0, sizeof(*le));
                le->phase = RECIPE_PHASE_MAX;
                le->want[0] = (uint8_t)u->rc->lifecycle_final;
                le->len = 1;
                hex(le->want, 1, le->want_hex, sizeof(le->want_hex));
        }
        return KILN_OK;
}

static const char *entry_field(const struct lock_entry *le)
{
        return le->f != NULL ? le->f->field : "lifecycle";
}

static const char *entry_phase(const struct lock_entry *le)
{
        return le->f != NULL ? recipe_phase_name(le->phase) : "lifecycle";
}

struct journal_match {
        struct unit_ctx *u;
        int mismatch;
        char field[KILN_NAME_MAX + 1];
        int failed;
};

/* Resume: attach the journal's ids and states to the plan; a value that differs is a hard stop. */
static int journal_visit(void *ctx, const struct db_fuse_rec *rec)
{
        struct journal_match *m = ctx;
        struct unit_ctx *u = m->u;

        for (unsigned i = 0; i < u->n_lock; i++) {
                struct lock_entry *le = &u->lock[i];

                if (strcmp(entry_field(le), rec->field) != 0)
                        continue;
                if (strcmp(le->want_hex, rec->value) != 0) {
                        m->mismatch = 1;
                        kiln_strlcpy(m->field, rec->field, sizeof(m->field));
                        return KILN_OK;
                }
                le->id = rec->id;
                le->done = rec->state == DB_FUSE_DONE;
                if (rec->state == DB_FUSE_FAILED) {
                        m->failed = 1;
                        kiln_strlcpy(m->field, rec->field, sizeof(m->field));
                }
                if (rec->readback != NULL)
                        kiln_strlcpy(le->readback_hex, rec->readback, sizeof(le->readback_hex));
                return KILN_OK;
        }
        m->mismatch = 1;
        kiln_strlcpy(m->field, rec->field, sizeof(m->field));
        return KILN_OK;
}

/*
 * The device rebooted (or re-enumerated) since our HELLO: HELLO again, and make sure it is still the
 * same chip on the port — on a bus-position USB port or a swapped fixture it might not be.
 */
static int rehello(struct unit_ctx *u)
{
        struct proto_info info;
        int r = proto_session_hello(u->s, NULL);

        if (r == KILN_OK)
                r = proto_session_get_info(u->s, &info);
        if (r == KILN_OK && (info.chip_uid_len != u->info.chip_uid_len ||
                             memcmp(info.chip_uid, u->info.chip_uid, info.chip_uid_len) != 0))
                r = kiln_fail(KILN_E_WRONG_DEVICE,
                              "after the device rebooted another chip answers on the port");
        return r;
}

/* A fuse field as the device reads it now; re-HELLO once if the device rebooted meanwhile. */
static int read_field(struct unit_ctx *u, const char *field, struct proto_fuse *ret)
{
        int r = proto_session_fuse_read(u->s, field, ret);

        if (r == KILN_E_PROTO_SESSION) {
                r = rehello(u);
                if (r == KILN_OK)
                        r = proto_session_fuse_read(u->s, field, ret);
        }
        return r;
}

static int bits_extra(const uint8_t *have, const uint8_t *want, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (have[i] & (uint8_t)~want[i])
                        return 1;
        return 0;
}

/*
 * Burn one field to exactly le->want: read it first (a resumed or retransmitted program may already
 * have done it), refuse when it holds bits the plan does not (SCRAP: that can never be undone), and
 * program only the same value.
 */
static int burn_field(struct unit_ctx *u, struct lock_entry *le)
{
        struct proto_fuse cur, rb;
        const char *field = le->f->field;
        int r;

        r = read_field(u, field, &cur);
        if (r < 0)
                return step_fail(u, fc_lock(r, FC_FUSE_PROGRAM), r, NULL);
        if (cur.value_len != le->len)
                return step_fail(u, FC_FUSE_CONFLICT, KILN_E_FUSE_CONFLICT,
                                 "fuse '%s' is %u bytes on the device, %zu in the plan", field,
                                 cur.value_len, le->len);
        if (!(cur.attributes & KILN_FUSE_READ_PROTECTED) && bits_extra(cur.value, le->want,
                                                                        le->len)) {
                u->scrap = 1;
                return step_fail(u, FC_FUSE_CONFLICT, KILN_E_FUSE_CONFLICT,
                                 "fuse '%s' already holds bits outside the planned value", field);
        }
        if (!(cur.attributes & KILN_FUSE_READ_PROTECTED) &&
            memcmp(cur.value, le->want, le->len) == 0) {
                rb = cur; /* already burned (resumed unit, or an earlier attempt) */
        } else {
                r = proto_session_fuse_program(u->s, field, le->want, le->len, &rb);
                if (r == KILN_E_PROTO_SESSION) {
                        /* the device rebooted around the program: find out what stuck */
                        r = rehello(u);
                        if (r == KILN_OK)
                                r = proto_session_fuse_read(u->s, field, &rb);
                }
                if (r == KILN_E_PROTO_DEVICE &&
                    proto_session_device_error(u->s)->status == KILN_ST_HARDWARE)
                        return step_fail(u, FC_FUSE_PROGRAM, r, NULL);
                if (r < 0)
                        return step_fail(u, fc_lock(r, FC_FUSE_PROGRAM), r, NULL);
        }
        memcpy(le->readback, rb.value, rb.value_len);
        le->attrs = rb.attributes;
        hex(rb.value, rb.value_len, le->readback_hex, sizeof(le->readback_hex));
        if (rb.value_len != le->len || memcmp(rb.value, le->want, le->len) != 0) {
                if (bits_extra(rb.value, le->want, le->len))
                        u->scrap = 1;
                return step_fail(u, FC_FUSE_READBACK, KILN_E_FUSE_READBACK,
                                 "fuse '%s' reads back %s after programming %s", field,
                                 le->readback_hex, le->want_hex);
        }
        return KILN_OK;
}

static int set_lifecycle(struct unit_ctx *u, struct lock_entry *le)
{
        uint8_t lc = 0;
        int r = proto_session_set_lifecycle(u->s, le->want[0], &lc);

        if (r == KILN_E_PROTO_SESSION) {
                struct proto_info info;

                r = rehello(u);
                if (r == KILN_OK)
                        r = proto_session_get_info(u->s, &info);
                if (r == KILN_OK)
                        lc = info.lifecycle;
        }
        if (r < 0)
                return step_fail(u, fc_lock(r, FC_FUSE_PROGRAM), r, NULL);
        le->readback[0] = lc;
        hex(&lc, 1, le->readback_hex, sizeof(le->readback_hex));
        if (lc != le->want[0])
                return step_fail(u, FC_FUSE_READBACK, KILN_E_FUSE_READBACK,
                                 "lifecycle reads %s after setting %s", proto_lifecycle_name(lc),
                                 proto_lifecycle_name(le->want[0]));
        return KILN_OK;
}

static void result_add(struct unit_ctx *u, const struct lock_entry *le, enum db_fuse_state st)
{
        u->res[u->n_res++] = (struct db_fuse_rec){.id = le->id,
                                                  .phase = entry_phase(le),
                                                  .field = entry_field(le),
                                                  .value = le->want_hex,
                                                  .state = st,
                                                  .readback = le->readback_hex,
                                                  .attrs = le->attrs};
}

/* Phase checks that need more than one field's read-back. */
static int verify_phase(struct unit_ctx *u, int phase)
{
        struct proto_info info;
        int need_info = 0, r;

        for (unsigned i = 0; i < u->n_lock; i++) {
                const struct lock_entry *le = &u->lock[i];
                struct proto_fuse now;

                if (le->f == NULL)
                        continue;
                /* P2: every data field read back again once the whole phase is burned */
                if (phase == RECIPE_PHASE_DATA && le->phase == RECIPE_PHASE_DATA &&
                    le->f->verify != RECIPE_VERIFY_READ_PROTECTED) {
                        r = read_field(u, le->f->field, &now);
                        if (r < 0)
                                return step_fail(u, fc_lock(r, FC_LOCK_INTERRUPTED), r, NULL);
                        if (memcmp(now.value, le->want, le->len) != 0)
                                return step_fail(u, FC_FUSE_READBACK, KILN_E_FUSE_READBACK,
                                                 "fuse '%s' no longer reads back its value",
                                                 le->f->field);
                }
                /* after P3, read-protected fields read zero and say so */
                if (phase == RECIPE_PHASE_PROTECT &&
                    le->f->verify == RECIPE_VERIFY_READ_PROTECTED) {
                        int zero = 1;

                        r = read_field(u, le->f->field, &now);
                        if (r < 0)
                                return step_fail(u, fc_lock(r, FC_LOCK_INTERRUPTED), r, NULL);
                        for (unsigned b = 0; b < now.value_len; b++)
                                zero &= now.value[b] == 0;
                        if (!(now.attributes & KILN_FUSE_READ_PROTECTED) || !zero)
                                return step_fail(u, FC_FUSE_READBACK, KILN_E_FUSE_READBACK,
                                                 "fuse '%s' is still readable after protection",
                                                 le->f->field);
                }
                if (phase == RECIPE_PHASE_LOCKOUT &&
                    (le->f->verify == RECIPE_VERIFY_DEBUG_CLOSED ||
                     le->f->verify == RECIPE_VERIFY_SECURE_BOOT))
                        need_info = 1;
        }
        if (!need_info)
                return KILN_OK;
        r = proto_session_get_info(u->s, &info);
        if (r == KILN_E_PROTO_SESSION) {
                r = rehello(u);
                if (r == KILN_OK)
                        r = proto_session_get_info(u->s, &info);
        }
        if (r < 0)
                return step_fail(u, fc_lock(r, FC_LOCK_INTERRUPTED), r, NULL);
        for (unsigned i = 0; i < u->n_lock; i++) {
                const struct lock_entry *le = &u->lock[i];

                if (le->f == NULL || le->phase != RECIPE_PHASE_LOCKOUT)
                        continue;
                if (le->f->verify == RECIPE_VERIFY_DEBUG_CLOSED &&
                    info.debug_port != KILN_DEBUG_CLOSED)
                        return step_fail(u, FC_DEBUG_OPEN, KILN_E_MISMATCH,
                                         "debug port reports open after burning '%s'",
                                         le->f->field);
                if (le->f->verify == RECIPE_VERIFY_SECURE_BOOT && info.secure_boot != 1)
                        return step_fail(u, FC_SECURE_BOOT, KILN_E_MISMATCH,
                                         "secure boot not enforced after burning '%s'",
                                         le->f->field);
        }
        return KILN_OK;
}

static const char *const lock_step_names[RECIPE_PHASE_MAX + 1] = {
        "lock.data", "lock.protect", "lock.lockout", "lock.lifecycle"};

static int do_lock(struct unit_ctx *u, const struct obj_recs *o)
{
        struct db_fuse_rec intents[LOCK_ENTRIES_MAX];
        unsigned ni = 0;
        int r;

        step_begin(u, "lock");
        r = lock_plan(u);
        if (r < 0)
                return step_fail(u, FC_INTERNAL, r, NULL);
        if (u->kind == DB_ADMIT_RESUME) {
                struct journal_match m = {.u = u};

                r = db_fuse_list(u->e->db, u->unit.id, journal_visit, &m);
                if (r < 0)
                        return step_fail(u, fc_of(r, FC_DB), r, NULL);
                if (m.mismatch)
                        return step_fail(u, FC_INTERNAL, KILN_E_MISMATCH,
                                         "fuse journal entry '%s' does not match the plan: "
                                         "refusing to burn different data",
                                         m.field);
                if (m.failed)
                        return step_fail(u, FC_FUSE_READBACK, KILN_E_FUSE_READBACK,
                                         "fuse '%s' failed before the interruption", m.field);
                for (unsigned i = 0; i < u->n_lock; i++)
                        if (u->lock[i].id == 0)
                                return step_fail(u, FC_INTERNAL, KILN_E_MISMATCH,
                                                 "fuse '%s' of the plan is not in the journal",
                                                 entry_field(&u->lock[i]));
        } else {
                /* before the first burn: the device must not already hold other data */
                for (unsigned i = 0; i < u->n_lock; i++) {
                        const struct lock_entry *le = &u->lock[i];
                        const struct proto_fuse *f = le->f ? snap_find(u, le->f->field) : NULL;

                        if (f != NULL && !(f->attributes & KILN_FUSE_READ_PROTECTED) &&
                            (bits_extra(f->value, le->want, le->len) ||
                             ((f->attributes & KILN_FUSE_WRITE_PROTECTED) &&
                              memcmp(f->value, le->want, le->len) != 0)))
                                return step_fail(u, FC_FUSE_CONFLICT, KILN_E_FUSE_CONFLICT,
                                                 "fuse '%s' already holds other data",
                                                 le->f->field);
                }
                /* steps 1-8 and every intent of the lock: one commit before the first burn */
                for (unsigned i = 0; i < u->n_lock; i++)
                        intents[ni++] = (struct db_fuse_rec){
                                .phase = entry_phase(&u->lock[i]),
                                .field = entry_field(&u->lock[i]),
                                .value = u->lock[i].want_hex,
                                .verify = u->lock[i].f ? recipe_verify_name(u->lock[i].f->verify)
                                                       : "lifecycle"};
                r = db_unit_record_verified(u->e->db, &u->unit, o->rec, o->n, u->att, u->n_att,
                                            intents, ni);
                if (r < 0)
                        return step_fail(u, fc_of(r, FC_DB), r, NULL);
                for (unsigned i = 0; i < u->n_lock; i++)
                        u->lock[i].id = intents[i].id;
        }
        step_ok(u);

        for (int phase = RECIPE_PHASE_DATA; phase <= RECIPE_PHASE_MAX; phase++) {
                unsigned in_phase = 0;

                for (unsigned i = 0; i < u->n_lock; i++)
                        in_phase += (int)u->lock[i].phase == phase;
                /* a phase already done before an interruption is still verified again */
                if (in_phase == 0)
                        continue;
                step_begin(u, lock_step_names[phase]);
                for (unsigned i = 0; i < u->n_lock; i++) {
                        struct lock_entry *le = &u->lock[i];

                        if ((int)le->phase != phase || le->done)
                                continue;
                        r = le->f != NULL ? burn_field(u, le) : set_lifecycle(u, le);
                        if (r < 0) {
                                result_add(u, le, DB_FUSE_FAILED);
                                return r;
                        }
                        le->done = 1;
                        result_add(u, le, DB_FUSE_DONE);
                }
                if (phase < RECIPE_PHASE_MAX) {
                        r = verify_phase(u, phase);
                        if (r < 0)
                                return r;
                }
                step_ok(u);
        }
        return KILN_OK;
}

/* --------------------------------------------------------------------------- 10 finish */

/* The label of a unit that passed. A printer problem never changes the verdict: the operator is
 * told and reprints with kiln label; the step is recorded either way. */
static void print_label(struct unit_ctx *u)
{
        const struct label_target *t =
                u->e->labels != NULL ? u->e->labels[u->slot_index] : NULL;
        unsigned count = 0;
        char text[DB_DETAIL_MAX + 128];
        int r;

        if (t == NULL || !u->rc->label.present)
                return;
        step_begin(u, "label");
        r = label_print_unit(u->e->db, u->unit.id, t, (enum station_label_format)u->e->label_format,
                             0, &count);
        if (r == KILN_OK) {
                step_ok(u);
                return;
        }
        snprintf(text, sizeof(text), "label for %s not printed (%s): print it with kiln label",
                 u->unit.serial, kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        db_unit_step(&u->unit, "label", u->step_wall_ms, kiln_now_us() - u->step_us, 0, "E-LABEL",
                     text);
        report_alert(u->e->report, u->slot, "label", text);
}

static int do_finish(struct unit_ctx *u)
{
        char storage[SNAP_MAX][KILN_NAME_MAX + 2 + 2 * KILN_FUSE_BYTES_MAX];
        const char *snap[SNAP_MAX];
        char qr[EXPORT_QR_MAX];
        struct proto_info info;
        struct db_finish fin;
        size_t n;
        int r;

        step_begin(u, "finish");
        r = proto_session_get_info(u->s, &info);
        if (r == KILN_E_PROTO_SESSION) {
                r = rehello(u);
                if (r == KILN_OK)
                        r = proto_session_get_info(u->s, &info);
        }
        if (r == KILN_OK)
                r = fuse_snapshot(u);
        if (r < 0)
                return step_fail(u, u->unit.lock_started ? FC_LOCK_INTERRUPTED : fc_of(r, FC_LINK),
                                 r, NULL);
        /* the design's last check: the device itself reports its debug port closed */
        for (unsigned i = 0; i < u->rc->n_fuses; i++)
                if (u->rc->fuses[i].verify == RECIPE_VERIFY_DEBUG_CLOSED &&
                    info.debug_port != KILN_DEBUG_CLOSED)
                        return step_fail(u, FC_DEBUG_OPEN, KILN_E_MISMATCH,
                                         "debug port reports open at the end");
        qr[0] = '\0';
        if (u->rc->label.present && u->rc->label.has_qr) {
                r = recipe_tmpl_render(&u->rc->label.qr, &u->vals, qr, sizeof(qr), &n);
                if (r < 0)
                        return step_fail(u, FC_INTERNAL, r, NULL);
        }
        memset(&fin, 0, sizeof(fin));
        fin.verdict = DB_VERDICT_PASS;
        fin.debug_closed = info.debug_port == KILN_DEBUG_CLOSED;
        fin.secure_boot = info.secure_boot == 1;
        fin.lifecycle = proto_lifecycle_name(info.lifecycle);
        fin.label_qr = qr[0] ? qr : NULL;
        fin.n_snapshot = snapshot_strings(u, storage, snap);
        fin.snapshot = snap;
        fin.fuse_results = u->res;
        fin.n_fuse_results = u->n_res;
        step_ok(u); /* queued: db_unit_finish writes it with the verdict */
        r = db_unit_finish(u->e->db, &u->unit, &fin);
        if (r < 0) {
                u->unit.n_pending--; /* the finish step did not succeed after all */
                return step_fail(u, fc_of(r, FC_DB), r, NULL);
        }
        print_label(u);
        return KILN_OK;
}

/* ------------------------------------------------------------------------------- driver */

/* Record a non-PASS verdict for an admitted unit. */
static int finish_failed(struct unit_ctx *u)
{
        struct db_finish fin;
        struct proto_info info;
        int r;

        memset(&fin, 0, sizeof(fin));
        if (!u->unit.lock_started)
                fin.verdict = DB_VERDICT_FAIL;
        else
                fin.verdict = u->scrap ? DB_VERDICT_SCRAP : DB_VERDICT_LOCK_FAILED;
        fin.fail_code = failcode_name(u->fc);
        fin.fail_reason = u->reason;
        fin.debug_closed = -1;
        fin.secure_boot = -1;
        fin.fuse_results = u->res;
        fin.n_fuse_results = u->n_res;
        /* best effort: what the device says about itself now, for quality */
        if (u->unit.lock_started && u->s != NULL && proto_session_id(u->s) != 0 &&
            proto_session_get_info(u->s, &info) == KILN_OK) {
                fin.debug_closed = info.debug_port == KILN_DEBUG_CLOSED;
                fin.secure_boot = info.secure_boot == 1;
                fin.lifecycle = proto_lifecycle_name(info.lifecycle);
        }
        kiln_err_reset();
        r = db_unit_finish(u->e->db, &u->unit, &fin);
        if (r == KILN_OK)
                return KILN_OK;
        /* the unit stays IN_PROGRESS; the next start reconciles it */
        kiln_strlcpy(u->reason, kiln_err_detail(), sizeof(u->reason));
        u->fc = fc_of(r, FC_DB);
        return r;
}

static void unit_ctx_free(struct unit_ctx *u)
{
        for (unsigned i = 0; i < KILN_RECIPE_KEYS_MAX; i++) {
                hsm_devkey_free(u->devkey[i]);
                hsm_cert_free(u->cert[i]);
        }
        for (unsigned i = 0; i < KILN_RECIPE_CREDENTIALS_MAX; i++)
                kiln_secret_free(u->cred[i]);
        proto_session_free(u->s);
        proto_transport_free(u->t);
        active_release(u);
}

int engine_unit_run(struct engine *e, const char *slot, unsigned slot_index, const char *port,
                    struct unit_result *ret)
{
        struct unit_ctx *u = kiln_calloc(1, sizeof(*u));
        struct obj_recs *o = kiln_calloc(1, sizeof(*o));
        int r = KILN_OK, station_r = KILN_OK;

        memset(ret, 0, sizeof(*ret));
        ret->verdict = DB_VERDICT_FAIL;
        if (u == NULL || o == NULL) {
                kiln_free(u);
                kiln_free(o);
                ret->code = FC_INTERNAL;
                kiln_strlcpy(ret->reason, "out of memory", sizeof(ret->reason));
                return KILN_E_NOMEM;
        }
        u->e = e;
        u->rc = e->recipe;
        u->slot = slot;
        u->slot_index = slot_index;
        u->start_us = kiln_now_us();

        r = do_connect(u, port);
        if (r == KILN_OK)
                r = do_identify(u);
        if (r == KILN_OK)
                r = do_admit(u);
        if (r == KILN_OK && u->kind != DB_ADMIT_RESUME) {
                if (u->kind == DB_ADMIT_RETRY)
                        r = do_reattest(u, 0);
                if (r == KILN_OK)
                        r = do_keys(u);
                if (r == KILN_OK)
                        r = do_certs(u);
                if (r == KILN_OK)
                        r = do_credentials(u);
                if (r == KILN_OK)
                        r = record_identity(u);
                if (r == KILN_OK && stop_requested(u))
                        r = step_fail(u, FC_CANCELLED, KILN_E_CANCELLED, "run stopped");
                if (r == KILN_OK)
                        r = do_write(u, o);
                if (r == KILN_OK)
                        r = do_data(u, o);
                if (r == KILN_OK)
                        r = do_attest(u);
                if (r == KILN_OK && stop_requested(u))
                        r = step_fail(u, FC_CANCELLED, KILN_E_CANCELLED, "run stopped");
        }
        if (r == KILN_OK && u->kind == DB_ADMIT_RESUME)
                r = do_reattest(u, 1);
        /* once started, the lock runs to its end: a stop request waits for it */
        if (r == KILN_OK)
                r = do_lock(u, o);
        if (r == KILN_OK)
                r = do_finish(u);

        if (r == KILN_OK) {
                ret->verdict = DB_VERDICT_PASS;
        } else if (u->impostor && u->kind == DB_ADMIT_RESUME) {
                /* the unit waits for its real device; the attempt is on record */
                char body[512];

                snprintf(body, sizeof(body),
                         "{\"slot\":\"%s\",\"chip_uid\":\"%s\",\"unit_serial\":\"%s\","
                         "\"code\":\"%s\"}",
                         slot, u->uid_hex, u->unit.serial, failcode_name(u->fc));
                db_station_event(e->db, "device.clone_alert", body);
                ret->verdict = DB_VERDICT_FAIL;
        } else if (u->admitted) {
                station_r = finish_failed(u);
                ret->verdict = station_r == KILN_OK ? (!u->unit.lock_started ? DB_VERDICT_FAIL
                                                       : u->scrap ? DB_VERDICT_SCRAP
                                                                  : DB_VERDICT_LOCK_FAILED)
                                                    : DB_VERDICT_IN_PROGRESS;
        } else {
                /* refused before admission: no unit row; the audit log keeps the refusal */
                char body[512];

                snprintf(body, sizeof(body),
                         "{\"slot\":\"%s\",\"chip_uid\":\"%s\",\"code\":\"%s\"}", slot,
                         u->uid_hex, failcode_name(u->fc));
                if (u->uid_hex[0] != '\0')
                        db_station_event(e->db, "device.refused", body);
                if (u->fc == FC_DB || u->fc == FC_DISK_FULL)
                        station_r = r;
        }
        if (u->admitted && u->unit.n_pending > 0)
                db_unit_flush_steps(e->db, &u->unit);
        ret->code = u->fc;
        kiln_strlcpy(ret->reason, u->reason, sizeof(ret->reason));
        kiln_strlcpy(ret->serial, u->admitted ? u->unit.serial : "", sizeof(ret->serial));
        kiln_strlcpy(ret->chip_uid, u->uid_hex, sizeof(ret->chip_uid));
        kiln_strlcpy(ret->mac, u->unit.n_macs > 0 ? u->unit.macs[0] : "", sizeof(ret->mac));
        ret->attempt = u->unit.attempt;
        ret->admitted = u->admitted;
        ret->resumed = u->kind == DB_ADMIT_RESUME && u->admitted;
        ret->seconds = (double)(kiln_now_us() - u->start_us) / 1e6;
        report_slot(e->report, slot_index, slot, NULL, NULL);
        unit_ctx_free(u);
        kiln_free(u);
        kiln_free(o);
        return station_r;
}
