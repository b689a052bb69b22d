/*
 * kiln export: stream unit records as JSON Lines or RFC 4180 CSV, in constant memory (one record
 * buffer reused). Output to a file is written to a temporary name and renamed once complete, so a
 * reader never sees half an export.
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
#include "kiln/util.h"

enum export_format {
        FMT_JSONL,
        FMT_CSV
};

struct export_ctx {
        struct db *db;
        enum export_format fmt;
        FILE *out;
        struct db_export_rec rec;
        struct kiln_buf line;
        uint64_t count;
};

static int export_one(void *p, int64_t unit_id)
{
        struct export_ctx *x = p;
        int r;

        kiln_buf_clear(&x->line);
        r = db_unit_export(x->db, unit_id, &x->rec);
        if (r == KILN_OK)
                r = x->fmt == FMT_JSONL ? export_render_json(&x->rec, &x->line)
                                        : export_render_csv(&x->rec, &x->line);
        if (r == KILN_OK && x->fmt == FMT_JSONL)
                r = kiln_buf_put_u8(&x->line, '\n');
        if (r < 0)
                return r;
        if (fwrite(x->line.data, 1, x->line.len, x->out) != x->line.len)
                return kiln_fail(KILN_E_IO, "cannot write the export: %s", strerror(errno));
        x->count++;
        return KILN_OK;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln export --db FILE [--format jsonl|csv] [-o OUT]\n"
                   "                   [--work-order W] [--lot L] [--since T] [--until T]\n"
                   "                   [--verdict PASS|FAIL|LOCK_FAILED|SCRAP|IN_PROGRESS]\n"
                   "\n"
                   "Streams one record per unit. T is an ISO 8601 UTC time or date, compared with\n"
                   "the unit's start time (--since inclusive, --until exclusive).\n");
}

int station_cmd_export(int argc, char **argv)
{
        static const struct option opts[] = {
                {"db", required_argument, NULL, 'd'},
                {"format", required_argument, NULL, 'f'},
                {"output", required_argument, NULL, 'o'},
                {"work-order", required_argument, NULL, 'w'},
                {"lot", required_argument, NULL, 'l'},
                {"since", required_argument, NULL, 's'},
                {"until", required_argument, NULL, 'u'},
                {"verdict", required_argument, NULL, 'v'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        struct export_ctx x;
        struct db_export_filter flt = {.verdict = -1};
        const char *db_path = NULL, *out_path = NULL;
        char tmp[KILN_PATH_MAX];
        int c, r, status = 1;

        memset(&x, 0, sizeof(x));
        x.fmt = FMT_JSONL;
        tmp[0] = '\0';
        optind = 1;
        while ((c = getopt_long(argc, argv, "d:f:o:w:l:s:u:v:h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        db_path = optarg;
                        break;
                case 'f':
                        if (strcmp(optarg, "jsonl") == 0) {
                                x.fmt = FMT_JSONL;
                        } else if (strcmp(optarg, "csv") == 0) {
                                x.fmt = FMT_CSV;
                        } else {
                                fprintf(stderr, "kiln export: unknown format '%s' (jsonl or csv)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        out_path = optarg;
                        break;
                case 'w':
                        flt.work_order = optarg;
                        break;
                case 'l':
                        flt.lot = optarg;
                        break;
                case 's':
                        flt.since = optarg;
                        break;
                case 'u':
                        flt.until = optarg;
                        break;
                case 'v': {
                        enum db_verdict v;

                        if (db_verdict_parse(optarg, &v) < 0) {
                                fprintf(stderr, "kiln export: unknown verdict '%s'\n", optarg);
                                return 2;
                        }
                        flt.verdict = (int)v;
                        break;
                }
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (db_path == NULL || optind != argc) {
                usage(stderr);
                return 2;
        }
        if (access(db_path, R_OK) != 0) {
                fprintf(stderr, "kiln export: cannot read database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        export_rec_init(&x.rec);
        kiln_buf_init(&x.line, 1u << 20);
        kiln_err_reset();
        r = db_open(db_path, &x.db);
        if (r < 0)
                goto out;
        if (out_path != NULL) {
                if (kiln_snprintf(tmp, sizeof(tmp), "%s.partial", out_path) < 0) {
                        r = kiln_fail(KILN_E_RANGE, "output path too long");
                        goto out;
                }
                x.out = fopen(tmp, "w");
                if (x.out == NULL) {
                        r = kiln_fail(KILN_E_IO, "cannot create '%s': %s", tmp, strerror(errno));
                        tmp[0] = '\0';
                        goto out;
                }
        } else {
                x.out = stdout;
        }
        if (x.fmt == FMT_CSV) {
                r = export_render_csv_header(&x.line);
                if (r == KILN_OK && fwrite(x.line.data, 1, x.line.len, x.out) != x.line.len)
                        r = kiln_fail(KILN_E_IO, "cannot write the export: %s", strerror(errno));
                if (r < 0)
                        goto out;
        }
        r = db_export_each(x.db, &flt, export_one, &x);
        if (r < 0)
                goto out;
        if (fflush(x.out) != 0 || (x.out != stdout && fsync(fileno(x.out)) != 0)) {
                r = kiln_fail(KILN_E_IO, "cannot write the export: %s", strerror(errno));
                goto out;
        }
        if (x.out != stdout) {
                fclose(x.out);
                x.out = NULL;
                if (rename(tmp, out_path) != 0) {
                        r = kiln_fail(KILN_E_IO, "cannot rename '%s' to '%s': %s", tmp, out_path,
                                      strerror(errno));
                        goto out;
                }
                tmp[0] = '\0';
                fprintf(stderr, "kiln export: %llu records written to %s\n",
                        (unsigned long long)x.count, out_path);
        }
        status = 0;
out:
        if (status != 0)
                fprintf(stderr, "kiln export: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        if (x.out != NULL && x.out != stdout)
                fclose(x.out);
        if (tmp[0] != '\0')
                unlink(tmp);
        db_close(x.db);
        export_rec_free(&x.rec);
        kiln_buf_free(&x.line);
        return status;
}
