/*
 * Recipes: the two examples load with the right facts; every bad recipe gets exactly the
 * FILE:LINE:COLUMN lines expected, all in one run; templates render and refuse what does not fit;
 * the real `kiln recipe check` exits 0, 1 and 2 as documented; allocation failures are clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kiln/recipe.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"

/* ---------------------------------------------------------------- helpers */

static const char *source_dir(void)
{
        const char *s = getenv("KILN_SOURCE_DIR");

        if (s == NULL)
                fail_msg("KILN_SOURCE_DIR is not set (run through ctest)");
        return s;
}

static char *data_path(const char *rel)
{
        static char buf[4][KILN_PATH_MAX];
        static unsigned next;
        char *p = buf[next++ % 4];

        assert_int_equal(
            kiln_snprintf(p, KILN_PATH_MAX, "%s/tests/station/data/%s", source_dir(), rel),
            KILN_OK);
        return p;
}

static char *read_text(const char *path, size_t *ret_len)
{
        uint8_t *p = NULL;
        size_t len = 0;

        assert_int_equal(kiln_file_read(path, 1u << 20, &p, &len), KILN_OK);
        if (ret_len != NULL)
                *ret_len = len;
        return (char *)p;
}

/* The problems in diags, sorted and printed as the CLI prints them, with `name` as file name. */
static char *diag_text(struct yaml_doc_diags *d, const char *name)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        yaml_doc_diags_sort(d);
        yaml_doc_diags_print(d, name, f);
        fclose(f);
        return buf;
}

static void expect_text(const char *got, const char *want, const char *what)
{
        if (strcmp(got, want) != 0) {
                print_error("%s: got\n%s\nwant\n%s\n", what, got, want);
                fail();
        }
}

/* Load data/<rel> as a file; expect code rc and exactly the lines `want` (named "rel"). */
static void expect_file(const char *rel, int rc, const char *want)
{
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        char *got;

        yaml_doc_diags_init(&d);
        assert_int_equal(recipe_load_file(data_path(rel), 0, &d, &r), rc);
        assert_null(r);
        got = diag_text(&d, rel);
        expect_text(got, want, rel);
        free(got);
        yaml_doc_diags_free(&d);
}

/* Replace the first occurrence of each old with new, in order. */
static char *subst(const char *base, const char *const *pairs)
{
        char *s = kiln_strdup(base);

        assert_non_null(s);
        for (size_t i = 0; pairs[i] != NULL; i += 2) {
                const char *at = strstr(s, pairs[i]);
                size_t ol = strlen(pairs[i]), nl = strlen(pairs[i + 1]), sl = strlen(s);
                char *n;

                if (at == NULL)
                        fail_msg("substitution '%s' not found", pairs[i]);
                n = kiln_malloc(sl - ol + nl + 1);
                assert_non_null(n);
                memcpy(n, s, (size_t)(at - s));
                memcpy(n + (at - s), pairs[i + 1], nl);
                memcpy(n + (at - s) + nl, at + ol, sl - (size_t)(at - s) - ol + 1);
                kiln_free(s);
                s = n;
        }
        return s;
}

/* Load text from memory (no files read); on success return the recipe, else NULL and *text. */
static struct recipe *load_text(const char *text, char **ret_diags)
{
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        int rc;

        yaml_doc_diags_init(&d);
        rc = recipe_load_mem("t.yaml", NULL, (const uint8_t *)text, strlen(text), 0, &d, &r);
        if (ret_diags != NULL)
                *ret_diags = diag_text(&d, "t.yaml");
        if (rc == KILN_OK)
                assert_int_equal(yaml_doc_diags_count(&d), 0);
        else
                assert_true(rc == KILN_E_RECIPE || rc == KILN_E_RECIPE_TOO_LARGE);
        yaml_doc_diags_free(&d);
        return r;
}

static char *minimal(void)
{
        return read_text(data_path("good/minimal.yaml"), NULL);
}

/* ---------------------------------------------------------------- the examples */

static void sha256_file(const char *path, char hex[65])
{
        size_t len;
        char *p = read_text(path, &len);
        uint8_t md[32];
        unsigned int mdlen = 32;

        assert_int_equal(EVP_Digest(p, len, md, &mdlen, EVP_sha256(), NULL), 1);
        kiln_hex_encode(md, 32, hex, 65);
        kiln_free(p);
}

static struct recipe *load_example(const char *name)
{
        char path[KILN_PATH_MAX];
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        char *text;
        int rc;

        snprintf(path, sizeof(path), "%s/recipes/%s", source_dir(), name);
        yaml_doc_diags_init(&d);
        rc = recipe_load_file(path, 0, &d, &r);
        text = diag_text(&d, name);
        expect_text(text, "", name);
        free(text);
        assert_int_equal(rc, KILN_OK);
        yaml_doc_diags_free(&d);
        return r;
}

static void test_example_smartplug(void **state)
{
        struct recipe *r = load_example("smartplug-ctm.yaml");
        char path[KILN_PATH_MAX], hex[65];
        const struct recipe_key *k;

        (void)state;
        snprintf(path, sizeof(path), "%s/recipes/smartplug-ctm.yaml", source_dir());
        sha256_file(path, hex);
        assert_string_equal(r->sha256_hex, hex);
        assert_int_equal(r->schema, 1);
        assert_string_equal(r->id, "smartplug-ctm");
        assert_string_equal(r->version, "1.0.0");
        assert_true(r->files_loaded);
        /* the simulator's default identity */
        assert_string_equal(r->product.id, "smartplug-a1");
        assert_int_equal(r->product.n_hw_revisions, 1);
        assert_true(recipe_admits_hw_revision(r, 2));
        assert_false(recipe_admits_hw_revision(r, 3));
        assert_true(recipe_admits_lifecycle(r, RECIPE_LC_MANUFACTURING));
        assert_false(recipe_admits_lifecycle(r, RECIPE_LC_RMA));
        assert_false(recipe_admits_lifecycle(r, RECIPE_LC_PRODUCTION));
        assert_string_equal(r->product.fw_version, "1.0.0");
        assert_true(r->product.has_fw_sha256);
        assert_int_equal(r->product.support_end.year, 2031);
        assert_true(r->product.declared[RECIPE_DECL_SIGNED_IMAGES]);
        assert_false(r->product.declared[RECIPE_DECL_RECOVERY_PARTITION]);
        /* serial: "SPA1-" + yy ww + "-" + 6 digits */
        assert_int_equal(r->serial.start, 1);
        assert_int_equal(r->serial.last, 999999);
        assert_int_equal(r->serial.max_len, 16);
        assert_string_equal(r->serial.pool, "smartplug-a1");
        assert_false(r->mac.enabled);
        assert_int_equal(r->quota.default_units, 1000);
        assert_int_equal(r->quota.max_units, 50000);
        /* one P-256 key in slot 0 with a certificate from the dev issuing CA */
        assert_int_equal(r->n_keys, 1);
        k = &r->keys[0];
        assert_string_equal(k->name, "device");
        assert_int_equal(k->slot, 0);
        assert_int_equal(k->alg, RECIPE_KEY_ECDSA_P256);
        assert_true(k->has_cert);
        assert_true(k->attest);
        assert_string_equal(k->cert.issuer_uri,
                            "pkcs11:token=kiln-dev;object=kiln-dev-issuing;type=private");
        assert_int_equal(k->cert.n_subject, 4);
        assert_int_equal(k->cert.subject[0].type, RECIPE_RDN_CN);
        assert_int_equal(k->cert.subject[3].type, RECIPE_RDN_C);
        assert_true(k->cert.not_before_now);
        assert_int_equal(k->cert.not_after_kind, RECIPE_NOT_AFTER_NEVER);
        assert_true(k->cert.not_after == RECIPE_TIME_NEVER);
        assert_int_equal(k->cert.key_usage, RECIPE_KU_DIGITAL_SIGNATURE);
        assert_int_equal(k->cert.n_eku, 1);
        assert_string_equal(k->cert.eku[0], "1.3.6.1.5.5.7.3.2");
        assert_string_equal(k->cert.object, "dev_cert");
        assert_string_equal(k->cert.chain_object, "dev_chain");
        /* the unique default password, committed by HMAC */
        assert_int_equal(r->n_creds, 1);
        assert_int_equal(r->creds[0].kind, RECIPE_CRED_PASSWORD);
        assert_int_equal(r->creds[0].length, 16);
        assert_int_equal(r->creds[0].alphabet_len, 56);
        assert_int_equal(r->creds[0].commitment, RECIPE_COMMIT_HMAC);
        assert_string_equal(r->creds[0].object, "admin_pw");
        /* secure boot key hash, its write-protect, secure boot, debug disable */
        assert_int_equal(r->n_fuses, 4);
        assert_string_equal(r->fuses[0].field, "sb_key_hash");
        assert_int_equal(r->fuses[0].phase, RECIPE_PHASE_DATA);
        assert_int_equal(r->fuses[0].value_len, 32);
        assert_int_equal(r->fuses[0].value[0], 0xe1);
        assert_int_equal(r->fuses[0].value[31], 0xe8);
        assert_string_equal(r->fuses[1].field, "sb_key_hash_wp");
        assert_int_equal(r->fuses[1].phase, RECIPE_PHASE_PROTECT);
        assert_string_equal(r->fuses[2].field, "secure_boot");
        assert_int_equal(r->fuses[2].verify, RECIPE_VERIFY_SECURE_BOOT);
        assert_string_equal(r->fuses[3].field, "debug_disable");
        assert_int_equal(r->fuses[3].phase, RECIPE_PHASE_LOCKOUT);
        assert_int_equal(r->fuses[3].verify, RECIPE_VERIFY_DEBUG_CLOSED);
        assert_int_equal(r->lifecycle_final, RECIPE_LC_PRODUCTION);
        /* a QR code to the registry */
        assert_true(r->label.present);
        assert_true(r->label.has_qr);
        assert_false(r->label.has_gs1);
        assert_int_equal(r->label.n_fields, 4);
        assert_int_equal(r->label.dpi, 203);
        recipe_free(r);
}

static void test_example_gateway(void **state)
{
        struct recipe *r = load_example("gateway-industrial.yaml");
        struct recipe_values v;
        uint64_t macs[2] = {UINT64_C(0x024b49000010), UINT64_C(0x024b49000011)};
        uint8_t fw[32], uid[4] = {0xde, 0xad, 0xbe, 0xef};
        char buf[KILN_RECIPE_RENDER_MAX + 1], serial[KILN_SERIAL_MAX + 1];
        size_t len, fwlen;
        unsigned int mdlen = 32;

        (void)state;
        assert_string_equal(r->product.id, "gateway-g2");
        assert_true(recipe_admits_hw_revision(r, 2));
        assert_true(recipe_admits_lifecycle(r, RECIPE_LC_RMA));
        assert_null(r->product.fw_version);
        /* two keys in slots 0 and 1, one chain object shared */
        assert_int_equal(r->n_keys, 2);
        assert_int_equal(r->keys[0].slot, 0);
        assert_int_equal(r->keys[1].slot, 1);
        assert_string_equal(r->keys[0].cert.chain_object, r->keys[1].cert.chain_object);
        assert_int_equal(r->keys[1].cert.not_after_kind, RECIPE_NOT_AFTER_DAYS);
        assert_int_equal(r->keys[1].cert.days, 3650);
        assert_int_equal(r->keys[1].cert.key_usage,
                         RECIPE_KU_DIGITAL_SIGNATURE | RECIPE_KU_KEY_AGREEMENT);
        assert_int_equal(r->keys[1].cert.n_san, 1);
        assert_int_equal(r->keys[1].cert.san[0].type, RECIPE_SAN_DNS);
        assert_int_equal(r->keys[0].cert.n_ext, 2);
        assert_false(r->keys[0].cert.ext[0].is_der);
        assert_true(r->keys[0].cert.ext[1].is_der);
        assert_int_equal(r->keys[0].cert.ext[1].der_len, 3);
        /* the MAC pool: 2 per unit, the first into fuse mac0 */
        assert_true(r->mac.enabled);
        assert_int_equal(r->mac.per_unit, 2);
        assert_true(r->mac.first == UINT64_C(0x024b49000000));
        assert_true(r->mac.last == UINT64_C(0x024b490fffff));
        assert_string_equal(r->fuses[0].field, "mac0");
        assert_int_equal(r->fuses[0].bits, 48);
        assert_int_equal(r->fuses[0].mac_index, 0);
        assert_string_equal(r->fuses[2].field, "rollback_min");
        assert_int_equal(r->fuses[2].value_len, 4);
        assert_memory_equal(r->fuses[2].value, "\x01\x00\x00\x00", 4);
        /* the firmware image was read and matches its digest */
        assert_true(r->firmware.present);
        assert_string_equal(r->firmware.object, "fw_image");
        assert_string_equal(r->firmware.version, "2.1.0");
        assert_int_equal(r->firmware.len, 32768);
        assert_non_null(r->firmware.data);
        assert_int_equal(
            EVP_Digest(r->firmware.data, r->firmware.len, fw, &mdlen, EVP_sha256(), NULL), 1);
        assert_memory_equal(fw, r->firmware.sha256, 32);
        assert_int_equal(r->n_objects, 1);
        assert_string_equal(r->objects[0].name, "factory_data");
        assert_int_equal(r->n_creds, 1);
        assert_int_equal(r->creds[0].kind, RECIPE_CRED_RANDOM);
        assert_int_equal(r->creds[0].commitment, RECIPE_COMMIT_SALTED_SHA256);
        assert_true(r->label.has_gs1);
        assert_string_equal(r->label.gtin, "09506000134352");
        assert_int_equal(r->lifecycle_final, RECIPE_LC_PRODUCTION);

        /* render one unit: 2026-11-24, sequence 16 */
        memset(&v, 0, sizeof(v));
        v.time_ms = INT64_C(1795478400000); /* 2026-11-24T00:00:00Z */
        v.station = "st-01";
        assert_int_equal(recipe_serial_render(r, 16, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "GWG2-2611-0000016");
        v.serial = serial;
        v.chip_uid = uid;
        v.chip_uid_len = sizeof(uid);
        v.macs = macs;
        v.n_macs = 2;
        assert_int_equal(recipe_tmpl_render(&r->objects[0].content, &v, buf, sizeof(buf), &len),
                         KILN_OK);
        assert_string_equal(buf, "serial=GWG2-2611-0000016\nmodel=GW-G2\nmac0=02:4b:49:00:00:10\n"
                                 "mac1=02:4b:49:00:00:11\nchip_uid=deadbeef\nstation=st-01\n"
                                 "date=2026-11-24\n");
        assert_true(len <= r->objects[0].content.max_len);
        assert_int_equal(
            recipe_tmpl_render(&r->keys[0].cert.san[0].value, &v, buf, sizeof(buf), &len), KILN_OK);
        assert_string_equal(buf, "urn:dev:mac:024b49000010");
        assert_int_equal(recipe_fuse_value(&r->fuses[0], &v, (uint8_t *)buf, &fwlen), KILN_OK);
        assert_int_equal(fwlen, 6);
        assert_memory_equal(buf, "\x02\x4b\x49\x00\x00\x10", 6);
        v.n_macs = 0;
        assert_int_equal(recipe_fuse_value(&r->fuses[0], &v, (uint8_t *)buf, &fwlen), KILN_E_INVAL);
        recipe_free(r);
}

/* ---------------------------------------------------------------- bad files */

struct bad_case {
        const char *file;
        int rc;
        const char *want;
};

static const struct bad_case bad_cases[] = {
    {"bad/unknown-key.yaml", KILN_E_RECIPE,
     "bad/unknown-key.yaml:6:3: product: missing required key 'model'\n"
     "bad/unknown-key.yaml:8:3: product: unknown key 'modle' (did you mean 'model'?)\n"},
    {"bad/wrong-type.yaml", KILN_E_RECIPE,
     "bad/wrong-type.yaml:10:23: product.hardware_revisions: expected a sequence, got a "
     "mapping\n"
     "bad/wrong-type.yaml:20:11: keys[0].slot: expected an integer, got a string '0'\n"},
    {"bad/out-of-range.yaml", KILN_E_RECIPE,
     "bad/out-of-range.yaml:17:12: quota.default: value '0' is out of range 1..100000000\n"
     "bad/out-of-range.yaml:20:11: keys[0].slot: value '16' is out of range 0..15\n"},
    {"bad/missing-key.yaml", KILN_E_RECIPE,
     "bad/missing-key.yaml:2:1: missing required key 'serial'\n"
     "bad/missing-key.yaml:6:3: product: missing required key 'id'\n"},
    {"bad/duplicate-key.yaml", KILN_E_RECIPE,
     "bad/duplicate-key.yaml:8:3: product: duplicate key 'name' (first at line 7, column "
     "3)\n"},
    {"bad/bad-placeholder.yaml", KILN_E_RECIPE,
     "bad/bad-placeholder.yaml:15:11: serial.format: unknown placeholder '{chip_uid}' (known "
     "here: seq, seq:0N, yy, yyyy, ww, mm, dd, station, product)\n"
     "bad/bad-placeholder.yaml:24:15: keys[0].certificate.subject[0].CN: unknown placeholder "
     "'{uid}' (known here: serial, chip_uid, mac, mac0..mac7, station, product, model, "
     "product_name, manufacturer, yy, yyyy, ww, mm, dd)\n"
     "bad/bad-placeholder.yaml:25:14: keys[0].certificate.subject[1].O: unterminated "
     "placeholder: '{' without '}' (write '{{' for a literal brace)\n"},
    {"bad/fuse-hex-width.yaml", KILN_E_RECIPE,
     "bad/fuse-hex-width.yaml:32:14: fuses.data[0].value: '0x1f' sets bits above the field's "
     "4 bits\n"
     "bad/fuse-hex-width.yaml:36:14: fuses.lockout[0].value: '0x0001' has 4 hex digits; a "
     "1-bit field takes exactly 2 (its 1 byte, byte 0 first)\n"},
    {"bad/duplicate-slot.yaml", KILN_E_RECIPE,
     "bad/duplicate-slot.yaml:29:11: keys[1].slot: key slot 0 is already used by key "
     "'dev'\n"},
    {"bad/alias-anchor.yaml", KILN_E_RECIPE,
     "bad/alias-anchor.yaml:7:9: anchors are not allowed ('&n')\n"
     "bad/alias-anchor.yaml:8:10: aliases are not allowed ('*n')\n"},
    {"bad/tag.yaml", KILN_E_RECIPE, "bad/tag.yaml:4:10: tags are not allowed ('!!str')\n"},
    {"bad/depth-bomb.yaml", KILN_E_RECIPE,
     "bad/depth-bomb.yaml:3:20: nesting deeper than 16 levels\n"},
    {"bad/non-utf8.yaml", KILN_E_RECIPE, "bad/non-utf8.yaml:5:18: invalid UTF-8 (byte 0xe9)\n"},
    {"bad/two-documents.yaml", KILN_E_RECIPE,
     "bad/two-documents.yaml:35:1: more than one YAML document in the file\n"},
    {"bad/syntax.yaml", KILN_E_RECIPE,
     "bad/syntax.yaml:4:8: syntax error: did not find expected ',' or ']' (while parsing a "
     "flow sequence at line 3, column 5)\n"},
    {"bad/lockout-no-attest.yaml", KILN_E_RECIPE,
     "bad/lockout-no-attest.yaml:32:5: fuses.lockout: the plan locks the device but "
     "attestation is off (attest.keys is empty): nothing proves the keys work\n"},
    {"bad/object-twice.yaml", KILN_E_RECIPE,
     "bad/object-twice.yaml:32:13: credentials[0].object: device object 'dev_cert' is "
     "already used for a certificate (line 27)\n"},
    /* every problem of the file in one run, in file order */
    {"bad/many.yaml", KILN_E_RECIPE,
     "bad/many.yaml:6:3: product: missing required key 'model'\n"
     "bad/many.yaml:8:3: product: unknown key 'modle' (did you mean 'model'?)\n"
     "bad/many.yaml:11:16: product.support_end: expected a date YYYY-MM-DD, got "
     "'2030-02-30'\n"
     "bad/many.yaml:15:11: serial.format: unknown placeholder '{sequence}' (known here: seq, "
     "seq:0N, yy, yyyy, ww, mm, dd, station, product)\n"
     "bad/many.yaml:17:12: quota.default: expected an integer, got a string 'ten'\n"
     "bad/many.yaml:20:11: keys[0].slot: value '99' is out of range 0..15\n"
     "bad/many.yaml:27:9: keys[0].certificate.validity: duplicate key 'days' (first at line "
     "26, column 9)\n"
     "bad/many.yaml:33:14: fuses.lockout[0].value: value '2' does not fit in 1 bit\n"},
};

static void test_bad_files(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
                expect_file(bad_cases[i].file, bad_cases[i].rc, bad_cases[i].want);
}

static void test_minimal_is_valid(void **state)
{
        struct yaml_doc_diags d;
        struct recipe *r = NULL;

        (void)state;
        yaml_doc_diags_init(&d);
        assert_int_equal(recipe_load_file(data_path("good/minimal.yaml"), 0, &d, &r), KILN_OK);
        assert_int_equal(yaml_doc_diags_count(&d), 0);
        assert_string_equal(r->id, "minimal");
        assert_string_equal(r->description, "");
        assert_int_equal(r->keys[0].cert.not_after_kind, RECIPE_NOT_AFTER_DAYS);
        recipe_free(r);
        recipe_free(NULL);
        yaml_doc_diags_free(&d);
        yaml_doc_diags_free(NULL);
}

/* ---------------------------------------------------------------- size limit */

static void write_file(const char *path, const char *head, size_t total)
{
        FILE *f = fopen(path, "wb");
        size_t hl = strlen(head);

        assert_non_null(f);
        assert_true(total >= hl + 2);
        assert_int_equal(fwrite(head, 1, hl, f), hl);
        /* pad with one comment line to exactly `total` bytes */
        fputc('#', f);
        for (size_t i = hl + 1; i + 1 < total; i++)
                fputc('x', f);
        fputc('\n', f);
        assert_int_equal(fclose(f), 0);
}

static void test_size_limit(void **state)
{
        char dir[] = "/tmp/kiln-recipe-XXXXXX", path[KILN_PATH_MAX];
        char *base = minimal(), *got;
        struct yaml_doc_diags d;
        struct recipe *r = NULL;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/big.yaml", dir);
        /* exactly at the limit: loads */
        write_file(path, base, KILN_RECIPE_FILE_MAX);
        yaml_doc_diags_init(&d);
        assert_int_equal(recipe_load_file(path, 0, &d, &r), KILN_OK);
        assert_int_equal(r->body_len, KILN_RECIPE_FILE_MAX);
        recipe_free(r);
        r = NULL;
        /* one byte over: refused before parsing */
        write_file(path, base, KILN_RECIPE_FILE_MAX + 1);
        assert_int_equal(recipe_load_file(path, 0, &d, &r), KILN_E_RECIPE_TOO_LARGE);
        assert_null(r);
        got = diag_text(&d, "big.yaml");
        expect_text(got, "big.yaml:1:1: file is 262145 bytes, over the limit of 262144 bytes\n",
                    "over-size");
        free(got);
        yaml_doc_diags_free(&d);
        /* and from memory */
        {
                size_t n = KILN_RECIPE_FILE_MAX + 1;
                uint8_t *p = calloc(1, n);

                assert_non_null(p);
                memset(p, '#', n);
                assert_int_equal(recipe_load_mem("m", NULL, p, n, 0, &d, &r),
                                 KILN_E_RECIPE_TOO_LARGE);
                assert_int_equal(yaml_doc_diags_count(&d), 1);
                free(p);
        }
        yaml_doc_diags_free(&d);
        unlink(path);
        rmdir(dir);
        kiln_free(base);
}

/* ---------------------------------------------------------------- inline cases */

struct inline_case {
        const char *name;
        const char *pairs[9]; /* old, new, ..., NULL */
        const char *want;     /* "" when the result must be valid */
};

/* Each case edits good/minimal.yaml (line numbers are that file's) and checks every line. */
static const struct inline_case inline_cases[] = {
    {"weak password",
     {"fuses:\n",
      "credentials:\n  - {name: pin, kind: password, length: 12, alphabet: digits, object: "
      "pin}\nfuses:\n",
      NULL},
     "t.yaml:29:41: credentials[0].length: 12 characters from 10 give under 64 bits of "
     "entropy: make it longer\n"},
    {"strong enough password",
     {"fuses:\n",
      "credentials:\n  - {name: pin, kind: password, length: 20, alphabet: digits, object: "
      "pin, commitment: salted_sha256}\nfuses:\n",
      NULL},
     ""},
    {"random credential with an alphabet",
     {"fuses:\n",
      "credentials:\n  - {name: k, kind: random, length: 32, alphabet: hex, object: k}\n"
      "fuses:\n",
      NULL},
     "t.yaml:29:51: credentials[0].alphabet: random credentials are bytes: no alphabet\n"},
    {"custom characters repeat",
     {"fuses:\n",
      "credentials:\n  - {name: k, kind: password, length: 64, characters: \"abca\", object: "
      "k}\nfuses:\n",
      NULL},
     "t.yaml:29:55: credentials[0].characters: characters must be distinct and not spaces "
     "('a')\n"},
    {"an allocated MAC never used",
     {"quota:\n",
      "mac: {first: \"02:00:00:00:00:00\", last: \"02:00:00:00:ff:ff\", per_unit: 2}\nquota:\n",
      "fuses:\n", "fuses:\n  data:\n    - {field: mac0, bits: 48, value: \"{mac0}\"}\n", NULL},
     "t.yaml:16:6: mac: MAC address 1 of 2 never reaches the device: use {mac1} in a fuse "
     "value or a template\n"},
    {"a MAC placeholder without a mac section",
     {"- CN: \"{serial}\"", "- CN: \"{mac}\"", NULL},
     "t.yaml:24:15: keys[0].certificate.subject[0].CN: placeholder '{mac}' needs a 'mac' "
     "section\n"},
    {"a MAC index past per_unit",
     {"quota:\n", "mac: {first: \"02:00:00:00:00:00\", last: \"02:00:00:00:ff:ff\"}\nquota:\n",
      "- CN: \"{serial}\"", "- CN: \"{mac1}\"", NULL},
     "t.yaml:16:6: mac: MAC address 0 of 1 never reaches the device: use {mac0} in a fuse "
     "value or a template\n"
     "t.yaml:25:15: keys[0].certificate.subject[0].CN: placeholder '{mac1}': the recipe "
     "allocates 1 MAC address per unit ({mac} or {mac0})\n"},
    {"a MAC into a field that is not 48 bits",
     {"quota:\n", "mac: {first: \"02:00:00:00:00:00\", last: \"02:00:00:00:ff:ff\"}\nquota:\n",
      "fuses:\n", "fuses:\n  data:\n    - {field: customer_id, bits: 32, value: \"{mac}\"}\n",
      NULL},
     "t.yaml:16:6: mac: MAC address 0 of 1 never reaches the device: use {mac0} in a fuse "
     "value or a template\n"
     "t.yaml:31:45: fuses.data[0].value: a MAC address needs a 48-bit field, not 32 bits\n"},
    {"a multicast MAC pool",
     {"quota:\n", "mac: {first: \"01:00:5e:00:00:00\", last: \"01:00:5e:00:00:ff\"}\nquota:\n",
      NULL},
     "t.yaml:16:14: mac.first: 01:00:5e:00:00:00 is a multicast address\n"
     "t.yaml:16:41: mac.last: 01:00:5e:00:00:ff is a multicast address\n"},
    {"lock-out without a certificate",
     {"    certificate:\n      issuer: \"pkcs11:token=t;object=ca;type=private\"\n      "
      "subject:\n        - CN: \"{serial}\"\n      validity:\n        days: 365\n      "
      "object: dev_cert\n",
      "", NULL},
     "t.yaml:23:5: fuses.lockout: the plan locks the device but no key has a certificate: "
     "the unit would leave without an identity\n"},
    {"debug_closed outside the lockout phase",
     {"fuses:\n",
      "fuses:\n  data:\n    - {field: customer_id, bits: 32, value: 7, verify: "
      "debug_closed}\n",
      NULL},
     "t.yaml:30:56: fuses.data[0].verify: 'debug_closed' verifies a lock-out bit: use it in "
     "the lockout phase\n"},
    {"read_protected with nothing protecting",
     {"fuses:\n",
      "fuses:\n  data:\n    - {field: hmac_key, bits: 8, value: 0x5a, verify: "
      "read_protected}\n",
      NULL},
     "t.yaml:29:3: fuses: a data field is verified 'read_protected' but the protect phase "
     "burns nothing\n"},
    {"read_protected with its protection",
     {"fuses:\n",
      "fuses:\n  data:\n    - {field: hmac_key, bits: 256, value: "
      "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f, verify: "
      "read_protected}\n  protect:\n    - {field: hmac_key_rp, bits: 1, value: 1}\n",
      NULL},
     ""},
    {"a zero fuse value and a field burned twice",
     {"fuses:\n",
      "fuses:\n  data:\n    - {field: customer_id, bits: 32, value: 0}\n  protect:\n    - "
      "{field: debug_disable, bits: 1, value: 1}\n",
      NULL},
     "t.yaml:30:45: fuses.data[0].value: value '0' programs nothing\n"
     "t.yaml:34:14: fuses.lockout[0].field: fuse field 'debug_disable' is already in the plan "
     "(protect phase): a field is burned once\n"},
    {"fuse values in other spellings",
     {"fuses:\n",
      "fuses:\n  data:\n    - {field: a, bits: 64, value: 18446744073709551615}\n    - "
      "{field: b, bits: 12, value: 0x0f1f}\n    - {field: c, bits: 12, value: 4096}\n    - "
      "{field: d, bits: 8, value: \"{serial}\"}\n    - {field: e, bits: 8, value: 010}\n",
      NULL},
     "t.yaml:31:35: fuses.data[1].value: '0x0f1f' sets bits above the field's 12 bits\n"
     "t.yaml:32:35: fuses.data[2].value: value '4096' does not fit in 12 bits\n"
     "t.yaml:33:34: fuses.data[3].value: a fuse value placeholder is {mac} or {mac0}..{mac7}; "
     "got '{serial}'\n"
     "t.yaml:34:34: fuses.data[4].value: '010' has a leading zero (octal in YAML 1.1): write "
     "it without\n"},
    {"extensions the builder owns, bad DER, twice",
     {"      object: dev_cert\n",
      "      extensions:\n        - {oid: 2.5.29.19, der: \"30030101ff\"}\n        - {oid: "
      "1.3.6.1.4.1.32473.9, der: \"0102ff\"}\n        - {oid: 1.3.6.1.4.1.32473.8, utf8: "
      "x}\n        - {oid: 1.3.6.1.4.1.32473.8, utf8: y}\n        - {oid: 1.2.3, utf8: a, der: "
      "\"0500\"}\n        - {oid: 3.1, utf8: b}\n      object: dev_cert\n",
      NULL},
     "t.yaml:28:17: keys[0].certificate.extensions[0].oid: extension 2.5.29.19 is set by the "
     "certificate builder (use key_usage, extended_key_usage or subject_alt_name)\n"
     "t.yaml:29:43: keys[0].certificate.extensions[1].der: not one complete DER value (tag, "
     "length, contents)\n"
     "t.yaml:31:17: keys[0].certificate.extensions[3].oid: extension 1.3.6.1.4.1.32473.8 is "
     "listed twice\n"
     "t.yaml:32:11: keys[0].certificate.extensions[4]: give exactly one of 'utf8' and 'der'\n"
     "t.yaml:33:17: keys[0].certificate.extensions[5].oid: expected a dotted OID like "
     "1.3.6.1.4.1.99999.1\n"},
    {"key usage, EKU and validity mistakes",
     {"        days: 365\n",
      "        not_before: 2030-01-01\n        not_after: 2029-12-31\n      key_usage: "
      "[key_cert_sign, key_encipherment, digital_signature, digital_signature]\n      "
      "extended_key_usage: [client_auth, 1.3.6.1.5.5.7.3.2, web_auth]\n",
      NULL},
     "t.yaml:27:20: keys[0].certificate.validity.not_after: not_after is not later than "
     "not_before\n"
     "t.yaml:28:19: keys[0].certificate.key_usage[0]: 'key_cert_sign' is for CA "
     "certificates; a device certificate is never a CA\n"
     "t.yaml:28:34: keys[0].certificate.key_usage[1]: 'key_encipherment' does not apply to an "
     "EC key\n"
     "t.yaml:28:71: keys[0].certificate.key_usage[3]: 'digital_signature' is listed twice\n"
     "t.yaml:29:41: keys[0].certificate.extended_key_usage[1]: extended key usage "
     "1.3.6.1.5.5.7.3.2 is listed twice\n"
     "t.yaml:29:60: keys[0].certificate.extended_key_usage[2]: expected server_auth, "
     "client_auth, code_signing, email_protection, time_stamping, ocsp_signing or a dotted "
     "OID; got 'web_auth'\n"},
    {"subject and names",
     {"        - CN: \"{serial}\"\n",
      "        - CN: \"{serial}\"\n        - C: USA\n        - CNN: x\n        - {O: a, OU: "
      "b}\n",
      "      object: dev_cert\n",
      "      subject_alt_name:\n        - dns: \"{serial}.bad_host.example\"\n        - email: "
      "nobody\n        - uri: \"{serial}\"\n        - ip: 300.1.2.3\n        - ip: "
      "\"2001:db8::1\"\n      object: dev_cert\n",
      NULL},
     "t.yaml:25:14: keys[0].certificate.subject[1].C: C is a two-letter country code like "
     "'US'\n"
     "t.yaml:26:11: keys[0].certificate.subject[2]: unknown attribute 'CNN' (known: CN, C, "
     "ST, L, O, OU, serialNumber, title, UID, DC, emailAddress)\n"
     "t.yaml:27:11: keys[0].certificate.subject[3]: expected one attribute like 'CN: "
     "\"{serial}\"'\n"
     "t.yaml:31:16: keys[0].certificate.subject_alt_name[0].dns: '_' is not allowed in a DNS "
     "name (A-Z a-z 0-9 . -)\n"
     "t.yaml:32:18: keys[0].certificate.subject_alt_name[1].email: an email address has "
     "exactly one '@'\n"
     "t.yaml:33:16: keys[0].certificate.subject_alt_name[2].uri: a URI starts with its "
     "scheme, like 'urn:' or 'https:'\n"
     "t.yaml:34:15: keys[0].certificate.subject_alt_name[3].ip: expected an IPv4 or IPv6 "
     "address\n"},
    {"a serial character that is not valid in a DNS name",
     {"  format: \"P1-{seq:05}\"", "  format: \"P1/{seq:05}\"", "      object: dev_cert\n",
      "      subject_alt_name: [{dns: \"{serial}.example.com\"}]\n      object: dev_cert\n", NULL},
     "t.yaml:27:32: keys[0].certificate.subject_alt_name[0].dns: placeholder '{serial}' may "
     "render '/', which is not allowed in a DNS name (A-Z a-z 0-9 . -)\n"},
    {"serial formats",
     {"  format: \"P1-{seq:05}\"",
      "  format: \"P1 {yy}{{x}}-{seq:021}-{seq}-{station:x}\"\n  start: 5\n  last: 4", NULL},
     "t.yaml:15:11: serial.format: placeholder '{seq:021}': at most 20 digits\n"
     "t.yaml:15:11: serial.format: placeholder '{station:x}' takes no format\n"
     "t.yaml:17:9: serial.last: last (4) is below start (5)\n"},
    {"a serial without its sequence, one too long",
     {"  format: \"P1-{seq:05}\"", "  format: \"P1-{yyyy}\"\n  pool: shared.pool:1", NULL},
     "t.yaml:15:11: serial.format: the format must contain {seq} exactly once (it makes "
     "each serial unique)\n"},
    {"a serial that can outgrow its cap",
     {"  format: \"P1-{seq:05}\"", "  format: \"ACME-SMARTPLUG-FACTORY-{station}-{seq}\"", NULL},
     "t.yaml:15:11: serial.format: renders up to 75 characters, over the limit of 63 for a "
     "serial number (A-Z a-z 0-9 . _ / -)\n"},
    {"literal braces and a lone brace",
     {"- CN: \"{serial}\"", "- CN: \"{{{serial}}}\"\n        - O: \"a}b\"", NULL},
     "t.yaml:25:14: keys[0].certificate.subject[1].O: unmatched '}' (write '}}' for a "
     "literal brace)\n"},
    {"objects",
     {"fuses:\n",
      "objects:\n  - {name: a, template: x, file: y}\n  - {name: \"bad name\", template: x}\n"
      "  - {name: c, file: ../etc/passwd}\n  - {name: d, template: x, sha256: abc}\n  - "
      "{name: e, file: f.bin, sha256: "
      "00000000000000000000000000000000000000000000000000000000000000zz}\nfuses:\n",
      NULL},
     "t.yaml:29:5: objects[0]: give exactly one of 'template' and 'file'\n"
     "t.yaml:30:12: objects[1].name: 'bad name' is not a valid object name (1..32 of "
     "A-Za-z0-9._-)\n"
     "t.yaml:31:21: objects[2].file: the path must be relative to the recipe, without '..'\n"
     "t.yaml:32:36: objects[3].sha256: sha256 applies to 'file' objects\n"
     "t.yaml:33:36: objects[4].sha256: expected a SHA-256 digest: 64 hex digits\n"},
    {"attest names",
     {"fuses:\n", "attest:\n  keys: [dev, tls, dev]\nfuses:\n", NULL},
     "t.yaml:29:15: attest.keys[1]: no key is named 'tls'\n"
     "t.yaml:29:20: attest.keys[2]: key 'dev' is listed twice\n"},
    {"label mistakes",
     {"fuses:\n",
      "label:\n  fields: [\"S/N {serial}\"]\n  qr: \"ftp://x/{serial}\"\n  gs1: {gtin: "
      "\"09506000134353\"}\n  size: {width: 0, height: 10, dpi: 200}\nfuses:\n",
      NULL},
     "t.yaml:30:7: label.qr: the QR payload is a URL starting with https:// (or http://) and "
     "a host\n"
     "t.yaml:31:8: label.gs1: GS1 serial numbers (AI 21) hold at most 20 characters; serials "
     "here reach 22\n"
     "t.yaml:31:15: label.gs1.gtin: expected a GTIN: 8, 12, 13 or 14 digits with a valid "
     "check digit\n"
     "t.yaml:32:17: label.size.width: value '0' is out of range 1..10000\n"
     "t.yaml:32:37: label.size.dpi: dpi is one of 152, 203, 300, 600\n"},
    {"a GS1 label with serials over 20 characters",
     {"  format: \"P1-{seq:05}\"", "  format: \"P1-{seq:05}-{yyyy}{mm}{dd}-X\"", "fuses:\n",
      "label:\n  fields: [\"{serial}\"]\n  gs1: {gtin: \"9506000134352\"}\n  size: {width: "
      "400, height: 200}\nfuses:\n",
      NULL},
     "t.yaml:30:8: label.gs1: GS1 serial numbers (AI 21) hold at most 20 characters; "
     "serials here reach 33\n"},
    {"product strings",
     {"  id: smartplug-a1\n", "  id: smart plug\n", "  hardware_revisions: [2]\n",
      "  hardware_revisions: []\n  admit_lifecycle: [rma, rma, production]\n",
      "https://example.com/vd", "https://example.com/v d", NULL},
     "t.yaml:6:7: product.id: 'smart plug' is not a valid product id (1..32 of "
     "A-Za-z0-9._-)\n"
     "t.yaml:10:23: product.hardware_revisions: expected at least 1 item, got 0\n"
     "t.yaml:11:20: product.admit_lifecycle: expected at most 2 items, got 3\n"
     "t.yaml:13:33: product.vulnerability_disclosure_url: a URL cannot contain spaces\n"},
    {"admitted lifecycles",
     {"  hardware_revisions: [2]\n",
      "  hardware_revisions: [2, 0x10]\n  admit_lifecycle: [rma, rma]\n", NULL},
     "t.yaml:11:26: product.admit_lifecycle[1]: lifecycle 'rma' is listed twice\n"},
    {"a lifecycle that is not admitted",
     {"  hardware_revisions: [2]\n", "  hardware_revisions: [2]\n  admit_lifecycle: [production]\n",
      NULL},
     "t.yaml:11:21: product.admit_lifecycle[0]: expected one of manufacturing, rma; got "
     "'production'\n"},
    {"declarations are booleans",
     {"  sbom_ref: sbom-1\n",
      "  sbom_ref: sbom-1\n  declarations: {signed_images: yes, secure_boot: true}\n", NULL},
     "t.yaml:14:33: product.declarations.signed_images: expected true or false, got a string "
     "'yes'\n"
     "t.yaml:14:38: product.declarations: unknown key 'secure_boot'\n"},
    {"too many keys",
     {"keys:\n",
      "keys:\n  - {name: k1, slot: 1}\n  - {name: k2, slot: 2}\n  - {name: k3, slot: 3}\n  - "
      "{name: k4, slot: 4}\n  - {name: k5, slot: 5}\n  - {name: k6, slot: 6}\n  - {name: k7, "
      "slot: 7}\n  - {name: k8, slot: 8}\n",
      NULL},
     "t.yaml:19:3: keys: expected at most 8 items, got 9\n"},
    {"the most keys",
     {"keys:\n",
      "keys:\n  - {name: k1, slot: 1}\n  - {name: k2, slot: 2}\n  - {name: k3, slot: 3}\n  - "
      "{name: k4, slot: 4}\n  - {name: k5, slot: 5}\n  - {name: k6, slot: 6}\n  - {name: k7, "
      "slot: 15}\n",
      NULL},
     ""},
    {"chain objects with different issuers",
     {"      object: dev_cert\n",
      "      object: dev_cert\n      chain_object: chain\n  - name: tls\n    slot: 1\n    "
      "certificate:\n      issuer: \"pkcs11:token=t;object=ca2;type=private\"\n      "
      "subject: [{CN: x}]\n      validity: {not_after: \"2040-01-01T00:00:00Z\"}\n      "
      "object: tls_cert\n      chain_object: chain\n",
      NULL},
     "t.yaml:36:21: keys[1].certificate.chain_object: device object 'chain' is already used "
     "for a certificate chain (line 28)\n"},
    {"issuer URIs",
     {"object=ca;type=private", "object=ca;type=secret-key;object=x", NULL},
     "t.yaml:22:15: keys[0].certificate.issuer: not a usable PKCS#11 key URI: attribute "
     "'object' given twice\n"},
    {"no schema, a top level that is not a mapping",
     {"schema: 1\n", "", NULL},
     "t.yaml:2:1: missing required key 'schema'\n"},
};

static void test_inline_cases(void **state)
{
        char *base = minimal();
        unsigned failed = 0;

        (void)state;
        for (size_t i = 0; i < sizeof(inline_cases) / sizeof(inline_cases[0]); i++) {
                const struct inline_case *tc = &inline_cases[i];
                char *text = subst(base, tc->pairs), *got = NULL;
                struct recipe *r = load_text(text, &got);

                /* report every case that differs, then fail */
                if (strcmp(got, tc->want) != 0) {
                        print_error("case '%s': got\n%s\nwant\n%s\n", tc->name, got, tc->want);
                        failed++;
                } else if ((tc->want[0] == '\0') != (r != NULL)) {
                        print_error("case '%s': recipe %s\n", tc->name, r ? "returned" : "missing");
                        failed++;
                }
                recipe_free(r);
                free(got);
                kiln_free(text);
        }
        kiln_free(base);
        assert_int_equal(failed, 0);
}

static void test_not_a_mapping(void **state)
{
        char *got = NULL;

        (void)state;
        assert_null(load_text("- just\n- a list\n", &got));
        expect_text(got, "t.yaml:1:1: expected a mapping, got a sequence\n", "top-level list");
        free(got);
        assert_null(load_text("# only a comment\n", &got));
        expect_text(got, "t.yaml:1:1: the recipe is empty\n", "empty");
        free(got);
        assert_null(load_text("a: 1\nb: {x: [1, 2], [k]: v}\n", &got));
        expect_text(got,
                    "t.yaml:1:1: unknown key 'a'\n"
                    "t.yaml:1:1: missing required key 'schema'\n"
                    "t.yaml:1:1: missing required key 'id'\n"
                    "t.yaml:1:1: missing required key 'version'\n"
                    "t.yaml:1:1: missing required key 'product'\n"
                    "t.yaml:1:1: missing required key 'serial'\n"
                    "t.yaml:1:1: missing required key 'quota'\n"
                    "t.yaml:1:1: missing required key 'keys'\n"
                    "t.yaml:2:1: unknown key 'b'\n"
                    "t.yaml:2:16: b: mapping keys must be strings, not a sequence\n",
                    "complex key");
        free(got);
}

/* ---------------------------------------------------------------- files next to the recipe */

static void put(const char *dir, const char *name, const char *text)
{
        char path[KILN_PATH_MAX];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "wb");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static void test_referenced_files(void **state)
{
        char dir[] = "/tmp/kiln-recipe-XXXXXX", path[KILN_PATH_MAX], real_sha[65];
        char *base = minimal(), *text, *got;
        struct yaml_doc_diags d;
        struct recipe *r = NULL;
        uint8_t md[32];
        unsigned int mdlen = 32;
        const char *pairs[] = {"fuses:\n", NULL, NULL};
        char objects[1024];

        (void)state;
        assert_non_null(mkdtemp(dir));
        put(dir, "calib.bin", "calibration\n");
        put(dir, "empty.bin", "");
        assert_int_equal(EVP_Digest("calibration\n", 12, md, &mdlen, EVP_sha256(), NULL), 1);
        kiln_hex_encode(md, 32, real_sha, sizeof(real_sha));

        /* good: the file is read and its digest checked */
        snprintf(objects, sizeof(objects),
                 "objects:\n  - {name: calib, file: calib.bin, sha256: %s, secret: true}\n"
                 "firmware: {file: calib.bin, sha256: %s, object: fw}\nfuses:\n",
                 real_sha, real_sha);
        pairs[1] = objects;
        text = subst(base, pairs);
        snprintf(path, sizeof(path), "%s/r.yaml", dir);
        put(dir, "r.yaml", text);
        yaml_doc_diags_init(&d);
        assert_int_equal(recipe_load_file(path, 0, &d, &r), KILN_OK);
        assert_int_equal(r->objects[0].len, 12);
        assert_memory_equal(r->objects[0].data, "calibration\n", 12);
        assert_true(r->objects[0].secret);
        assert_true(r->objects[0].has_sha256);
        assert_int_equal(r->firmware.len, 12);
        recipe_free(r);
        r = NULL;
        /* without files: nothing read, the expected digest kept */
        assert_int_equal(recipe_load_file(path, RECIPE_LOAD_NO_FILES, &d, &r), KILN_OK);
        assert_null(r->objects[0].data);
        assert_memory_equal(r->objects[0].sha256, md, 32);
        assert_false(r->files_loaded);
        recipe_free(r);
        r = NULL;
        kiln_free(text);

        /* bad: digest mismatch, missing file, empty file */
        snprintf(objects, sizeof(objects),
                 "objects:\n  - {name: calib, file: calib.bin, sha256: %064d}\n"
                 "  - {name: none, file: missing.bin}\n  - {name: empty, file: empty.bin}\n"
                 "firmware: {file: calib.bin, sha256: %064d, object: calib}\nfuses:\n",
                 0, 0);
        pairs[1] = objects;
        text = subst(base, pairs);
        put(dir, "r.yaml", text);
        assert_int_equal(recipe_load_file(path, 0, &d, &r), KILN_E_RECIPE);
        got = diag_text(&d, "r.yaml");
        expect_text(got,
                    "r.yaml:29:44: objects[0].sha256: file 'calib.bin' does not match its "
                    "sha256\n"
                    "r.yaml:30:24: objects[1].file: file 'missing.bin' not found\n"
                    "r.yaml:31:25: objects[2].file: file 'empty.bin' is empty\n"
                    "r.yaml:32:37: firmware.sha256: file 'calib.bin' does not match its sha256\n"
                    "r.yaml:32:111: firmware.object: device object 'calib' is already used for "
                    "a data object (line 29)\n",
                    "referenced files");
        free(got);
        yaml_doc_diags_free(&d);
        kiln_free(text);
        kiln_free(base);
        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        assert_int_equal(system(path), 0);
}

/* ---------------------------------------------------------------- rendering */

static struct recipe *load_ok(const char *const *pairs)
{
        char *base = minimal(), *text = subst(base, pairs), *got = NULL;
        struct recipe *r = load_text(text, &got);

        expect_text(got, "", "load_ok");
        assert_non_null(r);
        free(got);
        kiln_free(text);
        kiln_free(base);
        return r;
}

static int64_t day_ms(int y, int m, int d)
{
        /* days from civil, for test dates */
        int64_t yy = y - (m <= 2), era = yy / 400, yoe = yy - era * 400;
        int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;

        return (era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468) * 86400000;
}

static void test_render(void **state)
{
        static const char *const pairs[] = {
            "  format: \"P1-{seq:05}\"",
            "  format: \"P1-{yy}{ww}-{station}-{seq:04}\"\n  start: 7\n  last: 123456",
            "- CN: \"{serial}\"",
            "- CN: \"{serial}\"\n        - UID: \"{chip_uid}\"\n        - OU: \"{{{product}}} "
            "{yyyy}-{mm}-{dd} {manufacturer}/{product_name}/{model}\"",
            NULL};
        struct recipe *r = load_ok(pairs);
        struct recipe_values v;
        char out[256], serial[KILN_SERIAL_MAX + 1];
        uint8_t uid[KILN_UID_MAX + 1];
        size_t len = 99;
        const struct recipe_tmpl *uid_t = &r->keys[0].cert.subject[1].value;
        const struct recipe_tmpl *ou_t = &r->keys[0].cert.subject[2].value;

        (void)state;
        memset(&v, 0, sizeof(v));
        memset(uid, 0xab, sizeof(uid));
        v.station = "st1";
        /* ISO weeks at the turn of the year */
        v.time_ms = day_ms(2020, 12, 31);
        assert_int_equal(recipe_serial_render(r, 7, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "P1-2053-st1-0007");
        v.time_ms = day_ms(2021, 1, 3);
        assert_int_equal(recipe_serial_render(r, 123456, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "P1-2153-st1-123456");
        v.time_ms = day_ms(2021, 1, 4);
        assert_int_equal(recipe_serial_render(r, 8, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "P1-2101-st1-0008");
        v.time_ms = day_ms(2024, 12, 30) + 86399999;
        assert_int_equal(recipe_serial_render(r, 8, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "P1-2401-st1-0008");
        v.time_ms = day_ms(2026, 6, 15);
        assert_int_equal(recipe_serial_render(r, 8, &v, serial, sizeof(serial)), KILN_OK);
        assert_string_equal(serial, "P1-2625-st1-0008");
        /* the longest serial fits max_len: 3 + 4 + 1 + 32 + 1 + 6 */
        assert_int_equal(r->serial.max_len, 47);
        /* outside the pool */
        assert_int_equal(recipe_serial_render(r, 6, &v, serial, sizeof(serial)), KILN_E_INVAL);
        assert_int_equal(recipe_serial_render(r, 123457, &v, serial, sizeof(serial)), KILN_E_INVAL);
        assert_string_equal(serial, "");
        /* a station id that is not one */
        v.station = "bad station";
        assert_int_equal(recipe_serial_render(r, 8, &v, serial, sizeof(serial)), KILN_E_INVAL);
        v.station = "st1";

        /* unit templates: constants folded, braces escaped */
        v.serial = "P1-2625-st1-0008";
        assert_int_equal(recipe_tmpl_render(ou_t, &v, out, sizeof(out), &len), KILN_OK);
        assert_string_equal(out, "{smartplug-a1} 2026-06-15 Maker/Plug/P1");
        assert_int_equal(len, strlen(out));
        /* chip UID: missing, 1 byte, the most, one too many */
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, sizeof(out), &len), KILN_E_INVAL);
        assert_string_equal(out, "");
        v.chip_uid = uid;
        v.chip_uid_len = 1;
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, sizeof(out), &len), KILN_OK);
        assert_string_equal(out, "ab");
        v.chip_uid_len = KILN_UID_MAX;
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, sizeof(out), &len), KILN_OK);
        assert_int_equal(len, 64);
        assert_int_equal(uid_t->max_len, 64);
        v.chip_uid_len = KILN_UID_MAX + 1;
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, sizeof(out), &len), KILN_E_INVAL);
        v.chip_uid_len = KILN_UID_MAX;
        /* the buffer: max_len + 1 fits, max_len does not (and leaves "") */
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, 65, &len), KILN_OK);
        len = 99;
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, 64, &len), KILN_E_RANGE);
        assert_string_equal(out, "");
        assert_int_equal(len, 99); /* outputs written only on success */
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, 1, &len), KILN_E_RANGE);
        assert_int_equal(recipe_tmpl_render(uid_t, &v, out, 0, &len), KILN_E_RANGE);
        /* a serial that is not one */
        v.serial = NULL;
        assert_int_equal(
            recipe_tmpl_render(&r->keys[0].cert.subject[0].value, &v, out, sizeof(out), &len),
            KILN_E_INVAL);
        /* no date: the date placeholders need one */
        v.time_ms = -1;
        assert_int_equal(recipe_tmpl_render(ou_t, &v, out, sizeof(out), &len), KILN_E_INVAL);
        recipe_free(r);
}

static void test_render_macs(void **state)
{
        static const char *const pairs[] = {
            "quota:\n",
            "mac: {first: \"02-00-00-AA-00-00\", last: \"02-00-00-aa-ff-ff\", per_unit: 3, pool: "
            "mac-block-1}\nquota:\n",
            "- CN: \"{serial}\"", "- CN: \"{mac} {mac1:hex} {mac2}\"", NULL};
        struct recipe *r = load_ok(pairs);
        uint64_t macs[3] = {UINT64_C(0x020000aa0001), UINT64_C(0x020000aa0002),
                            UINT64_C(0x020000aa0003)};
        struct recipe_values v;
        char out[128];
        size_t len;

        (void)state;
        assert_string_equal(r->mac.pool, "mac-block-1");
        assert_int_equal(r->mac.per_unit, 3);
        assert_true(r->mac.first == UINT64_C(0x020000aa0000));
        memset(&v, 0, sizeof(v));
        v.macs = macs;
        v.n_macs = 3;
        assert_int_equal(
            recipe_tmpl_render(&r->keys[0].cert.subject[0].value, &v, out, sizeof(out), &len),
            KILN_OK);
        assert_string_equal(out, "02:00:00:aa:00:01 020000aa0002 02:00:00:aa:00:03");
        assert_int_equal(r->keys[0].cert.subject[0].value.max_len, 17 + 1 + 12 + 1 + 17);
        v.n_macs = 2;
        assert_int_equal(
            recipe_tmpl_render(&r->keys[0].cert.subject[0].value, &v, out, sizeof(out), &len),
            KILN_E_INVAL);
        recipe_mac_format(UINT64_C(0xfedcba987654), out);
        assert_string_equal(out, "fe:dc:ba:98:76:54");
        recipe_free(r);
}

/* ---------------------------------------------------------------- yaml_doc */

static void test_yaml_doc_limits(void **state)
{
        struct yaml_doc_diags d;
        struct yaml_doc *doc = NULL;
        char text[256], *got;
        size_t o = 0;

        (void)state;
        yaml_doc_diags_init(&d);
        /* KILN_YAML_DEPTH_MAX levels load, one more does not */
        for (unsigned i = 0; i < KILN_YAML_DEPTH_MAX; i++)
                text[o++] = '[';
        for (unsigned i = 0; i < KILN_YAML_DEPTH_MAX; i++)
                text[o++] = ']';
        text[o] = '\0';
        assert_int_equal(yaml_doc_load((const uint8_t *)text, o, 1024, &d, &doc), KILN_OK);
        assert_int_equal(doc->nodes, KILN_YAML_DEPTH_MAX);
        assert_int_equal(yaml_doc_diags_count(&d), 0);
        yaml_doc_free(doc);
        doc = NULL;
        memmove(text + 1, text, o + 1);
        text[0] = '[';
        text[o + 1] = ']';
        text[o + 2] = '\0';
        assert_int_equal(yaml_doc_load((const uint8_t *)text, o + 2, 1024, &d, &doc),
                         KILN_E_SYNTAX);
        assert_null(doc);
        got = diag_text(&d, "x");
        expect_text(got, "x:1:17: nesting deeper than 16 levels\n", "depth");
        free(got);
        yaml_doc_diags_free(&d);

        /* the node cap */
        {
                size_t n = KILN_YAML_NODES_MAX + 1, len = 0;
                char *p = malloc(4 * n + 8);

                assert_non_null(p);
                p[len++] = '[';
                for (size_t i = 0; i < n; i++) {
                        memcpy(p + len, "1, ", 3);
                        len += 3;
                }
                p[len++] = ']';
                /* n scalars + the sequence: one over */
                assert_int_equal(yaml_doc_load((const uint8_t *)p, len, 1u << 20, &d, &doc),
                                 KILN_E_SYNTAX);
                assert_null(doc);
                assert_int_equal(yaml_doc_diags_count(&d), 1);
                assert_non_null(strstr(d.v[0].msg, "more than 20000 YAML nodes"));
                yaml_doc_diags_free(&d);
                /* exactly the cap: two scalars fewer */
                len -= 7;
                p[len++] = ']';
                assert_int_equal(yaml_doc_load((const uint8_t *)p, len, 1u << 20, &d, &doc),
                                 KILN_OK);
                assert_int_equal(doc->nodes, KILN_YAML_NODES_MAX);
                yaml_doc_free(doc);
                doc = NULL;
                free(p);
        }
        /* the caller's size cap */
        assert_int_equal(yaml_doc_load((const uint8_t *)"a: 1\n", 5, 4, &d, &doc), KILN_E_SYNTAX);
        assert_int_equal(yaml_doc_load((const uint8_t *)"a: 1\n", 5, 5, &d, &doc), KILN_OK);
        yaml_doc_free(doc);
        yaml_doc_free(NULL);
        yaml_doc_diags_free(&d);
}

static void test_yaml_doc_utf8(void **state)
{
        static const struct {
                const char *text;
                size_t len;
                const char *want;
        } cases[] = {
            /* overlong '/', a surrogate, past U+10FFFF, truncated, a stray continuation */
            {"a: \xc0\xaf\n", 6, "x:1:4: invalid UTF-8 (byte 0xc0)\n"},
            {"a: b\nc: \xed\xa0\x80\n", 12, "x:2:4: invalid UTF-8 (byte 0xed)\n"},
            {"a: \xf4\x90\x80\x80\n", 8, "x:1:4: invalid UTF-8 (byte 0xf4)\n"},
            {"a: \xe2\x82", 5, "x:1:4: invalid UTF-8 (byte 0xe2)\n"},
            {"\xc3\xa9\xc3\xa9: \x80", 7, "x:1:5: invalid UTF-8 (byte 0x80)\n"},
            /* a UTF-16 byte order mark is not UTF-8 */
            {"\xff\xfe"
             "a\0",
             4, "x:1:1: invalid UTF-8 (byte 0xff)\n"},
            /* a control character in valid UTF-8 */
            {"a: b\x01\n", 6,
             "x:1:5: invalid input: control characters are not allowed "
             "(0x1)\n"},
            /* "\0" escapes make a NUL: refused, the key is still known */
            {"a: \"x\\0y\"\n", 10, "x:1:4: NUL characters are not allowed in strings\n"},
        };
        struct yaml_doc_diags d;
        struct yaml_doc *doc = NULL;

        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *got;

                yaml_doc_diags_init(&d);
                (void)yaml_doc_load((const uint8_t *)cases[i].text, cases[i].len, 1024, &d, &doc);
                yaml_doc_free(doc);
                doc = NULL;
                got = diag_text(&d, "x");
                expect_text(got, cases[i].want, "utf8 case");
                free(got);
                yaml_doc_diags_free(&d);
        }
        /* valid multi-byte text loads, columns count characters */
        yaml_doc_diags_init(&d);
        assert_int_equal(
            yaml_doc_load((const uint8_t *)"\xef\xbb\xbf\xc3\xa9t\xc3\xa9: [\xe2\x82\xac]\n", 16,
                          1024, &d, &doc),
            KILN_OK);
        assert_int_equal(doc->root->n, 1);
        assert_string_equal(doc->root->keys[0]->str, "\xc3\xa9t\xc3\xa9");
        assert_int_equal(doc->root->vals[0]->column, 6);
        yaml_doc_free(doc);
        yaml_doc_diags_free(&d);
}

static void test_yaml_doc_quote_and_caps(void **state)
{
        struct yaml_doc_diags d;
        char q[64], big[300];

        (void)state;
        yaml_doc_quote("it's\n\x80", 6, q, sizeof(q));
        assert_string_equal(q, "'it\\'s\\x0a\\x80'");
        memset(big, 'a', sizeof(big));
        yaml_doc_quote(big, sizeof(big), q, sizeof(q));
        assert_true(strlen(q) < sizeof(q));
        assert_int_equal(strlen(q), 1 + YAML_DOC_QUOTE_MAX + 4);
        assert_non_null(strstr(q, "...'"));
        /* the problem cap: the rest is counted and announced */
        yaml_doc_diags_init(&d);
        for (unsigned i = 0; i < KILN_DIAG_MAX + 5; i++)
                assert_int_equal(yaml_doc_diag_add(&d, i + 1, 1, "p%u", i), KILN_OK);
        assert_int_equal(d.n, KILN_DIAG_MAX);
        assert_int_equal(d.dropped, 5);
        assert_int_equal(yaml_doc_diags_count(&d), KILN_DIAG_MAX + 5);
        {
                char *got = diag_text(&d, "f");

                assert_non_null(strstr(got, "f:100:1: p99\nf:100:1: too many problems, 5 more "
                                            "not shown\n"));
                free(got);
        }
        yaml_doc_diags_free(&d);
}

/* ---------------------------------------------------------------- allocation failures */

static void test_alloc_failures(void **state)
{
        char path[KILN_PATH_MAX];
        long n;

        (void)state;
        snprintf(path, sizeof(path), "%s/recipes/gateway-industrial.yaml", source_dir());
        /* fail the n-th allocation for every n until a load needs no failure: each run must end
         * cleanly with KILN_E_NOMEM (ASan reports any leak) */
        for (n = 0;; n++) {
                struct yaml_doc_diags d;
                struct recipe *r = NULL;
                int rc;

                yaml_doc_diags_init(&d);
                kiln_alloc_fail_after(n);
                rc = recipe_load_file(path, 0, &d, &r);
                kiln_alloc_fail_after(-1);
                yaml_doc_diags_free(&d);
                if (rc == KILN_OK) {
                        recipe_free(r);
                        break;
                }
                assert_null(r);
                /* libyaml allocates with malloc: only our allocations fail */
                if (rc != KILN_E_NOMEM)
                        fail_msg("allocation %ld failed: got %d", n, rc);
        }
        assert_true(n > 10);
}

/* ---------------------------------------------------------------- the kiln binary */

/* Run kiln with args; its stdout and stderr into out (NUL-terminated); return the exit status. */
static int run_kiln(const char *const *args, char *out, size_t cap)
{
        const char *bdir = getenv("KILN_BUILD_DIR");
        char prog[KILN_PATH_MAX];
        const char *argv[16];
        int pfd[2], status;
        size_t n = 0, len = 0;
        pid_t pid;

        assert_non_null(bdir);
        snprintf(prog, sizeof(prog), "%s/kiln", bdir);
        argv[n++] = prog;
        for (size_t i = 0; args[i] != NULL && n < 15; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        assert_int_equal(pipe(pfd), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                dup2(pfd[1], 1);
                dup2(pfd[1], 2);
                close(pfd[0]);
                close(pfd[1]);
                if (chdir(source_dir()) != 0)
                        _exit(127);
                execv(prog, (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        close(pfd[1]);
        for (;;) {
                ssize_t k = read(pfd[0], out + len, cap - 1 - len);

                if (k <= 0)
                        break;
                len += (size_t)k;
                if (len == cap - 1)
                        break;
        }
        out[len] = '\0';
        close(pfd[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

static void test_cli(void **state)
{
        char out[16384], want[512], sha1[65], sha2[65], path[KILN_PATH_MAX];

        (void)state;
        {
                const char *args[] = {"recipe", "check", "recipes/smartplug-ctm.yaml",
                                      "recipes/gateway-industrial.yaml", NULL};

                snprintf(path, sizeof(path), "%s/recipes/smartplug-ctm.yaml", source_dir());
                sha256_file(path, sha1);
                snprintf(path, sizeof(path), "%s/recipes/gateway-industrial.yaml", source_dir());
                sha256_file(path, sha2);
                assert_int_equal(run_kiln(args, out, sizeof(out)), 0);
                snprintf(want, sizeof(want),
                         "recipes/smartplug-ctm.yaml: ok (recipe smartplug-ctm version 1.0.0, "
                         "sha256 %s)\n"
                         "recipes/gateway-industrial.yaml: ok (recipe gateway-industrial version "
                         "2.1.0, sha256 %s)\n",
                         sha1, sha2);
                expect_text(out, want, "check examples");
        }
        {
                /* a bad file among good ones: 1, every line of the bad one */
                const char *args[] = {"recipe", "check", "tests/station/data/bad/many.yaml",
                                      "recipes/smartplug-ctm.yaml", NULL};
                const char *p;

                assert_int_equal(run_kiln(args, out, sizeof(out)), 1);
                p = strstr(out, "recipes/smartplug-ctm.yaml: ok");
                assert_non_null(p);
                for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
                        const char *w = bad_cases[i].want;

                        if (strcmp(bad_cases[i].file, "bad/many.yaml") != 0)
                                continue;
                        /* the same lines, named as typed on the command line */
                        while (*w != '\0') {
                                const char *nl = strchr(w, '\n');
                                char line[512];

                                snprintf(line, sizeof(line), "tests/station/data/%.*s",
                                         (int)(nl - w + 1), w);
                                assert_non_null(strstr(out, line));
                                w = nl + 1;
                        }
                }
        }
        {
                const char *args[] = {"recipe", "check", "tests/station/data/no-such.yaml", NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 2);
                assert_non_null(strstr(out, "no-such.yaml"));
        }
        {
                const char *args[] = {"recipe", "check", NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 2);
                assert_non_null(strstr(out, "usage: kiln recipe check"));
        }
        {
                const char *args[] = {"recipe", "frobnicate", NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 2);
        }
        {
                const char *args[] = {"recipe", "check", "--config",
                                      "tests/station/data/good/station.yaml", NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 0);
                assert_non_null(strstr(out, "tests/station/data/good/station.yaml: ok (station "
                                            "line1-st01, development mode, 5 slots, sha256 "));
        }
        {
                const char *args[] = {"recipe", "check", "--config",
                                      "tests/station/data/bad-config/pin.yaml", NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 1);
                expect_text(out,
                            "tests/station/data/bad-config/pin.yaml:15:8: hsm.pin: a PIN never "
                            "goes in the configuration: name an environment variable with "
                            "pin_env or an owner-only file with pin_file\n",
                            "config pin");
        }
        {
                const char *args[] = {"recipe",     "render", "recipes/gateway-industrial.yaml",
                                      "--seq",      "42",     "--date",
                                      "2026-11-24", "--uid",  "0011223344556677",
                                      NULL};

                assert_int_equal(run_kiln(args, out, sizeof(out)), 0);
                assert_non_null(strstr(out, "serial: GWG2-2611-0000042\n"));
                assert_non_null(strstr(out, "mac0: 02:4b:49:00:00:52\nmac1: 02:4b:49:00:00:53\n"));
                assert_non_null(strstr(out, "    chip_uid=0011223344556677\n"));
                assert_non_null(strstr(out, "fuse data mac0: 0x024b49000052, verify readback\n"));
                assert_non_null(strstr(out, "label gs1: https://id.gs1.org/01/09506000134352/21/"
                                            "GWG2-2611-0000042\n"));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_example_smartplug),
            cmocka_unit_test(test_example_gateway),
            cmocka_unit_test(test_minimal_is_valid),
            cmocka_unit_test(test_bad_files),
            cmocka_unit_test(test_size_limit),
            cmocka_unit_test(test_inline_cases),
            cmocka_unit_test(test_not_a_mapping),
            cmocka_unit_test(test_referenced_files),
            cmocka_unit_test(test_render),
            cmocka_unit_test(test_render_macs),
            cmocka_unit_test(test_yaml_doc_limits),
            cmocka_unit_test(test_yaml_doc_utf8),
            cmocka_unit_test(test_yaml_doc_quote_and_caps),
            cmocka_unit_test(test_alloc_failures),
            cmocka_unit_test(test_cli),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
