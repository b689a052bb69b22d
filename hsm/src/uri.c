/*
 * PKCS#11 URIs (RFC 7512).
 *
 * Expected format:
 *
 *     pkcs11:<attr>=<value>;<attr>=<value>...[?<qattr>=<value>&...]
 *
 * Path attributes: token, manufacturer, serial, model, slot-id, slot-description,
 * slot-manufacturer, object, id, type. Values are percent-decoded (%XX); id is binary, the others are
 * text without NUL bytes and within the size of the PKCS#11 field they match. Each attribute appears
 * at most once. Query attributes pin-value and pin-source are refused (a PIN never travels in a URI),
 * and so are module-name and module-path (the module comes from the configuration) and everything
 * not listed here, so a misspelt attribute cannot silently widen a match. Error messages never quote
 * the URI: it might carry a PIN.
 */
#include <string.h>
#include <strings.h>

#include "hsm_internal.h"

#define URI_SCHEME "pkcs11:"

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Percent-decode v[0..n) into out (cap bytes); *ret_len bytes written. */
static int pct_decode(const char *name, const char *v, size_t n, uint8_t *out, size_t cap,
                      size_t *ret_len)
{
        size_t o = 0;

        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)v[i];

                if (o == cap)
                        return kiln_fail(KILN_E_HSM_URI,
                                         "PKCS#11 URI attribute '%s' is longer than %zu bytes",
                                         name, cap);
                if (c == '%') {
                        int hi, lo;

                        if (i + 2 >= n)
                                return kiln_fail(KILN_E_HSM_URI,
                                                 "PKCS#11 URI attribute '%s': truncated %%-escape",
                                                 name);
                        hi = hexval(v[i + 1]);
                        lo = hexval(v[i + 2]);
                        if (hi < 0 || lo < 0)
                                return kiln_fail(KILN_E_HSM_URI,
                                                 "PKCS#11 URI attribute '%s': bad %%-escape", name);
                        out[o++] = (uint8_t)(hi << 4 | lo);
                        i += 2;
                        continue;
                }
                /* printable ASCII only; delimiters were split off by the caller */
                if (c <= 0x20 || c >= 0x7f || c == '#')
                        return kiln_fail(KILN_E_HSM_URI,
                                         "PKCS#11 URI attribute '%s': character 0x%02x must be "
                                         "%%-encoded",
                                         name, c);
                out[o++] = c;
        }
        *ret_len = o;
        return KILN_OK;
}

static int decode_text(const char *name, const char *v, size_t n, char *out, size_t cap)
{
        size_t len = 0;
        int r = pct_decode(name, v, n, (uint8_t *)out, cap - 1, &len);

        if (r < 0)
                return r;
        if (memchr(out, '\0', len) != NULL)
                return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI attribute '%s' contains a NUL byte",
                                 name);
        out[len] = '\0';
        return KILN_OK;
}

struct text_attr {
        const char *name;
        unsigned bit;
        size_t off;
        size_t cap;
};

#define TA(n, b, f) {n, b, offsetof(struct hsm_uri, f), sizeof(((struct hsm_uri *)0)->f)}
static const struct text_attr text_attrs[] = {
        TA("token", HSM_URI_TOKEN, token),
        TA("manufacturer", HSM_URI_MANUFACTURER, manufacturer),
        TA("serial", HSM_URI_SERIAL, serial),
        TA("model", HSM_URI_MODEL, model),
        TA("slot-description", HSM_URI_SLOT_DESCRIPTION, slot_description),
        TA("slot-manufacturer", HSM_URI_SLOT_MANUFACTURER, slot_manufacturer),
        TA("object", HSM_URI_OBJECT, object),
};
#undef TA

static const char *const type_names[HSM_OBJ_TYPE_MAX] = {
        [HSM_OBJ_ANY] = "",           [HSM_OBJ_PRIVATE] = "private", [HSM_OBJ_PUBLIC] = "public",
        [HSM_OBJ_SECRET] = "secret-key", [HSM_OBJ_CERT] = "cert",    [HSM_OBJ_DATA] = "data",
};

static int path_attr(struct hsm_uri *u, const char *name, const char *v, size_t n)
{
        char text[32];
        int r;

        for (size_t i = 0; i < sizeof(text_attrs) / sizeof(text_attrs[0]); i++) {
                const struct text_attr *a = &text_attrs[i];

                if (strcmp(name, a->name) != 0)
                        continue;
                if (u->has & a->bit)
                        goto dup;
                r = decode_text(name, v, n, (char *)u + a->off, a->cap);
                if (r < 0)
                        return r;
                u->has |= a->bit;
                return KILN_OK;
        }
        if (strcmp(name, "id") == 0) {
                if (u->has & HSM_URI_ID)
                        goto dup;
                r = pct_decode(name, v, n, u->id, sizeof(u->id), &u->id_len);
                if (r < 0)
                        return r;
                u->has |= HSM_URI_ID;
                return KILN_OK;
        }
        if (strcmp(name, "type") == 0) {
                if (u->has & HSM_URI_TYPE)
                        goto dup;
                r = decode_text(name, v, n, text, sizeof(text));
                if (r < 0)
                        return r;
                for (int t = HSM_OBJ_PRIVATE; t < HSM_OBJ_TYPE_MAX; t++) {
                        if (strcmp(text, type_names[t]) == 0) {
                                u->type = (enum hsm_obj_type)t;
                                u->has |= HSM_URI_TYPE;
                                return KILN_OK;
                        }
                }
                return kiln_fail(KILN_E_HSM_URI,
                                 "PKCS#11 URI type '%s' is not one of public, private, cert, "
                                 "secret-key, data",
                                 text);
        }
        if (strcmp(name, "slot-id") == 0) {
                uint64_t id;

                if (u->has & HSM_URI_SLOT_ID)
                        goto dup;
                r = decode_text(name, v, n, text, sizeof(text));
                if (r < 0)
                        return r;
                if (text[0] == '\0' || strspn(text, "0123456789") != strlen(text) ||
                    kiln_parse_u64(text, 0, (unsigned long)-1, &id) < 0)
                        return kiln_fail(KILN_E_HSM_URI,
                                         "PKCS#11 URI slot-id must be a decimal number");
                u->slot_id = (unsigned long)id;
                u->has |= HSM_URI_SLOT_ID;
                return KILN_OK;
        }
        if (strncmp(name, "library-", 8) == 0)
                return kiln_fail(KILN_E_HSM_URI,
                                 "PKCS#11 URI attribute '%s' is not supported: the module is "
                                 "chosen by the configuration",
                                 name);
        return kiln_fail(KILN_E_HSM_URI, "unknown PKCS#11 URI attribute '%.32s'", name);
dup:
        return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI attribute '%s' appears twice", name);
}

static int query_attr(const char *name)
{
        if (strcmp(name, "pin-value") == 0 || strcmp(name, "pin-source") == 0)
                return kiln_fail(KILN_E_HSM_URI,
                                 "PKCS#11 URI carries a PIN (%s): refused; give the PIN with a PIN "
                                 "file or an environment variable",
                                 name);
        if (strcmp(name, "module-name") == 0 || strcmp(name, "module-path") == 0)
                return kiln_fail(KILN_E_HSM_URI,
                                 "PKCS#11 URI attribute '%s' is not supported: the module is "
                                 "chosen by the configuration",
                                 name);
        return kiln_fail(KILN_E_HSM_URI, "unknown PKCS#11 URI query attribute '%.32s'", name);
}

/* One "name=value" component of length n. */
static int component(struct hsm_uri *u, const char *c, size_t n, int query)
{
        const char *eq = memchr(c, '=', n);
        char name[32];
        size_t nlen;

        if (n == 0)
                return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI has an empty attribute");
        if (eq == NULL)
                return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI attribute without '='");
        nlen = (size_t)(eq - c);
        if (nlen == 0 || nlen >= sizeof(name))
                return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI attribute name of %zu bytes", nlen);
        memcpy(name, c, nlen);
        name[nlen] = '\0';
        for (size_t i = 0; i < nlen; i++) {
                if (!((name[i] >= 'a' && name[i] <= 'z') || name[i] == '-' ||
                      (name[i] >= '0' && name[i] <= '9')))
                        return kiln_fail(KILN_E_HSM_URI, "malformed PKCS#11 URI attribute name");
        }
        if (query)
                return query_attr(name);
        return path_attr(u, name, eq + 1, n - nlen - 1);
}

int hsm_uri_parse(const char *s, struct hsm_uri *ret)
{
        struct hsm_uri u;
        const char *p, *end, *q;
        size_t n;
        int r;

        if (s == NULL)
                return kiln_fail(KILN_E_HSM_URI, "no PKCS#11 URI given");
        n = strnlen(s, KILN_URI_MAX + 1);
        if (n > KILN_URI_MAX)
                return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI longer than %u bytes", KILN_URI_MAX);
        if (strncasecmp(s, URI_SCHEME, strlen(URI_SCHEME)) != 0)
                return kiln_fail(KILN_E_HSM_URI, "not a PKCS#11 URI: it must start with 'pkcs11:'");
        memset(&u, 0, sizeof(u));
        p = s + strlen(URI_SCHEME);
        end = s + n;
        q = memchr(p, '?', (size_t)(end - p));
        /* path: components separated by ';' up to '?' */
        if (q == NULL)
                q = end;
        while (p < q) {
                const char *sep = memchr(p, ';', (size_t)(q - p));
                const char *ce = sep ? sep : q;

                r = component(&u, p, (size_t)(ce - p), 0);
                if (r < 0)
                        return r;
                if (sep != NULL && sep + 1 == q)
                        return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI has an empty attribute");
                p = sep ? sep + 1 : q;
        }
        /* query: components separated by '&' */
        if (q < end) {
                p = q + 1;
                if (p == end)
                        return kiln_fail(KILN_E_HSM_URI, "PKCS#11 URI has an empty query");
                while (p < end) {
                        const char *sep = memchr(p, '&', (size_t)(end - p));
                        const char *ce = sep ? sep : end;

                        r = component(&u, p, (size_t)(ce - p), 1);
                        if (r < 0)
                                return r;
                        p = sep ? sep + 1 : end;
                }
        }
        *ret = u;
        return KILN_OK;
}

size_t hsm_uri_template(const struct hsm_uri *u, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *tmpl,
                        size_t cap)
{
        static const CK_OBJECT_CLASS classes[HSM_OBJ_TYPE_MAX] = {
                [HSM_OBJ_PRIVATE] = CKO_PRIVATE_KEY, [HSM_OBJ_PUBLIC] = CKO_PUBLIC_KEY,
                [HSM_OBJ_SECRET] = CKO_SECRET_KEY,   [HSM_OBJ_CERT] = CKO_CERTIFICATE,
                [HSM_OBJ_DATA] = CKO_DATA,
        };
        size_t n = 0;

        if (cap < 3)
                return 0;
        if ((u->has & HSM_URI_TYPE) && u->type != HSM_OBJ_ANY) {
                *cls = classes[u->type];
                tmpl[n++] = (CK_ATTRIBUTE){CKA_CLASS, cls, sizeof(*cls)};
        }
        if (u->has & HSM_URI_OBJECT)
                tmpl[n++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)(uintptr_t)u->object,
                                           strlen(u->object)};
        if (u->has & HSM_URI_ID)
                tmpl[n++] = (CK_ATTRIBUTE){CKA_ID, (void *)(uintptr_t)u->id, u->id_len};
        return n;
}
