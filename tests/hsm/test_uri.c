/* PKCS#11 URI parsing (RFC 7512): attributes, percent-decoding, limits, refusals. */
#include <string.h>

#include "hsm_test.h"
#include "kiln/hsm.h"

static struct hsm_uri parse_ok(const char *s)
{
        struct hsm_uri u;

        kiln_err_reset();
        if (hsm_uri_parse(s, &u) != KILN_OK)
                fail_msg("'%s': %s", s, kiln_err_detail());
        return u;
}

static void parse_bad(const char *s, const char *want)
{
        struct hsm_uri u;

        memset(&u, 0x5a, sizeof(u));
        kiln_err_reset();
        assert_int_equal(hsm_uri_parse(s, &u), KILN_E_HSM_URI);
        if (strstr(kiln_err_detail(), want) == NULL)
                fail_msg("'%s': detail '%s' lacks '%s'", s, kiln_err_detail(), want);
        /* output untouched on failure */
        assert_int_equal(u.has, 0x5a5a5a5a);
}

static void test_full(void **state)
{
        struct hsm_uri u = parse_ok(
                "pkcs11:token=kiln-dev;manufacturer=SoftHSM%20project;serial=1a2b3c;"
                "model=SoftHSM%20v2;slot-id=42;slot-description=Slot%200;"
                "slot-manufacturer=ACME;object=kiln-dev-issuing;id=%01%a2%FF;type=private");

        (void)state;
        assert_int_equal(u.has, HSM_URI_TOKEN | HSM_URI_MANUFACTURER | HSM_URI_SERIAL |
                                        HSM_URI_MODEL | HSM_URI_SLOT_ID |
                                        HSM_URI_SLOT_DESCRIPTION | HSM_URI_SLOT_MANUFACTURER |
                                        HSM_URI_OBJECT | HSM_URI_ID | HSM_URI_TYPE);
        assert_string_equal(u.token, "kiln-dev");
        assert_string_equal(u.manufacturer, "SoftHSM project");
        assert_string_equal(u.serial, "1a2b3c");
        assert_string_equal(u.model, "SoftHSM v2");
        assert_int_equal(u.slot_id, 42);
        assert_string_equal(u.slot_description, "Slot 0");
        assert_string_equal(u.slot_manufacturer, "ACME");
        assert_string_equal(u.object, "kiln-dev-issuing");
        assert_int_equal(u.id_len, 3);
        assert_memory_equal(u.id, "\x01\xa2\xff", 3);
        assert_int_equal(u.type, HSM_OBJ_PRIVATE);
}

static void test_minimal_and_types(void **state)
{
        struct hsm_uri u;

        (void)state;
        u = parse_ok("pkcs11:");
        assert_int_equal(u.has, 0);
        u = parse_ok("PKCS11:token=a");
        assert_string_equal(u.token, "a");
        u = parse_ok("pkcs11:type=public");
        assert_int_equal(u.type, HSM_OBJ_PUBLIC);
        u = parse_ok("pkcs11:type=secret-key");
        assert_int_equal(u.type, HSM_OBJ_SECRET);
        u = parse_ok("pkcs11:type=cert");
        assert_int_equal(u.type, HSM_OBJ_CERT);
        u = parse_ok("pkcs11:type=data");
        assert_int_equal(u.type, HSM_OBJ_DATA);
        /* an empty value is a value */
        u = parse_ok("pkcs11:object=");
        assert_true(u.has & HSM_URI_OBJECT);
        assert_string_equal(u.object, "");
        /* a label of exactly 32 bytes fits the token field */
        u = parse_ok("pkcs11:token=0123456789abcdef0123456789abcdef");
        assert_int_equal(strlen(u.token), 32);
        u = parse_ok("pkcs11:object=a%3Bb%3Fc");
        assert_string_equal(u.object, "a;b?c");
}

static void test_refusals(void **state)
{
        char long_uri[KILN_URI_MAX + 16];

        (void)state;
        parse_bad("pkcs11:token=x?pin-value=1234", "carries a PIN (pin-value)");
        parse_bad("pkcs11:token=x?pin-source=file:/etc/pin", "carries a PIN (pin-source)");
        parse_bad("pkcs11:token=x?module-path=/tmp/evil.so", "chosen by the configuration");
        parse_bad("pkcs11:token=x?foo=bar", "unknown PKCS#11 URI query attribute 'foo'");
        parse_bad("pkcs11:lable=x", "unknown PKCS#11 URI attribute 'lable'");
        parse_bad("pkcs11:library-manufacturer=x", "not supported");
        parse_bad("file:token=x", "must start with 'pkcs11:'");
        parse_bad("pkcs11:token=a;token=b", "appears twice");
        parse_bad("pkcs11:token", "without '='");
        parse_bad("pkcs11:token=a;", "empty attribute");
        parse_bad("pkcs11:;token=a", "empty attribute");
        parse_bad("pkcs11:token=a?", "empty query");
        parse_bad("pkcs11:token=a%2", "truncated");
        parse_bad("pkcs11:token=a%zz", "bad %-escape");
        parse_bad("pkcs11:token=a%00b", "NUL byte");
        parse_bad("pkcs11:token=a b", "must be %-encoded");
        parse_bad("pkcs11:type=privat", "is not one of");
        parse_bad("pkcs11:slot-id=12a", "decimal number");
        parse_bad("pkcs11:slot-id=", "decimal number");
        parse_bad("pkcs11:slot-id=99999999999999999999999", "decimal number");
        parse_bad("pkcs11:token=0123456789abcdef0123456789abcdefX", "longer than 32 bytes");
        parse_bad("pkcs11:=x", "name of 0 bytes");
        parse_bad("pkcs11:TOKEN=x", "malformed PKCS#11 URI attribute name");
        memset(long_uri, 'a', sizeof(long_uri));
        memcpy(long_uri, "pkcs11:object=", 14);
        long_uri[sizeof(long_uri) - 1] = '\0';
        parse_bad(long_uri, "longer than");
        kiln_err_reset();
        assert_int_equal(hsm_uri_parse(NULL, &(struct hsm_uri){0}), KILN_E_HSM_URI);
}

/* No message repeats a URI's query values: they might be a PIN. */
static void test_no_pin_in_detail(void **state)
{
        struct hsm_uri u;

        (void)state;
        kiln_err_reset();
        assert_int_equal(hsm_uri_parse("pkcs11:token=x?pin-value=s3cr3t-PIN", &u), KILN_E_HSM_URI);
        assert_null(strstr(kiln_err_detail(), "s3cr3t"));
        kiln_err_reset();
        assert_int_equal(hsm_uri_parse("pkcs11:pin-value=s3cr3t-PIN", &u), KILN_E_HSM_URI);
        assert_null(strstr(kiln_err_detail(), "s3cr3t"));
        kiln_err_reset();
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full),
                cmocka_unit_test(test_minimal_and_types),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_no_pin_in_detail),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
