/*
 * kiln export: stream unit records as JSON Lines or RFC 4180 CSV, in constant memory (one record
 * and one output line reused). Output to a file is written to a temporary name and renamed once complete, so a
 * reader never sees half an export.
 */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "kiln/audit.h"
#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/hsm.h"
#include "kiln/json.h"
#include "kiln/station.h"
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
        struct export_renderer render;
        struct kiln_buf line;
        uint64_t count;
        EVP_MD_CTX *md;      /* SHA-256 of every byte written, for the manifest */
        char first_started[32];
        char last_started[32];
};

static int export_write(struct export_ctx *x, const void *p, size_t n)
{
        if (fwrite(p, 1, n, x->out) != n)
                return kiln_fail(KILN_E_IO, "cannot write the export: %s", strerror(errno));
        if (x->md != NULL && !EVP_DigestUpdate(x->md, p, n))
                return kiln_fail(KILN_E_CRYPTO, "cannot hash the export");
        return KILN_OK;
}

#define EXPORT_OUT_BUF (256u << 10)
#define EXPORT_PIPE_SZ (1u << 20)

/*
 * Write in large blocks: a record is ~5 KB, and stdio's default block for a pipe is 4 KiB, so every
 * record cost a write(2) and woke the reader. Into a pipe, ask for a 1 MiB pipe too (best effort:
 * the system's pipe-max-size may refuse), so the reader wakes once per megabyte, not per page.
 */
static void export_out_setup(FILE *out)
{
        struct stat st;

        setvbuf(out, NULL, _IOFBF, EXPORT_OUT_BUF);
        if (fstat(fileno(out), &st) == 0 && S_ISFIFO(st.st_mode))
                (void)fcntl(fileno(out), F_SETPIPE_SZ, (int)EXPORT_PIPE_SZ);
}

static int export_one(void *p, const struct db_export_rec *rec)
{
        struct export_ctx *x = p;
        int r;

        kiln_buf_clear(&x->line);
        r = x->fmt == FMT_JSONL ? export_renderer_json(&x->render, rec, &x->line)
                                : export_renderer_csv(&x->render, rec, &x->line);
        if (r == KILN_OK && x->fmt == FMT_JSONL)
                r = kiln_buf_put_u8(&x->line, '\n');
        if (r < 0)
                return r;
        r = export_write(x, x->line.data, x->line.len);
        if (r < 0)
                return r;
        if (x->first_started[0] == '\0' || strcmp(rec->started_at, x->first_started) < 0)
                kiln_strlcpy(x->first_started, rec->started_at, sizeof(x->first_started));
        if (strcmp(rec->started_at, x->last_started) > 0)
                kiln_strlcpy(x->last_started, rec->started_at, sizeof(x->last_started));
        x->count++;
        return KILN_OK;
}

struct manifest_args {
        const char *path;
        const char *export_path;
        const char *cfg_path;
        const struct db_export_filter *flt;
        const char *format;
};

struct sign_ctx {
        struct hsm_key *key;
};

/*
 * The manifest: what was exported, how much, under which filter, and the audit chain head at the
 * time, signed with the station's HSM audit key into MANIFEST.sig (DER ECDSA over the manifest's
 * exact bytes), so `openssl dgst -sha256 -verify audit-pub.pem -signature M.sig M` checks it.
 */
static int write_manifest(struct export_ctx *x, const struct manifest_args *m)
{
        struct yaml_doc_diags diags;
        struct station_config *cfg = NULL;
        struct hsm_token *token = NULL;
        struct sign_ctx sc = {.key = NULL};
        struct kiln_buf body, sigpath;
        struct json_w w;
        uint8_t md[32], sig[512];
        size_t sig_len = 0;
        char hex[65], head[65], now[32];
        const char *base;
        int64_t seq = 0;
        int r;

        yaml_doc_diags_init(&diags);
        kiln_buf_init(&body, 64u << 10);
        kiln_buf_init(&sigpath, KILN_PATH_MAX);
        if (!EVP_DigestFinal_ex(x->md, md, NULL)) {
                r = kiln_fail(KILN_E_CRYPTO, "cannot hash the export");
                goto out;
        }
        kiln_hex_encode(md, sizeof(md), hex, sizeof(hex));
        r = station_config_load_file(m->cfg_path, &diags, &cfg);
        if (r < 0) {
                yaml_doc_diags_print(&diags, m->cfg_path, stderr);
                goto out;
        }
        r = station_hsm_open(cfg, 1, &token);
        if (r == KILN_OK)
                r = hsm_key_find(token, cfg->hsm.audit_key, HSM_USE_SIGN, &sc.key);
        if (r == KILN_OK)
                r = db_event_head(x->db, &seq, head);
        if (r < 0)
                goto out;
        if (kiln_utc_iso8601(kiln_wall_ms(), now, sizeof(now)) < 0)
                now[0] = '\0';
        base = strrchr(m->export_path, '/');
        base = base ? base + 1 : m->export_path;
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_int(&w, "kiln_export_manifest", 1);
        json_kv_str(&w, "file", base);
        json_kv_str(&w, "format", m->format);
        json_kv_str(&w, "sha256", hex);
        json_key(&w, "records");
        json_uint(&w, x->count);
        json_key(&w, "filter");
        json_obj_begin(&w);
        json_kv_str(&w, "work_order", m->flt->work_order);
        json_kv_str(&w, "lot", m->flt->lot);
        json_kv_str(&w, "since", m->flt->since);
        json_kv_str(&w, "until", m->flt->until);
        json_kv_str(&w, "verdict",
                    m->flt->verdict >= 0 ? db_verdict_name((enum db_verdict)m->flt->verdict)
                                         : NULL);
        json_obj_end(&w);
        json_key(&w, "time_range");
        json_obj_begin(&w);
        json_kv_str(&w, "first_started_at", x->count ? x->first_started : NULL);
        json_kv_str(&w, "last_started_at", x->count ? x->last_started : NULL);
        json_obj_end(&w);
        json_key(&w, "audit_head");
        json_obj_begin(&w);
        json_kv_int(&w, "seq", seq);
        json_kv_str(&w, "hash", head);
        json_obj_end(&w);
        json_kv_str(&w, "station_id", cfg->station_id);
        json_kv_str(&w, "created_at", now);
        json_kv_str(&w, "signed_with", cfg->hsm.audit_key);
        json_kv_str(&w, "signature", "ECDSA-SHA256 (DER) in the .sig file next to this one");
        json_obj_end(&w);
        kiln_buf_put_u8(&body, '\n');
        r = kiln_buf_error(&body);
        if (r == KILN_OK)
                r = hsm_key_sign(sc.key, body.data, body.len, sig, sizeof(sig), &sig_len);
        if (r == KILN_OK)
                r = kiln_file_write_atomic(m->path, body.data, body.len, 0644);
        kiln_buf_printf(&sigpath, "%s.sig", m->path);
        if (r == KILN_OK)
                r = kiln_buf_error(&sigpath);
        if (r == KILN_OK)
                r = kiln_file_write_atomic(kiln_buf_cstr(&sigpath), sig, sig_len, 0644);
        if (r == KILN_OK)
                fprintf(stderr, "kiln export: manifest %s, signature %s\n", m->path,
                        kiln_buf_cstr(&sigpath));
out:
        hsm_key_free(sc.key);
        hsm_token_free(token);
        station_config_free(cfg);
        yaml_doc_diags_free(&diags);
        kiln_buf_free(&body);
        kiln_buf_free(&sigpath);
        return r;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln export --db FILE [--format jsonl|csv] [-o OUT]\n"
                   "                   [--work-order W] [--lot L] [--since T] [--until T]\n"
                   "                   [--verdict PASS|FAIL|LOCK_FAILED|SCRAP|IN_PROGRESS]\n"
                   "                   [--manifest MANIFEST --config STATION.yaml]\n"
                   "\n"
                   "Streams one record per unit. T is an ISO 8601 UTC time or date, compared with\n"
                   "the unit's start time (--since inclusive, --until exclusive). --manifest (needs\n"
                   "-o) writes a JSON manifest of the export and MANIFEST.sig, signed with the\n"
                   "station's HSM audit key; docs/quality.md shows how to verify them.\n");
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
                {"manifest", required_argument, NULL, 'm'},
                {"config", required_argument, NULL, 'c'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        struct export_ctx x;
        struct db_export_filter flt = {.verdict = -1};
        const char *db_path = NULL, *out_path = NULL, *manifest = NULL, *cfg_path = NULL;
        char tmp[KILN_PATH_MAX];
        int c, r, status = 1;

        memset(&x, 0, sizeof(x));
        x.fmt = FMT_JSONL;
        tmp[0] = '\0';
        optind = 1;
        while ((c = getopt_long(argc, argv, "d:f:o:w:l:s:u:v:m:c:h", opts, NULL)) != -1) {
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
                case 'm':
                        manifest = optarg;
                        break;
                case 'c':
                        cfg_path = optarg;
                        break;
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
        if (manifest != NULL && (out_path == NULL || cfg_path == NULL)) {
                fprintf(stderr, "kiln export: --manifest needs -o OUT (the file it describes) and "
                                "--config (the station whose audit key signs it)\n");
                return 2;
        }
        if (access(db_path, R_OK) != 0) {
                fprintf(stderr, "kiln export: cannot read database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        export_renderer_init(&x.render);
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
        export_out_setup(x.out);
        if (manifest != NULL) {
                x.md = EVP_MD_CTX_new();
                if (x.md == NULL || !EVP_DigestInit_ex(x.md, EVP_sha256(), NULL)) {
                        r = kiln_fail(KILN_E_CRYPTO, "cannot hash the export");
                        goto out;
                }
        }
        if (x.fmt == FMT_CSV) {
                r = export_render_csv_header(&x.line);
                if (r == KILN_OK)
                        r = export_write(&x, x.line.data, x.line.len);
                if (r < 0)
                        goto out;
        }
        r = db_export_records(x.db, &flt, export_one, &x);
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
        if (manifest != NULL) {
                struct manifest_args ma = {.path = manifest,
                                           .export_path = out_path,
                                           .cfg_path = cfg_path,
                                           .flt = &flt,
                                           .format = x.fmt == FMT_CSV ? "csv" : "jsonl"};

                r = write_manifest(&x, &ma);
                if (r < 0)
                        goto out;
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
        export_renderer_free(&x.render);
        kiln_buf_free(&x.line);
        EVP_MD_CTX_free(x.md);
        return status;
}
