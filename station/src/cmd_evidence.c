/* kiln evidence --db FILE --work-order W --format json|md [-o OUT]: the compliance evidence pack. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kiln/cli.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/evidence.h"
#include "kiln/util.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln evidence --db FILE --work-order W [--format json|md] [-o OUT]\n"
                   "\n"
                   "The per-lot compliance evidence pack: the security-readiness checklist filled\n"
                   "from what the station measured on every unit and the recipe's declarations,\n"
                   "mapped to ETSI EN 303 645, EN 18031-1, the CRA and the Cyber Trust Mark.\n");
}

int station_cmd_evidence(int argc, char **argv)
{
        static const struct option opts[] = {
                {"db", required_argument, NULL, 'd'},
                {"work-order", required_argument, NULL, 'w'},
                {"format", required_argument, NULL, 'f'},
                {"output", required_argument, NULL, 'o'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *db_path = NULL, *wo = NULL, *out_path = NULL;
        enum evidence_format fmt = EVIDENCE_MD;
        struct kiln_buf out;
        struct db *db = NULL;
        int c, r, status = 1;

        optind = 1;
        while ((c = getopt_long(argc, argv, "d:w:f:o:h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        db_path = optarg;
                        break;
                case 'w':
                        wo = optarg;
                        break;
                case 'f':
                        if (strcmp(optarg, "json") == 0) {
                                fmt = EVIDENCE_JSON;
                        } else if (strcmp(optarg, "md") == 0) {
                                fmt = EVIDENCE_MD;
                        } else {
                                fprintf(stderr, "kiln evidence: unknown format '%s' (json or md)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        out_path = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (db_path == NULL || wo == NULL || optind != argc) {
                usage(stderr);
                return 2;
        }
        if (access(db_path, R_OK) != 0) {
                fprintf(stderr, "kiln evidence: cannot read database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        kiln_err_reset();
        kiln_buf_init(&out, 64u << 20);
        r = db_open(db_path, &db);
        if (r == KILN_OK)
                r = evidence_build(db, wo, fmt, &out);
        if (r < 0)
                goto out;
        if (out_path != NULL) {
                r = kiln_file_write_atomic(out_path, out.data, out.len, 0644);
                if (r < 0)
                        goto out;
        } else if (fwrite(out.data, 1, out.len, stdout) != out.len) {
                r = kiln_fail(KILN_E_IO, "cannot write: %s", strerror(errno));
                goto out;
        }
        status = 0;
out:
        if (r < 0)
                fprintf(stderr, "kiln evidence: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        db_close(db);
        kiln_buf_free(&out);
        return status;
}
