/* Bounded buffer and reader: limits, sticky errors, boundary sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kiln/buf.h"
#include "kiln/secret.h"
#include "kiln/util.h"

static void test_put_and_limit(void **state)
{
        struct kiln_buf b;
        uint8_t chunk[10] = {0};

        (void)state;
        kiln_buf_init(&b, 16);
        assert_int_equal(kiln_buf_put(&b, chunk, 10), KILN_OK);
        assert_int_equal(kiln_buf_put_le32(&b, 0x11223344), KILN_OK);
        assert_int_equal(b.len, 14);
        assert_int_equal(kiln_buf_put_le16(&b, 0xAABB), KILN_OK); /* exactly max */
        assert_int_equal(b.len, 16);
        assert_int_equal(kiln_buf_put_u8(&b, 1), KILN_E_LIMIT); /* max + 1 */
        assert_int_equal(kiln_buf_error(&b), KILN_E_LIMIT);
        /* sticky: a later small put still fails and does not change len */
        assert_int_equal(kiln_buf_put(&b, chunk, 0), KILN_E_LIMIT);
        assert_int_equal(b.len, 16);
        assert_memory_equal(b.data + 10, "\x44\x33\x22\x11\xbb\xaa", 6);
        kiln_buf_clear(&b);
        assert_int_equal(kiln_buf_error(&b), KILN_OK);
        assert_int_equal(kiln_buf_printf(&b, "%s-%d", "ab", 7), KILN_OK);
        assert_string_equal(kiln_buf_cstr(&b), "ab-7");
        kiln_buf_free(&b);
        kiln_buf_free(NULL);
}

static void test_printf_long(void **state)
{
        struct kiln_buf b;
        char big[600];

        (void)state;
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        kiln_buf_init(&b, 4096);
        assert_int_equal(kiln_buf_printf(&b, "<%s>", big), KILN_OK);
        assert_int_equal(b.len, 601);
        assert_int_equal(kiln_buf_cstr(&b)[600], '>');
        kiln_buf_free(&b);
        kiln_buf_init(&b, 100);
        assert_int_equal(kiln_buf_printf(&b, "%s", big), KILN_E_LIMIT);
        kiln_buf_free(&b);
}

static void test_reader(void **state)
{
        const uint8_t data[] = {1, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 9};
        struct kiln_rd r;
        uint8_t u8 = 0;
        uint16_t u16 = 0;
        uint32_t u32 = 0;
        const uint8_t *p;

        (void)state;
        kiln_rd_init(&r, data, sizeof(data));
        assert_int_equal(kiln_rd_u8(&r, &u8), KILN_OK);
        assert_int_equal(u8, 1);
        assert_int_equal(kiln_rd_le16(&r, &u16), KILN_OK);
        assert_int_equal(u16, 0x1234);
        assert_int_equal(kiln_rd_le32(&r, &u32), KILN_OK);
        assert_int_equal(u32, 0x12345678);
        assert_int_equal(kiln_rd_end(&r), KILN_E_RANGE);
        u32 = 77;
        assert_int_equal(kiln_rd_le32(&r, &u32), KILN_E_TRUNCATED);
        assert_int_equal(u32, 77); /* output untouched on failure */
        assert_int_equal(kiln_rd_bytes(&r, 2, &p), KILN_E_TRUNCATED);
        assert_int_equal(kiln_rd_bytes(&r, 1, &p), KILN_OK);
        assert_int_equal(*p, 9);
        assert_int_equal(kiln_rd_end(&r), KILN_OK);
        assert_int_equal(kiln_rd_bytes(&r, 0, &p), KILN_OK);
}

static void test_secret(void **state)
{
        struct kiln_secret *s = NULL;

        (void)state;
        assert_int_equal(kiln_secret_from("hunter2", 7, &s), KILN_OK);
        assert_int_equal(s->len, 7);
        assert_true(kiln_ct_equal(s->p, "hunter2", 7));
        assert_false(kiln_ct_equal(s->p, "hunter3", 7));
        kiln_secret_free(s);
        kiln_secret_free(NULL);
        assert_int_equal(kiln_secret_new(0, &s), KILN_E_INVAL);
}

static void test_alloc_failure(void **state)
{
        struct kiln_buf b;

        (void)state;
        kiln_buf_init(&b, 1024);
        kiln_alloc_fail_after(0);
        assert_int_equal(kiln_buf_put_u8(&b, 1), KILN_E_NOMEM);
        kiln_alloc_fail_after(-1);
        kiln_buf_clear(&b);
        assert_int_equal(kiln_buf_put_u8(&b, 1), KILN_OK);
        kiln_buf_free(&b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_put_and_limit), cmocka_unit_test(test_printf_long),
                cmocka_unit_test(test_reader),        cmocka_unit_test(test_secret),
                cmocka_unit_test(test_alloc_failure),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
