/*
 * The label library (station/src/label.c) on crafted records and recipe variants: ZPL structure
 * and escaping, PNG previews whose every QR code zbarimg decodes to the exact payload, the GS1
 * Digital Link URI and its percent-encoding, what every label must carry, the refusals, output
 * target parsing, and sending to a TCP listener, a device node and a directory.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/export.h"
#include "kiln/label.h"
#include "kiln/recipe.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"
#include "label_test.h"

#define GTIN "09506000134352"
#define QR_URL "https://registry.ctm.example/product/smartplug-a1?sn=SPA1-2610-000042"

/* ---------------------------------------------------------------- fixtures */

/* An example recipe (recipes/FILE) with `from` replaced by `to` (first occurrence), loaded. */
static struct recipe *recipe_of(const char *file, const char *from, const char *to)
{
        char path[4200];
        struct yaml_doc_diags diags;
        struct recipe *r = NULL;
        char *text, *out, *at;
        size_t len, n, tl = to != NULL ? strlen(to) : 0;

        snprintf(path, sizeof(path), "%s/recipes/%s", lt_source_dir(), file);
        text = lt_read(path, &len);
        out = malloc(len + tl + 1);
        assert_non_null(out);
        if (from == NULL) {
                memcpy(out, text, len + 1);
        } else {
                at = strstr(text, from);
                if (at == NULL)
                        fail_msg("recipes/%s no longer contains '%s'", file, from);
                n = (size_t)(at - text);
                /* text up to FROM, then TO, then the rest after FROM with its terminator */
                memcpy(out, text, n);
                if (tl > 0)
                        memcpy(out + n, to, tl);
                memcpy(out + n + tl, at + strlen(from), len - n - strlen(from) + 1);
        }
        yaml_doc_diags_init(&diags);
        if (recipe_load_mem("variant", NULL, (const uint8_t *)out, strlen(out),
                            RECIPE_LOAD_NO_FILES, &diags, &r) != KILN_OK) {
                yaml_doc_diags_print(&diags, "variant", stderr);
                fail_msg("recipe variant does not load");
        }
        yaml_doc_diags_free(&diags);
        free(text);
        free(out);
        return r;
}

static struct recipe *recipe_variant(const char *from, const char *to)
{
        return recipe_of("smartplug-ctm.yaml", from, to);
}

/* The smartplug recipe without its label section (the last section of the file). */
static struct recipe *recipe_without_label(void)
{
        char path[4200];
        struct yaml_doc_diags diags;
        struct recipe *r = NULL;
        char *text, *at;

        snprintf(path, sizeof(path), "%s/recipes/smartplug-ctm.yaml", lt_source_dir());
        text = lt_read(path, NULL);
        at = strstr(text, "\nlabel:");
        assert_non_null(at);
        at[1] = '\0';
        yaml_doc_diags_init(&diags);
        assert_int_equal(recipe_load_mem("nolabel", NULL, (const uint8_t *)text, strlen(text),
                                         RECIPE_LOAD_NO_FILES, &diags, &r),
                         KILN_OK);
        yaml_doc_diags_free(&diags);
        free(text);
        return r;
}

/* A PASS record of unit SPA1-2610-000042 of recipe r, finished 2026-03-05, two MACs. */
static struct db_export_rec *record(const struct recipe *r)
{
        struct db_export_rec *rec = calloc(1, sizeof(*rec));

        assert_non_null(rec);
        export_rec_init(rec);
        rec->id = 42;
        snprintf(rec->serial, sizeof(rec->serial), "SPA1-2610-000042");
        snprintf(rec->chip_uid, sizeof(rec->chip_uid), "a1b2c3d4e5f60718");
        snprintf(rec->macs[0], sizeof(rec->macs[0]), "02:00:5e:00:00:2a");
        snprintf(rec->macs[1], sizeof(rec->macs[1]), "02:00:5e:00:00:2b");
        rec->n_macs = 2;
        snprintf(rec->verdict, sizeof(rec->verdict), "PASS");
        snprintf(rec->station_id, sizeof(rec->station_id), "st-1");
        snprintf(rec->recipe_sha256, sizeof(rec->recipe_sha256), "%s", r->sha256_hex);
        snprintf(rec->product_id, sizeof(rec->product_id), "smartplug-a1");
        snprintf(rec->started_at, sizeof(rec->started_at), "2026-03-05T10:11:02.000Z");
        snprintf(rec->finished_at, sizeof(rec->finished_at), "2026-03-05T10:11:12.000Z");
        rec->has_finished_at = 1;
        snprintf(rec->label_qr, sizeof(rec->label_qr), "%s", QR_URL);
        rec->has_label_qr = 1;
        return rec;
}

static void record_free(struct db_export_rec *rec)
{
        export_rec_free(rec);
        free(rec);
}

/* Render as ZPL into a NUL-terminated heap string; asserts success. */
static char *zpl(const struct recipe *r, const struct db_export_rec *rec, unsigned flags)
{
        struct kiln_buf b;
        char *s;

        kiln_buf_init(&b, LABEL_ZPL_MAX);
        kiln_err_reset();
        if (label_render(r, rec, STATION_LABEL_ZPL, flags, &b) != KILN_OK)
                fail_msg("label_render: %s", kiln_err_detail());
        s = strdup(kiln_buf_cstr(&b));
        assert_non_null(s);
        kiln_buf_free(&b);
        return s;
}

/* Render as PNG into dir/name; asserts success. */
static void png(const struct recipe *r, const struct db_export_rec *rec, unsigned flags,
                const char *path)
{
        struct kiln_buf b;
        FILE *f;

        kiln_buf_init(&b, LABEL_PNG_MAX);
        kiln_err_reset();
        if (label_render(r, rec, STATION_LABEL_PNG, flags, &b) != KILN_OK)
                fail_msg("label_render: %s", kiln_err_detail());
        f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
        fclose(f);
        kiln_buf_free(&b);
}

static void assert_contains(const char *hay, const char *needle)
{
        if (strstr(hay, needle) == NULL)
                fail_msg("'%s' not found in:\n%s", needle, hay);
}

static void assert_lacks(const char *hay, const char *needle)
{
        if (strstr(hay, needle) != NULL)
                fail_msg("'%s' unexpectedly found in:\n%s", needle, hay);
}

/*
 * Every '^' starts a command this renderer writes, and no '~' (control command prefix) appears:
 * nothing from the record or recipe was taken for a command.
 */
static void assert_zpl_commands_only(const char *z)
{
        static const char *const cmds[] = {"XA", "XZ", "FX", "CI", "PW", "LL", "LH",
                                           "FO", "A0", "FD", "FS", "FH", "BQ"};

        assert_null(strchr(z, '~'));
        for (const char *p = strchr(z, '^'); p != NULL; p = strchr(p + 1, '^')) {
                unsigned k;

                for (k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++)
                        if (strncmp(p + 1, cmds[k], 2) == 0)
                                break;
                if (k == sizeof(cmds) / sizeof(cmds[0]))
                        fail_msg("stray '^' in ZPL at '%.20s'", p);
        }
}

/* ---------------------------------------------------------------- rendering */

static void test_zpl_structure(void **state)
{
        struct recipe *r = recipe_variant(NULL, NULL);
        struct db_export_rec *rec = record(r);
        char *z;
        size_t n;

        (void)state;
        z = zpl(r, rec, 0);
        n = strlen(z);
        assert_true(n > 8);
        assert_memory_equal(z, "^XA\n", 4);
        assert_string_equal(z + n - 4, "^XZ\n");
        assert_contains(z, "^CI28\n");
        assert_contains(z, "^PW406\n^LL203\n");
        /* QR: model 2, error correction M, data with the "MA," prefix, the exact payload */
        assert_contains(z, "^BQN,2,");
        assert_contains(z, ",M,7^FDMA," QR_URL "^FS\n");
        /* the recipe's lines, rendered with the unit's values and its finish date */
        assert_contains(z, "^A0N,");
        assert_contains(z, "^FDAcme Smart Plug^FS");
        assert_contains(z, "^FDModel SP-A1^FS");
        assert_contains(z, "^FDS/N SPA1-2610-000042^FS");
        assert_contains(z, "^FDMade 2026-03^FS");
        /* the MACs the recipe's lines do not show are added; no date line (the lines have one) */
        assert_contains(z, "^FDMAC 02:00:5e:00:00:2a^FS");
        assert_contains(z, "^FDMAC 02:00:5e:00:00:2b^FS");
        assert_lacks(z, "^FDDate");
        assert_lacks(z, "^FH");
        assert_lacks(z, "NOT PASS");
        assert_zpl_commands_only(z);
        free(z);
        record_free(rec);
        recipe_free(r);
}

static void test_utf8_text(void **state)
{
        struct recipe *r = recipe_variant("name: Acme Smart Plug", "name: Acme Stecker \u00fc");
        struct db_export_rec *rec = record(r);
        struct kiln_buf b;
        char *z;

        (void)state;
        /* UTF-8 passes as it is under ^CI28: no escape needed */
        z = zpl(r, rec, 0);
        assert_contains(z, "^FDAcme Stecker \xc3\xbc^FS");
        assert_lacks(z, "^FH");
        free(z);
        /* the preview draws it (as '?'); an output buffer too small is refused untouched */
        kiln_buf_init(&b, 64);
        assert_int_equal(label_render(r, rec, STATION_LABEL_PNG, 0, &b), KILN_E_LIMIT);
        assert_int_equal(b.len, 0);
        assert_int_equal(kiln_buf_error(&b), KILN_OK);
        kiln_buf_free(&b);
        record_free(rec);
        recipe_free(r);
}

static void test_png_decodes(void **state)
{
        struct recipe *r = recipe_variant(NULL, NULL);
        struct db_export_rec *rec = record(r);
        const char *want[] = {QR_URL};
        char dir[4300], path[4400];
        uint8_t *data;
        size_t len;

        (void)state;
        lt_tmpdir("lib-png", dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/plug.png", dir);
        png(r, rec, 0, path);
        data = (uint8_t *)lt_read(path, &len);
        /* PNG signature, then IHDR: the label's size in dots, 1-bit grayscale */
        assert_true(len > 33);
        assert_memory_equal(data, "\x89PNG\r\n\x1a\n", 8);
        assert_memory_equal(data + 12, "IHDR", 4);
        assert_memory_equal(data + 16, "\x00\x00\x01\x96\x00\x00\x00\xcb\x01\x00", 10);
        free(data);
        lt_assert_qr(path, want, 1);
        record_free(rec);
        recipe_free(r);
}

static void test_zpl_escapes_special_characters(void **state)
{
        struct recipe *r = recipe_variant("    - \"S/N {serial}\"\n    - \"Made {yyyy}-{mm}\"\n",
                                          "    - \"Lot ^A~B_C {yyyy}\"\n");
        struct db_export_rec *rec = record(r);
        const char *payload = "https://x.example/p?a=^~_b";
        const char *want[] = {payload};
        char dir[4300], path[4400], *z;

        (void)state;
        /*
         * Hostile record values (the database may have been edited). The recipe's lines do not
         * show the serial, so the label's own "S/N" line carries it as recorded.
         */
        snprintf(rec->serial, sizeof(rec->serial), "A^B~C_D");
        snprintf(rec->label_qr, sizeof(rec->label_qr), "%s", payload);
        z = zpl(r, rec, 0);
        assert_contains(z, "^FH_^FDS/N A_5EB_7EC_5FD^FS\n");
        assert_contains(z, "^FH_^FDLot _5EA_7EB_5FC 2026^FS\n");
        assert_contains(z, "^FH_^FDMA,https://x.example/p?a=_5E_7E_5Fb^FS\n");
        /* lines without special characters stay plain */
        assert_contains(z, "\n^FO");
        assert_contains(z, "^FDAcme Smart Plug^FS");
        assert_zpl_commands_only(z);
        free(z);

        /* the preview's QR code carries the raw bytes */
        lt_tmpdir("lib-escape", dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/escape.png", dir);
        png(r, rec, 0, path);
        lt_assert_qr(path, want, 1);
        record_free(rec);
        recipe_free(r);
}

static void test_control_bytes_escaped(void **state)
{
        struct recipe *r = recipe_variant("    - \"S/N {serial}\"\n", "");
        struct db_export_rec *rec = record(r);
        char *z;

        (void)state;
        snprintf(rec->serial, sizeof(rec->serial), "SN\r\n^XZ");
        z = zpl(r, rec, 0);
        assert_contains(z, "^FH_^FDS/N SN_0D_0A_5EXZ^FS\n");
        assert_zpl_commands_only(z);
        /* exactly one end of format, at the end */
        assert_ptr_equal(strstr(z, "^XZ"), z + strlen(z) - 4);
        free(z);

        record_free(rec);
        recipe_free(r);

        /* through the recipe's {serial} such a serial is refused, not printed */
        r = recipe_variant(NULL, NULL);
        rec = record(r);
        snprintf(rec->serial, sizeof(rec->serial), "SN^XZ");
        {
                struct kiln_buf b;

                kiln_buf_init(&b, LABEL_ZPL_MAX);
                kiln_err_reset();
                assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_INVAL);
                assert_non_null(strstr(kiln_err_detail(), "serial"));
                assert_int_equal(b.len, 0);
                kiln_buf_free(&b);
        }
        record_free(rec);
        recipe_free(r);
}

static void test_gs1_digital_link(void **state)
{
        struct recipe *r = recipe_variant("  size:\n", "  gs1: {gtin: \"" GTIN "\"}\n  size:\n");
        struct db_export_rec *rec = record(r);
        const char *gs1 = "https://id.gs1.org/01/" GTIN "/21/SN%2F1.a_b-c";
        const char *want[] = {QR_URL, gs1};
        char dir[4300], path[4400], field[256], *z, *first, *second;

        (void)state;
        assert_true(r->label.has_gs1);
        /* '/' is the one serial character (A-Za-z0-9._/-) a Digital Link percent-encodes */
        snprintf(rec->serial, sizeof(rec->serial), "SN/1.a_b-c");
        z = zpl(r, rec, 0);
        snprintf(field, sizeof(field), "^FDMA,%s^FS\n", gs1);
        assert_contains(z, field);
        /* registry code first (left), GS1 code second (at the right edge) */
        first = strstr(z, "^FDMA," QR_URL);
        second = strstr(z, field);
        assert_non_null(first);
        assert_true(first < second);
        free(z);

        lt_tmpdir("lib-gs1", dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/gs1.png", dir);
        png(r, rec, 0, path);
        lt_assert_qr(path, want, 2);

        /* a serial GS1 AI 21 cannot carry (21 characters) is refused */
        snprintf(rec->serial, sizeof(rec->serial), "SPA1-2610-00000000042");
        {
                struct kiln_buf b;

                kiln_buf_init(&b, LABEL_ZPL_MAX);
                kiln_err_reset();
                assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_INVAL);
                assert_non_null(strstr(kiln_err_detail(), "GS1 AI 21"));
                assert_int_equal(b.len, 0);
                kiln_buf_free(&b);
        }
        record_free(rec);
        recipe_free(r);
}

static void test_gs1_uri(void **state)
{
        char out[128], small[40];

        (void)state;
        assert_int_equal(label_gs1_uri("https://id.gs1.org", GTIN, "ABC-123", out, sizeof(out)),
                         KILN_OK);
        assert_string_equal(out, "https://id.gs1.org/01/" GTIN "/21/ABC-123");
        /* trailing slashes of the base go; every CSET 82 character outside A-Z a-z 0-9 - . _
         * is percent-encoded with uppercase hex */
        assert_int_equal(
            label_gs1_uri("https://r.example/dl/", GTIN, "!\"%&'()*+,/:;<=>?", out, sizeof(out)),
            KILN_OK);
        assert_string_equal(out, "https://r.example/dl/01/" GTIN
                                 "/21/%21%22%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3C%3D%3E%3F");
        /* 20 characters fit AI 21, 21 do not; nor empty, nor outside CSET 82 */
        assert_int_equal(
            label_gs1_uri("https://a.example", GTIN, "ABCDEFGHIJ0123456789", out, sizeof(out)),
            KILN_OK);
        assert_int_equal(
            label_gs1_uri("https://a.example", GTIN, "ABCDEFGHIJ0123456789X", out, sizeof(out)),
            KILN_E_INVAL);
        assert_int_equal(label_gs1_uri("https://a.example", GTIN, "", out, sizeof(out)),
                         KILN_E_INVAL);
        assert_int_equal(label_gs1_uri("https://a.example", GTIN, "A~B", out, sizeof(out)),
                         KILN_E_INVAL);
        assert_int_equal(label_gs1_uri("https://a.example", GTIN, "A B", out, sizeof(out)),
                         KILN_E_INVAL);
        assert_int_equal(label_gs1_uri("https://a.example", "9506000134352", "A", out, sizeof(out)),
                         KILN_E_INVAL);
        assert_int_equal(label_gs1_uri("/", GTIN, "A", out, sizeof(out)), KILN_E_INVAL);
        /* the output bound: exactly fitting, one byte short */
        assert_int_equal(label_gs1_uri("https://x.ex.io", GTIN, "AB", small, 40), KILN_OK);
        assert_int_equal(strlen(small), 39);
        assert_int_equal(label_gs1_uri("https://x.ex.io", GTIN, "ABC", small, 40), KILN_E_RANGE);
}

static void test_required_content_added(void **state)
{
        struct recipe *r = recipe_variant("    - \"Model {model}\"\n    - \"S/N {serial}\"\n"
                                          "    - \"Made {yyyy}-{mm}\"\n",
                                          "    - \"Plug\"\n");
        struct db_export_rec *rec = record(r);
        char *z, *a, *b, *c, *d;

        (void)state;
        z = zpl(r, rec, 0);
        /* model, serial, MACs and date added below the recipe's lines, in that order */
        a = strstr(z, "^FDModel SP-A1^FS");
        b = strstr(z, "^FDS/N SPA1-2610-000042^FS");
        c = strstr(z, "^FDMAC 02:00:5e:00:00:2a^FS");
        d = strstr(z, "^FDDate 2026-03-05^FS");
        assert_non_null(a);
        assert_true(a < b && b < c && c < d);
        assert_true(strstr(z, "^FDPlug^FS") < a);
        free(z);
        record_free(rec);
        recipe_free(r);
}

static void test_mac_shown_by_recipe_not_repeated(void **state)
{
        struct recipe *r =
            recipe_of("gateway-industrial.yaml", "\"MAC {mac0}\"", "\"ID {mac0:hex}\"");
        struct db_export_rec *rec = record(r);
        char *z;

        (void)state;
        snprintf(rec->serial, sizeof(rec->serial), "GWG2-2603-0000042");
        z = zpl(r, rec, 0);
        /* the first MAC is on the recipe's line (hex form): only the second is added */
        assert_contains(z, "^FDID 02005e00002a^FS");
        assert_lacks(z, "MAC 02:00:5e:00:00:2a");
        assert_contains(z, "^FDMAC 02:00:5e:00:00:2b^FS");
        assert_contains(z, "^PW609\n^LL300\n");
        assert_contains(z, "^FDMA,https://id.gs1.org/01/" GTIN "/21/GWG2-2603-0000042^FS");
        free(z);
        record_free(rec);
        recipe_free(r);
}

static void test_qr_rendered_when_not_recorded(void **state)
{
        struct recipe *r = recipe_variant(NULL, NULL);
        struct db_export_rec *rec = record(r);
        char *z;

        (void)state;
        rec->has_label_qr = 0;
        rec->label_qr[0] = '\0';
        snprintf(rec->serial, sizeof(rec->serial), "SPA1-2610-000077");
        z = zpl(r, rec, 0);
        assert_contains(z, "^FDMA,https://registry.ctm.example/product/smartplug-a1?sn="
                           "SPA1-2610-000077^FS");
        free(z);
        record_free(rec);
        recipe_free(r);
}

/* ---------------------------------------------------------------- refusals */

static void test_refuses_unit_not_pass(void **state)
{
        struct recipe *r = recipe_variant(NULL, NULL);
        struct db_export_rec *rec = record(r);
        struct kiln_buf b;
        char dir[4300], path[4400], *z;
        const char *want[] = {QR_URL};

        (void)state;
        kiln_buf_init(&b, LABEL_ZPL_MAX);
        assert_int_equal(kiln_buf_put_str(&b, "keep"), KILN_OK);
        snprintf(rec->verdict, sizeof(rec->verdict), "FAIL");
        kiln_err_reset();
        assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_PERM);
        assert_non_null(strstr(kiln_err_detail(), "is FAIL, not PASS"));
        /* out unchanged on failure */
        assert_int_equal(b.len, 4);
        kiln_buf_free(&b);

        /* forced: rendered, its first line says it is not a PASS unit */
        z = zpl(r, rec, LABEL_FORCE);
        assert_non_null(strstr(z, "^FDNOT PASS - FAIL^FS"));
        assert_true(strstr(z, "^FDNOT PASS - FAIL^FS") < strstr(z, "^FDAcme Smart Plug^FS"));
        free(z);

        /* an unfinished unit: forced, dated by its start */
        snprintf(rec->verdict, sizeof(rec->verdict), "IN_PROGRESS");
        rec->has_finished_at = 0;
        rec->finished_at[0] = '\0';
        snprintf(rec->started_at, sizeof(rec->started_at), "2025-12-31T23:59:59.999Z");
        z = zpl(r, rec, LABEL_FORCE);
        assert_contains(z, "^FDNOT PASS - IN_PROGRESS^FS");
        assert_contains(z, "^FDMade 2025-12^FS");
        free(z);
        lt_tmpdir("lib-force", dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/forced.png", dir);
        png(r, rec, LABEL_FORCE, path);
        lt_assert_qr(path, want, 1);
        record_free(rec);
        recipe_free(r);
}

static void test_refuses_recipe_without_label(void **state)
{
        struct recipe *r = recipe_without_label();
        struct db_export_rec *rec = record(r);
        struct kiln_buf b;

        (void)state;
        assert_false(r->label.present);
        kiln_buf_init(&b, LABEL_PNG_MAX);
        kiln_err_reset();
        assert_int_equal(label_render(r, rec, STATION_LABEL_PNG, LABEL_FORCE, &b),
                         KILN_E_NOT_FOUND);
        assert_non_null(strstr(kiln_err_detail(), "has no label section"));
        assert_int_equal(b.len, 0);
        kiln_buf_free(&b);
        record_free(rec);
        recipe_free(r);
}

static void test_refuses_label_too_small(void **state)
{
        struct recipe *r = recipe_variant("width: 406", "width: 120");
        struct db_export_rec *rec = record(r);
        struct kiln_buf b;

        (void)state;
        kiln_buf_init(&b, LABEL_ZPL_MAX);
        kiln_err_reset();
        assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_RANGE);
        assert_non_null(strstr(kiln_err_detail(), "too small"));
        kiln_buf_free(&b);
        record_free(rec);
        recipe_free(r);
}

static void test_refuses_malformed_record(void **state)
{
        struct recipe *r = recipe_variant(NULL, NULL);
        struct db_export_rec *rec = record(r);
        struct kiln_buf b;

        (void)state;
        kiln_buf_init(&b, LABEL_ZPL_MAX);
        snprintf(rec->macs[1], sizeof(rec->macs[1]), "02:00:5e:00:00");
        kiln_err_reset();
        assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_INVAL);
        assert_non_null(strstr(kiln_err_detail(), "malformed MAC"));
        snprintf(rec->macs[1], sizeof(rec->macs[1]), "02:00:5e:00:00:2b");
        snprintf(rec->finished_at, sizeof(rec->finished_at), "2026-13-05T10:11:12Z");
        kiln_err_reset();
        assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_INVAL);
        assert_non_null(strstr(kiln_err_detail(), "malformed time"));
        snprintf(rec->finished_at, sizeof(rec->finished_at), "2026-03-05T10:11:12Z");
        rec->serial[0] = '\0';
        assert_int_equal(label_render(r, rec, STATION_LABEL_ZPL, 0, &b), KILN_E_INVAL);
        assert_int_equal(label_render(r, rec, STATION_LABEL_FORMAT_MAX, 0, &b), KILN_E_INVAL);
        assert_int_equal(b.len, 0);
        kiln_buf_free(&b);
        record_free(rec);
        recipe_free(r);
}

static void test_format_names(void **state)
{
        enum station_label_format f = STATION_LABEL_FORMAT_MAX;

        (void)state;
        assert_string_equal(label_format_name(STATION_LABEL_ZPL), "zpl");
        assert_string_equal(label_format_name(STATION_LABEL_PNG), "png");
        assert_null(label_format_name(STATION_LABEL_FORMAT_MAX));
        assert_int_equal(label_format_parse("png", &f), KILN_OK);
        assert_int_equal(f, STATION_LABEL_PNG);
        assert_int_equal(label_format_parse("ZPL", &f), KILN_E_INVAL);
        assert_int_equal(f, STATION_LABEL_PNG);
}

/* ---------------------------------------------------------------- targets and sending */

static void test_target_parse(void **state)
{
        struct label_target t;
        char dir[4300], path[4400], fifo[4400];

        (void)state;
        lt_tmpdir("lib-target", dir, sizeof(dir));
        assert_int_equal(label_target_parse("tcp:127.0.0.1:9100", &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_TCP);
        assert_string_equal(t.host, "127.0.0.1");
        assert_int_equal(t.port, 9100);
        assert_string_equal(t.spec, "tcp:127.0.0.1:9100");
        assert_int_equal(label_target_parse("tcp:printer-3.line.example:65535", &t), KILN_OK);
        assert_string_equal(t.host, "printer-3.line.example");
        assert_int_equal(t.port, 65535);
        assert_int_equal(label_target_parse("tcp:[::1]:9100", &t), KILN_OK);
        assert_string_equal(t.host, "::1");
        assert_int_equal(t.port, 9100);
        memset(&t, 0x5a, sizeof(t));
        assert_int_equal(label_target_parse("tcp:127.0.0.1", &t), KILN_E_INVAL);
        assert_int_equal(t.kind, 0x5a5a5a5a); /* untouched on failure */
        assert_int_equal(label_target_parse("tcp:127.0.0.1:0", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("tcp:127.0.0.1:65536", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("tcp:127.0.0.1:91x", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("tcp::9100", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("tcp:::1:9100", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("tcp:a b:9100", &t), KILN_E_INVAL);
        assert_int_equal(label_target_parse("", &t), KILN_E_INVAL);

        assert_int_equal(label_target_parse(dir, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_DIR);
        assert_int_equal(label_target_parse("/dev/null", &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_DEVICE);
        snprintf(path, sizeof(path), "%s/new.zpl", dir);
        assert_int_equal(label_target_parse(path, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_FILE);
        assert_string_equal(t.path, path);
        snprintf(path, sizeof(path), "file:%s/new.zpl", dir);
        assert_int_equal(label_target_parse(path, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_FILE);
        assert_string_equal(t.path, path + 5);
        assert_string_equal(t.spec, path);
        snprintf(path, sizeof(path), "%s/no-such-dir/new.zpl", dir);
        assert_int_equal(label_target_parse(path, &t), KILN_E_INVAL);
        /* a mistyped device is never created as a file under /dev */
        kiln_err_reset();
        assert_int_equal(label_target_parse("/dev/kiln-no-such-printer", &t), KILN_E_INVAL);
        assert_non_null(strstr(kiln_err_detail(), "does not exist"));
        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(label_target_parse(fifo, &t), KILN_E_INVAL);
}

static void test_target_from_printer(void **state)
{
        struct station_printer p = {
            .kind = STATION_PRINTER_FILE, .spec = "file:labels", .target = "/var/lib/kiln/labels"};
        struct label_target t;

        (void)state;
        assert_int_equal(label_target_from_printer(&p, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_DIR);
        assert_string_equal(t.path, "/var/lib/kiln/labels");
        assert_string_equal(t.spec, "file:labels");
        p.kind = STATION_PRINTER_TCP;
        p.spec = "tcp:zebra-1:9100";
        p.target = "zebra-1";
        p.port = 9100;
        assert_int_equal(label_target_from_printer(&p, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_TCP);
        assert_string_equal(t.host, "zebra-1");
        assert_int_equal(t.port, 9100);
        p.port = 0;
        assert_int_equal(label_target_from_printer(&p, &t), KILN_E_INVAL);
        p.kind = STATION_PRINTER_DEVICE;
        p.spec = "/dev/usb/lp0";
        p.target = "/dev/usb/lp0";
        assert_int_equal(label_target_from_printer(&p, &t), KILN_OK);
        assert_int_equal(t.kind, LABEL_TARGET_DEVICE);
        assert_string_equal(t.path, "/dev/usb/lp0");
}

static void test_send_tcp(void **state)
{
        struct lt_listener l;
        struct label_target t;
        char spec[64];
        uint8_t *data;
        size_t len = 300000; /* larger than socket buffers: partial writes and waits happen */

        (void)state;
        data = malloc(len);
        assert_non_null(data);
        for (size_t i = 0; i < len; i++)
                data[i] = (uint8_t)(i * 7 + i / 251);
        lt_listener_start(&l);
        snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", l.port);
        assert_int_equal(label_target_parse(spec, &t), KILN_OK);
        kiln_err_reset();
        if (label_target_send(&t, NULL, data, len) != KILN_OK)
                fail_msg("send: %s", kiln_err_detail());
        lt_listener_join(&l);
        assert_true(l.ok);
        assert_int_equal(l.len, len);
        assert_memory_equal(l.data, data, len);
        lt_listener_free(&l);

        /* nobody listening: a clear error naming the printer */
        snprintf(spec, sizeof(spec), "tcp:127.0.0.1:%u", lt_closed_port());
        assert_int_equal(label_target_parse(spec, &t), KILN_OK);
        kiln_err_reset();
        assert_int_equal(label_target_send(&t, NULL, data, 10), KILN_E_IO);
        assert_non_null(strstr(kiln_err_detail(), "cannot connect"));
        assert_non_null(strstr(kiln_err_detail(), spec));
        free(data);
}

static void test_send_device_file_and_dir(void **state)
{
        struct label_target t;
        char dir[4300], path[4400], *got;
        static const uint8_t zpl_bytes[] = "^XA^FDx^FS^XZ\n";
        size_t n;

        (void)state;
        assert_int_equal(label_target_parse("/dev/null", &t), KILN_OK);
        assert_int_equal(label_target_send(&t, NULL, zpl_bytes, sizeof(zpl_bytes) - 1), KILN_OK);

        lt_tmpdir("lib-send", dir, sizeof(dir));
        assert_int_equal(label_target_parse(dir, &t), KILN_OK);
        assert_int_equal(label_target_send(&t, "SN-1.zpl", zpl_bytes, sizeof(zpl_bytes) - 1),
                         KILN_OK);
        snprintf(path, sizeof(path), "%s/SN-1.zpl", dir);
        got = lt_read(path, &n);
        assert_int_equal(n, sizeof(zpl_bytes) - 1);
        assert_memory_equal(got, zpl_bytes, n);
        free(got);
        /* a DIR target takes plain names only */
        assert_int_equal(label_target_send(&t, "../x.zpl", zpl_bytes, 3), KILN_E_INVAL);
        assert_int_equal(label_target_send(&t, "..", zpl_bytes, 3), KILN_E_INVAL);
        assert_int_equal(label_target_send(&t, NULL, zpl_bytes, 3), KILN_E_INVAL);

        /* a file target: replaced whole */
        snprintf(path, sizeof(path), "%s/one.zpl", dir);
        assert_int_equal(label_target_parse(path, &t), KILN_OK);
        assert_int_equal(label_target_send(&t, NULL, (const uint8_t *)"first-long", 10), KILN_OK);
        assert_int_equal(label_target_send(&t, NULL, zpl_bytes, sizeof(zpl_bytes) - 1), KILN_OK);
        got = lt_read(path, &n);
        assert_int_equal(n, sizeof(zpl_bytes) - 1);
        assert_memory_equal(got, zpl_bytes, n);
        free(got);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_zpl_structure),
            cmocka_unit_test(test_utf8_text),
            cmocka_unit_test(test_png_decodes),
            cmocka_unit_test(test_zpl_escapes_special_characters),
            cmocka_unit_test(test_control_bytes_escaped),
            cmocka_unit_test(test_gs1_digital_link),
            cmocka_unit_test(test_gs1_uri),
            cmocka_unit_test(test_required_content_added),
            cmocka_unit_test(test_mac_shown_by_recipe_not_repeated),
            cmocka_unit_test(test_qr_rendered_when_not_recorded),
            cmocka_unit_test(test_refuses_unit_not_pass),
            cmocka_unit_test(test_refuses_recipe_without_label),
            cmocka_unit_test(test_refuses_label_too_small),
            cmocka_unit_test(test_refuses_malformed_record),
            cmocka_unit_test(test_format_names),
            cmocka_unit_test(test_target_parse),
            cmocka_unit_test(test_target_from_printer),
            cmocka_unit_test(test_send_tcp),
            cmocka_unit_test(test_send_device_file_and_dir),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
