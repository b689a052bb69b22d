/*
 * The libusb transport in-process, against simulated DUTs on an emulated USB bus (usbdev.h):
 * port specifications, device selection (VID:PID, serial, position, ambiguity), the session over
 * bulk endpoints, short and partial transfers, stalls, timeouts, unplug and re-enumeration, and the
 * busy-polling back-off.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "kiln/error.h"
#include "kiln/log.h"
#include "kiln/session.h"
#include "kiln/transport.h"
#include "kiln/util.h"
#include "transport_usb_internal.h"
#include "usbdev.h"

static struct usbdev_bed *bed;

/* docs/protocol.md §8.1: a HELLO request (request id 1, host maximum 4096), as sent on the wire */
static const char hello_wire_hex[] =
    "0003010101010101010201010102080101030101010102100105b228946600";

static struct usbdev *dev_add(const struct usbdev_opts *o)
{
        struct usbdev *d = NULL;

        assert_int_equal(usbdev_add(bed, o, &d), 0);
        return d;
}

static struct usbdev_opts opts_at(uint8_t port, const char *serial)
{
        struct usbdev_opts o;

        usbdev_opts_default(&o);
        o.ports[0] = 3;
        o.ports[1] = port;
        o.n_ports = 2;
        o.serial = serial;
        return o;
}

static struct proto_transport *open_ok(const char *spec)
{
        struct proto_transport *t = NULL;
        int r;

        kiln_err_reset();
        r = proto_transport_open(spec, &t);
        if (r != KILN_OK)
                fail_msg("open '%s': %s: %s", spec, kiln_errname(r), kiln_err_detail());
        return t;
}

static int open_fails(const char *spec)
{
        struct proto_transport *t = NULL;
        int r;

        kiln_err_reset();
        r = proto_transport_open(spec, &t);
        assert_null(t);
        assert_true(r < 0);
        return r;
}

static struct proto_session *session(struct proto_transport *t, unsigned attempts)
{
        struct proto_session_opts so;
        struct proto_session *s = NULL;

        proto_session_opts_default(&so);
        so.attempts = attempts;
        assert_int_equal(proto_session_new(t, &so, &s), KILN_OK);
        return s;
}

/* HELLO and GET_INFO; returns the chip UID as hex in uid. */
static void converse(struct proto_transport *t, char *uid, size_t cap)
{
        struct proto_session *s = session(t, 1);
        struct proto_info info;
        int r;

        kiln_err_reset();
        r = proto_session_hello(s, NULL);
        if (r == KILN_OK)
                r = proto_session_get_info(s, &info);
        if (r != KILN_OK)
                fail_msg("session on '%s': %s: %s", proto_transport_name(t), kiln_errname(r),
                         kiln_err_detail());
        assert_int_equal(kiln_hex_encode(info.chip_uid, info.chip_uid_len, uid, cap), KILN_OK);
        assert_string_equal(info.product_id, "smartplug-a1");
        proto_session_free(s);
}

static void hello_raw(struct proto_transport *t, unsigned timeout_ms)
{
        uint8_t wire[64];
        size_t n = 0;

        assert_int_equal(kiln_hex_decode(hello_wire_hex, wire, sizeof(wire), &n), KILN_OK);
        assert_int_equal(proto_transport_write(t, wire, n, timeout_ms), KILN_OK);
}

static void test_spec_parse(void **state)
{
        static const char *const bad[] = {
            "usb:",
            "usb:1209",
            "usb:1209:",
            "usb:12:4b4e",
            "usb:1209:4b4eX",
            "usb:120g:4b4e",
            "usb:1209:4b4e:",
            "usb:1209:4b4e:a b",
            "usb:0-1",
            "usb:256-1",
            "usb:1-0",
            "usb:1-",
            "usb:1-1.",
            "usb:1-1..2",
            "usb:1-01",
            "usb:1-1.2.3.4.5.6.7.8",
            "usb:1-1?",
            "usb:1-1?x=1",
            "usb:1-1?reenum_ms",
            "usb:1-1?reenum_ms=",
            "usb:1-1?reenum_ms=60001",
            "usb:1-1?reenum_ms=1&reenum_ms=2",
            "usb:1-1&x",
            "uart:/dev/x",
            "usb:1-256",
        };
        struct proto_usb_spec s;
        char serial[PROTO_USB_SERIAL_MAX + 20];

        (void)state;
        assert_int_equal(proto_usb_spec_parse("usb:1209:4B4e", &s), KILN_OK);
        assert_false(s.by_path);
        assert_int_equal(s.vid, 0x1209);
        assert_int_equal(s.pid, 0x4b4e);
        assert_string_equal(s.serial, "");
        assert_int_equal(s.reenum_ms, PROTO_USB_REENUM_MS_DEFAULT);
        assert_int_equal(proto_usb_spec_parse("usb:1209:4b4e:KILN-0001_a.b?reenum_ms=0", &s),
                         KILN_OK);
        assert_string_equal(s.serial, "KILN-0001_a.b");
        assert_int_equal(s.reenum_ms, 0);
        assert_int_equal(proto_usb_spec_parse("usb:1-1.4.2", &s), KILN_OK);
        assert_true(s.by_path);
        assert_int_equal(s.bus, 1);
        assert_int_equal(s.n_ports, 3);
        assert_int_equal(s.ports[0], 1);
        assert_int_equal(s.ports[1], 4);
        assert_int_equal(s.ports[2], 2);
        assert_int_equal(proto_usb_spec_parse("usb:255-255.1.2.3.4.5.6?reenum_ms=60000", &s),
                         KILN_OK);
        assert_int_equal(s.n_ports, 7);
        assert_int_equal(s.reenum_ms, 60000);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                kiln_err_reset();
                if (proto_usb_spec_parse(bad[i], &s) != KILN_E_PORT_SPEC)
                        fail_msg("'%s' was accepted", bad[i]);
                assert_non_null(strstr(kiln_err_detail(), "port specification"));
        }
        /* the serial: 1..126 characters */
        memcpy(serial, "usb:1209:4b4e:", 14);
        memset(serial + 14, 'S', PROTO_USB_SERIAL_MAX);
        serial[14 + PROTO_USB_SERIAL_MAX] = '\0';
        assert_int_equal(proto_usb_spec_parse(serial, &s), KILN_OK);
        serial[14 + PROTO_USB_SERIAL_MAX] = 'S';
        serial[15 + PROTO_USB_SERIAL_MAX] = '\0';
        assert_int_equal(proto_usb_spec_parse(serial, &s), KILN_E_PORT_SPEC);
        /* the registry sends "usb:" here: a bad spec is a spec error, before any device is seen */
        assert_int_equal(open_fails("usb:12:34"), KILN_E_PORT_SPEC);
}

static void test_select(void **state)
{
        struct usbdev_opts oa = opts_at(1, "KILN-A"), ob = opts_at(2, "KILN-B");
        struct usbdev_opts oc = opts_at(3, NULL);
        struct usbdev *a, *b, *c;
        struct proto_transport *t;
        struct usbdev_stats st;
        char uid[65];
        const char *msg;

        (void)state;
        a = dev_add(&oa);
        /* one device: the id alone finds it; so do its serial and its position */
        t = open_ok("usb:1209:4b4e");
        assert_int_equal(proto_transport_baud(t), 0);
        assert_string_equal(proto_transport_name(t), "usb:1209:4b4e");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(a));
        proto_transport_free(t);
        t = open_ok("usb:1-3.1");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(a));
        proto_transport_free(t);

        /* two of a kind: never a guess; the message names both and how to tell them apart */
        b = dev_add(&ob);
        assert_int_equal(open_fails("usb:1209:4b4e"), KILN_E_PORT_OPEN);
        msg = kiln_err_detail();
        assert_non_null(strstr(msg, "2 USB devices 1209:4b4e are attached"));
        assert_non_null(strstr(msg, "'KILN-A' at usb:1-3.1"));
        assert_non_null(strstr(msg, "'KILN-B' at usb:1-3.2"));
        assert_non_null(strstr(msg, "usb:1209:4b4e:SERIAL"));
        /* a third without any serial: only its position names it */
        c = dev_add(&oc);
        assert_int_equal(open_fails("usb:1209:4b4e"), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "3 USB devices 1209:4b4e are attached"));
        assert_non_null(strstr(kiln_err_detail(), "no serial at usb:1-3.3"));
        t = open_ok("usb:1-3.3");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(c));
        proto_transport_free(t);
        usbdev_remove(c);
        t = open_ok("usb:1209:4b4e:KILN-B");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(b));
        proto_transport_free(t);
        t = open_ok("usb:1-3.1");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(a));
        proto_transport_free(t);

        /* nothing there */
        assert_int_equal(open_fails("usb:1209:4b4e:KILN-C"), KILN_E_PORT_OPEN);
        msg = kiln_err_detail();
        assert_non_null(strstr(msg, "no USB device 1209:4b4e with serial 'KILN-C'"));
        assert_non_null(strstr(msg, "'KILN-A' at usb:1-3.1"));
        assert_int_equal(open_fails("usb:1-3.9"), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "no USB device at usb:1-3.9"));
        assert_int_equal(open_fails("usb:1209:0001"), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "no USB device 1209:0001 is attached"));
        /* a hub is no Kiln device: no vendor interface with a bulk pair */
        assert_int_equal(open_fails("usb:1-3"), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "no vendor-class interface"));

        /* the interface claim is exclusive */
        t = open_ok("usb:1209:4b4e:KILN-A");
        assert_int_equal(open_fails("usb:1-3.1"), KILN_E_PORT_BUSY);
        assert_non_null(strstr(kiln_err_detail(), "in use by another program"));
        proto_transport_free(t);
        t = open_ok("usb:1-3.1");
        proto_transport_free(t);

        /* B: one claim for its one conversation; naming A by serial read B's iSerial only */
        usbdev_stats_get(b, &st);
        assert_int_equal(st.claims, 1);
        assert_int_equal(st.frames_rx, 2);
        usbdev_remove(b);
        usbdev_remove(a);
}

/* A device that answers in 5-byte transfers: reads are short, the session does not mind. */
static void test_short_reads(void **state)
{
        struct usbdev_opts o = opts_at(1, "SHORT");
        struct usbdev *d;
        struct proto_transport *t;
        uint8_t buf[64];
        char uid[65];
        int n;

        (void)state;
        o.in_chunk = 5;
        o.noise = 40; /* and a corrupt frame plus junk before every answer */
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:SHORT");
        hello_raw(t, 1000);
        for (int i = 0; i < 4; i++) {
                n = proto_transport_read(t, buf, sizeof(buf), 1000);
                assert_true(n >= 1 && n <= 5);
        }
        proto_transport_free(t);
        t = open_ok("usb:1209:4b4e:SHORT");
        converse(t, uid, sizeof(uid));
        assert_string_equal(uid, usbdev_uid_hex(d));
        proto_transport_free(t);
        usbdev_remove(d);
}

/* IN transfers that never end with a short packet: what arrived comes back at the timeout. */
static void test_partial_read(void **state)
{
        struct usbdev_opts o = opts_at(1, "NOZLP");
        struct usbdev *d;
        struct proto_transport *t;
        uint8_t buf[4096];
        uint64_t t0;
        int n;

        (void)state;
        o.no_zlp = 1;
        o.noise = 600; /* the answer is then over one 512-byte packet and not a multiple of it */
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:NOZLP");
        hello_raw(t, 1000);
        t0 = kiln_now_ms();
        n = proto_transport_read(t, buf, sizeof(buf), 3000);
        assert_int_equal(n, USBDEV_MPS);
        /* returned when a transfer slice timed out, not at the end of the caller's timeout */
        assert_true(kiln_now_ms() - t0 < 2500);
        /* the rest is less than a packet: it never completes a transfer */
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 300), KILN_E_TIMEOUT);
        proto_transport_free(t);
        usbdev_remove(d);
}

/* A device that NAKs after 16 bytes of every OUT transfer: the write goes on with the rest. */
static void test_partial_write(void **state)
{
        struct usbdev_opts o = opts_at(1, "SLOW");
        struct usbdev *d;
        struct proto_transport *t;
        struct usbdev_stats st;
        uint8_t wire[64], buf[256];
        size_t n = 0;

        (void)state;
        o.out_accept = 16;
        d = dev_add(&o);
        assert_int_equal(kiln_hex_decode(hello_wire_hex, wire, sizeof(wire), &n), KILN_OK);
        t = open_ok("usb:1209:4b4e:SLOW");
        /* too little time: some bytes went, the caller hears "timeout" */
        assert_int_equal(proto_transport_write(t, wire, n, 200), KILN_E_TIMEOUT);
        usbdev_stats_get(d, &st);
        assert_int_equal(st.bytes_out, 16);
        proto_transport_free(t);
        usbdev_remove(d);

        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:SLOW");
        assert_int_equal(proto_transport_write(t, wire, n, 5000), KILN_OK);
        usbdev_stats_get(d, &st);
        assert_int_equal(st.bytes_out, n);
        /* the device got the whole frame and answers it */
        assert_true(proto_transport_read(t, buf, sizeof(buf), 2000) > 20);
        proto_transport_free(t);
        usbdev_remove(d);
}

/* A stalled IN endpoint: KILN_E_USB naming the libusb error, the halt cleared, the next request
 * works. */
static void test_stall(void **state)
{
        struct usbdev_opts o = opts_at(1, "STALL");
        struct usbdev *d;
        struct proto_transport *t;
        struct proto_session *s;
        struct proto_info info;

        (void)state;
        o.fault = USBDEV_FAULT_STALL;
        o.fault_type = KILN_MSG_GET_INFO;
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:STALL");
        s = session(t, 1);
        assert_int_equal(proto_session_hello(s, NULL), KILN_OK);
        kiln_err_reset();
        assert_int_equal(proto_session_get_info(s, &info), KILN_E_USB);
        assert_non_null(strstr(kiln_err_detail(), "LIBUSB_ERROR_PIPE"));
        assert_non_null(strstr(kiln_err_detail(), "bulk IN endpoint 0x81"));
        assert_non_null(strstr(kiln_err_detail(), "halt cleared"));
        assert_int_equal(proto_session_get_info(s, &info), KILN_OK);
        proto_session_free(s);
        proto_transport_free(t);
        usbdev_remove(d);
}

/* Timeouts are finite and honoured, 0 included; an idle wait does not spin the CPU. */
static void test_timeouts(void **state)
{
        struct usbdev_opts o = opts_at(1, "IDLE");
        struct usbdev *d;
        struct proto_transport *t;
        struct usbdev_stats st;
        struct rusage r0, r1;
        uint8_t buf[64];
        uint64_t t0, wall, cpu;

        (void)state;
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:IDLE");
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 0), KILN_E_TIMEOUT);
        assert_true(kiln_now_ms() - t0 < 200);
        getrusage(RUSAGE_SELF, &r0);
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 1200), KILN_E_TIMEOUT);
        wall = kiln_now_ms() - t0;
        getrusage(RUSAGE_SELF, &r1);
        assert_true(wall >= 1200 && wall < 2500);
        cpu = (uint64_t)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
                         r0.ru_stime.tv_sec) *
                  1000u +
              (uint64_t)((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
                          r0.ru_stime.tv_usec) /
                         1000);
        /* without the reap back-off libusb spins: about one CPU second per second waited */
        if (cpu * 2 > wall)
                fail_msg("an idle %llu ms read used %llu ms of CPU", (unsigned long long)wall,
                         (unsigned long long)cpu);
        usbdev_stats_get(d, &st);
        assert_true(st.reaps_parked > 0);
        proto_transport_free(t);
        usbdev_remove(d);
}

/* Unplugged in the middle of an answer: what arrived is handed on, then KILN_E_DEVICE_GONE
 * ("device disconnected") once the re-enumeration window has passed, and from then on at once. */
static void test_unplug(void **state)
{
        struct usbdev_opts o = opts_at(1, "GONE");
        struct usbdev *d;
        struct proto_transport *t;
        struct proto_session *s;
        struct proto_info info;
        struct usbdev_stats st;
        uint8_t buf[256];
        uint64_t t0;
        int n;

        (void)state;
        /* raw: half of the HELLO answer sits in the pending IN transfer when the device goes */
        o.fault = USBDEV_FAULT_UNPLUG;
        o.fault_type = KILN_MSG_HELLO;
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:GONE?reenum_ms=300");
        hello_raw(t, 1000);
        n = proto_transport_read(t, buf, sizeof(buf), 2000);
        assert_true(n > 10 && n < 60);  /* the whole answer is about 70 bytes */
        assert_int_equal(buf[0], 0x00); /* it starts like a frame */
        kiln_err_reset();
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 100), KILN_E_DEVICE_GONE);
        assert_true(kiln_now_ms() - t0 >= 300);
        assert_non_null(strstr(kiln_err_detail(), "disconnected (LIBUSB_ERROR_NO_DEVICE at "
                                                  "usb:1-3.1) and did not come back within "
                                                  "300 ms"));
        assert_string_equal(kiln_strerror(KILN_E_DEVICE_GONE), "device disconnected");
        usbdev_stats_get(d, &st);
        assert_true(st.fault_fired);
        assert_false(st.present);
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 1000), KILN_E_DEVICE_GONE);
        assert_int_equal(proto_transport_write(t, buf, 4, 1000), KILN_E_DEVICE_GONE);
        assert_true(kiln_now_ms() - t0 < 200);
        proto_transport_free(t);
        usbdev_remove(d);

        /* through the session: the request in flight fails with "device gone" */
        o.fault_type = KILN_MSG_GET_INFO;
        d = dev_add(&o);
        t = open_ok("usb:1209:4b4e:GONE?reenum_ms=100");
        s = session(t, 1);
        assert_int_equal(proto_session_hello(s, NULL), KILN_OK);
        assert_int_equal(proto_session_get_info(s, &info), KILN_E_DEVICE_GONE);
        proto_session_free(s);
        proto_transport_free(t);
        usbdev_remove(d);

        /* reenum_ms=0: gone at once */
        o.fault = USBDEV_FAULT_NONE;
        d = dev_add(&o);
        t = open_ok("usb:1-3.1?reenum_ms=0");
        usbdev_unplug(d);
        kiln_err_reset();
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, buf, sizeof(buf), 1000), KILN_E_DEVICE_GONE);
        assert_true(kiln_now_ms() - t0 < 500);
        assert_non_null(strstr(kiln_err_detail(), "disconnected (LIBUSB_ERROR_NO_DEVICE"));
        proto_transport_free(t);
        usbdev_remove(d);
}

/* RESET: the device reboots and re-enumerates at a new address; the transport finds it again by
 * the same selector and the session goes on after a new HELLO. */
static void test_reset_reenumerates(void **state)
{
        struct usbdev_opts o = opts_at(1, "BOOT");
        struct usbdev *d;
        struct proto_transport *t;
        struct proto_session *s;
        struct proto_hello h1, h2;
        struct proto_info info;
        struct usbdev_stats before, after;
        char uid[65];

        (void)state;
        o.boot_ms = 200;
        d = dev_add(&o);
        usbdev_stats_get(d, &before);
        t = open_ok("usb:1209:4b4e:BOOT");
        s = session(t, 3);
        assert_int_equal(proto_session_hello(s, &h1), KILN_OK);
        kiln_err_reset();
        if (proto_session_reset(s, 0) != KILN_OK)
                fail_msg("RESET: %s", kiln_err_detail());
        kiln_err_reset();
        if (proto_session_hello(s, &h2) != KILN_OK)
                fail_msg("HELLO after RESET: %s", kiln_err_detail());
        assert_int_not_equal(h1.session_id, h2.session_id);
        assert_int_equal(proto_session_get_info(s, &info), KILN_OK);
        assert_int_equal(kiln_hex_encode(info.chip_uid, info.chip_uid_len, uid, sizeof(uid)),
                         KILN_OK);
        assert_string_equal(uid, usbdev_uid_hex(d));
        usbdev_stats_get(d, &after);
        assert_int_equal(after.enumerations, 2);
        assert_int_not_equal(after.devnum, before.devnum);
        assert_true(after.present);
        proto_session_free(s);
        proto_transport_free(t);
        usbdev_remove(d);
}

static int group_setup(void **state)
{
        (void)state;
        kiln_log_set_level(KILN_LOG_WARN);
        return usbdev_bed_new(&bed);
}

/* A failed test skips its own cleanup: the next one starts from an empty bus. */
static int devices_teardown(void **state)
{
        (void)state;
        usbdev_remove_all(bed);
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        usbdev_bed_free(bed);
        bed = NULL;
        return 0;
}

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test_teardown(test_spec_parse, devices_teardown),
            cmocka_unit_test_teardown(test_select, devices_teardown),
            cmocka_unit_test_teardown(test_short_reads, devices_teardown),
            cmocka_unit_test_teardown(test_partial_read, devices_teardown),
            cmocka_unit_test_teardown(test_partial_write, devices_teardown),
            cmocka_unit_test_teardown(test_stall, devices_teardown),
            cmocka_unit_test_teardown(test_timeouts, devices_teardown),
            cmocka_unit_test_teardown(test_unplug, devices_teardown),
            cmocka_unit_test_teardown(test_reset_reenumerates, devices_teardown),
        };

        usbdev_preload_reexec(argc, argv);
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
