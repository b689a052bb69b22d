/*
 * UART transport. Serial ports are opened and configured through libserialport; pseudo-terminals
 * (the simulator's) through POSIX termios, because libserialport 0.1.x refuses them: it enumerates
 * a port through /sys/class/tty/<name>, which a pty does not have, and its open needs modem-control
 * ioctls a pty does not implement. Both backends share one spec parser and the same semantics:
 * exclusive open, raw mode, poll() with a deadline on the port's descriptor for every read and
 * write (never a blocking call without timeout), hangup and EIO reported as KILN_E_DEVICE_GONE.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <libserialport.h>

#include "kiln/error.h"
#include "kiln/log.h"
#include "kiln/transport.h"
#include "kiln/util.h"
#include "transport_internal.h"

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

static int spec_number(const char *spec, const char *key, const char *val, uint32_t lo, uint32_t hi,
                       uint32_t *ret)
{
        char range[48];

        if (kiln_parse_u32(val, lo, hi, ret) == KILN_OK)
                return KILN_OK;
        (void)kiln_snprintf(range, sizeof(range), "%u..%u", lo, hi);
        return kiln_fail(KILN_E_PORT_SPEC,
                         "bad port specification '%s': %s '%s' is not a number in %s", spec, key,
                         val, range);
}

int proto_uart_spec_parse(const char *spec, struct proto_uart_config *ret)
{
        struct proto_uart_config c;
        const char *p, *q;
        unsigned seen = 0;
        size_t plen;

        if (spec == NULL || strnlen(spec, KILN_PORT_SPEC_MAX + 1) > KILN_PORT_SPEC_MAX)
                return kiln_fail(KILN_E_PORT_SPEC,
                                 "port specification missing or longer than %u bytes",
                                 KILN_PORT_SPEC_MAX);
        memset(&c, 0, sizeof(c));
        c.baud = PROTO_UART_BAUD_DEFAULT;
        c.data_bits = 8;
        c.stop_bits = 1;
        c.parity = PROTO_PARITY_NONE;
        c.flow = PROTO_FLOW_NONE;

        p = spec;
        if (strncmp(p, "uart:", 5) == 0)
                p += 5;
        if (p[0] != '/')
                return spec_fail(spec, "the port must be an absolute path");
        q = strchr(p, '?');
        plen = q == NULL ? strlen(p) : (size_t)(q - p);
        if (plen < 2)
                return spec_fail(spec, "no device path");
        memcpy(c.path, p, plen);
        c.path[plen] = '\0';

        /* options: key=value joined by '&', each key at most once */
        while (q != NULL) {
                char key[16], val[64];
                const char *opt = q + 1, *end = strchr(opt, '&'), *eq;
                size_t olen = end == NULL ? strlen(opt) : (size_t)(end - opt);
                size_t klen, vlen;
                unsigned bit;
                uint32_t v;
                int r;

                q = end;
                eq = memchr(opt, '=', olen);
                if (olen == 0)
                        return spec_fail(spec, "empty option");
                klen = eq == NULL ? olen : (size_t)(eq - opt);
                vlen = eq == NULL ? 0 : olen - klen - 1;
                if (klen >= sizeof(key) || vlen >= sizeof(val)) {
                        return kiln_fail(KILN_E_PORT_SPEC,
                                         "bad port specification '%s': option '%.*s' too long",
                                         spec, (int)olen, opt);
                }
                memcpy(key, opt, klen);
                key[klen] = '\0';
                if (vlen > 0)
                        memcpy(val, eq + 1, vlen);
                val[vlen] = '\0';
                if (eq == NULL || vlen == 0)
                        return spec_fail(spec, "option '%s' has no value", key);

                if (strcmp(key, "baud") == 0)
                        bit = 1;
                else if (strcmp(key, "parity") == 0)
                        bit = 2;
                else if (strcmp(key, "flow") == 0)
                        bit = 4;
                else if (strcmp(key, "data") == 0)
                        bit = 8;
                else if (strcmp(key, "stop") == 0)
                        bit = 16;
                else
                        return spec_fail(
                            spec, "unknown option '%s' (baud, parity, flow, data, stop)", key);
                if (seen & bit)
                        return spec_fail(spec, "option '%s' given twice", key);
                seen |= bit;

                switch (bit) {
                case 1:
                        r = spec_number(spec, key, val, 1, PROTO_UART_BAUD_MAX, &v);
                        if (r < 0)
                                return r;
                        c.baud = v;
                        break;
                case 2:
                        if (strcmp(val, "none") == 0)
                                c.parity = PROTO_PARITY_NONE;
                        else if (strcmp(val, "even") == 0)
                                c.parity = PROTO_PARITY_EVEN;
                        else if (strcmp(val, "odd") == 0)
                                c.parity = PROTO_PARITY_ODD;
                        else
                                return spec_fail(spec, "unknown parity '%s' (none, even, odd)",
                                                 val);
                        break;
                case 4:
                        if (strcmp(val, "none") == 0)
                                c.flow = PROTO_FLOW_NONE;
                        else if (strcmp(val, "rtscts") == 0)
                                c.flow = PROTO_FLOW_RTSCTS;
                        else if (strcmp(val, "xonxoff") == 0)
                                c.flow = PROTO_FLOW_XONXOFF;
                        else
                                return spec_fail(
                                    spec, "unknown flow control '%s' (none, rtscts, xonxoff)", val);
                        break;
                case 8:
                        r = spec_number(spec, key, val, 5, 8, &v);
                        if (r < 0)
                                return r;
                        c.data_bits = (uint8_t)v;
                        break;
                default:
                        r = spec_number(spec, key, val, 1, 2, &v);
                        if (r < 0)
                                return r;
                        c.stop_bits = (uint8_t)v;
                        break;
                }
        }
        *ret = c;
        return KILN_OK;
}

/* --- Port --- */

struct uart {
        int fd;             /* the port's descriptor (owned by sp when sp != NULL) */
        struct sp_port *sp; /* NULL: termios backend */
        char name[KILN_PORT_SPEC_MAX + 1];
};

static void uart_close(void *ctx)
{
        struct uart *u = ctx;

        if (u == NULL)
                return;
        if (u->fd >= 0)
                (void)ioctl(u->fd, TIOCNXCL);
        if (u->sp != NULL) {
                (void)sp_close(u->sp);
                sp_free_port(u->sp);
        } else if (u->fd >= 0) {
                (void)close(u->fd);
        }
        kiln_free(u);
}

/* >0 bytes, 0 nothing available, <0 -errno */
static long uart_sys_read(struct uart *u, uint8_t *buf, size_t n)
{
        if (u->sp != NULL) {
                enum sp_return r = sp_nonblocking_read(u->sp, buf, n);

                if (r >= 0)
                        return (long)r;
                return -(long)(sp_last_error_code() ? sp_last_error_code() : EIO);
        } else {
                ssize_t r = read(u->fd, buf, n);

                if (r > 0)
                        return (long)r;
                /* 0 with VMIN = VTIME = 0 is "no data"; a hangup shows as POLLHUP or EIO */
                if (r == 0)
                        return 0;
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return 0;
                return -(long)errno;
        }
}

static long uart_sys_write(struct uart *u, const uint8_t *buf, size_t n)
{
        if (u->sp != NULL) {
                enum sp_return r = sp_nonblocking_write(u->sp, buf, n);

                if (r >= 0)
                        return (long)r;
                return -(long)(sp_last_error_code() ? sp_last_error_code() : EIO);
        } else {
                ssize_t r = write(u->fd, buf, n);

                if (r >= 0)
                        return (long)r;
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return 0;
                return -(long)errno;
        }
}

static int uart_gone(struct uart *u, const char *what, int e)
{
        char eb[128];

        return kiln_fail(KILN_E_DEVICE_GONE, "device on '%s' disconnected (%s: %s)", u->name, what,
                         proto_errno_str(e, eb, sizeof(eb)));
}

static int uart_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct uart *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        char eb[128];

        for (;;) {
                short rev = 0;
                long got;
                int r = proto_fd_wait(u->fd, POLLIN, deadline, u->name, &rev);

                if (r < 0)
                        return r;
                if (r == 0)
                        return KILN_E_TIMEOUT;
                if (rev & POLLNVAL)
                        return kiln_fail(KILN_E_IO, "port '%s' descriptor is not open", u->name);
                got = uart_sys_read(u, buf, n);
                if (got > 0)
                        return (int)got;
                if (got < 0 && proto_errno_gone((int)-got))
                        return uart_gone(u, "read", (int)-got);
                if (got < 0)
                        return kiln_fail(KILN_E_IO, "read from '%s': %s", u->name,
                                         proto_errno_str((int)-got, eb, sizeof(eb)));
                if (rev & (POLLHUP | POLLERR))
                        return uart_gone(u, "hangup", EIO);
                /* readable but nothing there (a spurious wakeup): wait out the deadline */
        }
}

static int uart_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct uart *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        size_t off = 0;
        char eb[128];

        while (off < n) {
                short rev = 0;
                long put;
                int r = proto_fd_wait(u->fd, POLLOUT, deadline, u->name, &rev);

                if (r < 0)
                        return r;
                if (r == 0)
                        return KILN_E_TIMEOUT;
                if (rev & POLLNVAL)
                        return kiln_fail(KILN_E_IO, "port '%s' descriptor is not open", u->name);
                if (rev & (POLLHUP | POLLERR))
                        return uart_gone(u, "hangup", EIO);
                put = uart_sys_write(u, buf + off, n - off);
                if (put < 0 && proto_errno_gone((int)-put))
                        return uart_gone(u, "write", (int)-put);
                if (put < 0)
                        return kiln_fail(KILN_E_IO, "write to '%s': %s", u->name,
                                         proto_errno_str((int)-put, eb, sizeof(eb)));
                off += (size_t)put;
        }
        return KILN_OK;
}

static const struct proto_transport_ops uart_ops = {
    .read = uart_read,
    .write = uart_write,
    .close = uart_close,
    .now_ms = NULL,
};

/*
 * Exclusive use. flock() makes a second opener fail whoever it is (root ignores TIOCEXCL);
 * TIOCEXCL additionally keeps programs that do not flock (terminal emulators) from opening the
 * port.
 */
static int uart_lock(struct uart *u)
{
        char eb[128];

        if (flock(u->fd, LOCK_EX | LOCK_NB) != 0) {
                if (errno == EWOULDBLOCK)
                        return kiln_fail(KILN_E_PORT_BUSY,
                                         "cannot open port '%s': in use by another program",
                                         u->name);
                return kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': lock: %s", u->name,
                                 proto_errno_str(errno, eb, sizeof(eb)));
        }
        (void)ioctl(u->fd, TIOCEXCL);
        return KILN_OK;
}

static int open_errno(const char *name, int e)
{
        char eb[128];

        if (e == EBUSY)
                return kiln_fail(KILN_E_PORT_BUSY,
                                 "cannot open port '%s': in use by another program", name);
        return kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': %s", name,
                         proto_errno_str(e, eb, sizeof(eb)));
}

static const struct {
        uint32_t baud;
        speed_t speed;
} termios_speeds[] = {
    {50, B50},           {75, B75},           {110, B110},         {134, B134},
    {150, B150},         {200, B200},         {300, B300},         {600, B600},
    {1200, B1200},       {1800, B1800},       {2400, B2400},       {4800, B4800},
    {9600, B9600},       {19200, B19200},     {38400, B38400},     {57600, B57600},
    {115200, B115200},   {230400, B230400},   {460800, B460800},   {500000, B500000},
    {576000, B576000},   {921600, B921600},   {1000000, B1000000}, {1152000, B1152000},
    {1500000, B1500000}, {2000000, B2000000}, {2500000, B2500000}, {3000000, B3000000},
    {3500000, B3500000}, {4000000, B4000000},
};

static int termios_configure(struct uart *u, const struct proto_uart_config *c)
{
        struct termios tio;
        speed_t speed = 0;
        int found = 0;
        char eb[128];

        for (size_t i = 0; i < sizeof(termios_speeds) / sizeof(termios_speeds[0]); i++) {
                if (termios_speeds[i].baud == c->baud) {
                        speed = termios_speeds[i].speed;
                        found = 1;
                }
        }
        if (!found)
                return kiln_fail(KILN_E_PORT_CONFIG,
                                 "cannot configure port '%s': baud %u is not a standard rate",
                                 u->name, c->baud);
        if (tcgetattr(u->fd, &tio) != 0)
                return kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': not a serial port (%s)",
                                 u->name, proto_errno_str(errno, eb, sizeof(eb)));
        cfmakeraw(&tio);
        tio.c_cflag |= CLOCAL | CREAD;
        tio.c_cflag &= ~(tcflag_t)(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
        tio.c_cflag |= c->data_bits == 5   ? CS5
                       : c->data_bits == 6 ? CS6
                       : c->data_bits == 7 ? CS7
                                           : CS8;
        if (c->parity != PROTO_PARITY_NONE)
                tio.c_cflag |= PARENB | (c->parity == PROTO_PARITY_ODD ? PARODD : 0);
        if (c->stop_bits == 2)
                tio.c_cflag |= CSTOPB;
        tio.c_iflag &= ~(tcflag_t)(IXON | IXOFF | IXANY);
        if (c->flow == PROTO_FLOW_RTSCTS)
                tio.c_cflag |= CRTSCTS;
        else if (c->flow == PROTO_FLOW_XONXOFF)
                tio.c_iflag |= IXON | IXOFF;
        tio.c_cc[VMIN] = 0;
        tio.c_cc[VTIME] = 0;
        if (cfsetispeed(&tio, speed) != 0 || cfsetospeed(&tio, speed) != 0 ||
            tcsetattr(u->fd, TCSANOW, &tio) != 0)
                return kiln_fail(KILN_E_PORT_CONFIG, "cannot configure port '%s': %s", u->name,
                                 proto_errno_str(errno, eb, sizeof(eb)));
        /* tcsetattr succeeds when any change applied: check the rate took */
        if (tcgetattr(u->fd, &tio) != 0 || cfgetospeed(&tio) != speed)
                return kiln_fail(KILN_E_PORT_CONFIG, "cannot configure port '%s': baud %u refused",
                                 u->name, c->baud);
        (void)tcflush(u->fd, TCIFLUSH);
        return KILN_OK;
}

static int termios_open(struct uart *u, const char *path, const struct proto_uart_config *c)
{
        int r;

        u->fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
        if (u->fd < 0)
                return open_errno(u->name, errno);
        if (!isatty(u->fd))
                return kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': not a serial port",
                                 u->name);
        r = uart_lock(u);
        if (r < 0)
                return r;
        return termios_configure(u, c);
}

static int sp_fail(int code, const char *name, const char *what)
{
        char *msg = sp_last_error_message();
        int r = kiln_fail(code, "cannot %s port '%s': %s", what, name,
                          msg != NULL ? msg : "libserialport error");

        sp_free_error_message(msg);
        return r;
}

static int sp_configure(struct uart *u, const struct proto_uart_config *c)
{
        static const enum sp_parity parity[PROTO_PARITY_MAX] = {SP_PARITY_NONE, SP_PARITY_EVEN,
                                                                SP_PARITY_ODD};
        static const enum sp_flowcontrol flow[PROTO_FLOW_MAX] = {
            SP_FLOWCONTROL_NONE, SP_FLOWCONTROL_RTSCTS, SP_FLOWCONTROL_XONXOFF};
        struct sp_port_config *cfg = NULL;
        int r;

        if (sp_new_config(&cfg) != SP_OK) {
                r = sp_fail(KILN_E_NOMEM, u->name, "configure");
                goto out;
        }
        /* a new config changes nothing: set exactly what the spec says */
        if (c->baud > INT_MAX || sp_set_config_baudrate(cfg, (int)c->baud) != SP_OK ||
            sp_set_config_bits(cfg, c->data_bits) != SP_OK ||
            sp_set_config_parity(cfg, parity[c->parity]) != SP_OK ||
            sp_set_config_stopbits(cfg, c->stop_bits) != SP_OK ||
            sp_set_config_flowcontrol(cfg, flow[c->flow]) != SP_OK ||
            sp_set_config(u->sp, cfg) != SP_OK) {
                r = sp_fail(KILN_E_PORT_CONFIG, u->name, "configure");
                goto out;
        }
        (void)sp_flush(u->sp, SP_BUF_INPUT);
        r = KILN_OK;
out:
        sp_free_config(cfg);
        return r;
}

static int sp_backend_open(struct uart *u, struct sp_port *port, const struct proto_uart_config *c)
{
        int r;

        u->sp = port;
        if (sp_open(u->sp, SP_MODE_READ_WRITE) != SP_OK) {
                int e = sp_last_error_code();

                if (e == EBUSY)
                        return open_errno(u->name, e);
                return sp_fail(KILN_E_PORT_OPEN, u->name, "open");
        }
        if (sp_get_port_handle(u->sp, &u->fd) != SP_OK || u->fd < 0) {
                u->fd = -1;
                return sp_fail(KILN_E_PORT_OPEN, u->name, "open");
        }
        r = uart_lock(u);
        if (r < 0)
                return r;
        return sp_configure(u, c);
}

int proto_uart_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        struct proto_uart_config c;
        struct uart *u = NULL;
        struct sp_port *port = NULL;
        char *real = NULL;
        struct stat st;
        int r;

        (void)rest;
        r = proto_uart_spec_parse(spec, &c);
        if (r < 0)
                goto out;
        u = kiln_calloc(1, sizeof(*u));
        if (u == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "cannot open port '%s': out of memory", c.path);
                goto out;
        }
        u->fd = -1;
        (void)kiln_strlcpy(u->name, c.path, sizeof(u->name));

        /* /dev/serial/by-id/... are symbolic links; libserialport only knows the real name */
        real = realpath(c.path, NULL);
        if (real == NULL) {
                r = open_errno(u->name, errno);
                goto out;
        }
        if (stat(real, &st) != 0) {
                r = open_errno(u->name, errno);
                goto out;
        }
        if (!S_ISCHR(st.st_mode)) {
                r = kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': not a serial port",
                              u->name);
                goto out;
        }
        if (sp_get_port_by_name(real, &port) == SP_OK) {
                r = sp_backend_open(u, port, &c);
                port = NULL; /* owned by u */
        } else {
                kiln_debug("port '%s': not enumerated by libserialport, using termios", u->name);
                r = termios_open(u, real, &c);
        }
        if (r < 0)
                goto out;
        r = proto_transport_new(&uart_ops, u, u->name, c.baud, ret);
        if (r < 0)
                goto out;
        u = NULL;
out:
        uart_close(u);
        free(real); /* from realpath(): libc allocation */
        return r;
}
