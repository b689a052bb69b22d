/*
 * Station configuration: the good example loads with resolved paths and parsed ports; every bad
 * configuration gets exactly the FILE:LINE:COLUMN lines expected (a `pin:` key above all); port
 * specifications parse or are refused with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kiln/config.h"
#include "kiln/util.h"
#include "kiln/yaml_doc.h"

static const char *source_dir(void)
{
        const char *s = getenv("KILN_SOURCE_DIR");

        if (s == NULL)
                fail_msg("KILN_SOURCE_DIR is not set (run through ctest)");
        return s;
}

static char *diag_text(struct yaml_doc_diags *d, const char *name)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        yaml_doc_diags_sort(d);
        yaml_doc_diags_print(d, name, f);
        fclose(f);
        return buf;
}

static void expect_text(const char *got, const char *want, const char *what)
{
        if (strcmp(got, want) != 0) {
                print_error("%s: got\n%s\nwant\n%s\n", what, got, want);
                fail();
        }
}

static void test_good(void **state)
{
        char path[KILN_PATH_MAX], dir[2048], want[KILN_PATH_MAX];
        struct yaml_doc_diags d;
        struct station_config *c = NULL;
        const struct station_slot *s;

        (void)state;
        snprintf(dir, sizeof(dir), "%s/tests/station/data/good", source_dir());
        snprintf(path, sizeof(path), "%s/station.yaml", dir);
        yaml_doc_diags_init(&d);
        assert_int_equal(station_config_load_file(path, &d, &c), KILN_OK);
        assert_int_equal(yaml_doc_diags_count(&d), 0);
        assert_int_equal(c->schema, 1);
        assert_string_equal(c->station_id, "line1-st01");
        assert_int_equal(c->mode, STATION_MODE_DEVELOPMENT);
        assert_false(c->production);
        assert_string_equal(station_mode_name(c->mode), "development");
        assert_int_equal(strlen(c->sha256_hex), 64);
        /* relative paths resolve against the file's directory, absolute ones stay */
        snprintf(want, sizeof(want), "%s/var/kiln.db", dir);
        assert_string_equal(c->database, want);
        snprintf(want, sizeof(want), "%s/../../../../recipes/smartplug-ctm.yaml", dir);
        assert_string_equal(c->work.recipe, want);
        assert_string_equal(c->work.work_order, "WO-2026-0001");
        assert_string_equal(c->work.lot, "LOT-A");
        assert_string_equal(c->work.operator_id, "alice");
        assert_int_equal(c->work.quota, 10);
        assert_string_equal(c->hsm.module, "/usr/lib/softhsm/libsofthsm2.so");
        assert_string_equal(c->hsm.token_uri, "pkcs11:token=kiln-dev");
        assert_int_equal(c->hsm.pin_source, STATION_PIN_FILE);
        snprintf(want, sizeof(want), "%s/dev-pki/pin", dir);
        assert_string_equal(c->hsm.pin_ref, want);
        snprintf(want, sizeof(want), "%s/dev-pki/softhsm2.conf", dir);
        assert_string_equal(c->hsm.softhsm_conf, want);
        assert_string_equal(c->hsm.audit_key,
                            "pkcs11:token=kiln-dev;object=kiln-dev-audit;type=private");
        assert_string_equal(c->hsm.commitment_key,
                            "pkcs11:token=kiln-dev;object=kiln-dev-commit;type=secret-key");
        assert_int_equal(c->hsm.sessions, 4);
        /* one slot of each port kind */
        assert_int_equal(c->n_slots, 5);
        s = station_config_slot(c, "A1");
        assert_non_null(s);
        assert_int_equal(s->port.kind, STATION_PORT_UART);
        assert_string_equal(s->port.path, "/dev/ttyUSB0");
        assert_int_equal(s->port.baud, STATION_BAUD_DEFAULT);
        assert_false(s->has_printer);
        s = station_config_slot(c, "A2");
        assert_int_equal(s->port.baud, 921600);
        assert_true(s->has_printer);
        assert_int_equal(s->printer.kind, STATION_PRINTER_TCP);
        assert_string_equal(s->printer.target, "192.168.10.20");
        assert_int_equal(s->printer.port, 9100);
        s = station_config_slot(c, "S1");
        assert_int_equal(s->port.kind, STATION_PORT_UNIX);
        snprintf(want, sizeof(want), "%s/sim/a.sock", dir);
        if (strlen(want) <= STATION_UNIX_PATH_MAX)
                assert_string_equal(s->port.path, want);
        s = station_config_slot(c, "U1");
        assert_int_equal(s->port.kind, STATION_PORT_USB_ID);
        assert_int_equal(s->port.vid, 0x1209);
        assert_int_equal(s->port.pid, 0x4b4e);
        assert_string_equal(s->port.usb_serial, "KILN0001");
        s = station_config_slot(c, "U2");
        assert_int_equal(s->port.kind, STATION_PORT_USB_PATH);
        assert_int_equal(s->port.bus, 1);
        assert_int_equal(s->port.n_ports, 3);
        assert_memory_equal(s->port.ports, "\x01\x04\x02", 3);
        assert_int_equal(s->printer.kind, STATION_PRINTER_DEVICE);
        assert_null(station_config_slot(c, "nope"));
        assert_true(c->labels.present);
        assert_int_equal(c->labels.printer.kind, STATION_PRINTER_FILE);
        snprintf(want, sizeof(want), "%s/labels", dir);
        assert_string_equal(c->labels.printer.target, want);
        assert_int_equal(c->labels.format, STATION_LABEL_ZPL);
        station_config_free(c);
        station_config_free(NULL);
        yaml_doc_diags_free(&d);
}

struct bad_case {
        const char *file;
        const char *want;
};

static const struct bad_case bad_cases[] = {
    {"pin.yaml", "pin.yaml:15:8: hsm.pin: a PIN never goes in the configuration: name an "
                 "environment variable with pin_env or an owner-only file with pin_file\n"},
    {"pin-both.yaml", "pin-both.yaml:15:13: hsm.pin_file: give pin_env or pin_file, not "
                      "both\n"},
    {"pin-none.yaml", "pin-none.yaml:13:3: hsm: missing pin_env or pin_file (where the token "
                      "PIN comes from)\n"},
    {"duplicate-slot.yaml", "duplicate-slot.yaml:23:9: slots[1].id: slot id 'A1' is used "
                            "twice\n"
                            "duplicate-slot.yaml:24:11: slots[1].port: slot 'A1' uses the "
                            "same port\n"},
    {"bad-ports.yaml",
     "bad-ports.yaml:22:11: slots[0].port: bad port 'COM3': expected /dev/PATH, "
     "uart:/dev/PATH[?baud=N], unix:PATH, usb:VID:PID[:SERIAL] or usb:BUS-PORT[.PORT...]\n"
     "bad-ports.yaml:24:11: slots[1].port: bad port 'uart:/dev/ttyUSB1?baud=fast': the only "
     "option is ?baud=N (300..4000000)\n"
     "bad-ports.yaml:29:11: slots[3].port: bad port 'usb:12:4b4e': usb:VID:PID[:SERIAL] takes "
     "4 hex digits for VID and PID\n"
     "bad-ports.yaml:31:11: slots[4].port: bad port 'usb:1-1.4.2.300': "
     "usb:BUS-PORT[.PORT...] takes 1..7 port numbers 1..255\n"},
    {"production-softhsm.yaml", "production-softhsm.yaml:16:3: hsm: softhsm_conf is for "
                                "development tokens: a production station uses its HSM\n"},
    {"bad-uris.yaml", "bad-uris.yaml:14:10: hsm.token: not a usable PKCS#11 token URI: must "
                      "name a token only (no object, id or type)\n"
                      "bad-uris.yaml:18:19: hsm.commitment_key: not a usable PKCS#11 key "
                      "URI: type must be 'secret-key'\n"},
    /* every problem in one run */
    {"many.yaml",
     "many.yaml:2:9: schema: version 2 is not supported (this kiln reads schema 1)\n"
     "many.yaml:3:13: station_id: 'line 1' is not a valid station id (1..32 of A-Z a-z 0-9 "
     "._-)\n"
     "many.yaml:4:7: mode: expected one of development, production; got 'dev'\n"
     "many.yaml:11:10: work.quota: value '-1' is out of range 1..100000000\n"
     "many.yaml:19:13: hsm.sessions: value '100' is out of range 1..64\n"
     "many.yaml:25:14: slots[1].printer: expected tcp:HOST:PORT with a host name, IPv4 "
     "address or [IPv6] address and a port 1..65535\n"
     "many.yaml:35:11: labels.format: expected one of zpl, png; got 'pdf'\n"
     "many.yaml:36:3: labels: unknown key 'colour'\n"},
};

static void test_bad_files(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
                char path[KILN_PATH_MAX], *got;
                struct yaml_doc_diags d;
                struct station_config *c = NULL;

                snprintf(path, sizeof(path), "%s/tests/station/data/bad-config/%s", source_dir(),
                         bad_cases[i].file);
                yaml_doc_diags_init(&d);
                assert_int_equal(station_config_load_file(path, &d, &c), KILN_E_CONFIG);
                assert_null(c);
                got = diag_text(&d, bad_cases[i].file);
                expect_text(got, bad_cases[i].want, bad_cases[i].file);
                free(got);
                yaml_doc_diags_free(&d);
        }
}

static char *load_mem(const char *text, struct station_config **ret)
{
        struct yaml_doc_diags d;
        char *got;
        int rc;

        yaml_doc_diags_init(&d);
        rc = station_config_load_mem("c.yaml", "/etc/kiln", (const uint8_t *)text, strlen(text), &d,
                                     ret);
        got = diag_text(&d, "c.yaml");
        assert_int_equal(rc, got[0] == '\0' ? KILN_OK : KILN_E_CONFIG);
        yaml_doc_diags_free(&d);
        return got;
}

static void test_pin_anywhere(void **state)
{
        static const char text[] = "schema: 1\n"
                                   "station_id: s\n"
                                   "mode: production\n"
                                   "database: /var/lib/kiln/kiln.db\n"
                                   "pin: 1234\n"
                                   "hsm:\n"
                                   "  module: /opt/hsm/lib/pkcs11.so\n"
                                   "  token: \"pkcs11:token=line1;pin-value=1234\"\n"
                                   "  pin_env: KILN_PIN\n"
                                   "  pin:\n"
                                   "  audit_key: \"pkcs11:token=line1;object=audit\"\n"
                                   "slots:\n"
                                   "  - {id: a, port: /dev/ttyACM0}\n"
                                   "authority:\n"
                                   "  release_keys: [/etc/kiln/keys/engineer.pem]\n";
        struct station_config *c = NULL;
        char *got;

        (void)state;
        got = load_mem(text, &c);
        expect_text(got,
                    "c.yaml:5:6: pin: a PIN never goes in the configuration: name an environment "
                    "variable with hsm.pin_env or an owner-only file with hsm.pin_file\n"
                    "c.yaml:8:10: hsm.token: not a usable PKCS#11 token URI: a PIN never travels "
                    "in a URI (pin-value, pin-source)\n"
                    "c.yaml:10:7: hsm.pin: a PIN never goes in the configuration: name an "
                    "environment variable with pin_env or an owner-only file with pin_file\n",
                    "pin anywhere");
        assert_null(c);
        free(got);
}

static void test_minimal_production(void **state)
{
        static const char text[] = "schema: 1\n"
                                   "station_id: line2.st-07\n"
                                   "mode: production\n"
                                   "database: kiln.db\n"
                                   "hsm:\n"
                                   "  module: /opt/hsm/lib/pkcs11.so\n"
                                   "  token: \"pkcs11:token=line%202;manufacturer=Acme\"\n"
                                   "  pin_env: KILN_HSM_PIN\n"
                                   "  audit_key: \"pkcs11:token=line%202;id=%01%02\"\n"
                                   "slots:\n"
                                   "  - {id: a, port: \"/run/kiln/a.tty\"}\n"
                                   "  - {id: b, port: \"usb:1209:4B4E\"}\n"
                                   "authority:\n"
                                   "  release_keys: [keys/engineer.pem, /etc/kiln/bob.pem]\n";
        struct station_config *c = NULL;
        char *got;

        (void)state;
        got = load_mem(text, &c);
        expect_text(got, "", "minimal production");
        assert_non_null(c);
        assert_true(c->production);
        assert_string_equal(c->database, "/etc/kiln/kiln.db");
        assert_int_equal(c->hsm.pin_source, STATION_PIN_ENV);
        assert_string_equal(c->hsm.pin_ref, "KILN_HSM_PIN");
        assert_null(c->hsm.softhsm_conf);
        assert_null(c->hsm.commitment_key);
        assert_int_equal(c->hsm.sessions, 0);
        assert_null(c->work.recipe);
        assert_false(c->labels.present);
        assert_int_equal(c->slots[1].port.pid, 0x4b4e);
        assert_string_equal(c->slots[1].port.usb_serial, "");
        assert_int_equal(c->authority.n_release_keys, 2);
        assert_string_equal(c->authority.release_keys[0], "/etc/kiln/keys/engineer.pem");
        assert_int_equal(c->authority.n_quota_keys, 0);
        station_config_free(c);
        free(got);
}

static void test_usb_any_serial_collides(void **state)
{
        /* usb:VID:PID without a serial matches any device of that kind: another slot with the
         * same VID:PID is ambiguous */
        static const char text[] = "schema: 1\nstation_id: s\nmode: development\ndatabase: d\n"
                                   "hsm: {module: m.so, token: \"pkcs11:token=t\", pin_env: P, "
                                   "audit_key: \"pkcs11:object=a\"}\n"
                                   "slots:\n"
                                   "  - {id: a, port: \"usb:1209:4b4e\"}\n"
                                   "  - {id: b, port: \"usb:1209:4b4e:SN2\"}\n"
                                   "  - {id: c, port: \"usb:2-3\"}\n"
                                   "  - {id: d, port: \"usb:2-3\"}\n"
                                   "  - {id: e, port: \"unix:s.sock\"}\n"
                                   "  - {id: f, port: \"unix:/etc/kiln/s.sock\"}\n";
        struct station_config *c = NULL;
        char *got;

        (void)state;
        got = load_mem(text, &c);
        expect_text(got,
                    "c.yaml:8:19: slots[1].port: slot 'a' uses the same port\n"
                    "c.yaml:10:19: slots[3].port: slot 'c' uses the same port\n"
                    "c.yaml:12:19: slots[5].port: slot 'e' uses the same port\n",
                    "usb collide");
        assert_null(c);
        free(got);
}

static void test_ports(void **state)
{
        static const struct {
                const char *spec;
                int ok;
                const char *why; /* a piece of the reason when refused */
        } cases[] = {
            {"/dev/ttyUSB0", 1, NULL},
            {"/dev/serial/by-id/usb-FTDI_FT232R-if00-port0", 1, NULL},
            {"uart:/dev/ttyS1?baud=300", 1, NULL},
            {"uart:/dev/ttyS1?baud=4000000", 1, NULL},
            {"uart:/dev/ttyS1?baud=4000001", 0, "baud"},
            {"uart:/dev/ttyS1?baud=0115200", 0, "baud"},
            {"uart:/dev/ttyS1?parity=even", 0, "baud"},
            {"/dev/ttyS1?baud=9600", 0, "uart:"},
            {"uart:ttyS1", 0, "absolute device path"},
            {"/dev/", 0, "absolute device path"},
            {"/run/kiln/slot-a.tty", 1, NULL},
            {"usb:1209:4b4e:KILN0001?reenum_ms=5000", 1, NULL},
            {"usb:1-2.1?reenum_ms=0", 1, NULL},
            {"usb:1209:4b4e?reenum_ms=60001", 0, "reenum_ms"},
            {"usb:1209:4b4e?baud=9600", 0, "reenum_ms"},
            {"/dev/tty S1", 0, "0x20"},
            {"unix:/tmp/sim.sock", 1, NULL},
            {"unix:", 0, "socket path"},
            {"usb:0483:5740", 1, NULL},
            {"usb:0483:5740:A1B2-c3", 1, NULL},
            {"usb:0483:5740:", 0, "serial"},
            {"usb:0483:5740:a b", 0, "serial"},
            {"usb:483:5740", 0, "4 hex"},
            {"usb:0483:574g", 0, "4 hex"},
            {"usb:1-1", 1, NULL},
            {"usb:255-1.2.3.4.5.6.7", 1, NULL},
            {"usb:1-1.2.3.4.5.6.7.8", 0, "1..7"},
            {"usb:0-1", 0, "usb:"},
            {"usb:256-1", 0, "usb:"},
            {"usb:1-", 0, "1..7"},
            {"usb:1-1..2", 0, "1..7"},
            {"tcp:host:1", 0, "expected"},
            {"", 0, "expected"},
        };

        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct station_port p;
                char why[160] = "";
                int ok = station_port_parse(cases[i].spec, "/base", &p, why, sizeof(why));

                if (ok != cases[i].ok)
                        fail_msg("'%s': got %d (%s)", cases[i].spec, ok, why);
                if (!ok && strstr(why, cases[i].why) == NULL)
                        fail_msg("'%s': reason '%s' lacks '%s'", cases[i].spec, why, cases[i].why);
                if (ok)
                        assert_string_equal(p.spec, cases[i].spec);
        }
        {
                struct station_port p;
                char why[160], spec[KILN_PORT_SPEC_MAX + 8];

                /* relative unix: paths resolve, and must fit sun_path */
                assert_true(
                    station_port_parse("unix:run/a.sock", "/srv/kiln", &p, why, sizeof(why)));
                assert_string_equal(p.path, "/srv/kiln/run/a.sock");
                memset(spec, 'a', sizeof(spec));
                memcpy(spec, "unix:/", 6);
                spec[5 + STATION_UNIX_PATH_MAX] = '\0';
                assert_true(station_port_parse(spec, NULL, &p, why, sizeof(why)));
                spec[5 + STATION_UNIX_PATH_MAX] = 'a';
                spec[6 + STATION_UNIX_PATH_MAX] = '\0';
                assert_false(station_port_parse(spec, NULL, &p, why, sizeof(why)));
                memset(spec, 'a', sizeof(spec));
                memcpy(spec, "unix:/", 6);
                spec[sizeof(spec) - 1] = '\0';
                assert_false(station_port_parse(spec, NULL, &p, why, sizeof(why)));
                assert_non_null(strstr(why, "longer than"));
        }
}

static void test_printers_and_empty(void **state)
{
        static const char head[] =
            "schema: 1\nstation_id: s\nmode: development\ndatabase: d\n"
            "hsm: {module: m.so, token: \"pkcs11:token=t\", pin_env: P, "
            "audit_key: \"pkcs11:object=a\"}\n"
            "slots:\n"
            "  - {id: a, port: /dev/ttyS0, printer: \"tcp:[2001:db8::5]:9100\"}\n"
            "  - {id: b, port: /dev/ttyS1, printer: \"tcp:zebra-1.local:0\"}\n"
            "  - {id: c, port: /dev/ttyS2, printer: \"file:\"}\n"
            "  - {id: d, port: /dev/ttyS3, printer: \"lpt1\"}\n";
        struct station_config *c = NULL;
        char *got;

        (void)state;
        got = load_mem(head, &c);
        expect_text(got,
                    "c.yaml:8:40: slots[1].printer: expected tcp:HOST:PORT with a host name, "
                    "IPv4 address or [IPv6] address and a port 1..65535\n"
                    "c.yaml:9:40: slots[2].printer: file: needs a directory\n"
                    "c.yaml:10:40: slots[3].printer: expected file:DIR, tcp:HOST:PORT or a "
                    "printer device under /dev/\n",
                    "printers");
        free(got);
        got = load_mem("", &c);
        expect_text(got, "c.yaml:1:1: the configuration is empty\n", "empty");
        free(got);
        got = load_mem("schema: 1\n", &c);
        expect_text(got,
                    "c.yaml:1:1: missing required key 'station_id'\n"
                    "c.yaml:1:1: missing required key 'mode'\n"
                    "c.yaml:1:1: missing required key 'database'\n"
                    "c.yaml:1:1: missing required key 'hsm'\n"
                    "c.yaml:1:1: missing required key 'slots'\n",
                    "missing");
        free(got);
}

static void test_alloc_failures(void **state)
{
        char path[KILN_PATH_MAX];
        long n;

        (void)state;
        snprintf(path, sizeof(path), "%s/tests/station/data/good/station.yaml", source_dir());
        for (n = 0;; n++) {
                struct yaml_doc_diags d;
                struct station_config *c = NULL;
                int rc;

                yaml_doc_diags_init(&d);
                kiln_alloc_fail_after(n);
                rc = station_config_load_file(path, &d, &c);
                kiln_alloc_fail_after(-1);
                yaml_doc_diags_free(&d);
                if (rc == KILN_OK) {
                        station_config_free(c);
                        break;
                }
                assert_null(c);
                if (rc != KILN_E_NOMEM)
                        fail_msg("allocation %ld failed: got %d", n, rc);
        }
        assert_true(n > 5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_good),
            cmocka_unit_test(test_bad_files),
            cmocka_unit_test(test_pin_anywhere),
            cmocka_unit_test(test_minimal_production),
            cmocka_unit_test(test_usb_any_serial_collides),
            cmocka_unit_test(test_ports),
            cmocka_unit_test(test_printers_and_empty),
            cmocka_unit_test(test_alloc_failures),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
