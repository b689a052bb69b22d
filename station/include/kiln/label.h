/*
 * Unit labels: render a unit's label as ZPL (Zebra printers) or as a PNG preview, and send it to
 * a printer (a file, a directory, a printer device node or a raw TCP port). docs/labels.md is the
 * reference of the layout, the recipe keys that drive it and the printer targets.
 *
 * What a label carries, from the unit's export record and its recipe's `label` section:
 *
 *   - the recipe's text lines (label.fields), rendered with the unit's values; date placeholders
 *     take the unit's finish time;
 *   - then whatever of product name, model, serial, each MAC address and the date those lines do
 *     not show already, one standard line each ("S/N ...", "MAC ...", "Date YYYY-MM-DD"), so every
 *     label carries them whatever the recipe lays out;
 *   - a QR code with the payload recorded at PASS (label_qr, the registry URL); for a unit without
 *     a recorded payload it is rendered from the recipe's `qr` template;
 *   - with `label.gs1`, a second QR code with the GS1 Digital Link URI
 *     <base_url>/01/<GTIN>/21/<serial, percent-encoded>.
 *
 * Text sits in a column on the left, the QR codes at the right edge (registry code, then the GS1
 * code), each with its 4-module quiet zone. The QR magnification and the text size are chosen
 * together so both stay as large as the label allows. Both formats use the same layout.
 *
 * A label is refused for a unit whose recipe has no label section, and for a unit that is not
 * PASS unless LABEL_FORCE is given; a forced label's first line reads "NOT PASS - <verdict>".
 *
 * Thread-safe: no shared state; the station's slots may print concurrently.
 */
#ifndef KILN_LABEL_H
#define KILN_LABEL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/buf.h"
#include "kiln/config.h"
#include "kiln/db.h"
#include "kiln/limits.h"

struct recipe;
struct db_export_rec;

/*
 * Caps of this module (kept here rather than in limits.h, which other modules own; every one is
 * checked, nothing is truncated silently).
 */
#define LABEL_ZPL_MAX (64u << 10) /* one rendered ZPL label */
#define LABEL_PNG_MAX (16u << 20) /* one rendered PNG (a 10000 x 10000 dot label fits) */
#define LABEL_DOTS_MAX 10000u     /* label width and height, as the recipe allows */
#define LABEL_LINE_MAX (KILN_RECIPE_TEXT_MAX + 16u) /* bytes of one text line ("Model " + model)   \
                                                     */
#define LABEL_LINES_MAX (KILN_RECIPE_LABEL_FIELDS_MAX + 5u + KILN_MACS_PER_UNIT_MAX)
#define LABEL_QR_MAX 1024u             /* QR payload bytes, with the NUL (= EXPORT_QR_MAX) */
#define LABEL_GS1_SERIAL_MAX 20u       /* GS1 AI 21 */
#define LABEL_HOST_MAX 253u            /* printer host name characters */
#define LABEL_CONNECT_TIMEOUT_MS 5000u /* TCP connect, per address tried */
#define LABEL_WRITE_TIMEOUT_MS 30000u  /* sending one whole label to a device or TCP printer */

/* label_render* flags */
#define LABEL_FORCE 1u /* render a unit that is not PASS (marked "NOT PASS") */

/* "zpl", "png" (also the file extension); NULL for an invalid value. */
const char *label_format_name(enum station_label_format f);
/* KILN_E_INVAL (with detail) for anything but "zpl" and "png". */
int label_format_parse(const char *s, enum station_label_format *ret);

/*
 * Render the label of the unit in rec with recipe r (the recipe the unit was provisioned with)
 * and append it to out. Errors: KILN_E_NOT_FOUND (r has no label section), KILN_E_PERM (unit not
 * PASS, without LABEL_FORCE), KILN_E_INVAL (a record value the label needs is malformed, e.g. a
 * serial that GS1 AI 21 cannot carry), KILN_E_RANGE (the label is too small for its content),
 * KILN_E_LIMIT / KILN_E_NOMEM. On failure out is unchanged. Detail via kiln_fail.
 */
int label_render(const struct recipe *r, const struct db_export_rec *rec,
                 enum station_label_format f, unsigned flags, struct kiln_buf *out);

/*
 * Render the label of a unit from the database: its export record and the exact recipe bytes
 * recorded under its recipe hash (loaded without referenced files; the hash is checked again).
 */
int label_render_unit(struct db *db, int64_t unit_id, enum station_label_format f, unsigned flags,
                      struct kiln_buf *out);

/*
 * The GS1 Digital Link URI "<base>/01/<gtin>/21/<serial>" into out (NUL-terminated). base loses a
 * trailing '/'; gtin is 14 digits; serial is 1..20 characters of the GS1 AI character set 82 and is
 * percent-encoded except for A-Z a-z 0-9 - . _ (GS1 Digital Link 1.2 §7.2: only URI unreserved
 * characters stay). KILN_E_INVAL for a bad gtin or serial, KILN_E_RANGE when out is too small.
 */
int label_gs1_uri(const char *base, const char *gtin, const char *serial, char *out, size_t cap);

/* ---------------------------------------------------------------- printers */

enum label_target_kind {
        LABEL_TARGET_FILE,   /* write exactly this file (atomically: temp file, fsync, rename) */
        LABEL_TARGET_DIR,    /* write DIR/<name hint> (atomically) */
        LABEL_TARGET_DEVICE, /* a printer device node (character device), e.g. /dev/usb/lp0 */
        LABEL_TARGET_TCP,    /* raw TCP printer port (9100 on most printers) */
        LABEL_TARGET_KIND_MAX
};

/* Where a label goes. Plain data (no pointers): copy it freely, share it between threads. */
struct label_target {
        enum label_target_kind kind;
        char spec[KILN_PATH_MAX];      /* as given: what db_label_print records */
        char path[KILN_PATH_MAX];      /* FILE, DIR, DEVICE */
        char host[LABEL_HOST_MAX + 1]; /* TCP: name or address (IPv6 without brackets) */
        uint16_t port;                 /* TCP */
};

/*
 * Parse an output target as `kiln label -o` takes it (Expected format):
 *
 *   tcp:HOST:PORT     raw TCP printer; HOST a name, IPv4 address or [IPv6 address]; PORT 1..65535
 *   [file:]PATH       an existing directory: DIR (one file per label, named by the caller)
 *                     an existing character device: DEVICE (e.g. /dev/usb/lp0)
 *                     otherwise a regular file, created or replaced; its directory must exist
 *
 * A missing path under /dev/ is refused rather than created as a file (a mistyped printer device
 * must not become a file in /dev). KILN_E_INVAL with detail for a bad target.
 */
int label_target_parse(const char *spec, struct label_target *ret);

/* The target of a configured printer (struct station_printer, station config `labels.printer`):
 * file:DIR becomes a DIR target. */
int label_target_from_printer(const struct station_printer *p, struct label_target *ret);

/*
 * Send one rendered label. name_hint is the file name for DIR targets (a plain name: no '/', not
 * "." or ".."); other kinds ignore it. Every step has a finite time: devices are written
 * non-blocking with poll() and TCP connects within LABEL_CONNECT_TIMEOUT_MS; the whole write must
 * finish within LABEL_WRITE_TIMEOUT_MS (KILN_E_TIMEOUT). TCP: all bytes written, then the write
 * side shut down and the socket closed. Errors are KILN_E_IO / KILN_E_TIMEOUT / KILN_E_INVAL with
 * a one-line detail naming the target.
 */
int label_target_send(const struct label_target *t, const char *name_hint, const uint8_t *data,
                      size_t len);

/* label_target_from_printer() + label_target_send(). */
int label_send(const struct station_printer *p, const char *name_hint, const uint8_t *data,
               size_t len);

/*
 * Everything the station does after a PASS, in one call: render the unit's label from the
 * database, send it to t (DIR targets get "<serial>.<zpl|png>", the serial reduced to
 * [A-Za-z0-9._-]), then record the print with db_label_print(format, t->spec). *ret_count is the
 * unit's number of prints including this one: above 1 it was a reprint. Nothing is recorded when
 * rendering or sending fails; a label sent but not recorded returns the database error.
 */
int label_print_unit(struct db *db, int64_t unit_id, const struct label_target *t,
                     enum station_label_format f, unsigned flags, unsigned *ret_count);

#endif
