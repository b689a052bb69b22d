/* Shared helpers of the hsm tests (see hsm_test.h). */
#define _GNU_SOURCE /* nftw FTW_PHYS/FTW_DEPTH */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hsm_test.h"
#include "kiln/util.h"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (flag == FTW_DP)
                return rmdir(path);
        return unlink(path);
}

void ht_rmrf(const char *path)
{
        struct stat st;

        if (lstat(path, &st) != 0)
                return;
        assert_int_equal(nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

void ht_path(const char *dir, const char *name, char *out, size_t cap)
{
        assert_int_equal(kiln_snprintf(out, cap, "%s/%s", dir, name), KILN_OK);
}

void ht_dir(const char *name, char *out, size_t cap)
{
        const char *build = getenv("KILN_BUILD_DIR");
        char base[KILN_PATH_MAX];

        /* ctest sets KILN_BUILD_DIR; a test run by hand falls back to the working directory */
        assert_int_equal(kiln_snprintf(base, sizeof(base), "%s/hsm-test", build ? build : "."),
                         KILN_OK);
        assert_int_equal(kiln_mkdirs(base, 0700), KILN_OK);
        assert_int_equal(kiln_snprintf(out, cap, "%s/%s-%ld", base, name, (long)getpid()),
                         KILN_OK);
        ht_rmrf(out);
        assert_int_equal(mkdir(out, 0700), 0);
}

int ht_run(const char *const *argv, char *out, size_t cap)
{
        int fds[2], status = 0;
        size_t len = 0;
        pid_t pid;

        assert_true(cap > 0);
        out[0] = '\0';
        assert_int_equal(pipe(fds), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                dup2(fds[1], 1);
                dup2(fds[1], 2);
                close(fds[0]);
                close(fds[1]);
                execvp(argv[0], (char *const *)(uintptr_t)argv);
                fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        close(fds[1]);
        for (;;) {
                char buf[4096];
                ssize_t n = read(fds[0], buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                for (ssize_t i = 0; i < n && len + 1 < cap; i++)
                        out[len++] = buf[i];
        }
        out[len] = '\0';
        close(fds[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status))
                return -1;
        if (WEXITSTATUS(status) == 127)
                return -1;
        return WEXITSTATUS(status);
}

void ht_write(const char *path, const void *p, size_t n, unsigned mode)
{
        int fd;

        unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, p, n), (ssize_t)n);
        assert_int_equal(fchmod(fd, (mode_t)mode), 0);
        close(fd);
}

void ht_read(const char *path, char *out, size_t cap)
{
        uint8_t *p = NULL;
        size_t n = 0;

        assert_int_equal(kiln_file_read(path, cap - 1, &p, &n), KILN_OK);
        memcpy(out, p, n + 1);
        kiln_free(p);
}

void ht_assert_no_secret(const char *text, const char *dir, const char *extra)
{
        static const char *const files[] = {HSM_DEV_PIN, HSM_DEV_SO_PIN};
        char path[KILN_PATH_MAX], pin[KILN_PIN_MAX + 2];

        if (text == NULL)
                return;
        for (size_t i = 0; dir != NULL && i < 2; i++) {
                ht_path(dir, files[i], path, sizeof(path));
                if (access(path, F_OK) != 0)
                        continue;
                ht_read(path, pin, sizeof(pin));
                pin[strcspn(pin, "\r\n")] = '\0';
                assert_true(strlen(pin) >= 4);
                if (strstr(text, pin) != NULL)
                        fail_msg("a PIN appears in: %s", text);
        }
        if (extra != NULL && extra[0] != '\0' && strstr(text, extra) != NULL)
                fail_msg("secret '%s' appears in: %s", extra, text);
}

static void pem_append(const char *path, const char *src)
{
        char buf[16384];
        FILE *f;

        ht_read(src, buf, sizeof(buf));
        f = fopen(path, "a");
        assert_non_null(f);
        assert_int_equal(fputs(buf, f) >= 0, 1);
        fclose(f);
}

void ht_verify_with_tools(const char *dir, const char *name, const uint8_t *der, size_t len,
                          const char *issuing_pem)
{
        char leaf[KILN_PATH_MAX], chain[KILN_PATH_MAX], root[KILN_PATH_MAX],
                issuing[KILN_PATH_MAX], file[KILN_PATH_MAX], out[HT_OUT_MAX];
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        FILE *f;
        int rc;

        assert_non_null(x);
        assert_true(p == der + len);
        assert_int_equal(kiln_snprintf(file, sizeof(file), "%s.pem", name), KILN_OK);
        ht_path(dir, file, leaf, sizeof(leaf));
        assert_int_equal(kiln_snprintf(file, sizeof(file), "%s-chain.pem", name), KILN_OK);
        ht_path(dir, file, chain, sizeof(chain));
        ht_path(dir, HSM_DEV_ROOT_PEM, root, sizeof(root));
        if (issuing_pem != NULL)
                assert_int_equal(kiln_strlcpy(issuing, issuing_pem, sizeof(issuing)), KILN_OK);
        else
                ht_path(dir, HSM_DEV_ISSUING_PEM, issuing, sizeof(issuing));
        f = fopen(leaf, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_X509(f, x), 1);
        fclose(f);
        X509_free(x);
        {
                const char *argv[] = {"openssl", "verify", "-x509_strict", "-CAfile", root,
                                      "-untrusted", issuing, leaf, NULL};

                rc = ht_run(argv, out, sizeof(out));
                if (rc != 0 || strstr(out, ": OK") == NULL)
                        fail_msg("openssl verify -x509_strict rejected %s (exit %d): %s", leaf, rc,
                                 out);
        }
        unlink(chain);
        pem_append(chain, leaf);
        pem_append(chain, issuing);
        pem_append(chain, root);
        /* GnuTLS: the chain as a file (ending in the self-signed root) ... */
        {
                const char *argv[] = {"certtool", "--verify-chain", "--verify-profile=medium",
                                      "--infile", chain, NULL};

                rc = ht_run(argv, out, sizeof(out));
                if (rc != 0 || strstr(out, "Chain verification output: Verified") == NULL ||
                    strstr(out, "Not verified") != NULL)
                        fail_msg("certtool --verify-chain rejected %s (exit %d): %s", chain, rc,
                                 out);
        }
        /* ... and anchored to the dev root, which --verify-chain alone takes from the file */
        {
                const char *argv[] = {"certtool", "--verify", "--verify-profile=medium",
                                      "--load-ca-certificate", root, "--infile", chain, NULL};

                rc = ht_run(argv, out, sizeof(out));
                if (rc != 0 || strstr(out, "Chain verification output: Verified") == NULL ||
                    strstr(out, "Not verified") != NULL)
                        fail_msg("certtool --verify rejected %s (exit %d): %s", chain, rc, out);
        }
}

const char *ht_module(void)
{
        const char *shim = getenv("KILN_P11_SHIM");

        return shim && shim[0] ? shim : HSM_SOFTHSM_MODULE;
}

unsigned long ht_login_count(void)
{
        unsigned long (*count)(void) = NULL;
        void *dl = dlopen(ht_module(), RTLD_NOW | RTLD_NOLOAD);
        void *sym;

        assert_non_null(dl);
        sym = dlsym(dl, "kiln_shim_login_count");
        if (sym == NULL)
                fail_msg("%s is not the counting shim (KILN_P11_SHIM unset?)", ht_module());
        memcpy(&count, &sym, sizeof(count));
        dlclose(dl); /* drops only the reference RTLD_NOLOAD took */
        return count();
}

void ht_dev(const char *name, char *dir, size_t cap, struct hsm_dev *d)
{
        enum hsm_dev_state st = HSM_DEV_STATE_MAX;
        int r;

        ht_dir(name, dir, cap);
        kiln_err_reset();
        r = hsm_dev_init(dir, ht_module(), &st);
        if (r != KILN_OK)
                fail_msg("hsm_dev_init: %s", kiln_err_detail());
        assert_int_equal(st, HSM_DEV_CREATED);
        assert_int_equal(hsm_dev_use(dir, ht_module(), d), KILN_OK);
}

EVP_PKEY *ht_device_key(const char *curve, uint8_t *point, size_t cap, size_t *len)
{
        EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);

        assert_non_null(pk);
        assert_int_equal(EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point, cap,
                                                         len),
                         1);
        return pk;
}

void ht_device_sign(EVP_PKEY *pk, const char *label, const uint8_t *nonce, const uint8_t *uid,
                    size_t uid_len, uint8_t slot, uint8_t *raw, size_t fs)
{
        uint8_t msg[128], der[160];
        size_t n = strlen(label), der_len = sizeof(der);
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        const unsigned char *p = der;
        ECDSA_SIG *sig;

        assert_true(n + 32 + 1 + uid_len + 1 <= sizeof(msg));
        memcpy(msg, label, n);
        memcpy(msg + n, nonce, 32);
        n += 32;
        msg[n++] = (uint8_t)uid_len;
        memcpy(msg + n, uid, uid_len);
        n += uid_len;
        msg[n++] = slot;
        assert_int_equal(EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, pk), 1);
        assert_int_equal(EVP_DigestSign(m, der, &der_len, msg, n), 1);
        sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        assert_non_null(sig);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, (int)fs), (int)fs);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + fs, (int)fs), (int)fs);
        ECDSA_SIG_free(sig);
        EVP_MD_CTX_free(m);
}
