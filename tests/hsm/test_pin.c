/* PIN sources: environment variable and owner-only file; every refusal names the source only. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hsm_test.h"
#include "kiln/hsm.h"
#include "kiln/secret.h"

#define SECRET "correct-horse-7731"

static char dir[KILN_PATH_MAX];

static int setup(void **state)
{
        (void)state;
        ht_dir("pin", dir, sizeof(dir));
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        ht_rmrf(dir);
        return 0;
}

static void load_ok(enum hsm_pin_source src, const char *ref, const char *want)
{
        struct kiln_secret *s = NULL;

        kiln_err_reset();
        if (hsm_pin_load(src, ref, &s) != KILN_OK)
                fail_msg("%s: %s", ref, kiln_err_detail());
        assert_int_equal(s->len, strlen(want));
        assert_memory_equal(s->p, want, s->len);
        kiln_secret_free(s);
}

static void load_bad(enum hsm_pin_source src, const char *ref, const char *want)
{
        struct kiln_secret *s = NULL;

        kiln_err_reset();
        assert_int_equal(hsm_pin_load(src, ref, &s), KILN_E_HSM_PIN_SOURCE);
        assert_null(s);
        if (strstr(kiln_err_detail(), want) == NULL)
                fail_msg("detail '%s' lacks '%s'", kiln_err_detail(), want);
        ht_assert_no_secret(kiln_err_detail(), NULL, SECRET);
}

static void file_with(const char *name, const char *content, unsigned mode, char *path)
{
        ht_path(dir, name, path, KILN_PATH_MAX);
        ht_write(path, content, strlen(content), mode);
}

static void test_env(void **state)
{
        char big[KILN_PIN_MAX + 2];

        (void)state;
        assert_int_equal(setenv("KILN_TEST_PIN", SECRET, 1), 0);
        load_ok(HSM_PIN_ENV, "KILN_TEST_PIN", SECRET);
        assert_int_equal(setenv("KILN_TEST_PIN", "", 1), 0);
        load_bad(HSM_PIN_ENV, "KILN_TEST_PIN", "PIN environment variable 'KILN_TEST_PIN' is empty");
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(setenv("KILN_TEST_PIN", big, 1), 0);
        load_bad(HSM_PIN_ENV, "KILN_TEST_PIN", "longer than 256 bytes");
        big[KILN_PIN_MAX] = '\0';
        assert_int_equal(setenv("KILN_TEST_PIN", big, 1), 0);
        load_ok(HSM_PIN_ENV, "KILN_TEST_PIN", big);
        unsetenv("KILN_TEST_PIN");
        load_bad(HSM_PIN_ENV, "KILN_TEST_PIN", "is not set");
        load_bad(HSM_PIN_ENV, "", "no PIN source");
        load_bad(HSM_PIN_NONE, "x", "no PIN source");
}

static void test_file_ok(void **state)
{
        char p[KILN_PATH_MAX];

        (void)state;
        file_with("pin-0600", SECRET, 0600, p);
        load_ok(HSM_PIN_FILE, p, SECRET);
        /* one trailing newline (LF or CRLF) is not part of the PIN */
        file_with("pin-nl", SECRET "\n", 0400, p);
        load_ok(HSM_PIN_FILE, p, SECRET);
        file_with("pin-crlf", SECRET "\r\n", 0600, p);
        load_ok(HSM_PIN_FILE, p, SECRET);
        file_with("pin-space", SECRET " \n\n", 0600, p);
        load_ok(HSM_PIN_FILE, p, SECRET " \n");
}

static void test_file_refused(void **state)
{
        char p[KILN_PATH_MAX], link[KILN_PATH_MAX], big[KILN_PIN_MAX + 8];

        (void)state;
        file_with("pin-0640", SECRET, 0640, p);
        load_bad(HSM_PIN_FILE, p, "has mode 0640: it must be readable only by its owner");
        file_with("pin-0604", SECRET, 0604, p);
        load_bad(HSM_PIN_FILE, p, "has mode 0604");
        file_with("pin-0620", SECRET, 0620, p);
        load_bad(HSM_PIN_FILE, p, "has mode 0620");
        file_with("pin-ok", SECRET, 0600, p);
        ht_path(dir, "pin-link", link, sizeof(link));
        assert_int_equal(symlink(p, link), 0);
        load_bad(HSM_PIN_FILE, link, "is a symbolic link: refused");
        load_bad(HSM_PIN_FILE, dir, "is not a regular file");
        ht_path(dir, "missing", p, sizeof(p));
        load_bad(HSM_PIN_FILE, p, "cannot open PIN file");
        file_with("pin-empty", "", 0600, p);
        load_bad(HSM_PIN_FILE, p, "is empty");
        file_with("pin-nl-only", "\n", 0600, p);
        load_bad(HSM_PIN_FILE, p, "is empty");
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        file_with("pin-big", big, 0600, p);
        load_bad(HSM_PIN_FILE, p, "larger than 256 bytes");
}

static void test_file_not_owned(void **state)
{
        char p[KILN_PATH_MAX];

        (void)state;
        file_with("pin-other-owner", SECRET, 0600, p);
        if (geteuid() != 0) {
                /* only root can give a file away; CI runs as root (README), so this runs there */
                print_message("not root: the ownership refusal is exercised in CI only\n");
                skip();
        }
        assert_int_equal(chown(p, 65534, 65534), 0);
        load_bad(HSM_PIN_FILE, p, "is owned by uid 65534, not by the user running kiln");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_env),
                cmocka_unit_test(test_file_ok),
                cmocka_unit_test(test_file_refused),
                cmocka_unit_test(test_file_not_owned),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
