/* Export record renderers: canonical JSON and RFC 4180 CSV. */
#include <string.h>

#include <openssl/evp.h>

#include "kiln/export.h"
#include "kiln/json.h"
#include "kiln/util.h"

void export_rec_init(struct db_export_rec *rec)
{
        memset(rec, 0, sizeof(*rec));
        for (unsigned i = 0; i < EXPORT_CERTS_MAX; i++) {
                kiln_buf_init(&rec->certs[i].der, KILN_CERT_DER_MAX);
                kiln_buf_init(&rec->certs[i].chain_pem, 8 * KILN_CERT_DER_MAX);
        }
}

void export_rec_clear(struct db_export_rec *rec)
{
        struct kiln_buf der[EXPORT_CERTS_MAX], chain[EXPORT_CERTS_MAX];

        for (unsigned i = 0; i < EXPORT_CERTS_MAX; i++) {
                der[i] = rec->certs[i].der;
                chain[i] = rec->certs[i].chain_pem;
                kiln_buf_clear(&der[i]);
                kiln_buf_clear(&chain[i]);
        }
        memset(rec, 0, sizeof(*rec));
        for (unsigned i = 0; i < EXPORT_CERTS_MAX; i++) {
                rec->certs[i].der = der[i];
                rec->certs[i].chain_pem = chain[i];
        }
}

void export_rec_free(struct db_export_rec *rec)
{
        if (rec == NULL)
                return;
        for (unsigned i = 0; i < EXPORT_CERTS_MAX; i++) {
                kiln_buf_free(&rec->certs[i].der);
                kiln_buf_free(&rec->certs[i].chain_pem);
        }
}

int export_pem_cert(const uint8_t *der, size_t n, struct kiln_buf *out)
{
        uint8_t line[65];

        kiln_buf_put_str(out, "-----BEGIN CERTIFICATE-----\n");
        for (size_t off = 0; off < n; off += 48) {
                size_t chunk = n - off < 48 ? n - off : 48;
                int len = EVP_EncodeBlock(line, der + off, (int)chunk);

                kiln_buf_put(out, line, (size_t)len);
                kiln_buf_put_u8(out, '\n');
        }
        kiln_buf_put_str(out, "-----END CERTIFICATE-----\n");
        return kiln_buf_error(out);
}

static void kv_nullable(struct json_w *w, const char *k, const char *v, int has)
{
        json_kv_str(w, k, has ? v : NULL);
}

static void kv_tri(struct json_w *w, const char *k, int v)
{
        json_key(w, k);
        if (v < 0)
                json_null(w);
        else
                json_bool(w, v);
}

int export_render_json(const struct db_export_rec *r, struct kiln_buf *out)
{
        struct kiln_buf pem;
        struct json_w w;
        int e;

        kiln_buf_init(&pem, 4 * KILN_CERT_DER_MAX);
        json_init(&w, out);
        json_obj_begin(&w);
        json_kv_str(&w, "serial", r->serial);
        json_kv_str(&w, "chip_uid", r->chip_uid);
        kv_nullable(&w, "mac", r->macs[0], r->n_macs > 0);
        json_key(&w, "macs");
        json_arr_begin(&w);
        for (unsigned i = 0; i < r->n_macs; i++)
                json_str(&w, r->macs[i]);
        json_arr_end(&w);
        json_kv_str(&w, "verdict", r->verdict);
        kv_nullable(&w, "fail_code", r->fail_code, r->has_fail_code);
        kv_nullable(&w, "fail_reason", r->fail_reason, r->has_fail_reason);
        json_kv_str(&w, "work_order", r->work_order);
        json_kv_str(&w, "lot", r->lot);
        json_kv_str(&w, "station_id", r->station_id);
        json_kv_str(&w, "slot", r->slot);
        json_kv_str(&w, "operator", r->operator_id);
        kv_nullable(&w, "recipe_id", r->recipe_id, r->has_recipe_id);
        json_kv_str(&w, "recipe_sha256", r->recipe_sha256);
        json_kv_str(&w, "product_id", r->product_id);
        json_kv_int(&w, "hw_revision", r->hw_revision);
        json_kv_str(&w, "fw_version", r->fw_version);
        json_kv_str(&w, "fw_sha256", r->fw_sha256);
        json_kv_str(&w, "started_at", r->started_at);
        kv_nullable(&w, "finished_at", r->finished_at, r->has_finished_at);
        json_kv_int(&w, "attempts", r->attempts);
        json_kv_bool(&w, "development", r->development);
        kv_tri(&w, "debug_closed", r->debug_closed);
        kv_tri(&w, "secure_boot", r->secure_boot);
        kv_nullable(&w, "lifecycle", r->lifecycle, r->has_lifecycle);
        kv_nullable(&w, "label_qr", r->label_qr, r->has_label_qr);
        /* the identity certificate: the one in the lowest key slot */
        if (r->n_certs > 0) {
                const struct export_cert *c = &r->certs[0];

                export_pem_cert(c->der.data, c->der.len, &pem);
                json_kv_str(&w, "pubkey_sha256", c->pubkey_sha256);
                json_kv_str(&w, "cert_serial", c->serial);
                json_kv_str(&w, "cert_pem", kiln_buf_cstr(&pem));
                json_key(&w, "chain_pem");
                json_strn(&w, (const char *)c->chain_pem.data, c->chain_pem.len);
        } else {
                json_kv_str(&w, "pubkey_sha256", NULL);
                json_kv_str(&w, "cert_serial", NULL);
                json_kv_str(&w, "cert_pem", NULL);
                json_kv_str(&w, "chain_pem", NULL);
        }
        json_key(&w, "certificates");
        json_arr_begin(&w);
        for (unsigned i = 0; i < r->n_certs; i++) {
                const struct export_cert *c = &r->certs[i];

                kiln_buf_clear(&pem);
                export_pem_cert(c->der.data, c->der.len, &pem);
                json_obj_begin(&w);
                json_kv_str(&w, "key", c->key);
                json_kv_int(&w, "slot", c->slot);
                json_kv_str(&w, "serial", c->serial);
                json_kv_str(&w, "pubkey_sha256", c->pubkey_sha256);
                json_kv_str(&w, "not_after", c->not_after);
                json_kv_str(&w, "cert_pem", kiln_buf_cstr(&pem));
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_key(&w, "fuses");
        json_obj_begin(&w);
        for (unsigned i = 0; i < r->n_fuses; i++)
                json_kv_str(&w, r->fuses[i].field, r->fuses[i].value);
        json_obj_end(&w);
        json_obj_end(&w);
        e = json_error(&w);
        if (e == KILN_OK)
                e = kiln_buf_error(&pem);
        kiln_buf_free(&pem);
        return e;
}

static const char *const csv_columns[] = {
        "serial",      "chip_uid",     "mac",          "macs",          "verdict",
        "fail_code",   "fail_reason",  "work_order",   "lot",           "station_id",
        "slot",        "operator",     "recipe_id",    "recipe_sha256", "product_id",
        "hw_revision", "fw_version",   "fw_sha256",    "started_at",    "finished_at",
        "attempts",    "development",  "debug_closed", "secure_boot",   "lifecycle",
        "label_qr",    "pubkey_sha256", "cert_serial", "cert_pem",      "chain_pem",
        "fuses",
};

/* One RFC 4180 field: quoted when it holds a comma, quote, CR or LF; quotes doubled. */
static void csv_field(struct kiln_buf *out, const char *s, size_t n, int first)
{
        int quote = 0;

        if (!first)
                kiln_buf_put_u8(out, ',');
        for (size_t i = 0; i < n && !quote; i++)
                quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
        if (!quote) {
                kiln_buf_put(out, s, n);
                return;
        }
        kiln_buf_put_u8(out, '"');
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '"')
                        kiln_buf_put_u8(out, '"');
                kiln_buf_put_u8(out, (uint8_t)s[i]);
        }
        kiln_buf_put_u8(out, '"');
}

static void csv_str(struct kiln_buf *out, const char *s)
{
        csv_field(out, s, strlen(s), 0);
}

static void csv_tri(struct kiln_buf *out, int v)
{
        csv_str(out, v < 0 ? "" : v ? "true" : "false");
}

int export_render_csv_header(struct kiln_buf *out)
{
        for (size_t i = 0; i < sizeof(csv_columns) / sizeof(csv_columns[0]); i++)
                csv_field(out, csv_columns[i], strlen(csv_columns[i]), i == 0);
        kiln_buf_put(out, "\r\n", 2);
        return kiln_buf_error(out);
}

int export_render_csv(const struct db_export_rec *r, struct kiln_buf *out)
{
        struct kiln_buf tmp;
        char num[24];
        int e;

        kiln_buf_init(&tmp, 8 * KILN_CERT_DER_MAX);
        csv_field(out, r->serial, strlen(r->serial), 1);
        csv_str(out, r->chip_uid);
        csv_str(out, r->n_macs > 0 ? r->macs[0] : "");
        for (unsigned i = 0; i < r->n_macs; i++)
                kiln_buf_printf(&tmp, "%s%s", i ? " " : "", r->macs[i]);
        csv_field(out, (const char *)tmp.data, tmp.len, 0);
        csv_str(out, r->verdict);
        csv_str(out, r->fail_code);
        csv_str(out, r->fail_reason);
        csv_str(out, r->work_order);
        csv_str(out, r->lot);
        csv_str(out, r->station_id);
        csv_str(out, r->slot);
        csv_str(out, r->operator_id);
        csv_str(out, r->recipe_id);
        csv_str(out, r->recipe_sha256);
        csv_str(out, r->product_id);
        snprintf(num, sizeof(num), "%u", r->hw_revision);
        csv_str(out, num);
        csv_str(out, r->fw_version);
        csv_str(out, r->fw_sha256);
        csv_str(out, r->started_at);
        csv_str(out, r->finished_at);
        snprintf(num, sizeof(num), "%u", r->attempts);
        csv_str(out, num);
        csv_str(out, r->development ? "true" : "false");
        csv_tri(out, r->debug_closed);
        csv_tri(out, r->secure_boot);
        csv_str(out, r->lifecycle);
        csv_str(out, r->label_qr);
        if (r->n_certs > 0) {
                const struct export_cert *c = &r->certs[0];

                csv_str(out, c->pubkey_sha256);
                csv_str(out, c->serial);
                kiln_buf_clear(&tmp);
                export_pem_cert(c->der.data, c->der.len, &tmp);
                csv_field(out, (const char *)tmp.data, tmp.len, 0);
                csv_field(out, (const char *)c->chain_pem.data, c->chain_pem.len, 0);
        } else {
                for (int i = 0; i < 4; i++)
                        csv_str(out, "");
        }
        kiln_buf_clear(&tmp);
        for (unsigned i = 0; i < r->n_fuses; i++)
                kiln_buf_printf(&tmp, "%s%s=%s", i ? ";" : "", r->fuses[i].field,
                                r->fuses[i].value);
        csv_field(out, (const char *)tmp.data, tmp.len, 0);
        kiln_buf_put(out, "\r\n", 2);
        e = kiln_buf_error(out);
        if (e == KILN_OK)
                e = kiln_buf_error(&tmp);
        kiln_buf_free(&tmp);
        return e;
}
