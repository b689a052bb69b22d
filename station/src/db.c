/* Backend dispatch for the traceability database (kiln/db.h). */
#include <string.h>

#include "db_internal.h"
#include "kiln/error.h"
#include "kiln/util.h"

static const char *const verdict_names[DB_VERDICT_MAX] = {"IN_PROGRESS", "PASS", "FAIL",
                                                          "LOCK_FAILED", "SCRAP"};

const char *db_verdict_name(enum db_verdict v)
{
        return (unsigned)v < DB_VERDICT_MAX ? verdict_names[v] : "?";
}

int db_verdict_parse(const char *s, enum db_verdict *ret)
{
        for (unsigned i = 0; i < DB_VERDICT_MAX; i++) {
                if (strcmp(s, verdict_names[i]) == 0) {
                        *ret = (enum db_verdict)i;
                        return KILN_OK;
                }
        }
        return KILN_E_INVAL;
}

int db_open(const char *location, struct db **ret)
{
        if (strncmp(location, "postgresql:", 11) == 0 || strncmp(location, "postgres:", 9) == 0)
                return kiln_fail(KILN_E_UNSUPPORTED,
                                 "database '%s': the PostgreSQL backend is not part of this build; "
                                 "use a SQLite file path",
                                 location);
        return db_sqlite_open(location, ret);
}

void db_close(struct db *db)
{
        if (db != NULL)
                db->ops->close(db);
}

int db_work_order_ensure(struct db *db, const char *id, const char *lot, const char *recipe_sha256,
                         uint32_t quota, struct db_work_order *ret)
{
        return db->ops->work_order_ensure(db, id, lot, recipe_sha256, quota, ret);
}

int db_work_order_get(struct db *db, const char *id, struct db_work_order *ret)
{
        return db->ops->work_order_get(db, id, ret);
}

int db_recipe_store(struct db *db, const char *sha256_hex, const char *recipe_id,
                    const char *version, const uint8_t *body, size_t len)
{
        return db->ops->recipe_store(db, sha256_hex, recipe_id, version, body, len);
}

int db_station_event(struct db *db, const char *kind, const char *body_json)
{
        return db->ops->station_event(db, kind, body_json);
}

int db_unit_admit(struct db *db, const struct db_admit_request *req, struct db_unit *ret,
                  enum db_admit_kind *ret_kind)
{
        return db->ops->unit_admit(db, req, ret, ret_kind);
}

int db_unit_record_identity(struct db *db, struct db_unit *u, const struct db_key_rec *keys,
                            unsigned n_keys, const struct db_cert_rec *certs, unsigned n_certs,
                            const struct db_cred_rec *creds, unsigned n_creds)
{
        return db->ops->unit_record_identity(db, u, keys, n_keys, certs, n_certs, creds, n_creds);
}

int db_unit_record_verified(struct db *db, struct db_unit *u, const struct db_object_rec *objs,
                            unsigned n_objs, const struct db_attest_rec *att, unsigned n_att,
                            struct db_fuse_rec *intents, unsigned n_intents)
{
        return db->ops->unit_record_verified(db, u, objs, n_objs, att, n_att, intents, n_intents);
}

int db_fuse_list(struct db *db, int64_t unit_id, db_fuse_visit_fn fn, void *ctx)
{
        return db->ops->fuse_list(db, unit_id, fn, ctx);
}

int db_unit_finish(struct db *db, struct db_unit *u, const struct db_finish *f)
{
        return db->ops->unit_finish(db, u, f);
}

int db_unit_flush_steps(struct db *db, struct db_unit *u)
{
        return db->ops->unit_flush_steps(db, u);
}

int db_units_in_progress(struct db *db, db_unit_visit_fn fn, void *ctx)
{
        return db->ops->units_in_progress(db, fn, ctx);
}

int db_unit_by_uid(struct db *db, const char *chip_uid, struct db_unit *ret)
{
        return db->ops->unit_by_uid(db, chip_uid, ret);
}

int db_unit_export(struct db *db, int64_t unit_id, struct db_export_rec *rec)
{
        return db->ops->unit_export(db, unit_id, rec);
}

int db_unit_export_json(struct db *db, int64_t unit_id, struct kiln_buf *out)
{
        struct db_export_rec *rec = kiln_malloc(sizeof(*rec));
        int r;

        if (rec == NULL)
                return KILN_E_NOMEM;
        export_rec_init(rec);
        r = db->ops->unit_export(db, unit_id, rec);
        if (r == KILN_OK)
                r = export_render_json(rec, out);
        export_rec_free(rec);
        kiln_free(rec);
        return r;
}

int db_unit_lookup(struct db *db, const char *key, int64_t *ret_unit_id)
{
        return db->ops->unit_lookup(db, key, ret_unit_id);
}

int db_recipe_get(struct db *db, const char *sha256_hex, uint8_t **ret, size_t *ret_len)
{
        return db->ops->recipe_get(db, sha256_hex, ret, ret_len);
}

int db_label_print(struct db *db, int64_t unit_id, const char *format, const char *target,
                   unsigned *ret_count)
{
        return db->ops->label_print(db, unit_id, format, target, ret_count);
}

int db_recipe_release(struct db *db, const char *sha256_hex, const char *recipe_id,
                      const char *version, const char *statement, const uint8_t *sig,
                      size_t sig_len)
{
        return db->ops->recipe_release(db, sha256_hex, recipe_id, version, statement, sig,
                                       sig_len);
}

int db_work_order_raise(struct db *db, const char *work_order, uint32_t new_quota,
                        const char *statement, const uint8_t *sig, size_t sig_len,
                        uint32_t *ret_old)
{
        return db->ops->work_order_raise(db, work_order, new_quota, statement, sig, sig_len,
                                         ret_old);
}

int db_unit_facts(struct db *db, int64_t unit_id, struct db_unit_facts *ret)
{
        return db->ops->unit_facts(db, unit_id, ret);
}

int db_work_order_shared_creds(struct db *db, const char *work_order, unsigned *ret_count)
{
        return db->ops->shared_creds(db, work_order, ret_count);
}

int db_unit_history(struct db *db, int64_t unit_id, db_history_row_fn fn, void *ctx)
{
        return db->ops->unit_history(db, unit_id, fn, ctx);
}

int db_events_each(struct db *db, db_event_visit_fn fn, void *ctx)
{
        return db->ops->events_each(db, fn, ctx);
}

int db_event_head(struct db *db, int64_t *ret_seq, char ret_hash[65])
{
        return db->ops->event_head(db, ret_seq, ret_hash);
}

int db_checkpoint_add(struct db *db, const char *work_order, const char *key_uri,
                      const char *pubkey_pem, db_sign_fn sign, void *sign_ctx)
{
        return db->ops->checkpoint_add(db, work_order, key_uri, pubkey_pem, sign, sign_ctx);
}

int db_checkpoints_each(struct db *db, db_checkpoint_visit_fn fn, void *ctx)
{
        return db->ops->checkpoints_each(db, fn, ctx);
}

int db_audit_pubkey(struct db *db, const char *key_uri, char **ret_pem)
{
        return db->ops->audit_pubkey(db, key_uri, ret_pem);
}

int db_unit_last_event(struct db *db, int64_t unit_id, struct db_event *ret)
{
        return db->ops->unit_last_event(db, unit_id, ret);
}

int db_units_each(struct db *db, db_export_visit_fn fn, void *ctx)
{
        struct db_export_filter all = {.verdict = -1};

        return db->ops->export_each(db, &all, fn, ctx);
}

int db_checkpoint_message(int64_t seq, const char *head_hash, const char *at,
                          const char *work_order, struct kiln_buf *out)
{
        kiln_buf_printf(out, "KILN-CHECKPOINT-V1\n%lld\n%s\n%s\n%s\n", (long long)seq, head_hash,
                        at, work_order ? work_order : "");
        return kiln_buf_error(out);
}

int db_export_each(struct db *db, const struct db_export_filter *flt, db_export_visit_fn fn,
                   void *ctx)
{
        return db->ops->export_each(db, flt, fn, ctx);
}

int db_export_records(struct db *db, const struct db_export_filter *flt, db_export_rec_fn fn,
                      void *ctx)
{
        return db->ops->export_records(db, flt, fn, ctx);
}

void db_unit_step(struct db_unit *u, const char *name, int64_t started_ms, uint64_t duration_us,
                  int ok, const char *code, const char *detail)
{
        struct db_step *s;

        if (u->n_pending == DB_STEPS_PENDING_MAX) {
                /* keep the newest: drop the oldest queued record */
                memmove(&u->pending[0], &u->pending[1],
                        sizeof(u->pending[0]) * (DB_STEPS_PENDING_MAX - 1));
                u->n_pending--;
        }
        s = &u->pending[u->n_pending++];
        memset(s, 0, sizeof(*s));
        kiln_strlcpy(s->name, name, sizeof(s->name));
        s->started_ms = started_ms;
        s->duration_us = duration_us;
        s->ok = ok;
        if (code != NULL)
                kiln_strlcpy(s->code, code, sizeof(s->code));
        if (detail != NULL)
                kiln_strlcpy(s->detail, detail, sizeof(s->detail));
}
