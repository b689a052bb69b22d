/*
 * A small, strict YAML loader for recipes and station configuration, on libyaml.
 *
 * The input is hostile. yaml_doc_load() turns one YAML document into a read-only tree of mappings,
 * sequences and scalars in which every node keeps the line and column (1-based, columns counted in
 * characters) where it starts, so every later problem can be reported as FILE:LINE:COLUMN.
 *
 * Refused, and reported:
 *   - input that is not strict UTF-8 (no BOM other than UTF-8's, no overlongs, no surrogates);
 *   - YAML syntax errors (libyaml's message, with its position);
 *   - more than one document in the stream;
 *   - anchors (&a), aliases (*a), explicit tags (!!str, !foo) and non-scalar mapping keys;
 *   - duplicate keys in a mapping (the first one is kept, each later one reported);
 *   - NUL characters in scalars (from "\0" escapes);
 *   - nesting deeper than KILN_YAML_DEPTH_MAX, more than KILN_YAML_NODES_MAX nodes, input larger
 *     than the caller's cap.
 *
 * Syntax, UTF-8, depth, node-count and multi-document problems stop the load (there is no usable
 * tree); the others are recorded and the load goes on, so one run reports them all. A node that
 * stands for something refused (an alias) has kind YAML_DOC_BAD: the typed getters below skip it
 * silently because it has been reported already.
 *
 * Problems go into a struct yaml_doc_diags (at most KILN_DIAG_MAX, then one "too many problems"
 * entry). The typed getters (yaml_doc_map, yaml_doc_get_*) check a node against what a schema
 * expects and report "PATH: message" at the node, where PATH is the node's place in the document
 * ("keys[1].certificate.subject[0].CN"). They return KILN_OK or KILN_E_SYNTAX (reported) or
 * KILN_E_NOMEM, and write their outputs only on success.
 */
#ifndef KILN_YAML_DOC_H
#define KILN_YAML_DOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kiln/error.h"
#include "kiln/limits.h"

#define YAML_DOC_MSG_MAX 320u  /* one diagnostic message */
#define YAML_DOC_PATH_MAX 160u /* node path text in a message (longer paths are shortened) */
#define YAML_DOC_QUOTE_MAX 48u /* characters of a user string quoted in a message */

/* ---------------------------------------------------------------- diagnostics */

struct yaml_doc_diag {
        unsigned line;   /* 1-based */
        unsigned column; /* 1-based, in characters */
        char msg[YAML_DOC_MSG_MAX];
};

struct yaml_doc_diags {
        struct yaml_doc_diag *v;
        size_t n;
        size_t cap;
        size_t dropped; /* problems over KILN_DIAG_MAX, not stored */
};

void yaml_doc_diags_init(struct yaml_doc_diags *d);
void yaml_doc_diags_free(struct yaml_doc_diags *d); /* NULL-safe; leaves d empty and reusable */
/* Record one problem. KILN_OK, or KILN_E_NOMEM. Over KILN_DIAG_MAX it only counts. */
int yaml_doc_diag_add(struct yaml_doc_diags *d, unsigned line, unsigned column, const char *fmt,
                      ...) KILN_PRINTF(4, 5);
/* Problems recorded, including dropped ones. */
size_t yaml_doc_diags_count(const struct yaml_doc_diags *d);
/* Order by position (stable: problems at one position keep their order). */
void yaml_doc_diags_sort(struct yaml_doc_diags *d);
/*
 * Print "FILE:LINE:COLUMN: message\n" per problem, and when some were dropped a last line
 * "FILE:LINE:COLUMN: too many problems, N more not shown" at the last stored position. FILE is
 * printed as given (a path the user typed).
 */
void yaml_doc_diags_print(const struct yaml_doc_diags *d, const char *file, FILE *f);

/*
 * Write s quoted for a message into out: 'text', with control and non-ASCII bytes as \xNN and
 * ' and \ escaped, shortened to YAML_DOC_QUOTE_MAX characters with "..." when longer.
 */
void yaml_doc_quote(const char *s, size_t len, char *out, size_t cap);

/* ---------------------------------------------------------------- the tree */

enum yaml_doc_kind {
        YAML_DOC_SCALAR,
        YAML_DOC_MAP,
        YAML_DOC_SEQ,
        YAML_DOC_BAD, /* refused and already reported (an alias) */
        YAML_DOC_KIND_MAX
};

struct yaml_doc_node {
        enum yaml_doc_kind kind;
        unsigned line;                      /* 1-based */
        unsigned column;                    /* 1-based, in characters */
        const struct yaml_doc_node *parent; /* NULL for the root */
        const struct yaml_doc_node *key;    /* for a mapping value: its key (a scalar) */
        size_t index;                       /* for a sequence item: its index */
        /* YAML_DOC_SCALAR: the value, NUL-terminated (no NUL inside), and its style */
        const char *str;
        size_t len;
        int plain; /* unquoted and not a block scalar: only these are numbers, booleans, null */
        /* YAML_DOC_MAP: n pairs keys[i] -> vals[i] in document order (keys are scalars).
         * YAML_DOC_SEQ: n items vals[i]. */
        const struct yaml_doc_node *const *keys;
        const struct yaml_doc_node *const *vals;
        size_t n;
};

struct yaml_doc {
        const struct yaml_doc_node *root; /* NULL when there is no document, or an empty one */
        size_t nodes;                     /* nodes in the tree */
        struct yaml_doc_arena *arena;     /* private: where the nodes live */
};

/*
 * Load one document from data[0..len). len over max_len is refused. On KILN_OK *ret is a tree
 * (problems that do not stop the load may have been recorded in diags: check its count); on
 * KILN_E_SYNTAX a problem that stops the load was recorded and nothing is returned; KILN_E_NOMEM
 * otherwise.
 */
int yaml_doc_load(const uint8_t *data, size_t len, size_t max_len, struct yaml_doc_diags *diags,
                  struct yaml_doc **ret);
void yaml_doc_free(struct yaml_doc *doc); /* NULL-safe */

/*
 * Read a YAML file of at most max bytes for a loader: *ret_data (kiln_free) and the directory that
 * relative paths in it resolve against (ret_dir). A file over the limit is reported in diags at 1:1
 * and returns too_large_code; other read errors return their code with kiln_fail detail.
 */
int yaml_doc_read_file(const char *path, size_t max, int too_large_code,
                       struct yaml_doc_diags *diags, uint8_t **ret_data, size_t *ret_len,
                       char *ret_dir, size_t dir_cap);

/*
 * Memory that lives as long as the document (its arena): zeroed, aligned for any type. Lets a
 * parser built on the tree keep its strings and tables next to the nodes and free all at once.
 * NULL when out of memory or n is over KILN_RECIPE_FILE_MAX * 8.
 */
void *yaml_doc_alloc(struct yaml_doc *doc, size_t n);
char *yaml_doc_strndup(struct yaml_doc *doc, const char *s, size_t n);

/* "keys[1].certificate.subject[0].CN" ("" for the root) into out, shortened with "..." to fit. */
void yaml_doc_path(const struct yaml_doc_node *n, char *out, size_t cap);

/* Report "PATH: message" at the node (at 1:1 when n is NULL). KILN_E_SYNTAX, or KILN_E_NOMEM. */
int yaml_doc_err(struct yaml_doc_diags *d, const struct yaml_doc_node *n, const char *fmt, ...)
    KILN_PRINTF(3, 4);

/* "a mapping", "a sequence", "a string", "an integer", "null", "a boolean": for messages. */
const char *yaml_doc_describe(const struct yaml_doc_node *n);

/* 1 when n is a plain null scalar (empty, "~", "null", "Null", "NULL"). */
int yaml_doc_is_null(const struct yaml_doc_node *n);

/* ---------------------------------------------------------------- schema helpers */

#define YAML_DOC_REQUIRED 1u /* the key must be present */

struct yaml_doc_key {
        const char *name;
        unsigned flags;
};

/*
 * Check that n is a mapping whose keys are all among keys[0..nkeys) and that every required key is
 * present; vals[i] is set to the value of keys[i] or NULL when absent (all NULL when n is not a
 * mapping). Unknown keys are reported at the key ("unknown key 'x' (did you mean 'y'?)"), missing
 * ones at the mapping. Returns KILN_OK when n is a mapping (even with unknown or missing keys:
 * the problems are recorded and the caller goes on with what is there).
 */
int yaml_doc_map(struct yaml_doc_diags *d, const struct yaml_doc_node *n,
                 const struct yaml_doc_key *keys, size_t nkeys, const struct yaml_doc_node **vals);

/* Check that n is a sequence of min..max items. */
int yaml_doc_seq(struct yaml_doc_diags *d, const struct yaml_doc_node *n, size_t min, size_t max);

/* Bits for yaml_doc_get_str. */
#define YAML_DOC_STR_MULTILINE 1u /* allow newline and tab (other control characters never) */
#define YAML_DOC_STR_ASCII 2u     /* printable ASCII only */

/*
 * A string scalar of min_len..max_len bytes. Quoted scalars are always strings; a plain scalar is
 * a string unless it is null or a boolean (true/false), which are reported as the wrong type, so
 * `version: 1.2` is the string "1.2". Control characters are refused (see the flags). The string
 * lives in the document.
 */
int yaml_doc_get_str(struct yaml_doc_diags *d, const struct yaml_doc_node *n, size_t min_len,
                     size_t max_len, unsigned flags, const char **ret);

/* An unsigned integer: a plain scalar in decimal or 0x-hex, within [min, max]. */
int yaml_doc_get_u64(struct yaml_doc_diags *d, const struct yaml_doc_node *n, uint64_t min,
                     uint64_t max, uint64_t *ret);

/* A boolean: plain `true` or `false` (YAML 1.1's yes/no/on/off are refused as ambiguous). */
int yaml_doc_get_bool(struct yaml_doc_diags *d, const struct yaml_doc_node *n, int *ret);

/* One of names[0..n_names) (a string scalar), as its index. */
int yaml_doc_get_enum(struct yaml_doc_diags *d, const struct yaml_doc_node *n,
                      const char *const *names, size_t n_names, unsigned *ret);

#endif
