/*
 * usbdev: simulated Kiln DUTs on an emulated USB bus, for testing the libusb transport and the
 * real `kiln` binary without hardware (see docs/usb.md, "Testing without hardware").
 *
 * A umockdev testbed holds a root hub, hubs and vendor-class devices (VID:PID 1209:4b4e by
 * default: pid.codes' test range). Each device is a live ioctl handler: it answers usbdevfs
 * requests the way the kernel would (capabilities, claim, control and bulk URBs, reap, discard,
 * halt), carries bulk OUT data into the real device agent on a simulated chip (kiln_sim), which
 * runs on the device's own thread, and returns what the agent sends as bulk IN data. A RESET
 * makes the device re-enumerate at a new address, as firmware does on reboot.
 *
 * The process must run under the umockdev preload library (usbdev_preload_reexec() arranges it):
 * libudev in this process then sees the testbed, which umockdev needs to send uevents, and every
 * child started from here (the kiln binary) inherits LD_PRELOAD and UMOCKDEV_DIR.
 */
#ifndef KILN_TESTS_USBDEV_H
#define KILN_TESTS_USBDEV_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/sim.h"

#define USBDEV_VID 0x1209u /* the example id of Kiln's docs and tests (docs/usb.md); a product */
#define USBDEV_PID 0x4b4eu /* uses its own VID:PID ("KN") */
#define USBDEV_PORTS_MAX 7u
#define USBDEV_SERIAL_MAX 64u
#define USBDEV_MPS 512u /* bulk wMaxPacketSize (high speed) */

struct usbdev_bed;
struct usbdev;

/* What the device does wrong, once the trigger request (fault_type, fault_nth) has arrived. */
enum usbdev_fault {
        USBDEV_FAULT_NONE,
        USBDEV_FAULT_STALL,    /* the bulk IN endpoint halts; the response is lost; a CLEAR_HALT
                                  makes it work again */
        USBDEV_FAULT_SILENT,   /* the device stops answering: it swallows what the host sends and
                                  never completes an IN transfer again */
        USBDEV_FAULT_TRUNCATE, /* the first half of the response, then silence */
        USBDEV_FAULT_UNPLUG,   /* part of the response sits in the host's pending IN transfer,
                                  then the device is unplugged: pending URBs end with ENODEV, a
                                  "remove" uevent, every later request fails with ENODEV */
        USBDEV_FAULT_GARBAGE,  /* every response from then on is replaced by garbage frames */
        USBDEV_FAULT_MAX
};

struct usbdev_opts {
        uint16_t vid, pid;
        const char *serial;              /* iSerial string; NULL: the device has none */
        uint8_t ports[USBDEV_PORTS_MAX]; /* position on bus 1, root hub port first */
        unsigned n_ports;                /* 1..USBDEV_PORTS_MAX */
        const char *uid_hex;             /* chip UID; NULL: 16 random bytes */
        const char *product;             /* NULL: smartplug-a1 */
        uint16_t hw_rev;                 /* 0: 2 */
        const char *fw_version;          /* NULL: 1.0.0 */
        unsigned in_chunk;               /* > 0: at most this many bytes per IN transfer */
        int no_zlp;                      /* IN transfers end only when full (data that does not
                                            fill one is returned when the host gives up) */
        unsigned out_accept;             /* > 0: an OUT transfer takes at most this many bytes,
                                            then NAKs until the host cancels it */
        unsigned noise;                  /* > 0: a corrupt frame and this many junk bytes go
                                            before every response (the host must skip them) */
        enum usbdev_fault fault;
        uint8_t fault_type;           /* request type that fires it (KILN_MSG_*), 0: any */
        unsigned fault_nth;           /* occurrence of that request, 1-based (0 = 1) */
        unsigned boot_ms;             /* off the bus while rebooting after RESET (0: 50) */
        unsigned reap_backoff_max_ms; /* cap of the empty-reap back-off (0: 8) */
};

struct usbdev_stats {
        uint64_t bytes_out;    /* bulk OUT bytes the device took */
        uint64_t bytes_in;     /* bulk IN bytes the host reaped */
        uint64_t frames_rx;    /* valid frames the device agent received */
        uint64_t reaps_empty;  /* reap requests answered "nothing yet" */
        uint64_t reaps_parked; /* of those, answered after a back-off delay */
        unsigned opens;        /* usbdevfs clients that ever sent a request */
        unsigned claims;       /* successful interface claims */
        unsigned enumerations; /* times the device appeared on the bus */
        unsigned devnum;       /* current address */
        int present;           /* on the bus now */
        int fault_fired;
        uint8_t lifecycle; /* chip state */
        uint8_t debug_port;
        uint16_t key_present;
        int fuses_blank; /* every OTP bit still 0 */
};

/* Defaults: 1209:4b4e, no serial, port 1, random UID, the smart plug, no faults. */
void usbdev_opts_default(struct usbdev_opts *o);

/*
 * Re-execute the running program under the umockdev preload library (absolute path fixed at
 * build time) unless it already is, adding verify_asan_link_order=0 to ASAN_OPTIONS
 * (AddressSanitizer otherwise refuses to run behind the preload). Call first thing in main(). Exits
 * with status 1 and a message when the preload library is missing: a USB test must fail, not skip,
 * without it.
 */
void usbdev_preload_reexec(int argc, char **argv);

/* A testbed with the root hub of bus 1. Sets UMOCKDEV_DIR in this process. 0 or -1 (message on
 * stderr). */
int usbdev_bed_new(struct usbdev_bed **ret);
/* Removes every device, then the testbed. NULL-safe. */
void usbdev_bed_free(struct usbdev_bed *b);

/* Add a device (and the hubs on its path): it is on the bus when this returns. 0 or -1. */
int usbdev_add(struct usbdev_bed *b, const struct usbdev_opts *o, struct usbdev **ret);
/* Unplug and forget the device. NULL-safe. */
void usbdev_remove(struct usbdev *d);
/* Remove every device (what a failed test left behind). */
void usbdev_remove_all(struct usbdev_bed *b);
/* Unplug now (as USBDEV_FAULT_UNPLUG does, without a trigger). */
void usbdev_unplug(struct usbdev *d);
void usbdev_stats_get(struct usbdev *d, struct usbdev_stats *ret);
/* The chip UID as lowercase hex (what GET_INFO reports). */
const char *usbdev_uid_hex(const struct usbdev *d);
/* "1-1.4.2": bus and hub ports, as in usb:BUS-PORT[.PORT...]. */
const char *usbdev_position(const struct usbdev *d);

#endif
