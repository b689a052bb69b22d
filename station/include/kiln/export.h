/*
 * The unit export record: what `kiln export` prints for one unit, and what each audit event's
 * record digest covers. A backend fills struct db_export_rec; the renderers here are shared, so the
 * JSON form — the canonical one — is byte-identical whatever database produced it.
 */
#ifndef KILN_EXPORT_H
#define KILN_EXPORT_H

#include <stdint.h>

#include "kiln/buf.h"
#include "kiln/db.h"

#define EXPORT_CERTS_MAX KILN_RECIPE_KEYS_MAX
#define EXPORT_FUSES_MAX (2 * KILN_RECIPE_FUSES_MAX)
#define EXPORT_QR_MAX 1024

struct export_cert {
        char key[DB_TEXT_MAX];
        unsigned slot;
        char serial[DB_TEXT_MAX];
        char pubkey_sha256[65];
        char not_after[32];
        struct kiln_buf der;
        struct kiln_buf chain_pem;
};

struct export_fuse {
        char field[KILN_NAME_MAX + 1];
        char value[2 * KILN_FUSE_BYTES_MAX + 1];
};

/* Nullable text fields are "" with has_* = 0. Tri-state booleans: -1 unknown, 0, 1. */
struct db_export_rec {
        int64_t id;
        char serial[DB_SERIAL_MAX];
        char chip_uid[DB_HEX_UID_MAX];
        char macs[DB_MACS_MAX][DB_MAC_STR];
        unsigned n_macs;
        char verdict[16];
        char fail_code[32];
        int has_fail_code;
        char fail_reason[DB_DETAIL_MAX];
        int has_fail_reason;
        char work_order[DB_TEXT_MAX];
        char lot[DB_TEXT_MAX];
        char station_id[DB_TEXT_MAX];
        char slot[DB_TEXT_MAX];
        char operator_id[DB_TEXT_MAX];
        char recipe_id[DB_TEXT_MAX];
        int has_recipe_id;
        char recipe_sha256[65];
        char product_id[DB_TEXT_MAX];
        unsigned hw_revision;
        char fw_version[DB_TEXT_MAX];
        char fw_sha256[65];
        char started_at[32];
        char finished_at[32];
        int has_finished_at;
        unsigned attempts;
        int development;
        int debug_closed;
        int secure_boot;
        char lifecycle[32];
        int has_lifecycle;
        char label_qr[EXPORT_QR_MAX];
        int has_label_qr;
        struct export_cert certs[EXPORT_CERTS_MAX];
        unsigned n_certs;
        struct export_fuse fuses[EXPORT_FUSES_MAX];
        unsigned n_fuses;
};

void export_rec_init(struct db_export_rec *rec);
void export_rec_clear(struct db_export_rec *rec); /* reuse: keeps buffers */
void export_rec_free(struct db_export_rec *rec);

/* Canonical JSON object, no newline. Field order is fixed: add fields only at the end. */
int export_render_json(const struct db_export_rec *rec, struct kiln_buf *out);
/* RFC 4180: the header line and one record line, each ending in CRLF. */
int export_render_csv_header(struct kiln_buf *out);
int export_render_csv(const struct db_export_rec *rec, struct kiln_buf *out);

/*
 * A renderer for a stream of records: the same bytes as export_render_json/_csv, but it keeps its
 * scratch buffers from record to record, renders each certificate's PEM once, and renders an issuer
 * chain only when it differs from the previous record's (every unit of a station carries the same
 * chain). Memory is bounded by one record.
 */
struct export_renderer {
        struct kiln_buf pem;       /* one certificate's PEM */
        struct kiln_buf pem_out;   /* ... rendered as a JSON string or a CSV field */
        struct kiln_buf chain;     /* the chain last rendered, as stored */
        struct kiln_buf chain_out; /* ... and as rendered */
        int chain_csv;             /* chain_out is a CSV field (else a JSON string) */
        struct kiln_buf tmp;       /* CSV: the MAC and fuse lists */
};

void export_renderer_init(struct export_renderer *x);
void export_renderer_free(struct export_renderer *x);
int export_renderer_json(struct export_renderer *x, const struct db_export_rec *rec,
                         struct kiln_buf *out);
int export_renderer_csv(struct export_renderer *x, const struct db_export_rec *rec,
                        struct kiln_buf *out);
/* PEM of one DER certificate. */
int export_pem_cert(const uint8_t *der, size_t n, struct kiln_buf *out);

#endif
