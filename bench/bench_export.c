/*
 * bench_export: a traceability database of many unit records, and the real `kiln export` on it.
 *
 *     bench_export fill --template DB --db OUT --units N
 *     bench_export run --kiln PATH --db OUT --format jsonl|csv
 *
 * fill: grows OUT (created with the station's own schema through db_open() when missing) to N
 * unit records. Every row is a copy of a real unit that the station provisioned into the template
 * database (bench_host writes one: PASS units of the smart plug with their keys, certificate and
 * chain, credential commitment, objects, attestation, steps, fuse journal, fuse snapshots and audit
 * events), cycling through up to 256 template units, with what must differ per unit rewritten:
 *
 *   units        id, chip_uid, serial, serial_seq, started_at / finished_at (one unit every 2 s)
 *   macs         one MAC address per unit (02:00:5e:..., sequential), as a recipe with a MAC pool
 *   keys         pubkey_sha256 (the template's with its last 16 hex digits the unit number)
 *   certificates cert_serial, and the serial inside the DER patched to match (so the certificate
 *                bytes differ per unit; its signature no longer verifies, which export never
 *                checks) and its sha256
 *   credentials  commitment (unique per unit, like the template's)
 *   events       seq, unit_id, the "unit" field of the body, and a correct hash chain
 *                (SHA-256(prev|seq|at|unit|kind|body)); the record digests inside the bodies stay
 *                the template's, so `kiln audit verify` is not expected to pass on this database
 *   others       unit_id
 *
 * Rows go in directly with the SQLite C API (one prepared INSERT per table, no journal while
 * filling, a commit every 50,000 units), then the file is put back in WAL mode, as the station
 * keeps it. The work order's counters and the serial counter are set to match.
 *
 * run: starts `kiln export --db OUT --format F` with its standard output into a pipe that this
 * program drains and counts (JSON Lines: lines; CSV: RFC 4180 records outside quotes, header
 * excluded), and prints the records, seconds, records per second and kiln's peak resident set
 * (wait4 ru_maxrss).
 */
#define _GNU_SOURCE /* SCHED_BATCH */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "bench_common.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/util.h"

#define TEMPLATES_MAX 256u
#define BATCH_UNITS 50000u
#define UNITS_MAX 100000000u
#define PATH_CAP 4096
#define ROWS_MAX 64u
#define CHAINS_MAX 64u
#define COLS_MAX 32u
#define UNIT_EPOCH_S 1767225600LL /* 2026-01-01T00:00:00Z: the first synthetic unit's start */

/* Tables with a unit_id, copied per unit in this order (events last: they chain). */
static const char *const child_tables[] = {
        "keys",  "certificates",   "credentials",  "objects", "attestations",
        "steps", "fuse_journal",   "fuse_snapshots", "label_prints",
};
#define N_CHILD (sizeof(child_tables) / sizeof(child_tables[0]))

struct table {
        const char *name;
        char cols[COLS_MAX][64];
        unsigned n_cols;
        sqlite3_stmt *ins;
};

struct tmpl_rows {
        sqlite3_value **v; /* n_rows * n_cols values */
        unsigned n_rows;
};

struct tmpl {
        int64_t id;
        struct tmpl_rows unit, child[N_CHILD], events;
};

struct filler {
        sqlite3 *h;
        struct table units, child[N_CHILD], events, macs;
        struct tmpl *t;
        unsigned n_t;
        int64_t seq;
        char head[65];
        int64_t chain_tpl[CHAINS_MAX], chain_db[CHAINS_MAX]; /* chain ids: template -> OUT */
        unsigned n_chains;
};

static int sq_err(sqlite3 *h, const char *what)
{
        return kiln_fail(KILN_E_DB, "%s: %s", what, sqlite3_errmsg(h));
}

static int exec(sqlite3 *h, const char *sql)
{
        if (sqlite3_exec(h, sql, NULL, NULL, NULL) != SQLITE_OK)
                return sq_err(h, sql);
        return KILN_OK;
}

/* Column names of main.<name>, and INSERT INTO main.<name> (all but skip) VALUES (...). */
static int table_init(sqlite3 *h, const char *name, const char *skip, struct table *t)
{
        char sql[4096];
        sqlite3_stmt *st = NULL;
        size_t off;
        int r = KILN_OK;

        memset(t, 0, sizeof(*t));
        t->name = name;
        snprintf(sql, sizeof(sql), "PRAGMA main.table_info(%s)", name);
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                return sq_err(h, "table_info");
        while (sqlite3_step(st) == SQLITE_ROW) {
                const unsigned char *c = sqlite3_column_text(st, 1);

                if (c == NULL || (skip != NULL && strcmp((const char *)c, skip) == 0))
                        continue;
                if (t->n_cols == COLS_MAX ||
                    kiln_strlcpy(t->cols[t->n_cols], (const char *)c, sizeof(t->cols[0])) < 0) {
                        r = kiln_fail(KILN_E_LIMIT, "table %s: too many or too long columns",
                                      name);
                        break;
                }
                t->n_cols++;
        }
        sqlite3_finalize(st);
        if (r < 0)
                return r;
        if (t->n_cols == 0)
                return kiln_fail(KILN_E_NOT_FOUND, "table %s not in the database", name);
        off = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO main.%s (", name);
        for (unsigned i = 0; i < t->n_cols && off < sizeof(sql); i++)
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s%s", i ? "," : "",
                                        t->cols[i]);
        if (off < sizeof(sql))
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, ") VALUES (");
        for (unsigned i = 0; i < t->n_cols && off < sizeof(sql); i++)
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s?%u", i ? "," : "", i + 1);
        if (off < sizeof(sql))
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, ")");
        if (off >= sizeof(sql))
                return kiln_fail(KILN_E_LIMIT, "table %s: statement too long", name);
        if (sqlite3_prepare_v2(h, sql, -1, &t->ins, NULL) != SQLITE_OK)
                return sq_err(h, sql);
        return KILN_OK;
}

static int col_index(const struct table *t, const char *name)
{
        for (unsigned i = 0; i < t->n_cols; i++)
                if (strcmp(t->cols[i], name) == 0)
                        return (int)i;
        return -1;
}

/* The template rows of one unit in one table (same columns as the insert). */
static int rows_load(sqlite3 *h, const struct table *t, const char *key, int64_t id,
                     struct tmpl_rows *ret)
{
        char sql[4096];
        sqlite3_stmt *st = NULL;
        size_t off;
        int rc, r = KILN_OK;

        off = (size_t)snprintf(sql, sizeof(sql), "SELECT ");
        for (unsigned i = 0; i < t->n_cols && off < sizeof(sql); i++)
                off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s%s", i ? "," : "",
                                        t->cols[i]);
        if (off < sizeof(sql))
                off += (size_t)snprintf(sql + off, sizeof(sql) - off,
                                        " FROM tpl.%s WHERE %s = ?1 ORDER BY rowid", t->name, key);
        if (off >= sizeof(sql))
                return kiln_fail(KILN_E_LIMIT, "statement too long");
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
                return sq_err(h, sql);
        sqlite3_bind_int64(st, 1, id);
        ret->v = kiln_calloc((size_t)ROWS_MAX * t->n_cols, sizeof(*ret->v));
        ret->n_rows = 0;
        if (ret->v == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (ret->n_rows == ROWS_MAX) {
                        r = kiln_fail(KILN_E_LIMIT, "template unit %lld has over %u %s rows",
                                      (long long)id, ROWS_MAX, t->name);
                        goto out;
                }
                for (unsigned c = 0; c < t->n_cols; c++) {
                        sqlite3_value *v = sqlite3_value_dup(sqlite3_column_value(st, (int)c));

                        if (v == NULL) {
                                r = KILN_E_NOMEM;
                                goto out;
                        }
                        ret->v[ret->n_rows * t->n_cols + c] = v;
                }
                ret->n_rows++;
        }
        if (rc != SQLITE_DONE)
                r = sq_err(h, "read template");
out:
        sqlite3_finalize(st);
        return r;
}

static void rows_free(struct tmpl_rows *rows, unsigned n_cols)
{
        if (rows->v == NULL)
                return;
        for (unsigned i = 0; i < ROWS_MAX * n_cols; i++)
                sqlite3_value_free(rows->v[i]);
        kiln_free(rows->v);
        rows->v = NULL;
}

static void text_of(sqlite3_value *v, char *out, size_t cap)
{
        const unsigned char *s = sqlite3_value_text(v);

        if (kiln_strlcpy(out, s != NULL ? (const char *)s : "", cap) < 0 && cap > 0)
                out[0] = '\0';
}

/* s with its last 16 characters replaced by the unit number in hex (same length, unique). */
static void unique_hex(sqlite3_value *v, uint64_t unit, char *out, size_t cap)
{
        char num[17];
        size_t n;

        text_of(v, out, cap);
        n = strlen(out);
        snprintf(num, sizeof(num), "%016llx", (unsigned long long)unit);
        if (n >= 16)
                memcpy(out + n - 16, num, 16);
}

static void iso_time(int64_t s, char out[32])
{
        if (kiln_utc_iso8601(s * 1000, out, 32) < 0)
                out[0] = '\0';
}

static int step_insert(sqlite3 *h, struct table *t)
{
        int rc = sqlite3_step(t->ins);

        sqlite3_reset(t->ins);
        if (rc != SQLITE_DONE)
                return sq_err(h, t->name);
        return KILN_OK;
}

/* Bind template row `row` of t as is, then let the caller override columns. */
static void bind_row(struct table *t, const struct tmpl_rows *rows, unsigned row)
{
        for (unsigned c = 0; c < t->n_cols; c++)
                sqlite3_bind_value(t->ins, (int)c + 1, rows->v[row * t->n_cols + c]);
}

static int bind_textc(struct table *t, const char *col, const char *v)
{
        int i = col_index(t, col);

        if (i < 0)
                return kiln_fail(KILN_E_NOT_FOUND, "%s.%s missing", t->name, col);
        sqlite3_bind_text(t->ins, i + 1, v, -1, SQLITE_TRANSIENT);
        return KILN_OK;
}

static int bind_intc(struct table *t, const char *col, int64_t v)
{
        int i = col_index(t, col);

        if (i < 0)
                return kiln_fail(KILN_E_NOT_FOUND, "%s.%s missing", t->name, col);
        sqlite3_bind_int64(t->ins, i + 1, v);
        return KILN_OK;
}

/* The certificate row: a new serial in the column and inside the DER, and the DER's hash; its
 * issuer chain is the same chain in OUT's chains table. */
static int bind_cert(const struct filler *f, struct table *t, const struct tmpl_rows *rows,
                     unsigned row, uint64_t unit)
{
        int ci = col_index(t, "cert_serial"), di = col_index(t, "der"), hi = col_index(t, "sha256");
        int chi = col_index(t, "chain_id");
        uint8_t old[64], neu[64], der[8192], md[32];
        char serial[129], hex[65];
        size_t slen = 0, dlen;
        sqlite3_value *dv;
        int64_t chain;
        unsigned k;

        if (ci < 0 || di < 0 || hi < 0 || chi < 0)
                return kiln_fail(KILN_E_NOT_FOUND, "certificates: columns missing");
        chain = sqlite3_value_int64(rows->v[row * t->n_cols + (unsigned)chi]);
        for (k = 0; k < f->n_chains && f->chain_tpl[k] != chain; k++)
                ;
        if (k == f->n_chains)
                return kiln_fail(KILN_E_NOT_FOUND, "template chain %lld missing", (long long)chain);
        sqlite3_bind_int64(t->ins, chi + 1, f->chain_db[k]);
        text_of(rows->v[row * t->n_cols + (unsigned)ci], serial, sizeof(serial));
        if (kiln_hex_decode(serial, old, sizeof(old), &slen) < 0 || slen < 8)
                return kiln_fail(KILN_E_SYNTAX, "template certificate serial '%s'", serial);
        dv = rows->v[row * t->n_cols + (unsigned)di];
        dlen = (size_t)sqlite3_value_bytes(dv);
        if (dlen > sizeof(der))
                return kiln_fail(KILN_E_LIMIT, "template certificate too large");
        memcpy(der, sqlite3_value_blob(dv), dlen);
        /* keep the leading bytes (and so the DER INTEGER's length), the unit in the last 8 */
        memcpy(neu, old, slen);
        for (unsigned i = 0; i < 8; i++)
                neu[slen - 1 - i] = (uint8_t)(unit >> (8 * i));
        for (size_t i = 0; i + slen <= dlen; i++) {
                if (memcmp(der + i, old, slen) == 0) {
                        memcpy(der + i, neu, slen);
                        break;
                }
        }
        kiln_hex_encode(neu, slen, serial, sizeof(serial));
        SHA256(der, dlen, md);
        kiln_hex_encode(md, sizeof(md), hex, sizeof(hex));
        sqlite3_bind_text(t->ins, ci + 1, serial, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(t->ins, di + 1, der, (int)dlen, SQLITE_TRANSIENT);
        sqlite3_bind_text(t->ins, hi + 1, hex, -1, SQLITE_TRANSIENT);
        return KILN_OK;
}

/* The event's body with "unit":<template id> made the new unit id. */
static int event_body(sqlite3_value *v, int64_t tid, int64_t unit, char *out, size_t cap)
{
        char pat[32];
        const char *s = (const char *)sqlite3_value_text(v), *p;
        size_t pl;

        if (s == NULL)
                return kiln_fail(KILN_E_SYNTAX, "event without a body");
        snprintf(pat, sizeof(pat), "\"unit\":%lld", (long long)tid);
        pl = strlen(pat);
        p = strstr(s, pat);
        if (p == NULL)
                return kiln_strlcpy(out, s, cap);
        return kiln_snprintf(out, cap, "%.*s\"unit\":%lld%s", (int)(p - s), s, (long long)unit,
                             p + pl);
}

static int fill_unit(struct filler *f, const struct tmpl *tp, int64_t unit)
{
        char uid[128], serial[64], at0[32], at1[32], buf[256], mac[18];
        struct table *t;
        int r;

        /* the unit row */
        t = &f->units;
        bind_row(t, &tp->unit, 0);
        snprintf(uid, sizeof(uid), "%016llx",
                 (unsigned long long)(0xb000000000000000ULL | (uint64_t)unit));
        snprintf(serial, sizeof(serial), "SPA1-%04lld-%06lld", 2601 + (long long)(unit / 1000000),
                 (long long)(unit % 1000000));
        iso_time(UNIT_EPOCH_S + 2 * unit, at0);
        iso_time(UNIT_EPOCH_S + 2 * unit + 1, at1);
        r = bind_intc(t, "id", unit);
        if (r == KILN_OK)
                r = bind_textc(t, "chip_uid", uid);
        if (r == KILN_OK)
                r = bind_textc(t, "serial", serial);
        if (r == KILN_OK)
                r = bind_intc(t, "serial_seq", unit);
        if (r == KILN_OK)
                r = bind_textc(t, "started_at", at0);
        if (r == KILN_OK)
                r = bind_textc(t, "finished_at", at1);
        if (r == KILN_OK)
                r = step_insert(f->h, t);
        if (r < 0)
                return r;
        /* one MAC address */
        snprintf(mac, sizeof(mac), "02:00:5e:%02x:%02x:%02x", (unsigned)(unit >> 16) & 0xff,
                 (unsigned)(unit >> 8) & 0xff, (unsigned)unit & 0xff);
        t = &f->macs;
        sqlite3_bind_text(t->ins, col_index(t, "mac") + 1, mac, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(t->ins, col_index(t, "unit_id") + 1, unit);
        sqlite3_bind_int64(t->ins, col_index(t, "idx") + 1, 0);
        r = step_insert(f->h, t);
        if (r < 0)
                return r;
        for (unsigned k = 0; k < N_CHILD; k++) {
                t = &f->child[k];
                for (unsigned row = 0; row < tp->child[k].n_rows; row++) {
                        bind_row(t, &tp->child[k], row);
                        r = bind_intc(t, "unit_id", unit);
                        if (r == KILN_OK && strcmp(t->name, "keys") == 0) {
                                unique_hex(tp->child[k].v[row * t->n_cols +
                                                          (unsigned)col_index(t, "pubkey_sha256")],
                                           (uint64_t)unit, buf, sizeof(buf));
                                r = bind_textc(t, "pubkey_sha256", buf);
                        } else if (r == KILN_OK && strcmp(t->name, "credentials") == 0) {
                                unique_hex(tp->child[k].v[row * t->n_cols +
                                                          (unsigned)col_index(t, "commitment")],
                                           (uint64_t)unit, buf, sizeof(buf));
                                r = bind_textc(t, "commitment", buf);
                        } else if (r == KILN_OK && strcmp(t->name, "certificates") == 0) {
                                r = bind_cert(f, t, &tp->child[k], row, (uint64_t)unit);
                        }
                        if (r == KILN_OK)
                                r = step_insert(f->h, t);
                        if (r < 0)
                                return r;
                }
        }
        /* audit events: a real hash chain over the new bodies */
        t = &f->events;
        for (unsigned row = 0; row < tp->events.n_rows; row++) {
                sqlite3_value **v = &tp->events.v[row * t->n_cols];
                char body[16384], at[64], kind[64], seqs[24], uids[24], hash[65];
                uint8_t md[32];
                EVP_MD_CTX *ctx;
                int ok;

                r = event_body(v[col_index(t, "body")], tp->id, unit, body, sizeof(body));
                if (r < 0)
                        return r;
                text_of(v[col_index(t, "at")], at, sizeof(at));
                text_of(v[col_index(t, "kind")], kind, sizeof(kind));
                f->seq++;
                snprintf(seqs, sizeof(seqs), "%lld", (long long)f->seq);
                snprintf(uids, sizeof(uids), "%lld", (long long)unit);
                ctx = EVP_MD_CTX_new();
                ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
                     EVP_DigestUpdate(ctx, f->head, 64) && EVP_DigestUpdate(ctx, "|", 1) &&
                     EVP_DigestUpdate(ctx, seqs, strlen(seqs)) && EVP_DigestUpdate(ctx, "|", 1) &&
                     EVP_DigestUpdate(ctx, at, strlen(at)) && EVP_DigestUpdate(ctx, "|", 1) &&
                     EVP_DigestUpdate(ctx, uids, strlen(uids)) && EVP_DigestUpdate(ctx, "|", 1) &&
                     EVP_DigestUpdate(ctx, kind, strlen(kind)) && EVP_DigestUpdate(ctx, "|", 1) &&
                     EVP_DigestUpdate(ctx, body, strlen(body)) &&
                     EVP_DigestFinal_ex(ctx, md, NULL);
                EVP_MD_CTX_free(ctx);
                if (!ok)
                        return kiln_fail(KILN_E_CRYPTO, "SHA-256 failed");
                kiln_hex_encode(md, sizeof(md), hash, sizeof(hash));
                bind_row(t, &tp->events, row);
                r = bind_intc(t, "seq", f->seq);
                if (r == KILN_OK)
                        r = bind_intc(t, "unit_id", unit);
                if (r == KILN_OK)
                        r = bind_textc(t, "body", body);
                if (r == KILN_OK)
                        r = bind_textc(t, "prev_hash", f->head);
                if (r == KILN_OK)
                        r = bind_textc(t, "hash", hash);
                if (r == KILN_OK)
                        r = step_insert(f->h, t);
                if (r < 0)
                        return r;
                memcpy(f->head, hash, sizeof(f->head));
        }
        return KILN_OK;
}

static int64_t query_int(sqlite3 *h, const char *sql)
{
        sqlite3_stmt *st = NULL;
        int64_t v = -1;

        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

static int cmd_fill(const char *tpl_path, const char *out_path, uint64_t want)
{
        struct filler f;
        struct db *db = NULL;
        sqlite3_stmt *st = NULL;
        char sql[PATH_CAP + 64];
        int64_t have, ids[TEMPLATES_MAX];
        uint64_t t0 = kiln_now_us();
        int r;

        memset(&f, 0, sizeof(f));
        /* the station's own schema and migrations, on OUT and on a template from an older kiln */
        r = db_open(out_path, &db);
        db_close(db);
        db = NULL;
        if (r == KILN_OK)
                r = db_open(tpl_path, &db);
        db_close(db);
        if (r < 0)
                return r;
        if (sqlite3_open(out_path, &f.h) != SQLITE_OK) {
                r = kiln_fail(KILN_E_DB, "cannot open '%s'", out_path);
                goto out;
        }
        r = exec(f.h, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                      "PRAGMA cache_size = -524288; PRAGMA temp_store = MEMORY;"
                      "PRAGMA foreign_keys = OFF");
        if (r < 0)
                goto out;
        if (sqlite3_prepare_v2(f.h, "ATTACH DATABASE ?1 AS tpl", -1, &st, NULL) != SQLITE_OK) {
                r = sq_err(f.h, "attach");
                goto out;
        }
        sqlite3_bind_text(st, 1, tpl_path, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                r = sq_err(f.h, "attach the template");
        sqlite3_finalize(st);
        st = NULL;
        if (r == KILN_OK)
                r = exec(f.h, "INSERT OR IGNORE INTO main.recipes SELECT * FROM tpl.recipes;"
                              "INSERT OR IGNORE INTO main.work_orders "
                              "SELECT * FROM tpl.work_orders;"
                              "INSERT OR IGNORE INTO main.chains (sha256, pem) "
                              "SELECT sha256, pem FROM tpl.chains ORDER BY id");
        if (r < 0)
                goto out;
        if (sqlite3_prepare_v2(f.h, "SELECT t.id, m.id FROM tpl.chains t JOIN main.chains m "
                                    "ON m.sha256 = t.sha256", -1, &st, NULL) != SQLITE_OK) {
                r = sq_err(f.h, "template chains");
                goto out;
        }
        while (r == KILN_OK && sqlite3_step(st) == SQLITE_ROW) {
                if (f.n_chains == CHAINS_MAX) {
                        r = kiln_fail(KILN_E_LIMIT, "template has over %u chains", CHAINS_MAX);
                        break;
                }
                f.chain_tpl[f.n_chains] = sqlite3_column_int64(st, 0);
                f.chain_db[f.n_chains++] = sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
        st = NULL;
        if (r < 0)
                goto out;
        /* the template units */
        if (sqlite3_prepare_v2(f.h, "SELECT id FROM tpl.units WHERE verdict = 'PASS' ORDER BY id "
                                    "LIMIT 256", -1, &st, NULL) != SQLITE_OK) {
                r = sq_err(f.h, "template units");
                goto out;
        }
        while (sqlite3_step(st) == SQLITE_ROW && f.n_t < TEMPLATES_MAX)
                ids[f.n_t++] = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        st = NULL;
        if (f.n_t == 0) {
                r = kiln_fail(KILN_E_NOT_FOUND, "no PASS unit in the template '%s'", tpl_path);
                goto out;
        }
        r = table_init(f.h, "units", NULL, &f.units);
        if (r == KILN_OK)
                r = table_init(f.h, "events", NULL, &f.events);
        if (r == KILN_OK)
                r = table_init(f.h, "macs", NULL, &f.macs);
        for (unsigned k = 0; r == KILN_OK && k < N_CHILD; k++)
                r = table_init(f.h, child_tables[k], "id", &f.child[k]);
        if (r < 0)
                goto out;
        f.t = kiln_calloc(f.n_t, sizeof(*f.t));
        if (f.t == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        for (unsigned i = 0; r == KILN_OK && i < f.n_t; i++) {
                f.t[i].id = ids[i];
                r = rows_load(f.h, &f.units, "id", ids[i], &f.t[i].unit);
                if (r == KILN_OK)
                        r = rows_load(f.h, &f.events, "unit_id", ids[i], &f.t[i].events);
                for (unsigned k = 0; r == KILN_OK && k < N_CHILD; k++)
                        r = rows_load(f.h, &f.child[k], "unit_id", ids[i], &f.t[i].child[k]);
        }
        if (r < 0)
                goto out;
        have = query_int(f.h, "SELECT coalesce(max(id), 0) FROM main.units");
        f.seq = query_int(f.h, "SELECT coalesce(max(seq), 0) FROM main.events");
        memset(f.head, '0', 64);
        f.head[64] = '\0';
        if (f.seq > 0) {
                if (sqlite3_prepare_v2(f.h,
                                       "SELECT hash FROM main.events ORDER BY seq DESC LIMIT 1",
                                       -1, &st, NULL) == SQLITE_OK &&
                    sqlite3_step(st) == SQLITE_ROW)
                        text_of(sqlite3_column_value(st, 0), f.head, sizeof(f.head));
                sqlite3_finalize(st);
                st = NULL;
        }
        r = exec(f.h, "BEGIN");
        for (int64_t u = have + 1; r == KILN_OK && (uint64_t)u <= want; u++) {
                r = fill_unit(&f, &f.t[(uint64_t)u % f.n_t], u);
                if (r == KILN_OK && u % BATCH_UNITS == 0)
                        r = exec(f.h, "COMMIT; BEGIN");
        }
        if (r == KILN_OK)
                r = exec(f.h, "COMMIT");
        if (r < 0)
                goto out;
        /* counters as the station would have left them */
        snprintf(sql, sizeof(sql),
                 "UPDATE main.work_orders SET quota = max(quota, %llu), reserved = 0, consumed = "
                 "(SELECT count(*) FROM main.units u WHERE u.work_order = work_orders.id);"
                 "INSERT INTO main.counters (name, next) SELECT name, %llu FROM tpl.counters "
                 "WHERE name LIKE 'serial:%%' ON CONFLICT(name) DO UPDATE SET next = excluded.next",
                 (unsigned long long)want, (unsigned long long)want + 1);
        r = exec(f.h, sql);
        if (r == KILN_OK)
                r = exec(f.h, "DETACH DATABASE tpl; PRAGMA journal_mode = WAL");
        if (r < 0)
                goto out;
        printf("export_fill_units: %lld\n",
               (long long)query_int(f.h, "SELECT count(*) FROM units"));
        printf("export_fill_seconds: %.1f\n", (double)(kiln_now_us() - t0) / 1e6);
        printf("export_db_mib: %.0f\n",
               (double)query_int(f.h, "SELECT page_count * page_size FROM pragma_page_count, "
                                      "pragma_page_size") / 1048576.0);
out:
        sqlite3_finalize(st);
        for (unsigned i = 0; f.t != NULL && i < f.n_t; i++) {
                rows_free(&f.t[i].unit, f.units.n_cols);
                rows_free(&f.t[i].events, f.events.n_cols);
                for (unsigned k = 0; k < N_CHILD; k++)
                        rows_free(&f.t[i].child[k], f.child[k].n_cols);
        }
        kiln_free(f.t);
        sqlite3_finalize(f.units.ins);
        sqlite3_finalize(f.events.ins);
        sqlite3_finalize(f.macs.ins);
        for (unsigned k = 0; k < N_CHILD; k++)
                sqlite3_finalize(f.child[k].ins);
        sqlite3_close(f.h);
        return r;
}

/* Count records in the export stream: JSON Lines by newline, CSV by CRLF outside quotes. */
struct counter {
        int csv;
        int in_quotes;
        uint8_t prev;
        uint64_t records;
        uint64_t bytes;
};

/*
 * The counting is done with memchr, so the reader takes little CPU from the machine kiln export
 * runs on (two cores: a byte-at-a-time loop here took about a third of what kiln itself did).
 */
static void count(struct counter *c, const uint8_t *p, size_t n)
{
        const uint8_t *start = p, *end = p + n, *nl, *q;

        c->bytes += n;
        if (n == 0)
                return;
        if (!c->csv) {
                for (; (nl = memchr(p, '\n', (size_t)(end - p))) != NULL; p = nl + 1)
                        c->records++;
                return;
        }
        while (p < end) {
                if (c->in_quotes) {
                        /* only a quote matters inside quotes; "" leaves and re-enters them */
                        q = memchr(p, '"', (size_t)(end - p));
                        if (q == NULL)
                                break;
                        c->in_quotes = 0;
                        p = q + 1;
                        continue;
                }
                nl = memchr(p, '\n', (size_t)(end - p));
                q = memchr(p, '"', (size_t)((nl != NULL ? nl : end) - p));
                if (q != NULL) {
                        c->in_quotes = 1;
                        p = q + 1;
                        continue;
                }
                if (nl == NULL)
                        break;
                if ((nl > start ? nl[-1] : c->prev) == '\r')
                        c->records++;
                c->prev = '\n';
                p = nl + 1;
        }
        c->prev = end[-1];
}

static int cmd_run(const char *kiln, const char *db, const char *format, int batch)
{
        char kpath[PATH_CAP], dpath[PATH_CAP], fmt[16];
        char *argv[8];
        uint8_t buf[1 << 16];
        struct counter c;
        int pipefd[2] = {-1, -1};
        pid_t pid = -1;
        long maxrss = 0;
        int status = 0, r;
        uint64_t t0, t1;
        double cpu = 0;

        memset(&c, 0, sizeof(c));
        c.csv = strcmp(format, "csv") == 0;
        if (kiln_strlcpy(kpath, kiln, sizeof(kpath)) < 0 ||
            kiln_strlcpy(dpath, db, sizeof(dpath)) < 0 ||
            kiln_strlcpy(fmt, format, sizeof(fmt)) < 0)
                return kiln_fail(KILN_E_RANGE, "argument too long");
        argv[0] = kpath;
        argv[1] = "export";
        argv[2] = "--db";
        argv[3] = dpath;
        argv[4] = "--format";
        argv[5] = fmt;
        argv[6] = NULL;
        if (pipe(pipefd) < 0)
                return kiln_fail(KILN_E_IO, "pipe: %s", strerror(errno));
        t0 = kiln_now_us();
        r = bench_spawn(argv, pipefd[1], NULL, &pid);
        close(pipefd[1]);
        if (r < 0) {
                close(pipefd[0]);
                return r;
        }
        if (batch) {
                /*
                 * This reader as SCHED_BATCH (sched(7)): its wake-ups do not preempt kiln. Without
                 * it, on two vCPUs with other work running, each page kiln wrote woke the reader onto
                 * kiln's CPU, and kiln was switched out about once per record (perf stat: ~107,000
                 * context switches for 100,000 records) for a reader that only counts.
                 */
                struct sched_param sp = {.sched_priority = 0};

                if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0)
                        fprintf(stderr, "bench_export: SCHED_BATCH: %s\n", strerror(errno));
        }
        for (;;) {
                ssize_t n = read(pipefd[0], buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                count(&c, buf, (size_t)n);
        }
        close(pipefd[0]);
        r = bench_wait(pid, &status, &maxrss, &cpu);
        t1 = kiln_now_us();
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return kiln_fail(KILN_E_IO, "kiln export failed (status %d)", status);
        if (c.csv && c.records > 0)
                c.records--; /* the header */
        printf("export_format: %s\n", format);
        printf("export_reader: %s\n", batch ? "batch" : "normal");
        printf("export_records: %llu\n", (unsigned long long)c.records);
        printf("export_bytes: %llu\n", (unsigned long long)c.bytes);
        printf("export_seconds: %.2f\n", (double)(t1 - t0) / 1e6);
        printf("export_records_per_s: %.0f\n", (double)c.records / ((double)(t1 - t0) / 1e6));
        printf("export_peak_rss_mib: %.1f\n", (double)maxrss / 1024.0);
        /* near 100: kiln export was busy computing; well below: it waited (disk, the pipe) */
        printf("export_cpu_pct: %.0f\n", cpu / ((double)(t1 - t0) / 1e6) * 100.0);
        printf("export_cpu_us_per_record: %.2f\n", c.records ? cpu * 1e6 / (double)c.records : 0);
        return KILN_OK;
}

int main(int argc, char **argv)
{
        const char *tpl = NULL, *db = NULL, *kiln = NULL, *format = "jsonl", *reader = "batch";
        uint32_t units = 0;
        int fill, r;

        if (argc < 2 || (strcmp(argv[1], "fill") != 0 && strcmp(argv[1], "run") != 0))
                goto usage;
        fill = strcmp(argv[1], "fill") == 0;
        for (int i = 2; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;

                if (v == NULL)
                        goto usage;
                if (strcmp(argv[i], "--template") == 0)
                        tpl = v;
                else if (strcmp(argv[i], "--db") == 0)
                        db = v;
                else if (strcmp(argv[i], "--kiln") == 0)
                        kiln = v;
                else if (strcmp(argv[i], "--format") == 0)
                        format = v;
                else if (strcmp(argv[i], "--reader") == 0)
                        reader = v;
                else if (strcmp(argv[i], "--units") == 0) {
                        if (kiln_parse_u32(v, 1, UNITS_MAX, &units) < 0)
                                goto usage;
                } else {
                        goto usage;
                }
        }
        if (db == NULL || (fill && (tpl == NULL || units == 0)) || (!fill && kiln == NULL) ||
            (strcmp(format, "jsonl") != 0 && strcmp(format, "csv") != 0) ||
            (strcmp(reader, "batch") != 0 && strcmp(reader, "normal") != 0))
                goto usage;
        signal(SIGPIPE, SIG_IGN);
        r = fill ? cmd_fill(tpl, db, units) : cmd_run(kiln, db, format, strcmp(reader, "batch") == 0);
        if (r < 0) {
                fprintf(stderr, "bench_export: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
                return 1;
        }
        return 0;
usage:
        fprintf(stderr, "usage: bench_export fill --template DB --db OUT --units N\n"
                        "       bench_export run --kiln PATH --db OUT --format jsonl|csv "
                        "[--reader batch|normal]\n");
        return 2;
}
