/*
 * Unit labels (kiln/label.h): the label document (text lines and QR codes) built from a unit's
 * export record and its recipe, one layout shared by the ZPL and PNG renderers, and sending to
 * files, printer devices and raw TCP printer ports.
 *
 * Everything the record holds is treated as hostile: the database may have been edited. Text
 * goes into ZPL through ^FH hex escapes when it holds a character ZPL gives a meaning to, every
 * line and payload is bounded, and the PNG is drawn clipped to the label.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>
#include <qrencode.h>

#include "kiln/export.h"
#include "kiln/label.h"
#include "kiln/recipe.h"
#include "kiln/util.h"

#define LABEL_QUIET 4u       /* quiet zone around a QR code, in modules (ISO/IEC 18004) */
#define LABEL_QR_MAG_MAX 10u /* largest ^BQ magnification (dots per module) */
#define LABEL_GLYPH_W 5u     /* the built-in font: 5 x 7 glyphs ... */
#define LABEL_GLYPH_H 7u
#define LABEL_CELL_W 6u           /* ... in 6-dot cells (one blank column) ... */
#define LABEL_PITCH 9u            /* ... on a 9-dot line pitch (two blank rows), at scale 1 */
#define LABEL_SCALE_MAX 16u       /* largest text scale */
#define LABEL_ZPL_FONT_MIN 10u    /* smallest ^A0 height and width ZPL accepts */
#define LABEL_MODULE_GOOD_UM 500u /* a QR module this large scans comfortably (0.5 mm) */
#define LABEL_GLYPH_GOOD_UM 2500u /* text this tall reads comfortably (2.5 mm) */
#define LABEL_MAX_CODES 2u        /* registry QR code, GS1 Digital Link QR code */

/* ---------------------------------------------------------------- the built-in font */

/*
 * 5 x 7 glyphs for printable ASCII (0x20..0x7e), drawn for this program. One byte per row, top
 * row first; bit 4 is the leftmost column. Lowercase descenders are folded into the 7 rows.
 */
static const uint8_t label_font[95][LABEL_GLYPH_H] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* space */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}, /* ! */
    {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a}, /* # */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, /* % */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d}, /* & */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}, /* ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, /* ) */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00}, /* asterisk */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* , */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c}, /* . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, /* slash */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}, /* 0 */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* 1 */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}, /* 2 */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e}, /* 3 */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}, /* 4 */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e}, /* 5 */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}, /* 6 */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}, /* 7 */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}, /* 8 */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c}, /* 9 */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00}, /* : */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, /* < */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}, /* > */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* ? */
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e}, /* @ */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* A */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}, /* B */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}, /* C */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c}, /* D */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}, /* E */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}, /* F */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}, /* G */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}, /* H */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}, /* L */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}, /* N */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* O */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}, /* P */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}, /* Q */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}, /* R */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}, /* S */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}, /* W */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}, /* X */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04}, /* Y */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}, /* Z */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e}, /* [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00}, /* backslash */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e}, /* ] */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}, /* _ */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00}, /* ` */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f}, /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e}, /* b */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e}, /* c */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f}, /* d */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e}, /* e */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08}, /* f */
    {0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}, /* h */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e}, /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0c}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, /* k */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}, /* l */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11}, /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}, /* n */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e}, /* o */
    {0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10}, /* p */
    {0x00, 0x00, 0x0d, 0x13, 0x0f, 0x01, 0x01}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}, /* r */
    {0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e}, /* s */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06}, /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d}, /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04}, /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a}, /* w */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11}, /* x */
    {0x00, 0x00, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* y */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f}, /* z */
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02}, /* { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* | */
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08}, /* } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00}, /* ~ */
};

/* ---------------------------------------------------------------- formats */

const char *label_format_name(enum station_label_format f)
{
        switch (f) {
        case STATION_LABEL_ZPL:
                return "zpl";
        case STATION_LABEL_PNG:
                return "png";
        default:
                return NULL;
        }
}

int label_format_parse(const char *s, enum station_label_format *ret)
{
        if (s != NULL && strcmp(s, "zpl") == 0) {
                *ret = STATION_LABEL_ZPL;
                return KILN_OK;
        }
        if (s != NULL && strcmp(s, "png") == 0) {
                *ret = STATION_LABEL_PNG;
                return KILN_OK;
        }
        return kiln_fail(KILN_E_INVAL, "unknown label format '%s' (zpl or png)",
                         s != NULL ? s : "");
}

/* ---------------------------------------------------------------- GS1 Digital Link */

/* GS1 AI encodable character set 82 (GS1 General Specifications §7.11, figure 7.11-1). */
static int gs1_cset82(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("!\"%&'()*+,-./:;<=>?_", c) != NULL);
}

/* The characters a Digital Link leaves as they are: URI unreserved and in CSET 82. */
static int gs1_plain(unsigned char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.' || c == '_';
}

int label_gs1_uri(const char *base, const char *gtin, const char *serial, char *out, size_t cap)
{
        static const char hex[] = "0123456789ABCDEF";
        size_t blen, slen, pos, need;

        if (base == NULL || gtin == NULL || serial == NULL)
                return kiln_fail(KILN_E_INVAL,
                                 "GS1 Digital Link needs a base URL, GTIN and serial");
        blen = strlen(base);
        while (blen > 0 && base[blen - 1] == '/')
                blen--;
        if (blen == 0)
                return kiln_fail(KILN_E_INVAL, "GS1 Digital Link base URL is empty");
        if (strlen(gtin) != 14 || strspn(gtin, "0123456789") != 14)
                return kiln_fail(KILN_E_INVAL, "GTIN '%.20s' is not 14 digits", gtin);
        slen = strlen(serial);
        if (slen == 0 || slen > LABEL_GS1_SERIAL_MAX)
                return kiln_fail(KILN_E_INVAL,
                                 "serial of %zu characters does not fit GS1 AI 21 (1..%u)", slen,
                                 LABEL_GS1_SERIAL_MAX);
        need = blen + strlen("/01/") + 14 + strlen("/21/");
        for (size_t i = 0; i < slen; i++) {
                unsigned char c = (unsigned char)serial[i];

                if (!gs1_cset82(c))
                        return kiln_fail(KILN_E_INVAL,
                                         "serial has a character GS1 AI 21 cannot carry "
                                         "(0x%02x at %zu)",
                                         c, i);
                need += gs1_plain(c) ? 1 : 3;
        }
        if (need + 1 > cap)
                return kiln_fail(KILN_E_RANGE, "GS1 Digital Link URI of %zu bytes is too long",
                                 need);
        memcpy(out, base, blen);
        pos = blen;
        memcpy(out + pos, "/01/", 4);
        pos += 4;
        memcpy(out + pos, gtin, 14);
        pos += 14;
        memcpy(out + pos, "/21/", 4);
        pos += 4;
        for (size_t i = 0; i < slen; i++) {
                unsigned char c = (unsigned char)serial[i];

                if (gs1_plain(c)) {
                        out[pos++] = (char)c;
                } else {
                        out[pos++] = '%';
                        out[pos++] = hex[c >> 4];
                        out[pos++] = hex[c & 15];
                }
        }
        out[pos] = '\0';
        return KILN_OK;
}

/* ---------------------------------------------------------------- the label document */

struct label_line {
        char text[LABEL_LINE_MAX + 1];
        size_t len;
        unsigned glyphs; /* characters drawn: one per UTF-8 sequence */
};

struct label_code {
        char payload[LABEL_QR_MAX];
        size_t len;
        QRcode *qr;
        unsigned x, y; /* top-left dot of the symbol (inside its quiet zone) */
};

struct label_doc {
        unsigned width, height, dpi, margin;
        struct label_line lines[LABEL_LINES_MAX];
        unsigned n_lines;
        unsigned text_x, text_y, scale; /* scale 0: no text */
        struct label_code codes[LABEL_MAX_CODES];
        unsigned n_codes;
        unsigned mag; /* dots per QR module */
};

static void doc_free(struct label_doc *d)
{
        if (d == NULL)
                return;
        for (unsigned i = 0; i < d->n_codes; i++)
                if (d->codes[i].qr != NULL)
                        QRcode_free(d->codes[i].qr);
        kiln_free(d);
}

/* Characters drawn for s[0..n): continuation bytes of UTF-8 sequences do not count. */
static unsigned utf8_glyphs(const char *s, size_t n)
{
        unsigned g = 0;

        for (size_t i = 0; i < n; i++)
                if (((unsigned char)s[i] & 0xc0) != 0x80)
                        g++;
        return g;
}

static int doc_line(struct label_doc *d, const char *fmt, ...) KILN_PRINTF(2, 3);

static int doc_line(struct label_doc *d, const char *fmt, ...)
{
        struct label_line *l;
        va_list ap;
        int n;

        if (d->n_lines == LABEL_LINES_MAX)
                return kiln_fail(KILN_E_LIMIT, "more than %u label lines", LABEL_LINES_MAX);
        l = &d->lines[d->n_lines];
        va_start(ap, fmt);
        n = vsnprintf(l->text, sizeof(l->text), fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= sizeof(l->text))
                return kiln_fail(KILN_E_RANGE, "label line over %u bytes", LABEL_LINE_MAX);
        l->len = (size_t)n;
        l->glyphs = utf8_glyphs(l->text, l->len);
        d->n_lines++;
        return KILN_OK;
}

/* 1 when some rendered line contains s (a non-empty string). */
static int doc_shows(const struct label_doc *d, unsigned first, const char *s)
{
        if (s == NULL || s[0] == '\0')
                return 1;
        for (unsigned i = first; i < d->n_lines; i++)
                if (strstr(d->lines[i].text, s) != NULL)
                        return 1;
        return 0;
}

static int two_digits(const char *s, unsigned *ret)
{
        if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9')
                return 0;
        *ret = (unsigned)(s[0] - '0') * 10u + (unsigned)(s[1] - '0');
        return 1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
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

/*
 * Expected format: "YYYY-MM-DDTHH:MM:SS" followed by anything (fraction, "Z"), UTC, as the
 * database writes times. Epoch milliseconds (whole seconds) into *ret.
 */
static int parse_time_ms(const char *s, int64_t *ret)
{
        unsigned yh, yl, mo, dd, hh, mi, ss;
        static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

        if (strlen(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != ' ') ||
            s[13] != ':' || s[16] != ':' || !two_digits(s, &yh) || !two_digits(s + 2, &yl) ||
            !two_digits(s + 5, &mo) || !two_digits(s + 8, &dd) || !two_digits(s + 11, &hh) ||
            !two_digits(s + 14, &mi) || !two_digits(s + 17, &ss))
                return KILN_E_SYNTAX;
        if (mo < 1 || mo > 12 || dd < 1 || dd > mdays[mo - 1] || hh > 23 || mi > 59 || ss > 60)
                return KILN_E_SYNTAX;
        *ret = (days_from_civil((int64_t)(yh * 100u + yl), mo, dd) * 86400 + hh * 3600 + mi * 60 +
                ss) *
               1000;
        return KILN_OK;
}

/* Expected format: "aa:bb:cc:dd:ee:ff", hex digits in either case. */
static int parse_mac(const char *s, uint64_t *ret)
{
        uint64_t v = 0;

        if (strlen(s) != 17)
                return KILN_E_SYNTAX;
        for (unsigned i = 0; i < 17; i++) {
                char c = s[i];
                unsigned x;

                if (i % 3 == 2) {
                        if (c != ':')
                                return KILN_E_SYNTAX;
                        continue;
                }
                if (c >= '0' && c <= '9')
                        x = (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        x = (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        x = (unsigned)(c - 'A' + 10);
                else
                        return KILN_E_SYNTAX;
                v = v << 4 | x;
        }
        *ret = v;
        return KILN_OK;
}

static int tmpl_uses_date(const struct recipe_tmpl *t)
{
        for (unsigned i = 0; i < t->n_segs; i++)
                switch (t->segs[i].kind) {
                case RECIPE_SEG_YY:
                case RECIPE_SEG_YYYY:
                case RECIPE_SEG_WW:
                case RECIPE_SEG_MM:
                case RECIPE_SEG_DD:
                        return 1;
                default:
                        break;
                }
        return 0;
}

static int code_add(struct label_doc *d, const char *payload, size_t len)
{
        struct label_code *c;

        if (d->n_codes == LABEL_MAX_CODES)
                return kiln_fail(KILN_E_INTERNAL, "too many QR codes");
        if (len == 0 || len >= sizeof(c->payload))
                return kiln_fail(KILN_E_RANGE, "QR payload of %zu bytes (1..%u)", len,
                                 LABEL_QR_MAX - 1);
        c = &d->codes[d->n_codes];
        memcpy(c->payload, payload, len);
        c->payload[len] = '\0';
        c->len = len;
        /* 8-bit mode: the exact bytes, and a size no printer's automatic mode exceeds */
        c->qr = QRcode_encodeData((int)len, (const unsigned char *)payload, 0, QR_ECLEVEL_M);
        if (c->qr == NULL)
                return errno == ERANGE ? kiln_fail(KILN_E_RANGE,
                                                   "QR payload of %zu bytes does not fit a "
                                                   "QR code at error correction M",
                                                   len)
                       : errno == ENOMEM
                           ? kiln_fail(KILN_E_NOMEM, "QR encoding: out of memory")
                           : kiln_fail(KILN_E_INTERNAL, "QR encoding failed: %s", strerror(errno));
        d->n_codes++;
        return KILN_OK;
}

/* The content of the label: lines and QR codes, not yet placed. */
static int doc_build(const struct recipe *rc, const struct db_export_rec *rec, unsigned flags,
                     struct label_doc *d)
{
        const struct recipe_label *l = &rc->label;
        const char *when;
        struct recipe_values v;
        uint64_t macs[DB_MACS_MAX];
        uint8_t uid[KILN_UID_MAX];
        size_t uid_len = 0, n;
        char buf[LABEL_QR_MAX];
        unsigned first_field;
        int uses_date = 0, is_pass, r;

        if (!l->present)
                return kiln_fail(KILN_E_NOT_FOUND, "recipe '%s' %.12s has no label section", rc->id,
                                 rc->sha256_hex);
        is_pass = strcmp(rec->verdict, "PASS") == 0;
        if (!is_pass && !(flags & LABEL_FORCE))
                return kiln_fail(KILN_E_PERM,
                                 "unit %s is %s, not PASS: no label (--force prints one marked "
                                 "NOT PASS)",
                                 rec->serial, rec->verdict);
        if (l->width < 1 || l->width > LABEL_DOTS_MAX || l->height < 1 ||
            l->height > LABEL_DOTS_MAX || l->dpi < 100 || l->dpi > 600)
                return kiln_fail(KILN_E_INVAL, "label size %ux%u dots at %u dpi is out of range",
                                 l->width, l->height, l->dpi);
        if (rec->serial[0] == '\0')
                return kiln_fail(KILN_E_INVAL, "unit %lld has no serial number",
                                 (long long)rec->id);
        if (rec->n_macs > DB_MACS_MAX)
                return kiln_fail(KILN_E_INVAL, "unit %s: %u MAC addresses", rec->serial,
                                 rec->n_macs);
        for (unsigned i = 0; i < rec->n_macs; i++)
                if (parse_mac(rec->macs[i], &macs[i]) < 0)
                        return kiln_fail(KILN_E_INVAL, "unit %s: malformed MAC address '%.17s'",
                                         rec->serial, rec->macs[i]);
        memset(&v, 0, sizeof(v));
        v.serial = rec->serial;
        v.macs = macs;
        v.n_macs = rec->n_macs;
        if (kiln_hex_decode(rec->chip_uid, uid, sizeof(uid), &uid_len) == KILN_OK && uid_len > 0) {
                v.chip_uid = uid;
                v.chip_uid_len = uid_len;
        }
        if (recipe_name_valid(rec->station_id))
                v.station = rec->station_id;
        /* the date on a label is the unit's finish date; an unfinished unit has its start date */
        when = rec->has_finished_at ? rec->finished_at : rec->started_at;
        if (parse_time_ms(when, &v.time_ms) < 0)
                return kiln_fail(KILN_E_INVAL, "unit %s: malformed time '%.31s'", rec->serial,
                                 when);

        d->width = l->width;
        d->height = l->height;
        d->dpi = l->dpi;
        if (!is_pass) {
                r = doc_line(d, "NOT PASS - %.15s", rec->verdict);
                if (r < 0)
                        return r;
        }
        first_field = d->n_lines;
        for (unsigned i = 0; i < l->n_fields && i < KILN_RECIPE_LABEL_FIELDS_MAX; i++) {
                r = recipe_tmpl_render(&l->fields[i], &v, buf, sizeof(buf), &n);
                if (r == KILN_OK)
                        r = doc_line(d, "%s", buf);
                if (r < 0)
                        return r;
                uses_date |= tmpl_uses_date(&l->fields[i]);
        }
        /* what every label carries, when the recipe's lines do not show it already */
        r = KILN_OK;
        if (!doc_shows(d, first_field, rc->product.name))
                r = doc_line(d, "%s", rc->product.name);
        if (r == KILN_OK && !doc_shows(d, first_field, rc->product.model))
                r = doc_line(d, "Model %s", rc->product.model);
        if (r == KILN_OK && !doc_shows(d, first_field, rec->serial))
                r = doc_line(d, "S/N %s", rec->serial);
        for (unsigned i = 0; r == KILN_OK && i < rec->n_macs; i++) {
                char colon[RECIPE_MAC_STR], plain[13];
                unsigned k = 0;

                recipe_mac_format(macs[i], colon);
                for (unsigned j = 0; colon[j] != '\0'; j++)
                        if (colon[j] != ':')
                                plain[k++] = colon[j];
                plain[k] = '\0';
                if (!doc_shows(d, first_field, colon) && !doc_shows(d, first_field, plain))
                        r = doc_line(d, "MAC %s", colon);
        }
        if (r == KILN_OK && !uses_date)
                r = doc_line(d, "Date %.10s", when);
        if (r < 0)
                return r;

        /* the registry code: the payload recorded at PASS, else rendered from the recipe */
        if (rec->has_label_qr && rec->label_qr[0] != '\0') {
                r = code_add(d, rec->label_qr, strnlen(rec->label_qr, sizeof(rec->label_qr)));
        } else if (l->has_qr) {
                r = recipe_tmpl_render(&l->qr, &v, buf, sizeof(buf), &n);
                if (r == KILN_OK)
                        r = code_add(d, buf, n);
        }
        if (r == KILN_OK && l->has_gs1) {
                r = label_gs1_uri(l->gs1_base, l->gtin, rec->serial, buf, sizeof(buf));
                if (r == KILN_OK)
                        r = code_add(d, buf, strlen(buf));
        }
        return r;
}

/* ---------------------------------------------------------------- layout */

static unsigned umin(unsigned a, unsigned b)
{
        return a < b ? a : b;
}

/* Largest text scale for the lines in a box of w x h dots, 0 when even scale 1 does not fit. */
static unsigned text_scale(const struct label_doc *d, unsigned w, unsigned h)
{
        unsigned widest = 0, s;

        for (unsigned i = 0; i < d->n_lines; i++)
                if (d->lines[i].glyphs > widest)
                        widest = d->lines[i].glyphs;
        if (widest == 0)
                widest = 1;
        /* n lines of scale s take (9n - 2) s dots: no blank rows under the last line */
        s = umin(w / (widest * LABEL_CELL_W), h / (d->n_lines * LABEL_PITCH - 2));
        return umin(s, LABEL_SCALE_MAX);
}

/*
 * Place the text column and the QR codes. Every magnification from the largest that fits the
 * height down to 1 is tried with the largest text scale that fits beside it; the winner is the
 * pair whose smaller part (QR module against 0.5 mm, glyph height against 2.5 mm, each counted up
 * to that target) is largest, the larger QR code on a tie.
 */
static int doc_layout(struct label_doc *d)
{
        unsigned m, aw, ah, mag_max = LABEL_QR_MAG_MAX, best_mag = 0, best_scale = 0;
        unsigned best_score = 0;
        int found = 0;

        /* a margin of about 1 mm */
        m = d->dpi / 25;
        if (2 * m >= d->width || 2 * m >= d->height)
                return kiln_fail(KILN_E_RANGE, "label of %ux%u dots is too small", d->width,
                                 d->height);
        aw = d->width - 2 * m;
        ah = d->height - 2 * m;
        for (unsigned i = 0; i < d->n_codes; i++)
                mag_max = umin(mag_max, ah / ((unsigned)d->codes[i].qr->width + 2 * LABEL_QUIET));
        if (d->n_codes == 0)
                mag_max = 0;
        for (unsigned mag = mag_max;; mag--) {
                unsigned qw = 0, s = 0, qs = 1000, ts = 1000, score;

                for (unsigned i = 0; i < d->n_codes; i++)
                        qw += ((unsigned)d->codes[i].qr->width + 2 * LABEL_QUIET) * mag;
                if (qw <= aw && (d->n_codes == 0 || mag > 0)) {
                        if (d->n_lines > 0)
                                s = text_scale(d, aw - qw, ah);
                        if (d->n_lines == 0 || s > 0) {
                                /* per mille of the comfortable size, at most 1000 */
                                if (d->n_codes > 0)
                                        qs = umin(1000,
                                                  (unsigned)((unsigned long)mag * 25400u * 1000u /
                                                             d->dpi / LABEL_MODULE_GOOD_UM));
                                if (d->n_lines > 0)
                                        ts = umin(1000, (unsigned)((unsigned long)s *
                                                                   LABEL_GLYPH_H * 25400u * 1000u /
                                                                   d->dpi / LABEL_GLYPH_GOOD_UM));
                                score = qs < ts ? qs : ts;
                                if (!found || score > best_score) {
                                        found = 1;
                                        best_score = score;
                                        best_mag = mag;
                                        best_scale = s;
                                }
                        }
                }
                if (mag <= 1)
                        break;
        }
        if (!found)
                return kiln_fail(KILN_E_RANGE,
                                 "label of %ux%u dots is too small for its %u text lines and %u "
                                 "QR code(s)",
                                 d->width, d->height, d->n_lines, d->n_codes);
        d->margin = m;
        d->mag = best_mag;
        d->scale = best_scale;
        d->text_x = m;
        d->text_y = m;
        /* the text block centred vertically, as the QR codes are */
        if (d->n_lines > 0)
                d->text_y += (ah - (d->n_lines * LABEL_PITCH - 2) * best_scale) / 2;
        /* QR codes right-aligned, in order, each centred vertically in its quiet zone */
        {
                unsigned x = d->width - m;

                for (unsigned i = d->n_codes; i-- > 0;) {
                        unsigned side =
                            ((unsigned)d->codes[i].qr->width + 2 * LABEL_QUIET) * best_mag;

                        x -= side;
                        d->codes[i].x = x + LABEL_QUIET * best_mag;
                        d->codes[i].y = m + (ah - side) / 2 + LABEL_QUIET * best_mag;
                }
        }
        return KILN_OK;
}

/* ---------------------------------------------------------------- ZPL */

/* 1 when ZPL would read something in s as a command or control: it then needs ^FH escapes. */
static int zpl_needs_hex(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c == '^' || c == '~' || c < 0x20 || c == 0x7f)
                        return 1;
        }
        return 0;
}

/*
 * One field's data: "^FD<prefix><data>^FS". Data holding ^ or ~ (the format and control command
 * prefixes) or control bytes is written after ^FH_ with those bytes, and '_' itself, as _XX.
 * UTF-8 text passes as it is (^CI28).
 */
static void zpl_field(struct kiln_buf *b, const char *prefix, const char *s, size_t n)
{
        static const char hex[] = "0123456789ABCDEF";

        if (!zpl_needs_hex(s, n)) {
                kiln_buf_printf(b, "^FD%s", prefix);
                kiln_buf_put(b, s, n);
                kiln_buf_put_str(b, "^FS\n");
                return;
        }
        kiln_buf_printf(b, "^FH_^FD%s", prefix);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c == '^' || c == '~' || c == '_' || c < 0x20 || c == 0x7f) {
                        char e[3] = {'_', hex[c >> 4], hex[c & 15]};

                        kiln_buf_put(b, e, sizeof(e));
                } else {
                        kiln_buf_put_u8(b, c);
                }
        }
        kiln_buf_put_str(b, "^FS\n");
}

static int zpl_render(const struct label_doc *d, struct kiln_buf *out)
{
        unsigned h = d->scale * (LABEL_PITCH - 1);

        if (h < LABEL_ZPL_FONT_MIN)
                h = LABEL_ZPL_FONT_MIN;
        kiln_buf_printf(out,
                        "^XA\n"
                        "^FX Kiln unit label, %u x %u dots at %u dpi\n"
                        "^CI28\n"
                        "^PW%u\n"
                        "^LL%u\n"
                        "^LH0,0\n",
                        d->width, d->height, d->dpi, d->width, d->height);
        for (unsigned i = 0; i < d->n_lines; i++) {
                /* font 0 at height h and width h: condensed glyphs narrower than the 6s cell */
                kiln_buf_printf(out, "^FO%u,%u^A0N,%u,%u", d->text_x,
                                d->text_y + i * LABEL_PITCH * d->scale, h, h);
                zpl_field(out, "", d->lines[i].text, d->lines[i].len);
        }
        for (unsigned i = 0; i < d->n_codes; i++) {
                /* model 2, error correction M, mask 7; data "MA,": level M, automatic input */
                kiln_buf_printf(out, "^FO%u,%u^BQN,2,%u,M,7", d->codes[i].x, d->codes[i].y, d->mag);
                zpl_field(out, "MA,", d->codes[i].payload, d->codes[i].len);
        }
        kiln_buf_put_str(out, "^XZ\n");
        return kiln_buf_error(out);
}

/* ---------------------------------------------------------------- PNG */

/* A 1-bit bitmap, rows packed MSB first, 1 = white (PNG grayscale bit depth 1). */
struct label_bitmap {
        uint8_t *bits;
        size_t stride;
        unsigned w, h;
};

/* Black rectangle, clipped to the bitmap. */
static void bm_fill(struct label_bitmap *bm, unsigned x, unsigned y, unsigned w, unsigned h)
{
        unsigned x1 = x + w > bm->w ? bm->w : x + w, y1 = y + h > bm->h ? bm->h : y + h;

        if (x >= bm->w || y >= bm->h)
                return;
        for (unsigned yy = y; yy < y1; yy++) {
                uint8_t *row = bm->bits + (size_t)yy * bm->stride;

                for (unsigned xx = x; xx < x1; xx++)
                        row[xx >> 3] &= (uint8_t) ~(0x80u >> (xx & 7));
        }
}

static void bm_glyph(struct label_bitmap *bm, unsigned x, unsigned y, unsigned s, unsigned char c)
{
        const uint8_t *g = label_font[(c >= 0x20 && c < 0x7f ? c : '?') - 0x20];

        for (unsigned row = 0; row < LABEL_GLYPH_H; row++)
                for (unsigned col = 0; col < LABEL_GLYPH_W; col++)
                        if (g[row] & (0x10u >> col))
                                bm_fill(bm, x + col * s, y + row * s, s, s);
}

/* ASCII as it is; control bytes and each non-ASCII UTF-8 sequence as '?'. */
static void bm_text(struct label_bitmap *bm, unsigned x, unsigned y, unsigned s, const char *t,
                    size_t n)
{
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)t[i];

                if ((c & 0xc0) == 0x80)
                        continue;
                bm_glyph(bm, x, y, s, c < 0x80 ? c : '?');
                x += LABEL_CELL_W * s;
        }
}

static void png_sink_write(png_structp png, png_bytep data, size_t n)
{
        struct kiln_buf *b = png_get_io_ptr(png);

        if (kiln_buf_put(b, data, n) < 0)
                png_error(png, "PNG larger than its limit");
}

static void png_sink_flush(png_structp png)
{
        (void)png;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
        kiln_fail(KILN_E_INTERNAL, "PNG encoding: %s", msg);
        png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
        (void)png;
        (void)msg;
}

/*
 * libpng reports errors by longjmp: nothing that changes after setjmp() is used after it, and the
 * error branch sets the result itself.
 */
static int png_encode(const struct label_bitmap *bm, unsigned dpi, struct kiln_buf *out)
{
        png_structp png;
        png_infop info = NULL;
        /* pixels per metre: dpi / 0.0254, rounded */
        png_uint_32 ppm = (png_uint_32)((dpi * 10000u + 127u) / 254u);
        int r;

        png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, png_on_error, png_on_warning);
        if (png == NULL)
                return kiln_fail(KILN_E_NOMEM, "PNG encoder: out of memory");
        info = png_create_info_struct(png);
        if (info == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "PNG encoder: out of memory");
                goto out;
        }
        if (setjmp(png_jmpbuf(png))) {
                r = kiln_buf_error(out) == KILN_E_LIMIT ? KILN_E_LIMIT : KILN_E_INTERNAL;
                goto out;
        }
        png_set_write_fn(png, out, png_sink_write, png_sink_flush);
        png_set_IHDR(png, info, bm->w, bm->h, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_set_pHYs(png, info, ppm, ppm, PNG_RESOLUTION_METER);
        png_write_info(png, info);
        for (unsigned y = 0; y < bm->h; y++)
                png_write_row(png, bm->bits + (size_t)y * bm->stride);
        png_write_end(png, NULL);
        r = KILN_OK;
out:
        png_destroy_write_struct(&png, &info);
        return r;
}

static int png_render(const struct label_doc *d, struct kiln_buf *out)
{
        struct label_bitmap bm;
        int r;

        bm.w = d->width;
        bm.h = d->height;
        bm.stride = ((size_t)d->width + 7) / 8;
        bm.bits = kiln_malloc(bm.stride * d->height);
        if (bm.bits == NULL)
                return kiln_fail(KILN_E_NOMEM, "label bitmap of %ux%u dots", d->width, d->height);
        memset(bm.bits, 0xff, bm.stride * d->height);
        for (unsigned i = 0; i < d->n_lines; i++)
                bm_text(&bm, d->text_x, d->text_y + i * LABEL_PITCH * d->scale, d->scale,
                        d->lines[i].text, d->lines[i].len);
        for (unsigned i = 0; i < d->n_codes; i++) {
                const QRcode *q = d->codes[i].qr;

                for (int y = 0; y < q->width; y++)
                        for (int x = 0; x < q->width; x++)
                                if (q->data[(size_t)y * (size_t)q->width + (size_t)x] & 1)
                                        bm_fill(&bm, d->codes[i].x + (unsigned)x * d->mag,
                                                d->codes[i].y + (unsigned)y * d->mag, d->mag,
                                                d->mag);
        }
        r = png_encode(&bm, d->dpi, out);
        kiln_free(bm.bits);
        return r;
}

/* ---------------------------------------------------------------- rendering */

int label_render(const struct recipe *rc, const struct db_export_rec *rec,
                 enum station_label_format f, unsigned flags, struct kiln_buf *out)
{
        struct label_doc *d = NULL;
        struct kiln_buf tmp;
        int r;

        kiln_buf_init(&tmp, f == STATION_LABEL_PNG ? LABEL_PNG_MAX : LABEL_ZPL_MAX);
        if (label_format_name(f) == NULL) {
                r = kiln_fail(KILN_E_INVAL, "unknown label format %d", (int)f);
                goto out;
        }
        d = kiln_calloc(1, sizeof(*d));
        if (d == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "label: out of memory");
                goto out;
        }
        r = doc_build(rc, rec, flags, d);
        if (r == KILN_OK)
                r = doc_layout(d);
        if (r < 0)
                goto out;
        r = f == STATION_LABEL_ZPL ? zpl_render(d, &tmp) : png_render(d, &tmp);
        if (r == KILN_E_LIMIT)
                r = kiln_fail(r, "rendered label over %u bytes",
                              f == STATION_LABEL_PNG ? LABEL_PNG_MAX : LABEL_ZPL_MAX);
        /* checked first: a failed put would leave out's sticky error set */
        if (r == KILN_OK && (out->err != 0 || out->len > out->max || tmp.len > out->max - out->len))
                r = kiln_fail(KILN_E_LIMIT, "label of %zu bytes does not fit the output buffer",
                              tmp.len);
        if (r == KILN_OK)
                r = kiln_buf_put(out, tmp.data, tmp.len);
out:
        doc_free(d);
        kiln_buf_free(&tmp);
        return r;
}

/* The unit's export record and the recipe it was provisioned with, from the database. */
static int unit_load(struct db *db, int64_t unit_id, struct db_export_rec **ret_rec,
                     struct recipe **ret_rc)
{
        struct db_export_rec *rec = NULL;
        struct recipe *rc = NULL;
        struct yaml_doc_diags diags;
        uint8_t *body = NULL;
        size_t len = 0;
        char name[32];
        int r;

        yaml_doc_diags_init(&diags);
        rec = kiln_calloc(1, sizeof(*rec));
        if (rec == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "label: out of memory");
                goto out;
        }
        export_rec_init(rec);
        r = db_unit_export(db, unit_id, rec);
        if (r < 0)
                goto out;
        r = db_recipe_get(db, rec->recipe_sha256, &body, &len);
        if (r == KILN_E_NOT_FOUND)
                r = kiln_fail(r, "recipe %.12s of unit %s is not in the database",
                              rec->recipe_sha256, rec->serial);
        if (r < 0)
                goto out;
        kiln_snprintf(name, sizeof(name), "recipe %.12s", rec->recipe_sha256);
        r = recipe_load_mem(name, NULL, body, len, RECIPE_LOAD_NO_FILES, &diags, &rc);
        if (r == KILN_E_RECIPE && diags.n > 0)
                r = kiln_fail(r, "the recorded %s of unit %s does not load: %u:%u: %s", name,
                              rec->serial, diags.v[0].line, diags.v[0].column, diags.v[0].msg);
        if (r < 0)
                goto out;
        /* the bytes must be the ones the unit records: starting from failure, as verification */
        r = KILN_E_MISMATCH;
        if (strcmp(rc->sha256_hex, rec->recipe_sha256) == 0)
                r = KILN_OK;
        else
                kiln_fail(r, "recipe recorded under %.12s hashes to %.12s", rec->recipe_sha256,
                          rc->sha256_hex);
        if (r < 0)
                goto out;
        *ret_rec = rec;
        *ret_rc = rc;
        rec = NULL;
        rc = NULL;
out:
        yaml_doc_diags_free(&diags);
        recipe_free(rc);
        kiln_free(body);
        if (rec != NULL) {
                export_rec_free(rec);
                kiln_free(rec);
        }
        return r;
}

static void unit_unload(struct db_export_rec *rec, struct recipe *rc)
{
        recipe_free(rc);
        if (rec != NULL) {
                export_rec_free(rec);
                kiln_free(rec);
        }
}

int label_render_unit(struct db *db, int64_t unit_id, enum station_label_format f, unsigned flags,
                      struct kiln_buf *out)
{
        struct db_export_rec *rec = NULL;
        struct recipe *rc = NULL;
        int r;

        r = unit_load(db, unit_id, &rec, &rc);
        if (r == KILN_OK)
                r = label_render(rc, rec, f, flags, out);
        unit_unload(rec, rc);
        return r;
}

/* ---------------------------------------------------------------- targets */

/* Expected format: HOST:PORT or [IPV6]:PORT, HOST of [A-Za-z0-9.-], PORT 1..65535. */
static int parse_tcp(const char *s, struct label_target *t)
{
        const char *host, *colon;
        size_t hlen;
        uint32_t port;

        if (s[0] == '[') {
                const char *end = strchr(s, ']');

                if (end == NULL || end[1] != ':')
                        return kiln_fail(KILN_E_INVAL, "expected tcp:[IPV6]:PORT, not 'tcp:%s'", s);
                host = s + 1;
                hlen = (size_t)(end - host);
                colon = end + 1;
                if (strspn(host, "0123456789abcdefABCDEF:.") < hlen)
                        return kiln_fail(KILN_E_INVAL, "malformed IPv6 address in 'tcp:%s'", s);
        } else {
                colon = strrchr(s, ':');
                if (colon == NULL)
                        return kiln_fail(KILN_E_INVAL, "expected tcp:HOST:PORT, not 'tcp:%s'", s);
                host = s;
                hlen = (size_t)(colon - s);
                if (strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                 ".-") < hlen)
                        return kiln_fail(
                            KILN_E_INVAL,
                            "malformed printer host in 'tcp:%s' (IPv6: tcp:[ADDR]:PORT)", s);
        }
        if (hlen == 0 || hlen > LABEL_HOST_MAX)
                return kiln_fail(KILN_E_INVAL, "printer host in 'tcp:%s' is empty or too long", s);
        if (kiln_parse_u32(colon + 1, 1, 65535, &port) < 0)
                return kiln_fail(KILN_E_INVAL, "printer port in 'tcp:%s' is not 1..65535", s);
        memcpy(t->host, host, hlen);
        t->host[hlen] = '\0';
        t->port = (uint16_t)port;
        t->kind = LABEL_TARGET_TCP;
        return KILN_OK;
}

/* A path to write: by what exists there (see label_target_parse). */
static int parse_path(const char *path, struct label_target *t)
{
        struct stat st;
        char dir[KILN_PATH_MAX];
        char *slash;

        if (path[0] == '\0')
                return kiln_fail(KILN_E_INVAL, "empty output path");
        if (kiln_strlcpy(t->path, path, sizeof(t->path)) < 0)
                return kiln_fail(KILN_E_RANGE, "output path too long");
        if (stat(path, &st) == 0) {
                if (S_ISDIR(st.st_mode))
                        t->kind = LABEL_TARGET_DIR;
                else if (S_ISCHR(st.st_mode))
                        t->kind = LABEL_TARGET_DEVICE;
                else if (S_ISREG(st.st_mode))
                        t->kind = LABEL_TARGET_FILE;
                else
                        return kiln_fail(KILN_E_INVAL,
                                         "'%s' is not a file, a directory or a printer device",
                                         path);
                return KILN_OK;
        }
        if (errno != ENOENT)
                return kiln_fail(KILN_E_INVAL, "cannot use '%s': %s", path, strerror(errno));
        if (strncmp(path, "/dev/", 5) == 0)
                return kiln_fail(KILN_E_INVAL, "printer device '%s' does not exist", path);
        kiln_strlcpy(dir, path, sizeof(dir));
        slash = strrchr(dir, '/');
        if (slash == NULL)
                kiln_strlcpy(dir, ".", sizeof(dir));
        else if (slash == dir)
                dir[1] = '\0';
        else
                *slash = '\0';
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
                return kiln_fail(KILN_E_INVAL, "directory '%s' of output '%s' does not exist", dir,
                                 path);
        t->kind = LABEL_TARGET_FILE;
        return KILN_OK;
}

int label_target_parse(const char *spec, struct label_target *ret)
{
        struct label_target *t;
        int r;

        if (spec == NULL || spec[0] == '\0')
                return kiln_fail(KILN_E_INVAL, "empty output target");
        t = kiln_calloc(1, sizeof(*t));
        if (t == NULL)
                return kiln_fail(KILN_E_NOMEM, "label: out of memory");
        r = kiln_strlcpy(t->spec, spec, sizeof(t->spec));
        if (r < 0) {
                r = kiln_fail(KILN_E_RANGE, "output target too long");
                goto out;
        }
        if (strncmp(spec, "tcp:", 4) == 0)
                r = parse_tcp(spec + 4, t);
        else
                r = parse_path(strncmp(spec, "file:", 5) == 0 ? spec + 5 : spec, t);
        if (r == KILN_OK)
                *ret = *t;
out:
        kiln_free(t);
        return r;
}

int label_target_from_printer(const struct station_printer *p, struct label_target *ret)
{
        struct label_target *t;
        int r = KILN_OK;

        t = kiln_calloc(1, sizeof(*t));
        if (t == NULL)
                return kiln_fail(KILN_E_NOMEM, "label: out of memory");
        if (p->target == NULL) {
                r = kiln_fail(KILN_E_INVAL, "printer without a target");
                goto out;
        }
        switch (p->kind) {
        case STATION_PRINTER_FILE:
                t->kind = LABEL_TARGET_DIR;
                r = kiln_strlcpy(t->path, p->target, sizeof(t->path));
                break;
        case STATION_PRINTER_DEVICE:
                t->kind = LABEL_TARGET_DEVICE;
                r = kiln_strlcpy(t->path, p->target, sizeof(t->path));
                break;
        case STATION_PRINTER_TCP:
                t->kind = LABEL_TARGET_TCP;
                t->port = p->port;
                r = kiln_strlcpy(t->host, p->target, sizeof(t->host));
                if (r == KILN_OK && p->port == 0)
                        r = kiln_fail(KILN_E_INVAL, "printer '%s' has no port", p->target);
                break;
        default:
                r = kiln_fail(KILN_E_INVAL, "unknown printer kind %d", (int)p->kind);
                break;
        }
        if (r == KILN_E_RANGE)
                r = kiln_fail(r, "printer target too long");
        if (r == KILN_OK)
                r = p->spec != NULL ? kiln_strlcpy(t->spec, p->spec, sizeof(t->spec))
                                    : kiln_strlcpy(t->spec, p->target, sizeof(t->spec));
        if (r == KILN_E_RANGE)
                r = kiln_fail(r, "printer specification too long");
        if (r == KILN_OK)
                *ret = *t;
out:
        kiln_free(t);
        return r;
}

/* ---------------------------------------------------------------- sending */

static int ms_left(uint64_t deadline)
{
        uint64_t now = kiln_now_ms();

        return now >= deadline ? 0 : (int)(deadline - now);
}

/* Wait until fd is writable. KILN_E_TIMEOUT (no detail: the caller says what timed out). */
static int wait_writable(int fd, uint64_t deadline, int *ret_errno)
{
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                int left = ms_left(deadline), n;

                if (left == 0)
                        return KILN_E_TIMEOUT;
                n = poll(&p, 1, left);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        *ret_errno = errno;
                        return KILN_E_IO;
                }
                if (n == 0)
                        continue; /* the deadline check above ends the wait */
                if (p.revents & POLLNVAL) {
                        *ret_errno = EBADF;
                        return KILN_E_IO;
                }
                /* POLLERR / POLLHUP: the write or SO_ERROR that follows reports the reason */
                return KILN_OK;
        }
}

/* Write all of data to a non-blocking fd by the deadline. */
static int write_all(int fd, int is_socket, const uint8_t *data, size_t len, uint64_t deadline,
                     const char *what)
{
        size_t off = 0;

        while (off < len) {
                ssize_t n = is_socket ? send(fd, data + off, len - off, MSG_NOSIGNAL)
                                      : write(fd, data + off, len - off);

                if (n > 0) {
                        off += (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        int err = 0, r = wait_writable(fd, deadline, &err);

                        if (r == KILN_E_TIMEOUT)
                                return kiln_fail(r, "%s: took only %zu of %zu bytes within %u ms",
                                                 what, off, len, LABEL_WRITE_TIMEOUT_MS);
                        if (r < 0)
                                return kiln_fail(r, "%s: poll: %s", what, strerror(err));
                        continue;
                }
                if (n == 0)
                        return kiln_fail(KILN_E_IO, "%s: took no data after %zu of %zu bytes", what,
                                         off, len);
                return kiln_fail(errno == ENOSPC ? KILN_E_NOSPACE : KILN_E_IO,
                                 "%s: write failed after %zu of %zu bytes: %s", what, off, len,
                                 strerror(errno));
        }
        return KILN_OK;
}

static int send_device(const char *path, const uint8_t *data, size_t len)
{
        uint64_t deadline = kiln_now_ms() + LABEL_WRITE_TIMEOUT_MS;
        struct stat st;
        char what[KILN_PATH_MAX + 16];
        int fd, r;

        kiln_snprintf(what, sizeof(what), "printer '%s'", path);
        fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return kiln_fail(errno == EBUSY ? KILN_E_PORT_BUSY : KILN_E_IO,
                                 "%s: cannot open: %s", what, strerror(errno));
        /* checked on the open descriptor: the path may have changed since it was parsed */
        if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
                r = kiln_fail(KILN_E_INVAL, "%s is not a character device", what);
                goto out;
        }
        r = write_all(fd, 0, data, len, deadline, what);
out:
        close(fd);
        return r;
}

/*
 * Connect to one address within the deadline: the connected socket, or a negative code with the
 * reason in *ret_errno (no detail recorded: the caller reports the last address's failure).
 */
static int tcp_connect_one(const struct addrinfo *ai, uint64_t deadline, int *ret_errno)
{
        int fd, r, err = 0;
        socklen_t elen = sizeof(err);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
                *ret_errno = errno;
                return KILN_E_IO;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
                return fd;
        if (errno != EINPROGRESS) {
                *ret_errno = errno;
                r = KILN_E_IO;
                goto fail;
        }
        r = wait_writable(fd, deadline, ret_errno);
        if (r < 0)
                goto fail;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
                err = errno;
        if (err != 0) {
                *ret_errno = err;
                r = KILN_E_IO;
                goto fail;
        }
        return fd;
fail:
        close(fd);
        return r;
}

static int send_tcp(const char *host, uint16_t port, const uint8_t *data, size_t len)
{
        struct addrinfo hints, *res = NULL;
        char portstr[8], what[LABEL_HOST_MAX + 32];
        uint64_t deadline;
        int fd = -1, r, gai, err = 0;

        kiln_snprintf(what, sizeof(what), "printer tcp:%s:%u", host, (unsigned)port);
        kiln_snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        /* name resolution is bounded by the resolver's own timeout and attempts */
        gai = getaddrinfo(host, portstr, &hints, &res);
        if (gai != 0) {
                r = kiln_fail(KILN_E_IO, "%s: cannot resolve '%s': %s", what, host,
                              gai_strerror(gai));
                goto out;
        }
        r = KILN_E_IO;
        for (const struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
                /* each address gets its own connect deadline; the last failure is reported */
                r = tcp_connect_one(ai, kiln_now_ms() + LABEL_CONNECT_TIMEOUT_MS, &err);
                if (r >= 0)
                        fd = r;
        }
        if (fd < 0) {
                r = r == KILN_E_TIMEOUT
                        ? kiln_fail(r, "%s: no connection within %u ms", what,
                                    LABEL_CONNECT_TIMEOUT_MS)
                        : kiln_fail(r, "%s: cannot connect: %s", what, strerror(err));
                goto out;
        }
        deadline = kiln_now_ms() + LABEL_WRITE_TIMEOUT_MS;
        r = write_all(fd, 1, data, len, deadline, what);
        if (r < 0)
                goto out;
        /*
         * Raw printer ports answer nothing: end our side and close. Bytes the printer sent anyway
         * are drained first, so close() does not reset the connection before our data is out.
         */
        if (shutdown(fd, SHUT_WR) != 0) {
                r = kiln_fail(KILN_E_IO, "%s: %s", what, strerror(errno));
                goto out;
        }
        for (;;) {
                uint8_t sink[512];
                ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);

                if (n <= 0 && !(n < 0 && errno == EINTR))
                        break;
        }
        r = KILN_OK;
out:
        if (fd >= 0)
                close(fd);
        if (res != NULL)
                freeaddrinfo(res);
        return r;
}

/* A file name for a DIR target: a plain name, never a path. */
static int name_ok(const char *s)
{
        return s != NULL && s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 &&
               strcmp(s, "..") != 0;
}

int label_target_send(const struct label_target *t, const char *name_hint, const uint8_t *data,
                      size_t len)
{
        char path[KILN_PATH_MAX];
        int r;

        switch (t->kind) {
        case LABEL_TARGET_FILE:
                r = kiln_file_write_atomic(t->path, data, len, 0644);
                break;
        case LABEL_TARGET_DIR:
                if (!name_ok(name_hint))
                        return kiln_fail(KILN_E_INVAL, "label file name '%s' is not a plain name",
                                         name_hint != NULL ? name_hint : "");
                if (kiln_snprintf(path, sizeof(path), "%s/%s", t->path, name_hint) < 0)
                        return kiln_fail(KILN_E_RANGE, "label path too long");
                r = kiln_file_write_atomic(path, data, len, 0644);
                break;
        case LABEL_TARGET_DEVICE:
                r = send_device(t->path, data, len);
                break;
        case LABEL_TARGET_TCP:
                r = send_tcp(t->host, t->port, data, len);
                break;
        default:
                r = kiln_fail(KILN_E_INVAL, "unknown label target kind %d", (int)t->kind);
                break;
        }
        return r;
}

int label_send(const struct station_printer *p, const char *name_hint, const uint8_t *data,
               size_t len)
{
        struct label_target *t;
        int r;

        t = kiln_calloc(1, sizeof(*t));
        if (t == NULL)
                return kiln_fail(KILN_E_NOMEM, "label: out of memory");
        r = label_target_from_printer(p, t);
        if (r == KILN_OK)
                r = label_target_send(t, name_hint, data, len);
        kiln_free(t);
        return r;
}

int label_print_unit(struct db *db, int64_t unit_id, const struct label_target *t,
                     enum station_label_format f, unsigned flags, unsigned *ret_count)
{
        struct db_export_rec *rec = NULL;
        struct recipe *rc = NULL;
        struct kiln_buf out;
        char name[DB_SERIAL_MAX + 8];
        unsigned count = 0;
        size_t i;
        int r;

        kiln_buf_init(&out, f == STATION_LABEL_PNG ? LABEL_PNG_MAX : LABEL_ZPL_MAX);
        r = unit_load(db, unit_id, &rec, &rc);
        if (r == KILN_OK)
                r = label_render(rc, rec, f, flags, &out);
        if (r < 0)
                goto out;
        /* DIR targets: "<serial>.<format>", the serial reduced to [A-Za-z0-9._-], no dot first */
        for (i = 0; rec->serial[i] != '\0' && i < DB_SERIAL_MAX - 1; i++) {
                char c = rec->serial[i];

                name[i] = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                  (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                                  (c == '.' && i > 0)
                              ? c
                              : '_';
        }
        name[i] = '\0';
        r = kiln_snprintf(name + i, sizeof(name) - i, ".%s", label_format_name(f));
        if (r == KILN_OK)
                r = label_target_send(t, name, out.data, out.len);
        if (r == KILN_OK)
                r = db_label_print(db, unit_id, label_format_name(f), t->spec, &count);
        if (r < 0)
                goto out;
        *ret_count = count;
out:
        unit_unload(rec, rc);
        kiln_buf_free(&out);
        return r;
}
