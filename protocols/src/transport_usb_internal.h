/*
 * USB transport internals: the port-specification parser (tests use it directly) and the open
 * function transport.c registers as the built-in scheme "usb". docs/usb.md is the user guide.
 */
#ifndef KILN_TRANSPORT_USB_INTERNAL_H
#define KILN_TRANSPORT_USB_INTERNAL_H

#include <stdint.h>

#include "kiln/transport.h"

/* Longest iSerial string: a string descriptor holds at most (255 - 2) / 2 UTF-16 characters. */
#define PROTO_USB_SERIAL_MAX 126u
/* Hub ports in a bus-port path: USB allows at most 7 tiers below the root hub (libusb's limit). */
#define PROTO_USB_PORTS_MAX 7u
/* How long a device that left the bus is looked for again (a RESET makes it re-enumerate). */
#define PROTO_USB_REENUM_MS_DEFAULT 3000u
#define PROTO_USB_REENUM_MS_MAX 60000u

struct proto_usb_spec {
        int by_path; /* 1: bus and hub ports; 0: vendor and product id, optional serial */
        uint16_t vid;
        uint16_t pid;
        char serial[PROTO_USB_SERIAL_MAX + 1]; /* "" matches any device with vid:pid */
        uint8_t bus;                           /* 1..255 */
        uint8_t ports[PROTO_USB_PORTS_MAX];    /* each 1..255, root hub port first */
        unsigned n_ports;                      /* 1..PROTO_USB_PORTS_MAX */
        unsigned reenum_ms;                    /* 0..PROTO_USB_REENUM_MS_MAX; 0: never wait */
};

/*
 * Expected format (the whole specification, scheme included):
 *
 *     usb:VID:PID[:SERIAL][?OPTS]      VID, PID: exactly 4 hex digits; SERIAL: 1..126 printable
 *                                      ASCII characters except '?' (the iSerial string, exact)
 *     usb:BUS-PORT[.PORT...][?OPTS]    BUS 1..255, then 1..7 hub ports 1..255 (decimal)
 *
 * OPTS is "key=value" joined by '&', each key at most once: reenum_ms (0..60000, default 3000).
 * KILN_E_PORT_SPEC with one line of detail on anything else. Does not touch any device.
 */
int proto_usb_spec_parse(const char *spec, struct proto_usb_spec *ret);

/* Scheme "usb": spec is the whole specification, rest the part after "usb:". */
int proto_usb_open(const char *spec, const char *rest, struct proto_transport **ret);

#endif
