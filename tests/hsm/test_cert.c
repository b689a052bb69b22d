/*
 * Certificate issuance through the token: P-256 and P-384 device keys, every template feature
 * checked in the parsed certificate, template errors, an RSA-PSS issuing CA, and several threads
 * issuing at once through the session pool. Every certificate issued here is written to a file and
 * checked with `openssl verify -x509_strict` and `certtool --verify-chain`.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "hsm_internal.h"
#include "hsm_test.h"
#include "kiln/hsm_cert.h"
#include "kiln/hsm_devkey.h"

static char dir[KILN_PATH_MAX];
static struct hsm_dev dev;
static struct hsm_token *tok;
static struct hsm_issuer *iss;
static unsigned cert_no;

static const struct hsm_name_attr subject[] = {
        {"C", "DE"},
        {"ST", "Bavaria"},
        {"L", "Munich"},
        {"O", "Kiln Test Devices"},
        {"OU", "Line 3"},
        {"CN", "SP-A1-000042"},
        {"serialNumber", "000042"},
        {"1.3.6.1.4.1.55555.1.1", "custom attribute"},
};
static const char *const eku[] = {"clientAuth", "1.3.6.1.4.1.55555.2.1"};
static const struct hsm_san san[] = {
        {HSM_SAN_DNS, "sp-a1-000042.devices.example"},
        {HSM_SAN_URI, "urn:kiln:unit:000042"},
        {HSM_SAN_EMAIL, "quality@example.com"},
        {HSM_SAN_IP, "192.0.2.7"},
        {HSM_SAN_IP, "2001:db8::7"},
};
static const struct hsm_extension ext[] = {
        {"1.3.6.1.4.1.55555.3.1", 0, HSM_EXT_DER_HEX, "0403010203"},
        {"1.3.6.1.4.1.55555.3.2", 0, HSM_EXT_UTF8, "product=smartplug-a1"},
};

static struct hsm_cert_template full_template(void)
{
        struct hsm_cert_template t = {
                .subject = subject,
                .n_subject = sizeof(subject) / sizeof(subject[0]),
                .not_before = 0,
                .not_after = HSM_TIME_NO_EXPIRY,
                .key_usage = HSM_KU_DIGITAL_SIGNATURE | HSM_KU_KEY_AGREEMENT,
                .eku = eku,
                .n_eku = 2,
                .san = san,
                .n_san = sizeof(san) / sizeof(san[0]),
                .ext = ext,
                .n_ext = 2,
        };
        return t;
}

static int group_setup(void **state)
{
        struct hsm_config cfg;

        (void)state;
        ht_dev("cert", dir, sizeof(dir), &dev);
        cfg = dev.cfg;
        cfg.production = 1;
        cfg.pool_size = 4;
        if (hsm_token_open(&cfg, &tok) != KILN_OK || hsm_issuer_load(tok, HSM_DEV_ISSUING_URI, &iss))
                fail_msg("setup: %s", kiln_err_detail());
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        hsm_issuer_free(iss);
        hsm_token_free(tok);
        ht_rmrf(dir);
        return 0;
}

static X509 *parse(const struct hsm_cert *c)
{
        const unsigned char *p = c->der;
        X509 *x = d2i_X509(NULL, &p, (long)c->len);

        assert_non_null(x);
        assert_true(p == c->der + c->len);
        return x;
}

static void tools_check(const struct hsm_cert *c, const char *issuing_pem)
{
        char name[32];

        snprintf(name, sizeof(name), "leaf-%04u", cert_no++);
        ht_verify_with_tools(dir, name, c->der, c->len, issuing_pem);
}

static void check_ext_critical(X509 *x, int nid, int critical)
{
        int i = X509_get_ext_by_NID(x, nid, -1);

        assert_true(i >= 0);
        assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(x, i)), critical);
        /* present once */
        assert_true(X509_get_ext_by_NID(x, nid, i) < 0);
}

static void check_extra_ext(X509 *x, const char *oid, const uint8_t *want, size_t n)
{
        ASN1_OBJECT *o = OBJ_txt2obj(oid, 1);
        int i = X509_get_ext_by_OBJ(x, o, -1);
        const ASN1_OCTET_STRING *v;

        assert_true(i >= 0);
        v = X509_EXTENSION_get_data(X509_get_ext(x, i));
        assert_int_equal(ASN1_STRING_length(v), (int)n);
        assert_memory_equal(ASN1_STRING_get0_data(v), want, n);
        ASN1_OBJECT_free(o);
}

static void check_features(const struct hsm_cert *c, const uint8_t *point, size_t point_len,
                           int sig_nid)
{
        static const uint8_t der_ext[] = {0x04, 0x03, 0x01, 0x02, 0x03};
        uint8_t utf8_ext[2 + 20] = {0x0c, 20};
        X509 *x = parse(c);
        const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
        const ASN1_TIME *na = X509_get0_notAfter(x);
        BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
        BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
        EXTENDED_KEY_USAGE *xku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
        GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
        const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);
        const ASN1_OCTET_STRING *aki = X509_get0_authority_key_id(x);
        const ASN1_OCTET_STRING *issuer_ski;
        const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);
        uint8_t sha[SHA256_DIGEST_LENGTH], want_ski[SHA_DIGEST_LENGTH];
        const uint8_t *idder;
        size_t idlen = 0;
        X509 *ca;
        char cn[64];

        assert_int_equal(X509_get_version(x), X509_VERSION_3);
        /* serial: positive, 16 bytes, at least 64 bits, the one reported */
        assert_int_equal(ASN1_STRING_type(sn), V_ASN1_INTEGER);
        assert_int_equal(ASN1_STRING_length(sn), HSM_SERIAL_LEN);
        assert_int_equal(ASN1_STRING_get0_data(sn)[0] & 0x80, 0);
        assert_true(BN_num_bits(bn) >= 64);
        assert_memory_equal(ASN1_STRING_get0_data(sn), c->serial, HSM_SERIAL_LEN);
        BN_free(bn);
        /* notAfter: GeneralizedTime 99991231235959Z */
        assert_int_equal(ASN1_STRING_type(na), V_ASN1_GENERALIZEDTIME);
        assert_int_equal(ASN1_STRING_length(na), 15);
        assert_memory_equal(ASN1_STRING_get0_data(na), "99991231235959Z", 15);
        assert_int_equal(ASN1_STRING_type(X509_get0_notBefore(x)), V_ASN1_UTCTIME);
        assert_int_equal(X509_get_signature_nid(x), sig_nid);
        /* subject from the template, in order */
        assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 8);
        assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
                                              sizeof(cn)) > 0);
        assert_string_equal(cn, "SP-A1-000042");
        assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_serialNumber, cn,
                                              sizeof(cn)) > 0);
        assert_string_equal(cn, "000042");
        /* basicConstraints CA:false critical, keyUsage critical, EKU, SAN */
        check_ext_critical(x, NID_basic_constraints, 1);
        assert_non_null(bc);
        assert_int_equal(bc->ca, 0);
        check_ext_critical(x, NID_key_usage, 1);
        assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT);
        check_ext_critical(x, NID_ext_key_usage, 0);
        assert_true(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
        assert_int_equal(sk_ASN1_OBJECT_num(xku), 2);
        check_ext_critical(x, NID_subject_alt_name, 0);
        assert_int_equal(sk_GENERAL_NAME_num(gens), 5);
        assert_int_equal(sk_GENERAL_NAME_value(gens, 0)->type, GEN_DNS);
        assert_int_equal(sk_GENERAL_NAME_value(gens, 1)->type, GEN_URI);
        assert_int_equal(sk_GENERAL_NAME_value(gens, 2)->type, GEN_EMAIL);
        assert_int_equal(sk_GENERAL_NAME_value(gens, 3)->type, GEN_IPADD);
        assert_int_equal(ASN1_STRING_length(sk_GENERAL_NAME_value(gens, 3)->d.iPAddress), 4);
        assert_int_equal(ASN1_STRING_length(sk_GENERAL_NAME_value(gens, 4)->d.iPAddress), 16);
        /* extra extensions by OID: DER as given, text as a UTF8String */
        check_extra_ext(x, "1.3.6.1.4.1.55555.3.1", der_ext, sizeof(der_ext));
        memcpy(utf8_ext + 2, "product=smartplug-a1", 20);
        check_extra_ext(x, "1.3.6.1.4.1.55555.3.2", utf8_ext, sizeof(utf8_ext));
        /* SKI = SHA-1 of the device's point; AKI = the issuing CA's SKI */
        assert_non_null(bits);
        assert_int_equal(ASN1_STRING_length(bits), (int)point_len);
        assert_memory_equal(ASN1_STRING_get0_data(bits), point, point_len);
        SHA1(point, point_len, want_ski);
        assert_non_null(ski);
        assert_int_equal(ASN1_STRING_length(ski), SHA_DIGEST_LENGTH);
        assert_memory_equal(ASN1_STRING_get0_data(ski), want_ski, SHA_DIGEST_LENGTH);
        assert_int_equal(hsm_issuer_chain_der(iss, 0, &idder, &idlen), KILN_OK);
        ca = d2i_X509(NULL, &idder, (long)idlen);
        assert_non_null(ca);
        issuer_ski = X509_get0_subject_key_id(ca);
        assert_non_null(aki);
        assert_int_equal(ASN1_OCTET_STRING_cmp(aki, issuer_ski), 0);
        assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(ca)), 0);
        /* the fingerprint the device reports back */
        SHA256(c->der, c->len, sha);
        assert_memory_equal(c->sha256, sha, sizeof(sha));
        X509_free(ca);
        GENERAL_NAMES_free(gens);
        sk_ASN1_OBJECT_pop_free(xku, ASN1_OBJECT_free);
        BASIC_CONSTRAINTS_free(bc);
        X509_free(x);
}

/* The station's flow for one key: PoP, issue, verify, tools, ATTEST with the certificate's key. */
static void issue_for_curve(const char *curve, size_t fs, int sig_nid)
{
        static const uint8_t uid[] = {0xc0, 0xff, 0xee, 0x00, 0x42};
        struct hsm_cert_template t = full_template();
        uint8_t point[97], nonce[32], raw[96];
        size_t point_len = 0;
        struct hsm_devkey *k = NULL, *k2 = NULL;
        struct hsm_cert *c = NULL, *c2 = NULL;
        EVP_PKEY *pk = ht_device_key(curve, point, sizeof(point), &point_len);

        assert_int_equal(hsm_token_random(tok, nonce, sizeof(nonce)), KILN_OK);
        ht_device_sign(pk, HSM_POP_LABEL, nonce, uid, sizeof(uid), 0, raw, fs);
        assert_int_equal(hsm_devkey_parse(point, point_len, &k), KILN_OK);
        assert_int_equal(hsm_devkey_verify_pop(k, nonce, uid, sizeof(uid), 0, raw, 2 * fs),
                         KILN_OK);
        kiln_err_reset();
        if (hsm_cert_issue(iss, &t, k, &c) != KILN_OK)
                fail_msg("hsm_cert_issue: %s", kiln_err_detail());
        check_features(c, point, point_len, sig_nid);
        assert_int_equal(hsm_cert_verify(iss, c->der, c->len), KILN_OK);
        tools_check(c, NULL);
        /* ATTEST with the key taken from the certificate */
        assert_int_equal(hsm_devkey_from_cert(c->der, c->len, &k2), KILN_OK);
        assert_int_equal(hsm_token_random(tok, nonce, sizeof(nonce)), KILN_OK);
        ht_device_sign(pk, HSM_ATTEST_LABEL, nonce, uid, sizeof(uid), 0, raw, fs);
        assert_int_equal(hsm_devkey_verify_attest(k2, nonce, uid, sizeof(uid), 0, raw, 2 * fs),
                         KILN_OK);
        /* the same unit again: a new serial */
        assert_int_equal(hsm_cert_issue(iss, &t, k, &c2), KILN_OK);
        assert_memory_not_equal(c->serial, c2->serial, HSM_SERIAL_LEN);
        tools_check(c2, NULL);
        hsm_cert_free(c);
        hsm_cert_free(c2);
        hsm_devkey_free(k);
        hsm_devkey_free(k2);
        EVP_PKEY_free(pk);
}

static void test_issue_p256(void **state)
{
        (void)state;
        issue_for_curve("P-256", 32, NID_ecdsa_with_SHA256);
}

static void test_issue_p384(void **state)
{
        (void)state;
        issue_for_curve("P-384", 48, NID_ecdsa_with_SHA256);
}

static void test_chain(void **state)
{
        char path[KILN_PATH_MAX];
        const uint8_t *der;
        size_t len = 0;
        X509 *want, *got;
        FILE *f;
        const char *names[2] = {HSM_DEV_ISSUING_PEM, HSM_DEV_ROOT_PEM};

        (void)state;
        assert_int_equal(hsm_issuer_chain_len(iss), 2);
        for (size_t i = 0; i < 2; i++) {
                ht_path(dir, names[i], path, sizeof(path));
                f = fopen(path, "r");
                assert_non_null(f);
                want = PEM_read_X509(f, NULL, NULL, NULL);
                fclose(f);
                assert_int_equal(hsm_issuer_chain_der(iss, i, &der, &len), KILN_OK);
                got = d2i_X509(NULL, &der, (long)len);
                assert_non_null(got);
                assert_int_equal(X509_cmp(want, got), 0);
                X509_free(want);
                X509_free(got);
        }
        assert_int_equal(hsm_issuer_chain_der(iss, 2, &der, &len), KILN_E_RANGE);
}

static void test_empty_subject_san_only(void **state)
{
        static const struct hsm_san only[] = {{HSM_SAN_URI, "urn:dev:ops:32473-smartplug-42"}};
        struct hsm_cert_template t = {
                .not_before = (int64_t)time(NULL) - 60,
                .not_after = (int64_t)time(NULL) + 86400,
                .key_usage = HSM_KU_DIGITAL_SIGNATURE,
                .san = only,
                .n_san = 1,
        };
        uint8_t point[65];
        size_t len = 0;
        EVP_PKEY *pk = ht_device_key("P-256", point, sizeof(point), &len);
        struct hsm_devkey *k = NULL;
        struct hsm_cert *c = NULL;
        X509 *x;

        (void)state;
        assert_int_equal(hsm_devkey_parse(point, len, &k), KILN_OK);
        assert_int_equal(hsm_cert_issue(iss, &t, k, &c), KILN_OK);
        x = parse(c);
        assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
        check_ext_critical(x, NID_subject_alt_name, 1);
        assert_int_equal(ASN1_STRING_type(X509_get0_notAfter(x)), V_ASN1_UTCTIME);
        assert_int_equal(X509_get_ext_by_NID(x, NID_ext_key_usage, -1), -1);
        tools_check(c, NULL);
        X509_free(x);
        hsm_cert_free(c);
        hsm_devkey_free(k);
        EVP_PKEY_free(pk);
}

static void expect_template(struct hsm_cert_template *t, const char *want)
{
        uint8_t point[65];
        size_t len = 0;
        EVP_PKEY *pk = ht_device_key("P-256", point, sizeof(point), &len);
        struct hsm_devkey *k = NULL;
        struct hsm_cert *c = NULL;
        int r;

        assert_int_equal(hsm_devkey_parse(point, len, &k), KILN_OK);
        kiln_err_reset();
        r = hsm_cert_issue(iss, t, k, &c);
        if (r != KILN_E_CERT_TEMPLATE || strstr(kiln_err_detail(), want) == NULL)
                fail_msg("got %s '%s', expected KILN_E_CERT_TEMPLATE '%s'", kiln_errname(r),
                         kiln_err_detail(), want);
        ht_assert_no_secret(kiln_err_detail(), dir, NULL);
        assert_null(c);
        kiln_err_reset();
        assert_int_equal(hsm_cert_template_check(t), KILN_E_CERT_TEMPLATE);
        kiln_err_reset();
        hsm_devkey_free(k);
        EVP_PKEY_free(pk);
}

static void test_template_errors(void **state)
{
        static const struct hsm_name_attr bad_type[] = {{"NOPE", "x"}};
        static const struct hsm_name_attr long_c[] = {{"C", "Germany"}};
        static const char *const bad_eku[] = {"notAPurpose"};
        static const struct hsm_san bad_ip[] = {{HSM_SAN_IP, "300.1.2.3"}};
        static const struct hsm_san bad_dns[] = {{HSM_SAN_DNS, "a b"}};
        static const struct hsm_extension bad_hex[] = {{"1.2.3.4", 0, HSM_EXT_DER_HEX, "04zz"}};
        static const struct hsm_extension two_tlv[] = {{"1.2.3.4", 0, HSM_EXT_DER_HEX, "05000500"}};
        static const struct hsm_extension bad_oid[] = {{"foo", 0, HSM_EXT_UTF8, "x"}};
        static const struct hsm_extension own[] = {{"2.5.29.19", 1, HSM_EXT_DER_HEX, "3000"}};
        static const struct hsm_extension dup[] = {{"1.2.3.4", 0, HSM_EXT_UTF8, "a"},
                                                   {"1.2.3.4", 0, HSM_EXT_UTF8, "b"}};
        static const struct hsm_extension bad_utf8[] = {{"1.2.3.4", 0, HSM_EXT_UTF8, "\xc3\x28"}};
        struct hsm_cert_template t;

        (void)state;
        t = full_template();
        t.key_usage |= HSM_KU_KEY_CERT_SIGN;
        expect_template(&t, "keyCertSign and cRLSign are for CA certificates");
        t = full_template();
        t.key_usage = 0;
        expect_template(&t, "no key usage");
        t = full_template();
        t.n_subject = 0;
        t.n_san = 0;
        expect_template(&t, "empty subject and no subjectAltName");
        t = full_template();
        t.subject = bad_type;
        t.n_subject = 1;
        expect_template(&t, "subject attribute 'NOPE'");
        t = full_template();
        t.subject = long_c;
        t.n_subject = 1;
        expect_template(&t, "subject C 'Germany' is not allowed there");
        t = full_template();
        t.eku = bad_eku;
        t.n_eku = 1;
        expect_template(&t, "extended key usage 'notAPurpose'");
        t = full_template();
        t.san = bad_ip;
        t.n_san = 1;
        expect_template(&t, "IP address '300.1.2.3'");
        t.san = bad_dns;
        expect_template(&t, "contains a space");
        t = full_template();
        t.ext = bad_hex;
        t.n_ext = 1;
        expect_template(&t, "value is not hex");
        t.ext = two_tlv;
        expect_template(&t, "not exactly one DER element");
        t.ext = bad_oid;
        expect_template(&t, "'foo' is not a dotted OID");
        t.ext = own;
        expect_template(&t, "comes from the template's own fields");
        t.ext = bad_utf8;
        expect_template(&t, "value is not UTF-8");
        t.ext = dup;
        t.n_ext = 2;
        expect_template(&t, "appears twice");
        t = full_template();
        t.not_before = 2000;
        t.not_after = 1000;
        expect_template(&t, "not a forward range");
        t = full_template();
        t.not_after = HSM_TIME_NO_EXPIRY + 1;
        expect_template(&t, "not a forward range");
}

static void test_verify_rejects(void **state)
{
        struct hsm_cert_template t = full_template();
        uint8_t point[65];
        size_t len = 0;
        EVP_PKEY *pk = ht_device_key("P-256", point, sizeof(point), &len);
        struct hsm_devkey *k = NULL;
        struct hsm_cert *c = NULL;
        const uint8_t *root_der;
        size_t root_len = 0;

        (void)state;
        assert_int_equal(hsm_devkey_parse(point, len, &k), KILN_OK);
        assert_int_equal(hsm_cert_issue(iss, &t, k, &c), KILN_OK);
        tools_check(c, NULL);
        /* a flipped bit in the signature */
        c->der[c->len - 3] ^= 0x01;
        kiln_err_reset();
        assert_int_equal(hsm_cert_verify(iss, c->der, c->len), KILN_E_CERT_VERIFY);
        assert_non_null(strstr(kiln_err_detail(), "does not verify against issuing CA"));
        ht_assert_no_secret(kiln_err_detail(), dir, NULL);
        kiln_err_reset();
        /* the root is not issued by the issuing CA */
        assert_int_equal(hsm_issuer_chain_der(iss, 1, &root_der, &root_len), KILN_OK);
        assert_int_equal(hsm_cert_verify(iss, root_der, root_len), KILN_E_CERT_VERIFY);
        kiln_err_reset();
        assert_int_equal(hsm_cert_verify(iss, c->der, 10), KILN_E_CERT_VERIFY);
        kiln_err_reset();
        hsm_cert_free(c);
        hsm_devkey_free(k);
        EVP_PKEY_free(pk);
}

static void test_issuer_errors(void **state)
{
        struct hsm_issuer *bad = NULL;

        (void)state;
        /* the audit key has no certificate object */
        kiln_err_reset();
        assert_int_equal(hsm_issuer_load(tok, HSM_DEV_AUDIT_URI, &bad), KILN_E_HSM_KEY_NOT_FOUND);
        assert_non_null(strstr(kiln_err_detail(), "no certificate object"));
        ht_assert_no_secret(kiln_err_detail(), dir, NULL);
        kiln_err_reset();
        assert_int_equal(hsm_issuer_load(tok, "pkcs11:object=missing;type=private", &bad),
                         KILN_E_HSM_KEY_NOT_FOUND);
        kiln_err_reset();
        assert_null(bad);
}

/* An RSA issuing CA under the dev root: certificates signed with RSA-PSS over SHA-256. */
static void test_rsa_pss_issuer(void **state)
{
        static const uint8_t id[] = {0x77};
        static const struct hsm_name_attr ca_subject[] = {{"CN", "Kiln Test RSA Issuing CA"}};
        struct hsm_cert_template ca_t = {
                .subject = ca_subject,
                .n_subject = 1,
                .not_before = (int64_t)time(NULL) - 60,
                .not_after = (int64_t)time(NULL) + 86400 * 365,
                .key_usage = HSM_KU_KEY_CERT_SIGN | HSM_KU_CRL_SIGN,
        };
        struct hsm_config cfg = dev.cfg;
        struct hsm_token *t = NULL;
        struct hsm_key *root = NULL, *rsa = NULL;
        struct hsm_signer sg = {0};
        struct hsm_issuer *ri = NULL;
        struct hsm_cert_params p = {.t = &ca_t, .ca = 1, .path_len = 0};
        struct hsm_cert_template leaf_t = full_template();
        struct hsm_devkey *k = NULL;
        struct hsm_cert *c = NULL;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ULONG bits = 2048;
        CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
        CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, 1}, {CKA_VERIFY, &yes, 1},
                              {CKA_MODULUS_BITS, &bits, sizeof(bits)},
                              {CKA_LABEL, "rsa-issuing", 11}, {CKA_ID, (void *)(uintptr_t)id, 1}};
        CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, 1},      {CKA_PRIVATE, &yes, 1},
                               {CKA_SIGN, &yes, 1},       {CKA_SENSITIVE, &yes, 1},
                               {CKA_EXTRACTABLE, &no, 1}, {CKA_LABEL, "rsa-issuing", 11},
                               {CKA_ID, (void *)(uintptr_t)id, 1}};
        CK_OBJECT_HANDLE hpub, hpriv;
        CK_SESSION_HANDLE s;
        EVP_PKEY *rsa_pub = NULL, *pk;
        X509 *root_cert, *x = NULL;
        uint8_t serial[HSM_SERIAL_LEN], *der = NULL, point[65];
        size_t der_len = 0, len = 0;
        const uint8_t *rd;
        size_t rlen = 0;
        char pem[KILN_PATH_MAX];
        FILE *f;

        (void)state;
        cfg.read_write = 1;
        cfg.production = 1;
        assert_int_equal(hsm_token_open(&cfg, &t), KILN_OK);
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(t->fl->C_GenerateKeyPair(s, &m, pub, 5, priv, 7, &hpub, &hpriv), CKR_OK);
        hsm_session_put(t, s);
        assert_int_equal(hsm_key_find(t, HSM_DEV_ROOT_URI, HSM_USE_SIGN, &root), KILN_OK);
        assert_int_equal(hsm_key_find(t, "pkcs11:object=rsa-issuing;type=private", HSM_USE_SIGN,
                                      &rsa),
                         KILN_OK);
        assert_int_equal(hsm_key_public_pkey(rsa, &rsa_pub), KILN_OK);
        assert_int_equal(hsm_issuer_chain_der(iss, 1, &rd, &rlen), KILN_OK);
        root_cert = d2i_X509(NULL, &rd, (long)rlen);
        assert_non_null(root_cert);
        p.pkey = rsa_pub;
        p.aki = ASN1_STRING_get0_data(X509_get0_subject_key_id(root_cert));
        p.aki_len = (size_t)ASN1_STRING_length(X509_get0_subject_key_id(root_cert));
        assert_int_equal(hsm_cert_template_check_ca(&ca_t, 1), KILN_OK);
        assert_int_equal(hsm_signer_init(root, X509_get_subject_name(root_cert), &sg), KILN_OK);
        assert_int_equal(hsm_cert_serial(t, serial), KILN_OK);
        assert_int_equal(hsm_cert_build(&p, &sg, root, serial, &der, &der_len, &x), KILN_OK);
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(hsm_dev_store_cert(t, s, x, der, der_len, "rsa-issuing", id, 1), KILN_OK);
        hsm_session_put(t, s);
        ht_path(dir, "rsa-issuing-ca.pem", pem, sizeof(pem));
        f = fopen(pem, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_X509(f, x), 1);
        fclose(f);
        /* load it from the token like any issuer and issue a device certificate */
        kiln_err_reset();
        if (hsm_issuer_load(t, "pkcs11:object=rsa-issuing;type=private", &ri) != KILN_OK)
                fail_msg("RSA issuer: %s", kiln_err_detail());
        pk = ht_device_key("P-256", point, sizeof(point), &len);
        assert_int_equal(hsm_devkey_parse(point, len, &k), KILN_OK);
        assert_int_equal(hsm_cert_issue(ri, &leaf_t, k, &c), KILN_OK);
        {
                X509 *leaf = parse(c);

                assert_int_equal(X509_get_signature_nid(leaf), NID_rsassaPss);
                X509_free(leaf);
        }
        tools_check(c, pem);
        hsm_cert_free(c);
        hsm_devkey_free(k);
        EVP_PKEY_free(pk);
        hsm_issuer_free(ri);
        X509_free(x);
        X509_free(root_cert);
        kiln_free(der);
        hsm_signer_clear(&sg);
        EVP_PKEY_free(rsa_pub);
        hsm_key_free(rsa);
        hsm_key_free(root);
        hsm_token_free(t);
}

#define THREADS 4
#define PER_THREAD 12

struct job {
        struct hsm_cert *certs[PER_THREAD];
        int failures;
};

static void *issue_worker(void *arg)
{
        struct job *j = arg;
        struct hsm_cert_template t = full_template();

        for (int i = 0; i < PER_THREAD; i++) {
                uint8_t point[65];
                size_t len = 0;
                EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                struct hsm_devkey *k = NULL;

                if (pk == NULL ||
                    EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point,
                                                    sizeof(point), &len) != 1 ||
                    hsm_devkey_parse(point, len, &k) != KILN_OK ||
                    hsm_cert_issue(iss, &t, k, &j->certs[i]) != KILN_OK)
                        j->failures++;
                hsm_devkey_free(k);
                EVP_PKEY_free(pk);
        }
        return NULL;
}

static void test_threads(void **state)
{
        static struct job jobs[THREADS];
        pthread_t th[THREADS];

        (void)state;
        memset(jobs, 0, sizeof(jobs));
        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_create(&th[i], NULL, issue_worker, &jobs[i]), 0);
        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < THREADS; i++) {
                assert_int_equal(jobs[i].failures, 0);
                for (int j = 0; j < PER_THREAD; j++) {
                        struct hsm_cert *c = jobs[i].certs[j];

                        assert_non_null(c);
                        /* no two units share a serial */
                        for (int a = 0; a <= i; a++)
                                for (int b = 0; b < (a == i ? j : PER_THREAD); b++)
                                        assert_memory_not_equal(jobs[a].certs[b]->serial,
                                                                c->serial, HSM_SERIAL_LEN);
                        tools_check(c, NULL);
                }
        }
        for (int i = 0; i < THREADS; i++)
                for (int j = 0; j < PER_THREAD; j++)
                        hsm_cert_free(jobs[i].certs[j]);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_issue_p256),
                cmocka_unit_test(test_issue_p384),
                cmocka_unit_test(test_chain),
                cmocka_unit_test(test_empty_subject_san_only),
                cmocka_unit_test(test_template_errors),
                cmocka_unit_test(test_verify_rejects),
                cmocka_unit_test(test_issuer_errors),
                cmocka_unit_test(test_rsa_pss_issuer),
                cmocka_unit_test(test_threads),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
