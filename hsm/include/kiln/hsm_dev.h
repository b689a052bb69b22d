/*
 * The throwaway development PKI behind `kiln hsm init-dev --dir DIR`.
 *
 * DIR/softhsm2.conf points SoftHSM at DIR/tokens; the token `kiln-dev` holds, all generated inside
 * it with CKA_EXTRACTABLE=false and CKA_SENSITIVE=true:
 *
 *     kiln-dev-root     EC P-384  root CA key; its self-signed certificate as a CKO_CERTIFICATE
 *     kiln-dev-issuing  EC P-256  issuing CA key; its certificate (signed by the root) likewise
 *     kiln-dev-audit    EC P-256  station audit key
 *     kiln-dev-commit   generic secret, 32 bytes, for CKM_SHA256_HMAC credential commitments
 *
 * Files: DIR/so-pin and DIR/pin (random, mode 0600, created exclusively), DIR/root-ca.pem,
 * DIR/issuing-ca.pem, DIR/audit-pub.pem. No private key is ever written to disk.
 *
 * Development only: the PINs sit next to the token on purpose, so demos and tests need nothing else.
 */
#ifndef KILN_HSM_DEV_H
#define KILN_HSM_DEV_H

#include "kiln/hsm.h"
#include "kiln/limits.h"

#define HSM_DEV_TOKEN "kiln-dev"
#define HSM_DEV_TOKEN_URI "pkcs11:token=kiln-dev"
#define HSM_DEV_ROOT_URI "pkcs11:token=kiln-dev;object=kiln-dev-root;type=private"
#define HSM_DEV_ISSUING_URI "pkcs11:token=kiln-dev;object=kiln-dev-issuing;type=private"
#define HSM_DEV_AUDIT_URI "pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private"
#define HSM_DEV_COMMIT_URI "pkcs11:token=kiln-dev;object=kiln-dev-commit;type=secret-key"
/* Signers of statements a station verifies but cannot make: recipe releases (a manufacturing
 * engineer's key) and quota raises (the PKI officer's key). In production they live on their
 * owners' tokens and stations get only the public keys; the dev PKI keeps them in its one token. */
#define HSM_DEV_RELEASE_URI "pkcs11:token=kiln-dev;object=kiln-dev-release;type=private"
#define HSM_DEV_OFFICER_URI "pkcs11:token=kiln-dev;object=kiln-dev-officer;type=private"

/* File names inside DIR. */
#define HSM_DEV_CONF "softhsm2.conf"
#define HSM_DEV_TOKENS "tokens"
#define HSM_DEV_SO_PIN "so-pin"
#define HSM_DEV_PIN "pin"
#define HSM_DEV_ROOT_PEM "root-ca.pem"
#define HSM_DEV_ISSUING_PEM "issuing-ca.pem"
#define HSM_DEV_AUDIT_PEM "audit-pub.pem"
#define HSM_DEV_RELEASE_PEM "release-pub.pem"
#define HSM_DEV_OFFICER_PEM "officer-pub.pem"

enum hsm_dev_state {
        HSM_DEV_CREATED, /* a new PKI was made */
        HSM_DEV_EXISTED, /* DIR already held a complete one; nothing was changed */
        HSM_DEV_STATE_MAX
};

/* A token configuration for DIR, with the paths it points into. */
struct hsm_dev {
        char module[KILN_PATH_MAX];
        char dir[KILN_PATH_MAX]; /* absolute */
        char conf[KILN_PATH_MAX];
        char pin_file[KILN_PATH_MAX];
        struct hsm_config cfg; /* module, HSM_DEV_TOKEN_URI, PIN from pin_file; pool default.
                                * Points into this struct: do not copy it. */
};

/*
 * Fill ret for DIR and point SOFTHSM2_CONF at DIR/softhsm2.conf for this process (SoftHSM reads it
 * in C_Initialize). Refused while the module is already initialised with another SOFTHSM2_CONF.
 */
int hsm_dev_use(const char *dir, const char *module, struct hsm_dev *ret);

/*
 * Create the development PKI in DIR (made if missing, mode 0700). When DIR already holds a complete
 * one (every file present and the token opens with every key and certificate), nothing changes and
 * *ret_state is HSM_DEV_EXISTED. A DIR with only part of it fails with KILN_E_EXISTS naming what is
 * missing; nothing there is touched.
 */
int hsm_dev_init(const char *dir, const char *module, enum hsm_dev_state *ret_state);

#endif
