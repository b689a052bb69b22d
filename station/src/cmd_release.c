/* Recipe releases: kiln recipe release, and the station's check of a release (kiln/release.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/json.h"
#include "kiln/recipe.h"
#include "kiln/release.h"
#include "kiln/statement.h"
#include "kiln/station.h"
#include "kiln/util.h"

static int release_path(const char *recipe_path, char *out, size_t cap)
{
        if (kiln_snprintf(out, cap, "%s.release", recipe_path) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", recipe_path);
        return KILN_OK;
}

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln recipe release RECIPE --config CFG --key URI\n"
                   "\n"
                   "Signs the recipe's SHA-256 with the engineer's HSM key (a PKCS#11 URI; the\n"
                   "token and PIN source come from CFG) into RECIPE.release and RECIPE.release.sig.\n"
                   "A production station runs the recipe only when that release verifies with a\n"
                   "key in its authority.release_keys.\n");
}

int station_recipe_release(int argc, char **argv)
{
        static const struct option opts[] = {
                {"config", required_argument, NULL, 'c'},
                {"key", required_argument, NULL, 'k'},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        const char *cfg_path = NULL, *key = NULL, *recipe_path;
        struct yaml_doc_diags diags;
        struct station_config *cfg = NULL;
        struct recipe *rc = NULL;
        struct hsm_token *token = NULL;
        struct kiln_buf body;
        struct json_w w;
        char path[KILN_PATH_MAX], now[32];
        int c, r, status = 1;

        yaml_doc_diags_init(&diags);
        kiln_buf_init(&body, STATEMENT_MAX);
        optind = 1;
        while ((c = getopt_long(argc, argv, "c:k:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        cfg_path = optarg;
                        break;
                case 'k':
                        key = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (cfg_path == NULL || key == NULL || optind != argc - 1) {
                usage(stderr);
                return 2;
        }
        recipe_path = argv[optind];
        kiln_err_reset();
        r = recipe_load_file(recipe_path, 0, &diags, &rc);
        if (r < 0) {
                yaml_doc_diags_print(&diags, recipe_path, stderr);
                fprintf(stderr, "kiln recipe release: '%s' is not a valid recipe: not released\n",
                        recipe_path);
                status = 2;
                goto done;
        }
        r = station_config_load_file(cfg_path, &diags, &cfg);
        if (r < 0) {
                yaml_doc_diags_print(&diags, cfg_path, stderr);
                status = 2;
                goto done;
        }
        if (kiln_utc_iso8601(kiln_wall_ms(), now, sizeof(now)) < 0)
                now[0] = '\0';
        json_init(&w, &body);
        json_obj_begin(&w);
        json_kv_int(&w, "kiln_recipe_release", 1);
        json_kv_str(&w, "recipe_id", rc->id);
        json_kv_str(&w, "version", rc->version);
        json_kv_str(&w, "sha256", rc->sha256_hex);
        json_kv_str(&w, "released_at", now);
        json_kv_str(&w, "key", key);
        json_obj_end(&w);
        kiln_buf_put_u8(&body, '\n');
        r = kiln_buf_error(&body);
        if (r == KILN_OK)
                r = release_path(recipe_path, path, sizeof(path));
        if (r == KILN_OK)
                r = station_hsm_open(cfg, 1, &token);
        if (r == KILN_OK)
                r = statement_write(token, key, body.data, body.len, path);
        if (r < 0)
                goto out;
        printf("released %s version %s (sha256 %s): %s, %s.sig\n", rc->id, rc->version,
               rc->sha256_hex, path, path);
        status = 0;
out:
        if (r < 0)
                fprintf(stderr, "kiln recipe release: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
done:
        hsm_token_free(token);
        station_config_free(cfg);
        recipe_free(rc);
        yaml_doc_diags_free(&diags);
        kiln_buf_free(&body);
        return status;
}

int station_release_check(const struct station_config *cfg, const struct recipe *rc,
                          struct db *db, int *ret_released)
{
        struct statement st;
        char path[KILN_PATH_MAX], sha[80], id[KILN_RECIPE_ID_MAX + 1],
                version[KILN_RECIPE_VERSION_MAX + 1];
        int r;

        memset(&st, 0, sizeof(st));
        *ret_released = 0;
        r = release_path(rc->path, path, sizeof(path));
        if (r < 0)
                return r;
        if (cfg->authority.n_release_keys == 0)
                return kiln_fail(KILN_E_NOT_FOUND, "the configuration trusts no release key "
                                                   "(authority.release_keys)");
        r = statement_read(path, cfg->authority.release_keys, cfg->authority.n_release_keys, &st);
        if (r == KILN_E_NOT_FOUND) {
                kiln_err_reset();
                r = kiln_fail(KILN_E_NOT_FOUND, "recipe '%s' version %s is not released: no %s",
                              rc->id, rc->version, path);
        }
        if (r < 0)
                goto out;
        r = statement_field(&st, "sha256", sha, sizeof(sha));
        if (r == KILN_OK)
                r = statement_field(&st, "recipe_id", id, sizeof(id));
        if (r == KILN_OK)
                r = statement_field(&st, "version", version, sizeof(version));
        if (r < 0)
                goto out;
        /* the signature is good; it must be about these very bytes */
        if (strcmp(sha, rc->sha256_hex) != 0 || strcmp(id, rc->id) != 0 ||
            strcmp(version, rc->version) != 0) {
                r = kiln_fail(KILN_E_MISMATCH,
                              "the release %s is for recipe %s version %s (sha256 %.12s…), not "
                              "this file (sha256 %.12s…): the recipe changed after its release",
                              path, id, version, sha, rc->sha256_hex);
                goto out;
        }
        r = db_recipe_release(db, rc->sha256_hex, rc->id, rc->version, (const char *)st.body,
                              st.sig, st.sig_len);
        if (r == KILN_OK)
                *ret_released = 1;
out:
        statement_free(&st);
        return r;
}
