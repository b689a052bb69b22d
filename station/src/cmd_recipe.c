/*
 * kiln recipe: check recipes and station configurations, and preview what a recipe renders.
 *
 *   kiln recipe check [--config CFG]... [FILE]...
 *       Every problem of every file, one per line as FILE:LINE:COLUMN: message, on stdout; a
 *       valid file gets one "FILE: ok (...)" line. Exit 0 when all are valid, 1 when any is
 *       invalid, 2 on a usage error or a file that cannot be read.
 *
 *   kiln recipe render FILE [--seq N] [--uid HEX] [--station ID] [--date YYYY-MM-DD]
 *       What the recipe would give one unit: serial, MAC addresses, certificate subjects and
 *       names, data objects, fuse values and label text. For engineers writing a recipe; it
 *       touches no device, HSM or database.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/recipe.h"
#include "kiln/release.h"
#include "kiln/util.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln recipe check [--config CFG]... [FILE]...\n"
                   "       kiln recipe render FILE [--seq N] [--uid HEX] [--station ID]\n"
                   "                               [--date YYYY-MM-DD]\n"
                   "       kiln recipe release FILE --config CFG --key URI\n"
                   "\n"
                   "check   report every problem of each recipe FILE and station configuration\n"
                   "        CFG as FILE:LINE:COLUMN: message; exit 0 when all are valid, 1 when\n"
                   "        any is not, 2 on usage errors or unreadable files\n"
                   "render  show what a recipe renders for one unit (serial, MACs, certificate\n"
                   "        subjects, objects, fuses, label), touching no device or HSM\n"
                   "release sign the recipe's SHA-256 with an engineer's HSM key: production\n"
                   "        stations run only released recipes\n");
}

/* 0 valid, 1 invalid, 2 unreadable */
static int check_recipe(const char *path)
{
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        int rc, status;

        yaml_doc_diags_init(&d);
        kiln_err_reset();
        rc = recipe_load_file(path, 0, &d, &r);
        if (rc == KILN_OK) {
                printf("%s: ok (recipe %s version %s, sha256 %s)\n", path, r->id, r->version,
                       r->sha256_hex);
                status = 0;
        } else if (rc == KILN_E_RECIPE || rc == KILN_E_RECIPE_TOO_LARGE) {
                yaml_doc_diags_sort(&d);
                yaml_doc_diags_print(&d, path, stdout);
                status = 1;
        } else {
                fprintf(stderr, "kiln recipe: %s: %s\n", path,
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(rc));
                status = 2;
        }
        recipe_free(r);
        yaml_doc_diags_free(&d);
        return status;
}

static int check_config(const char *path)
{
        struct yaml_doc_diags d;
        struct station_config *cfg = NULL;
        int rc, status;

        yaml_doc_diags_init(&d);
        kiln_err_reset();
        rc = station_config_load_file(path, &d, &cfg);
        if (rc == KILN_OK) {
                printf("%s: ok (station %s, %s mode, %u slot%s, sha256 %s)\n", path,
                       cfg->station_id, station_mode_name(cfg->mode), cfg->n_slots,
                       cfg->n_slots == 1 ? "" : "s", cfg->sha256_hex);
                status = 0;
        } else if (rc == KILN_E_CONFIG) {
                yaml_doc_diags_sort(&d);
                yaml_doc_diags_print(&d, path, stdout);
                status = 1;
        } else {
                fprintf(stderr, "kiln recipe: %s: %s\n", path,
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(rc));
                status = 2;
        }
        station_config_free(cfg);
        yaml_doc_diags_free(&d);
        return status;
}

static int cmd_check(int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        const char *configs[64];
        unsigned n_configs = 0;
        int c, worst = 0, files = 0;

        optind = 1;
        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        if (n_configs == sizeof(configs) / sizeof(configs[0])) {
                                fprintf(stderr, "kiln recipe check: too many --config files\n");
                                return 2;
                        }
                        configs[n_configs++] = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        for (unsigned i = 0; i < n_configs; i++, files++) {
                int s = check_config(configs[i]);

                worst = s > worst ? s : worst;
        }
        for (int i = optind; i < argc; i++, files++) {
                int s = check_recipe(argv[i]);

                worst = s > worst ? s : worst;
        }
        if (files == 0) {
                usage(stderr);
                return 2;
        }
        fflush(stdout);
        return worst;
}

/* ---------------------------------------------------------------- render */

static void show(const char *what, const struct recipe_tmpl *t, const struct recipe_values *v)
{
        char buf[KILN_RECIPE_RENDER_MAX + 1];
        size_t len;

        if (recipe_tmpl_render(t, v, buf, sizeof(buf), &len) < 0) {
                printf("%s: (cannot render: %s)\n", what, kiln_err_detail());
                return;
        }
        /* object templates may span lines: indent continuation lines */
        printf("%s: ", what);
        for (size_t i = 0; i < len; i++) {
                putchar(buf[i]);
                if (buf[i] == '\n' && i + 1 < len)
                        printf("    ");
        }
        if (len == 0 || buf[len - 1] != '\n')
                putchar('\n');
}

static int parse_date_ms(const char *s, int64_t *ret)
{
        unsigned v[3] = {0, 0, 0};
        int64_t days, yy, era, yoe, doy;

        if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
                return KILN_E_SYNTAX;
        for (unsigned i = 0, f = 0; i < 10; i++) {
                if (i == 4 || i == 7) {
                        f++;
                        continue;
                }
                if (s[i] < '0' || s[i] > '9')
                        return KILN_E_SYNTAX;
                v[f] = v[f] * 10 + (unsigned)(s[i] - '0');
        }
        if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31)
                return KILN_E_SYNTAX;
        /* days from civil (H. Hinnant) */
        yy = (int64_t)v[0] - (v[1] <= 2);
        era = yy / 400;
        yoe = yy - era * 400;
        doy = (153 * (v[1] > 2 ? v[1] - 3 : v[1] + 9) + 2) / 5 + v[2] - 1;
        days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
        *ret = days * 86400000;
        return KILN_OK;
}

static void render_recipe(const struct recipe *r, const struct recipe_values *base)
{
        struct recipe_values v = *base;
        char serial[KILN_SERIAL_MAX + 1], what[96], mac[RECIPE_MAC_STR];
        uint64_t macs[KILN_MACS_PER_UNIT_MAX];

        if (recipe_serial_render(r, base->seq, base, serial, sizeof(serial)) < 0) {
                printf("serial: (cannot render: %s)\n", kiln_err_detail());
                return;
        }
        v.serial = serial;
        printf("serial: %s\n", serial);
        if (r->mac.enabled) {
                /* the pool hands out per_unit consecutive addresses in sequence order */
                uint64_t first = r->mac.first + (base->seq - r->serial.start) * r->mac.per_unit;

                for (unsigned i = 0; i < r->mac.per_unit; i++) {
                        macs[i] = first + i;
                        recipe_mac_format(macs[i], mac);
                        printf("mac%u: %s%s\n", i, mac,
                               macs[i] > r->mac.last ? " (past the end of the pool)" : "");
                }
                v.macs = macs;
                v.n_macs = r->mac.per_unit;
        }
        for (unsigned k = 0; k < r->n_keys; k++) {
                const struct recipe_key *key = &r->keys[k];

                printf("key %s: slot %u, ecdsa-p256%s\n", key->name, key->slot,
                       key->attest ? ", attested" : "");
                if (!key->has_cert)
                        continue;
                for (unsigned i = 0; i < key->cert.n_subject; i++) {
                        snprintf(what, sizeof(what), "  subject %s",
                                 recipe_rdn_name(key->cert.subject[i].type));
                        show(what, &key->cert.subject[i].value, &v);
                }
                for (unsigned i = 0; i < key->cert.n_san; i++) {
                        static const char *const st[] = {"dns", "uri", "email", "ip"};
                        const struct recipe_san *san = &key->cert.san[i];

                        snprintf(what, sizeof(what), "  san %s", st[san->type]);
                        if (san->type == RECIPE_SAN_IP)
                                printf("%s: (%u-byte address)\n", what, san->ip_len);
                        else
                                show(what, &san->value, &v);
                }
                for (unsigned i = 0; i < key->cert.n_ext; i++) {
                        const struct recipe_ext *e = &key->cert.ext[i];

                        snprintf(what, sizeof(what), "  extension %s%s", e->oid,
                                 e->critical ? " (critical)" : "");
                        if (e->is_der)
                                printf("%s: %zu bytes of DER\n", what, e->der_len);
                        else
                                show(what, &e->utf8, &v);
                }
                printf("  written to object %s%s%s\n", key->cert.object,
                       key->cert.chain_object[0] ? ", chain to " : "", key->cert.chain_object);
        }
        for (unsigned i = 0; i < r->n_creds; i++)
                printf("credential %s: %u %s, object %s (secret), commitment %s\n",
                       r->creds[i].name, r->creds[i].length,
                       r->creds[i].kind == RECIPE_CRED_PASSWORD ? "characters" : "random bytes",
                       r->creds[i].object,
                       r->creds[i].commitment == RECIPE_COMMIT_HMAC ? "hmac" : "salted_sha256");
        for (unsigned i = 0; i < r->n_objects; i++) {
                const struct recipe_object *o = &r->objects[i];

                snprintf(what, sizeof(what), "object %s", o->name);
                if (o->from_file)
                        printf("%s: file %s, %zu bytes\n", what, o->path, o->len);
                else
                        show(what, &o->content, &v);
        }
        if (r->firmware.present)
                printf("firmware: %s, %zu bytes, object %s\n", r->firmware.path, r->firmware.len,
                       r->firmware.object);
        for (unsigned i = 0; i < r->n_fuses; i++) {
                const struct recipe_fuse *f = &r->fuses[i];
                uint8_t val[KILN_FUSE_BYTES_MAX];
                char hex[2 * KILN_FUSE_BYTES_MAX + 1];
                size_t len;

                if (recipe_fuse_value(f, &v, val, &len) < 0) {
                        printf("fuse %s: (cannot render: %s)\n", f->field, kiln_err_detail());
                        continue;
                }
                kiln_hex_encode(val, len, hex, sizeof(hex));
                printf("fuse %s %s: 0x%s, verify %s\n", recipe_phase_name(f->phase), f->field, hex,
                       recipe_verify_name(f->verify));
        }
        if (r->lifecycle_final)
                printf("lifecycle: production\n");
        for (unsigned i = 0; i < r->label.n_fields; i++) {
                snprintf(what, sizeof(what), "label line %u", i + 1);
                show(what, &r->label.fields[i], &v);
        }
        if (r->label.has_qr)
                show("label qr", &r->label.qr, &v);
        if (r->label.has_gs1)
                printf("label gs1: %s/01/%s/21/%s\n", r->label.gs1_base, r->label.gtin, serial);
}

static int cmd_render(int argc, char **argv)
{
        static const struct option opts[] = {
            {"seq", required_argument, NULL, 's'},     {"uid", required_argument, NULL, 'u'},
            {"station", required_argument, NULL, 't'}, {"date", required_argument, NULL, 'd'},
            {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
        };
        struct recipe_values v;
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        uint8_t uid[KILN_UID_MAX] = {0x4b, 0x49, 0x4c, 0x4e, 0x00, 0x00, 0x00, 0x01};
        int seq_given = 0, c, rc, status = 2;

        memset(&v, 0, sizeof(v));
        v.chip_uid = uid;
        v.chip_uid_len = 8;
        v.station = "station-1";
        v.time_ms = kiln_wall_ms();
        yaml_doc_diags_init(&d);
        optind = 1;
        while ((c = getopt_long(argc, argv, "s:u:t:d:h", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        if (kiln_parse_u64(optarg, 0, INT64_MAX, &v.seq) < 0) {
                                fprintf(stderr, "kiln recipe render: bad --seq '%s'\n", optarg);
                                goto out;
                        }
                        seq_given = 1;
                        break;
                case 'u':
                        if (kiln_hex_decode(optarg, uid, sizeof(uid), &v.chip_uid_len) < 0 ||
                            v.chip_uid_len == 0) {
                                fprintf(stderr,
                                        "kiln recipe render: --uid takes 1..%u bytes in "
                                        "hex\n",
                                        (unsigned)KILN_UID_MAX);
                                goto out;
                        }
                        break;
                case 't':
                        v.station = optarg;
                        break;
                case 'd':
                        if (parse_date_ms(optarg, &v.time_ms) < 0) {
                                fprintf(stderr, "kiln recipe render: --date takes YYYY-MM-DD\n");
                                goto out;
                        }
                        break;
                case 'h':
                        usage(stdout);
                        status = 0;
                        goto out;
                default:
                        usage(stderr);
                        goto out;
                }
        }
        if (optind + 1 != argc) {
                usage(stderr);
                goto out;
        }
        kiln_err_reset();
        rc = recipe_load_file(argv[optind], 0, &d, &r);
        if (rc == KILN_E_RECIPE || rc == KILN_E_RECIPE_TOO_LARGE) {
                yaml_doc_diags_sort(&d);
                yaml_doc_diags_print(&d, argv[optind], stdout);
                status = 1;
                goto out;
        }
        if (rc < 0) {
                fprintf(stderr, "kiln recipe: %s: %s\n", argv[optind],
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(rc));
                goto out;
        }
        if (!seq_given)
                v.seq = r->serial.start;
        render_recipe(r, &v);
        status = 0;
out:
        recipe_free(r);
        yaml_doc_diags_free(&d);
        return status;
}

int station_cmd_recipe(int argc, char **argv)
{
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
                usage(stdout);
                return 0;
        }
        if (strcmp(argv[1], "check") == 0)
                return cmd_check(argc - 1, argv + 1);
        if (strcmp(argv[1], "render") == 0)
                return cmd_render(argc - 1, argv + 1);
        if (strcmp(argv[1], "release") == 0)
                return station_recipe_release(argc - 1, argv + 1);
        fprintf(stderr, "kiln recipe: unknown subcommand '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
