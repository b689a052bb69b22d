/* Audit trail verification and checkpoints. See kiln/audit.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "kiln/audit.h"
#include "kiln/error.h"
#include "kiln/export.h"
#include "kiln/hsm.h"
#include "kiln/util.h"

#define CHECKPOINTS_MAX 100000u

struct cp_expect {
        int64_t seq;
        char hash[65];
        int seen;
};

struct verify {
        struct db *db;
        struct audit_report *rep;
        int64_t expect_seq;
        char prev[65];
        struct cp_expect *cps;
        size_t n_cps;
        EVP_MD_CTX *md;
};

static void problem(struct audit_report *rep, int64_t seq, const char *fmt, ...)
        KILN_PRINTF(3, 4);

static void problem(struct audit_report *rep, int64_t seq, const char *fmt, ...)
{
        va_list ap;

        if (!rep->ok)
                return; /* the first problem is the one reported */
        rep->ok = 0;
        rep->bad_seq = seq;
        va_start(ap, fmt);
        vsnprintf(rep->problem, sizeof(rep->problem), fmt, ap);
        va_end(ap);
}

static int event_hash(EVP_MD_CTX *md, const char *prev, const struct db_event *ev, char out[65])
{
        char seq[24], uid[24];
        uint8_t d[32];
        const char *parts[6];

        snprintf(seq, sizeof(seq), "%lld", (long long)ev->seq);
        if (ev->unit_id > 0)
                snprintf(uid, sizeof(uid), "%lld", (long long)ev->unit_id);
        else
                uid[0] = '\0';
        parts[0] = prev;
        parts[1] = seq;
        parts[2] = ev->at;
        parts[3] = uid;
        parts[4] = ev->kind;
        parts[5] = ev->body;
        if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL))
                return KILN_E_CRYPTO;
        for (int i = 0; i < 6; i++)
                if ((i > 0 && !EVP_DigestUpdate(md, "|", 1)) ||
                    !EVP_DigestUpdate(md, parts[i], strlen(parts[i])))
                        return KILN_E_CRYPTO;
        if (!EVP_DigestFinal_ex(md, d, NULL))
                return KILN_E_CRYPTO;
        return kiln_hex_encode(d, sizeof(d), out, 65);
}

static int visit_event(void *p, const struct db_event *ev)
{
        struct verify *v = p;
        char h[65];
        int r;

        v->rep->events++;
        if (ev->seq != v->expect_seq)
                problem(v->rep, ev->seq,
                        "event %lld: expected event %lld here — events were deleted, inserted or "
                        "reordered",
                        (long long)ev->seq, (long long)v->expect_seq);
        else if (strcmp(ev->prev_hash, v->prev) != 0)
                problem(v->rep, ev->seq,
                        "event %lld (%s): does not follow the event before it — the log was "
                        "rewritten",
                        (long long)ev->seq, ev->kind);
        r = event_hash(v->md, ev->prev_hash, ev, h);
        if (r < 0)
                return kiln_fail(r, "cannot hash audit events");
        if (strcmp(h, ev->hash) != 0)
                problem(v->rep, ev->seq,
                        "event %lld (%s%s%lld): its content does not match its hash — it was "
                        "edited",
                        (long long)ev->seq, ev->kind, ev->unit_id ? ", unit " : "",
                        (long long)ev->unit_id);
        for (size_t i = 0; i < v->n_cps; i++) {
                if (v->cps[i].seq != ev->seq)
                        continue;
                v->cps[i].seen = 1;
                if (strcmp(v->cps[i].hash, ev->hash) != 0)
                        problem(v->rep, ev->seq,
                                "event %lld: the chain differs from signed checkpoint at this "
                                "event",
                                (long long)ev->seq);
        }
        /* continue the chain from the stored hash so one edit is reported once */
        kiln_strlcpy(v->prev, ev->hash, sizeof(v->prev));
        v->expect_seq = ev->seq + 1;
        return KILN_OK;
}

struct cp_ctx {
        struct verify *v;
        struct db *db;
        const char *trusted_pem;
};

static EVP_PKEY *pem_key(const char *pem)
{
        BIO *b = BIO_new_mem_buf(pem, -1);
        EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;

        BIO_free(b);
        return k;
}

static int visit_checkpoint(void *p, const struct db_checkpoint *cp)
{
        struct cp_ctx *c = p;
        struct verify *v = c->v;
        struct kiln_buf msg;
        char *stored = NULL;
        EVP_PKEY *key = NULL;
        EVP_MD_CTX *md = NULL;
        int r = KILN_OK, ok;

        v->rep->checkpoints++;
        if (v->n_cps == CHECKPOINTS_MAX)
                return kiln_fail(KILN_E_LIMIT, "more than %u checkpoints", CHECKPOINTS_MAX);
        v->cps[v->n_cps].seq = cp->event_seq;
        kiln_strlcpy(v->cps[v->n_cps].hash, cp->head_hash, sizeof(v->cps[0].hash));
        v->n_cps++;
        kiln_buf_init(&msg, 4096);
        if (c->trusted_pem == NULL) {
                r = db_audit_pubkey(c->db, cp->key_uri, &stored);
                if (r == KILN_E_NOT_FOUND) {
                        problem(v->rep, cp->event_seq,
                                "checkpoint %lld: no public key for '%s' to check it with",
                                (long long)cp->id, cp->key_uri);
                        r = KILN_OK;
                        goto out;
                }
                if (r < 0)
                        goto out;
        }
        key = pem_key(c->trusted_pem ? c->trusted_pem : stored);
        if (key == NULL) {
                r = kiln_fail(KILN_E_CRYPTO, "the audit public key is not a PEM public key");
                goto out;
        }
        r = db_checkpoint_message(cp->event_seq, cp->head_hash, cp->at, cp->work_order, &msg);
        if (r < 0)
                goto out;
        md = EVP_MD_CTX_new();
        ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(md, cp->signature, cp->signature_len, msg.data, msg.len) == 1;
        if (!ok)
                problem(v->rep, cp->event_seq,
                        "checkpoint %lld (event %lld): the signature does not verify with %s",
                        (long long)cp->id, (long long)cp->event_seq,
                        c->trusted_pem ? "the trusted audit key" : "the recorded audit key");
out:
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(key);
        free(stored);
        kiln_buf_free(&msg);
        return r;
}

struct unit_ctx {
        struct verify *v;
        struct db_export_rec *rec;
        struct kiln_buf json;
};

/* The record digest a unit event ends with. */
static int body_digest(const char *body, char out[65])
{
        const char *p = strstr(body, "\"record_sha256\":\"");

        if (p == NULL)
                return KILN_E_NOT_FOUND;
        p += strlen("\"record_sha256\":\"");
        if (strlen(p) < 64)
                return KILN_E_TRUNCATED;
        memcpy(out, p, 64);
        out[64] = '\0';
        return KILN_OK;
}

static int visit_unit(void *p, int64_t unit_id)
{
        struct unit_ctx *u = p;
        struct db_event ev;
        char want[65], have[65];
        uint8_t md[32];
        int r;

        u->v->rep->units++;
        kiln_buf_clear(&u->json);
        r = db_unit_export(u->v->db, unit_id, u->rec);
        if (r == KILN_OK)
                r = export_render_json(u->rec, &u->json);
        if (r < 0)
                return r;
        r = db_unit_last_event(u->v->db, unit_id, &ev);
        if (r == KILN_E_NOT_FOUND) {
                problem(u->v->rep, 0,
                        "unit %lld (serial %s) has no audit event: it was inserted outside the "
                        "station",
                        (long long)unit_id, u->rec->serial);
                return KILN_OK;
        }
        if (r < 0)
                return r;
        if (body_digest(ev.body, want) < 0) {
                problem(u->v->rep, ev.seq, "event %lld (%s, unit %lld) carries no record digest",
                        (long long)ev.seq, ev.kind, (long long)unit_id);
                return KILN_OK;
        }
        SHA256(u->json.data, u->json.len, md);
        kiln_hex_encode(md, sizeof(md), have, sizeof(have));
        if (strcmp(want, have) != 0)
                problem(u->v->rep, ev.seq,
                        "unit %lld (serial %s): its record differs from the state audited by event "
                        "%lld (%s) — a field was changed outside the station",
                        (long long)unit_id, u->rec->serial, (long long)ev.seq, ev.kind);
        return KILN_OK;
}

int audit_verify(struct db *db, const char *trusted_key_pem, struct audit_report *ret)
{
        struct verify v;
        struct cp_ctx cc;
        struct unit_ctx uc;
        struct audit_report rep;
        int r;

        memset(&rep, 0, sizeof(rep));
        memset(&v, 0, sizeof(v));
        memset(&uc, 0, sizeof(uc));
        rep.ok = 1;
        v.db = db;
        v.rep = &rep;
        v.expect_seq = 1;
        memset(v.prev, '0', 64);
        v.md = EVP_MD_CTX_new();
        v.cps = kiln_calloc(CHECKPOINTS_MAX, sizeof(*v.cps));
        uc.rec = kiln_malloc(sizeof(*uc.rec));
        if (v.md == NULL || v.cps == NULL || uc.rec == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        export_rec_init(uc.rec);
        kiln_buf_init(&uc.json, 1u << 20);
        uc.v = &v;
        /* checkpoints first: the chain walk compares their heads */
        cc.v = &v;
        cc.db = db;
        cc.trusted_pem = trusted_key_pem;
        r = db_checkpoints_each(db, visit_checkpoint, &cc);
        if (r == KILN_OK)
                r = db_events_each(db, visit_event, &v);
        if (r < 0)
                goto out;
        kiln_strlcpy(rep.head, v.prev, sizeof(rep.head));
        for (size_t i = 0; i < v.n_cps; i++)
                if (!v.cps[i].seen)
                        problem(&rep, v.cps[i].seq,
                                "a signed checkpoint covers event %lld, which is missing: events "
                                "were deleted from the end of the log",
                                (long long)v.cps[i].seq);
        r = db_units_each(db, visit_unit, &uc);
        if (r < 0)
                goto out;
        *ret = rep;
out:
        if (uc.rec != NULL) {
                export_rec_free(uc.rec);
                kiln_free(uc.rec);
        }
        kiln_buf_free(&uc.json);
        kiln_free(v.cps);
        EVP_MD_CTX_free(v.md);
        return r;
}

struct sign_ctx {
        struct hsm_key *key;
};

static int sign_with_hsm(void *p, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                         size_t *ret_len)
{
        struct sign_ctx *c = p;

        return hsm_key_sign(c->key, msg, len, sig, cap, ret_len);
}

int audit_checkpoint(struct db *db, struct hsm_token *token, const char *audit_key_uri,
                     const char *work_order)
{
        struct sign_ctx c = {.key = NULL};
        uint8_t *der = NULL;
        size_t der_len = 0;
        char *pem = NULL;
        int r;

        r = hsm_key_find(token, audit_key_uri, HSM_USE_SIGN, &c.key);
        if (r == KILN_OK)
                r = hsm_key_public_der(c.key, &der, &der_len);
        if (r < 0)
                goto out;
        {
                /* PEM of the SubjectPublicKeyInfo, for verifiers without the HSM */
                size_t b64 = 4 * ((der_len + 2) / 3);
                size_t cap = b64 + b64 / 64 + 64;
                size_t n = 0;

                pem = kiln_malloc(cap);
                if (pem == NULL) {
                        r = KILN_E_NOMEM;
                        goto out;
                }
                n = (size_t)snprintf(pem, cap, "-----BEGIN PUBLIC KEY-----\n");
                for (size_t off = 0; off < der_len; off += 48) {
                        size_t chunk = der_len - off < 48 ? der_len - off : 48;

                        n += (size_t)EVP_EncodeBlock((uint8_t *)pem + n, der + off, (int)chunk);
                        pem[n++] = '\n';
                }
                snprintf(pem + n, cap - n, "-----END PUBLIC KEY-----\n");
        }
        r = db_checkpoint_add(db, work_order, audit_key_uri, pem, sign_with_hsm, &c);
out:
        hsm_key_free(c.key);
        kiln_free(der);
        kiln_free(pem);
        return r;
}
