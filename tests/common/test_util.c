/* Numbers, hex, strings, time formatting, files, error detail. */
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

#include "kiln/error.h"
#include "kiln/util.h"

static void test_parse(void **state)
{
        uint64_t v = 0;
        uint32_t w = 0;

        (void)state;
        assert_int_equal(kiln_parse_u64("0", 0, 10, &v), KILN_OK);
        assert_int_equal(v, 0);
        assert_int_equal(kiln_parse_u64("0x1F", 0, 100, &v), KILN_OK);
        assert_int_equal(v, 31);
        assert_int_equal(kiln_parse_u64("10", 0, 9, &v), KILN_E_RANGE);
        assert_int_equal(kiln_parse_u64("4", 5, 9, &v), KILN_E_RANGE);
        assert_int_equal(kiln_parse_u64("", 0, 9, &v), KILN_E_SYNTAX);
        assert_int_equal(kiln_parse_u64("-1", 0, 9, &v), KILN_E_SYNTAX);
        assert_int_equal(kiln_parse_u64(" 1", 0, 9, &v), KILN_E_SYNTAX);
        assert_int_equal(kiln_parse_u64("1x", 0, 9, &v), KILN_E_SYNTAX);
        assert_int_equal(kiln_parse_u64("0x", 0, 9, &v), KILN_E_SYNTAX);
        assert_int_equal(kiln_parse_u64("99999999999999999999999", 0, UINT64_MAX, &v),
                         KILN_E_RANGE);
        assert_int_equal(kiln_parse_u32("4294967295", 0, UINT32_MAX, &w), KILN_OK);
        assert_int_equal(w, UINT32_MAX);
        assert_int_equal(kiln_parse_u32("4294967296", 0, UINT32_MAX, &w), KILN_E_RANGE);
}

static void test_hex(void **state)
{
        uint8_t in[] = {0x00, 0xAB, 0xff}, out[3];
        char s[7];
        size_t n = 0;

        (void)state;
        assert_int_equal(kiln_hex_encode(in, 3, s, sizeof(s)), KILN_OK);
        assert_string_equal(s, "00abff");
        assert_int_equal(kiln_hex_encode(in, 3, s, 6), KILN_E_RANGE);
        assert_int_equal(kiln_hex_decode("00ABff", out, sizeof(out), &n), KILN_OK);
        assert_int_equal(n, 3);
        assert_memory_equal(out, in, 3);
        assert_int_equal(kiln_hex_decode("0", out, sizeof(out), &n), KILN_E_SYNTAX);
        assert_int_equal(kiln_hex_decode("zz", out, sizeof(out), &n), KILN_E_SYNTAX);
        assert_int_equal(kiln_hex_decode("00112233", out, sizeof(out), &n), KILN_E_RANGE);
}

static void test_strings(void **state)
{
        char b[4];

        (void)state;
        assert_int_equal(kiln_strlcpy(b, "abc", sizeof(b)), KILN_OK);
        assert_string_equal(b, "abc");
        assert_int_equal(kiln_strlcpy(b, "abcd", sizeof(b)), KILN_E_RANGE);
        assert_string_equal(b, "abc");
        assert_int_equal(kiln_snprintf(b, sizeof(b), "%d", 123), KILN_OK);
        assert_int_equal(kiln_snprintf(b, sizeof(b), "%d", 1234), KILN_E_RANGE);
}

static void test_time(void **state)
{
        char s[32];

        (void)state;
        assert_int_equal(kiln_utc_iso8601(0, s, sizeof(s)), KILN_OK);
        assert_string_equal(s, "1970-01-01T00:00:00.000Z");
        assert_int_equal(kiln_utc_iso8601(1795000000123LL, s, sizeof(s)), KILN_OK);
        assert_string_equal(s, "2026-11-18T11:06:40.123Z");
        assert_int_equal(kiln_utc_iso8601(-1, s, sizeof(s)), KILN_E_RANGE);
        assert_true(kiln_now_us() > 0);
}

static void test_files(void **state)
{
        char dir[] = "/tmp/kiln-test-XXXXXX", path[256], nested[256];
        uint8_t *data = NULL;
        size_t n = 0;
        struct stat st;

        (void)state;
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/f", dir);
        assert_int_equal(kiln_file_write_atomic(path, "hello", 5, 0600), KILN_OK);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(kiln_file_read(path, 5, &data, &n), KILN_OK);
        assert_int_equal(n, 5);
        assert_string_equal((char *)data, "hello");
        kiln_free(data);
        kiln_err_reset();
        assert_int_equal(kiln_file_read(path, 4, &data, &n), KILN_E_LIMIT);
        assert_non_null(strstr(kiln_err_detail(), "over the limit"));
        kiln_err_reset();
        assert_int_equal(kiln_file_read("/nonexistent/x", 4, &data, &n), KILN_E_NOT_FOUND);
        assert_int_equal(kiln_file_read(dir, 4, &data, &n), KILN_E_INVAL);
        snprintf(nested, sizeof(nested), "%s/a/b/c", dir);
        assert_int_equal(kiln_mkdirs(nested, 0700), KILN_OK);
        assert_int_equal(stat(nested, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        unlink(path);
        snprintf(path, sizeof(path), "rm -rf '%s'", dir);
        assert_int_equal(system(path), 0);
}

static void test_detail_first_wins(void **state)
{
        (void)state;
        kiln_err_reset();
        assert_string_equal(kiln_err_detail(), "");
        assert_int_equal(kiln_fail(KILN_E_IO, "low level %d", 1), KILN_E_IO);
        assert_int_equal(kiln_fail(KILN_E_INVAL, "higher level"), KILN_E_INVAL);
        assert_string_equal(kiln_err_detail(), "low level 1");
        assert_int_equal(kiln_err_detail_code(), KILN_E_IO);
        kiln_fail_append(KILN_E_IO, "CKR_%s", "PIN_INCORRECT");
        assert_string_equal(kiln_err_detail(), "low level 1: CKR_PIN_INCORRECT");
        kiln_err_reset();
        assert_string_equal(kiln_err_detail(), "");
        assert_string_equal(kiln_errname(KILN_E_TIMEOUT), "KILN_E_TIMEOUT");
        assert_string_equal(kiln_strerror(-9999), "unknown error");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),   cmocka_unit_test(test_hex),
                cmocka_unit_test(test_strings), cmocka_unit_test(test_time),
                cmocka_unit_test(test_files),   cmocka_unit_test(test_detail_first_wins),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
