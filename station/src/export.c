/* Export record renderers: canonical JSON and RFC 4180 CSV. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

/* Base64 of n bytes, '='-padded: what EVP_EncodeBlock writes, without its terminator, and in a
 * fraction of its time (it was an eighth of an export). */
static size_t b64_encode(const uint8_t *in, size_t n, uint8_t *out)
{
        static const char digits[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        uint8_t *o = out;
        size_t i = 0;
        uint32_t v;

        for (; n - i >= 3; i += 3, o += 4) {
                v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
                o[0] = (uint8_t)digits[v >> 18];
                o[1] = (uint8_t)digits[(v >> 12) & 63];
                o[2] = (uint8_t)digits[(v >> 6) & 63];
                o[3] = (uint8_t)digits[v & 63];
        }
        if (i < n) {
                v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
                o[0] = (uint8_t)digits[v >> 18];
                o[1] = (uint8_t)digits[(v >> 12) & 63];
                o[2] = n - i == 2 ? (uint8_t)digits[(v >> 6) & 63] : '=';
                o[3] = '=';
                o += 4;
        }
        return (size_t)(o - out);
}

/*
 * PEM of one DER certificate with each line ending in nl: "\n", or "\\n" inside a JSON string.
 * Every 48 bytes make one line of exactly 64 characters, written in place.
 */
static int pem_write(const uint8_t *der, size_t n, const char *nl, size_t nl_len,
                     struct kiln_buf *out)
{
        static const char begin[] = "-----BEGIN CERTIFICATE-----";
        static const char end[] = "-----END CERTIFICATE-----";
        size_t lines = (n + 47) / 48, chars = (n + 2) / 3 * 4;
        uint8_t *p = NULL;

        if (n > SIZE_MAX / 2 ||
            kiln_buf_reserve(out, sizeof(begin) - 1 + chars + (lines + 2) * nl_len +
                                          sizeof(end) - 1,
                             &p) < 0)
                return kiln_buf_error(out) ? kiln_buf_error(out) : KILN_E_LIMIT;
        memcpy(p, begin, sizeof(begin) - 1);
        p += sizeof(begin) - 1;
        memcpy(p, nl, nl_len);
        p += nl_len;
        for (size_t off = 0; off < n; off += 48) {
                size_t chunk = n - off < 48 ? n - off : 48;

                p += b64_encode(der + off, chunk, p);
                memcpy(p, nl, nl_len);
                p += nl_len;
        }
        memcpy(p, end, sizeof(end) - 1);
        p += sizeof(end) - 1;
        memcpy(p, nl, nl_len);
        return KILN_OK;
}

int export_pem_cert(const uint8_t *der, size_t n, struct kiln_buf *out)
{
        return pem_write(der, n, "\n", 1, out);
}

void export_renderer_init(struct export_renderer *x)
{
        memset(x, 0, sizeof(*x));
        kiln_buf_init(&x->pem, 4 * KILN_CERT_DER_MAX);
        kiln_buf_init(&x->pem_out, 8 * KILN_CERT_DER_MAX);
        kiln_buf_init(&x->chain, 8 * KILN_CERT_DER_MAX);
        kiln_buf_init(&x->chain_out, 6 * 8 * KILN_CERT_DER_MAX + 2); /* all escaped */
        kiln_buf_init(&x->tmp, 8 * KILN_CERT_DER_MAX);
}

void export_renderer_free(struct export_renderer *x)
{
        if (x == NULL)
                return;
        kiln_buf_free(&x->pem);
        kiln_buf_free(&x->pem_out);
        kiln_buf_free(&x->chain);
        kiln_buf_free(&x->chain_out);
        kiln_buf_free(&x->tmp);
}

static void csv_field(struct kiln_buf *out, const char *s, size_t n, int first);

/* s as a whole JSON string value (quotes included) or CSV field (comma excluded) into out. */
static void render_text(const char *s, size_t n, int csv, struct kiln_buf *out)
{
        kiln_buf_clear(out);
        if (csv) {
                csv_field(out, s, n, 1);
                return;
        }
        kiln_buf_put_u8(out, '"');
        json_escape_into(out, s, n);
        kiln_buf_put_u8(out, '"');
}

/* The rendered form of c's chain: the cached one while the chain is the previous record's. */
static const struct kiln_buf *chain_rendered(struct export_renderer *x, const struct export_cert *c,
                                             int csv)
{
        if (x->chain_csv != csv || x->chain.len != c->chain_pem.len ||
            x->chain_out.len == 0 || kiln_buf_error(&x->chain_out) ||
            (c->chain_pem.len > 0 &&
             memcmp(x->chain.data, c->chain_pem.data, c->chain_pem.len) != 0)) {
                kiln_buf_clear(&x->chain);
                kiln_buf_put(&x->chain, c->chain_pem.data, c->chain_pem.len);
                render_text((const char *)c->chain_pem.data, c->chain_pem.len, csv,
                            &x->chain_out);
                x->chain_csv = csv;
                if (kiln_buf_error(&x->chain))
                        x->chain_out.err = kiln_buf_error(&x->chain);
        }
        return &x->chain_out;
}

/* The rendered form of c's certificate PEM, in x->pem_out. Its only characters are base64, '-',
 * ' ', letters and line ends, so as a JSON string it is written escaped directly. */
static const struct kiln_buf *pem_rendered(struct export_renderer *x, const struct export_cert *c,
                                           int csv)
{
        if (csv) {
                kiln_buf_clear(&x->pem);
                export_pem_cert(c->der.data, c->der.len, &x->pem);
                render_text((const char *)x->pem.data, x->pem.len, csv, &x->pem_out);
                if (kiln_buf_error(&x->pem))
                        x->pem_out.err = kiln_buf_error(&x->pem);
                return &x->pem_out;
        }
        kiln_buf_clear(&x->pem_out);
        kiln_buf_put_u8(&x->pem_out, '"');
        pem_write(c->der.data, c->der.len, "\\n", 2, &x->pem_out);
        kiln_buf_put_u8(&x->pem_out, '"');
        return &x->pem_out;
}

/* A rendered value (or a rendering error) into the output. */
static void put_rendered(struct kiln_buf *out, const struct kiln_buf *v)
{
        if (kiln_buf_error(v) && !out->err)
                out->err = kiln_buf_error(v);
        kiln_buf_put(out, v->data, v->len);
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

/* A value rendered elsewhere (a whole JSON string) after its key. */
static void kv_rendered(struct json_w *w, const char *k, const struct kiln_buf *v)
{
        json_key(w, k);
        if (kiln_buf_error(v) && !w->b->err)
                w->b->err = kiln_buf_error(v);
        json_raw(w, (const char *)v->data, v->len);
}

int export_renderer_json(struct export_renderer *x, const struct db_export_rec *r,
                         struct kiln_buf *out)
{
        struct json_w w;

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
        /* the identity certificate: the one in the lowest key slot; its PEM serves twice */
        if (r->n_certs > 0) {
                const struct export_cert *c = &r->certs[0];

                json_kv_str(&w, "pubkey_sha256", c->pubkey_sha256);
                json_kv_str(&w, "cert_serial", c->serial);
                kv_rendered(&w, "cert_pem", pem_rendered(x, c, 0));
                kv_rendered(&w, "chain_pem", chain_rendered(x, c, 0));
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

                json_obj_begin(&w);
                json_kv_str(&w, "key", c->key);
                json_kv_int(&w, "slot", c->slot);
                json_kv_str(&w, "serial", c->serial);
                json_kv_str(&w, "pubkey_sha256", c->pubkey_sha256);
                json_kv_str(&w, "not_after", c->not_after);
                kv_rendered(&w, "cert_pem", i == 0 ? &x->pem_out : pem_rendered(x, c, 0));
                json_obj_end(&w);
        }
        json_arr_end(&w);
        json_key(&w, "fuses");
        json_obj_begin(&w);
        for (unsigned i = 0; i < r->n_fuses; i++)
                json_kv_str(&w, r->fuses[i].field, r->fuses[i].value);
        json_obj_end(&w);
        json_obj_end(&w);
        return json_error(&w);
}

int export_render_json(const struct db_export_rec *r, struct kiln_buf *out)
{
        struct export_renderer x;
        int e;

        export_renderer_init(&x);
        e = export_renderer_json(&x, r, out);
        export_renderer_free(&x);
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
        /* the runs up to and including each quote, each quote then doubled */
        while (n > 0) {
                const char *q = memchr(s, '"', n);
                size_t run = q != NULL ? (size_t)(q - s) + 1 : n;

                kiln_buf_put(out, s, run);
                if (q != NULL)
                        kiln_buf_put_u8(out, '"');
                s += run;
                n -= run;
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

int export_renderer_csv(struct export_renderer *x, const struct db_export_rec *r,
                        struct kiln_buf *out)
{
        char num[24];

        kiln_buf_clear(&x->tmp);
        csv_field(out, r->serial, strlen(r->serial), 1);
        csv_str(out, r->chip_uid);
        csv_str(out, r->n_macs > 0 ? r->macs[0] : "");
        for (unsigned i = 0; i < r->n_macs; i++) {
                if (i > 0)
                        kiln_buf_put_u8(&x->tmp, ' ');
                kiln_buf_put_str(&x->tmp, r->macs[i]);
        }
        csv_field(out, (const char *)x->tmp.data, x->tmp.len, 0);
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
                kiln_buf_put_u8(out, ',');
                put_rendered(out, pem_rendered(x, c, 1));
                kiln_buf_put_u8(out, ',');
                put_rendered(out, chain_rendered(x, c, 1));
        } else {
                for (int i = 0; i < 4; i++)
                        csv_str(out, "");
        }
        kiln_buf_clear(&x->tmp);
        for (unsigned i = 0; i < r->n_fuses; i++)
                kiln_buf_printf(&x->tmp, "%s%s=%s", i ? ";" : "", r->fuses[i].field,
                                r->fuses[i].value);
        csv_field(out, (const char *)x->tmp.data, x->tmp.len, 0);
        kiln_buf_put(out, "\r\n", 2);
        if (kiln_buf_error(&x->tmp) && !out->err)
                out->err = kiln_buf_error(&x->tmp);
        return kiln_buf_error(out);
}

int export_render_csv(const struct db_export_rec *r, struct kiln_buf *out)
{
        struct export_renderer x;
        int e;

        export_renderer_init(&x);
        e = export_renderer_csv(&x, r, out);
        export_renderer_free(&x);
        return e;
}
