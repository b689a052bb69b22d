/* Backend interface behind kiln/db.h. */
#ifndef KILN_DB_INTERNAL_H
#define KILN_DB_INTERNAL_H

#include "kiln/db.h"
#include "kiln/export.h"

struct db_ops {
        const char *name;
        void (*close)(struct db *db);
        int (*work_order_ensure)(struct db *db, const char *id, const char *lot,
                                 const char *recipe_sha256, uint32_t quota,
                                 struct db_work_order *ret);
        int (*work_order_get)(struct db *db, const char *id, struct db_work_order *ret);
        int (*recipe_store)(struct db *db, const char *sha256_hex, const char *recipe_id,
                            const char *version, const uint8_t *body, size_t len);
        int (*station_event)(struct db *db, const char *kind, const char *body_json);
        int (*unit_admit)(struct db *db, const struct db_admit_request *req, struct db_unit *ret,
                          enum db_admit_kind *ret_kind);
        int (*unit_record_identity)(struct db *db, struct db_unit *u, const struct db_key_rec *keys,
                                    unsigned n_keys, const struct db_cert_rec *certs,
                                    unsigned n_certs, const struct db_cred_rec *creds,
                                    unsigned n_creds);
        int (*unit_record_verified)(struct db *db, struct db_unit *u,
                                    const struct db_object_rec *objs, unsigned n_objs,
                                    const struct db_attest_rec *att, unsigned n_att,
                                    struct db_fuse_rec *intents, unsigned n_intents);
        int (*fuse_list)(struct db *db, int64_t unit_id, db_fuse_visit_fn fn, void *ctx);
        int (*unit_finish)(struct db *db, struct db_unit *u, const struct db_finish *f);
        int (*unit_flush_steps)(struct db *db, struct db_unit *u);
        int (*units_in_progress)(struct db *db, db_unit_visit_fn fn, void *ctx);
        int (*unit_by_uid)(struct db *db, const char *chip_uid, struct db_unit *ret);
        int (*unit_export)(struct db *db, int64_t unit_id, struct db_export_rec *rec);
        int (*unit_lookup)(struct db *db, const char *key, int64_t *ret_unit_id);
        int (*recipe_get)(struct db *db, const char *sha256_hex, uint8_t **ret, size_t *ret_len);
        int (*label_print)(struct db *db, int64_t unit_id, const char *format, const char *target,
                           unsigned *ret_count);
        int (*recipe_release)(struct db *db, const char *sha256_hex, const char *recipe_id,
                              const char *version, const char *statement, const uint8_t *sig,
                              size_t sig_len);
        int (*work_order_raise)(struct db *db, const char *work_order, uint32_t new_quota,
                                const char *statement, const uint8_t *sig, size_t sig_len,
                                uint32_t *ret_old);
        int (*unit_facts)(struct db *db, int64_t unit_id, struct db_unit_facts *ret);
        int (*shared_creds)(struct db *db, const char *work_order, unsigned *ret_count);
        int (*unit_history)(struct db *db, int64_t unit_id, db_history_row_fn fn, void *ctx);
        int (*events_each)(struct db *db, db_event_visit_fn fn, void *ctx);
        int (*event_head)(struct db *db, int64_t *ret_seq, char ret_hash[65]);
        int (*checkpoint_add)(struct db *db, const char *work_order, const char *key_uri,
                              const char *pubkey_pem, db_sign_fn sign, void *sign_ctx);
        int (*checkpoints_each)(struct db *db, db_checkpoint_visit_fn fn, void *ctx);
        int (*audit_pubkey)(struct db *db, const char *key_uri, char **ret_pem);
        int (*unit_last_event)(struct db *db, int64_t unit_id, struct db_event *ret);
        int (*export_each)(struct db *db, const struct db_export_filter *flt,
                           db_export_visit_fn fn, void *ctx);
        int (*export_records)(struct db *db, const struct db_export_filter *flt,
                              db_export_rec_fn fn, void *ctx);
};

struct db {
        const struct db_ops *ops;
        void *impl;
};

int db_sqlite_open(const char *path, struct db **ret);

#endif
