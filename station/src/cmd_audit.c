/*
 * kiln audit verify --db FILE [--audit-key PEM]: check the audit trail (kiln/audit.h); exit 0 when
 * intact, 1 naming the first problem.
 * kiln audit checkpoint --config FILE [--work-order W]: sign a checkpoint of the chain head now.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/audit.h"
#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/station.h"
#include "kiln/util.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln audit verify --db FILE [--audit-key PUBKEY.pem]\n"
                   "       kiln audit checkpoint --config FILE [--work-order W]\n"
                   "\n"
                   "verify recomputes the event hash chain, checks every unit record against its\n"
                   "last audited state and every signed checkpoint, and names the first problem.\n"
                   "Give --audit-key a trusted copy of the station's audit public key (kiln hsm\n"
                   "init-dev writes audit-pub.pem); without it the key recorded in the database\n"
                   "is used, which shows internal consistency only.\n");
}

static int cmd_verify(int argc, char **argv)
{
        static const struct option opts[] = {
                {"db", required_argument, NULL, 'd'},
                {"audit-key", required_argument, NULL, 'k'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *db_path = NULL, *key_path = NULL;
        uint8_t *pem = NULL;
        size_t pem_len = 0;
        struct db *db = NULL;
        struct audit_report rep;
        int c, r, status = 2;

        optind = 1;
        while ((c = getopt_long(argc, argv, "d:k:h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        db_path = optarg;
                        break;
                case 'k':
                        key_path = optarg;
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
        if (access(db_path, R_OK) != 0) {
                fprintf(stderr, "kiln audit: cannot read database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        kiln_err_reset();
        if (key_path != NULL) {
                r = kiln_file_read(key_path, 64u << 10, &pem, &pem_len);
                if (r < 0)
                        goto out;
        }
        r = db_open(db_path, &db);
        if (r == KILN_OK)
                r = audit_verify(db, (const char *)pem, &rep);
        if (r < 0)
                goto out;
        if (rep.ok) {
                printf("audit ok: %llu events, %llu units, %llu signed checkpoints; chain head %s\n",
                       (unsigned long long)rep.events, (unsigned long long)rep.units,
                       (unsigned long long)rep.checkpoints, rep.head);
                if (rep.checkpoints == 0)
                        printf("warning: no signed checkpoint: truncation of the log cannot be "
                               "detected\n");
                status = 0;
        } else {
                printf("audit FAILED: %s\n", rep.problem);
                status = 1;
        }
out:
        if (r < 0)
                fprintf(stderr, "kiln audit: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        db_close(db);
        kiln_free(pem);
        return status;
}

static int cmd_checkpoint(int argc, char **argv)
{
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"work-order", required_argument, NULL, 'w'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *cfg_path = NULL, *work_order = NULL;
        struct yaml_doc_diags diags;
        struct station_config *cfg = NULL;
        struct hsm_token *token = NULL;
        struct db *db = NULL;
        int c, r, status = 1;

        yaml_doc_diags_init(&diags);
        optind = 1;
        while ((c = getopt_long(argc, argv, "c:w:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        cfg_path = optarg;
                        break;
                case 'w':
                        work_order = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (cfg_path == NULL || optind != argc) {
                usage(stderr);
                return 2;
        }
        kiln_err_reset();
        r = station_config_load_file(cfg_path, &diags, &cfg);
        if (r < 0) {
                yaml_doc_diags_print(&diags, cfg_path, stderr);
                status = 2;
                goto out;
        }
        r = station_hsm_open(cfg, 1, &token);
        if (r == KILN_OK)
                r = db_open(cfg->database, &db);
        if (r == KILN_OK)
                r = audit_checkpoint(db, token, cfg->hsm.audit_key, work_order);
        if (r < 0)
                goto out;
        printf("checkpoint signed with %s\n", cfg->hsm.audit_key);
        status = 0;
out:
        if (r < 0 && status != 2)
                fprintf(stderr, "kiln audit: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        db_close(db);
        hsm_token_free(token);
        station_config_free(cfg);
        yaml_doc_diags_free(&diags);
        return status;
}

int station_cmd_audit(int argc, char **argv)
{
        if (argc >= 2 && strcmp(argv[1], "verify") == 0)
                return cmd_verify(argc - 1, argv + 1);
        if (argc >= 2 && strcmp(argv[1], "checkpoint") == 0)
                return cmd_checkpoint(argc - 1, argv + 1);
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
                usage(stdout);
                return 0;
        }
        usage(stderr);
        return 2;
}
