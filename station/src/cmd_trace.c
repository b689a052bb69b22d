/*
 * kiln trace ID --db FILE [--json]: find a unit by serial, chip UID, MAC or certificate serial and
 * print its whole history: identity, every step with its timing, keys, certificates, credential
 * commitments, objects, attestations, the fuse journal (intents and read-backs), fuse snapshots,
 * label prints and its audit events.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kiln/cli.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/export.h"
#include "kiln/json.h"
#include "kiln/util.h"

#define TRACE_COLS 16
#define TRACE_ROWS_MAX 4096 /* rows of one section kept for alignment; more print unaligned */

struct trace_ctx {
        FILE *out;
        int json;
        const char *section; /* the one being printed */
        struct json_w w;
        struct kiln_buf buf;
        /* text mode: the current section's cells, NUL-separated, and column widths */
        char sec_name[32];
        struct kiln_buf cells;
        unsigned n_cols, n_rows;
        size_t width[TRACE_COLS];
};

static const char *const section_titles[][2] = {
        {"steps", "Steps"},
        {"keys", "Device keys"},
        {"certificates", "Certificates"},
        {"credentials", "Credentials (commitments only)"},
        {"objects", "Objects written and verified"},
        {"attestations", "Attestations"},
        {"fuse_journal", "Fuse journal (intent before each burn, read-back after)"},
        {"fuse_snapshots", "Fuse snapshots"},
        {"label_prints", "Label prints"},
        {"events", "Audit events"},
};

static const char *title_of(const char *section)
{
        for (size_t i = 0; i < sizeof(section_titles) / sizeof(section_titles[0]); i++)
                if (strcmp(section_titles[i][0], section) == 0)
                        return section_titles[i][1];
        return section;
}

static void cell_add(struct trace_ctx *t, unsigned col, const char *v)
{
        size_t n = strlen(v);

        kiln_buf_put(&t->cells, v, n + 1);
        if (n > t->width[col])
                t->width[col] = n;
}

/* Print the buffered section with its columns aligned. */
static void section_flush(struct trace_ctx *t)
{
        const char *p = (const char *)t->cells.data;

        if (t->n_cols == 0)
                return;
        fprintf(t->out, "\n%s\n", title_of(t->sec_name));
        for (unsigned r = 0; r <= t->n_rows; r++) {
                fprintf(t->out, " ");
                for (unsigned c = 0; c < t->n_cols; c++) {
                        fprintf(t->out, " %-*s", c + 1 < t->n_cols ? (int)t->width[c] : 0, p);
                        p += strlen(p) + 1;
                }
                fprintf(t->out, "\n");
        }
        kiln_buf_clear(&t->cells);
        t->n_cols = t->n_rows = 0;
        memset(t->width, 0, sizeof(t->width));
}

static int row(void *p, const char *section, const char *const *names, const char *const *values,
               unsigned n)
{
        struct trace_ctx *t = p;

        if (t->json) {
                if (t->section == NULL || strcmp(t->section, section) != 0) {
                        if (t->section != NULL)
                                json_arr_end(&t->w);
                        json_key(&t->w, section);
                        json_arr_begin(&t->w);
                        t->section = section;
                }
                json_obj_begin(&t->w);
                for (unsigned i = 0; i < n; i++)
                        json_kv_str(&t->w, names[i], values[i]);
                json_obj_end(&t->w);
                return json_error(&t->w);
        }
        if (t->section == NULL || strcmp(t->section, section) != 0) {
                section_flush(t);
                kiln_strlcpy(t->sec_name, section, sizeof(t->sec_name));
                t->n_cols = n < TRACE_COLS ? n : TRACE_COLS;
                for (unsigned i = 0; i < t->n_cols; i++)
                        cell_add(t, i, names[i]);
                t->section = section;
        }
        if (t->n_rows == TRACE_ROWS_MAX)
                section_flush(t); /* a very long section: print what we have, go on */
        for (unsigned i = 0; i < t->n_cols; i++)
                cell_add(t, i, values[i] ? values[i] : "-");
        t->n_rows++;
        return kiln_buf_error(&t->cells);
}

static void print_identity(FILE *f, const struct db_export_rec *r)
{
        fprintf(f, "unit %s  %s%s%s\n", r->serial, r->verdict, r->has_fail_code ? " " : "",
                r->has_fail_code ? r->fail_code : "");
        if (r->has_fail_reason)
                fprintf(f, "  reason       %s\n", r->fail_reason);
        fprintf(f, "  chip UID     %s\n", r->chip_uid);
        for (unsigned i = 0; i < r->n_macs; i++)
                fprintf(f, "  MAC          %s\n", r->macs[i]);
        fprintf(f, "  product      %s, hardware revision %u, firmware %s (%.16s…)\n", r->product_id,
                r->hw_revision, r->fw_version, r->fw_sha256);
        fprintf(f, "  work order   %s (lot %s)\n", r->work_order, r->lot);
        fprintf(f, "  station      %s, slot %s, operator %s\n", r->station_id, r->slot,
                r->operator_id);
        fprintf(f, "  recipe       %s (%s)\n", r->has_recipe_id ? r->recipe_id : "?",
                r->recipe_sha256);
        fprintf(f, "  started      %s\n  finished     %s\n  attempts     %u%s\n", r->started_at,
                r->has_finished_at ? r->finished_at : "-", r->attempts,
                r->development ? "\n  development  yes (NON-PRODUCTION record)" : "");
        fprintf(f, "  debug port   %s\n  secure boot  %s\n  lifecycle    %s\n",
                r->debug_closed < 0 ? "unknown" : r->debug_closed ? "closed" : "OPEN",
                r->secure_boot < 0 ? "unknown" : r->secure_boot ? "enforced" : "NOT enforced",
                r->has_lifecycle ? r->lifecycle : "unknown");
        if (r->has_label_qr)
                fprintf(f, "  label QR     %s\n", r->label_qr);
}

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln trace ID --db FILE [--json]\n"
                   "\n"
                   "ID is a serial number, chip UID, MAC address or certificate serial.\n");
}

int station_cmd_trace(int argc, char **argv)
{
        static const struct option opts[] = {
                {"db", required_argument, NULL, 'd'},
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *db_path = NULL, *id = NULL;
        struct trace_ctx t;
        struct db *db = NULL;
        struct db_export_rec *rec = NULL;
        int64_t unit_id = 0;
        int c, r, status = 1;

        memset(&t, 0, sizeof(t));
        t.out = stdout;
        optind = 1;
        while ((c = getopt_long(argc, argv, "d:jh", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        db_path = optarg;
                        break;
                case 'j':
                        t.json = 1;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (db_path == NULL || optind != argc - 1) {
                usage(stderr);
                return 2;
        }
        id = argv[optind];
        if (access(db_path, R_OK) != 0) {
                fprintf(stderr, "kiln trace: cannot read database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        kiln_err_reset();
        kiln_buf_init(&t.buf, 64u << 20);
        kiln_buf_init(&t.cells, 16u << 20);
        rec = kiln_malloc(sizeof(*rec));
        if (rec == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        export_rec_init(rec);
        r = db_open(db_path, &db);
        if (r == KILN_OK)
                r = db_unit_lookup(db, id, &unit_id);
        if (r == KILN_OK)
                r = db_unit_export(db, unit_id, rec);
        if (r < 0)
                goto out;
        if (t.json) {
                json_init(&t.w, &t.buf);
                json_obj_begin(&t.w);
                json_key(&t.w, "record");
                {
                        struct kiln_buf recj;

                        kiln_buf_init(&recj, 1u << 20);
                        r = export_render_json(rec, &recj);
                        if (r == KILN_OK)
                                json_raw(&t.w, (const char *)recj.data, recj.len);
                        kiln_buf_free(&recj);
                }
                if (r == KILN_OK)
                        r = db_unit_history(db, unit_id, row, &t);
                if (r < 0)
                        goto out;
                if (t.section != NULL)
                        json_arr_end(&t.w);
                json_obj_end(&t.w);
                kiln_buf_put_u8(&t.buf, '\n');
                r = kiln_buf_error(&t.buf);
                if (r < 0)
                        goto out;
                fwrite(t.buf.data, 1, t.buf.len, stdout);
        } else {
                print_identity(stdout, rec);
                r = db_unit_history(db, unit_id, row, &t);
                if (r < 0)
                        goto out;
                section_flush(&t);
        }
        status = 0;
out:
        if (r < 0)
                fprintf(stderr, "kiln trace: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        if (rec != NULL) {
                export_rec_free(rec);
                kiln_free(rec);
        }
        kiln_buf_free(&t.buf);
        kiln_buf_free(&t.cells);
        db_close(db);
        return status;
}
