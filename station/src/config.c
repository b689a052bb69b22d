/*
 * Station configuration loading and checking. docs/station-config.md is the reference for every
 * key; keep the two in step.
 *
 * Expected format: one YAML mapping (yaml_doc.h) with schema, station_id, mode, database, hsm,
 * slots and the optional work and labels sections. Every problem is recorded with its position
 * and checking goes on, so one run reports them all.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "kiln/config.h"
#include "kiln/recipe.h"
#include "kiln/util.h"

#define Q_MAX (YAML_DOC_QUOTE_MAX * 4 + 8)

struct cctx {
        struct yaml_doc_diags *d;
        struct yaml_doc *doc;
        struct station_config *cfg;
        const char *base_dir;
        int nomem;
};

static int ck(struct cctx *c, int r)
{
        if (r == KILN_E_NOMEM)
                c->nomem = 1;
        return r;
}

static int cerr(struct cctx *c, const struct yaml_doc_node *n, const char *fmt, ...)
    KILN_PRINTF(3, 4);

static int cerr(struct cctx *c, const struct yaml_doc_node *n, const char *fmt, ...)
{
        char msg[YAML_DOC_MSG_MAX];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return ck(c, yaml_doc_err(c->d, n, "%s", msg));
}

static int get_str(struct cctx *c, const struct yaml_doc_node *n, size_t min, size_t max,
                   const char **ret)
{
        return ck(c, yaml_doc_get_str(c->d, n, min, max, YAML_DOC_STR_ASCII, ret));
}

static int in_set(char ch, const char *extra)
{
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               (ch != '\0' && strchr(extra, ch) != NULL);
}

/* An identifier of [A-Za-z0-9] plus `extra`, 1..max characters. */
static int get_ident(struct cctx *c, const struct yaml_doc_node *n, size_t max, const char *extra,
                     const char *what, const char **ret)
{
        const char *s;

        if (get_str(c, n, 1, max, &s) < 0)
                return KILN_E_SYNTAX;
        for (size_t i = 0; s[i] != '\0'; i++) {
                if (!in_set(s[i], extra)) {
                        char q[Q_MAX];

                        yaml_doc_quote(s, strlen(s), q, sizeof(q));
                        return cerr(c, n, "%s is not a valid %s (1..%zu of A-Z a-z 0-9 %s)", q,
                                    what, max, extra);
                }
        }
        *ret = s;
        return KILN_OK;
}

/* Resolve path against the configuration's directory (absolute paths are kept). */
static int resolve(struct cctx *c, const struct yaml_doc_node *n, const char *path,
                   const char **ret)
{
        char buf[KILN_PATH_MAX];
        const char *p;

        if (path[0] == '/' || c->base_dir == NULL) {
                *ret = path;
                return KILN_OK;
        }
        if (kiln_snprintf(buf, sizeof(buf), "%s/%s", c->base_dir, path) < 0)
                return cerr(c, n, "the resolved path is over %u bytes", (unsigned)KILN_PATH_MAX);
        p = yaml_doc_strndup(c->doc, buf, strlen(buf));
        if (p == NULL)
                return ck(c, KILN_E_NOMEM);
        *ret = p;
        return KILN_OK;
}

static int get_path(struct cctx *c, const struct yaml_doc_node *n, const char **ret)
{
        const char *s;

        if (ck(c, yaml_doc_get_str(c->d, n, 1, KILN_PATH_MAX / 2, 0, &s)) < 0)
                return KILN_E_SYNTAX;
        return resolve(c, n, s, ret);
}

static int get_uri(struct cctx *c, const struct yaml_doc_node *n, const char *want_type,
                   const char **ret)
{
        char why[160];
        const char *s;

        if (get_str(c, n, 1, KILN_URI_MAX, &s) < 0)
                return KILN_E_SYNTAX;
        if (!recipe_pkcs11_uri_check(s, want_type, why, sizeof(why)))
                return cerr(c, n, "not a usable PKCS#11 %s URI: %s", want_type ? "key" : "token",
                            why);
        *ret = s;
        return KILN_OK;
}

/* ---------------------------------------------------------------- ports and printers */

static int hex4(const char *s, size_t n, uint16_t *ret)
{
        unsigned v = 0;

        if (n != 4)
                return 0;
        for (size_t i = 0; i < 4; i++) {
                char ch = s[i];
                unsigned d;

                if (ch >= '0' && ch <= '9')
                        d = (unsigned)(ch - '0');
                else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
                        d = (unsigned)((ch | 0x20) - 'a' + 10);
                else
                        return 0;
                v = v << 4 | d;
        }
        *ret = (uint16_t)v;
        return 1;
}

/* A decimal 1..255 at *p, advancing p. */
static int dec_u8(const char **p, uint8_t *ret)
{
        unsigned v = 0, n = 0;

        while (**p >= '0' && **p <= '9' && n < 4) {
                v = v * 10 + (unsigned)(**p - '0');
                (*p)++;
                n++;
        }
        if (n == 0 || n > 3 || v == 0 || v > 255)
                return 0;
        *ret = (uint8_t)v;
        return 1;
}

static int port_uart(const char *dev, const char *query, struct station_port *p, char *why,
                     size_t cap)
{
        size_t n = query ? (size_t)(query - dev) : strlen(dev);

        /* a device node or a stable link to one (/dev/serial/by-id/..., a udev link under
         * /run): any absolute path; the transport refuses what is not a tty */
        if (n < 2 || dev[0] != '/' || dev[n - 1] == '/') {
                snprintf(why, cap, "a serial port is an absolute device path, e.g. /dev/ttyUSB0");
                return 0;
        }
        if (n > KILN_PORT_SPEC_MAX) {
                snprintf(why, cap, "too long");
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                if (!in_set(dev[i], "/._-+:")) {
                        snprintf(why, cap, "character 0x%02x is not allowed in a device path",
                                 (unsigned)(unsigned char)dev[i]);
                        return 0;
                }
        }
        memcpy(p->path, dev, n);
        p->path[n] = '\0';
        p->baud = STATION_BAUD_DEFAULT;
        if (query != NULL) {
                uint32_t baud;

                if (strncmp(query, "?baud=", 6) != 0 ||
                    kiln_parse_u32(query + 6, 300, 4000000, &baud) < 0 || query[6] == '0') {
                        snprintf(why, cap, "the only option is ?baud=N (300..4000000)");
                        return 0;
                }
                p->baud = baud;
        }
        p->kind = STATION_PORT_UART;
        return 1;
}

int station_port_parse(const char *spec, const char *base_dir, struct station_port *ret, char *why,
                       size_t cap)
{
        struct station_port p;

        memset(&p, 0, sizeof(p));
        if (kiln_strlcpy(p.spec, spec, sizeof(p.spec)) < 0) {
                snprintf(why, cap, "longer than %u characters", (unsigned)KILN_PORT_SPEC_MAX);
                return 0;
        }
        if (spec[0] == '/') {
                if (strchr(spec, '?') != NULL) {
                        snprintf(why, cap, "options need the uart: form (uart:/dev/X?baud=N)");
                        return 0;
                }
                if (!port_uart(spec, NULL, &p, why, cap))
                        return 0;
        } else if (strncmp(spec, "uart:", 5) == 0) {
                if (!port_uart(spec + 5, strchr(spec + 5, '?'), &p, why, cap))
                        return 0;
        } else if (strncmp(spec, "unix:", 5) == 0) {
                const char *path = spec + 5;
                int w;

                if (*path == '\0') {
                        snprintf(why, cap, "unix: needs a socket path");
                        return 0;
                }
                for (const char *q = path; *q; q++) {
                        if ((unsigned char)*q < 0x21 || (unsigned char)*q > 0x7e) {
                                snprintf(why, cap,
                                         "the socket path has a space or control "
                                         "character");
                                return 0;
                        }
                }
                if (path[0] != '/' && base_dir != NULL)
                        w = snprintf(p.path, sizeof(p.path), "%s/%s", base_dir, path);
                else
                        w = snprintf(p.path, sizeof(p.path), "%s", path);
                if (w < 0 || (size_t)w > STATION_UNIX_PATH_MAX) {
                        snprintf(why, cap, "the socket path is over %u bytes",
                                 (unsigned)STATION_UNIX_PATH_MAX);
                        return 0;
                }
                p.kind = STATION_PORT_UNIX;
                if (snprintf(p.open_spec, sizeof(p.open_spec), "unix:%s", p.path) >=
                    (int)sizeof(p.open_spec)) {
                        snprintf(why, cap, "the socket path is too long");
                        return 0;
                }
        } else if (strncmp(spec, "usb:", 4) == 0) {
                /* an optional ?reenum_ms=N (0..60000) goes to the transport as written */
                char body[KILN_PORT_SPEC_MAX + 1];
                const char *qm = strchr(spec + 4, '?');
                size_t bl = qm ? (size_t)(qm - spec - 4) : strlen(spec + 4);
                const char *s = body, *c1;

                memcpy(body, spec + 4, bl);
                body[bl] = '\0';
                if (qm != NULL) {
                        uint32_t ms;

                        if (strncmp(qm + 1, "reenum_ms=", 10) != 0 ||
                            kiln_parse_u32(qm + 11, 0, 60000, &ms) < 0) {
                                snprintf(why, cap, "the only USB option is ?reenum_ms=N "
                                                   "(0..60000)");
                                return 0;
                        }
                }
                c1 = strchr(s, ':');

                if (c1 != NULL) {
                        const char *c2 = strchr(c1 + 1, ':');
                        size_t pl = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);

                        if (!hex4(s, (size_t)(c1 - s), &p.vid) || !hex4(c1 + 1, pl, &p.pid)) {
                                snprintf(why, cap,
                                         "usb:VID:PID[:SERIAL] takes 4 hex digits for "
                                         "VID and PID");
                                return 0;
                        }
                        if (c2 != NULL) {
                                const char *ser = c2 + 1;
                                size_t sl = strlen(ser);

                                if (sl == 0 || sl > STATION_USB_SERIAL_MAX) {
                                        snprintf(why, cap, "the USB serial is 1..%u characters",
                                                 (unsigned)STATION_USB_SERIAL_MAX);
                                        return 0;
                                }
                                for (size_t i = 0; i < sl; i++) {
                                        if (!in_set(ser[i], "._-")) {
                                                snprintf(why, cap,
                                                         "the USB serial is A-Z a-z "
                                                         "0-9 . _ -");
                                                return 0;
                                        }
                                }
                                memcpy(p.usb_serial, ser, sl + 1);
                        }
                        p.kind = STATION_PORT_USB_ID;
                } else {
                        const char *q = s;

                        if (!dec_u8(&q, &p.bus) || *q != '-') {
                                snprintf(why, cap,
                                         "expected usb:VID:PID[:SERIAL] or "
                                         "usb:BUS-PORT[.PORT...]");
                                return 0;
                        }
                        q++;
                        for (;;) {
                                if (p.n_ports == STATION_USB_PATH_MAX ||
                                    !dec_u8(&q, &p.ports[p.n_ports])) {
                                        snprintf(why, cap,
                                                 "usb:BUS-PORT[.PORT...] takes 1..%u "
                                                 "port numbers 1..255",
                                                 (unsigned)STATION_USB_PATH_MAX);
                                        return 0;
                                }
                                p.n_ports++;
                                if (*q == '\0')
                                        break;
                                if (*q != '.') {
                                        snprintf(why, cap, "expected usb:BUS-PORT[.PORT...]");
                                        return 0;
                                }
                                q++;
                        }
                        p.kind = STATION_PORT_USB_PATH;
                }
        } else {
                snprintf(why, cap,
                         "expected /dev/PATH, uart:/dev/PATH[?baud=N], unix:PATH, "
                         "usb:VID:PID[:SERIAL] or usb:BUS-PORT[.PORT...]");
                return 0;
        }
        if (p.open_spec[0] == '\0')
                memcpy(p.open_spec, p.spec, sizeof(p.open_spec));
        *ret = p;
        return 1;
}

/* Two specs name the same port (the same device, socket or USB address). */
static int port_same(const struct station_port *a, const struct station_port *b)
{
        if (a->kind != b->kind)
                return 0;
        switch (a->kind) {
        case STATION_PORT_UART:
        case STATION_PORT_UNIX:
                return strcmp(a->path, b->path) == 0;
        case STATION_PORT_USB_ID:
                return a->vid == b->vid && a->pid == b->pid &&
                       (a->usb_serial[0] == '\0' || b->usb_serial[0] == '\0' ||
                        strcmp(a->usb_serial, b->usb_serial) == 0);
        case STATION_PORT_USB_PATH:
                return a->bus == b->bus && a->n_ports == b->n_ports &&
                       memcmp(a->ports, b->ports, a->n_ports) == 0;
        default:
                return 0;
        }
}

static int host_valid(const char *h, size_t n)
{
        if (n == 0 || n > 253)
                return 0;
        if (h[0] == '[') {
                char tmp[64];
                uint8_t a[16];

                if (n < 3 || h[n - 1] != ']' || n - 2 >= sizeof(tmp))
                        return 0;
                memcpy(tmp, h + 1, n - 2);
                tmp[n - 2] = '\0';
                return inet_pton(AF_INET6, tmp, a) == 1;
        }
        for (size_t i = 0; i < n; i++)
                if (!in_set(h[i], ".-"))
                        return 0;
        return h[0] != '-' && h[0] != '.';
}

static int get_printer(struct cctx *c, const struct yaml_doc_node *n, struct station_printer *ret)
{
        struct station_printer p;
        const char *s;

        if (ck(c, yaml_doc_get_str(c->d, n, 1, KILN_PATH_MAX / 2, 0, &s)) < 0)
                return KILN_E_SYNTAX;
        memset(&p, 0, sizeof(p));
        p.spec = s;
        if (strncmp(s, "file:", 5) == 0) {
                if (s[5] == '\0')
                        return cerr(c, n, "file: needs a directory");
                p.kind = STATION_PRINTER_FILE;
                if (resolve(c, n, s + 5, &p.target) < 0)
                        return KILN_E_SYNTAX;
        } else if (strncmp(s, "tcp:", 4) == 0) {
                const char *colon = strrchr(s + 4, ':');
                uint32_t port;
                char *host;

                if (colon == NULL || !host_valid(s + 4, (size_t)(colon - s - 4)) ||
                    kiln_parse_u32(colon + 1, 1, 65535, &port) < 0 || colon[1] == '0')
                        return cerr(c, n,
                                    "expected tcp:HOST:PORT with a host name, IPv4 "
                                    "address or [IPv6] address and a port 1..65535");
                host = yaml_doc_strndup(c->doc, s + 4, (size_t)(colon - s - 4));
                if (host == NULL)
                        return ck(c, KILN_E_NOMEM);
                p.kind = STATION_PRINTER_TCP;
                p.target = host;
                p.port = (uint16_t)port;
        } else if (strncmp(s, "/dev/", 5) == 0 && s[5] != '\0') {
                for (const char *q = s; *q; q++)
                        if (!in_set(*q, "/._-+:"))
                                return cerr(c, n,
                                            "character 0x%02x is not allowed in a device "
                                            "path",
                                            (unsigned)(unsigned char)*q);
                p.kind = STATION_PRINTER_DEVICE;
                p.target = s;
        } else {
                return cerr(c, n,
                            "expected file:DIR, tcp:HOST:PORT or a printer device under "
                            "/dev/");
        }
        *ret = p;
        return KILN_OK;
}

/* ---------------------------------------------------------------- sections */

static void load_work(struct cctx *c, const struct yaml_doc_node *n)
{
        enum { K_RECIPE, K_WO, K_LOT, K_OPERATOR, K_QUOTA, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"recipe", 0}, {"work_order", 0}, {"lot", 0}, {"operator", 0}, {"quota", 0}};
        const struct yaml_doc_node *v[K_N];
        struct station_work *w = &c->cfg->work;
        uint64_t x;

        if (ck(c, yaml_doc_map(c->d, n, keys, K_N, v)) < 0)
                return;
        if (v[K_RECIPE] != NULL)
                get_path(c, v[K_RECIPE], &w->recipe);
        if (v[K_WO] != NULL)
                get_ident(c, v[K_WO], STATION_TEXT_MAX, "._:/-", "work order id", &w->work_order);
        if (v[K_LOT] != NULL)
                get_ident(c, v[K_LOT], STATION_TEXT_MAX, "._:/-", "lot id", &w->lot);
        if (v[K_OPERATOR] != NULL)
                get_ident(c, v[K_OPERATOR], STATION_TEXT_MAX, "._@-", "operator id",
                          &w->operator_id);
        if (v[K_QUOTA] != NULL &&
            ck(c, yaml_doc_get_u64(c->d, v[K_QUOTA], 1, KILN_RECIPE_QUOTA_MAX, &x)) == 0)
                w->quota = (uint32_t)x;
}

static void load_hsm(struct cctx *c, const struct yaml_doc_node *n)
{
        enum {
                K_MODULE,
                K_TOKEN,
                K_PIN_ENV,
                K_PIN_FILE,
                K_SOFTHSM,
                K_AUDIT,
                K_COMMIT,
                K_SESSIONS,
                K_PIN,
                K_N
        };
        static const struct yaml_doc_key keys[K_N] = {
            {"module", YAML_DOC_REQUIRED},
            {"token", YAML_DOC_REQUIRED},
            {"pin_env", 0},
            {"pin_file", 0},
            {"softhsm_conf", 0},
            {"audit_key", YAML_DOC_REQUIRED},
            {"commitment_key", 0},
            {"sessions", 0},
            {"pin", 0},
        };
        const struct yaml_doc_node *v[K_N];
        struct station_hsm *h = &c->cfg->hsm;
        uint64_t x;

        if (ck(c, yaml_doc_map(c->d, n, keys, K_N, v)) < 0)
                return;
        if (v[K_PIN] != NULL)
                cerr(c, v[K_PIN],
                     "a PIN never goes in the configuration: name an environment "
                     "variable with pin_env or an owner-only file with pin_file");
        if (v[K_MODULE] != NULL)
                get_path(c, v[K_MODULE], &h->module);
        if (v[K_TOKEN] != NULL)
                get_uri(c, v[K_TOKEN], NULL, &h->token_uri);
        if (v[K_PIN_ENV] != NULL && v[K_PIN_FILE] != NULL) {
                cerr(c, v[K_PIN_FILE], "give pin_env or pin_file, not both");
        } else if (v[K_PIN_ENV] != NULL) {
                const char *s;

                if (get_ident(c, v[K_PIN_ENV], STATION_ENV_NAME_MAX, "_",
                              "environment variable "
                              "name",
                              &s) == 0) {
                        if (s[0] >= '0' && s[0] <= '9') {
                                cerr(c, v[K_PIN_ENV],
                                     "an environment variable name does not "
                                     "start with a digit");
                        } else {
                                h->pin_source = STATION_PIN_ENV;
                                h->pin_ref = s;
                        }
                }
        } else if (v[K_PIN_FILE] != NULL) {
                if (get_path(c, v[K_PIN_FILE], &h->pin_ref) == 0)
                        h->pin_source = STATION_PIN_FILE;
        } else if (v[K_PIN] == NULL) {
                cerr(c, n, "missing pin_env or pin_file (where the token PIN comes from)");
        }
        if (v[K_SOFTHSM] != NULL)
                get_path(c, v[K_SOFTHSM], &h->softhsm_conf);
        if (v[K_AUDIT] != NULL)
                get_uri(c, v[K_AUDIT], "private", &h->audit_key);
        if (v[K_COMMIT] != NULL)
                get_uri(c, v[K_COMMIT], "secret-key", &h->commitment_key);
        if (v[K_SESSIONS] != NULL &&
            ck(c, yaml_doc_get_u64(c->d, v[K_SESSIONS], 1, KILN_SLOTS_MAX, &x)) == 0)
                h->sessions = (unsigned)x;
}

static void load_slots(struct cctx *c, const struct yaml_doc_node *n)
{
        enum { K_ID, K_PORT, K_PRINTER, K_N };
        static const struct yaml_doc_key keys[K_N] = {
            {"id", YAML_DOC_REQUIRED}, {"port", YAML_DOC_REQUIRED}, {"printer", 0}};
        struct station_config *cfg = c->cfg;

        if (ck(c, yaml_doc_seq(c->d, n, 1, KILN_SLOTS_MAX)) < 0)
                return;
        for (size_t i = 0; i < n->n; i++) {
                const struct yaml_doc_node *it = n->vals[i], *v[K_N];
                struct station_slot *s = &cfg->slots[cfg->n_slots];
                const char *str;

                memset(s, 0, sizeof(*s));
                if (ck(c, yaml_doc_map(c->d, it, keys, K_N, v)) < 0)
                        continue;
                if (v[K_ID] != NULL &&
                    get_ident(c, v[K_ID], KILN_SLOT_ID_MAX, "._-", "slot id", &str) == 0) {
                        kiln_strlcpy(s->id, str, sizeof(s->id));
                        for (unsigned j = 0; j < cfg->n_slots; j++) {
                                if (strcmp(cfg->slots[j].id, s->id) == 0) {
                                        cerr(c, v[K_ID], "slot id '%s' is used twice", s->id);
                                        break;
                                }
                        }
                }
                if (v[K_PORT] != NULL && get_str(c, v[K_PORT], 1, KILN_PORT_SPEC_MAX, &str) == 0) {
                        char why[160];

                        if (!station_port_parse(str, c->base_dir, &s->port, why, sizeof(why))) {
                                char q[Q_MAX];

                                yaml_doc_quote(str, strlen(str), q, sizeof(q));
                                cerr(c, v[K_PORT], "bad port %s: %s", q, why);
                        } else {
                                for (unsigned j = 0; j < cfg->n_slots; j++) {
                                        if (port_same(&cfg->slots[j].port, &s->port)) {
                                                cerr(c, v[K_PORT], "slot '%s' uses the same port",
                                                     cfg->slots[j].id);
                                                break;
                                        }
                                }
                        }
                }
                if (v[K_PRINTER] != NULL && get_printer(c, v[K_PRINTER], &s->printer) == 0)
                        s->has_printer = 1;
                /* a slot with a problem still counts, so later duplicates are compared with it;
                 * a configuration with any problem is never returned */
                cfg->n_slots++;
        }
}

static void load_labels(struct cctx *c, const struct yaml_doc_node *n)
{
        static const struct yaml_doc_key keys[] = {{"printer", YAML_DOC_REQUIRED}, {"format", 0}};
        static const char *const formats[] = {"zpl", "png"};
        const struct yaml_doc_node *v[2];
        struct station_labels *l = &c->cfg->labels;
        unsigned e;

        if (ck(c, yaml_doc_map(c->d, n, keys, 2, v)) < 0)
                return;
        if (v[0] != NULL && get_printer(c, v[0], &l->printer) == 0)
                l->present = 1;
        if (v[1] != NULL && ck(c, yaml_doc_get_enum(c->d, v[1], formats, 2, &e)) == 0)
                l->format = (enum station_label_format)e;
}

static void load_key_list(struct cctx *c, const struct yaml_doc_node *n, const char **out,
                          unsigned *ret_n)
{
        if (ck(c, yaml_doc_seq(c->d, n, 1, STATION_AUTHORITY_KEYS_MAX)) < 0)
                return;
        for (size_t i = 0; i < n->n; i++)
                if (get_path(c, n->vals[i], &out[*ret_n]) == 0)
                        (*ret_n)++;
}

static void load_authority(struct cctx *c, const struct yaml_doc_node *n)
{
        static const struct yaml_doc_key keys[] = {{"release_keys", 0}, {"quota_keys", 0}};
        const struct yaml_doc_node *v[2];
        struct station_authority *a = &c->cfg->authority;

        if (ck(c, yaml_doc_map(c->d, n, keys, 2, v)) < 0)
                return;
        if (v[0] != NULL)
                load_key_list(c, v[0], a->release_keys, &a->n_release_keys);
        if (v[1] != NULL)
                load_key_list(c, v[1], a->quota_keys, &a->n_quota_keys);
}

static void load_root(struct cctx *c, const struct yaml_doc_node *root)
{
        enum {
                K_SCHEMA,
                K_STATION,
                K_MODE,
                K_DB,
                K_WORK,
                K_HSM,
                K_SLOTS,
                K_LABELS,
                K_PIN,
                K_AUTHORITY,
                K_N
        };
        static const struct yaml_doc_key keys[K_N] = {
            {"schema", YAML_DOC_REQUIRED},
            {"station_id", YAML_DOC_REQUIRED},
            {"mode", YAML_DOC_REQUIRED},
            {"database", YAML_DOC_REQUIRED},
            {"work", 0},
            {"hsm", YAML_DOC_REQUIRED},
            {"slots", YAML_DOC_REQUIRED},
            {"labels", 0},
            {"pin", 0},
            {"authority", 0},
        };
        static const char *const modes[] = {"development", "production"};
        const struct yaml_doc_node *v[K_N];
        struct station_config *cfg = c->cfg;
        const char *s;
        uint64_t x;
        unsigned e;

        if (ck(c, yaml_doc_map(c->d, root, keys, K_N, v)) < 0)
                return;
        if (v[K_PIN] != NULL)
                cerr(c, v[K_PIN],
                     "a PIN never goes in the configuration: name an environment "
                     "variable with hsm.pin_env or an owner-only file with "
                     "hsm.pin_file");
        if (v[K_SCHEMA] != NULL &&
            ck(c, yaml_doc_get_u64(c->d, v[K_SCHEMA], 0, UINT32_MAX, &x)) == 0) {
                if (x != STATION_CONFIG_SCHEMA)
                        cerr(c, v[K_SCHEMA],
                             "version %llu is not supported (this kiln reads "
                             "schema %u)",
                             (unsigned long long)x, STATION_CONFIG_SCHEMA);
                else
                        cfg->schema = (unsigned)x;
        }
        if (v[K_STATION] != NULL &&
            get_ident(c, v[K_STATION], KILN_STATION_ID_MAX, "._-", "station id", &s) == 0)
                kiln_strlcpy(cfg->station_id, s, sizeof(cfg->station_id));
        if (v[K_MODE] != NULL && ck(c, yaml_doc_get_enum(c->d, v[K_MODE], modes, 2, &e)) == 0) {
                cfg->mode = (enum station_mode)e;
                cfg->production = cfg->mode == STATION_MODE_PRODUCTION;
        }
        if (v[K_DB] != NULL)
                get_path(c, v[K_DB], &cfg->database);
        if (v[K_WORK] != NULL)
                load_work(c, v[K_WORK]);
        if (v[K_HSM] != NULL)
                load_hsm(c, v[K_HSM]);
        if (v[K_SLOTS] != NULL)
                load_slots(c, v[K_SLOTS]);
        if (v[K_LABELS] != NULL)
                load_labels(c, v[K_LABELS]);
        if (v[K_AUTHORITY] != NULL)
                load_authority(c, v[K_AUTHORITY]);
        if (cfg->production && v[K_MODE] != NULL && cfg->authority.n_release_keys == 0)
                cerr(c, v[K_MODE],
                     "production mode runs only released recipes: list the release keys it "
                     "trusts in authority.release_keys");
        if (cfg->production && v[K_SLOTS] != NULL) {
                for (unsigned i = 0; i < cfg->n_slots; i++)
                        if (cfg->slots[i].port.kind == STATION_PORT_UNIX)
                                cerr(c, v[K_SLOTS],
                                     "slot '%s': unix: ports reach simulated devices, which a "
                                     "production station refuses",
                                     cfg->slots[i].id);
        }
        if (cfg->production && cfg->hsm.softhsm_conf != NULL) {
                const struct yaml_doc_node *hn = v[K_HSM];

                for (size_t i = 0; hn != NULL && hn->kind == YAML_DOC_MAP && i < hn->n; i++)
                        if (strcmp(hn->keys[i]->str, "softhsm_conf") == 0)
                                cerr(c, hn->keys[i],
                                     "softhsm_conf is for development tokens: "
                                     "a production station uses its HSM");
        }
}

/* ---------------------------------------------------------------- entry points */

void station_config_free(struct station_config *c)
{
        if (c == NULL)
                return;
        yaml_doc_free(c->doc);
        kiln_free(c);
}

const struct station_slot *station_config_slot(const struct station_config *c, const char *id)
{
        for (unsigned i = 0; i < c->n_slots; i++)
                if (strcmp(c->slots[i].id, id) == 0)
                        return &c->slots[i];
        return NULL;
}

const char *station_mode_name(enum station_mode m)
{
        return m == STATION_MODE_DEVELOPMENT  ? "development"
               : m == STATION_MODE_PRODUCTION ? "production"
                                              : NULL;
}

int station_config_load_mem(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                            struct yaml_doc_diags *diags, struct station_config **ret)
{
        struct station_config *cfg = NULL;
        struct cctx c;
        size_t before = yaml_doc_diags_count(diags);
        unsigned int dlen = 32;
        int r;

        memset(&c, 0, sizeof(c));
        cfg = kiln_calloc(1, sizeof(*cfg));
        if (cfg == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        r = yaml_doc_load(data, len, KILN_CONFIG_FILE_MAX, diags, &cfg->doc);
        if (r == KILN_E_SYNTAX) {
                r = KILN_E_CONFIG;
                goto out;
        }
        if (r < 0)
                goto out;
        cfg->path = yaml_doc_strndup(cfg->doc, name, strlen(name));
        cfg->dir = base_dir ? yaml_doc_strndup(cfg->doc, base_dir, strlen(base_dir)) : NULL;
        if (cfg->path == NULL || (base_dir != NULL && cfg->dir == NULL)) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (EVP_Digest(data, len, cfg->sha256, &dlen, EVP_sha256(), NULL) != 1) {
                r = kiln_fail(KILN_E_CRYPTO, "SHA-256 failed");
                goto out;
        }
        kiln_hex_encode(cfg->sha256, 32, cfg->sha256_hex, sizeof(cfg->sha256_hex));
        c.d = diags;
        c.doc = cfg->doc;
        c.cfg = cfg;
        c.base_dir = base_dir;
        if (cfg->doc->root == NULL)
                ck(&c, yaml_doc_diag_add(diags, 1, 1, "the configuration is empty"));
        else
                load_root(&c, cfg->doc->root);
        if (c.nomem) {
                r = KILN_E_NOMEM;
                goto out;
        }
        if (yaml_doc_diags_count(diags) > before) {
                r = KILN_E_CONFIG;
                goto out;
        }
        *ret = cfg;
        cfg = NULL;
        r = KILN_OK;
out:
        station_config_free(cfg);
        return r;
}

int station_config_load_file(const char *path, struct yaml_doc_diags *diags,
                             struct station_config **ret)
{
        char dir[KILN_PATH_MAX];
        uint8_t *data = NULL;
        size_t len = 0;
        int r;

        r = yaml_doc_read_file(path, KILN_CONFIG_FILE_MAX, KILN_E_CONFIG, diags, &data, &len, dir,
                               sizeof(dir));
        if (r < 0)
                return r;
        r = station_config_load_mem(path, dir, data, len, diags, ret);
        kiln_free(data);
        return r;
}
