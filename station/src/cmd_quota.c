/*
 * kiln quota: work order quotas (overproduction protection).
 *
 *   kiln quota show --db FILE --work-order W
 *   kiln quota authorize --config CFG --key URI --work-order W --quota N -o AUTH
 *       the PKI officer signs "work order W may produce N units" with their HSM key: AUTH and
 *       AUTH.sig (a signed statement, kiln/statement.h)
 *   kiln quota raise --config CFG --authorization AUTH
 *       a station applies it: the signature must verify with a key in its authority.quota_keys,
 *       the quota only goes up, and one authorisation is applied once; audited
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/rand.h>

#include "kiln/cli.h"
#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/json.h"
#include "kiln/statement.h"
#include "kiln/station.h"
#include "kiln/util.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln quota show --db FILE --work-order W\n"
                   "       kiln quota authorize --config CFG --key URI --work-order W --quota N "
                   "-o AUTH\n"
                   "       kiln quota raise --config CFG --authorization AUTH\n"
                   "\n"
                   "A work order's quota is how many units it may produce: certificates are issued\n"
                   "only while quota remains. Raising it needs an authorisation signed by the PKI\n"
                   "officer's key (authorize), which a station verifies against the keys in its\n"
                   "authority.quota_keys before applying it (raise).\n");
}

struct qopts {
        const char *db, *cfg, *key, *wo, *out, *auth;
        uint32_t quota;
};

static int parse(int argc, char **argv, struct qopts *o)
{
        static const struct option opts[] = {
                {"db", required_argument, NULL, 'd'},
                {"config", required_argument, NULL, 'c'},
                {"key", required_argument, NULL, 'k'},
                {"work-order", required_argument, NULL, 'w'},
                {"quota", required_argument, NULL, 'q'},
                {"output", required_argument, NULL, 'o'},
                {"authorization", required_argument, NULL, 'a'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        int c;

        memset(o, 0, sizeof(*o));
        optind = 1;
        while ((c = getopt_long(argc, argv, "d:c:k:w:q:o:a:h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        o->db = optarg;
                        break;
                case 'c':
                        o->cfg = optarg;
                        break;
                case 'k':
                        o->key = optarg;
                        break;
                case 'w':
                        o->wo = optarg;
                        break;
                case 'q':
                        if (kiln_parse_u32(optarg, 1, KILN_RECIPE_QUOTA_MAX, &o->quota) < 0) {
                                fprintf(stderr, "kiln quota: --quota takes 1..%u\n",
                                        KILN_RECIPE_QUOTA_MAX);
                                return 2;
                        }
                        break;
                case 'o':
                        o->out = optarg;
                        break;
                case 'a':
                        o->auth = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 1;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind != argc) {
                usage(stderr);
                return 2;
        }
        return 0;
}

static int fail(const char *what, int r)
{
        fprintf(stderr, "kiln quota %s: %s\n", what,
                kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        return 1;
}

static int cmd_show(const struct qopts *o)
{
        struct db *db = NULL;
        struct db_work_order wo;
        int r;

        if (o->db == NULL || o->wo == NULL) {
                usage(stderr);
                return 2;
        }
        r = db_open(o->db, &db);
        if (r == KILN_OK)
                r = db_work_order_get(db, o->wo, &wo);
        db_close(db);
        if (r < 0)
                return fail("show", r);
        printf("work order %s (lot %s): quota %u, %u consumed, %u reserved, %u left\n", wo.id,
               wo.lot, wo.quota, wo.consumed, wo.reserved, wo.quota - wo.consumed - wo.reserved);
        return 0;
}

static int load_cfg(const char *path, struct station_config **ret)
{
        struct yaml_doc_diags diags;
        int r;

        yaml_doc_diags_init(&diags);
        r = station_config_load_file(path, &diags, ret);
        if (r < 0)
                yaml_doc_diags_print(&diags, path, stderr);
        yaml_doc_diags_free(&diags);
        return r;
}

static int cmd_authorize(const struct qopts *o)
{
        struct station_config *cfg = NULL;
        struct hsm_token *token = NULL;
        struct kiln_buf body;
        struct json_w w;
        uint8_t nonce[16];
        char nonce_hex[33], now[32];
        int r, status = 1;

        if (o->cfg == NULL || o->key == NULL || o->wo == NULL || o->quota == 0 || o->out == NULL) {
                usage(stderr);
                return 2;
        }
        kiln_buf_init(&body, STATEMENT_MAX);
        r = load_cfg(o->cfg, &cfg);
        if (r < 0) {
                status = 2;
                goto out;
        }
        if (RAND_bytes(nonce, sizeof(nonce)) != 1) {
                r = kiln_fail(KILN_E_CRYPTO, "no random bytes");
                goto fail;
        }
        kiln_hex_encode(nonce, sizeof(nonce), nonce_hex, sizeof(nonce_hex));
        if (kiln_utc_iso8601(kiln_wall_ms(), now, sizeof(now)) < 0)
                now[0] = '\0';
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_int(&w, "kiln_quota_authorization", 1);
        json_kv_str(&w, "work_order", o->wo);
        json_kv_int(&w, "quota", o->quota);
        json_kv_str(&w, "nonce", nonce_hex);
        json_kv_str(&w, "issued_at", now);
        json_kv_str(&w, "key", o->key);
        json_obj_end(&w);
        kiln_buf_put_u8(&body, '\n');
        r = kiln_buf_error(&body);
        if (r == KILN_OK)
                r = station_hsm_open(cfg, 1, &token);
        if (r == KILN_OK)
                r = statement_write(token, o->key, body.data, body.len, o->out);
        if (r < 0)
                goto fail;
        printf("authorisation: work order %s may produce %u units: %s, %s.sig\n", o->wo, o->quota,
               o->out, o->out);
        status = 0;
        goto out;
fail:
        status = fail("authorize", r);
out:
        hsm_token_free(token);
        station_config_free(cfg);
        kiln_buf_free(&body);
        return status;
}

static int cmd_raise(const struct qopts *o)
{
        struct station_config *cfg = NULL;
        struct statement st;
        struct db *db = NULL;
        char wo[DB_TEXT_MAX], q[24];
        uint32_t quota = 0, old = 0;
        int r, status = 1;

        memset(&st, 0, sizeof(st));
        if (o->cfg == NULL || o->auth == NULL) {
                usage(stderr);
                return 2;
        }
        r = load_cfg(o->cfg, &cfg);
        if (r < 0) {
                status = 2;
                goto out;
        }
        if (cfg->authority.n_quota_keys == 0) {
                r = kiln_fail(KILN_E_PERM, "this station trusts no quota key "
                                           "(authority.quota_keys): it cannot raise a quota");
                goto fail;
        }
        r = statement_read(o->auth, cfg->authority.quota_keys, cfg->authority.n_quota_keys, &st);
        if (r == KILN_OK)
                r = statement_field(&st, "work_order", wo, sizeof(wo));
        if (r == KILN_OK)
                r = statement_field(&st, "quota", q, sizeof(q));
        if (r == KILN_OK && kiln_parse_u32(q, 1, KILN_RECIPE_QUOTA_MAX, &quota) < 0)
                r = kiln_fail(KILN_E_SYNTAX, "authorisation quota '%s' is not a number", q);
        if (r == KILN_OK)
                r = db_open(cfg->database, &db);
        if (r == KILN_OK)
                r = db_work_order_raise(db, wo, quota, (const char *)st.body, st.sig, st.sig_len,
                                        &old);
        if (r < 0)
                goto fail;
        printf("work order %s: quota raised from %u to %u\n", wo, old, quota);
        status = 0;
        goto out;
fail:
        status = fail("raise", r);
out:
        statement_free(&st);
        db_close(db);
        station_config_free(cfg);
        return status;
}

int station_cmd_quota(int argc, char **argv)
{
        struct qopts o;
        int r;

        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                usage(stdout);
                return 0;
        }
        r = parse(argc - 1, argv + 1, &o);
        if (r != 0)
                return r == 1 ? 0 : r;
        kiln_err_reset();
        if (strcmp(argv[1], "show") == 0)
                return cmd_show(&o);
        if (strcmp(argv[1], "authorize") == 0)
                return cmd_authorize(&o);
        if (strcmp(argv[1], "raise") == 0)
                return cmd_raise(&o);
        fprintf(stderr, "kiln quota: unknown subcommand '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
