/*
 * Strict YAML loader on libyaml's event parser, and the typed getters recipes and station
 * configuration are checked with.
 *
 * Expected format: one YAML 1.1/1.2 document in strict UTF-8 made of block or flow mappings,
 * sequences and scalars; no anchors, aliases, tags, complex keys or duplicate keys; at most
 * KILN_YAML_DEPTH_MAX levels and KILN_YAML_NODES_MAX nodes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "kiln/util.h"
#include "kiln/yaml_doc.h"

/* ---------------------------------------------------------------- diagnostics */

void yaml_doc_diags_init(struct yaml_doc_diags *d)
{
        memset(d, 0, sizeof(*d));
}

void yaml_doc_diags_free(struct yaml_doc_diags *d)
{
        if (d == NULL)
                return;
        kiln_free(d->v);
        memset(d, 0, sizeof(*d));
}

static int diag_addv(struct yaml_doc_diags *d, unsigned line, unsigned column, const char *fmt,
                     va_list ap) KILN_PRINTF(4, 0);

static int diag_addv(struct yaml_doc_diags *d, unsigned line, unsigned column, const char *fmt,
                     va_list ap)
{
        struct yaml_doc_diag *e;

        if (d->n >= KILN_DIAG_MAX) {
                d->dropped++;
                return KILN_OK;
        }
        if (d->n == d->cap) {
                size_t ncap = d->cap ? d->cap * 2 : 8;
                struct yaml_doc_diag *nv;

                if (ncap > KILN_DIAG_MAX)
                        ncap = KILN_DIAG_MAX;
                nv = kiln_realloc(d->v, ncap * sizeof(*nv));
                if (nv == NULL)
                        return KILN_E_NOMEM;
                d->v = nv;
                d->cap = ncap;
        }
        e = &d->v[d->n];
        e->line = line;
        e->column = column;
        /* a message too long for the slot is cut: it is text for people, never parsed */
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        d->n++;
        return KILN_OK;
}

int yaml_doc_diag_add(struct yaml_doc_diags *d, unsigned line, unsigned column, const char *fmt,
                      ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = diag_addv(d, line, column, fmt, ap);
        va_end(ap);
        return r;
}

size_t yaml_doc_diags_count(const struct yaml_doc_diags *d)
{
        return d->n + d->dropped;
}

void yaml_doc_diags_sort(struct yaml_doc_diags *d)
{
        /* insertion sort: stable, and n is at most KILN_DIAG_MAX */
        for (size_t i = 1; i < d->n; i++) {
                struct yaml_doc_diag t = d->v[i];
                size_t j = i;

                while (j > 0 && (d->v[j - 1].line > t.line ||
                                 (d->v[j - 1].line == t.line && d->v[j - 1].column > t.column))) {
                        d->v[j] = d->v[j - 1];
                        j--;
                }
                d->v[j] = t;
        }
}

void yaml_doc_diags_print(const struct yaml_doc_diags *d, const char *file, FILE *f)
{
        for (size_t i = 0; i < d->n; i++)
                fprintf(f, "%s:%u:%u: %s\n", file, d->v[i].line, d->v[i].column, d->v[i].msg);
        if (d->dropped > 0) {
                unsigned line = d->n ? d->v[d->n - 1].line : 1;
                unsigned col = d->n ? d->v[d->n - 1].column : 1;

                fprintf(f, "%s:%u:%u: too many problems, %zu more not shown\n", file, line, col,
                        d->dropped);
        }
}

void yaml_doc_quote(const char *s, size_t len, char *out, size_t cap)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0, shown = 0;

        if (cap < 8) {
                if (cap > 0)
                        out[0] = '\0';
                return;
        }
        out[o++] = '\'';
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                char tmp[4];
                size_t n = 0;

                if (c == '\'' || c == '\\') {
                        tmp[n++] = '\\';
                        tmp[n++] = (char)c;
                } else if (c < 0x20 || c >= 0x7f) {
                        tmp[n++] = '\\';
                        tmp[n++] = 'x';
                        tmp[n++] = hex[c >> 4];
                        tmp[n++] = hex[c & 15];
                } else {
                        tmp[n++] = (char)c;
                }
                /* room for this, "...'" and the terminator */
                if (shown >= YAML_DOC_QUOTE_MAX || o + n + 5 > cap) {
                        memcpy(out + o, "...", 3);
                        o += 3;
                        break;
                }
                memcpy(out + o, tmp, n);
                o += n;
                shown++;
        }
        out[o++] = '\'';
        out[o] = '\0';
}

/* ---------------------------------------------------------------- arena */

#define ARENA_BLOCK 16384u
#define ARENA_ALLOC_MAX ((size_t)KILN_RECIPE_FILE_MAX * 8u)

struct arena_block {
        struct arena_block *next;
        size_t used;
        size_t cap;
        max_align_t data[];
};

struct yaml_doc_arena {
        struct arena_block *head;
};

static void *arena_alloc(struct yaml_doc_arena *a, size_t n)
{
        const size_t align = sizeof(max_align_t);
        struct arena_block *b = a->head;
        size_t need;
        void *p;

        if (n > ARENA_ALLOC_MAX)
                return NULL;
        need = (n + align - 1) / align * align;
        if (need == 0)
                need = align;
        if (b == NULL || b->cap - b->used < need) {
                size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;

                b = kiln_malloc(sizeof(*b) + cap);
                if (b == NULL)
                        return NULL;
                b->cap = cap;
                b->used = 0;
                /* a big one-off block goes behind the head so the head's free room stays usable */
                if (a->head != NULL && need > ARENA_BLOCK) {
                        b->next = a->head->next;
                        a->head->next = b;
                } else {
                        b->next = a->head;
                        a->head = b;
                }
        }
        p = (unsigned char *)b->data + b->used;
        b->used += need;
        memset(p, 0, n);
        return p;
}

static void arena_free(struct yaml_doc_arena *a)
{
        struct arena_block *b, *next;

        if (a == NULL)
                return;
        for (b = a->head; b != NULL; b = next) {
                next = b->next;
                kiln_free(b);
        }
        kiln_free(a);
}

void *yaml_doc_alloc(struct yaml_doc *doc, size_t n)
{
        return arena_alloc(doc->arena, n);
}

char *yaml_doc_strndup(struct yaml_doc *doc, const char *s, size_t n)
{
        char *p;

        if (n == SIZE_MAX)
                return NULL;
        p = arena_alloc(doc->arena, n + 1);
        if (p == NULL)
                return NULL;
        memcpy(p, s, n);
        p[n] = '\0';
        return p;
}

int yaml_doc_read_file(const char *path, size_t max, int too_large_code,
                       struct yaml_doc_diags *diags, uint8_t **ret_data, size_t *ret_len,
                       char *ret_dir, size_t dir_cap)
{
        const char *slash;
        struct stat st;
        int r;

        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
                r = yaml_doc_diag_add(diags, 1, 1, "file is %llu bytes, over the limit of %zu bytes",
                                      (unsigned long long)st.st_size, max);
                return r < 0 ? r : too_large_code;
        }
        slash = strrchr(path, '/');
        if (slash == NULL)
                r = kiln_strlcpy(ret_dir, ".", dir_cap);
        else if (slash == path)
                r = kiln_strlcpy(ret_dir, "/", dir_cap);
        else
                r = kiln_snprintf(ret_dir, dir_cap, "%.*s", (int)(slash - path), path);
        if (r < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", path);
        /* relative paths in the file resolve against an absolute directory, so what they name
         * does not depend on where a later open happens (a socket path must be absolute) */
        {
                char abs[PATH_MAX];

                if (realpath(ret_dir, abs) != NULL && kiln_strlcpy(ret_dir, abs, dir_cap) < 0)
                        return kiln_fail(KILN_E_RANGE, "path too long: '%s'", abs);
        }
        r = kiln_file_read(path, max, ret_data, ret_len);
        if (r == KILN_E_LIMIT) {
                /* it grew past the limit between the stat and the read */
                kiln_err_reset();
                r = yaml_doc_diag_add(diags, 1, 1, "file is over the limit of %zu bytes", max);
                return r < 0 ? r : too_large_code;
        }
        return r;
}

void yaml_doc_free(struct yaml_doc *doc)
{
        if (doc == NULL)
                return;
        arena_free(doc->arena);
        kiln_free(doc);
}

/* ---------------------------------------------------------------- loading */

/* A node while its collection is being built: children are chained, arrays made at the end. */
struct bnode {
        struct yaml_doc_node pub;
        struct bnode *next;
};

struct frame {
        struct bnode *node;
        struct bnode *first, *last;
        size_t count;
        struct bnode *pending_key; /* map: the key waiting for its value */
};

struct loader {
        struct yaml_doc *doc;
        struct yaml_doc_diags *diags;
        const uint8_t *data;
        size_t len;
        struct frame stack[KILN_YAML_DEPTH_MAX];
        unsigned depth;
        size_t nodes;
        unsigned docs;
        int bom; /* the input starts with a UTF-8 byte order mark */
        struct bnode *root;
};

/* 1-based column of a libyaml mark: libyaml counts a leading byte order mark as a character,
 * editors do not. */
static unsigned mark_column(const struct loader *l, const yaml_mark_t *m)
{
        if (l->bom && m->line == 0 && m->column > 0)
                return (unsigned)m->column;
        return (unsigned)m->column + 1;
}

/* Position (1-based line, column in characters) of byte offset off, counting lines as libyaml. */
static void offset_position(const uint8_t *p, size_t len, size_t off, unsigned *ret_line,
                            unsigned *ret_col)
{
        unsigned line = 1, col = 1;

        size_t i = 0;

        if (off > len)
                off = len;
        /* a byte order mark takes no column */
        if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF && off >= 3)
                i = 3;
        for (; i < off; i++) {
                if (p[i] == '\n' || (p[i] == '\r' && (i + 1 >= len || p[i + 1] != '\n'))) {
                        line++;
                        col = 1;
                } else if ((p[i] & 0xC0) != 0x80 && p[i] != '\r') {
                        col++;
                }
        }
        *ret_line = line;
        *ret_col = col;
}

/* Offset of the first byte that is not strict UTF-8, or len when all is valid. */
static size_t utf8_check(const uint8_t *p, size_t len)
{
        size_t i = 0;

        while (i < len) {
                uint8_t c = p[i];
                size_t n;
                uint32_t cp, min;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xC2 && c <= 0xDF)
                        n = 2, cp = c & 0x1F, min = 0x80;
                else if (c >= 0xE0 && c <= 0xEF)
                        n = 3, cp = c & 0x0F, min = 0x800;
                else if (c >= 0xF0 && c <= 0xF4)
                        n = 4, cp = c & 0x07, min = 0x10000;
                else
                        return i;
                if (len - i < n)
                        return i;
                for (size_t k = 1; k < n; k++) {
                        if ((p[i + k] & 0xC0) != 0x80)
                                return i;
                        cp = cp << 6 | (p[i + k] & 0x3F);
                }
                if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                        return i;
                i += n;
        }
        return len;
}

static int mark_err(struct loader *l, const yaml_mark_t *m, const char *fmt, ...) KILN_PRINTF(3, 4);

static int mark_err(struct loader *l, const yaml_mark_t *m, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = diag_addv(l->diags, (unsigned)m->line + 1, mark_column(l, m), fmt, ap);
        va_end(ap);
        return r < 0 ? r : KILN_E_SYNTAX;
}

/* mark_err with "PATH: " of node n in front (n's own path, as yaml_doc_path gives it). */
static int mark_path_err(struct loader *l, unsigned line, unsigned column,
                         const struct yaml_doc_node *n, const char *fmt, ...) KILN_PRINTF(5, 6);

static int mark_path_err(struct loader *l, unsigned line, unsigned column,
                         const struct yaml_doc_node *n, const char *fmt, ...)
{
        char path[YAML_DOC_PATH_MAX + 8], msg[YAML_DOC_MSG_MAX];
        va_list ap;
        int r;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        yaml_doc_path(n, path, sizeof(path));
        if (path[0] != '\0')
                r = yaml_doc_diag_add(l->diags, line, column, "%s: %s", path, msg);
        else
                r = yaml_doc_diag_add(l->diags, line, column, "%s", msg);
        return r < 0 ? r : KILN_E_SYNTAX;
}

static struct bnode *node_new(struct loader *l, enum yaml_doc_kind kind, const yaml_mark_t *m)
{
        struct bnode *b = arena_alloc(l->doc->arena, sizeof(*b));

        if (b == NULL)
                return NULL;
        b->pub.kind = kind;
        b->pub.line = (unsigned)m->line + 1;
        b->pub.column = mark_column(l, m);
        b->pub.str = "";
        return b;
}

/* prefix + name, quoted for a message ("'&base'", "'!!str'"). */
static void quote_prefixed(const char *prefix, const char *name, char *out, size_t cap)
{
        char tmp[YAML_DOC_QUOTE_MAX + 8];

        snprintf(tmp, sizeof(tmp), "%s%s", prefix, name);
        yaml_doc_quote(tmp, strlen(tmp), out, cap);
}

/* Report an anchor or tag on an event: both are refused, the node itself is kept. */
static int check_props(struct loader *l, const yaml_mark_t *m, const yaml_char_t *anchor,
                       const yaml_char_t *tag)
{
        static const char core[] = "tag:yaml.org,2002:";
        char q[YAML_DOC_QUOTE_MAX * 4 + 8];
        int r;

        if (anchor != NULL) {
                quote_prefixed("&", (const char *)anchor, q, sizeof(q));
                r = mark_err(l, m, "anchors are not allowed (%s)", q);
                if (r == KILN_E_NOMEM)
                        return r;
        }
        if (tag != NULL) {
                const char *t = (const char *)tag;

                /* show the core schema's tags the way they are written */
                if (strncmp(t, core, sizeof(core) - 1) == 0)
                        quote_prefixed("!!", t + sizeof(core) - 1, q, sizeof(q));
                else
                        quote_prefixed("", t, q, sizeof(q));
                r = mark_err(l, m, "tags are not allowed (%s)", q);
                if (r == KILN_E_NOMEM)
                        return r;
        }
        return KILN_OK;
}

/* Attach a finished node to the open collection (or make it the root). */
static void attach(struct loader *l, struct bnode *b)
{
        struct frame *f;

        if (l->depth == 0) {
                l->root = b;
                return;
        }
        f = &l->stack[l->depth - 1];
        b->pub.parent = &f->node->pub;
        if (f->node->pub.kind == YAML_DOC_MAP) {
                if (f->pending_key == NULL) {
                        f->pending_key = b; /* a key: paired with the next node */
                        return;
                }
                b->pub.key = &f->pending_key->pub;
                f->pending_key->next = b;
                if (f->last != NULL)
                        f->last->next = f->pending_key;
                else
                        f->first = f->pending_key;
                f->last = b;
                f->pending_key = NULL;
                f->count++;
                return;
        }
        b->pub.index = f->count;
        if (f->last != NULL)
                f->last->next = b;
        else
                f->first = b;
        f->last = b;
        f->count++;
}

static int count_node(struct loader *l, const yaml_mark_t *m)
{
        if (++l->nodes > KILN_YAML_NODES_MAX)
                return mark_err(l, m, "more than %u YAML nodes", (unsigned)KILN_YAML_NODES_MAX);
        return KILN_OK;
}

static int on_scalar(struct loader *l, yaml_event_t *e)
{
        const yaml_mark_t *m = &e->start_mark;
        struct bnode *b;
        const char *v = (const char *)e->data.scalar.value;
        size_t n = e->data.scalar.length;
        int r;

        r = count_node(l, m);
        if (r < 0)
                return r;
        r = check_props(l, m, e->data.scalar.anchor, e->data.scalar.tag);
        if (r < 0)
                return r;
        b = node_new(l, YAML_DOC_SCALAR, m);
        if (b == NULL)
                return KILN_E_NOMEM;
        if (memchr(v, '\0', n) != NULL) {
                r = mark_err(l, m, "NUL characters are not allowed in strings");
                if (r == KILN_E_NOMEM)
                        return r;
                b->pub.kind = YAML_DOC_BAD;
        } else {
                char *s = yaml_doc_strndup(l->doc, v, n);

                if (s == NULL)
                        return KILN_E_NOMEM;
                b->pub.str = s;
                b->pub.len = n;
                b->pub.plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        }
        attach(l, b);
        return KILN_OK;
}

static int on_alias(struct loader *l, yaml_event_t *e)
{
        const yaml_mark_t *m = &e->start_mark;
        char q[YAML_DOC_QUOTE_MAX * 4 + 8];
        const char *a = (const char *)e->data.alias.anchor;
        struct bnode *b;
        int r;

        r = count_node(l, m);
        if (r < 0)
                return r;
        quote_prefixed("*", a, q, sizeof(q));
        r = mark_err(l, m, "aliases are not allowed (%s)", q);
        if (r == KILN_E_NOMEM)
                return r;
        b = node_new(l, YAML_DOC_BAD, m);
        if (b == NULL)
                return KILN_E_NOMEM;
        attach(l, b);
        return KILN_OK;
}

static int on_start(struct loader *l, yaml_event_t *e, enum yaml_doc_kind kind)
{
        const yaml_mark_t *m = &e->start_mark;
        const yaml_char_t *anchor, *tag;
        struct bnode *b;
        struct frame *f;
        int r;

        r = count_node(l, m);
        if (r < 0)
                return r;
        if (l->depth >= KILN_YAML_DEPTH_MAX)
                return mark_err(l, m, "nesting deeper than %u levels",
                                (unsigned)KILN_YAML_DEPTH_MAX);
        if (kind == YAML_DOC_MAP) {
                anchor = e->data.mapping_start.anchor;
                tag = e->data.mapping_start.tag;
        } else {
                anchor = e->data.sequence_start.anchor;
                tag = e->data.sequence_start.tag;
        }
        r = check_props(l, m, anchor, tag);
        if (r < 0)
                return r;
        b = node_new(l, kind, m);
        if (b == NULL)
                return KILN_E_NOMEM;
        /* place the collection now (attach() confirms it at its end) so problems found while
         * closing it can name its path */
        if (l->depth > 0) {
                struct frame *pf = &l->stack[l->depth - 1];

                b->pub.parent = &pf->node->pub;
                if (pf->node->pub.kind == YAML_DOC_MAP && pf->pending_key != NULL)
                        b->pub.key = &pf->pending_key->pub;
                else if (pf->node->pub.kind == YAML_DOC_SEQ)
                        b->pub.index = pf->count;
        }
        f = &l->stack[l->depth++];
        memset(f, 0, sizeof(*f));
        f->node = b;
        return KILN_OK;
}

struct key_ref {
        const struct yaml_doc_node *key;
        size_t pos;
};

static int key_ref_cmp(const void *pa, const void *pb)
{
        const struct key_ref *a = pa, *b = pb;
        size_t n = a->key->len < b->key->len ? a->key->len : b->key->len;
        int c = memcmp(a->key->str, b->key->str, n);

        if (c != 0)
                return c;
        if (a->key->len != b->key->len)
                return a->key->len < b->key->len ? -1 : 1;
        return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Close a mapping: refuse non-scalar and duplicate keys, then make the pair arrays. */
static int finish_map(struct loader *l, struct frame *f)
{
        struct yaml_doc_node *m = &f->node->pub;
        const struct yaml_doc_node **keys = NULL, **vals = NULL;
        struct key_ref *refs = NULL;
        uint8_t *drop = NULL;
        size_t n = f->count, nrefs = 0, out = 0, first, i;
        struct bnode *k;
        int r;

        keys = arena_alloc(l->doc->arena, (n ? n : 1) * sizeof(*keys));
        vals = arena_alloc(l->doc->arena, (n ? n : 1) * sizeof(*vals));
        refs = kiln_calloc(n ? n : 1, sizeof(*refs));
        drop = kiln_calloc(n ? n : 1, 1);
        if (keys == NULL || vals == NULL || refs == NULL || drop == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        for (k = f->first, i = 0; k != NULL; k = k->next->next, i++) {
                if (k->pub.kind == YAML_DOC_SCALAR) {
                        refs[nrefs].key = &k->pub;
                        refs[nrefs].pos = i;
                        nrefs++;
                } else {
                        drop[i] = 1;
                        if (k->pub.kind != YAML_DOC_BAD) {
                                r = mark_path_err(l, k->pub.line, k->pub.column, m,
                                                  "mapping keys must be strings, not %s",
                                                  yaml_doc_describe(&k->pub));
                                if (r == KILN_E_NOMEM)
                                        goto out;
                        }
                }
        }
        if (nrefs > 1)
                qsort(refs, nrefs, sizeof(*refs), key_ref_cmp);
        for (i = 1, first = 0; i < nrefs; i++) {
                const struct yaml_doc_node *a = refs[i - 1].key, *b = refs[i].key;
                char q[YAML_DOC_QUOTE_MAX * 4 + 8];

                if (a->len != b->len || memcmp(a->str, b->str, a->len) != 0) {
                        first = i;
                        continue;
                }
                /* refs are sorted by (key, position): the first of a run is the one kept */
                drop[refs[i].pos] = 1;
                yaml_doc_quote(b->str, b->len, q, sizeof(q));
                r = mark_path_err(l, b->line, b->column, m,
                                  "duplicate key %s (first at line %u, column %u)", q,
                                  refs[first].key->line, refs[first].key->column);
                if (r == KILN_E_NOMEM)
                        goto out;
        }
        for (k = f->first, i = 0; k != NULL; k = k->next->next, i++) {
                if (drop[i])
                        continue;
                keys[out] = &k->pub;
                vals[out] = &k->next->pub;
                out++;
        }
        m->keys = keys;
        m->vals = vals;
        m->n = out;
        r = KILN_OK;
out:
        kiln_free(refs);
        kiln_free(drop);
        return r;
}

static int on_end(struct loader *l)
{
        struct frame *f;
        struct bnode *b;
        int r;

        if (l->depth == 0)
                return KILN_E_INTERNAL;
        f = &l->stack[l->depth - 1];
        b = f->node;
        if (b->pub.kind == YAML_DOC_MAP) {
                r = finish_map(l, f);
                if (r < 0)
                        return r;
        } else {
                const struct yaml_doc_node **vals;
                struct bnode *c;
                size_t i = 0;

                vals = arena_alloc(l->doc->arena, (f->count ? f->count : 1) * sizeof(*vals));
                if (vals == NULL)
                        return KILN_E_NOMEM;
                for (c = f->first; c != NULL; c = c->next)
                        vals[i++] = &c->pub;
                b->pub.vals = vals;
                b->pub.n = f->count;
        }
        l->depth--;
        attach(l, b);
        return KILN_OK;
}

static int syntax_error(struct loader *l, const yaml_parser_t *p)
{
        yaml_mark_t m = p->problem_mark;
        const char *problem = p->problem ? p->problem : "malformed YAML";
        unsigned line, col;

        if (p->error == YAML_MEMORY_ERROR)
                return KILN_E_NOMEM;
        if (p->error == YAML_READER_ERROR) {
                offset_position(l->data, l->len, p->problem_offset, &line, &col);
                m.line = line - 1;
                m.column = col - 1;
                if (p->problem_value >= 0)
                        return mark_err(l, &m, "invalid input: %s (0x%x)", problem,
                                        (unsigned)p->problem_value);
                return mark_err(l, &m, "invalid input: %s", problem);
        }
        if (p->context != NULL)
                return mark_err(l, &m, "syntax error: %s (%s at line %u, column %u)", problem,
                                p->context, (unsigned)p->context_mark.line + 1,
                                mark_column(l, &p->context_mark));
        return mark_err(l, &m, "syntax error: %s", problem);
}

static int load_events(struct loader *l, yaml_parser_t *p)
{
        yaml_event_t e;
        int r = KILN_OK, done = 0;

        while (!done) {
                if (!yaml_parser_parse(p, &e))
                        return syntax_error(l, p);
                switch (e.type) {
                case YAML_STREAM_END_EVENT:
                        done = 1;
                        break;
                case YAML_DOCUMENT_START_EVENT:
                        if (++l->docs > 1)
                                r = mark_err(l, &e.start_mark,
                                             "more than one YAML document in the file");
                        break;
                case YAML_SCALAR_EVENT:
                        r = on_scalar(l, &e);
                        break;
                case YAML_ALIAS_EVENT:
                        r = on_alias(l, &e);
                        break;
                case YAML_MAPPING_START_EVENT:
                        r = on_start(l, &e, YAML_DOC_MAP);
                        break;
                case YAML_SEQUENCE_START_EVENT:
                        r = on_start(l, &e, YAML_DOC_SEQ);
                        break;
                case YAML_MAPPING_END_EVENT:
                case YAML_SEQUENCE_END_EVENT:
                        r = on_end(l);
                        break;
                default:
                        break;
                }
                yaml_event_delete(&e);
                if (r < 0)
                        return r;
        }
        return KILN_OK;
}

int yaml_doc_load(const uint8_t *data, size_t len, size_t max_len, struct yaml_doc_diags *diags,
                  struct yaml_doc **ret)
{
        struct loader l;
        yaml_parser_t parser;
        int parser_ok = 0, r;
        size_t bad;

        memset(&l, 0, sizeof(l));
        l.diags = diags;
        l.data = data;
        l.len = len;
        l.bom = len >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF;
        if (len > max_len) {
                r = yaml_doc_diag_add(diags, 1, 1, "file is %zu bytes, over the limit of %zu bytes",
                                      len, max_len);
                r = r < 0 ? r : KILN_E_SYNTAX;
                goto out;
        }
        bad = utf8_check(data, len);
        if (bad < len) {
                unsigned line, col;

                offset_position(data, len, bad, &line, &col);
                r = yaml_doc_diag_add(diags, line, col, "invalid UTF-8 (byte 0x%02x)", data[bad]);
                r = r < 0 ? r : KILN_E_SYNTAX;
                goto out;
        }
        l.doc = kiln_calloc(1, sizeof(*l.doc));
        if (l.doc == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        l.doc->arena = kiln_calloc(1, sizeof(*l.doc->arena));
        if (l.doc->arena == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (!yaml_parser_initialize(&parser)) {
                r = KILN_E_NOMEM;
                goto out;
        }
        parser_ok = 1;
        yaml_parser_set_input_string(&parser, data, len);
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
        r = load_events(&l, &parser);
        if (r < 0)
                goto out;
        l.doc->root = l.root ? &l.root->pub : NULL;
        l.doc->nodes = l.nodes;
        *ret = l.doc;
        l.doc = NULL;
        r = KILN_OK;
out:
        if (parser_ok)
                yaml_parser_delete(&parser);
        yaml_doc_free(l.doc);
        return r;
}

/* ---------------------------------------------------------------- paths and messages */

static int key_is_simple(const struct yaml_doc_node *k)
{
        if (k->len == 0 || k->len > 40)
                return 0;
        for (size_t i = 0; i < k->len; i++) {
                char c = k->str[i];

                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-'))
                        return 0;
        }
        return 1;
}

void yaml_doc_path(const struct yaml_doc_node *n, char *out, size_t cap)
{
        const struct yaml_doc_node *chain[KILN_YAML_DEPTH_MAX + 2];
        size_t depth = 0, o = 0;

        if (cap == 0)
                return;
        out[0] = '\0';
        for (; n != NULL && n->parent != NULL && depth < sizeof(chain) / sizeof(chain[0]);
             n = n->parent) {
                /* a mapping key has no place of its own: it is reported under its mapping */
                if (n->parent->kind == YAML_DOC_MAP && n->key == NULL)
                        continue;
                chain[depth++] = n;
        }
        while (depth > 0) {
                const struct yaml_doc_node *c = chain[--depth];
                char part[YAML_DOC_QUOTE_MAX * 4 + 16];
                size_t pl;

                if (c->key != NULL) {
                        if (key_is_simple(c->key)) {
                                snprintf(part, sizeof(part), "%s%s", o ? "." : "", c->key->str);
                        } else {
                                char q[YAML_DOC_QUOTE_MAX * 4 + 8];

                                yaml_doc_quote(c->key->str, c->key->len, q, sizeof(q));
                                snprintf(part, sizeof(part), "[%s]", q);
                        }
                } else {
                        snprintf(part, sizeof(part), "[%zu]", c->index);
                }
                pl = strlen(part);
                if (o + pl + 1 > cap || o + pl > YAML_DOC_PATH_MAX) {
                        if (o + 4 <= cap) {
                                memcpy(out + o, "...", 4);
                        }
                        return;
                }
                memcpy(out + o, part, pl + 1);
                o += pl;
        }
}

static int node_errv(struct yaml_doc_diags *d, const struct yaml_doc_node *n, const char *fmt,
                     va_list ap) KILN_PRINTF(3, 0);

static int node_errv(struct yaml_doc_diags *d, const struct yaml_doc_node *n, const char *fmt,
                     va_list ap)
{
        char path[YAML_DOC_PATH_MAX + 8];
        char msg[YAML_DOC_MSG_MAX];
        int r;

        vsnprintf(msg, sizeof(msg), fmt, ap);
        yaml_doc_path(n, path, sizeof(path));
        if (path[0] != '\0')
                r = yaml_doc_diag_add(d, n ? n->line : 1, n ? n->column : 1, "%s: %s", path, msg);
        else
                r = yaml_doc_diag_add(d, n ? n->line : 1, n ? n->column : 1, "%s", msg);
        return r < 0 ? r : KILN_E_SYNTAX;
}

int yaml_doc_err(struct yaml_doc_diags *d, const struct yaml_doc_node *n, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = node_errv(d, n, fmt, ap);
        va_end(ap);
        return r;
}

int yaml_doc_is_null(const struct yaml_doc_node *n)
{
        if (n == NULL || n->kind != YAML_DOC_SCALAR || !n->plain)
                return 0;
        return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
               strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static int is_bool_word(const char *s)
{
        return strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0 ||
               strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0;
}

static int looks_integer(const char *s)
{
        if (*s == '-' || *s == '+')
                s++;
        if (*s == '\0')
                return 0;
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
                s += 2;
                if (*s == '\0')
                        return 0;
                for (; *s; s++)
                        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
                              (*s >= 'A' && *s <= 'F')))
                                return 0;
                return 1;
        }
        for (; *s; s++)
                if (*s < '0' || *s > '9')
                        return 0;
        return 1;
}

const char *yaml_doc_describe(const struct yaml_doc_node *n)
{
        if (n == NULL)
                return "nothing";
        switch (n->kind) {
        case YAML_DOC_MAP:
                return "a mapping";
        case YAML_DOC_SEQ:
                return "a sequence";
        case YAML_DOC_SCALAR:
                if (yaml_doc_is_null(n))
                        return "null";
                if (n->plain && is_bool_word(n->str))
                        return "a boolean";
                if (n->plain && looks_integer(n->str))
                        return "an integer";
                return "a string";
        default:
                return "an invalid value";
        }
}

/* ---------------------------------------------------------------- schema helpers */

/* Edit distance of short strings, capped (for "did you mean"). */
static size_t edit_distance(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b), row[33];

        if (la > 32 || lb > 32)
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t prev = row[0];

                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t cur = row[j];
                        size_t best = prev + (a[i - 1] != b[j - 1]);

                        if (row[j] + 1 < best)
                                best = row[j] + 1;
                        if (row[j - 1] + 1 < best)
                                best = row[j - 1] + 1;
                        row[j] = best;
                        prev = cur;
                }
        }
        return row[lb];
}

int yaml_doc_map(struct yaml_doc_diags *d, const struct yaml_doc_node *n,
                 const struct yaml_doc_key *keys, size_t nkeys, const struct yaml_doc_node **vals)
{
        int r;

        for (size_t i = 0; i < nkeys; i++)
                vals[i] = NULL;
        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_MAP)
                return yaml_doc_err(d, n, "expected a mapping, got %s", yaml_doc_describe(n));
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *k = n->keys[i];
                size_t j, best = SIZE_MAX, best_j = 0;
                char q[YAML_DOC_QUOTE_MAX * 4 + 8];

                for (j = 0; j < nkeys; j++)
                        if (strcmp(k->str, keys[j].name) == 0)
                                break;
                if (j < nkeys) {
                        vals[j] = n->vals[i];
                        continue;
                }
                /* a problem past the cap is only counted: spare the suggestion */
                for (j = 0; j < nkeys && d->n < KILN_DIAG_MAX; j++) {
                        size_t dist = edit_distance(k->str, keys[j].name);

                        if (dist < best) {
                                best = dist;
                                best_j = j;
                        }
                }
                yaml_doc_quote(k->str, k->len, q, sizeof(q));
                /* suggest only a near miss: at most 2 edits and fewer than half the letters */
                if (best <= 2 && best * 2 < strlen(keys[best_j].name))
                        r = yaml_doc_err(d, k, "unknown key %s (did you mean '%s'?)", q,
                                         keys[best_j].name);
                else
                        r = yaml_doc_err(d, k, "unknown key %s", q);
                if (r == KILN_E_NOMEM)
                        return r;
        }
        for (size_t i = 0; i < nkeys; i++) {
                if (vals[i] != NULL || !(keys[i].flags & YAML_DOC_REQUIRED))
                        continue;
                r = yaml_doc_err(d, n, "missing required key '%s'", keys[i].name);
                if (r == KILN_E_NOMEM)
                        return r;
        }
        return KILN_OK;
}

int yaml_doc_seq(struct yaml_doc_diags *d, const struct yaml_doc_node *n, size_t min, size_t max)
{
        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_SEQ)
                return yaml_doc_err(d, n, "expected a sequence, got %s", yaml_doc_describe(n));
        if (n->n < min)
                return yaml_doc_err(d, n, "expected at least %zu item%s, got %zu", min,
                                    min == 1 ? "" : "s", n->n);
        if (n->n > max)
                return yaml_doc_err(d, n, "expected at most %zu item%s, got %zu", max,
                                    max == 1 ? "" : "s", n->n);
        return KILN_OK;
}

/* "expected X, got Y" for a node of the wrong kind; the value is quoted when it is a scalar. */
static int wrong_type(struct yaml_doc_diags *d, const struct yaml_doc_node *n, const char *want)
{
        char q[YAML_DOC_QUOTE_MAX * 4 + 8];

        if (n->kind == YAML_DOC_SCALAR && !yaml_doc_is_null(n)) {
                yaml_doc_quote(n->str, n->len, q, sizeof(q));
                return yaml_doc_err(d, n, "expected %s, got %s %s", want, yaml_doc_describe(n), q);
        }
        return yaml_doc_err(d, n, "expected %s, got %s", want, yaml_doc_describe(n));
}

int yaml_doc_get_str(struct yaml_doc_diags *d, const struct yaml_doc_node *n, size_t min_len,
                     size_t max_len, unsigned flags, const char **ret)
{
        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_SCALAR || yaml_doc_is_null(n) || (n->plain && is_bool_word(n->str)))
                return wrong_type(d, n, "a string");
        if (n->len < min_len) {
                if (n->len == 0)
                        return yaml_doc_err(d, n, "must not be empty");
                return yaml_doc_err(d, n, "is %zu characters long, shorter than the minimum of %zu",
                                    n->len, min_len);
        }
        if (n->len > max_len)
                return yaml_doc_err(d, n, "is %zu bytes long, over the limit of %zu", n->len,
                                    max_len);
        for (size_t i = 0; i < n->len; i++) {
                unsigned char c = (unsigned char)n->str[i];

                if ((flags & YAML_DOC_STR_MULTILINE) && (c == '\n' || c == '\t'))
                        continue;
                if (c < 0x20 || c == 0x7f)
                        return yaml_doc_err(d, n, "control character 0x%02x is not allowed%s", c,
                                            c == '\n' ? " (this value is one line)" : "");
                if ((flags & YAML_DOC_STR_ASCII) && c >= 0x80)
                        return yaml_doc_err(d, n, "only ASCII characters are allowed");
        }
        *ret = n->str;
        return KILN_OK;
}

int yaml_doc_get_u64(struct yaml_doc_diags *d, const struct yaml_doc_node *n, uint64_t min,
                     uint64_t max, uint64_t *ret)
{
        char q[YAML_DOC_QUOTE_MAX * 4 + 8];
        uint64_t v;
        int r;

        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_SCALAR || !n->plain || !looks_integer(n->str))
                return wrong_type(d, n, "an integer");
        yaml_doc_quote(n->str, n->len, q, sizeof(q));
        if (n->str[0] == '-' || n->str[0] == '+')
                return yaml_doc_err(d, n, "value %s is out of range %llu..%llu", q,
                                    (unsigned long long)min, (unsigned long long)max);
        if (n->str[0] == '0' && n->len > 1 && n->str[1] >= '0' && n->str[1] <= '9')
                return yaml_doc_err(
                    d, n, "%s has a leading zero (octal in YAML 1.1): write it without", q);
        r = kiln_parse_u64(n->str, min, max, &v);
        if (r == KILN_E_RANGE)
                return yaml_doc_err(d, n, "value %s is out of range %llu..%llu", q,
                                    (unsigned long long)min, (unsigned long long)max);
        if (r < 0)
                return wrong_type(d, n, "an integer");
        *ret = v;
        return KILN_OK;
}

int yaml_doc_get_bool(struct yaml_doc_diags *d, const struct yaml_doc_node *n, int *ret)
{
        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind == YAML_DOC_SCALAR && n->plain && is_bool_word(n->str)) {
                *ret = n->str[0] == 't' || n->str[0] == 'T';
                return KILN_OK;
        }
        return wrong_type(d, n, "true or false");
}

int yaml_doc_get_enum(struct yaml_doc_diags *d, const struct yaml_doc_node *n,
                      const char *const *names, size_t n_names, unsigned *ret)
{
        char list[256], q[YAML_DOC_QUOTE_MAX * 4 + 8];
        size_t o = 0;

        if (n == NULL || n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_SCALAR || yaml_doc_is_null(n))
                return wrong_type(d, n, "a string");
        for (size_t i = 0; i < n_names; i++) {
                if (strcmp(n->str, names[i]) == 0) {
                        *ret = (unsigned)i;
                        return KILN_OK;
                }
        }
        list[0] = '\0';
        for (size_t i = 0; i < n_names && o < sizeof(list); i++) {
                int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);

                if (w < 0)
                        break;
                o += (size_t)w;
        }
        yaml_doc_quote(n->str, n->len, q, sizeof(q));
        return yaml_doc_err(d, n, "expected one of %s; got %s", list, q);
}
