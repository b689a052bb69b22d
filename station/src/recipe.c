/*
 * Recipe loading, checking and template rendering. docs/recipes.md is the reference for every
 * key; keep the two in step.
 *
 * Expected format: one YAML mapping (yaml_doc.h refuses what YAML allows and we do not) with the
 * top-level keys of docs/recipes.md. Every value is checked where it is read and every problem is
 * recorded with its position; checking goes on after a problem so one run reports them all. The
 * cross-references (unique slots and names, the fuse plan as a whole, MAC addresses reaching the
 * device, lock-out without certificates or attestation) are checked at the end with what loaded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/evp.h>

#include "kiln/recipe.h"
#include "kiln/util.h"

#define MAC_MAX UINT64_C(0xffffffffffff)
#define SEQ_MAX UINT64_C(9223372036854775807) /* sequences are SQLite integers */
#define DAYS_MAX 36500u                       /* longest certificate validity in days */
#define LABEL_DOTS_MAX 10000u

/* ---------------------------------------------------------------- character sets */

/* ASCII characters as bits; bit 127 (DEL, never allowed) stands for "any non-ASCII character". */
struct cset {
        uint64_t w[2];
};

#define CS_NONASCII 127u

static void cs_add(struct cset *s, unsigned c)
{
        s->w[(c >> 6) & 1] |= UINT64_C(1) << (c & 63);
}

static int cs_has(const struct cset *s, unsigned c)
{
        if (c >= 128)
                c = CS_NONASCII;
        return (int)((s->w[c >> 6] >> (c & 63)) & 1);
}

static void cs_union(struct cset *a, const struct cset *b)
{
        a->w[0] |= b->w[0];
        a->w[1] |= b->w[1];
}

/* "A-Za-z0-9._-": ranges a-b, a '-' last or first is itself. */
static struct cset cs_make(const char *spec)
{
        struct cset s = {{0, 0}};
        size_t n = strlen(spec);

        for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && spec[i + 1] == '-') {
                        for (unsigned c = (unsigned char)spec[i]; c <= (unsigned char)spec[i + 2];
                             c++)
                                cs_add(&s, c);
                        i += 2;
                } else {
                        cs_add(&s, (unsigned char)spec[i]);
                }
        }
        return s;
}

/* Printable ASCII 0x20..0x7e minus the characters in `minus`. */
static struct cset cs_ascii_minus(const char *minus)
{
        struct cset s = {{0, 0}};

        for (unsigned c = 0x20; c < 0x7f; c++)
                if (strchr(minus, (int)c) == NULL)
                        cs_add(&s, c);
        return s;
}

/* Any printable text: ASCII 0x20..0x7e and non-ASCII; with ml also newline and tab. */
static struct cset cs_text(int ml)
{
        struct cset s = cs_ascii_minus("");

        cs_add(&s, CS_NONASCII);
        if (ml) {
                cs_add(&s, '\n');
                cs_add(&s, '\t');
        }
        return s;
}

/* The first character of `have` that `allowed` lacks, or -1. */
static int cs_first_outside(const struct cset *have, const struct cset *allowed)
{
        for (unsigned c = 0; c < 128; c++)
                if (cs_has(have, c) && !cs_has(allowed, c))
                        return (int)c;
        return -1;
}

static void cs_char_text(int c, char *out, size_t cap)
{
        if (c == CS_NONASCII)
                snprintf(out, cap, "non-ASCII characters");
        else if (c < 0x20)
                snprintf(out, cap, "control character 0x%02x", (unsigned)c);
        else if (c == ' ')
                snprintf(out, cap, "' ' (space)");
        else
                snprintf(out, cap, "'%c'", c);
}

#define CHARS_NAME "A-Za-z0-9._-"
#define CHARS_SERIAL "A-Za-z0-9._/-"

/* ---------------------------------------------------------------- small helpers */

int recipe_name_valid(const char *s)
{
        size_t n = strlen(s);
        struct cset ok = cs_make(CHARS_NAME);

        if (n == 0 || n > KILN_NAME_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] >= 128 || !cs_has(&ok, (unsigned char)s[i]))
                        return 0;
        return 1;
}

void recipe_mac_format(uint64_t mac, char out[RECIPE_MAC_STR])
{
        static const char hex[] = "0123456789abcdef";

        for (int i = 0; i < 6; i++) {
                unsigned b = (unsigned)(mac >> (8 * (5 - i))) & 0xff;

                out[3 * i] = hex[b >> 4];
                out[3 * i + 1] = hex[b & 15];
                out[3 * i + 2] = i < 5 ? ':' : '\0';
        }
}

static unsigned digits_u64(uint64_t v)
{
        unsigned n = 1;

        while (v >= 10) {
                v /= 10;
                n++;
        }
        return n;
}

static int is_leap(unsigned y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
        static const unsigned d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

        return m == 2 && is_leap(y) ? 29 : d[m - 1];
}

/* Days since 1970-01-01 of a civil date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
        int64_t era, yoe, doy, doe;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = y - era * 400;
        doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

static int two_digits(const char *s, unsigned *ret)
{
        if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
                return 0;
        *ret = (unsigned)(s[0] - '0') * 10 + (unsigned)(s[1] - '0');
        return 1;
}

/*
 * "YYYY-MM-DD" (the start of the day, or its last second with end_of_day) or
 * "YYYY-MM-DDTHH:MM:SSZ", years 1970..9999. 1 when valid.
 */
static int parse_time(const char *s, int end_of_day, int64_t *ret_epoch, struct recipe_date *ret)
{
        unsigned y1, y2, mo, d, h = 0, mi = 0, se = 0;
        size_t n = strlen(s);

        if (n != 10 && n != 20)
                return 0;
        if (!two_digits(s, &y1) || !two_digits(s + 2, &y2) || s[4] != '-' ||
            !two_digits(s + 5, &mo) || s[7] != '-' || !two_digits(s + 8, &d))
                return 0;
        if (n == 20) {
                if (s[10] != 'T' || !two_digits(s + 11, &h) || s[13] != ':' ||
                    !two_digits(s + 14, &mi) || s[16] != ':' || !two_digits(s + 17, &se) ||
                    s[19] != 'Z')
                        return 0;
                if (h > 23 || mi > 59 || se > 59)
                        return 0;
        } else if (end_of_day) {
                h = 23, mi = 59, se = 59;
        }
        y1 = y1 * 100 + y2;
        if (y1 < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y1, mo))
                return 0;
        if (ret_epoch != NULL)
                *ret_epoch = days_from_civil(y1, mo, d) * 86400 + h * 3600 + mi * 60 + se;
        if (ret != NULL) {
                ret->year = y1;
                ret->month = mo;
                ret->day = d;
        }
        return 1;
}

static int hex_digit(char c)
{
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static void sha256_of(const uint8_t *p, size_t n, uint8_t out[32])
{
        unsigned int len = 32;

        /* EVP_Digest with SHA-256 cannot fail short of memory exhaustion inside OpenSSL; a
         * failure leaves an all-zero digest, which no file matches and no check accepts */
        memset(out, 0, 32);
        if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1)
                memset(out, 0, 32);
}

/* ---------------------------------------------------------------- PKCS#11 URIs */

static int uri_pchar(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("-._~!$&'()*+,=:@", c) != NULL;
}

int recipe_pkcs11_uri_check(const char *uri, const char *want_type, char *why, size_t cap)
{
        static const char *const attrs[] = {
            "token",
            "manufacturer",
            "serial",
            "model",
            "library-manufacturer",
            "library-description",
            "library-version",
            "slot-id",
            "slot-description",
            "slot-manufacturer",
            "object",
            "id",
            "type",
        };
        unsigned seen = 0;
        const char *p;
        int has_key_name = 0;
        char type[16] = "";

        if (strncmp(uri, "pkcs11:", 7) != 0) {
                snprintf(why, cap, "must start with 'pkcs11:'");
                return 0;
        }
        if (strstr(uri, "pin-value") != NULL || strstr(uri, "pin-source") != NULL) {
                snprintf(why, cap, "a PIN never travels in a URI (pin-value, pin-source)");
                return 0;
        }
        if (strchr(uri, '?') != NULL) {
                snprintf(why, cap,
                         "query attributes are not allowed (PINs and modules come from "
                         "the station configuration)");
                return 0;
        }
        p = uri + 7;
        if (*p == '\0') {
                snprintf(why, cap, "names nothing");
                return 0;
        }
        while (*p != '\0') {
                const char *eq = strchr(p, '='), *end = strchr(p, ';');
                size_t nlen, i, vlen = 0;

                if (end == NULL)
                        end = p + strlen(p);
                if (eq == NULL || eq > end) {
                        snprintf(why, cap, "attribute without '=' at '%.*s'",
                                 (int)(end - p > 32 ? 32 : end - p), p);
                        return 0;
                }
                nlen = (size_t)(eq - p);
                for (i = 0; i < sizeof(attrs) / sizeof(attrs[0]); i++)
                        if (strlen(attrs[i]) == nlen && strncmp(p, attrs[i], nlen) == 0)
                                break;
                if (i == sizeof(attrs) / sizeof(attrs[0])) {
                        snprintf(why, cap, "unknown attribute '%.*s'", (int)(nlen > 32 ? 32 : nlen),
                                 p);
                        return 0;
                }
                if (seen & (1u << i)) {
                        snprintf(why, cap, "attribute '%s' given twice", attrs[i]);
                        return 0;
                }
                seen |= 1u << i;
                for (const char *v = eq + 1; v < end; v++) {
                        if (*v == '%') {
                                if (v + 2 >= end || !hex_digit(v[1]) || !hex_digit(v[2])) {
                                        snprintf(why, cap, "bad percent-encoding in '%s'",
                                                 attrs[i]);
                                        return 0;
                                }
                                v += 2;
                        } else if (!uri_pchar(*v)) {
                                snprintf(why, cap,
                                         "character 0x%02x in '%s' must be "
                                         "percent-encoded",
                                         (unsigned)(unsigned char)*v, attrs[i]);
                                return 0;
                        }
                        vlen++;
                }
                if (vlen == 0) {
                        snprintf(why, cap, "attribute '%s' is empty", attrs[i]);
                        return 0;
                }
                if (strcmp(attrs[i], "object") == 0 || strcmp(attrs[i], "id") == 0)
                        has_key_name = 1;
                if (strcmp(attrs[i], "type") == 0)
                        snprintf(type, sizeof(type), "%.*s",
                                 (int)((size_t)(end - eq - 1) < sizeof(type) - 1
                                           ? (size_t)(end - eq - 1)
                                           : sizeof(type) - 1),
                                 eq + 1);
                p = *end == ';' ? end + 1 : end;
                if (*end == ';' && *p == '\0') {
                        snprintf(why, cap, "ends with ';'");
                        return 0;
                }
        }
        if (want_type == NULL) {
                if (has_key_name || type[0] != '\0') {
                        snprintf(why, cap, "must name a token only (no object, id or type)");
                        return 0;
                }
                return 1;
        }
        if (!has_key_name) {
                snprintf(why, cap, "must name the key with object= or id=");
                return 0;
        }
        if (type[0] != '\0' && strcmp(type, want_type) != 0) {
                snprintf(why, cap, "type must be '%s'", want_type);
                return 0;
        }
        return 1;
}

/* ---------------------------------------------------------------- checking context */

struct rctx {
        struct yaml_doc_diags *d;
        struct yaml_doc *doc;
        struct recipe *r;
        const char *base_dir; /* NULL: referenced files are not read */
        int nomem;
        /* recipe constants folded into templates (NULL until loaded) */
        const char *product_id, *model, *product_name, *manufacturer;
        int serial_ok;         /* serial.format loaded: serial_cs and max_len are known */
        struct cset serial_cs; /* characters a serial may hold */
        int mac_ok;            /* the mac section loaded */
        unsigned mac_used;     /* bit i: address i reaches the device */
        const struct yaml_doc_node *mac_node;
        int keys_loaded; /* the keys list itself was usable */
        /* device object names seen so far, to refuse one used twice */
        struct objref {
                char name[KILN_NAME_MAX + 1];
                const char *what;
                const char *issuer; /* chain objects: keys with one issuer may share one */
                unsigned line;
        } objs[2 * KILN_RECIPE_KEYS_MAX + KILN_RECIPE_CREDENTIALS_MAX + KILN_RECIPE_OBJECTS_MAX +
               1];
        unsigned n_objs;
};

static int ck(struct rctx *c, int r)
{
        if (r == KILN_E_NOMEM)
                c->nomem = 1;
        return r;
}

static int rerr(struct rctx *c, const struct yaml_doc_node *n, const char *fmt, ...)
    KILN_PRINTF(3, 4);

static int rerr(struct rctx *c, const struct yaml_doc_node *n, const char *fmt, ...)
{
        char msg[YAML_DOC_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return ck(c, yaml_doc_err(c->d, n, "%s", msg));
}

/* Note a device object name (already checked) and refuse one used twice. */
static void obj_note(struct rctx *c, const struct yaml_doc_node *n, const char *name,
                     const char *what, const char *issuer)
{
        for (unsigned j = 0; j < c->n_objs; j++) {
                const struct objref *o = &c->objs[j];

                if (strcmp(o->name, name) != 0)
                        continue;
                if (issuer != NULL && o->issuer != NULL && strcmp(issuer, o->issuer) == 0)
                        return;
                rerr(c, n, "device object '%s' is already used for %s (line %u)", name, o->what,
                     o->line);
                return;
        }
        if (c->n_objs < sizeof(c->objs) / sizeof(c->objs[0])) {
                kiln_strlcpy(c->objs[c->n_objs].name, name, sizeof(c->objs[0].name));
                c->objs[c->n_objs].what = what;
                c->objs[c->n_objs].issuer = issuer;
                c->objs[c->n_objs].line = n->line;
                c->n_objs++;
        }
}

static int get_map(struct rctx *c, const struct yaml_doc_node *n, const struct yaml_doc_key *keys,
                   size_t nkeys, const struct yaml_doc_node **vals)
{
        return ck(c, yaml_doc_map(c->d, n, keys, nkeys, vals));
}

static int get_seq(struct rctx *c, const struct yaml_doc_node *n, size_t min, size_t max)
{
        return ck(c, yaml_doc_seq(c->d, n, min, max));
}

static int get_str(struct rctx *c, const struct yaml_doc_node *n, size_t min, size_t max,
                   unsigned flags, const char **ret)
{
        return ck(c, yaml_doc_get_str(c->d, n, min, max, flags, ret));
}

static int get_u64(struct rctx *c, const struct yaml_doc_node *n, uint64_t min, uint64_t max,
                   uint64_t *ret)
{
        return ck(c, yaml_doc_get_u64(c->d, n, min, max, ret));
}

static int get_bool(struct rctx *c, const struct yaml_doc_node *n, int *ret)
{
        return ck(c, yaml_doc_get_bool(c->d, n, ret));
}

static int get_enum(struct rctx *c, const struct yaml_doc_node *n, const char *const *names,
                    size_t n_names, unsigned *ret)
{
        return ck(c, yaml_doc_get_enum(c->d, n, names, n_names, ret));
}

static void quote(const char *s, char *out, size_t cap)
{
        yaml_doc_quote(s, strlen(s), out, cap);
}

#define Q_MAX (YAML_DOC_QUOTE_MAX * 4 + 8)

/* A string of the given characters (ASCII) into a fixed buffer. */
static int get_chars(struct rctx *c, const struct yaml_doc_node *n, size_t min, size_t max,
                     const char *chars, const char *what, char *out, size_t cap)
{
        struct cset ok = cs_make(chars);
        const char *s;
        int r;

        r = get_str(c, n, min, max, YAML_DOC_STR_ASCII, &s);
        if (r < 0)
                return r;
        for (size_t i = 0; s[i] != '\0'; i++) {
                if (!cs_has(&ok, (unsigned char)s[i])) {
                        char q[Q_MAX];

                        quote(s, q, sizeof(q));
                        return rerr(c, n, "%s is not a valid %s (%zu..%zu of %s)", q, what, min,
                                    max, chars);
                }
        }
        if (kiln_strlcpy(out, s, cap) < 0)
                return rerr(c, n, "too long");
        return KILN_OK;
}

/* A device name: object, key, credential or fuse field (docs/protocol.md name alphabet). */
static int get_name(struct rctx *c, const struct yaml_doc_node *n, const char *what,
                    char out[KILN_NAME_MAX + 1])
{
        return get_chars(c, n, 1, KILN_NAME_MAX, CHARS_NAME, what, out, KILN_NAME_MAX + 1);
}

static int get_url(struct rctx *c, const struct yaml_doc_node *n, const char **ret)
{
        const char *s;
        int r;

        r = get_str(c, n, 1, KILN_RECIPE_URL_MAX, YAML_DOC_STR_ASCII, &s);
        if (r < 0)
                return r;
        if ((strncmp(s, "https://", 8) != 0 || s[8] == '\0') &&
            (strncmp(s, "http://", 7) != 0 || s[7] == '\0'))
                return rerr(c, n, "expected an http:// or https:// URL");
        for (size_t i = 0; s[i] != '\0'; i++)
                if (s[i] == ' ')
                        return rerr(c, n, "a URL cannot contain spaces");
        *ret = s;
        return KILN_OK;
}

static int get_sha256(struct rctx *c, const struct yaml_doc_node *n, uint8_t out[32])
{
        const char *s;
        size_t len;
        int r;

        r = get_str(c, n, 1, 128, YAML_DOC_STR_ASCII, &s);
        if (r < 0)
                return r;
        if (strlen(s) != 64 || kiln_hex_decode(s, out, 32, &len) < 0 || len != 32)
                return rerr(c, n, "expected a SHA-256 digest: 64 hex digits");
        return KILN_OK;
}

/* ---------------------------------------------------------------- templates */

enum tctx {
        T_SERIAL, /* serial.format */
        T_UNIT,   /* everything rendered per unit */
};

struct tspec {
        enum tctx ctx;
        size_t src_max;      /* template text */
        size_t render_max;   /* longest rendering allowed */
        unsigned str_flags;  /* YAML_DOC_STR_* */
        struct cset allowed; /* characters the rendering may hold */
        const char *what;    /* "a DNS name", for messages */
};

/* Segments while a template is parsed: at most one per character plus one. */
struct tbuild {
        struct recipe_seg *segs;
        unsigned n;
};

static const char *const unit_placeholders =
    "serial, chip_uid, mac, mac0..mac7, station, product, model, product_name, "
    "manufacturer, yy, yyyy, ww, mm, dd";
static const char *const serial_placeholders =
    "seq, seq:0N, yy, yyyy, ww, mm, dd, station, product";

/* Characters and longest text of a recipe constant folded into a template. */
static void fold_info(const char *s, struct cset *cs, size_t *len)
{
        *len = strlen(s);
        for (size_t i = 0; s[i] != '\0'; i++)
                cs_add(cs, (unsigned char)s[i] >= 128 ? CS_NONASCII : (unsigned char)s[i]);
}

/*
 * Resolve one placeholder {name[:spec]}: fill seg (a literal for a folded constant), its longest
 * rendering and its character set. KILN_E_SYNTAX (reported) when unknown or misused.
 */
static int placeholder(struct rctx *c, const struct yaml_doc_node *n, const struct tspec *ts,
                       const char *name, size_t nlen, const char *spec, size_t slen,
                       struct recipe_seg *seg, size_t *ret_max, struct cset *ret_cs)
{
        char ph[Q_MAX], full[80];
        const char *fold = NULL;
        struct cset cs = {{0, 0}};
        size_t max = 0;
        int takes_spec = 0;

        snprintf(full, sizeof(full), "{%.*s%s%.*s}", (int)(nlen > 32 ? 32 : nlen), name,
                 spec ? ":" : "", (int)(slen > 16 ? 16 : slen), spec ? spec : "");
        yaml_doc_quote(full, strlen(full), ph, sizeof(ph));
        memset(seg, 0, sizeof(*seg));
#define IS(s) (nlen == strlen(s) && memcmp(name, s, nlen) == 0)
        if (IS("seq") && ts->ctx == T_SERIAL) {
                uint64_t last = c->r->serial.last;

                seg->kind = RECIPE_SEG_SEQ;
                takes_spec = 1;
                if (spec != NULL) {
                        unsigned w;

                        if (slen < 2 || slen > 3 || spec[0] != '0' || spec[1] < '1' ||
                            spec[1] > '9' || (slen == 3 && (spec[2] < '0' || spec[2] > '9')))
                                return rerr(c, n,
                                            "placeholder %s: the format is {seq:0N}, N digits "
                                            "1..20",
                                            ph);
                        w = (unsigned)(spec[1] - '0');
                        if (slen == 3)
                                w = w * 10 + (unsigned)(spec[2] - '0');
                        if (w > 20)
                                return rerr(c, n, "placeholder %s: at most 20 digits", ph);
                        seg->arg = w;
                }
                max = digits_u64(last) > seg->arg ? digits_u64(last) : seg->arg;
                cs = cs_make("0-9");
        } else if (IS("yy") || IS("yyyy") || IS("ww") || IS("mm") || IS("dd")) {
                seg->kind = IS("yy")     ? RECIPE_SEG_YY
                            : IS("yyyy") ? RECIPE_SEG_YYYY
                            : IS("ww")   ? RECIPE_SEG_WW
                            : IS("mm")   ? RECIPE_SEG_MM
                                         : RECIPE_SEG_DD;
                max = seg->kind == RECIPE_SEG_YYYY ? 4 : 2;
                cs = cs_make("0-9");
        } else if (IS("station")) {
                seg->kind = RECIPE_SEG_STATION;
                max = KILN_STATION_ID_MAX;
                cs = cs_make(CHARS_NAME);
        } else if (IS("product")) {
                fold = c->product_id ? c->product_id : "";
        } else if ((IS("model") || IS("product_name") || IS("manufacturer")) && ts->ctx == T_UNIT) {
                fold = IS("model")          ? c->model
                       : IS("product_name") ? c->product_name
                                            : c->manufacturer;
                if (fold == NULL)
                        fold = "";
        } else if (IS("serial") && ts->ctx == T_UNIT) {
                seg->kind = RECIPE_SEG_SERIAL;
                max = c->serial_ok ? c->r->serial.max_len : KILN_SERIAL_MAX;
                cs = c->serial_ok ? c->serial_cs : cs_make(CHARS_SERIAL);
        } else if (IS("chip_uid") && ts->ctx == T_UNIT) {
                seg->kind = RECIPE_SEG_CHIP_UID;
                max = 2 * KILN_UID_MAX;
                cs = cs_make("0-9a-f");
        } else if (nlen >= 3 && memcmp(name, "mac", 3) == 0 && ts->ctx == T_UNIT &&
                   (nlen == 3 || (nlen == 4 && name[3] >= '0' && name[3] <= '7'))) {
                unsigned idx = nlen == 4 ? (unsigned)(name[3] - '0') : 0;

                seg->kind = RECIPE_SEG_MAC;
                seg->arg = idx;
                takes_spec = 1;
                if (spec != NULL) {
                        if (slen != 3 || memcmp(spec, "hex", 3) != 0)
                                return rerr(c, n, "placeholder %s: the only format is ':hex'", ph);
                        seg->flags = RECIPE_SEG_MAC_HEX;
                }
                if (c->mac_node == NULL)
                        return rerr(c, n, "placeholder %s needs a 'mac' section", ph);
                if (c->mac_ok && idx >= c->r->mac.per_unit && c->r->mac.per_unit == 1)
                        return rerr(c, n,
                                    "placeholder %s: the recipe allocates 1 MAC address "
                                    "per unit ({mac} or {mac0})",
                                    ph);
                if (c->mac_ok && idx >= c->r->mac.per_unit)
                        return rerr(c, n,
                                    "placeholder %s: the recipe allocates %u MAC addresses "
                                    "per unit ({mac0}..{mac%u})",
                                    ph, c->r->mac.per_unit, c->r->mac.per_unit - 1);
                c->mac_used |= 1u << idx;
                max = seg->flags ? 12 : 17;
                cs = seg->flags ? cs_make("0-9a-f") : cs_make("0-9a-f:");
        } else {
                return rerr(c, n, "unknown placeholder %s (known here: %s)", ph,
                            ts->ctx == T_SERIAL ? serial_placeholders : unit_placeholders);
        }
#undef IS
        if (spec != NULL && !takes_spec)
                return rerr(c, n, "placeholder %s takes no format", ph);
        if (fold != NULL) {
                seg->kind = RECIPE_SEG_LITERAL;
                seg->text = fold;
                fold_info(fold, &cs, &max);
                seg->len = max;
        }
        {
                int bad = cs_first_outside(&cs, &ts->allowed);

                if (bad >= 0) {
                        char ct[40];

                        cs_char_text(bad, ct, sizeof(ct));
                        return rerr(c, n,
                                    "placeholder %s may render %s, which is not allowed in "
                                    "%s",
                                    ph, ct, ts->what);
                }
        }
        *ret_max = max;
        *ret_cs = cs;
        return KILN_OK;
}

/* Flush literal text lit[0..len) as a segment (merging with a literal before it). */
static void lit_push(struct tbuild *b, const char *lit, size_t len)
{
        if (len == 0)
                return;
        if (b->n > 0 && b->segs[b->n - 1].kind == RECIPE_SEG_LITERAL &&
            b->segs[b->n - 1].text + b->segs[b->n - 1].len == lit) {
                b->segs[b->n - 1].len += len;
                return;
        }
        memset(&b->segs[b->n], 0, sizeof(b->segs[0]));
        b->segs[b->n].kind = RECIPE_SEG_LITERAL;
        b->segs[b->n].text = lit;
        b->segs[b->n].len = len;
        b->n++;
}

/*
 * Parse the template at n. Problems are reported (all placeholders are looked at); on KILN_OK
 * *ret is set and, when ret_cs is given, the characters the rendering may hold.
 */
static int tmpl_parse(struct rctx *c, const struct yaml_doc_node *n, const struct tspec *ts,
                      struct recipe_tmpl *ret, struct cset *ret_cs)
{
        struct tbuild tb = {NULL, 0}, *b = &tb;
        struct cset used = {{0, 0}};
        const char *s;
        char *lit = NULL;
        size_t len, i = 0, o = 0, lit_start = 0, max = 0;
        int r, bad = 0, bad_char = -1;
        struct recipe_seg *segs;

        r = get_str(c, n, 1, ts->src_max, ts->str_flags, &s);
        if (r < 0)
                return r;
        len = n->len;
        b->segs = kiln_calloc(len + 2, sizeof(*b->segs));
        lit = yaml_doc_alloc(c->doc, len + 1);
        if (b->segs == NULL || lit == NULL) {
                r = ck(c, KILN_E_NOMEM);
                goto out;
        }
        while (i < len) {
                char ch = s[i];

                if ((ch == '{' || ch == '}') && i + 1 < len && s[i + 1] == ch) {
                        lit[o++] = ch;
                        max++;
                        cs_add(&used, (unsigned char)ch);
                        if (!cs_has(&ts->allowed, (unsigned char)ch) && bad_char < 0)
                                bad_char = (unsigned char)ch;
                        i += 2;
                        continue;
                }
                if (ch == '}') {
                        r = rerr(c, n, "unmatched '}' (write '}}' for a literal brace)");
                        bad = 1;
                        break;
                }
                if (ch == '{') {
                        const char *end = memchr(s + i + 1, '}', len - i - 1);
                        const char *name = s + i + 1, *colon, *spec = NULL;
                        size_t nlen, slen = 0, pmax = 0;
                        struct cset pcs = {{0, 0}};
                        struct recipe_seg seg;

                        if (end == NULL) {
                                r = rerr(c, n,
                                         "unterminated placeholder: '{' without '}' "
                                         "(write '{{' for a literal brace)");
                                bad = 1;
                                break;
                        }
                        colon = memchr(name, ':', (size_t)(end - name));
                        nlen = (size_t)((colon ? colon : end) - name);
                        if (colon != NULL) {
                                spec = colon + 1;
                                slen = (size_t)(end - spec);
                        }
                        lit_push(b, lit + lit_start, o - lit_start);
                        lit_start = o;
                        r = placeholder(c, n, ts, name, nlen, spec, slen, &seg, &pmax, &pcs);
                        if (r < 0) {
                                bad = 1;
                                if (r == KILN_E_NOMEM)
                                        goto out;
                        } else if (seg.kind == RECIPE_SEG_LITERAL) {
                                /* a folded constant: literal text kept where it lives */
                                if (seg.len > 0)
                                        b->segs[b->n++] = seg;
                                max += pmax;
                                cs_union(&used, &pcs);
                        } else {
                                b->segs[b->n++] = seg;
                                max += pmax;
                                cs_union(&used, &pcs);
                        }
                        i = (size_t)(end - s) + 1;
                        continue;
                }
                lit[o++] = ch;
                max++;
                {
                        unsigned uc = (unsigned char)ch;

                        /* count a UTF-8 sequence once, as "non-ASCII" */
                        if (uc >= 0x80)
                                uc = CS_NONASCII;
                        cs_add(&used, uc);
                        if (!cs_has(&ts->allowed, uc) && bad_char < 0)
                                bad_char = (int)uc;
                }
                i++;
        }
        lit_push(b, lit + lit_start, o - lit_start);
        if (bad) {
                r = KILN_E_SYNTAX;
                goto out;
        }
        if (bad_char >= 0) {
                char ct[40];

                cs_char_text(bad_char, ct, sizeof(ct));
                r = rerr(c, n, "%s is not allowed in %s", ct, ts->what);
                goto out;
        }
        if (max > ts->render_max) {
                r = rerr(c, n, "renders up to %zu characters, over the limit of %zu for %s", max,
                         ts->render_max, ts->what);
                goto out;
        }
        segs = yaml_doc_alloc(c->doc, (b->n ? b->n : 1) * sizeof(*segs));
        if (segs == NULL) {
                r = ck(c, KILN_E_NOMEM);
                goto out;
        }
        memcpy(segs, b->segs, b->n * sizeof(*segs));
        memset(ret, 0, sizeof(*ret));
        ret->src = s;
        ret->segs = segs;
        ret->n_segs = b->n;
        ret->max_len = max;
        ret->line = n->line;
        ret->column = n->column;
        if (ret_cs != NULL)
                *ret_cs = used;
        r = KILN_OK;
out:
        kiln_free(b->segs);
        return r;
}

static void tspec_unit(struct tspec *ts, size_t render_max, struct cset allowed, const char *what)
{
        memset(ts, 0, sizeof(*ts));
        ts->ctx = T_UNIT;
        ts->src_max = KILN_RECIPE_TEMPLATE_MAX;
        ts->render_max = render_max;
        ts->allowed = allowed;
        ts->what = what;
}

/* ---------------------------------------------------------------- rendering */

static int64_t floor_div(int64_t a, int64_t b)
{
        return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Civil date of a day number (days since 1970-01-01). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
        int64_t era, doe, yoe, doy, mp;

        z += 719468;
        era = floor_div(z, 146097);
        doe = z - era * 146097;
        yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        *y = yoe + era * 400;
        doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        mp = (5 * doy + 2) / 153;
        *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
        *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
        *y += *m <= 2;
}

/* ISO 8601 week number of a day. */
static unsigned iso_week(int64_t days, int64_t year)
{
        /* 1970-01-01 was a Thursday: ISO weekday 1 = Monday .. 7 = Sunday */
        int64_t wd = ((days % 7) + 7 + 3) % 7 + 1;
        int64_t yday = days - days_from_civil(year, 1, 1) + 1;
        int64_t week = (yday - wd + 10) / 7;

        if (week < 1) {
                /* the last week of the previous year */
                int64_t dec31 = days_from_civil(year, 1, 1) - 1;
                return iso_week(dec31, year - 1);
        }
        if (week == 53) {
                /* 53 only when the year's 31 Dec is a Thursday or later in its week */
                int64_t dec31 = days_from_civil(year, 12, 31);
                int64_t wd31 = ((dec31 % 7) + 7 + 3) % 7 + 1;

                if (wd31 < 4)
                        return 1;
        }
        return (unsigned)week;
}

static int value_chars_ok(const char *s, size_t max, const char *chars)
{
        struct cset ok = cs_make(chars);
        size_t n = strnlen(s, max + 1);

        if (n == 0 || n > max)
                return 0;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] >= 128 || !cs_has(&ok, (unsigned char)s[i]))
                        return 0;
        return 1;
}

int recipe_tmpl_render(const struct recipe_tmpl *t, const struct recipe_values *v, char *out,
                       size_t cap, size_t *ret_len)
{
        int64_t year = 0;
        unsigned mon = 0, day = 0, week = 0;
        int have_date = 0, r;
        size_t o = 0;

        if (cap == 0)
                return kiln_fail(KILN_E_RANGE, "no room to render a template");
        out[0] = '\0';
        for (unsigned i = 0; i < t->n_segs; i++) {
                const struct recipe_seg *s = &t->segs[i];
                char tmp[2 * KILN_UID_MAX + 1];
                const char *p = tmp;
                size_t n = 0;

                switch (s->kind) {
                case RECIPE_SEG_LITERAL:
                        p = s->text;
                        n = s->len;
                        break;
                case RECIPE_SEG_SEQ:
                        snprintf(tmp, sizeof(tmp), "%0*llu", (int)s->arg,
                                 (unsigned long long)v->seq);
                        n = strlen(tmp);
                        break;
                case RECIPE_SEG_YY:
                case RECIPE_SEG_YYYY:
                case RECIPE_SEG_WW:
                case RECIPE_SEG_MM:
                case RECIPE_SEG_DD:
                        if (!have_date) {
                                int64_t days;

                                if (v->time_ms < 0) {
                                        r = kiln_fail(KILN_E_INVAL, "template '%s' needs a date",
                                                      t->src);
                                        goto out;
                                }
                                days = v->time_ms / 86400000;
                                civil_from_days(days, &year, &mon, &day);
                                if (year > 9999) {
                                        r = kiln_fail(KILN_E_INVAL, "date out of range");
                                        goto out;
                                }
                                week = iso_week(days, year);
                                have_date = 1;
                        }
                        if (s->kind == RECIPE_SEG_YY)
                                snprintf(tmp, sizeof(tmp), "%02u", (unsigned)(year % 100));
                        else if (s->kind == RECIPE_SEG_YYYY)
                                snprintf(tmp, sizeof(tmp), "%04u", (unsigned)year);
                        else
                                snprintf(tmp, sizeof(tmp), "%02u",
                                         s->kind == RECIPE_SEG_WW   ? week
                                         : s->kind == RECIPE_SEG_MM ? mon
                                                                    : day);
                        n = strlen(tmp);
                        break;
                case RECIPE_SEG_STATION:
                        if (v->station == NULL ||
                            !value_chars_ok(v->station, KILN_STATION_ID_MAX, CHARS_NAME)) {
                                r = kiln_fail(KILN_E_INVAL,
                                              "template '%s' needs a valid station "
                                              "id",
                                              t->src);
                                goto out;
                        }
                        p = v->station;
                        n = strlen(p);
                        break;
                case RECIPE_SEG_SERIAL:
                        if (v->serial == NULL ||
                            !value_chars_ok(v->serial, KILN_SERIAL_MAX, CHARS_SERIAL)) {
                                r = kiln_fail(KILN_E_INVAL,
                                              "template '%s' needs a valid serial "
                                              "number",
                                              t->src);
                                goto out;
                        }
                        p = v->serial;
                        n = strlen(p);
                        break;
                case RECIPE_SEG_CHIP_UID:
                        if (v->chip_uid == NULL || v->chip_uid_len == 0 ||
                            v->chip_uid_len > KILN_UID_MAX) {
                                r = kiln_fail(KILN_E_INVAL, "template '%s' needs the chip UID",
                                              t->src);
                                goto out;
                        }
                        kiln_hex_encode(v->chip_uid, v->chip_uid_len, tmp, sizeof(tmp));
                        n = 2 * v->chip_uid_len;
                        break;
                case RECIPE_SEG_MAC:
                        if (v->macs == NULL || s->arg >= v->n_macs || v->macs[s->arg] > MAC_MAX) {
                                r = kiln_fail(KILN_E_INVAL, "template '%s' needs MAC address %u",
                                              t->src, s->arg);
                                goto out;
                        }
                        recipe_mac_format(v->macs[s->arg], tmp);
                        if (s->flags & RECIPE_SEG_MAC_HEX) {
                                for (size_t k = 0, w = 0; k < 18; k++)
                                        if (tmp[k] != ':')
                                                tmp[w++] = tmp[k];
                        }
                        n = strlen(tmp);
                        break;
                default:
                        r = kiln_fail(KILN_E_INTERNAL, "bad template segment");
                        goto out;
                }
                if (n >= cap - o) {
                        r = kiln_fail(KILN_E_RANGE, "template '%s' does not fit in %zu bytes",
                                      t->src, cap);
                        goto out;
                }
                memcpy(out + o, p, n);
                o += n;
        }
        out[o] = '\0';
        *ret_len = o;
        r = KILN_OK;
out:
        if (r < 0)
                out[0] = '\0';
        return r;
}

int recipe_serial_render(const struct recipe *r, uint64_t seq, const struct recipe_values *v,
                         char *out, size_t cap)
{
        struct recipe_values vv = *v;
        size_t len;

        if (seq < r->serial.start || seq > r->serial.last) {
                if (cap > 0)
                        out[0] = '\0';
                return kiln_fail(KILN_E_INVAL,
                                 "serial sequence %llu is outside the pool %llu..%llu",
                                 (unsigned long long)seq, (unsigned long long)r->serial.start,
                                 (unsigned long long)r->serial.last);
        }
        vv.seq = seq;
        return recipe_tmpl_render(&r->serial.format, &vv, out, cap, &len);
}

int recipe_fuse_value(const struct recipe_fuse *f, const struct recipe_values *v,
                      uint8_t out[KILN_FUSE_BYTES_MAX], size_t *ret_len)
{
        if (f->mac_index < 0) {
                memcpy(out, f->value, f->value_len);
                *ret_len = f->value_len;
                return KILN_OK;
        }
        if (v->macs == NULL || (unsigned)f->mac_index >= v->n_macs ||
            v->macs[f->mac_index] > MAC_MAX)
                return kiln_fail(KILN_E_INVAL, "fuse '%s' needs MAC address %d", f->field,
                                 f->mac_index);
        /* first octet in byte 0: the order the address is written and sent */
        for (int i = 0; i < 6; i++)
                out[i] = (uint8_t)(v->macs[f->mac_index] >> (8 * (5 - i)));
        *ret_len = 6;
        return KILN_OK;
}

/* ---------------------------------------------------------------- names of things */

static const char *const decl_names[RECIPE_DECL_MAX] = {
    "signed_images",
    "rollback_protection",
    "recovery_partition",
    "api_authentication",
    "local_interfaces_protected",
    "update_policy_defined",
    "security_features_documented",
    "component_inventory_available",
    "customer_security_information_available",
};

const char *recipe_decl_name(enum recipe_decl d)
{
        return (unsigned)d < RECIPE_DECL_MAX ? decl_names[d] : NULL;
}

static const char *const phase_names[RECIPE_PHASE_MAX] = {"data", "protect", "lockout"};
static const char *const verify_names[RECIPE_VERIFY_MAX] = {"readback", "read_protected",
                                                            "debug_closed", "secure_boot"};

const char *recipe_phase_name(enum recipe_phase p)
{
        return (unsigned)p < RECIPE_PHASE_MAX ? phase_names[p] : NULL;
}

const char *recipe_verify_name(enum recipe_verify v)
{
        return (unsigned)v < RECIPE_VERIFY_MAX ? verify_names[v] : NULL;
}

struct rdn_info {
        const char *name;
        const char *oid;
        size_t ub;         /* upper bound, characters (RFC 5280 Appendix A) */
        const char *chars; /* NULL: any text; else the allowed ASCII characters */
};

static const struct rdn_info rdn_table[RECIPE_RDN_MAX] = {
    [RECIPE_RDN_CN] = {"CN", "2.5.4.3", 64, NULL},
    [RECIPE_RDN_C] = {"C", "2.5.4.6", 2, "A-Z"},
    [RECIPE_RDN_ST] = {"ST", "2.5.4.8", 128, NULL},
    [RECIPE_RDN_L] = {"L", "2.5.4.7", 128, NULL},
    [RECIPE_RDN_O] = {"O", "2.5.4.10", 64, NULL},
    [RECIPE_RDN_OU] = {"OU", "2.5.4.11", 64, NULL},
    /* PrintableString */
    [RECIPE_RDN_SERIAL_NUMBER] = {"serialNumber", "2.5.4.5", 64, "A-Za-z0-9 '()+,./:=?-"},
    [RECIPE_RDN_TITLE] = {"title", "2.5.4.12", 64, NULL},
    [RECIPE_RDN_UID] = {"UID", "0.9.2342.19200300.100.1.1", 64, NULL},
    [RECIPE_RDN_DC] = {"DC", "0.9.2342.19200300.100.1.25", 63, "A-Za-z0-9-"},
    [RECIPE_RDN_EMAIL] = {"emailAddress", "1.2.840.113549.1.9.1", 128, "!-~"},
};

const char *recipe_rdn_name(enum recipe_rdn_type t)
{
        return (unsigned)t < RECIPE_RDN_MAX ? rdn_table[t].name : NULL;
}

const char *recipe_rdn_oid(enum recipe_rdn_type t)
{
        return (unsigned)t < RECIPE_RDN_MAX ? rdn_table[t].oid : NULL;
}

int recipe_admits_lifecycle(const struct recipe *r, unsigned lifecycle)
{
        return lifecycle < 32 && (r->product.admit_lifecycles >> lifecycle) & 1u;
}

int recipe_admits_hw_revision(const struct recipe *r, uint16_t hw_revision)
{
        for (unsigned i = 0; i < r->product.n_hw_revisions; i++)
                if (r->product.hw_revisions[i] == hw_revision)
                        return 1;
        return 0;
}

/* ---------------------------------------------------------------- product */

static void load_product_firmware(struct rctx *c, const struct yaml_doc_node *n)
{
        static const struct yaml_doc_key keys[] = {{"version", 0}, {"sha256", 0}};
        const struct yaml_doc_node *v[2];
        struct recipe_product *p = &c->r->product;
        const char *s;

        if (get_map(c, n, keys, 2, v) < 0)
                return;
        if (v[0] == NULL && v[1] == NULL) {
                rerr(c, n, "give the expected firmware 'version', 'sha256' or both");
                return;
        }
        if (v[0] != NULL && get_str(c, v[0], 1, KILN_FWVER_MAX, YAML_DOC_STR_ASCII, &s) == 0)
                p->fw_version = s;
        if (v[1] != NULL && get_sha256(c, v[1], p->fw_sha256) == 0)
                p->has_fw_sha256 = 1;
}

static void load_product(struct rctx *c, const struct yaml_doc_node *n)
{
        enum {
                K_ID,
                K_NAME,
                K_MODEL,
                K_MANUFACTURER,
                K_HW,
                K_ADMIT,
                K_SUPPORT_END,
                K_VDU,
                K_SBOM,
                K_UPDATE,
                K_SECINFO,
                K_FIRMWARE,
                K_DECL,
                K_N
        };
        static const struct yaml_doc_key keys[K_N] = {
            {"id", YAML_DOC_REQUIRED},
            {"name", YAML_DOC_REQUIRED},
            {"model", YAML_DOC_REQUIRED},
            {"manufacturer", YAML_DOC_REQUIRED},
            {"hardware_revisions", YAML_DOC_REQUIRED},
            {"admit_lifecycle", 0},
            {"support_end", YAML_DOC_REQUIRED},
            {"vulnerability_disclosure_url", YAML_DOC_REQUIRED},
            {"sbom_ref", YAML_DOC_REQUIRED},
            {"update_policy_url", 0},
            {"security_info_url", 0},
            {"firmware", 0},
            {"declarations", 0},
        };
        const struct yaml_doc_node *v[K_N];
        struct recipe_product *p = &c->r->product;
        const char *s;

        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        if (v[K_ID] != NULL && get_chars(c, v[K_ID], 1, KILN_PRODUCT_MAX, CHARS_NAME, "product id",
                                         p->id, sizeof(p->id)) == 0)
                c->product_id = p->id;
        if (v[K_NAME] != NULL && get_str(c, v[K_NAME], 1, KILN_RECIPE_TEXT_MAX, 0, &s) == 0)
                c->product_name = p->name = s;
        if (v[K_MODEL] != NULL && get_str(c, v[K_MODEL], 1, KILN_RECIPE_TEXT_MAX, 0, &s) == 0)
                c->model = p->model = s;
        if (v[K_MANUFACTURER] != NULL &&
            get_str(c, v[K_MANUFACTURER], 1, KILN_RECIPE_TEXT_MAX, 0, &s) == 0)
                c->manufacturer = p->manufacturer = s;
        if (v[K_HW] != NULL && get_seq(c, v[K_HW], 1, KILN_RECIPE_HW_REVISIONS_MAX) == 0) {
                for (size_t i = 0; i < v[K_HW]->n; i++) {
                        const struct yaml_doc_node *it = v[K_HW]->vals[i];
                        uint64_t hw;

                        if (get_u64(c, it, 0, UINT16_MAX, &hw) < 0)
                                continue;
                        if (recipe_admits_hw_revision(c->r, (uint16_t)hw)) {
                                rerr(c, it, "hardware revision %u is listed twice", (unsigned)hw);
                                continue;
                        }
                        p->hw_revisions[p->n_hw_revisions++] = (uint16_t)hw;
                }
        }
        p->admit_lifecycles = 1u << RECIPE_LC_MANUFACTURING;
        if (v[K_ADMIT] != NULL && get_seq(c, v[K_ADMIT], 1, 2) == 0) {
                static const char *const lc[] = {"manufacturing", "rma"};
                unsigned mask = 0;

                for (size_t i = 0; i < v[K_ADMIT]->n; i++) {
                        const struct yaml_doc_node *it = v[K_ADMIT]->vals[i];
                        unsigned e, bit;

                        if (get_enum(c, it, lc, 2, &e) < 0)
                                continue;
                        bit = 1u << (e == 0 ? RECIPE_LC_MANUFACTURING : RECIPE_LC_RMA);
                        if (mask & bit)
                                rerr(c, it, "lifecycle '%s' is listed twice", lc[e]);
                        mask |= bit;
                }
                if (mask != 0)
                        p->admit_lifecycles = mask;
        }
        if (v[K_SUPPORT_END] != NULL &&
            get_str(c, v[K_SUPPORT_END], 1, 32, YAML_DOC_STR_ASCII, &s) == 0 &&
            (strlen(s) != 10 || !parse_time(s, 0, NULL, &p->support_end))) {
                char q[Q_MAX];

                quote(s, q, sizeof(q));
                rerr(c, v[K_SUPPORT_END], "expected a date YYYY-MM-DD, got %s", q);
        }
        if (v[K_VDU] != NULL)
                get_url(c, v[K_VDU], &p->vulnerability_disclosure_url);
        if (v[K_SBOM] != NULL)
                get_str(c, v[K_SBOM], 1, KILN_RECIPE_TEXT_MAX, YAML_DOC_STR_ASCII, &p->sbom_ref);
        if (v[K_UPDATE] != NULL)
                get_url(c, v[K_UPDATE], &p->update_policy_url);
        if (v[K_SECINFO] != NULL)
                get_url(c, v[K_SECINFO], &p->security_info_url);
        if (v[K_FIRMWARE] != NULL)
                load_product_firmware(c, v[K_FIRMWARE]);
        if (v[K_DECL] != NULL) {
                struct yaml_doc_key dk[RECIPE_DECL_MAX];
                const struct yaml_doc_node *dv[RECIPE_DECL_MAX];

                for (unsigned i = 0; i < RECIPE_DECL_MAX; i++) {
                        dk[i].name = decl_names[i];
                        dk[i].flags = 0;
                }
                if (get_map(c, v[K_DECL], dk, RECIPE_DECL_MAX, dv) == 0) {
                        for (unsigned i = 0; i < RECIPE_DECL_MAX; i++) {
                                int b;

                                if (dv[i] != NULL && get_bool(c, dv[i], &b) == 0)
                                        p->declared[i] = (uint8_t)b;
                        }
                }
        }
}

/* ---------------------------------------------------------------- serial, mac, quota */

static void load_pool(struct rctx *c, const struct yaml_doc_node *n, char *out)
{
        if (n != NULL)
                get_chars(c, n, 1, KILN_RECIPE_POOL_MAX, "A-Za-z0-9._:-", "pool name", out,
                          KILN_RECIPE_POOL_MAX + 1);
        else if (c->product_id != NULL)
                kiln_strlcpy(out, c->product_id, KILN_RECIPE_POOL_MAX + 1);
}

static void load_serial(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_FORMAT, K_START, K_LAST, K_POOL, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"format", YAML_DOC_REQUIRED}, {"start", 0}, {"last", 0}, {"pool", 0}};
        const struct yaml_doc_node *v[K_N];
        struct recipe_serial *s = &c->r->serial;
        struct tspec ts;
        struct cset cs;
        uint64_t x;

        s->start = 1;
        s->last = SEQ_MAX;
        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        if (v[K_START] != NULL && get_u64(c, v[K_START], 0, SEQ_MAX, &x) == 0)
                s->start = x;
        if (v[K_LAST] != NULL && get_u64(c, v[K_LAST], 0, SEQ_MAX, &x) == 0) {
                if (x < s->start)
                        rerr(c, v[K_LAST], "last (%llu) is below start (%llu)",
                             (unsigned long long)x, (unsigned long long)s->start);
                else
                        s->last = x;
        }
        load_pool(c, v[K_POOL], s->pool);
        if (v[K_FORMAT] == NULL)
                return;
        memset(&ts, 0, sizeof(ts));
        ts.ctx = T_SERIAL;
        ts.src_max = 256;
        ts.render_max = KILN_SERIAL_MAX;
        ts.str_flags = YAML_DOC_STR_ASCII;
        ts.allowed = cs_make(CHARS_SERIAL);
        ts.what = "a serial number (A-Z a-z 0-9 . _ / -)";
        if (tmpl_parse(c, v[K_FORMAT], &ts, &s->format, &cs) < 0)
                return;
        {
                int has_seq = 0;

                for (unsigned i = 0; i < s->format.n_segs; i++)
                        has_seq += s->format.segs[i].kind == RECIPE_SEG_SEQ;
                if (has_seq != 1) {
                        rerr(c, v[K_FORMAT],
                             "the format must contain {seq} exactly once (it "
                             "makes each serial unique)");
                        return;
                }
        }
        s->max_len = s->format.max_len;
        c->serial_cs = cs;
        c->serial_ok = 1;
}

/* "02:00:5e:10:00:00" or "02-00-5e-10-00-00", either case. */
static int parse_mac(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (strlen(s) != 17)
                return 0;
        for (int i = 0; i < 6; i++) {
                const char *p = s + 3 * i;

                if (!hex_digit(p[0]) || !hex_digit(p[1]))
                        return 0;
                if (i < 5 && p[2] != ':' && p[2] != '-')
                        return 0;
                if (i < 5 && p[2] != s[2])
                        return 0;
                v = v << 8 | (uint64_t)((p[0] <= '9' ? p[0] - '0' : (p[0] | 0x20) - 'a' + 10) << 4 |
                                        (p[1] <= '9' ? p[1] - '0' : (p[1] | 0x20) - 'a' + 10));
        }
        *ret = v;
        return 1;
}

static int get_mac(struct rctx *c, const struct yaml_doc_node *n, uint64_t *ret)
{
        const char *s;
        uint64_t v;

        if (get_str(c, n, 1, 32, YAML_DOC_STR_ASCII, &s) < 0)
                return KILN_E_SYNTAX;
        if (!parse_mac(s, &v))
                return rerr(c, n, "expected a MAC address like 02:00:5e:10:00:00");
        if ((v >> 40) & 1)
                return rerr(c, n, "%s is a multicast address", s);
        *ret = v;
        return KILN_OK;
}

static void load_mac(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_FIRST, K_LAST, K_PER_UNIT, K_POOL, K_N };
        static const struct yaml_doc_key keys[K_N] = {{"first", YAML_DOC_REQUIRED},
                                                      {"last", YAML_DOC_REQUIRED},
                                                      {"per_unit", 0},
                                                      {"pool", 0}};
        const struct yaml_doc_node *v[K_N];
        struct recipe_mac *m = &c->r->mac;
        int ok = 1;
        uint64_t x;

        c->mac_node = n;
        m->per_unit = 1;
        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        if (v[K_FIRST] == NULL || get_mac(c, v[K_FIRST], &m->first) < 0)
                ok = 0;
        if (v[K_LAST] == NULL || get_mac(c, v[K_LAST], &m->last) < 0)
                ok = 0;
        if (v[K_PER_UNIT] != NULL) {
                if (get_u64(c, v[K_PER_UNIT], 1, KILN_MACS_PER_UNIT_MAX, &x) == 0)
                        m->per_unit = (unsigned)x;
                else
                        ok = 0;
        }
        load_pool(c, v[K_POOL], m->pool);
        if (ok && m->last < m->first) {
                rerr(c, v[K_LAST], "the pool's last address is below its first");
                ok = 0;
        }
        if (ok && (m->first >> 40) != (m->last >> 40)) {
                rerr(c, v[K_LAST], "first and last must share the first octet");
                ok = 0;
        }
        if (ok && m->last - m->first + 1 < m->per_unit) {
                rerr(c, n, "the pool holds fewer addresses than one unit needs");
                ok = 0;
        }
        m->enabled = ok;
        c->mac_ok = ok;
}

static void load_quota(struct rctx *c, const struct yaml_doc_node *n)
{
        static const struct yaml_doc_key keys[] = {{"default", YAML_DOC_REQUIRED}, {"max", 0}};
        const struct yaml_doc_node *v[2];
        struct recipe_quota *q = &c->r->quota;
        uint64_t x;

        if (get_map(c, n, keys, 2, v) < 0)
                return;
        if (v[0] != NULL && get_u64(c, v[0], 1, KILN_RECIPE_QUOTA_MAX, &x) == 0)
                q->default_units = (uint32_t)x;
        q->max_units = q->default_units;
        if (v[1] != NULL && get_u64(c, v[1], 1, KILN_RECIPE_QUOTA_MAX, &x) == 0) {
                if (q->default_units != 0 && x < q->default_units)
                        rerr(c, v[1], "max (%llu) is below default (%u)", (unsigned long long)x,
                             q->default_units);
                else
                        q->max_units = (uint32_t)x;
        }
}

/* ---------------------------------------------------------------- keys and certificates */

/* Dotted OID text: at least two arcs, first 0..2, second < 40 under 0 and 1, no leading zeros. */
static int oid_valid(const char *s)
{
        unsigned arcs = 0;
        uint64_t first = 0;
        const char *p = s;

        if (strlen(s) > KILN_RECIPE_OID_MAX)
                return 0;
        while (*p != '\0') {
                uint64_t v = 0;
                const char *start = p;

                while (*p >= '0' && *p <= '9') {
                        v = v * 10 + (uint64_t)(*p - '0');
                        if (v > UINT32_MAX)
                                return 0;
                        p++;
                }
                if (p == start || (p - start > 1 && *start == '0'))
                        return 0;
                if (arcs == 0) {
                        if (v > 2)
                                return 0;
                        first = v;
                } else if (arcs == 1 && first < 2 && v >= 40) {
                        return 0;
                }
                arcs++;
                if (*p == '.') {
                        p++;
                        if (*p == '\0')
                                return 0;
                } else if (*p != '\0') {
                        return 0;
                }
        }
        return arcs >= 2;
}

/* One complete DER TLV, definite minimal length, nothing after it. */
static int der_one_tlv(const uint8_t *p, size_t n)
{
        size_t i = 0, len = 0;

        if (n < 2)
                return 0;
        if ((p[i++] & 0x1f) == 0x1f) {
                unsigned k = 0;

                do {
                        if (i >= n || ++k > 4)
                                return 0;
                } while (p[i++] & 0x80);
        }
        if (i >= n)
                return 0;
        if (p[i] < 0x80) {
                len = p[i++];
        } else {
                unsigned nb = p[i++] & 0x7f;

                if (nb == 0 || nb > 2 || i + nb > n || p[i] == 0)
                        return 0;
                for (unsigned k = 0; k < nb; k++)
                        len = len << 8 | p[i++];
                if (len < 0x80)
                        return 0;
        }
        return len == n - i;
}

static void load_validity(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        static const struct yaml_doc_key keys[] = {
            {"not_before", 0}, {"not_after", 0}, {"days", 0}};
        const struct yaml_doc_node *v[3];
        const char *s;
        uint64_t x;

        ct->not_before_now = 1;
        if (get_map(c, n, keys, 3, v) < 0)
                return;
        if (v[0] != NULL && get_str(c, v[0], 1, 32, YAML_DOC_STR_ASCII, &s) == 0 &&
            strcmp(s, "now") != 0) {
                if (parse_time(s, 0, &ct->not_before, NULL))
                        ct->not_before_now = 0;
                else
                        rerr(c, v[0],
                             "expected 'now', a date YYYY-MM-DD or a time "
                             "YYYY-MM-DDTHH:MM:SSZ");
        }
        if ((v[1] != NULL) == (v[2] != NULL)) {
                rerr(c, n, "give exactly one of 'not_after' and 'days'");
                return;
        }
        if (v[2] != NULL) {
                if (get_u64(c, v[2], 1, DAYS_MAX, &x) == 0) {
                        ct->not_after_kind = RECIPE_NOT_AFTER_DAYS;
                        ct->days = (uint32_t)x;
                }
                return;
        }
        if (get_str(c, v[1], 1, 32, YAML_DOC_STR_ASCII, &s) < 0)
                return;
        if (strcmp(s, "never") == 0) {
                ct->not_after_kind = RECIPE_NOT_AFTER_NEVER;
                ct->not_after = RECIPE_TIME_NEVER;
        } else if (parse_time(s, 1, &ct->not_after, NULL)) {
                ct->not_after_kind = RECIPE_NOT_AFTER_DATE;
                if (!ct->not_before_now && ct->not_after <= ct->not_before)
                        rerr(c, v[1], "not_after is not later than not_before");
        } else {
                rerr(c, v[1],
                     "expected 'never', a date YYYY-MM-DD or a time "
                     "YYYY-MM-DDTHH:MM:SSZ");
        }
}

static void load_subject(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        if (get_seq(c, n, 1, KILN_RECIPE_RDNS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *k, *val;
                const struct rdn_info *ri = NULL;
                struct recipe_rdn *rdn;
                struct tspec ts;
                char what[64];
                unsigned t;

                if (it->kind == YAML_DOC_BAD)
                        continue;
                if (it->kind != YAML_DOC_MAP || it->n != 1) {
                        rerr(c, it, "expected one attribute like 'CN: \"{serial}\"'");
                        continue;
                }
                k = it->keys[0];
                val = it->vals[0];
                for (t = 0; t < RECIPE_RDN_MAX; t++)
                        if (strcmp(k->str, rdn_table[t].name) == 0)
                                break;
                if (t == RECIPE_RDN_MAX) {
                        char q[Q_MAX];

                        yaml_doc_quote(k->str, k->len, q, sizeof(q));
                        rerr(c, it,
                             "unknown attribute %s (known: CN, C, ST, L, O, OU, "
                             "serialNumber, title, UID, DC, emailAddress)",
                             q);
                        continue;
                }
                ri = &rdn_table[t];
                if (t == RECIPE_RDN_C) {
                        const char *cc;

                        if (get_str(c, val, 1, 64, YAML_DOC_STR_ASCII, &cc) < 0)
                                continue;
                        if (strlen(cc) != 2 || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' ||
                            cc[1] > 'Z') {
                                rerr(c, val, "C is a two-letter country code like 'US'");
                                continue;
                        }
                }
                snprintf(what, sizeof(what), "a subject %s", ri->name);
                tspec_unit(&ts, ri->ub, ri->chars ? cs_make(ri->chars) : cs_text(0), what);
                rdn = &ct->subject[ct->n_subject];
                rdn->type = (enum recipe_rdn_type)t;
                if (tmpl_parse(c, val, &ts, &rdn->value, NULL) < 0)
                        continue;
                ct->n_subject++;
        }
}

static void load_key_usage(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        static const char *const names[] = {"digital_signature", "content_commitment",
                                            "non_repudiation", "key_agreement"};
        static const unsigned bits[] = {RECIPE_KU_DIGITAL_SIGNATURE, RECIPE_KU_CONTENT_COMMITMENT,
                                        RECIPE_KU_CONTENT_COMMITMENT, RECIPE_KU_KEY_AGREEMENT};
        unsigned mask = 0;

        if (get_seq(c, n, 1, 4) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i];
                unsigned e;

                if (it->kind == YAML_DOC_SCALAR &&
                    (strcmp(it->str, "key_cert_sign") == 0 || strcmp(it->str, "crl_sign") == 0)) {
                        rerr(c, it,
                             "'%s' is for CA certificates; a device certificate is never "
                             "a CA",
                             it->str);
                        continue;
                }
                if (it->kind == YAML_DOC_SCALAR && (strcmp(it->str, "key_encipherment") == 0 ||
                                                    strcmp(it->str, "data_encipherment") == 0)) {
                        rerr(c, it, "'%s' does not apply to an EC key", it->str);
                        continue;
                }
                if (get_enum(c, it, names, 4, &e) < 0)
                        continue;
                if (mask & bits[e])
                        rerr(c, it, "'%s' is listed twice", names[e]);
                mask |= bits[e];
        }
        if (mask != 0)
                ct->key_usage = mask;
}

static void load_eku(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        static const char *const names[] = {"server_auth",      "client_auth",   "code_signing",
                                            "email_protection", "time_stamping", "ocsp_signing"};
        static const char *const oids[] = {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2",
                                           "1.3.6.1.5.5.7.3.3", "1.3.6.1.5.5.7.3.4",
                                           "1.3.6.1.5.5.7.3.8", "1.3.6.1.5.5.7.3.9"};

        if (get_seq(c, n, 1, KILN_RECIPE_EKUS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i];
                const char *s, *oid = NULL;

                if (get_str(c, it, 1, KILN_RECIPE_OID_MAX, YAML_DOC_STR_ASCII, &s) < 0)
                        continue;
                for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
                        if (strcmp(s, names[k]) == 0)
                                oid = oids[k];
                if (oid == NULL && oid_valid(s))
                        oid = s;
                if (oid == NULL) {
                        char q[Q_MAX];

                        quote(s, q, sizeof(q));
                        rerr(c, it,
                             "expected server_auth, client_auth, code_signing, "
                             "email_protection, time_stamping, ocsp_signing or a dotted "
                             "OID; got %s",
                             q);
                        continue;
                }
                for (unsigned k = 0; k < ct->n_eku; k++) {
                        if (strcmp(ct->eku[k], oid) == 0) {
                                rerr(c, it, "extended key usage %s is listed twice", oid);
                                oid = NULL;
                                break;
                        }
                }
                if (oid != NULL)
                        ct->eku[ct->n_eku++] = oid;
        }
}

static void load_san(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        static const struct yaml_doc_key keys[] = {{"dns", 0}, {"uri", 0}, {"email", 0}, {"ip", 0}};

        if (get_seq(c, n, 1, KILN_RECIPE_SANS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[4];
                struct recipe_san *san = &ct->san[ct->n_san];
                struct tspec ts;
                unsigned which = 4;

                if (it->kind != YAML_DOC_MAP || it->n != 1) {
                        if (it->kind != YAML_DOC_BAD)
                                rerr(c, it,
                                     "expected one entry like 'dns: \"{serial}.example."
                                     "com\"'");
                        continue;
                }
                if (get_map(c, it, keys, 4, v) < 0)
                        continue;
                for (unsigned k = 0; k < 4; k++)
                        if (v[k] != NULL)
                                which = k;
                if (which == 4)
                        continue; /* an unknown type, reported */
                memset(san, 0, sizeof(*san));
                san->type = (enum recipe_san_type)which;
                if (which == RECIPE_SAN_IP) {
                        const char *s;

                        if (get_str(c, v[3], 1, 64, YAML_DOC_STR_ASCII, &s) < 0)
                                continue;
                        if (inet_pton(AF_INET, s, san->ip) == 1) {
                                san->ip_len = 4;
                        } else if (inet_pton(AF_INET6, s, san->ip) == 1) {
                                san->ip_len = 16;
                        } else {
                                rerr(c, v[3], "expected an IPv4 or IPv6 address");
                                continue;
                        }
                        ct->n_san++;
                        continue;
                }
                if (which == RECIPE_SAN_DNS)
                        tspec_unit(&ts, KILN_RECIPE_SAN_MAX, cs_make("A-Za-z0-9.-"),
                                   "a DNS name (A-Z a-z 0-9 . -)");
                else if (which == RECIPE_SAN_URI)
                        tspec_unit(&ts, KILN_RECIPE_SAN_MAX, cs_ascii_minus(" \"<>\\^`{|}"),
                                   "a URI");
                else
                        tspec_unit(&ts, KILN_RECIPE_SAN_MAX, cs_ascii_minus(" \"(),:;<>[\\]"),
                                   "an email address");
                if (tmpl_parse(c, v[which], &ts, &san->value, NULL) < 0)
                        continue;
                if (which == RECIPE_SAN_URI) {
                        const struct recipe_seg *s0 = &san->value.segs[0];
                        const char *colon =
                            s0->kind == RECIPE_SEG_LITERAL ? memchr(s0->text, ':', s0->len) : NULL;

                        if (colon == NULL || colon == s0->text) {
                                rerr(c, v[which],
                                     "a URI starts with its scheme, like 'urn:' or "
                                     "'https:'");
                                continue;
                        }
                }
                if (which == RECIPE_SAN_EMAIL) {
                        unsigned ats = 0;

                        for (unsigned k = 0; k < san->value.n_segs; k++)
                                if (san->value.segs[k].kind == RECIPE_SEG_LITERAL)
                                        for (size_t m = 0; m < san->value.segs[k].len; m++)
                                                ats += san->value.segs[k].text[m] == '@';
                        if (ats != 1) {
                                rerr(c, v[which], "an email address has exactly one '@'");
                                continue;
                        }
                }
                ct->n_san++;
        }
}

static void load_extensions(struct rctx *c, const struct yaml_doc_node *n, struct recipe_cert *ct)
{
        static const char *const builder_oids[] = {"2.5.29.14", "2.5.29.15", "2.5.29.17",
                                                   "2.5.29.19", "2.5.29.35", "2.5.29.37"};
        enum { K_OID, K_CRITICAL, K_UTF8, K_DER, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"oid", YAML_DOC_REQUIRED}, {"critical", 0}, {"utf8", 0}, {"der", 0}};

        if (get_seq(c, n, 1, KILN_RECIPE_EXTENSIONS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct recipe_ext *e = &ct->ext[ct->n_ext];
                const char *s;
                int ok = 1;

                if (get_map(c, it, keys, K_N, v) < 0)
                        continue;
                memset(e, 0, sizeof(*e));
                if (v[K_OID] != NULL &&
                    get_str(c, v[K_OID], 1, KILN_RECIPE_OID_MAX, YAML_DOC_STR_ASCII, &s) == 0) {
                        if (!oid_valid(s)) {
                                rerr(c, v[K_OID], "expected a dotted OID like 1.3.6.1.4.1.99999.1");
                                ok = 0;
                        } else {
                                kiln_strlcpy(e->oid, s, sizeof(e->oid));
                                for (size_t k = 0; k < sizeof(builder_oids) / sizeof(*builder_oids);
                                     k++) {
                                        if (strcmp(s, builder_oids[k]) == 0) {
                                                rerr(c, v[K_OID],
                                                     "extension %s is set by the certificate "
                                                     "builder (use key_usage, extended_key_usage "
                                                     "or subject_alt_name)",
                                                     s);
                                                ok = 0;
                                        }
                                }
                                for (unsigned k = 0; ok && k < ct->n_ext; k++) {
                                        if (strcmp(ct->ext[k].oid, s) == 0) {
                                                rerr(c, v[K_OID], "extension %s is listed twice",
                                                     s);
                                                ok = 0;
                                        }
                                }
                        }
                } else {
                        ok = 0;
                }
                if (v[K_CRITICAL] != NULL && get_bool(c, v[K_CRITICAL], &e->critical) < 0)
                        ok = 0;
                if ((v[K_UTF8] != NULL) == (v[K_DER] != NULL)) {
                        if (it->kind == YAML_DOC_MAP)
                                rerr(c, it, "give exactly one of 'utf8' and 'der'");
                        continue;
                }
                if (v[K_UTF8] != NULL) {
                        struct tspec ts;

                        tspec_unit(&ts, KILN_RECIPE_EXT_DER_MAX - 4, cs_text(0),
                                   "an extension value");
                        if (tmpl_parse(c, v[K_UTF8], &ts, &e->utf8, NULL) < 0)
                                ok = 0;
                } else if (get_str(c, v[K_DER], 1, 2 * KILN_RECIPE_EXT_DER_MAX, YAML_DOC_STR_ASCII,
                                   &s) == 0) {
                        uint8_t *der = yaml_doc_alloc(c->doc, KILN_RECIPE_EXT_DER_MAX);
                        size_t len = 0;

                        if (der == NULL) {
                                ck(c, KILN_E_NOMEM);
                                return;
                        }
                        if (kiln_hex_decode(s, der, KILN_RECIPE_EXT_DER_MAX, &len) < 0) {
                                rerr(c, v[K_DER], "expected hex digits (the DER value)");
                                ok = 0;
                        } else if (!der_one_tlv(der, len)) {
                                rerr(c, v[K_DER],
                                     "not one complete DER value (tag, length, "
                                     "contents)");
                                ok = 0;
                        } else {
                                e->is_der = 1;
                                e->der = der;
                                e->der_len = len;
                        }
                } else {
                        ok = 0;
                }
                if (ok)
                        ct->n_ext++;
        }
}

static void load_cert(struct rctx *c, const struct yaml_doc_node *n, struct recipe_key *k)
{
        enum { K_ISSUER, K_SUBJECT, K_VALIDITY, K_KU, K_EKU, K_SAN, K_EXT, K_OBJECT, K_CHAIN, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"issuer", YAML_DOC_REQUIRED},
            {"subject", YAML_DOC_REQUIRED},
            {"validity", YAML_DOC_REQUIRED},
            {"key_usage", 0},
            {"extended_key_usage", 0},
            {"subject_alt_name", 0},
            {"extensions", 0},
            {"object", YAML_DOC_REQUIRED},
            {"chain_object", 0},
        };
        const struct yaml_doc_node *v[K_N];
        struct recipe_cert *ct = &k->cert;
        const char *s;

        ct->key_usage = RECIPE_KU_DIGITAL_SIGNATURE;
        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        k->has_cert = 1;
        if (v[K_ISSUER] != NULL &&
            get_str(c, v[K_ISSUER], 1, KILN_URI_MAX, YAML_DOC_STR_ASCII, &s) == 0) {
                char why[160];

                if (recipe_pkcs11_uri_check(s, "private", why, sizeof(why)))
                        ct->issuer_uri = s;
                else
                        rerr(c, v[K_ISSUER], "not a usable PKCS#11 key URI: %s", why);
        }
        if (v[K_SUBJECT] != NULL)
                load_subject(c, v[K_SUBJECT], ct);
        if (v[K_VALIDITY] != NULL)
                load_validity(c, v[K_VALIDITY], ct);
        if (v[K_KU] != NULL)
                load_key_usage(c, v[K_KU], ct);
        if (v[K_EKU] != NULL)
                load_eku(c, v[K_EKU], ct);
        if (v[K_SAN] != NULL)
                load_san(c, v[K_SAN], ct);
        if (v[K_EXT] != NULL)
                load_extensions(c, v[K_EXT], ct);
        if (v[K_OBJECT] != NULL && get_name(c, v[K_OBJECT], "object name", ct->object) == 0)
                obj_note(c, v[K_OBJECT], ct->object, "a certificate", NULL);
        if (v[K_CHAIN] != NULL && get_name(c, v[K_CHAIN], "object name", ct->chain_object) == 0)
                obj_note(c, v[K_CHAIN], ct->chain_object, "a certificate chain",
                         ct->issuer_uri ? ct->issuer_uri : "");
}

static void load_keys(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_NAME, K_SLOT, K_ALG, K_CERT, K_N };
        static const struct yaml_doc_key keys[K_N] = {{"name", YAML_DOC_REQUIRED},
                                                      {"slot", YAML_DOC_REQUIRED},
                                                      {"algorithm", 0},
                                                      {"certificate", 0}};
        static const char *const algs[] = {"ecdsa-p256"};
        const char *slot_owner[KILN_KEY_SLOTS_MAX] = {NULL};

        if (get_seq(c, n, 1, KILN_RECIPE_KEYS_MAX) < 0)
                return;
        c->keys_loaded = 1;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct recipe_key *k = &c->r->keys[c->r->n_keys];
                uint64_t x;
                unsigned e;

                memset(k, 0, sizeof(*k));
                if (get_map(c, it, keys, K_N, v) < 0)
                        continue;
                if (v[K_NAME] != NULL && get_name(c, v[K_NAME], "key name", k->name) == 0) {
                        for (unsigned j = 0; j < c->r->n_keys; j++)
                                if (strcmp(c->r->keys[j].name, k->name) == 0)
                                        rerr(c, v[K_NAME], "key name '%s' is used twice", k->name);
                }
                if (v[K_SLOT] != NULL &&
                    get_u64(c, v[K_SLOT], 0, KILN_KEY_SLOTS_MAX - 1, &x) == 0) {
                        k->slot = (uint8_t)x;
                        if (slot_owner[x] != NULL)
                                rerr(c, v[K_SLOT], "key slot %u is already used by key '%s'",
                                     k->slot, slot_owner[x]);
                        else
                                slot_owner[x] = k->name;
                }
                k->alg = RECIPE_KEY_ECDSA_P256;
                if (v[K_ALG] != NULL && get_enum(c, v[K_ALG], algs, 1, &e) == 0)
                        k->alg = (enum recipe_key_alg)e;
                if (v[K_CERT] != NULL)
                        load_cert(c, v[K_CERT], k);
                k->attest = 1;
                c->r->n_keys++;
        }
}

/* ---------------------------------------------------------------- credentials */

static void load_creds(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_NAME, K_KIND, K_LENGTH, K_ALPHABET, K_CHARS, K_OBJECT, K_COMMIT, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"name", YAML_DOC_REQUIRED},
            {"kind", YAML_DOC_REQUIRED},
            {"length", YAML_DOC_REQUIRED},
            {"alphabet", 0},
            {"characters", 0},
            {"object", YAML_DOC_REQUIRED},
            {"commitment", 0},
        };
        static const char *const kinds[] = {"password", "random"};
        static const char *const commits[] = {"hmac", "salted_sha256"};
        static const char *const alpha_names[] = {"unambiguous", "alnum", "hex", "digits"};
        static const char *const alpha_sets[] = {
            "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            "0123456789abcdef",
            "0123456789",
        };

        if (get_seq(c, n, 1, KILN_RECIPE_CREDENTIALS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct recipe_cred *cr = &c->r->creds[c->r->n_creds];
                unsigned e;
                uint64_t x;
                int ok = 1;

                memset(cr, 0, sizeof(*cr));
                if (get_map(c, it, keys, K_N, v) < 0)
                        continue;
                if (v[K_NAME] == NULL || get_name(c, v[K_NAME], "credential name", cr->name) < 0)
                        ok = 0;
                for (unsigned j = 0; ok && j < c->r->n_creds; j++) {
                        if (strcmp(c->r->creds[j].name, cr->name) == 0) {
                                rerr(c, v[K_NAME], "credential name '%s' is used twice", cr->name);
                                ok = 0;
                        }
                }
                if (v[K_KIND] == NULL || get_enum(c, v[K_KIND], kinds, 2, &e) < 0) {
                        ok = 0;
                        e = 0;
                }
                cr->kind = (enum recipe_cred_kind)e;
                if (v[K_LENGTH] == NULL ||
                    get_u64(c, v[K_LENGTH], 8, KILN_RECIPE_SECRET_MAX, &x) < 0) {
                        ok = 0;
                        x = 0;
                }
                cr->length = (unsigned)x;
                if (cr->kind == RECIPE_CRED_RANDOM) {
                        if (v[K_ALPHABET] != NULL || v[K_CHARS] != NULL) {
                                rerr(c, v[K_ALPHABET] ? v[K_ALPHABET] : v[K_CHARS],
                                     "random credentials are bytes: no alphabet");
                                ok = 0;
                        }
                } else if (v[K_ALPHABET] != NULL && v[K_CHARS] != NULL) {
                        rerr(c, v[K_CHARS], "give 'alphabet' or 'characters', not both");
                        ok = 0;
                } else if (v[K_CHARS] != NULL) {
                        const char *s;

                        if (get_str(c, v[K_CHARS], 2, 94, YAML_DOC_STR_ASCII, &s) < 0) {
                                ok = 0;
                        } else {
                                for (size_t a = 0; s[a] != '\0' && ok; a++) {
                                        if (s[a] == ' ' || strchr(s + a + 1, s[a]) != NULL) {
                                                rerr(c, v[K_CHARS],
                                                     "characters must be distinct and not "
                                                     "spaces ('%c')",
                                                     s[a]);
                                                ok = 0;
                                        }
                                }
                                if (ok)
                                        kiln_strlcpy(cr->alphabet, s, sizeof(cr->alphabet));
                        }
                } else {
                        unsigned a = 0;

                        if (v[K_ALPHABET] != NULL &&
                            get_enum(c, v[K_ALPHABET], alpha_names, 4, &a) < 0)
                                ok = 0;
                        kiln_strlcpy(cr->alphabet, alpha_sets[a], sizeof(cr->alphabet));
                }
                cr->alphabet_len = (unsigned)strlen(cr->alphabet);
                if (ok && cr->kind == RECIPE_CRED_PASSWORD) {
                        /* length * log2(alphabet) >= 64, i.e. alphabet^length >= 2^64 */
                        double space = 1;

                        for (unsigned k = 0; k < cr->length && space < 18446744073709551616.0; k++)
                                space *= cr->alphabet_len;
                        if (space < 18446744073709551616.0) {
                                rerr(c, v[K_LENGTH],
                                     "%u characters from %u give under 64 bits of entropy: make "
                                     "it longer",
                                     cr->length, cr->alphabet_len);
                                ok = 0;
                        }
                }
                if (v[K_OBJECT] == NULL || get_name(c, v[K_OBJECT], "object name", cr->object) < 0)
                        ok = 0;
                else
                        obj_note(c, v[K_OBJECT], cr->object, "a credential", NULL);
                cr->commitment = RECIPE_COMMIT_HMAC;
                if (v[K_COMMIT] != NULL) {
                        if (get_enum(c, v[K_COMMIT], commits, 2, &e) == 0)
                                cr->commitment = (enum recipe_commit)e;
                        else
                                ok = 0;
                }
                if (ok)
                        c->r->n_creds++;
        }
}

/* ---------------------------------------------------------------- objects and firmware */

/* A relative path below the recipe's directory: no leading '/', no '..' component. */
static int rel_path_ok(const char *s)
{
        const char *p = s;

        if (*s == '\0' || *s == '/')
                return 0;
        while (*p != '\0') {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t)(slash - p) : strlen(p);

                if (n == 2 && p[0] == '.' && p[1] == '.')
                        return 0;
                p += n;
                if (*p == '/')
                        p++;
        }
        return 1;
}

/*
 * Read a file the recipe names (relative to its directory), at most max bytes, and keep it.
 * Reports at n. KILN_OK with *ret_data NULL when files are not read.
 */
static int read_ref(struct rctx *c, const struct yaml_doc_node *n, const char *rel, size_t max,
                    const uint8_t **ret_data, size_t *ret_len, uint8_t ret_sha[32])
{
        char full[KILN_PATH_MAX];
        uint8_t *data = NULL;
        size_t len = 0;
        unsigned slot;
        int r;

        if (c->base_dir == NULL) {
                *ret_data = NULL;
                *ret_len = 0;
                return KILN_OK;
        }
        for (slot = 0; slot < KILN_RECIPE_OBJECTS_MAX + 1; slot++)
                if (c->r->file_data[slot] == NULL)
                        break;
        if (slot == KILN_RECIPE_OBJECTS_MAX + 1)
                return ck(c, KILN_E_INTERNAL);
        if (kiln_snprintf(full, sizeof(full), "%s/%s", c->base_dir, rel) < 0)
                return rerr(c, n, "path too long");
        r = kiln_file_read(full, max, &data, &len);
        if (r == KILN_E_NOMEM)
                return ck(c, r);
        if (r == KILN_E_LIMIT)
                return rerr(c, n, "file '%s' is over the limit of %zu bytes", rel, max);
        if (r == KILN_E_NOT_FOUND)
                return rerr(c, n, "file '%s' not found", rel);
        if (r < 0)
                return rerr(c, n, "cannot read file '%s': %s", rel, kiln_strerror(r));
        c->r->file_data[slot] = data;
        sha256_of(data, len, ret_sha);
        *ret_data = data;
        *ret_len = len;
        return KILN_OK;
}

static int get_rel_path(struct rctx *c, const struct yaml_doc_node *n, const char **ret)
{
        const char *s;

        if (get_str(c, n, 1, KILN_PATH_MAX / 2, 0, &s) < 0)
                return KILN_E_SYNTAX;
        if (!rel_path_ok(s))
                return rerr(c, n, "the path must be relative to the recipe, without '..'");
        *ret = s;
        return KILN_OK;
}

static void load_objects(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_NAME, K_TEMPLATE, K_FILE, K_SHA, K_SECRET, K_N };
        static const struct yaml_doc_key keys[K_N] = {{"name", YAML_DOC_REQUIRED},
                                                      {"template", 0},
                                                      {"file", 0},
                                                      {"sha256", 0},
                                                      {"secret", 0}};

        if (get_seq(c, n, 1, KILN_RECIPE_OBJECTS_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct recipe_object *o = &c->r->objects[c->r->n_objects];
                int ok = 1;

                memset(o, 0, sizeof(*o));
                if (get_map(c, it, keys, K_N, v) < 0)
                        continue;
                if (v[K_NAME] == NULL || get_name(c, v[K_NAME], "object name", o->name) < 0)
                        ok = 0;
                else
                        obj_note(c, v[K_NAME], o->name, "a data object", NULL);
                if (v[K_SECRET] != NULL && get_bool(c, v[K_SECRET], &o->secret) < 0)
                        ok = 0;
                if ((v[K_TEMPLATE] != NULL) == (v[K_FILE] != NULL)) {
                        rerr(c, it, "give exactly one of 'template' and 'file'");
                        continue;
                }
                if (v[K_TEMPLATE] != NULL) {
                        struct tspec ts;

                        if (v[K_SHA] != NULL) {
                                rerr(c, v[K_SHA], "sha256 applies to 'file' objects");
                                ok = 0;
                        }
                        tspec_unit(&ts, KILN_RECIPE_RENDER_MAX, cs_text(1), "object content");
                        ts.str_flags = YAML_DOC_STR_MULTILINE;
                        if (tmpl_parse(c, v[K_TEMPLATE], &ts, &o->content, NULL) < 0)
                                ok = 0;
                } else {
                        uint8_t want[32];
                        int has_want = 0;

                        o->from_file = 1;
                        if (v[K_SHA] != NULL) {
                                if (get_sha256(c, v[K_SHA], want) == 0)
                                        has_want = 1;
                                else
                                        ok = 0;
                        }
                        if (get_rel_path(c, v[K_FILE], &o->path) < 0) {
                                ok = 0;
                        } else if (read_ref(c, v[K_FILE], o->path, KILN_RECIPE_FILE_OBJECT_MAX,
                                            &o->data, &o->len, o->sha256) < 0) {
                                ok = 0;
                        } else if (o->data != NULL) {
                                o->has_sha256 = 1;
                                if (o->len == 0) {
                                        rerr(c, v[K_FILE], "file '%s' is empty", o->path);
                                        ok = 0;
                                } else if (has_want && memcmp(want, o->sha256, 32) != 0) {
                                        rerr(c, v[K_SHA], "file '%s' does not match its sha256",
                                             o->path);
                                        ok = 0;
                                }
                        } else if (has_want) {
                                memcpy(o->sha256, want, 32);
                                o->has_sha256 = 1;
                        }
                }
                if (ok)
                        c->r->n_objects++;
        }
}

static void load_firmware(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_FILE, K_SHA, K_OBJECT, K_VERSION, K_N };
        static const struct yaml_doc_key keys[K_N] = {{"file", YAML_DOC_REQUIRED},
                                                      {"sha256", YAML_DOC_REQUIRED},
                                                      {"object", YAML_DOC_REQUIRED},
                                                      {"version", 0}};
        const struct yaml_doc_node *v[K_N];
        struct recipe_firmware *f = &c->r->firmware;
        uint8_t got[32];
        int ok = 1;

        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        if (v[K_SHA] == NULL || get_sha256(c, v[K_SHA], f->sha256) < 0)
                ok = 0;
        if (v[K_OBJECT] == NULL || get_name(c, v[K_OBJECT], "object name", f->object) < 0)
                ok = 0;
        else
                obj_note(c, v[K_OBJECT], f->object, "the firmware", NULL);
        if (v[K_VERSION] != NULL &&
            get_str(c, v[K_VERSION], 1, KILN_FWVER_MAX, YAML_DOC_STR_ASCII, &f->version) < 0)
                ok = 0;
        if (v[K_FILE] == NULL || get_rel_path(c, v[K_FILE], &f->path) < 0) {
                ok = 0;
        } else if (read_ref(c, v[K_FILE], f->path, KILN_OBJECT_MAX, &f->data, &f->len, got) < 0) {
                ok = 0;
        } else if (f->data != NULL) {
                if (f->len == 0) {
                        rerr(c, v[K_FILE], "file '%s' is empty", f->path);
                        ok = 0;
                } else if (ok && memcmp(got, f->sha256, 32) != 0) {
                        rerr(c, v[K_SHA], "file '%s' does not match its sha256", f->path);
                        ok = 0;
                }
        }
        f->present = ok;
}

/* ---------------------------------------------------------------- attestation */

static void load_attest(struct rctx *c, const struct yaml_doc_node *n)
{
        static const struct yaml_doc_key keys[] = {{"keys", YAML_DOC_REQUIRED}};
        const struct yaml_doc_node *v[1];
        unsigned seen = 0;

        if (get_map(c, n, keys, 1, v) < 0 || v[0] == NULL)
                return;
        if (get_seq(c, v[0], 0, KILN_RECIPE_KEYS_MAX) < 0)
                return;
        for (unsigned k = 0; k < c->r->n_keys; k++)
                c->r->keys[k].attest = 0;
        for (size_t i = 0; i < v[0]->n; i++) {
                const struct yaml_doc_node *it = v[0]->vals[i];
                const char *s;
                unsigned k;

                if (get_str(c, it, 1, KILN_NAME_MAX, YAML_DOC_STR_ASCII, &s) < 0)
                        continue;
                for (k = 0; k < c->r->n_keys; k++)
                        if (strcmp(c->r->keys[k].name, s) == 0)
                                break;
                if (k == c->r->n_keys) {
                        char q[Q_MAX];

                        quote(s, q, sizeof(q));
                        rerr(c, it, "no key is named %s", q);
                        continue;
                }
                if (seen & (1u << k))
                        rerr(c, it, "key '%s' is listed twice", s);
                seen |= 1u << k;
                c->r->keys[k].attest = 1;
        }
}

/* ---------------------------------------------------------------- fuses */

/* Parse a fuse value for a field of `bits` bits. */
static int fuse_value(struct rctx *c, const struct yaml_doc_node *n, enum recipe_phase phase,
                      struct recipe_fuse *f)
{
        size_t nbytes = (f->bits + 7) / 8;
        char q[Q_MAX];
        int nonzero = 0;

        if (n->kind == YAML_DOC_BAD)
                return KILN_E_SYNTAX;
        if (n->kind != YAML_DOC_SCALAR || yaml_doc_is_null(n))
                return rerr(c, n, "expected an integer, 0x-hex bytes or a MAC placeholder, got %s",
                            yaml_doc_describe(n));
        yaml_doc_quote(n->str, n->len, q, sizeof(q));
        f->value_len = nbytes;
        f->mac_index = -1;
        if (n->str[0] == '{') {
                const char *s = n->str;
                unsigned idx = 0;

                if (strcmp(s, "{mac}") == 0) {
                        idx = 0;
                } else if (n->len == 6 && memcmp(s, "{mac", 4) == 0 && s[4] >= '0' && s[4] <= '7' &&
                           s[5] == '}') {
                        idx = (unsigned)(s[4] - '0');
                } else {
                        return rerr(c, n,
                                    "a fuse value placeholder is {mac} or {mac0}..{mac7}; "
                                    "got %s",
                                    q);
                }
                if (phase != RECIPE_PHASE_DATA)
                        return rerr(c, n, "MAC addresses go in the data phase");
                if (c->mac_node == NULL)
                        return rerr(c, n, "placeholder %s needs a 'mac' section", q);
                if (c->mac_ok && idx >= c->r->mac.per_unit)
                        return rerr(c, n,
                                    "placeholder %s: the recipe allocates %u MAC address%s "
                                    "per unit",
                                    q, c->r->mac.per_unit, c->r->mac.per_unit == 1 ? "" : "es");
                if (f->bits != 48)
                        return rerr(c, n, "a MAC address needs a 48-bit field, not %u bits",
                                    f->bits);
                c->mac_used |= 1u << idx;
                f->mac_index = (int)idx;
                return KILN_OK;
        }
        if (n->len > 2 && n->str[0] == '0' && (n->str[1] == 'x' || n->str[1] == 'X')) {
                const char *h = n->str + 2;
                size_t hl = n->len - 2, len = 0;

                if (hl != 2 * nbytes)
                        return rerr(c, n,
                                    "%s has %zu hex digit%s; a %u-bit field takes exactly "
                                    "%zu (its %zu byte%s, byte 0 first)",
                                    q, hl, hl == 1 ? "" : "s", f->bits, 2 * nbytes, nbytes,
                                    nbytes == 1 ? "" : "s");
                if (kiln_hex_decode(h, f->value, sizeof(f->value), &len) < 0 || len != nbytes)
                        return rerr(c, n, "%s is not hex", q);
        } else {
                uint64_t x;
                int r;

                if (!n->plain)
                        return rerr(c, n,
                                    "expected an integer, 0x-hex bytes or a MAC "
                                    "placeholder, got %s",
                                    q);
                r = get_u64(c, n, 0, UINT64_MAX, &x);
                if (r < 0)
                        return r;
                if (f->bits < 64 && x >> f->bits != 0)
                        return rerr(c, n, "value %s does not fit in %u bit%s", q, f->bits,
                                    f->bits == 1 ? "" : "s");
                memset(f->value, 0, sizeof(f->value));
                for (size_t i = 0; i < nbytes && i < 8; i++)
                        f->value[i] = (uint8_t)(x >> (8 * i));
        }
        if (f->bits % 8 != 0 && (f->value[nbytes - 1] >> (f->bits % 8)) != 0)
                return rerr(c, n, "%s sets bits above the field's %u bits", q, f->bits);
        for (size_t i = 0; i < nbytes; i++)
                nonzero |= f->value[i];
        if (!nonzero)
                return rerr(c, n, "value %s programs nothing", q);
        return KILN_OK;
}

static void load_fuse_phase(struct rctx *c, const struct yaml_doc_node *n, enum recipe_phase ph)
{
        enum { K_FIELD, K_BITS, K_VALUE, K_VERIFY, K_N };
        static const struct yaml_doc_key keys[K_N] = {{"field", YAML_DOC_REQUIRED},
                                                      {"bits", YAML_DOC_REQUIRED},
                                                      {"value", YAML_DOC_REQUIRED},
                                                      {"verify", 0}};

        if (get_seq(c, n, 1, KILN_RECIPE_FUSES_MAX) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct recipe_fuse *f;
                uint64_t x;
                unsigned e;
                int ok = 1;

                if (c->r->n_fuses >= KILN_RECIPE_FUSES_MAX) {
                        rerr(c, it, "more than %u fuse fields in the plan",
                             (unsigned)KILN_RECIPE_FUSES_MAX);
                        return;
                }
                f = &c->r->fuses[c->r->n_fuses];
                memset(f, 0, sizeof(*f));
                f->phase = ph;
                f->line = it->line;
                f->column = it->column;
                if (get_map(c, it, keys, K_N, v) < 0)
                        continue;
                if (v[K_FIELD] == NULL || get_name(c, v[K_FIELD], "fuse field name", f->field) < 0)
                        ok = 0;
                for (unsigned j = 0; ok && j < c->r->n_fuses; j++) {
                        if (strcmp(c->r->fuses[j].field, f->field) == 0) {
                                rerr(c, v[K_FIELD],
                                     "fuse field '%s' is already in the plan (%s "
                                     "phase): a field is burned once",
                                     f->field, phase_names[c->r->fuses[j].phase]);
                                ok = 0;
                        }
                }
                if (v[K_BITS] == NULL ||
                    get_u64(c, v[K_BITS], 1, KILN_FUSE_BYTES_MAX * 8, &x) < 0) {
                        ok = 0;
                } else {
                        f->bits = (unsigned)x;
                        if (v[K_VALUE] != NULL && fuse_value(c, v[K_VALUE], ph, f) < 0)
                                ok = 0;
                }
                f->verify = RECIPE_VERIFY_READBACK;
                if (v[K_VERIFY] != NULL) {
                        if (get_enum(c, v[K_VERIFY], verify_names, RECIPE_VERIFY_MAX, &e) < 0) {
                                ok = 0;
                        } else {
                                f->verify = (enum recipe_verify)e;
                                if ((f->verify == RECIPE_VERIFY_DEBUG_CLOSED ||
                                     f->verify == RECIPE_VERIFY_SECURE_BOOT) &&
                                    ph != RECIPE_PHASE_LOCKOUT) {
                                        rerr(c, v[K_VERIFY],
                                             "'%s' verifies a lock-out bit: use "
                                             "it in the lockout phase",
                                             verify_names[e]);
                                        ok = 0;
                                }
                                if (f->verify == RECIPE_VERIFY_READ_PROTECTED &&
                                    ph != RECIPE_PHASE_DATA) {
                                        rerr(c, v[K_VERIFY],
                                             "'read_protected' applies to a data "
                                             "field protected in the protect "
                                             "phase");
                                        ok = 0;
                                }
                        }
                }
                if (ok)
                        c->r->n_fuses++;
        }
}

static void load_fuses(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_DATA, K_PROTECT, K_LOCKOUT, K_LC, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"data", 0}, {"protect", 0}, {"lockout", 0}, {"lifecycle_final", 0}};
        static const char *const lcs[] = {"none", "production"};
        const struct yaml_doc_node *v[K_N];
        int last_phase = -1;
        unsigned e;

        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        /* the plan reads in the order it runs: data, then protect, then lockout */
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *k = n->keys[i];

                for (int p = 0; p < RECIPE_PHASE_MAX; p++) {
                        if (strcmp(k->str, phase_names[p]) != 0)
                                continue;
                        if (p < last_phase)
                                rerr(c, k,
                                     "phase '%s' must come before '%s' (the plan is "
                                     "written in the order it runs)",
                                     phase_names[p], phase_names[last_phase]);
                        else
                                last_phase = p;
                }
        }
        for (int p = 0; p < RECIPE_PHASE_MAX; p++)
                if (v[p] != NULL)
                        load_fuse_phase(c, v[p], (enum recipe_phase)p);
        if (v[K_LC] != NULL && get_enum(c, v[K_LC], lcs, 2, &e) == 0)
                c->r->lifecycle_final = e ? RECIPE_LC_PRODUCTION : 0;
}

/* ---------------------------------------------------------------- label */

static int gtin_valid(const char *s, char out[15])
{
        size_t n = strlen(s);
        unsigned sum = 0;

        if (n != 8 && n != 12 && n != 13 && n != 14)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (s[i] < '0' || s[i] > '9')
                        return 0;
        /* weights 3,1,3,... from the digit left of the check digit */
        for (size_t i = 0; i + 1 < n; i++)
                sum += (unsigned)(s[n - 2 - i] - '0') * (i % 2 == 0 ? 3u : 1u);
        if ((10 - sum % 10) % 10 != (unsigned)(s[n - 1] - '0'))
                return 0;
        memset(out, '0', 14 - n);
        memcpy(out + 14 - n, s, n);
        out[14] = '\0';
        return 1;
}

static void load_label(struct rctx *c, const struct yaml_doc_node *n)
{
        enum { K_FIELDS, K_QR, K_GS1, K_SIZE, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"fields", YAML_DOC_REQUIRED}, {"qr", 0}, {"gs1", 0}, {"size", YAML_DOC_REQUIRED}};
        const struct yaml_doc_node *v[K_N];
        struct recipe_label *l = &c->r->label;
        struct tspec ts;

        if (get_map(c, n, keys, K_N, v) < 0)
                return;
        l->present = 1;
        if (v[K_FIELDS] != NULL && get_seq(c, v[K_FIELDS], 1, KILN_RECIPE_LABEL_FIELDS_MAX) == 0) {
                tspec_unit(&ts, KILN_RECIPE_LABEL_TEXT_MAX, cs_text(0), "a label line");
                ts.src_max = KILN_RECIPE_TEXT_MAX;
                for (size_t i = 0; i < v[K_FIELDS]->n; i++)
                        if (tmpl_parse(c, v[K_FIELDS]->vals[i], &ts, &l->fields[l->n_fields],
                                       NULL) == 0)
                                l->n_fields++;
        }
        if (v[K_QR] != NULL) {
                tspec_unit(&ts, KILN_RECIPE_URL_MAX, cs_ascii_minus(" \"<>\\^`{|}"), "a URL");
                ts.src_max = KILN_RECIPE_URL_MAX;
                if (tmpl_parse(c, v[K_QR], &ts, &l->qr, NULL) == 0) {
                        const struct recipe_seg *s0 = &l->qr.segs[0];

                        if (s0->kind != RECIPE_SEG_LITERAL ||
                            !((s0->len > 8 && strncmp(s0->text, "https://", 8) == 0) ||
                              (s0->len > 7 && strncmp(s0->text, "http://", 7) == 0)))
                                rerr(c, v[K_QR],
                                     "the QR payload is a URL starting with "
                                     "https:// (or http://) and a host");
                        else
                                l->has_qr = 1;
                }
        }
        if (v[K_GS1] != NULL) {
                static const struct yaml_doc_key gk[] = {{"gtin", YAML_DOC_REQUIRED},
                                                         {"base_url", 0}};
                const struct yaml_doc_node *gv[2];
                const char *s;
                int ok = 1;

                if (get_map(c, v[K_GS1], gk, 2, gv) == 0) {
                        if (gv[0] == NULL || get_str(c, gv[0], 1, 32, YAML_DOC_STR_ASCII, &s) < 0) {
                                ok = 0;
                        } else if (!gtin_valid(s, l->gtin)) {
                                rerr(c, gv[0],
                                     "expected a GTIN: 8, 12, 13 or 14 digits with "
                                     "a valid check digit");
                                ok = 0;
                        }
                        l->gs1_base = "https://id.gs1.org";
                        if (gv[1] != NULL && get_url(c, gv[1], &l->gs1_base) < 0)
                                ok = 0;
                        if (c->serial_ok && c->r->serial.max_len > 20) {
                                rerr(c, v[K_GS1],
                                     "GS1 serial numbers (AI 21) hold at most 20 "
                                     "characters; serials here reach %zu",
                                     c->r->serial.max_len);
                                ok = 0;
                        }
                        l->has_gs1 = ok;
                }
        }
        if (v[K_SIZE] != NULL) {
                static const struct yaml_doc_key sk[] = {
                    {"width", YAML_DOC_REQUIRED}, {"height", YAML_DOC_REQUIRED}, {"dpi", 0}};
                const struct yaml_doc_node *sv[3];
                uint64_t x;

                l->dpi = 203;
                if (get_map(c, v[K_SIZE], sk, 3, sv) == 0) {
                        if (sv[0] != NULL && get_u64(c, sv[0], 1, LABEL_DOTS_MAX, &x) == 0)
                                l->width = (unsigned)x;
                        if (sv[1] != NULL && get_u64(c, sv[1], 1, LABEL_DOTS_MAX, &x) == 0)
                                l->height = (unsigned)x;
                        if (sv[2] != NULL && get_u64(c, sv[2], 1, 600, &x) == 0) {
                                if (x != 152 && x != 203 && x != 300 && x != 600)
                                        rerr(c, sv[2], "dpi is one of 152, 203, 300, 600");
                                else
                                        l->dpi = (unsigned)x;
                        }
                }
        }
}

/* ---------------------------------------------------------------- cross-references */

static void check_cross(struct rctx *c, const struct yaml_doc_node *fuses_node,
                        const struct yaml_doc_node *lockout_node)
{
        struct recipe *r = c->r;
        unsigned certs = 0, attested = 0, lockout = 0, protect = 0, rp = 0;

        for (unsigned i = 0; i < r->n_keys; i++) {
                certs += r->keys[i].has_cert;
                attested += r->keys[i].attest;
        }
        for (unsigned i = 0; i < r->n_fuses; i++) {
                lockout += r->fuses[i].phase == RECIPE_PHASE_LOCKOUT;
                protect += r->fuses[i].phase == RECIPE_PHASE_PROTECT;
                rp += r->fuses[i].verify == RECIPE_VERIFY_READ_PROTECTED;
        }
        if (rp > 0 && protect == 0 && fuses_node != NULL)
                rerr(c, fuses_node,
                     "a data field is verified 'read_protected' but the protect "
                     "phase burns nothing");
        /* with no usable keys list its problem is reported already */
        if ((lockout > 0 || r->lifecycle_final) && fuses_node != NULL && c->keys_loaded) {
                const struct yaml_doc_node *at = lockout_node ? lockout_node : fuses_node;

                if (certs == 0)
                        rerr(c, at,
                             "the plan locks the device but no key has a certificate: "
                             "the unit would leave without an identity");
                else if (attested == 0)
                        rerr(c, at,
                             "the plan locks the device but attestation is off "
                             "(attest.keys is empty): nothing proves the keys work");
        }
        if (c->mac_ok) {
                for (unsigned i = 0; i < r->mac.per_unit; i++)
                        if (!(c->mac_used & (1u << i)))
                                rerr(c, c->mac_node,
                                     "MAC address %u of %u never reaches the device: use "
                                     "{mac%u} in a fuse value or a template",
                                     i, r->mac.per_unit, i);
        }
}

/* ---------------------------------------------------------------- top level */

static void load_root(struct rctx *c, const struct yaml_doc_node *root)
{
        enum {
                K_SCHEMA,
                K_ID,
                K_VERSION,
                K_DESCRIPTION,
                K_PRODUCT,
                K_SERIAL,
                K_MAC,
                K_QUOTA,
                K_KEYS,
                K_CREDS,
                K_OBJECTS,
                K_FIRMWARE,
                K_ATTEST,
                K_FUSES,
                K_LABEL,
                K_N
        };
        static const struct yaml_doc_key keys[K_N] = {
            {"schema", YAML_DOC_REQUIRED},
            {"id", YAML_DOC_REQUIRED},
            {"version", YAML_DOC_REQUIRED},
            {"description", 0},
            {"product", YAML_DOC_REQUIRED},
            {"serial", YAML_DOC_REQUIRED},
            {"mac", 0},
            {"quota", YAML_DOC_REQUIRED},
            {"keys", YAML_DOC_REQUIRED},
            {"credentials", 0},
            {"objects", 0},
            {"firmware", 0},
            {"attest", 0},
            {"fuses", 0},
            {"label", 0},
        };
        const struct yaml_doc_node *v[K_N];
        const struct yaml_doc_node *lockout_node = NULL;
        struct recipe *r = c->r;
        uint64_t x;

        r->description = "";
        if (get_map(c, root, keys, K_N, v) < 0)
                return;
        if (v[K_SCHEMA] != NULL && get_u64(c, v[K_SCHEMA], 0, UINT32_MAX, &x) == 0) {
                if (x != RECIPE_SCHEMA)
                        rerr(c, v[K_SCHEMA],
                             "version %llu is not supported (this kiln reads "
                             "schema %u)",
                             (unsigned long long)x, RECIPE_SCHEMA);
                else
                        r->schema = (unsigned)x;
        }
        if (v[K_ID] != NULL)
                get_chars(c, v[K_ID], 1, KILN_RECIPE_ID_MAX, "a-z0-9._-", "recipe id", r->id,
                          sizeof(r->id));
        if (v[K_VERSION] != NULL)
                get_chars(c, v[K_VERSION], 1, KILN_RECIPE_VERSION_MAX, "A-Za-z0-9.+_-",
                          "recipe version", r->version, sizeof(r->version));
        if (v[K_DESCRIPTION] != NULL)
                get_str(c, v[K_DESCRIPTION], 0, KILN_RECIPE_DESCRIPTION_MAX, YAML_DOC_STR_MULTILINE,
                        &r->description);
        /* the order matters: product constants, serial width and the MAC count feed templates */
        if (v[K_PRODUCT] != NULL)
                load_product(c, v[K_PRODUCT]);
        if (v[K_MAC] != NULL)
                load_mac(c, v[K_MAC]);
        if (v[K_SERIAL] != NULL)
                load_serial(c, v[K_SERIAL]);
        if (v[K_QUOTA] != NULL)
                load_quota(c, v[K_QUOTA]);
        if (v[K_KEYS] != NULL)
                load_keys(c, v[K_KEYS]);
        if (v[K_CREDS] != NULL)
                load_creds(c, v[K_CREDS]);
        if (v[K_OBJECTS] != NULL)
                load_objects(c, v[K_OBJECTS]);
        if (v[K_FIRMWARE] != NULL)
                load_firmware(c, v[K_FIRMWARE]);
        if (v[K_ATTEST] != NULL)
                load_attest(c, v[K_ATTEST]);
        if (v[K_FUSES] != NULL) {
                load_fuses(c, v[K_FUSES]);
                if (v[K_FUSES]->kind == YAML_DOC_MAP)
                        for (size_t i = 0; i < v[K_FUSES]->n; i++)
                                if (strcmp(v[K_FUSES]->keys[i]->str, "lockout") == 0)
                                        lockout_node = v[K_FUSES]->vals[i];
        }
        if (v[K_LABEL] != NULL)
                load_label(c, v[K_LABEL]);
        check_cross(c, v[K_FUSES], lockout_node);
}

void recipe_free(struct recipe *r)
{
        if (r == NULL)
                return;
        for (unsigned i = 0; i < KILN_RECIPE_OBJECTS_MAX + 1; i++)
                kiln_free(r->file_data[i]);
        yaml_doc_free(r->doc);
        kiln_free(r);
}

int recipe_load_mem(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                    unsigned flags, struct yaml_doc_diags *diags, struct recipe **ret)
{
        struct recipe *r = NULL;
        struct rctx c;
        size_t before = yaml_doc_diags_count(diags);
        uint8_t *body;
        int rc;

        memset(&c, 0, sizeof(c));
        if (len > KILN_RECIPE_FILE_MAX) {
                rc = yaml_doc_diag_add(diags, 1, 1, "file is %zu bytes, over the limit of %u bytes",
                                       len, (unsigned)KILN_RECIPE_FILE_MAX);
                rc = rc < 0 ? rc : KILN_E_RECIPE_TOO_LARGE;
                goto out;
        }
        r = kiln_calloc(1, sizeof(*r));
        if (r == NULL) {
                rc = KILN_E_NOMEM;
                goto out;
        }
        rc = yaml_doc_load(data, len, KILN_RECIPE_FILE_MAX, diags, &r->doc);
        if (rc == KILN_E_SYNTAX) {
                rc = KILN_E_RECIPE;
                goto out;
        }
        if (rc < 0)
                goto out;
        body = yaml_doc_alloc(r->doc, len);
        r->path = yaml_doc_strndup(r->doc, name, strlen(name));
        if (body == NULL || r->path == NULL) {
                rc = KILN_E_NOMEM;
                goto out;
        }
        memcpy(body, data, len);
        r->body = body;
        r->body_len = len;
        sha256_of(data, len, r->sha256);
        kiln_hex_encode(r->sha256, 32, r->sha256_hex, sizeof(r->sha256_hex));

        c.d = diags;
        c.doc = r->doc;
        c.r = r;
        c.base_dir = (flags & RECIPE_LOAD_NO_FILES) ? NULL : base_dir;
        r->files_loaded = c.base_dir != NULL;
        if (r->doc->root == NULL)
                ck(&c, yaml_doc_diag_add(diags, 1, 1, "the recipe is empty"));
        else
                load_root(&c, r->doc->root);
        if (c.nomem) {
                rc = KILN_E_NOMEM;
                goto out;
        }
        if (yaml_doc_diags_count(diags) > before) {
                rc = KILN_E_RECIPE;
                goto out;
        }
        *ret = r;
        r = NULL;
        rc = KILN_OK;
out:
        recipe_free(r);
        return rc;
}

int recipe_load_file(const char *path, unsigned flags, struct yaml_doc_diags *diags,
                     struct recipe **ret)
{
        char dir[KILN_PATH_MAX];
        uint8_t *data = NULL;
        size_t len = 0;
        int r;

        r = yaml_doc_read_file(path, KILN_RECIPE_FILE_MAX, KILN_E_RECIPE_TOO_LARGE, diags, &data, &len,
                               dir, sizeof(dir));
        if (r < 0)
                return r;
        r = recipe_load_mem(path, dir, data, len, flags, diags, ret);
        kiln_free(data);
        return r;
}
