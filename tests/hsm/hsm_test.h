/*
 * Helpers shared by the hsm tests: a private directory under the build tree per test run (its own
 * SoftHSM token via hsm_dev_init, SOFTHSM2_CONF pointing there, never the system store), running the
 * openssl and certtool programs, and the secret-hygiene checks.
 */
#ifndef KILN_HSM_TEST_H
#define KILN_HSM_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "kiln/hsm.h"
#include "kiln/hsm_dev.h"
#include "kiln/limits.h"

#define HT_OUT_MAX 65536

/* A fresh, empty directory $KILN_BUILD_DIR/hsm-test/NAME-PID (removed first if present). */
void ht_dir(const char *name, char *out, size_t cap);
/* rm -rf */
void ht_rmrf(const char *path);
/* path = dir/name */
void ht_path(const char *dir, const char *name, char *out, size_t cap);

/* Run argv (argv[0] looked up in PATH) with stdout+stderr captured into out. Returns the exit
 * status, or -1 when the program could not be run (a missing tool fails the test, it is never a
 * skip). */
int ht_run(const char *const *argv, char *out, size_t cap);

void ht_write(const char *path, const void *p, size_t n, unsigned mode);
/* Read a small text file (NUL-terminated) into out. */
void ht_read(const char *path, char *out, size_t cap);

/* Fail unless text contains no PIN found in DIR/pin or DIR/so-pin (and no extra secret). */
void ht_assert_no_secret(const char *text, const char *dir, const char *extra);

/*
 * Write der as DIR/NAME.pem and check it with
 *   openssl verify -x509_strict -CAfile root -untrusted issuing leaf
 *   certtool --verify-chain on leaf+issuing+root, and certtool --verify anchored to root
 * failing the test unless both accept it. issuing is a PEM path; NULL = DIR/issuing-ca.pem.
 */
void ht_verify_with_tools(const char *dir, const char *name, const uint8_t *der, size_t len,
                          const char *issuing_pem);

/* The module tests load: the C_Login-counting shim when built (KILN_P11_SHIM), else SoftHSM. */
const char *ht_module(void);
/* C_Login calls seen by the shim so far. */
unsigned long ht_login_count(void);

/* A device key pair made in software, standing in for a DUT; its SEC1 point in point[*len]. */
EVP_PKEY *ht_device_key(const char *curve, uint8_t *point, size_t cap, size_t *len);
/* The DUT side of docs/protocol.md §5.3/§5.9: raw r||s (fs bytes each) over SHA-256 of
 * label || nonce[32] || uid_len || uid || slot. */
void ht_device_sign(EVP_PKEY *pk, const char *label, const uint8_t *nonce, const uint8_t *uid,
                    size_t uid_len, uint8_t slot, uint8_t *raw, size_t fs);

/* init-dev in a fresh test directory and fill d for it. */
void ht_dev(const char *name, char *dir, size_t cap, struct hsm_dev *d);

#endif
