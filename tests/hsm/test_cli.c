/*
 * `kiln hsm` as an operator runs it: init-dev (and again: nothing changes), a half-made directory,
 * info with every PIN source, and the refusals. Everything the program prints is checked for PINs.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm_test.h"
#include "kiln/hsm_dev.h"

static char dir[KILN_PATH_MAX];
static char out[HT_OUT_MAX];

static const char *kiln(void)
{
        const char *p = getenv("KILN_PROGRAM");

        if (p == NULL)
                fail_msg("KILN_PROGRAM is not set (run through ctest)");
        return p;
}

/* Run kiln with the NULL-terminated arguments; exit status returned, output (PIN-free) in out. */
static int run(const char *first, ...)
{
        const char *argv[16] = {kiln(), first};
        size_t n = 2;
        va_list ap;
        int rc;

        va_start(ap, first);
        while (n + 1 < sizeof(argv) / sizeof(argv[0]) && (argv[n] = va_arg(ap, const char *)))
                n++;
        va_end(ap);
        argv[n] = NULL;
        rc = ht_run(argv, out, sizeof(out));
        ht_assert_no_secret(out, dir, NULL);
        return rc;
}

#define RUN(...) run(__VA_ARGS__, (const char *)NULL)

static void expect_out(const char *want)
{
        if (strstr(out, want) == NULL)
                fail_msg("output lacks '%s':\n%s", want, out);
}

static int setup(void **state)
{
        (void)state;
        ht_dir("cli", dir, sizeof(dir));
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        ht_rmrf(dir);
        return 0;
}

static void mode_is(const char *name, unsigned mode)
{
        char p[KILN_PATH_MAX];
        struct stat st;

        ht_path(dir, name, p, sizeof(p));
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, mode);
}

/* No file init-dev wrote holds a private key (the token's own store is SoftHSM's business). */
static void no_private_key_files(void)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        char p[KILN_PATH_MAX], text[16384];
        struct stat st;

        assert_non_null(d);
        while ((e = readdir(d)) != NULL) {
                ht_path(dir, e->d_name, p, sizeof(p));
                if (lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
                        continue;
                ht_read(p, text, sizeof(text));
                if (strstr(text, "PRIVATE KEY") != NULL)
                        fail_msg("%s holds a private key", p);
        }
        closedir(d);
}

static void test_init_dev(void **state)
{
        char root[KILN_PATH_MAX], issuing[KILN_PATH_MAX];

        (void)state;
        assert_int_equal(RUN("hsm", "init-dev", "--dir", dir), 0);
        expect_out("created a development PKI");
        expect_out(HSM_DEV_ROOT_URI);
        expect_out(HSM_DEV_ISSUING_URI);
        expect_out(HSM_DEV_AUDIT_URI);
        expect_out(HSM_DEV_COMMIT_URI);
        mode_is(HSM_DEV_PIN, 0600);
        mode_is(HSM_DEV_SO_PIN, 0600);
        mode_is(HSM_DEV_CONF, 0600);
        no_private_key_files();
        ht_path(dir, HSM_DEV_ROOT_PEM, root, sizeof(root));
        ht_path(dir, HSM_DEV_ISSUING_PEM, issuing, sizeof(issuing));
        {
                const char *argv[] = {"openssl", "verify", "-x509_strict", "-check_ss_sig",
                                      "-CAfile", root, issuing, NULL};

                assert_int_equal(ht_run(argv, out, sizeof(out)), 0);
                expect_out(": OK");
        }
        /* idempotent: a second run reports and changes nothing */
        assert_int_equal(RUN("hsm", "init-dev", "--dir", dir), 0);
        expect_out("already holds a complete development PKI");
        expect_out(HSM_DEV_ISSUING_URI);
}

static void test_info(void **state)
{
        char pin_file[KILN_PATH_MAX], conf[KILN_PATH_MAX], pin[KILN_PIN_MAX];

        (void)state;
        assert_int_equal(RUN("hsm", "info", "--dir", dir), 0);
        expect_out("token 'kiln-dev'");
        expect_out("manufacturer:  SoftHSM project");
        expect_out("user PIN:      count low no, final try no, locked no");
        expect_out("CKF_TOKEN_INITIALIZED");
        expect_out("  CKM_ECDSA\n");
        expect_out("  CKM_SHA256_HMAC\n");
        expect_out("CKO_PRIVATE_KEY CKK_EC P-384\n      label 'kiln-dev-root', id 01");
        expect_out("CKO_SECRET_KEY CKK_GENERIC_SECRET 256 bits");
        expect_out("CKA_EXTRACTABLE no, CKA_SENSITIVE yes, CKA_SIGN yes");
        expect_out("logged in");
        /* module + token URI + PIN file / PIN variable */
        ht_path(dir, HSM_DEV_CONF, conf, sizeof(conf));
        ht_path(dir, HSM_DEV_PIN, pin_file, sizeof(pin_file));
        assert_int_equal(setenv("SOFTHSM2_CONF", conf, 1), 0);
        assert_int_equal(RUN("hsm", "info", "--module", HSM_SOFTHSM_MODULE, "--token",
                             "pkcs11:token=kiln-dev", "--pin-file", pin_file, "--key",
                             "pkcs11:object=kiln-dev-issuing"),
                         0);
        expect_out("CKO_PRIVATE_KEY CKK_EC P-256");
        expect_out("CKO_PUBLIC_KEY CKK_EC P-256");
        expect_out("CKO_CERTIFICATE\n      label 'kiln-dev-issuing', id 02");
        ht_read(pin_file, pin, sizeof(pin));
        assert_int_equal(setenv("KILN_TEST_CLI_PIN", pin, 1), 0);
        assert_int_equal(RUN("hsm", "info", "--module", HSM_SOFTHSM_MODULE, "--token",
                             "pkcs11:token=kiln-dev", "--pin-env", "KILN_TEST_CLI_PIN", "--key",
                             HSM_DEV_AUDIT_URI),
                         0);
        expect_out("label 'kiln-dev-audit', id 03");
        unsetenv("KILN_TEST_CLI_PIN");
        /* without a PIN: token facts only, private objects hidden */
        assert_int_equal(RUN("hsm", "info", "--module", HSM_SOFTHSM_MODULE, "--token",
                             "pkcs11:token=kiln-dev", "--key", HSM_DEV_ISSUING_URI),
                         1);
        expect_out("not logged in");
        expect_out("no object matches");
        unsetenv("SOFTHSM2_CONF");
}

static void test_refusals(void **state)
{
        (void)state;
        assert_int_equal(RUN("hsm", "info", "--dir", dir, "--pin", "123456"), 2);
        expect_out("a PIN is never given on the command line");
        assert_null(strstr(out, "123456"));
        assert_int_equal(RUN("hsm", "info", "--dir", dir, "--pin=123456"), 2);
        assert_null(strstr(out, "123456"));
        assert_int_equal(RUN("hsm", "info", "--module", HSM_SOFTHSM_MODULE, "--token",
                             "pkcs11:token=kiln-dev?pin-value=987654"),
                         1);
        expect_out("carries a PIN");
        assert_null(strstr(out, "987654"));
        assert_int_equal(RUN("hsm", "info"), 2);
        assert_int_equal(RUN("hsm", "init-dev"), 2);
        assert_int_equal(RUN("hsm", "bogus"), 2);
        expect_out("unknown subcommand 'bogus'");
        assert_int_equal(RUN("hsm", "info", "--dir", dir, "--frobnicate"), 2);
        assert_int_equal(RUN("hsm", "--help"), 0);
        expect_out("usage: kiln hsm init-dev --dir DIR");
        expect_out("A PIN is never given on the command line or in a URI.");
        assert_int_equal(RUN("hsm", "info", "--help"), 0);
}

static void test_half_made(void **state)
{
        char half[KILN_PATH_MAX], p[KILN_PATH_MAX], tokens[KILN_PATH_MAX];

        (void)state;
        ht_path(dir, "half", half, sizeof(half));
        assert_int_equal(RUN("hsm", "init-dev", "--dir", half), 0);
        ht_path(half, HSM_DEV_ISSUING_PEM, p, sizeof(p));
        assert_int_equal(unlink(p), 0);
        assert_int_equal(RUN("hsm", "init-dev", "--dir", half), 1);
        expect_out("holds part of a development PKI (missing: issuing-ca.pem)");
        expect_out("remove the directory and run init-dev again");
        ht_assert_no_secret(out, half, NULL);
        /* every file there, but the token store is gone */
        ht_path(dir, "broken", half, sizeof(half));
        assert_int_equal(RUN("hsm", "init-dev", "--dir", half), 0);
        ht_path(half, HSM_DEV_TOKENS, tokens, sizeof(tokens));
        ht_rmrf(tokens);
        assert_int_equal(mkdir(tokens, 0700), 0);
        assert_int_equal(RUN("hsm", "init-dev", "--dir", half), 1);
        expect_out("holds a development PKI that does not work");
        expect_out("no token matches");
        ht_assert_no_secret(out, half, NULL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_init_dev),
                cmocka_unit_test(test_info),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_half_made),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
