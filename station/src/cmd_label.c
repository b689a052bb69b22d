/*
 * kiln label: render one unit's label (ZPL or PNG) and send it to a file, a directory, a printer
 * device or a raw TCP printer port. Every print is recorded in the database; a reprint says so.
 * docs/labels.md is the operator's reference.
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
#include "kiln/label.h"
#include "kiln/util.h"

static void usage(FILE *f)
{
        fprintf(f,
                "usage: kiln label --db FILE (--serial S | --unit KEY) [--format zpl|png] -o OUT\n"
                "                  [--force]\n"
                "\n"
                "Renders the unit's label and sends it to OUT, recording the print (a second\n"
                "print of a unit is reported as a reprint). KEY is a serial, chip UID, MAC\n"
                "address or certificate serial. OUT is a file path, an existing directory (the\n"
                "file is SERIAL.zpl or SERIAL.png), a printer device such as /dev/usb/lp0, or\n"
                "tcp:HOST:PORT (raw printer port, usually 9100). The format defaults to zpl.\n"
                "--force prints a label for a unit that is not PASS, marked NOT PASS.\n");
}

int station_cmd_label(int argc, char **argv)
{
        static const struct option opts[] = {
            {"db", required_argument, NULL, 'd'},     {"serial", required_argument, NULL, 's'},
            {"unit", required_argument, NULL, 'u'},   {"format", required_argument, NULL, 'f'},
            {"output", required_argument, NULL, 'o'}, {"force", no_argument, NULL, 'F'},
            {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
        };
        enum station_label_format fmt = STATION_LABEL_ZPL;
        const char *db_path = NULL, *serial = NULL, *key = NULL, *out_spec = NULL;
        struct label_target *target = NULL;
        struct db_export_rec *rec = NULL;
        struct db *db = NULL;
        unsigned flags = 0, count = 0;
        int64_t unit_id = 0;
        int c, r, status = 1;

        optind = 1;
        opterr = 0; /* one line of our own instead of getopt's */
        while ((c = getopt_long(argc, argv, ":d:s:u:f:o:h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        db_path = optarg;
                        break;
                case 's':
                        serial = optarg;
                        break;
                case 'u':
                        key = optarg;
                        break;
                case 'f':
                        if (strcmp(optarg, "zpl") == 0) {
                                fmt = STATION_LABEL_ZPL;
                        } else if (strcmp(optarg, "png") == 0) {
                                fmt = STATION_LABEL_PNG;
                        } else {
                                fprintf(stderr, "kiln label: unknown format '%s' (zpl or png)\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'o':
                        out_spec = optarg;
                        break;
                case 'F':
                        flags |= LABEL_FORCE;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case ':':
                        fprintf(stderr,
                                "kiln label: option '%s' needs a value (kiln label --help)\n",
                                argv[optind - 1]);
                        return 2;
                default:
                        fprintf(stderr, "kiln label: unknown option '%s' (kiln label --help)\n",
                                argv[optind - 1]);
                        return 2;
                }
        }
        if (optind != argc) {
                fprintf(stderr, "kiln label: unexpected argument '%s' (kiln label --help)\n",
                        argv[optind]);
                return 2;
        }
        if (db_path == NULL || out_spec == NULL || (serial == NULL) == (key == NULL)) {
                fprintf(stderr, "kiln label: --db, -o and one of --serial or --unit are needed "
                                "(kiln label --help)\n");
                return 2;
        }
        if ((serial != NULL && serial[0] == '\0') || (key != NULL && key[0] == '\0')) {
                fprintf(stderr, "kiln label: empty unit %s\n", serial != NULL ? "serial" : "key");
                return 2;
        }
        /* db_open would create a missing database: a mistyped path must not */
        if (access(db_path, R_OK | W_OK) != 0) {
                fprintf(stderr, "kiln label: cannot use database '%s': %s\n", db_path,
                        strerror(errno));
                return 2;
        }
        kiln_err_reset();
        target = kiln_calloc(1, sizeof(*target));
        rec = kiln_calloc(1, sizeof(*rec));
        if (target == NULL || rec == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "out of memory");
                goto out;
        }
        export_rec_init(rec);
        r = label_target_parse(out_spec, target);
        if (r < 0) {
                status = 2;
                goto out;
        }
        r = db_open(db_path, &db);
        if (r < 0)
                goto out;

        /* the unit: --serial must name it by its serial, --unit by any identifier */
        r = db_unit_lookup(db, serial != NULL ? serial : key, &unit_id);
        if (r == KILN_OK)
                r = db_unit_export(db, unit_id, rec);
        if (r == KILN_OK && serial != NULL && strcmp(rec->serial, serial) != 0)
                r = KILN_E_NOT_FOUND;
        if (r == KILN_E_NOT_FOUND || r == KILN_E_MISMATCH) {
                if (r == KILN_E_NOT_FOUND) {
                        kiln_err_reset();
                        if (serial != NULL)
                                kiln_fail(r, "no unit has serial '%s'", serial);
                        else
                                kiln_fail(r,
                                          "no unit has serial, chip UID, MAC or certificate "
                                          "serial '%s'",
                                          key);
                }
                status = 2;
                goto out;
        }
        if (r < 0)
                goto out;
        if (strcmp(rec->verdict, "PASS") != 0 && (flags & LABEL_FORCE))
                fprintf(stderr,
                        "kiln label: warning: unit %s is %s: the label is marked NOT PASS\n",
                        rec->serial, rec->verdict);

        r = label_print_unit(db, unit_id, target, fmt, flags, &count);
        if (r < 0)
                goto out;
        if (count > 1)
                printf("kiln label: %s -> %s: label printed (reprint #%u)\n", rec->serial,
                       target->spec, count);
        else
                printf("kiln label: %s -> %s: label printed\n", rec->serial, target->spec);
        status = 0;
out:
        if (status != 0)
                fprintf(stderr, "kiln label: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        db_close(db);
        if (rec != NULL) {
                export_rec_free(rec);
                kiln_free(rec);
        }
        kiln_free(target);
        return status;
}
