/*
 * UART transport over a pseudo-terminal pair: the test holds the master (the "device"), the
 * transport opens the slave exactly as it would open a USB-serial adapter. Bytes both ways, read
 * timeout, exclusive open, missing and wrong ports, hangup, and the port specification parser.
 * Timing checks are loose bounds only (the machine is shared and noisy).
 */
#define _XOPEN_SOURCE 700 /* posix_openpt, grantpt, unlockpt, ptsname */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/error.h"
#include "kiln/transport.h"
#include "kiln/util.h"

struct pty {
        int master;
        char slave[128];
};

static void pty_open(struct pty *p)
{
        p->master = posix_openpt(O_RDWR | O_NOCTTY);
        assert_true(p->master >= 0);
        assert_int_equal(grantpt(p->master), 0);
        assert_int_equal(unlockpt(p->master), 0);
        assert_non_null(ptsname(p->master));
        assert_int_equal(kiln_strlcpy(p->slave, ptsname(p->master), sizeof(p->slave)), KILN_OK);
}

static void pty_close(struct pty *p)
{
        if (p->master >= 0)
                close(p->master);
        p->master = -1;
}

/* Read exactly n bytes from fd within 5 s. */
static void read_exact(int fd, uint8_t *buf, size_t n)
{
        size_t got = 0;
        uint64_t end = kiln_now_ms() + 5000;

        while (got < n) {
                struct pollfd pfd = {fd, POLLIN, 0};
                ssize_t r;

                assert_true(kiln_now_ms() < end);
                if (poll(&pfd, 1, 100) <= 0)
                        continue;
                r = read(fd, buf + got, n - got);
                assert_true(r > 0);
                got += (size_t)r;
        }
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);

                assert_true(w > 0);
                p += w;
                n -= (size_t)w;
        }
}

static void test_bytes_both_ways(void **state)
{
        struct pty p;
        struct proto_transport *t = NULL;
        uint8_t out[300], in[300];
        size_t got = 0;

        (void)state;
        kiln_err_reset();
        pty_open(&p);
        if (proto_transport_open(p.slave, &t) != KILN_OK)
                fail_msg("open %s: %s", p.slave, kiln_err_detail());
        assert_int_equal(proto_transport_baud(t), 115200);
        assert_string_equal(proto_transport_name(t), p.slave);
        /* host -> device, every byte value (raw mode: no CR/LF mapping, no echo, no signals) */
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)i;
        assert_int_equal(proto_transport_write(t, out, sizeof(out), 1000), KILN_OK);
        read_exact(p.master, in, sizeof(out));
        assert_memory_equal(in, out, sizeof(out));
        /* device -> host */
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)(255 - i);
        write_all(p.master, out, sizeof(out));
        while (got < sizeof(out)) {
                int r = proto_transport_read(t, in + got, sizeof(in) - got, 2000);

                if (r <= 0)
                        fail_msg("read: %d %s", r, kiln_err_detail());
                got += (size_t)r;
        }
        assert_memory_equal(in, out, sizeof(out));
        proto_transport_free(t);
        pty_close(&p);
}

static void test_read_timeout(void **state)
{
        struct pty p;
        struct proto_transport *t = NULL;
        uint8_t b[16];
        uint64_t t0, dt;

        (void)state;
        kiln_err_reset();
        pty_open(&p);
        assert_int_equal(proto_transport_open(p.slave, &t), KILN_OK);
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, b, sizeof(b), 60), KILN_E_TIMEOUT);
        dt = kiln_now_ms() - t0;
        /* it waited (not returned at once) and it came back (not forever) */
        assert_true(dt >= 50);
        assert_true(dt < 5000);
        /* a timeout is an expected outcome: no detail recorded */
        assert_string_equal(kiln_err_detail(), "");
        /* timeout 0 polls without waiting */
        assert_int_equal(proto_transport_read(t, b, sizeof(b), 0), KILN_E_TIMEOUT);
        proto_transport_free(t);
        pty_close(&p);
}

static void test_exclusive(void **state)
{
        struct pty p;
        struct proto_transport *t = NULL, *t2 = NULL;
        char spec[200];

        (void)state;
        kiln_err_reset();
        pty_open(&p);
        assert_int_equal(proto_transport_open(p.slave, &t), KILN_OK);
        assert_int_equal(proto_transport_open(p.slave, &t2), KILN_E_PORT_BUSY);
        assert_null(t2);
        assert_non_null(strstr(kiln_err_detail(), p.slave));
        /* another spelling of the same port is the same port */
        kiln_err_reset();
        snprintf(spec, sizeof(spec), "uart:%s?baud=9600", p.slave);
        assert_int_equal(proto_transport_open(spec, &t2), KILN_E_PORT_BUSY);
        /* once closed, it can be opened again */
        proto_transport_free(t);
        kiln_err_reset();
        assert_int_equal(proto_transport_open(p.slave, &t2), KILN_OK);
        proto_transport_free(t2);
        pty_close(&p);
}

static void test_missing_and_wrong(void **state)
{
        struct proto_transport *t = NULL;
        char dir[] = "/tmp/kiln-uart-XXXXXX", file[256];
        int fd;

        (void)state;
        kiln_err_reset();
        assert_int_equal(proto_transport_open("/dev/ttyKILN-missing-9", &t), KILN_E_PORT_OPEN);
        assert_string_equal(kiln_err_detail(),
                            "cannot open port '/dev/ttyKILN-missing-9': No such file or directory");
        assert_null(t);
        kiln_err_reset();
        assert_int_equal(proto_transport_open("uart:/dev/ttyKILN-missing-9?baud=9600", &t),
                         KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "'/dev/ttyKILN-missing-9'"));
        /* a character device that is not a tty */
        kiln_err_reset();
        assert_int_equal(proto_transport_open("/dev/null", &t), KILN_E_PORT_OPEN);
        assert_string_equal(kiln_err_detail(), "cannot open port '/dev/null': not a serial port");
        /* a regular file and a directory */
        assert_non_null(mkdtemp(dir));
        snprintf(file, sizeof(file), "%s/file", dir);
        fd = open(file, O_CREAT | O_WRONLY, 0600);
        assert_true(fd >= 0);
        close(fd);
        kiln_err_reset();
        assert_int_equal(proto_transport_open(file, &t), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "not a serial port"));
        kiln_err_reset();
        assert_int_equal(proto_transport_open(dir, &t), KILN_E_PORT_OPEN);
        /* one line */
        assert_null(strchr(kiln_err_detail(), '\n'));
        unlink(file);
        rmdir(dir);
}

static void test_device_gone(void **state)
{
        struct pty p;
        struct proto_transport *t = NULL;
        uint8_t b[16];

        (void)state;
        kiln_err_reset();
        pty_open(&p);
        assert_int_equal(proto_transport_open(p.slave, &t), KILN_OK);
        /* bytes still in flight are delivered, then the hangup */
        write_all(p.master, (const uint8_t *)"last", 4);
        pty_close(&p);
        {
                int r = proto_transport_read(t, b, sizeof(b), 1000);

                /* the kernel may drop unread input on hangup; if it kept it, it comes first */
                if (r > 0)
                        r = proto_transport_read(t, b, sizeof(b), 1000);
                assert_int_equal(r, KILN_E_DEVICE_GONE);
        }
        assert_non_null(strstr(kiln_err_detail(), p.slave));
        kiln_err_reset();
        assert_int_equal(proto_transport_write(t, (const uint8_t *)"x", 1, 1000),
                         KILN_E_DEVICE_GONE);
        proto_transport_free(t);
}

static void test_symlink_and_options(void **state)
{
        struct pty p;
        struct proto_transport *t = NULL;
        char dir[] = "/tmp/kiln-uart-XXXXXX", link[128], spec[400];
        uint8_t in[4];

        (void)state;
        kiln_err_reset();
        pty_open(&p);
        assert_non_null(mkdtemp(dir));
        snprintf(link, sizeof(link), "%s/dut0", dir);
        assert_int_equal(symlink(p.slave, link), 0);
        snprintf(spec, sizeof(spec), "uart:%s?baud=9600&parity=even&flow=rtscts&data=7&stop=2",
                 link);
        if (proto_transport_open(spec, &t) != KILN_OK)
                fail_msg("open %s: %s", spec, kiln_err_detail());
        assert_int_equal(proto_transport_baud(t), 9600);
        /* the settings reached the line (a second descriptor sees them; root ignores TIOCEXCL,
         * anyone else is refused, which is the other half of exclusivity) */
        {
                int fd = open(p.slave, O_RDWR | O_NOCTTY | O_NONBLOCK);

                if (fd >= 0) {
                        struct termios tio;

                        assert_int_equal(tcgetattr(fd, &tio), 0);
                        /* (the Linux pty driver forces CS8 and no parity, whatever is asked;
                         * rate, stop bits and flow control it keeps) */
                        assert_int_equal(cfgetospeed(&tio), B9600);
                        assert_true(tio.c_cflag & CSTOPB);
                        assert_true(tio.c_cflag & CRTSCTS);
                        assert_false(tio.c_iflag & (IXON | IXOFF | ICRNL));
                        assert_false(tio.c_oflag & OPOST);
                        assert_false(tio.c_lflag & (ICANON | ECHO | ISIG));
                        close(fd);
                } else {
                        assert_int_equal(errno, EBUSY);
                }
        }
        assert_int_equal(proto_transport_write(t, (const uint8_t *)"abc", 3, 1000), KILN_OK);
        read_exact(p.master, in, 3);
        assert_memory_equal(in, "abc", 3);
        proto_transport_free(t);
        /* a rate the termios backend cannot set */
        kiln_err_reset();
        snprintf(spec, sizeof(spec), "uart:%s?baud=12345", link);
        assert_int_equal(proto_transport_open(spec, &t), KILN_E_PORT_CONFIG);
        assert_non_null(strstr(kiln_err_detail(), "12345"));
        unlink(link);
        rmdir(dir);
        pty_close(&p);
}

static void test_spec_parse(void **state)
{
        static const char *const bad[] = {
            "uart:/dev/ttyUSB0?baud=abc",
            "uart:/dev/ttyUSB0?baud=0",
            "uart:/dev/ttyUSB0?baud=4000001",
            "uart:/dev/ttyUSB0?baud=-1",
            "uart:/dev/ttyUSB0?baud= 9600",
            "uart:/dev/ttyUSB0?parity=mark",
            "uart:/dev/ttyUSB0?parity=EVEN",
            "uart:/dev/ttyUSB0?flow=maybe",
            "uart:/dev/ttyUSB0?data=9",
            "uart:/dev/ttyUSB0?data=4",
            "uart:/dev/ttyUSB0?stop=3",
            "uart:/dev/ttyUSB0?speed=9600",
            "uart:/dev/ttyUSB0?baud=9600&baud=9600",
            "uart:/dev/ttyUSB0?baud=",
            "uart:/dev/ttyUSB0?baud",
            "uart:/dev/ttyUSB0?",
            "uart:/dev/ttyUSB0?baud=9600&",
            "uart:/dev/ttyUSB0?&baud=9600",
            "uart:dev/ttyUSB0",
            "uart:",
            "uart:/",
        };
        struct proto_uart_config c;
        struct proto_transport *t = NULL;

        (void)state;
        assert_int_equal(proto_uart_spec_parse("/dev/ttyUSB0", &c), KILN_OK);
        assert_string_equal(c.path, "/dev/ttyUSB0");
        assert_int_equal(c.baud, 115200);
        assert_int_equal(c.data_bits, 8);
        assert_int_equal(c.stop_bits, 1);
        assert_int_equal(c.parity, PROTO_PARITY_NONE);
        assert_int_equal(c.flow, PROTO_FLOW_NONE);
        assert_int_equal(proto_uart_spec_parse("uart:/dev/serial/by-id/usb-FTDI_X-if00?baud=921600"
                                               "&parity=odd&flow=xonxoff&data=5&stop=2",
                                               &c),
                         KILN_OK);
        assert_string_equal(c.path, "/dev/serial/by-id/usb-FTDI_X-if00");
        assert_int_equal(c.baud, 921600);
        assert_int_equal(c.parity, PROTO_PARITY_ODD);
        assert_int_equal(c.flow, PROTO_FLOW_XONXOFF);
        assert_int_equal(c.data_bits, 5);
        assert_int_equal(c.stop_bits, 2);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                memset(&c, 0x5A, sizeof(c));
                kiln_err_reset();
                if (proto_uart_spec_parse(bad[i], &c) != KILN_E_PORT_SPEC)
                        fail_msg("'%s' accepted", bad[i]);
                assert_int_equal(c.baud, 0x5A5A5A5A); /* untouched */
                /* the whole specification is quoted in the detail */
                if (strstr(kiln_err_detail(), bad[i]) == NULL)
                        fail_msg("detail '%s' does not quote '%s'", kiln_err_detail(), bad[i]);
                /* and opening it fails the same way, before touching any device */
                kiln_err_reset();
                assert_int_equal(proto_transport_open(bad[i], &t), KILN_E_PORT_SPEC);
        }
        kiln_err_reset();
        assert_int_equal(proto_uart_spec_parse("uart:/dev/ttyUSB0?parity=mark", &c),
                         KILN_E_PORT_SPEC);
        assert_non_null(strstr(kiln_err_detail(), "unknown parity 'mark'"));
        kiln_err_reset();
        assert_int_equal(proto_uart_spec_parse("uart:/dev/ttyUSB0?baud=abc", &c), KILN_E_PORT_SPEC);
        assert_non_null(strstr(kiln_err_detail(), "baud 'abc' is not a number"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_bytes_both_ways), cmocka_unit_test(test_read_timeout),
            cmocka_unit_test(test_exclusive),       cmocka_unit_test(test_missing_and_wrong),
            cmocka_unit_test(test_device_gone),     cmocka_unit_test(test_symlink_and_options),
            cmocka_unit_test(test_spec_parse),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
