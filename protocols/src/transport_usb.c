/*
 * USB transport: the Kiln byte stream over the bulk endpoint pair of a vendor-class interface,
 * through libusb-1.0 (docs/usb.md is the guide for firmware teams and station integrators).
 *
 *     usb:VID:PID[:SERIAL][?reenum_ms=N]     the device with this id (and iSerial string)
 *     usb:BUS-PORT[.PORT...][?reenum_ms=N]   the device at this physical position (usb:1-1.4.2)
 *
 * - Selection never guesses: several devices matching VID:PID (or VID:PID:SERIAL, when two units
 *   share a serial) are refused with a list of what is attached and how to name each one.
 * - The claimed interface is the first one (by number, then alternate setting) of the active
 *   configuration with bInterfaceClass 0xFF and exactly one bulk IN and one bulk OUT endpoint;
 *   the endpoints come from its descriptors. The claim is exclusive: a second opener gets
 *   KILN_E_PORT_BUSY.
 * - Frames travel unchanged: what the session writes is the payload of bulk OUT transfers, and
 *   what bulk IN transfers bring is handed to the session as it arrives. USB is not paced: the
 *   transport reports baud 0.
 * - Every transfer has a finite timeout (libusb's 0 means "wait forever" and is never used).
 *   A transfer waits at most USB_XFER_SLICE_MS; a caller's longer timeout takes several. After
 *   a timeout `transferred` counts: a partial write goes on with the rest until the caller's
 *   deadline, a partial read returns what arrived.
 * - LIBUSB_ERROR_NO_DEVICE means the device left the bus. It may be rebooting (a RESET makes a
 *   USB device re-enumerate at a new address), so the transport closes its handle and looks for
 *   a device matching the same selector for up to reenum_ms (default 3000), woken by libusb
 *   hotplug events; it reopens that device, or reports KILN_E_DEVICE_GONE ("device gone"). A
 *   call that meets an unplug therefore returns up to reenum_ms after its own timeout.
 * - A stalled endpoint is cleared (CLEAR_FEATURE ENDPOINT_HALT) and reported as KILN_E_USB; every
 *   other libusb failure is KILN_E_USB too, with libusb_error_name() in the one-line detail.
 *
 * The transport owns its libusb context and device handle; one thread uses it at a time.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <libusb.h>

#include "kiln/error.h"
#include "kiln/log.h"
#include "kiln/transport.h"
#include "kiln/util.h"
#include "transport_internal.h"
#include "transport_usb_internal.h"

/* Bulk IN transfers are made into this buffer: a multiple of every legal bulk wMaxPacketSize
 * (8..64 full speed, 512 high speed, 1024 SuperSpeed), so a device never overflows it. */
#define USB_RX_BUF 16384u
/* Largest single bulk OUT transfer; longer writes are sent in pieces of this size. */
#define USB_TX_CHUNK 16384u
/* Longest single transfer wait. A caller's longer timeout is served by several transfers, so a
 * write the device takes only partly goes on with the rest while time is left, and what a read
 * got before a device stopped mid-transfer is handed on after at most this long. */
#define USB_XFER_SLICE_MS 500u
/* Devices named in one "several match" or "none matches" message (the detail is one line). */
#define USB_LIST_MAX 4u
/* While waiting for a device to re-enumerate, the device list is read again at least this often
 * even without a hotplug event (a platform without hotplug support, an event missed in a race). */
#define USB_REENUM_POLL_MS 100u
/* A position as text: "255-255.255.255.255.255.255.255". */
#define USB_POS_MAX (4u + PROTO_USB_PORTS_MAX * 4u + 1u)

struct usbt {
        libusb_context *ctx;
        libusb_device_handle *h; /* NULL while the device is off the bus */
        struct proto_usb_spec spec;
        int iface;
        int alt;
        uint8_t ep_in;
        uint8_t ep_out;
        size_t rx_req; /* bytes asked for per IN transfer: USB_RX_BUF rounded to the packet size */
        size_t rx_off; /* unread bytes are rx[rx_off .. rx_len) */
        size_t rx_len;
        int pending;           /* libusb error seen with data: reported by the next call */
        int gone;              /* the device left and did not come back: every call fails */
        char pos[USB_POS_MAX]; /* where the open device sits, for messages */
        char name[KILN_PORT_SPEC_MAX + 1];
        uint8_t rx[USB_RX_BUF];
};

/* --- Specification --- */

static int spec_fail(const char *spec, const char *fmt, ...) KILN_PRINTF(2, 3);

static int spec_fail(const char *spec, const char *fmt, ...)
{
        char why[200];
        va_list ap;

        va_start(ap, fmt);
        (void)vsnprintf(why, sizeof(why), fmt, ap);
        va_end(ap);
        return kiln_fail(KILN_E_PORT_SPEC, "bad port specification '%s': %s", spec, why);
}

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Exactly 4 hex digits in s[0..n). */
static int hex16(const char *s, size_t n, uint16_t *ret)
{
        unsigned v = 0;

        if (n != 4)
                return 0;
        for (size_t i = 0; i < n; i++) {
                int d = hex_digit(s[i]);

                if (d < 0)
                        return 0;
                v = v << 4 | (unsigned)d;
        }
        *ret = (uint16_t)v;
        return 1;
}

/* A decimal number 1..255 at *p (1..3 digits, no sign, no leading zero); advances *p. */
static int dec_u8(const char **p, uint8_t *ret)
{
        const char *s = *p;
        unsigned v = 0;
        size_t n = 0;

        while (s[n] >= '0' && s[n] <= '9' && n < 4) {
                v = v * 10 + (unsigned)(s[n] - '0');
                n++;
        }
        if (n == 0 || n > 3 || s[0] == '0' || v > 255)
                return 0;
        *p = s + n;
        *ret = (uint8_t)v;
        return 1;
}

/* The selector in sel[0..n): "VID:PID[:SERIAL]" or "BUS-PORT[.PORT...]". */
static int spec_selector(const char *spec, const char *sel, size_t n, struct proto_usb_spec *c)
{
        const char *c1 = memchr(sel, ':', n);

        if (c1 != NULL) {
                const char *pid = c1 + 1, *end = sel + n;
                const char *c2 = memchr(pid, ':', (size_t)(end - pid));
                size_t plen = (size_t)((c2 != NULL ? c2 : end) - pid);

                if (!hex16(sel, (size_t)(c1 - sel), &c->vid) || !hex16(pid, plen, &c->pid))
                        return spec_fail(spec, "usb:VID:PID[:SERIAL] takes exactly 4 hex digits "
                                               "for VID and PID");
                if (c2 != NULL) {
                        const char *ser = c2 + 1;
                        size_t slen = (size_t)(end - ser);

                        if (slen == 0 || slen > PROTO_USB_SERIAL_MAX)
                                return spec_fail(spec, "the serial is 1..%u characters",
                                                 PROTO_USB_SERIAL_MAX);
                        for (size_t i = 0; i < slen; i++)
                                if ((unsigned char)ser[i] < 0x21 || (unsigned char)ser[i] > 0x7E)
                                        return spec_fail(spec, "the serial has a space or a "
                                                               "non-ASCII character");
                        memcpy(c->serial, ser, slen);
                        c->serial[slen] = '\0';
                }
                c->by_path = 0;
                return KILN_OK;
        }

        /* BUS-PORT[.PORT...]: copy out so the parser may stop at the terminator */
        {
                char buf[USB_POS_MAX + 1];
                const char *p = buf;

                if (n >= sizeof(buf))
                        return spec_fail(spec,
                                         "expected usb:VID:PID[:SERIAL] or "
                                         "usb:BUS-PORT[.PORT...] with at most %u ports",
                                         PROTO_USB_PORTS_MAX);
                memcpy(buf, sel, n);
                buf[n] = '\0';
                if (!dec_u8(&p, &c->bus) || *p != '-')
                        return spec_fail(spec, "expected usb:VID:PID[:SERIAL] or "
                                               "usb:BUS-PORT[.PORT...], e.g. usb:1209:4b4e or "
                                               "usb:1-1.4.2");
                p++;
                for (;;) {
                        if (c->n_ports == PROTO_USB_PORTS_MAX || !dec_u8(&p, &c->ports[c->n_ports]))
                                return spec_fail(spec,
                                                 "usb:BUS-PORT[.PORT...] takes a bus "
                                                 "1..255 and 1..%u port numbers 1..255",
                                                 PROTO_USB_PORTS_MAX);
                        c->n_ports++;
                        if (*p == '\0')
                                break;
                        if (*p != '.')
                                return spec_fail(spec, "unexpected '%c' in the port path", *p);
                        p++;
                }
        }
        c->by_path = 1;
        return KILN_OK;
}

int proto_usb_spec_parse(const char *spec, struct proto_usb_spec *ret)
{
        struct proto_usb_spec c;
        const char *sel, *q;
        unsigned seen = 0;
        int r;

        if (spec == NULL || strnlen(spec, KILN_PORT_SPEC_MAX + 1) > KILN_PORT_SPEC_MAX)
                return kiln_fail(KILN_E_PORT_SPEC,
                                 "port specification missing or longer than %u bytes",
                                 KILN_PORT_SPEC_MAX);
        if (strncmp(spec, "usb:", 4) != 0)
                return spec_fail(spec, "a USB port starts with usb:");
        memset(&c, 0, sizeof(c));
        c.reenum_ms = PROTO_USB_REENUM_MS_DEFAULT;
        sel = spec + 4;
        q = strchr(sel, '?');
        r = spec_selector(spec, sel, q != NULL ? (size_t)(q - sel) : strlen(sel), &c);
        if (r < 0)
                return r;

        /* options: key=value joined by '&', each key at most once */
        while (q != NULL) {
                const char *opt = q + 1, *end = strchr(opt, '&');
                size_t olen = end != NULL ? (size_t)(end - opt) : strlen(opt);
                const char *eq = memchr(opt, '=', olen);
                char val[16];
                size_t vlen;
                uint32_t v;

                q = end;
                if (olen == 0)
                        return spec_fail(spec, "empty option");
                if (eq == NULL || (size_t)(eq - opt) != 9 || memcmp(opt, "reenum_ms", 9) != 0)
                        return spec_fail(spec, "unknown option '%.*s' (known: reenum_ms=N)",
                                         (int)olen, opt);
                if (seen)
                        return spec_fail(spec, "option 'reenum_ms' given twice");
                seen = 1;
                vlen = olen - 10;
                if (vlen == 0 || vlen >= sizeof(val))
                        return spec_fail(spec,
                                         "reenum_ms takes a number of milliseconds "
                                         "0..%u",
                                         PROTO_USB_REENUM_MS_MAX);
                memcpy(val, eq + 1, vlen);
                val[vlen] = '\0';
                if (kiln_parse_u32(val, 0, PROTO_USB_REENUM_MS_MAX, &v) < 0)
                        return spec_fail(spec,
                                         "reenum_ms '%s' is not a number of milliseconds "
                                         "0..%u",
                                         val, PROTO_USB_REENUM_MS_MAX);
                c.reenum_ms = v;
        }
        *ret = c;
        return KILN_OK;
}

/* --- Devices --- */

static int usb_err(struct usbt *u, const char *what, int lr)
{
        return kiln_fail(KILN_E_USB, "USB %s on '%s' failed: %s", what, u->name,
                         libusb_error_name(lr));
}

/* "1-1.4.2": bus, then the hub ports from the root. */
static void usb_position(libusb_device *dev, char *out, size_t cap)
{
        uint8_t ports[PROTO_USB_PORTS_MAX];
        int n = libusb_get_port_numbers(dev, ports, (int)sizeof(ports));
        size_t k;

        (void)kiln_snprintf(out, cap, "%u", (unsigned)libusb_get_bus_number(dev));
        if (n <= 0)
                return;
        for (int i = 0; i < n; i++) {
                k = strlen(out);
                (void)kiln_snprintf(out + k, cap - k, "%c%u", i == 0 ? '-' : '.',
                                    (unsigned)ports[i]);
        }
}

/* The position a path selector names, as text. */
static const char *spec_position(const struct proto_usb_spec *s, char *out, size_t cap)
{
        size_t k;

        (void)kiln_snprintf(out, cap, "%u", (unsigned)s->bus);
        for (unsigned i = 0; i < s->n_ports; i++) {
                k = strlen(out);
                (void)kiln_snprintf(out + k, cap - k, "%c%u", i == 0 ? '-' : '.',
                                    (unsigned)s->ports[i]);
        }
        return out;
}

static int usb_at_path(libusb_device *dev, const struct proto_usb_spec *s)
{
        uint8_t ports[PROTO_USB_PORTS_MAX];
        int n;

        if (libusb_get_bus_number(dev) != s->bus)
                return 0;
        n = libusb_get_port_numbers(dev, ports, (int)sizeof(ports));
        return n == (int)s->n_ports && memcmp(ports, s->ports, s->n_ports) == 0;
}

/*
 * The iSerial string of dev into out (cap > 1): "" when the device has none. The device is
 * opened for the control transfer (libusb's string request has its own finite timeout) and
 * closed again; nothing is claimed. Returns 0 or a libusb error.
 */
static int usb_serial(libusb_device *dev, const struct libusb_device_descriptor *dd, char *out,
                      size_t cap)
{
        libusb_device_handle *h = NULL;
        int n;

        out[0] = '\0';
        if (dd->iSerialNumber == 0)
                return 0;
        n = libusb_open(dev, &h);
        if (n < 0)
                return n;
        n = libusb_get_string_descriptor_ascii(h, dd->iSerialNumber, (unsigned char *)out,
                                               cap > INT32_MAX ? INT32_MAX : (int)cap);
        libusb_close(h);
        if (n < 0) {
                out[0] = '\0';
                return n;
        }
        if ((size_t)n >= cap)
                n = (int)cap - 1;
        out[n] = '\0';
        /* hostile bytes end up in messages: libusb already turned non-ASCII into '?' */
        for (int i = 0; i < n; i++)
                if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7E)
                        out[i] = '?';
        return 0;
}

/* Append "'SERIAL' at usb:POS" (or "no serial at usb:POS", or "usb:POS" when the serial was not
 * read) to a bounded, comma-separated list. */
static void list_add(char *list, size_t cap, unsigned *n, const char *serial, int has_serial,
                     const char *pos)
{
        size_t k = strlen(list);

        (*n)++;
        if (*n > USB_LIST_MAX) {
                if (*n == USB_LIST_MAX + 1)
                        (void)kiln_snprintf(list + k, cap - k, ", ...");
                return;
        }
        if (has_serial && serial[0] != '\0')
                (void)kiln_snprintf(list + k, cap - k, "%s'%s' at usb:%s", k > 0 ? ", " : "",
                                    serial, pos);
        else if (has_serial)
                (void)kiln_snprintf(list + k, cap - k, "%sno serial at usb:%s", k > 0 ? ", " : "",
                                    pos);
        else
                (void)kiln_snprintf(list + k, cap - k, "%susb:%s", k > 0 ? ", " : "", pos);
}

/*
 * The one device the selector names, referenced (*ret: libusb_unref_device). KILN_E_PORT_OPEN
 * when none or several match, with a one-line list of what is attached. Devices are opened (not
 * claimed) only to read an iSerial: when the selector names a serial, or to tell several
 * matching devices apart in the message.
 */
static int usb_find(struct usbt *u, libusb_device **ret)
{
        const struct proto_usb_spec *s = &u->spec;
        libusb_device **devs = NULL, *found = NULL;
        char matches[200] = "", others[200] = "", pos[USB_POS_MAX];
        unsigned n_match = 0, n_other = 0, n_unreadable = 0;
        int unreadable_err = 0, list_serials, r;
        ssize_t n;

        n = libusb_get_device_list(u->ctx, &devs);
        if (n < 0) {
                r = usb_err(u, "device enumeration", (int)n);
                goto out;
        }
        /* without a serial to look for, serials are read only to name several candidates */
        list_serials = s->serial[0] != '\0';
        if (!s->by_path && !list_serials) {
                unsigned k = 0;

                for (ssize_t i = 0; i < n; i++) {
                        struct libusb_device_descriptor dd;

                        if (libusb_get_device_descriptor(devs[i], &dd) == 0 &&
                            dd.idVendor == s->vid && dd.idProduct == s->pid)
                                k++;
                }
                list_serials = k > 1;
        }
        for (ssize_t i = 0; i < n; i++) {
                struct libusb_device_descriptor dd;
                char serial[PROTO_USB_SERIAL_MAX + 1] = "";
                int has_serial = 0;

                if (libusb_get_device_descriptor(devs[i], &dd) < 0)
                        continue;
                usb_position(devs[i], pos, sizeof(pos));
                if (s->by_path) {
                        if (!usb_at_path(devs[i], s))
                                continue;
                } else {
                        if (dd.idVendor != s->vid || dd.idProduct != s->pid)
                                continue;
                        r = list_serials ? usb_serial(devs[i], &dd, serial, sizeof(serial)) : 0;
                        if (r < 0) {
                                n_unreadable++;
                                unreadable_err = r;
                                if (s->serial[0] != '\0')
                                        continue;
                        } else {
                                has_serial = list_serials;
                        }
                        if (s->serial[0] != '\0' && strcmp(serial, s->serial) != 0) {
                                list_add(others, sizeof(others), &n_other, serial, has_serial, pos);
                                continue;
                        }
                }
                list_add(matches, sizeof(matches), &n_match, serial, has_serial, pos);
                if (found == NULL)
                        found = libusb_ref_device(devs[i]);
        }

        if (n_match == 1) {
                *ret = found;
                found = NULL;
                r = KILN_OK;
        } else if (n_match > 1 && s->by_path) {
                /* cannot happen on a real bus; a broken sysfs could still say so */
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': %u USB devices report this position", u->name,
                              n_match);
        } else if (n_match > 1 && s->serial[0] != '\0') {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': %u USB devices %04x:%04x have serial '%s' "
                              "(%s); name one by position, usb:BUS-PORT[.PORT...]",
                              u->name, n_match, s->vid, s->pid, s->serial, matches);
        } else if (n_match > 1) {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': %u USB devices %04x:%04x are attached "
                              "(%s); name one with usb:%04x:%04x:SERIAL or by position, "
                              "usb:BUS-PORT[.PORT...]",
                              u->name, n_match, s->vid, s->pid, matches, s->vid, s->pid);
        } else if (s->by_path) {
                r = kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': no USB device at usb:%s",
                              u->name, spec_position(s, pos, sizeof(pos)));
        } else if (n_unreadable > 0) {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': no USB device %04x:%04x with serial '%s'; "
                              "%u with that id could not be asked for theirs (%s: see the udev "
                              "rule in docs/usb.md)%s%s",
                              u->name, s->vid, s->pid, s->serial, n_unreadable,
                              libusb_error_name(unreadable_err), n_other > 0 ? "; others: " : "",
                              others);
        } else if (n_other > 0) {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': no USB device %04x:%04x with serial '%s' "
                              "(attached with that id: %s)",
                              u->name, s->vid, s->pid, s->serial, others);
        } else {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': no USB device %04x:%04x is attached", u->name,
                              s->vid, s->pid);
        }
out:
        if (found != NULL)
                libusb_unref_device(found);
        if (devs != NULL)
                libusb_free_device_list(devs, 1);
        return r;
}

struct usb_iface {
        int number;
        int alt;
        uint8_t ep_in;
        uint8_t ep_out;
        uint16_t mps_in;
};

/* The first vendor-class interface with exactly one bulk IN and one bulk OUT endpoint. */
static int usb_pick_iface(const struct libusb_config_descriptor *cfg, struct usb_iface *ret)
{
        for (uint8_t i = 0; i < cfg->bNumInterfaces; i++) {
                const struct libusb_interface *itf = &cfg->interface[i];

                for (int a = 0; a < itf->num_altsetting; a++) {
                        const struct libusb_interface_descriptor *d = &itf->altsetting[a];
                        struct usb_iface f;
                        unsigned n_in = 0, n_out = 0;

                        if (d->bInterfaceClass != LIBUSB_CLASS_VENDOR_SPEC)
                                continue;
                        memset(&f, 0, sizeof(f));
                        for (uint8_t e = 0; e < d->bNumEndpoints; e++) {
                                const struct libusb_endpoint_descriptor *ep = &d->endpoint[e];

                                if ((ep->bmAttributes & LIBUSB_TRANSFER_TYPE_MASK) !=
                                    LIBUSB_TRANSFER_TYPE_BULK)
                                        continue;
                                if (ep->bEndpointAddress & LIBUSB_ENDPOINT_IN) {
                                        n_in++;
                                        f.ep_in = ep->bEndpointAddress;
                                        f.mps_in = ep->wMaxPacketSize & 0x7FFu;
                                } else {
                                        n_out++;
                                        f.ep_out = ep->bEndpointAddress;
                                }
                        }
                        if (n_in != 1 || n_out != 1 || f.mps_in == 0)
                                continue;
                        f.number = d->bInterfaceNumber;
                        f.alt = d->bAlternateSetting;
                        *ret = f;
                        return 1;
                }
        }
        return 0;
}

static void usb_detach(struct usbt *u)
{
        if (u->h == NULL)
                return;
        /* fails harmlessly when the device is gone; the kernel releases it on close anyway */
        (void)libusb_release_interface(u->h, u->iface);
        libusb_close(u->h);
        u->h = NULL;
}

/* Open dev, claim its vendor interface and find the bulk endpoints. */
static int usb_attach(struct usbt *u, libusb_device *dev)
{
        struct libusb_config_descriptor *cfg = NULL;
        libusb_device_handle *h = NULL;
        struct usb_iface f;
        char pos[USB_POS_MAX];
        int lr, r;

        usb_position(dev, pos, sizeof(pos));
        lr = libusb_get_active_config_descriptor(dev, &cfg);
        if (lr < 0) {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': the device at usb:%s has "
                              "no active configuration (%s)",
                              u->name, pos, libusb_error_name(lr));
                goto out;
        }
        if (!usb_pick_iface(cfg, &f)) {
                r = kiln_fail(KILN_E_PORT_OPEN,
                              "cannot open port '%s': the device at usb:%s has no vendor-class "
                              "interface with one bulk IN and one bulk OUT endpoint",
                              u->name, pos);
                goto out;
        }
        lr = libusb_open(dev, &h);
        if (lr < 0) {
                if (lr == LIBUSB_ERROR_ACCESS)
                        r = kiln_fail(KILN_E_PORT_OPEN,
                                      "cannot open port '%s': permission denied on the device at "
                                      "usb:%s (%s): install the udev rule from docs/usb.md",
                                      u->name, pos, libusb_error_name(lr));
                else if (lr == LIBUSB_ERROR_NO_DEVICE || lr == LIBUSB_ERROR_NOT_FOUND)
                        r = kiln_fail(KILN_E_PORT_OPEN,
                                      "cannot open port '%s': the device at usb:%s left the bus "
                                      "(%s)",
                                      u->name, pos, libusb_error_name(lr));
                else
                        r = kiln_fail(KILN_E_USB, "cannot open port '%s': %s", u->name,
                                      libusb_error_name(lr));
                goto out;
        }
        /* vendor interfaces rarely have a kernel driver; detach one if something bound it */
        (void)libusb_set_auto_detach_kernel_driver(h, 1);
        lr = libusb_claim_interface(h, f.number);
        if (lr == LIBUSB_ERROR_BUSY) {
                r = kiln_fail(KILN_E_PORT_BUSY,
                              "cannot open port '%s': in use by another program (interface %d "
                              "of the device at usb:%s is claimed)",
                              u->name, f.number, pos);
                goto out;
        }
        if (lr < 0) {
                r = kiln_fail(lr == LIBUSB_ERROR_NO_DEVICE ? KILN_E_PORT_OPEN : KILN_E_USB,
                              "cannot open port '%s': claiming interface %d failed: %s", u->name,
                              f.number, libusb_error_name(lr));
                goto out;
        }
        if (f.alt != 0) {
                lr = libusb_set_interface_alt_setting(h, f.number, f.alt);
                if (lr < 0) {
                        (void)libusb_release_interface(h, f.number);
                        r = kiln_fail(KILN_E_USB,
                                      "cannot open port '%s': alternate setting %d of interface "
                                      "%d: %s",
                                      u->name, f.alt, f.number, libusb_error_name(lr));
                        goto out;
                }
        }
        u->h = h;
        h = NULL;
        u->iface = f.number;
        u->alt = f.alt;
        u->ep_in = f.ep_in;
        u->ep_out = f.ep_out;
        u->rx_req = USB_RX_BUF - USB_RX_BUF % f.mps_in;
        u->rx_off = u->rx_len = 0;
        (void)kiln_strlcpy(u->pos, pos, sizeof(u->pos));
        kiln_debug("port '%s': device at usb:%s, interface %d alt %d, bulk IN 0x%02x (%u-byte "
                   "packets), bulk OUT 0x%02x",
                   u->name, pos, f.number, f.alt, f.ep_in, (unsigned)f.mps_in, f.ep_out);
        r = KILN_OK;
out:
        if (h != NULL)
                libusb_close(h);
        libusb_free_config_descriptor(cfg);
        return r;
}

static int LIBUSB_CALL usb_arrived(libusb_context *ctx, libusb_device *dev,
                                   libusb_hotplug_event event, void *user)
{
        (void)ctx;
        (void)dev;
        (void)event;
        *(int *)user = 1;
        return 0; /* stay registered until deregistered */
}

/*
 * The device left the bus (LIBUSB_ERROR_NO_DEVICE). Close the handle, then look for a device the
 * selector names until reenum_ms have passed: a RESET makes a device re-enumerate at a new
 * address. KILN_OK when it is open again; KILN_E_DEVICE_GONE otherwise (KILN_E_PORT_BUSY or
 * KILN_E_USB when a matching device came back but cannot be used), after which every call fails
 * at once.
 */
static int usb_reacquire(struct usbt *u)
{
        uint64_t deadline = kiln_now_ms() + u->spec.reenum_ms;
        libusb_hotplug_callback_handle cb = 0;
        int have_cb = 0, arrived = 0, r = KILN_E_DEVICE_GONE;
        char was[USB_POS_MAX], last[200] = "";

        (void)kiln_strlcpy(was, u->pos, sizeof(was));
        usb_detach(u);
        u->rx_off = u->rx_len = 0;
        if (u->spec.reenum_ms > 0 && libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG) &&
            libusb_hotplug_register_callback(
                u->ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED, 0,
                u->spec.by_path ? LIBUSB_HOTPLUG_MATCH_ANY : u->spec.vid,
                u->spec.by_path ? LIBUSB_HOTPLUG_MATCH_ANY : u->spec.pid, LIBUSB_HOTPLUG_MATCH_ANY,
                usb_arrived, &arrived, &cb) == LIBUSB_SUCCESS)
                have_cb = 1;
        while (u->spec.reenum_ms > 0) {
                libusb_device *dev = NULL;
                struct timeval tv;
                int left;

                /* each look records why it failed; only the last one matters, so the detail is
                 * cleared first (this runs inside one read or write of the caller) */
                arrived = 0;
                kiln_err_reset();
                r = usb_find(u, &dev);
                if (r == KILN_OK) {
                        r = usb_attach(u, dev);
                        libusb_unref_device(dev);
                        if (r == KILN_OK) {
                                kiln_debug("port '%s': device back at usb:%s", u->name, u->pos);
                                goto out;
                        }
                }
                (void)kiln_strlcpy(last, kiln_err_detail(), sizeof(last));
                left = proto_ms_left(deadline);
                if (left == 0)
                        break;
                if ((unsigned)left > USB_REENUM_POLL_MS)
                        left = USB_REENUM_POLL_MS;
                tv.tv_sec = left / 1000;
                tv.tv_usec = (left % 1000) * 1000;
                /* returns on a hotplug arrival (or any event), else after `left` ms */
                (void)libusb_handle_events_timeout_completed(u->ctx, &tv, &arrived);
        }
        /* a matching device is back but cannot be used: that is the error to see */
        if (r == KILN_E_PORT_BUSY || r == KILN_E_USB)
                goto gone;
        kiln_err_reset();
        if (u->spec.reenum_ms == 0)
                r = kiln_fail(KILN_E_DEVICE_GONE,
                              "device on '%s' disconnected (LIBUSB_ERROR_NO_DEVICE at usb:%s)",
                              u->name, was);
        else
                r = kiln_fail(KILN_E_DEVICE_GONE,
                              "device on '%s' disconnected (LIBUSB_ERROR_NO_DEVICE at usb:%s) and "
                              "did not come back within %u ms%s%s",
                              u->name, was, u->spec.reenum_ms, last[0] ? "; last look: " : "",
                              last);
gone:
        u->gone = 1;
out:
        if (have_cb)
                libusb_hotplug_deregister_callback(u->ctx, cb);
        return r;
}

/* A stalled endpoint: clear the halt so the next transfer can work, report KILN_E_USB. */
static int usb_stalled(struct usbt *u, uint8_t ep)
{
        int lr = libusb_clear_halt(u->h, ep);

        return kiln_fail(KILN_E_USB,
                         "bulk %s endpoint 0x%02x on '%s' stalled (LIBUSB_ERROR_PIPE); %s%s",
                         (ep & LIBUSB_ENDPOINT_IN) ? "IN" : "OUT", ep, u->name,
                         lr == 0 ? "halt cleared" : "clearing the halt failed: ",
                         lr == 0 ? "" : libusb_error_name(lr));
}

/* libusb timeout of the next transfer: the time left, at most one slice, and never 0 (which means
 * "wait forever" to libusb). */
static unsigned usb_timeout(uint64_t deadline)
{
        int left = proto_ms_left(deadline);

        if (left <= 0)
                return 1u;
        return (unsigned)left < USB_XFER_SLICE_MS ? (unsigned)left : USB_XFER_SLICE_MS;
}

/* An error met together with data: the data went out first, now the error (or the device back). */
static int usb_take_pending(struct usbt *u)
{
        int lr = u->pending;

        u->pending = 0;
        if (lr == LIBUSB_ERROR_NO_DEVICE)
                return usb_reacquire(u);
        if (lr == LIBUSB_ERROR_PIPE)
                return kiln_fail(KILN_E_USB,
                                 "bulk IN endpoint 0x%02x on '%s' stalled "
                                 "(LIBUSB_ERROR_PIPE)",
                                 u->ep_in, u->name);
        return usb_err(u, "read", lr);
}

static size_t usb_copy_out(struct usbt *u, uint8_t *buf, size_t n)
{
        size_t k = u->rx_len - u->rx_off;

        if (k > n)
                k = n;
        memcpy(buf, u->rx + u->rx_off, k);
        u->rx_off += k;
        if (u->rx_off == u->rx_len)
                u->rx_off = u->rx_len = 0;
        return k;
}

static int usb_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct usbt *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        int r;

        if (u->rx_len > u->rx_off)
                return (int)usb_copy_out(u, buf, n);
        if (u->gone)
                return kiln_fail(KILN_E_DEVICE_GONE, "device on '%s' is gone", u->name);
        if (u->pending != 0) {
                r = usb_take_pending(u);
                if (r < 0)
                        return r;
        }
        for (;;) {
                int got = 0, lr;

                lr = libusb_bulk_transfer(u->h, u->ep_in, u->rx, (int)u->rx_req, &got,
                                          usb_timeout(deadline));
                if (got > 0) {
                        /* what arrived is delivered; an error that came with it waits its turn */
                        u->rx_off = 0;
                        u->rx_len = (size_t)got;
                        if (lr != 0 && lr != LIBUSB_ERROR_TIMEOUT)
                                u->pending = lr;
                        if (lr == LIBUSB_ERROR_PIPE)
                                (void)libusb_clear_halt(u->h, u->ep_in);
                        return (int)usb_copy_out(u, buf, n);
                }
                switch (lr) {
                case 0:                        /* a zero-length packet: nothing to hand on */
                case LIBUSB_ERROR_INTERRUPTED: /* a signal: go on until the deadline */
                case LIBUSB_ERROR_TIMEOUT:     /* one slice passed: the deadline decides */
                        break;
                case LIBUSB_ERROR_NO_DEVICE:
                        r = usb_reacquire(u);
                        if (r < 0)
                                return r;
                        break;
                case LIBUSB_ERROR_PIPE:
                        return usb_stalled(u, u->ep_in);
                case LIBUSB_ERROR_OVERFLOW:
                        return kiln_fail(KILN_E_USB,
                                         "bulk IN endpoint 0x%02x on '%s' sent more than asked "
                                         "for (LIBUSB_ERROR_OVERFLOW: babble)",
                                         u->ep_in, u->name);
                default:
                        return usb_err(u, "read", lr);
                }
                if (proto_ms_left(deadline) == 0)
                        return KILN_E_TIMEOUT;
        }
}

static int usb_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct usbt *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        size_t off = 0;
        int r;

        if (u->gone)
                return kiln_fail(KILN_E_DEVICE_GONE, "device on '%s' is gone", u->name);
        if (u->pending != 0) {
                r = usb_take_pending(u);
                if (r < 0)
                        return r;
        }
        while (off < n) {
                size_t chunk = n - off < USB_TX_CHUNK ? n - off : USB_TX_CHUNK;
                int put = 0, lr;

                /* libusb takes a non-const buffer for both directions; OUT only reads it */
                lr = libusb_bulk_transfer(u->h, u->ep_out, (unsigned char *)(uintptr_t)(buf + off),
                                          (int)chunk, &put, usb_timeout(deadline));
                if (put > 0)
                        off += (size_t)put;
                switch (lr) {
                case 0:
                case LIBUSB_ERROR_INTERRUPTED:
                        break;
                case LIBUSB_ERROR_TIMEOUT:
                        /* the device took `put` bytes: the rest goes on while time is left */
                        break;
                case LIBUSB_ERROR_NO_DEVICE:
                        r = usb_reacquire(u);
                        if (r < 0)
                                return r;
                        /* a device that rebooted never saw the start of this frame: the caller
                         * sends it again whole (KILN_E_TIMEOUT: "the line did not take it") */
                        return KILN_E_TIMEOUT;
                case LIBUSB_ERROR_PIPE:
                        return usb_stalled(u, u->ep_out);
                default:
                        return usb_err(u, "write", lr);
                }
                if (off < n && proto_ms_left(deadline) == 0)
                        return KILN_E_TIMEOUT;
        }
        return KILN_OK;
}

static void usb_close(void *ctx)
{
        struct usbt *u = ctx;

        if (u == NULL)
                return;
        usb_detach(u);
        if (u->ctx != NULL)
                libusb_exit(u->ctx);
        kiln_free(u);
}

static const struct proto_transport_ops usb_ops = {
    .read = usb_read,
    .write = usb_write,
    .close = usb_close,
    .now_ms = NULL,
};

int proto_usb_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        struct usbt *u = NULL;
        libusb_device *dev = NULL;
        int lr, r;

        (void)rest;
        u = kiln_calloc(1, sizeof(*u));
        if (u == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "cannot open port '%s': out of memory", spec);
                goto out;
        }
        r = proto_usb_spec_parse(spec, &u->spec);
        if (r < 0)
                goto out;
        (void)kiln_strlcpy(u->name, spec, sizeof(u->name));
        lr = libusb_init(&u->ctx);
        if (lr < 0) {
                u->ctx = NULL;
                r = kiln_fail(KILN_E_USB, "cannot open port '%s': libusb cannot start: %s", spec,
                              libusb_error_name(lr));
                goto out;
        }
        r = usb_find(u, &dev);
        if (r < 0)
                goto out;
        r = usb_attach(u, dev);
        if (r < 0)
                goto out;
        r = proto_transport_new(&usb_ops, u, spec, 0, ret);
        if (r < 0)
                goto out;
        u = NULL;
out:
        if (dev != NULL)
                libusb_unref_device(dev);
        usb_close(u);
        return r;
}
