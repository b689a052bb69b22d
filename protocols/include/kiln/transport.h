/*
 * Transports: one ops table for every byte stream a station talks to a device over (UART, socket,
 * USB, a test's in-memory pipe, a fuzz transport). Every call has a finite timeout.
 *
 * Port specifications (proto_transport_open):
 *
 *     /dev/ttyUSB0                          UART, 115200 8N1, no flow control (any absolute
 *                                           path without a scheme is a UART)
 *     uart:/dev/ttyUSB0?baud=921600&parity=even&flow=rtscts&data=8&stop=1
 *     unix:/run/kiln/dut0.sock              local stream socket (unix:@name: abstract namespace)
 *     usb:1209:4b4e[:SERIAL][?reenum_ms=N]  USB vendor-class bulk pair through libusb (docs/usb.md)
 *     usb:1-2.1[?reenum_ms=N]               the same, chosen by bus and hub port path
 *
 * A UART is opened exclusively (a second opener gets KILN_E_PORT_BUSY), in raw mode, and configured
 * as asked. Serial ports go through libserialport; pseudo-terminals (the simulator's, or any tty
 * that libserialport cannot enumerate) through POSIX termios with the same semantics. Symbolic
 * links such as /dev/serial/by-id/... are resolved first. flow=xonxoff makes the line discipline or
 * adapter eat 0x11/0x13, which COBS frames contain: use it only with adapters that handle it
 * transparently.
 *
 * More schemes plug in with proto_transport_scheme_register() without touching callers. A missing, busy or wrong port gives
 * one line of detail naming the port: "cannot open port '/dev/ttyUSB9': No such file or directory".
 */
#ifndef KILN_TRANSPORT_H
#define KILN_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/limits.h"

struct proto_transport;

struct proto_transport_ops {
        /* Read up to n (> 0) bytes, waiting at most timeout_ms for the first one (0: do not wait).
         * Returns the number of bytes read (> 0), KILN_E_TIMEOUT when none came in time (no detail
         * recorded: it is an expected outcome), KILN_E_DEVICE_GONE on hangup/unplug/EOF, or another
         * negative code with detail. */
        int (*read)(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms);
        /* Write all n bytes within timeout_ms: KILN_OK, KILN_E_TIMEOUT (some bytes may have gone),
         * KILN_E_DEVICE_GONE, or another negative code with detail. */
        int (*write)(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms);
        /* Release ctx. Called once, by proto_transport_free(). May be NULL. */
        void (*close)(void *ctx);
        /* Optional clock (monotonic ms) the session measures deadlines with, so a simulated or
         * fuzz transport can run on virtual time; NULL means the system monotonic clock. */
        uint64_t (*now_ms)(void *ctx);
};

/*
 * Wrap caller-provided ops. name (1..KILN_PORT_SPEC_MAX bytes) appears in error details; baud is
 * the line rate the session budgets wire time for (0 = unpaced). On success the transport owns ctx
 * and closes it in proto_transport_free(); on failure the caller keeps it.
 */
int proto_transport_new(const struct proto_transport_ops *ops, void *ctx, const char *name,
                        uint32_t baud, struct proto_transport **ret);

/* Open a transport from a port specification (see above). */
int proto_transport_open(const char *spec, struct proto_transport **ret);

/* Close and free. NULL-safe. */
void proto_transport_free(struct proto_transport *t);

int proto_transport_read(struct proto_transport *t, uint8_t *buf, size_t n, unsigned timeout_ms);
int proto_transport_write(struct proto_transport *t, const uint8_t *buf, size_t n,
                          unsigned timeout_ms);
/* Line rate in bits per second, 0 when unpaced (sockets, in-memory). */
uint32_t proto_transport_baud(const struct proto_transport *t);
/* The specification or name it was opened with. Never NULL. */
const char *proto_transport_name(const struct proto_transport *t);
/* The transport's clock (its now_ms op, else the system monotonic clock), in ms. */
uint64_t proto_transport_now_ms(const struct proto_transport *t);

/*
 * Scheme registry. open gets the whole specification (for messages) and the part after "scheme:".
 * The caller keeps *scheme alive (static storage) for the life of the process; the registry links
 * it. Scheme names are 1..15 bytes of [a-z0-9]; registering a taken name gives KILN_E_EXISTS. Built
 * in: "uart", "unix", "usb". Thread-safe.
 */
typedef int (*proto_transport_open_fn)(const char *spec, const char *rest,
                                       struct proto_transport **ret);

struct proto_transport_scheme {
        const char *name;
        proto_transport_open_fn open;
        struct proto_transport_scheme *next; /* registry link, set by register */
};

int proto_transport_scheme_register(struct proto_transport_scheme *scheme);

/* --- UART specification --- */

enum proto_parity { PROTO_PARITY_NONE, PROTO_PARITY_EVEN, PROTO_PARITY_ODD, PROTO_PARITY_MAX };

enum proto_flow { PROTO_FLOW_NONE, PROTO_FLOW_RTSCTS, PROTO_FLOW_XONXOFF, PROTO_FLOW_MAX };

#define PROTO_UART_BAUD_DEFAULT 115200u
#define PROTO_UART_BAUD_MAX 4000000u

struct proto_uart_config {
        char path[KILN_PORT_SPEC_MAX + 1];
        uint32_t baud;     /* 1..PROTO_UART_BAUD_MAX */
        uint8_t data_bits; /* 5..8 */
        uint8_t stop_bits; /* 1..2 */
        enum proto_parity parity;
        enum proto_flow flow;
};

/*
 * Parse "/dev/X[?opts]" or "uart:/path[?opts]" with opts "key=value" joined by '&', keys baud,
 * parity (none|even|odd), flow (none|rtscts|xonxoff), data (5..8), stop (1|2), each at most once.
 * KILN_E_PORT_SPEC with detail on anything else. Does not touch the device.
 */
int proto_uart_spec_parse(const char *spec, struct proto_uart_config *ret);

#endif
