/*
 * Tokens, PINs, mechanisms, keys, signing, HMAC, random and the session pool, against a private
 * SoftHSM token made by hsm_dev_init under the build directory. The module is the C_Login-counting
 * shim around SoftHSM (p11_shim.c), so the tests can count logins.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "hsm_internal.h"
#include "hsm_test.h"
#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/secret.h"

static char dir[KILN_PATH_MAX];
static struct hsm_dev dev;

static int group_setup(void **state)
{
        (void)state;
        ht_dev("token", dir, sizeof(dir), &dev);
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        ht_rmrf(dir);
        return 0;
}

static struct hsm_token *open_dev(int production, int rw, unsigned pool)
{
        struct hsm_config cfg = dev.cfg;
        struct hsm_token *t = NULL;
        int r;

        assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
        cfg = dev.cfg;
        cfg.production = production;
        cfg.read_write = rw;
        cfg.pool_size = pool;
        kiln_err_reset();
        r = hsm_token_open(&cfg, &t);
        if (r != KILN_OK)
                fail_msg("hsm_token_open: %s", kiln_err_detail());
        ht_assert_no_secret(kiln_err_detail(), dir, NULL);
        return t;
}

/* Expect code r with a detail containing want (and no PIN). */
static void expect(int r, int code, const char *want)
{
        const char *d = kiln_err_detail();

        if (r != code)
                fail_msg("got %s (%s), expected %s", kiln_errname(r), d, kiln_errname(code));
        if (want != NULL && strstr(d, want) == NULL)
                fail_msg("detail '%s' lacks '%s'", d, want);
        ht_assert_no_secret(d, dir, NULL);
        kiln_err_reset();
}

static void test_open_describe(void **state)
{
        struct hsm_token *t = open_dev(0, 0, 2);
        struct hsm_token_desc d;
        const unsigned long *mechs = NULL;
        size_t n = 0;
        char flags[512];

        (void)state;
        assert_int_equal(hsm_token_describe(t, &d), KILN_OK);
        assert_string_equal(d.label, "kiln-dev");
        assert_string_equal(d.manufacturer, "SoftHSM project");
        assert_true(d.logged_in);
        assert_int_equal(d.pool_size, 2);
        assert_false(d.user_pin_count_low || d.user_pin_final_try || d.user_pin_locked);
        assert_int_equal(hsm_token_flags_str(d.flags, flags, sizeof(flags)), KILN_OK);
        assert_non_null(strstr(flags, "CKF_TOKEN_INITIALIZED"));
        assert_non_null(strstr(flags, "CKF_LOGIN_REQUIRED"));
        hsm_token_mechanisms(t, &mechs, &n);
        assert_true(n > 10);
        assert_int_equal(hsm_token_require_mechanism(t, CKM_ECDSA), KILN_OK);
        assert_int_equal(hsm_token_require_mechanism_name(t, "CKM_SHA256_HMAC"), KILN_OK);
        assert_int_equal(hsm_token_require_mechanism_name(t, "RSA_PKCS_PSS"), KILN_OK);
        assert_string_equal(hsm_token_label(t), "kiln-dev");
        hsm_token_free(t);
}

static void test_mechanism_missing(void **state)
{
        static const char *const need[] = {"CKM_ECDSA", "CKM_ECDSA_SHA256"};
        static const char *const bogus[] = {"CKM_NO_SUCH_THING"};
        struct hsm_config cfg;
        struct hsm_token *t = NULL;

        (void)state;
        assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
        cfg = dev.cfg;
        cfg.mechanisms = need;
        cfg.n_mechanisms = 2;
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_MECHANISM,
               "token 'kiln-dev' lacks mechanism CKM_ECDSA_SHA256");
        assert_null(t);
        cfg.mechanisms = bogus;
        cfg.n_mechanisms = 1;
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_MECHANISM,
               "unknown PKCS#11 mechanism name 'CKM_NO_SUCH_THING'");
        /* the names table round-trips */
        assert_string_equal(hsm_mech_name(CKM_ECDSA_SHA256), "CKM_ECDSA_SHA256");
        assert_string_equal(hsm_mech_name(CKM_EC_KEY_PAIR_GEN), "CKM_EC_KEY_PAIR_GEN");
        assert_string_equal(hsm_rv_name(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT");
        assert_string_equal(hsm_rv_name(0x7ffffff0UL), "CKR_0x7ffffff0");
}

static void test_token_selection(void **state)
{
        struct hsm_config cfg;
        struct hsm_token *t = NULL;

        (void)state;
        assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
        cfg = dev.cfg;
        cfg.token_uri = "pkcs11:token=no-such-token";
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_TOKEN, "no token matches");
        cfg.token_uri = "pkcs11:token=kiln-dev?pin-value=123456";
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_URI, "carries a PIN");
        assert_null(strstr(kiln_err_detail(), "123456"));
        cfg.token_uri = "pkcs11:manufacturer=SoftHSM%20project;token=kiln-dev";
        cfg.pin_source = HSM_PIN_NONE;
        assert_int_equal(hsm_token_open(&cfg, &t), KILN_OK);
        hsm_token_free(t);
        cfg = dev.cfg;
        cfg.module = "libsofthsm2.so";
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_MODULE, "must be absolute");
        cfg.module = "/nonexistent/module.so";
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_MODULE, "cannot load PKCS#11 module");
        cfg = dev.cfg;
        cfg.pool_size = HSM_POOL_MAX + 1;
        expect(hsm_token_open(&cfg, &t), KILN_E_RANGE, "session pool");
        /* SoftHSM keeps the configuration it was initialised with: another one is refused */
        t = open_dev(0, 0, 1);
        cfg = dev.cfg;
        cfg.softhsm_conf = "/nonexistent/softhsm2.conf";
        {
                struct hsm_token *t2 = NULL;

                expect(hsm_token_open(&cfg, &t2), KILN_E_HSM_MODULE,
                       "close its tokens before using '/nonexistent/softhsm2.conf'");
                assert_null(t2);
        }
        hsm_token_free(t);
}

static void test_keys(void **state)
{
        struct hsm_token *t = open_dev(1, 0, 2);
        struct hsm_key *k = NULL;

        (void)state;
        assert_int_equal(hsm_key_find(t, HSM_DEV_ISSUING_URI, HSM_USE_SIGN, &k), KILN_OK);
        assert_int_equal(hsm_key_kind(k), HSM_KEY_EC_P256);
        assert_string_equal(hsm_key_label(k), "kiln-dev-issuing");
        hsm_key_free(k);
        assert_int_equal(hsm_key_find(t, HSM_DEV_ROOT_URI, HSM_USE_SIGN, &k), KILN_OK);
        assert_int_equal(hsm_key_kind(k), HSM_KEY_EC_P384);
        hsm_key_free(k);
        /* by id alone (percent-encoded) */
        assert_int_equal(hsm_key_find(t, "pkcs11:id=%03;type=private", HSM_USE_SIGN, &k), KILN_OK);
        assert_string_equal(hsm_key_label(k), "kiln-dev-audit");
        hsm_key_free(k);
        assert_int_equal(hsm_key_find(t, HSM_DEV_COMMIT_URI, HSM_USE_HMAC, &k), KILN_OK);
        assert_int_equal(hsm_key_kind(k), HSM_KEY_HMAC);
        hsm_key_free(k);
        k = NULL;
        expect(hsm_key_find(t, "pkcs11:token=kiln-dev;object=nope;type=private", HSM_USE_SIGN, &k),
               KILN_E_HSM_KEY_NOT_FOUND, "no private key matches");
        expect(hsm_key_find(t, "pkcs11:token=other;object=kiln-dev-audit", HSM_USE_SIGN, &k),
               KILN_E_HSM_TOKEN, "names a token other than 'kiln-dev'");
        expect(hsm_key_find(t, "pkcs11:object=kiln-dev-audit;type=cert", HSM_USE_SIGN, &k),
               KILN_E_HSM_URI, "does not name a private key");
        expect(hsm_key_find(t, "pkcs11:object=kiln-dev-audit;pin-value=1", HSM_USE_SIGN, &k),
               KILN_E_HSM_URI, "unknown PKCS#11 URI attribute 'pin-value'");
        expect(hsm_key_find(t, "pkcs11:object=kiln-dev-audit?pin-value=1", HSM_USE_SIGN, &k),
               KILN_E_HSM_URI, "carries a PIN");
        /* several private keys match a URI without object/id */
        expect(hsm_key_find(t, "pkcs11:token=kiln-dev;type=private", HSM_USE_SIGN, &k),
               KILN_E_HSM_KEY_AMBIGUOUS, "several keys match 'pkcs11:token=kiln-dev;type=private'");
        assert_null(k);
        hsm_token_free(t);
}

static void test_ambiguous_and_policy(void **state)
{
        static const uint8_t id_a[] = {0xa1}, id_b[] = {0xa2}, id_x[] = {0xe1};
        struct hsm_token *t = open_dev(0, 1, 1);
        struct hsm_key *k = NULL;
        CK_SESSION_HANDLE s;

        (void)state;
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, "dup", id_a, 1, 0), KILN_OK);
        assert_int_equal(hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, "dup", id_b, 1, 0), KILN_OK);
        assert_int_equal(hsm_dev_keygen_ec(t, s, HSM_CURVE_P256, "extractable", id_x, 1, 1),
                         KILN_OK);
        hsm_session_put(t, s);
        expect(hsm_key_find(t, "pkcs11:object=dup;type=private", HSM_USE_SIGN, &k),
               KILN_E_HSM_KEY_AMBIGUOUS, "several keys match 'pkcs11:object=dup;type=private'");
        assert_int_equal(hsm_key_find(t, "pkcs11:object=dup;id=%a2;type=private", HSM_USE_SIGN,
                                      &k),
                         KILN_OK);
        hsm_key_free(k);
        /* outside production an extractable key is usable */
        assert_int_equal(hsm_key_find(t, "pkcs11:object=extractable", HSM_USE_SIGN, &k), KILN_OK);
        hsm_key_free(k);
        k = NULL;
        hsm_token_free(t);
        t = open_dev(1, 0, 1);
        expect(hsm_key_find(t, "pkcs11:object=extractable", HSM_USE_SIGN, &k),
               KILN_E_HSM_KEY_POLICY, "production needs CKA_EXTRACTABLE=false");
        assert_null(k);
        /* the dev keys are fine in production */
        assert_int_equal(hsm_key_find(t, HSM_DEV_AUDIT_URI, HSM_USE_SIGN, &k), KILN_OK);
        hsm_key_free(k);
        assert_int_equal(hsm_key_find(t, HSM_DEV_COMMIT_URI, HSM_USE_HMAC, &k), KILN_OK);
        hsm_key_free(k);
        hsm_token_free(t);
}

/* Verify a signature with the key's public half, as OpenSSL sees it. */
static void verify_sig(const struct hsm_key *k, const void *msg, size_t len, const uint8_t *sig,
                       size_t sig_len, const EVP_MD *md, int pss)
{
        uint8_t *spki = NULL;
        size_t spki_len = 0;
        const unsigned char *p;
        EVP_PKEY *pk;
        EVP_MD_CTX *mctx = EVP_MD_CTX_new();
        EVP_PKEY_CTX *pctx = NULL;

        assert_int_equal(hsm_key_public_der(k, &spki, &spki_len), KILN_OK);
        p = spki;
        pk = d2i_PUBKEY(NULL, &p, (long)spki_len);
        assert_non_null(pk);
        assert_int_equal(EVP_DigestVerifyInit(mctx, &pctx, md, NULL, pk), 1);
        if (pss) {
                assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
                assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32), 1);
                assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()), 1);
        }
        assert_int_equal(EVP_DigestVerify(mctx, sig, sig_len, msg, len), 1);
        EVP_MD_CTX_free(mctx);
        EVP_PKEY_free(pk);
        kiln_free(spki);
}

static void test_sign_ec(void **state)
{
        static const char msg[] = "audit checkpoint 42";
        struct hsm_token *t = open_dev(1, 0, 2);
        struct hsm_key *k = NULL;
        uint8_t sig[HSM_SIG_MAX];
        size_t n = 0;
        char path[KILN_PATH_MAX], sig_path[KILN_PATH_MAX], msg_path[KILN_PATH_MAX],
                out[HT_OUT_MAX];

        (void)state;
        assert_int_equal(hsm_key_find(t, HSM_DEV_AUDIT_URI, HSM_USE_SIGN, &k), KILN_OK);
        assert_int_equal(hsm_key_sign(k, msg, strlen(msg), sig, sizeof(sig), &n), KILN_OK);
        verify_sig(k, msg, strlen(msg), sig, n, EVP_sha256(), 0);
        /* quality engineers verify with the openssl CLI and DIR/audit-pub.pem alone */
        ht_path(dir, "msg.bin", msg_path, sizeof(msg_path));
        ht_path(dir, "msg.sig", sig_path, sizeof(sig_path));
        ht_path(dir, HSM_DEV_AUDIT_PEM, path, sizeof(path));
        ht_write(msg_path, msg, strlen(msg), 0644);
        ht_write(sig_path, sig, n, 0644);
        {
                const char *argv[] = {"openssl", "dgst",   "-sha256",  "-verify", path,
                                      "-signature", sig_path, msg_path, NULL};

                assert_int_equal(ht_run(argv, out, sizeof(out)), 0);
                assert_non_null(strstr(out, "Verified OK"));
        }
        expect(hsm_key_sign(k, msg, strlen(msg), sig, 8, &n), KILN_E_RANGE, NULL);
        hsm_key_free(k);
        /* P-384: SHA-384 on the host, 96-byte r||s in the token */
        assert_int_equal(hsm_key_find(t, HSM_DEV_ROOT_URI, HSM_USE_SIGN, &k), KILN_OK);
        assert_int_equal(hsm_key_sign(k, msg, strlen(msg), sig, sizeof(sig), &n), KILN_OK);
        verify_sig(k, msg, strlen(msg), sig, n, EVP_sha384(), 0);
        hsm_key_free(k);
        hsm_token_free(t);
}

static void test_sign_rsa_pss(void **state)
{
        static const char msg[] = "export manifest";
        static const uint8_t id[] = {0x52};
        struct hsm_token *t = open_dev(1, 1, 1);
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ULONG bits = 2048;
        CK_MECHANISM m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
        CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, 1},        {CKA_VERIFY, &yes, 1},
                              {CKA_MODULUS_BITS, &bits, sizeof(bits)},
                              {CKA_LABEL, "rsa-pss", 7},    {CKA_ID, (void *)(uintptr_t)id, 1}};
        CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, 1},       {CKA_PRIVATE, &yes, 1},
                               {CKA_SIGN, &yes, 1},        {CKA_SENSITIVE, &yes, 1},
                               {CKA_EXTRACTABLE, &no, 1},  {CKA_LABEL, "rsa-pss", 7},
                               {CKA_ID, (void *)(uintptr_t)id, 1}};
        CK_OBJECT_HANDLE hpub, hpriv;
        CK_SESSION_HANDLE s;
        struct hsm_key *k = NULL;
        uint8_t sig[HSM_SIG_MAX];
        size_t n = 0;

        (void)state;
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(t->fl->C_GenerateKeyPair(s, &m, pub, 5, priv, 7, &hpub, &hpriv), CKR_OK);
        hsm_session_put(t, s);
        assert_int_equal(hsm_key_find(t, "pkcs11:object=rsa-pss", HSM_USE_SIGN, &k), KILN_OK);
        assert_int_equal(hsm_key_kind(k), HSM_KEY_RSA);
        assert_int_equal(hsm_key_sign(k, msg, strlen(msg), sig, sizeof(sig), &n), KILN_OK);
        assert_int_equal(n, 256);
        verify_sig(k, msg, strlen(msg), sig, n, EVP_sha256(), 1);
        hsm_key_free(k);
        hsm_token_free(t);
}

static void test_hmac(void **state)
{
        static const uint8_t value[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                          17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                          31, 32};
        static const char msg[] = "device password commitment";
        struct hsm_token *t = open_dev(0, 1, 1);
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
        CK_ATTRIBUTE a[] = {{CKA_CLASS, &cls, sizeof(cls)},   {CKA_KEY_TYPE, &kt, sizeof(kt)},
                            {CKA_TOKEN, &yes, 1},             {CKA_PRIVATE, &yes, 1},
                            {CKA_SIGN, &yes, 1},              {CKA_SENSITIVE, &no, 1},
                            {CKA_LABEL, "known-hmac", 10},
                            {CKA_VALUE, (void *)(uintptr_t)value, sizeof(value)}};
        CK_OBJECT_HANDLE h;
        CK_SESSION_HANDLE s;
        struct hsm_key *k = NULL;
        uint8_t mac[HSM_HMAC_LEN], mac2[HSM_HMAC_LEN], want[EVP_MAX_MD_SIZE];
        unsigned int want_len = 0;

        (void)state;
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        assert_int_equal(t->fl->C_CreateObject(s, a, 8, &h), CKR_OK);
        hsm_session_put(t, s);
        /* a known key: the token's HMAC-SHA256 equals OpenSSL's */
        assert_int_equal(hsm_key_find(t, "pkcs11:object=known-hmac", HSM_USE_HMAC, &k), KILN_OK);
        assert_int_equal(hsm_key_hmac(k, msg, strlen(msg), mac), KILN_OK);
        HMAC(EVP_sha256(), value, sizeof(value), (const unsigned char *)msg, strlen(msg), want,
             &want_len);
        assert_int_equal(want_len, HSM_HMAC_LEN);
        assert_memory_equal(mac, want, HSM_HMAC_LEN);
        hsm_key_free(k);
        hsm_token_free(t);
        /* the dev commitment key: deterministic, message-dependent; refused by production */
        t = open_dev(0, 0, 1);
        assert_int_equal(hsm_key_find(t, HSM_DEV_COMMIT_URI, HSM_USE_HMAC, &k), KILN_OK);
        assert_int_equal(hsm_key_hmac(k, msg, strlen(msg), mac), KILN_OK);
        assert_int_equal(hsm_key_hmac(k, msg, strlen(msg), mac2), KILN_OK);
        assert_memory_equal(mac, mac2, HSM_HMAC_LEN);
        assert_int_equal(hsm_key_hmac(k, msg, strlen(msg) - 1, mac2), KILN_OK);
        assert_memory_not_equal(mac, mac2, HSM_HMAC_LEN);
        hsm_key_free(k);
        k = NULL;
        hsm_token_free(t);
        t = open_dev(1, 0, 1);
        expect(hsm_key_find(t, "pkcs11:object=known-hmac", HSM_USE_HMAC, &k),
               KILN_E_HSM_KEY_POLICY, "production needs CKA_SENSITIVE=true");
        hsm_token_free(t);
}

static void test_random(void **state)
{
        struct hsm_token *t = open_dev(0, 0, 1);
        uint8_t a[32], b[32];

        (void)state;
        assert_int_equal(hsm_token_random(t, a, sizeof(a)), KILN_OK);
        assert_int_equal(hsm_token_random(t, b, sizeof(b)), KILN_OK);
        assert_memory_not_equal(a, b, sizeof(a));
        assert_int_equal(hsm_token_random(t, a, 0), KILN_OK);
        expect(hsm_token_random(t, a, HSM_RANDOM_MAX + 1), KILN_E_RANGE, "random bytes");
        hsm_token_free(t);
}

struct worker {
        struct hsm_key *key;
        int failures;
};

static void *sign_worker(void *arg)
{
        struct worker *w = arg;

        for (int i = 0; i < 40; i++) {
                char msg[32];
                uint8_t sig[HSM_SIG_MAX];
                size_t n = 0;

                snprintf(msg, sizeof(msg), "unit %d", i);
                if (hsm_key_sign(w->key, msg, strlen(msg), sig, sizeof(sig), &n) != KILN_OK)
                        w->failures++;
        }
        return NULL;
}

static void test_pool_threads(void **state)
{
        struct hsm_token *t = open_dev(1, 0, 3);
        struct hsm_key *k = NULL;
        struct worker w[8];
        pthread_t th[8];
        CK_SESSION_HANDLE s;
        uint8_t b[8];

        (void)state;
        assert_int_equal(hsm_key_find(t, HSM_DEV_ISSUING_URI, HSM_USE_SIGN, &k), KILN_OK);
        for (int i = 0; i < 8; i++) {
                w[i] = (struct worker){k, 0};
                assert_int_equal(pthread_create(&th[i], NULL, sign_worker, &w[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                assert_int_equal(w[i].failures, 0);
        }
        hsm_key_free(k);
        hsm_token_free(t);
        /* a pool of one with its session borrowed: the next borrower times out */
        {
                struct hsm_config cfg;

                assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
                cfg = dev.cfg;
                cfg.pool_size = 1;
                cfg.borrow_timeout_ms = 50;
                assert_int_equal(hsm_token_open(&cfg, &t), KILN_OK);
        }
        assert_int_equal(hsm_session_get(t, &s), KILN_OK);
        expect(hsm_token_random(t, b, sizeof(b)), KILN_E_TIMEOUT, "no free session");
        hsm_session_put(t, s);
        assert_int_equal(hsm_token_random(t, b, sizeof(b)), KILN_OK);
        hsm_token_free(t);
}

/* The decision on CK_TOKEN_INFO flags, on constructed values (SoftHSM sets only COUNT_LOW). */
static void test_pin_flags_decision(void **state)
{
        CK_TOKEN_INFO ti;

        (void)state;
        memset(&ti, 0, sizeof(ti));
        memset(ti.label, ' ', sizeof(ti.label));
        memcpy(ti.label, "prod-hsm", 8);
        ti.flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
        assert_int_equal(hsm_pin_flags_check(&ti), KILN_OK);
        ti.flags |= CKF_USER_PIN_COUNT_LOW;
        expect(hsm_pin_flags_check(&ti), KILN_E_HSM_PIN_LOCKED,
               "token 'prod-hsm' reports failed PIN attempts (CKF_USER_PIN_COUNT_LOW)");
        ti.flags |= CKF_USER_PIN_FINAL_TRY;
        expect(hsm_pin_flags_check(&ti), KILN_E_HSM_PIN_LOCKED, "CKF_USER_PIN_FINAL_TRY");
        ti.flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_USER_PIN_FINAL_TRY;
        expect(hsm_pin_flags_check(&ti), KILN_E_HSM_PIN_LOCKED, "one more wrong PIN locks it");
        ti.flags |= CKF_USER_PIN_LOCKED;
        expect(hsm_pin_flags_check(&ti), KILN_E_HSM_PIN_LOCKED, "CKF_USER_PIN_LOCKED");
        ti.flags = CKF_LOGIN_REQUIRED;
        expect(hsm_pin_flags_check(&ti), KILN_E_HSM_TOKEN, "has no user PIN");
        /* SO PIN counters do not concern a user login */
        ti.flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_SO_PIN_COUNT_LOW;
        assert_int_equal(hsm_pin_flags_check(&ti), KILN_OK);
}

/*
 * A wrong PIN: one C_Login, KILN_E_HSM_PIN, never retried. SoftHSM then sets CKF_USER_PIN_COUNT_LOW,
 * and the next open with the right PIN is refused before any C_Login. Own token: it stays flagged.
 */
static void test_wrong_pin(void **state)
{
        static const char wrong[] = "wrong-pin-000000";
        char wdir[KILN_PATH_MAX], bad[KILN_PATH_MAX];
        struct hsm_dev d;
        struct hsm_config cfg;
        struct hsm_token *t = NULL;
        struct hsm_token_desc desc;
        unsigned long before;

        (void)state;
        ht_dev("wrongpin", wdir, sizeof(wdir), &d);
        ht_path(wdir, "bad-pin", bad, sizeof(bad));
        ht_write(bad, wrong, strlen(wrong), 0600);
        cfg = d.cfg;
        cfg.pin_ref = bad;
        before = ht_login_count();
        kiln_err_reset();
        assert_int_equal(hsm_token_open(&cfg, &t), KILN_E_HSM_PIN);
        assert_string_equal(kiln_err_detail(),
                            "PIN incorrect for token 'kiln-dev': CKR_PIN_INCORRECT");
        ht_assert_no_secret(kiln_err_detail(), wdir, wrong);
        assert_int_equal(ht_login_count() - before, 1);
        assert_null(t);
        /* the right PIN now: refused on the token's flag, without touching C_Login */
        kiln_err_reset();
        assert_int_equal(hsm_token_open(&d.cfg, &t), KILN_E_HSM_PIN_LOCKED);
        assert_non_null(strstr(kiln_err_detail(), "CKF_USER_PIN_COUNT_LOW"));
        ht_assert_no_secret(kiln_err_detail(), wdir, wrong);
        assert_int_equal(ht_login_count() - before, 1);
        /* without a PIN the token still opens and shows the flag */
        cfg = d.cfg;
        cfg.pin_source = HSM_PIN_NONE;
        assert_int_equal(hsm_token_open(&cfg, &t), KILN_OK);
        assert_int_equal(hsm_token_describe(t, &desc), KILN_OK);
        assert_true(desc.user_pin_count_low);
        assert_false(desc.logged_in);
        hsm_token_free(t);
        ht_rmrf(wdir);
        /* back to the shared token for the tests after this one */
        assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
}

static void test_pin_file_unsafe(void **state)
{
        char pin[KILN_PIN_MAX], copy[KILN_PATH_MAX];
        struct hsm_config cfg;
        struct hsm_token *t = NULL;
        unsigned long before;

        (void)state;
        ht_read(dev.pin_file, pin, sizeof(pin));
        ht_path(dir, "pin-0640", copy, sizeof(copy));
        ht_write(copy, pin, strlen(pin), 0640);
        assert_int_equal(hsm_dev_use(dir, ht_module(), &dev), KILN_OK);
        cfg = dev.cfg;
        cfg.pin_ref = copy;
        before = ht_login_count();
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_PIN_SOURCE,
               "has mode 0640: it must be readable only by its owner");
        assert_int_equal(ht_login_count(), before);
        /* the PIN from the environment works */
        assert_int_equal(setenv("KILN_TEST_PIN", pin, 1), 0);
        cfg.pin_source = HSM_PIN_ENV;
        cfg.pin_ref = "KILN_TEST_PIN";
        assert_int_equal(hsm_token_open(&cfg, &t), KILN_OK);
        hsm_token_free(t);
        t = NULL;
        cfg.pin_ref = "KILN_TEST_NO_SUCH_VAR";
        expect(hsm_token_open(&cfg, &t), KILN_E_HSM_PIN_SOURCE,
               "PIN environment variable 'KILN_TEST_NO_SUCH_VAR' is not set");
        unsetenv("KILN_TEST_PIN");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_describe),
                cmocka_unit_test(test_mechanism_missing),
                cmocka_unit_test(test_token_selection),
                cmocka_unit_test(test_keys),
                cmocka_unit_test(test_ambiguous_and_policy),
                cmocka_unit_test(test_sign_ec),
                cmocka_unit_test(test_sign_rsa_pss),
                cmocka_unit_test(test_hmac),
                cmocka_unit_test(test_random),
                cmocka_unit_test(test_pool_threads),
                cmocka_unit_test(test_pin_flags_decision),
                cmocka_unit_test(test_pin_file_unsafe),
                cmocka_unit_test(test_wrong_pin),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
