/*
 * Signed statements: a small flat JSON document and a detached DER ECDSA-SHA256 signature over its
 * exact bytes (FILE and FILE.sig), like export manifests. Used for what a station must verify but
 * cannot itself create: recipe releases (an engineer's key) and quota raises (the PKI officer's
 * key). `openssl dgst -sha256 -verify KEY.pem -signature FILE.sig FILE` checks one by hand.
 */
#ifndef KILN_STATEMENT_H
#define KILN_STATEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/buf.h"

struct hsm_token;

#define STATEMENT_MAX (16u << 10) /* statement file size */
#define STATEMENT_SIG_MAX 512u

/* Sign body with the HSM key and write path and path.sig, each atomically. */
int statement_write(struct hsm_token *t, const char *key_uri, const uint8_t *body, size_t len,
                    const char *path);

struct statement {
        uint8_t *body; /* NUL-terminated */
        size_t len;
        uint8_t sig[STATEMENT_SIG_MAX];
        size_t sig_len;
        unsigned key_index; /* which of the trusted keys verified it */
};

/*
 * Read path and path.sig and verify the signature with one of the trusted public keys (PEM file
 * paths). KILN_E_NOT_FOUND when the statement is missing, KILN_E_MISMATCH (naming the file) when
 * no trusted key verifies it. Free with statement_free().
 */
int statement_read(const char *path, const char *const *key_paths, unsigned n_keys,
                   struct statement *ret);
void statement_free(struct statement *s);

/* A top-level string or integer value of a statement's flat JSON object, as text. */
int statement_field(const struct statement *s, const char *key, char *out, size_t cap);

#endif
