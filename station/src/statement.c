/* Signed statements (kiln/statement.h). */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/statement.h"
#include "kiln/util.h"

int statement_write(struct hsm_token *t, const char *key_uri, const uint8_t *body, size_t len,
                    const char *path)
{
        struct hsm_key *k = NULL;
        uint8_t sig[STATEMENT_SIG_MAX];
        size_t sig_len = 0;
        char sig_path[KILN_PATH_MAX];
        int r;

        if (kiln_snprintf(sig_path, sizeof(sig_path), "%s.sig", path) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", path);
        r = hsm_key_find(t, key_uri, HSM_USE_SIGN, &k);
        if (r == KILN_OK)
                r = hsm_key_sign(k, body, len, sig, sizeof(sig), &sig_len);
        if (r == KILN_OK)
                r = kiln_file_write_atomic(path, body, len, 0644);
        if (r == KILN_OK)
                r = kiln_file_write_atomic(sig_path, sig, sig_len, 0644);
        hsm_key_free(k);
        return r;
}

void statement_free(struct statement *s)
{
        if (s == NULL)
                return;
        kiln_free(s->body);
        s->body = NULL;
}

static int verify_with(const char *key_path, const struct statement *s, int *ret_ok)
{
        uint8_t *pem = NULL;
        size_t pem_len = 0;
        BIO *b = NULL;
        EVP_PKEY *k = NULL;
        EVP_MD_CTX *md = NULL;
        int r;

        r = kiln_file_read(key_path, 64u << 10, &pem, &pem_len);
        if (r < 0)
                goto out;
        b = BIO_new_mem_buf(pem, (int)pem_len);
        k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
        if (k == NULL) {
                r = kiln_fail(KILN_E_CRYPTO, "'%s' is not a PEM public key", key_path);
                goto out;
        }
        md = EVP_MD_CTX_new();
        *ret_ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
                  EVP_DigestVerify(md, s->sig, s->sig_len, s->body, s->len) == 1;
        r = KILN_OK;
out:
        EVP_MD_CTX_free(md);
        EVP_PKEY_free(k);
        BIO_free(b);
        kiln_free(pem);
        return r;
}

int statement_read(const char *path, const char *const *key_paths, unsigned n_keys,
                   struct statement *ret)
{
        struct statement s;
        char sig_path[KILN_PATH_MAX];
        uint8_t *sig = NULL;
        int r;

        memset(&s, 0, sizeof(s));
        if (kiln_snprintf(sig_path, sizeof(sig_path), "%s.sig", path) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", path);
        r = kiln_file_read(path, STATEMENT_MAX, &s.body, &s.len);
        if (r == KILN_OK)
                r = kiln_file_read(sig_path, STATEMENT_SIG_MAX, &sig, &s.sig_len);
        if (r < 0)
                goto out;
        memcpy(s.sig, sig, s.sig_len);
        r = kiln_fail(KILN_E_MISMATCH, "'%s' is not signed by a key this station trusts", path);
        for (unsigned i = 0; i < n_keys; i++) {
                int ok = 0;
                int vr = verify_with(key_paths[i], &s, &ok);

                if (vr < 0) {
                        r = vr;
                        goto out;
                }
                if (ok) {
                        kiln_err_reset();
                        s.key_index = i;
                        r = KILN_OK;
                        break;
                }
        }
        if (r < 0)
                goto out;
        *ret = s;
        s.body = NULL;
out:
        kiln_free(sig);
        statement_free(&s);
        return r;
}

int statement_field(const struct statement *s, const char *key, char *out, size_t cap)
{
        char pat[80];
        const char *p;
        size_t n = 0;

        if (kiln_snprintf(pat, sizeof(pat), "\"%s\":", key) < 0)
                return KILN_E_RANGE;
        p = strstr((const char *)s->body, pat);
        if (p == NULL)
                return kiln_fail(KILN_E_NOT_FOUND, "statement has no '%s'", key);
        p += strlen(pat);
        if (*p == '"') {
                for (p++; *p && *p != '"'; p++) {
                        if (*p == '\\' || n + 1 >= cap)
                                return kiln_fail(KILN_E_SYNTAX, "statement field '%s' is not a "
                                                                "plain string",
                                                 key);
                        out[n++] = *p;
                }
                if (*p != '"')
                        return kiln_fail(KILN_E_SYNTAX, "statement field '%s' is unterminated",
                                         key);
        } else {
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (n + 1 >= cap)
                                return KILN_E_RANGE;
                        out[n++] = *p;
                }
                if (n == 0)
                        return kiln_fail(KILN_E_SYNTAX, "statement field '%s' is not a value",
                                         key);
        }
        out[n] = '\0';
        return KILN_OK;
}
