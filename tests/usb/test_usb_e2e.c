/*
 * The unmodified kiln binary provisioning simulated DUTs over emulated USB (usbdev.h), with the
 * smart-plug recipe and a station configuration naming `usb:1209:4b4e:SERIAL` ports: a full PASS,
 * the same record as over a UART, two devices of one kind told apart by serial, and every USB
 * fault ending in a clean failure code with the database consistent (DESIGN.md §11, checked by
 * e2e_check_invariants after each case).
 *
 * This process runs under the umockdev preload (usbdev_preload_reexec), so kiln, started from here
 * by the e2e harness, inherits LD_PRELOAD and UMOCKDEV_DIR and sees the emulated bus.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "e2e.h"
#include "kiln/log.h"
#include "kiln/proto.h"
#include "usbdev.h"

#define PLUG "smartplug-ctm.yaml"
#define FLAT_MAX 256
#define EXPORT_CAP (1u << 20)

static struct usbdev_bed *bed;

static struct usbdev *dev_add(const struct usbdev_opts *o)
{
        struct usbdev *d = NULL;

        assert_int_equal(usbdev_add(bed, o, &d), 0);
        return d;
}

static struct usbdev_opts opts(uint8_t port, const char *serial)
{
        struct usbdev_opts o;

        usbdev_opts_default(&o);
        o.ports[0] = 2;
        o.ports[1] = port;
        o.n_ports = 2;
        o.serial = serial;
        return o;
}

/* Station configuration with these ports after the simulators e2e_sim() started (if any). */
static void config(struct e2e *x, const char *const *ports)
{
        for (unsigned i = 0; ports[i] != NULL; i++) {
                assert_true(x->n_dev < E2E_SLOTS_MAX);
                x->dev[x->n_dev].pid = 0; /* not a process: e2e_teardown leaves it alone */
                snprintf(x->dev[x->n_dev].port, sizeof(x->dev[0].port), "%s", ports[i]);
                x->n_dev++;
        }
        e2e_config(x);
}

static struct e2e_run *run(struct e2e *x)
{
        struct e2e_run *r = calloc(1, sizeof(*r));

        assert_non_null(r);
        e2e_kiln_run(x, PLUG, NULL, r);
        if (getenv("KILN_USB_VERBOSE") != NULL)
                fprintf(stderr, "--- kiln exit %d\n%s%s", r->status, r->out, r->err);
        return r;
}

static void expect(const struct e2e_run *r, const char *slot, const char *verdict, const char *code)
{
        const struct e2e_unit *u = e2e_unit_by_slot(r, slot);

        if (u == NULL || strcmp(u->verdict, verdict) != 0 || strcmp(u->code, code) != 0)
                fail_msg("slot %s: expected %s %s, got %s %s (exit %d)\n%s\n%s", slot, verdict,
                         code, u ? u->verdict : "no unit", u ? u->code : "", r->status, r->out,
                         r->err);
}

static long count(struct e2e *x, const char *sql)
{
        return e2e_sql_int(x, sql);
}

/* One unit over USB with the smart-plug recipe: PASS, the chip locked, the record complete. */
static void test_provision(void **state)
{
        struct usbdev_opts o = opts(1, "KILN0001");
        static const char *const ports[] = {"usb:1209:4b4e:KILN0001", NULL};
        struct usbdev_stats st;
        struct usbdev *d;
        struct e2e_run *r;
        struct e2e x;
        char sql[512];

        (void)state;
        d = dev_add(&o);
        e2e_setup(&x, "usb-plug");
        config(&x, ports);
        r = run(&x);
        expect(r, "S1", "PASS", "null");
        assert_int_equal(r->status, 0);
        assert_string_equal(r->unit[0].chip_uid, usbdev_uid_hex(d));
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM units WHERE chip_uid = '%s' AND verdict = 'PASS' AND "
                 "debug_closed = 1 AND secure_boot = 1 AND lifecycle = 'PRODUCTION'",
                 usbdev_uid_hex(d));
        assert_int_equal(count(&x, sql), 1);
        assert_int_equal(count(&x, "SELECT count(*) FROM certificates WHERE current = 1"), 1);
        e2e_check_invariants(&x);
        /* what the chip itself now says */
        usbdev_stats_get(d, &st);
        assert_int_equal(st.lifecycle, KILN_LC_PRODUCTION);
        assert_int_equal(st.debug_port, KILN_DEBUG_CLOSED);
        assert_int_equal(st.key_present, 1);
        assert_false(st.fuses_blank);
        assert_int_equal(st.claims, 1);
        assert_true(st.bytes_out > 1000 && st.bytes_in > 1000);
        e2e_teardown(&x);
        usbdev_remove(d);
        free(r);
}

/* ------------------------------------------------------------- USB and UART records */

struct flat {
        char path[96];
        const char *v; /* raw JSON token text in the export line */
        size_t n;
};

struct flat_set {
        struct flat f[FLAT_MAX];
        unsigned n;
};

static const char *ws(const char *p)
{
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
                p++;
        return p;
}

static void flat_add(struct flat_set *s, const char *path, const char *v, size_t n)
{
        assert_true(s->n < FLAT_MAX);
        snprintf(s->f[s->n].path, sizeof(s->f[0].path), "%s", path);
        s->f[s->n].v = v;
        s->f[s->n].n = n;
        s->n++;
}

/* A JSON string token at p (the opening quote); returns the byte after the closing quote. */
static const char *json_string_end(const char *p)
{
        assert_true(*p == '"');
        for (p++; *p != '"'; p++) {
                assert_true(*p != '\0');
                if (*p == '\\') {
                        p++;
                        assert_true(*p != '\0');
                }
        }
        return p + 1;
}

/* Flatten one JSON value into (path, raw token) leaves: "fuses.debug_disable", "macs[0]". */
static const char *flatten(const char *p, const char *path, struct flat_set *s)
{
        char child[96];

        p = ws(p);
        if (*p == '{' || *p == '[') {
                char close = *p == '{' ? '}' : ']';
                const char *start = p;
                unsigned i = 0;

                p = ws(p + 1);
                if (*p == close) {
                        flat_add(s, path, start, (size_t)(p + 1 - start));
                        return p + 1;
                }
                for (;;) {
                        if (close == '}') {
                                const char *k = ws(p), *e = json_string_end(k);

                                snprintf(child, sizeof(child), "%s%s%.*s", path, path[0] ? "." : "",
                                         (int)(e - k - 2), k + 1);
                                p = ws(e);
                                assert_true(*p == ':');
                                p++;
                        } else {
                                snprintf(child, sizeof(child), "%s[%u]", path, i++);
                        }
                        p = ws(flatten(p, child, s));
                        if (*p == ',') {
                                p++;
                                continue;
                        }
                        assert_true(*p == close);
                        return p + 1;
                }
        }
        if (*p == '"') {
                const char *e = json_string_end(p);

                flat_add(s, path, p, (size_t)(e - p));
                return e;
        }
        {
                const char *e = p;

                while (*e != '\0' && *e != ',' && *e != '}' && *e != ']' && *e != ' ' && *e != '\n')
                        e++;
                assert_true(e > p);
                flat_add(s, path, p, (size_t)(e - p));
                return e;
        }
}

static const struct flat *flat_get(const struct flat_set *s, const char *path)
{
        for (unsigned i = 0; i < s->n; i++)
                if (strcmp(s->f[i].path, path) == 0)
                        return &s->f[i];
        return NULL;
}

static int flat_is(const struct flat_set *s, const char *path, const char *raw)
{
        const struct flat *f = flat_get(s, path);

        return f != NULL && f->n == strlen(raw) && memcmp(f->v, raw, f->n) == 0;
}

/* Fields that must differ between two units: identity, keys and certificates, times, slot. */
static int must_differ(const char *path)
{
        static const char *const exact[] = {"serial",      "chip_uid",    "slot",
                                            "started_at",  "finished_at", "pubkey_sha256",
                                            "cert_serial", "cert_pem",    "label_qr"};
        const char *leaf = strrchr(path, '.');

        for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
                if (strcmp(path, exact[i]) == 0)
                        return 1;
        /* certificates[i].serial, .pubkey_sha256, .cert_pem; key name, slot, expiry compared */
        return strncmp(path, "certificates[", 13) == 0 && leaf != NULL &&
               (strcmp(leaf, ".serial") == 0 || strcmp(leaf, ".pubkey_sha256") == 0 ||
                strcmp(leaf, ".cert_pem") == 0);
}

/* The export line of the unit with this serial, flattened. */
static void export_record(const char *out, const char *serial, struct flat_set *s)
{
        char pat[96];
        const char *p;

        snprintf(pat, sizeof(pat), "{\"serial\":\"%s\"", serial);
        p = strstr(out, pat);
        if (p == NULL)
                fail_msg("no export record for %s in:\n%s", serial, out);
        s->n = 0;
        flatten(p, "", s);
}

/* "A unit provisioned over USB has the same record as one provisioned over UART." */
static void test_same_record_as_uart(void **state)
{
        struct usbdev_opts o = opts(1, "KILN0002");
        static const char *const ports[] = {"usb:1209:4b4e:KILN0002", NULL};
        static struct flat_set uart, usb;
        const char *args[8];
        char *out = calloc(1, EXPORT_CAP);
        const struct e2e_unit *ua, *ub;
        struct usbdev *d;
        struct e2e_run *r;
        struct e2e x;
        char qa[512], qb[512];
        unsigned compared = 0;

        (void)state;
        assert_non_null(out);
        d = dev_add(&o);
        e2e_setup(&x, "usb-vs-uart");
        e2e_sim(&x, NULL, NULL); /* S1: kiln-dut-sim over a pseudo-terminal */
        config(&x, ports);       /* S2: the same simulated chip over USB */
        r = run(&x);
        expect(r, "S1", "PASS", "null");
        expect(r, "S2", "PASS", "null");
        ua = e2e_unit_by_slot(r, "S1");
        ub = e2e_unit_by_slot(r, "S2");
        assert_string_equal(ub->chip_uid, usbdev_uid_hex(d));
        e2e_check_invariants(&x);

        args[0] = "export";
        args[1] = "--db";
        args[2] = x.db;
        args[3] = "--format";
        args[4] = "jsonl";
        args[5] = NULL;
        assert_int_equal(e2e_kiln(&x, args, out, EXPORT_CAP, NULL, 0), 0);
        export_record(out, ua->serial, &uart);
        export_record(out, ub->serial, &usb);

        /* the verdict and what was burned and closed, explicitly */
        for (unsigned k = 0; k < 2; k++) {
                const struct flat_set *s = k == 0 ? &uart : &usb;

                assert_true(flat_is(s, "verdict", "\"PASS\""));
                assert_true(flat_is(s, "lifecycle", "\"PRODUCTION\""));
                assert_true(flat_is(s, "debug_closed", "true"));
                assert_true(flat_is(s, "secure_boot", "true"));
                assert_non_null(flat_get(s, "fuses.sb_key_hash"));
                assert_non_null(flat_get(s, "fuses.debug_disable"));
        }
        /* every field of either record: equal, unless it must differ */
        for (unsigned k = 0; k < 2; k++) {
                const struct flat_set *s = k == 0 ? &uart : &usb, *t = k == 0 ? &usb : &uart;

                for (unsigned i = 0; i < s->n; i++) {
                        const struct flat *a = &s->f[i], *b = flat_get(t, a->path);

                        if (must_differ(a->path))
                                continue;
                        if (b == NULL)
                                fail_msg("'%s' is in the %s record only", a->path,
                                         k == 0 ? "UART" : "USB");
                        if (a->n != b->n || memcmp(a->v, b->v, a->n) != 0)
                                fail_msg("'%s' differs: UART %.*s, USB %.*s", a->path,
                                         (int)(k == 0 ? a->n : b->n), k == 0 ? a->v : b->v,
                                         (int)(k == 0 ? b->n : a->n), k == 0 ? b->v : a->v);
                        compared++;
                }
        }
        assert_true(compared > 40);
        /* the fields that differ do so only by the unit's own values */
        assert_int_equal(flat_get(&uart, "certificates[0].key")->n,
                         flat_get(&usb, "certificates[0].key")->n);
        e2e_sql(&x, "SELECT label_qr FROM units WHERE slot = 'S1'", qa, sizeof(qa));
        e2e_sql(&x, "SELECT label_qr FROM units WHERE slot = 'S2'", qb, sizeof(qb));
        assert_non_null(strstr(qa, ua->serial));
        assert_non_null(strstr(qb, ub->serial));
        assert_int_equal(strlen(qa), strlen(qb));
        assert_memory_equal(qa, qb, (size_t)(strstr(qa, ua->serial) - qa));
        e2e_teardown(&x);
        usbdev_remove(d);
        free(r);
        free(out);
}

/* Two devices of one kind: the configured serial picks one; the other is not touched. Without a
 * serial the station refuses to guess. */
static void test_two_devices(void **state)
{
        struct usbdev_opts oa = opts(1, "KILN-A"), ob = opts(2, "KILN-B");
        static const char *const by_serial[] = {"usb:1209:4b4e:KILN-B", NULL};
        static const char *const by_id[] = {"usb:1209:4b4e", NULL};
        struct usbdev_stats sa, sb;
        struct usbdev *a, *b;
        struct e2e_run *r;
        struct e2e x;
        long events;

        (void)state;
        a = dev_add(&oa);
        b = dev_add(&ob);
        e2e_setup(&x, "usb-two");
        config(&x, by_serial);
        r = run(&x);
        expect(r, "S1", "PASS", "null");
        assert_int_equal(r->n_unit, 1);
        assert_string_equal(r->unit[0].chip_uid, usbdev_uid_hex(b));
        assert_int_equal(count(&x, "SELECT count(*) FROM units"), 1);
        e2e_check_invariants(&x);
        usbdev_stats_get(a, &sa);
        usbdev_stats_get(b, &sb);
        /* A was opened to be asked for its iSerial on endpoint 0, nothing more */
        assert_true(sa.opens >= 1);
        assert_int_equal(sa.claims, 0);
        assert_int_equal(sa.bytes_out, 0);
        assert_int_equal(sa.frames_rx, 0);
        assert_int_equal(sa.lifecycle, KILN_LC_MANUFACTURING);
        assert_int_equal(sa.debug_port, KILN_DEBUG_OPEN);
        assert_int_equal(sa.key_present, 0);
        assert_true(sa.fuses_blank);
        assert_int_equal(sb.lifecycle, KILN_LC_PRODUCTION);
        free(r);

        /* no serial, two candidates: E-PORT naming both, no unit created */
        events = count(&x, "SELECT count(*) FROM units");
        x.n_dev = 0;
        config(&x, by_id);
        r = run(&x);
        expect(r, "S1", "FAIL", "E-PORT");
        if (strstr(r->out, "'KILN-A' at usb:1-2.1") == NULL ||
            strstr(r->out, "'KILN-B' at usb:1-2.2") == NULL)
                fail_msg("the refusal does not list both devices:\n%s", r->out);
        assert_int_equal(count(&x, "SELECT count(*) FROM units"), events);
        e2e_check_invariants(&x);
        usbdev_stats_get(a, &sa);
        assert_int_equal(sa.claims, 0);
        assert_int_equal(sa.frames_rx, 0);
        e2e_teardown(&x);
        usbdev_remove(b);
        usbdev_remove(a);
        free(r);
}

/* Short transfers (7 bytes each) and a corrupt frame plus junk before every answer: the
 * transport reassembles, the session skips the junk, the unit passes. */
static void test_short_reads_pass(void **state)
{
        struct usbdev_opts o = opts(1, "SHORT");
        static const char *const ports[] = {"usb:1-2.1", NULL};
        struct usbdev *d;
        struct e2e_run *r;
        struct e2e x;

        (void)state;
        o.in_chunk = 7;
        o.noise = 64;
        d = dev_add(&o);
        e2e_setup(&x, "usb-short");
        config(&x, ports);
        r = run(&x);
        expect(r, "S1", "PASS", "null");
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        usbdev_remove(d);
        free(r);
}

struct fault_case {
        const char *name;
        enum usbdev_fault fault;
        uint8_t type;
        unsigned nth;
        const char *code;   /* the station's failure code */
        const char *detail; /* in the unit's reason */
        int admitted;       /* the fault comes after the unit row exists */
};

static void fault_run(const struct fault_case *fc)
{
        struct usbdev_opts o = opts(1, "FAULT");
        static const char *const ports[] = {"usb:1209:4b4e:FAULT", NULL};
        struct usbdev_stats st;
        struct usbdev *d;
        struct e2e_run *r;
        struct e2e x;

        o.fault = fc->fault;
        o.fault_type = fc->type;
        o.fault_nth = fc->nth;
        d = dev_add(&o);
        e2e_setup(&x, fc->name);
        config(&x, ports);
        r = run(&x);
        expect(r, "S1", "FAIL", fc->code);
        if (strstr(r->out, fc->detail) == NULL)
                fail_msg("'%s' is not in the report:\n%s", fc->detail, r->out);
        usbdev_stats_get(d, &st);
        assert_true(st.fault_fired);
        /* nothing irreversible happened: no fuse journaled, none burned */
        assert_int_equal(count(&x, "SELECT count(*) FROM fuse_journal"), 0);
        assert_true(st.fuses_blank);
        assert_int_equal(count(&x, "SELECT count(*) FROM units WHERE verdict = 'PASS'"), 0);
        assert_int_equal(count(&x, "SELECT count(*) FROM units WHERE verdict = 'FAIL'"),
                         fc->admitted ? 1 : 0);
        e2e_check_invariants(&x);
        e2e_teardown(&x);
        usbdev_remove(d);
        free(r);
}

/* The bulk IN endpoint halts while the station waits for GET_INFO. */
static void test_fault_stall(void **state)
{
        static const struct fault_case fc = {"usb-stall",
                                             USBDEV_FAULT_STALL,
                                             KILN_MSG_GET_INFO,
                                             1,
                                             "E-LINK",
                                             "LIBUSB_ERROR_PIPE",
                                             0};
        (void)state;
        fault_run(&fc);
}

/* Half of the GET_INFO answer, then nothing. */
static void test_fault_truncated(void **state)
{
        static const struct fault_case fc = {"usb-trunc",
                                             USBDEV_FAULT_TRUNCATE,
                                             KILN_MSG_GET_INFO,
                                             1,
                                             "E-LINK",
                                             "no response to GET_INFO",
                                             0};
        (void)state;
        fault_run(&fc);
}

/* The device stops answering in the middle of writing the certificate. */
static void test_fault_timeout(void **state)
{
        static const struct fault_case fc = {"usb-silent",
                                             USBDEV_FAULT_SILENT,
                                             KILN_MSG_OBJECT_HASH,
                                             1,
                                             "E-LINK",
                                             "no response to OBJECT_HASH",
                                             1};
        (void)state;
        fault_run(&fc);
}

/* Garbage frames instead of answers from the third FUSE_READ on. */
static void test_fault_garbage(void **state)
{
        static const struct fault_case fc = {"usb-garbage",
                                             USBDEV_FAULT_GARBAGE,
                                             KILN_MSG_FUSE_READ,
                                             3,
                                             "E-LINK",
                                             "no response to FUSE_READ",
                                             0};
        (void)state;
        fault_run(&fc);
}

/* Unplugged while the answer to the first WRITE_OBJECT is in flight. */
static void test_fault_unplug(void **state)
{
        static const struct fault_case fc = {"usb-unplug",
                                             USBDEV_FAULT_UNPLUG,
                                             KILN_MSG_WRITE_OBJECT,
                                             1,
                                             "E-DISCONNECT",
                                             "LIBUSB_ERROR_NO_DEVICE",
                                             1};
        (void)state;
        fault_run(&fc);
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
            cmocka_unit_test_teardown(test_provision, devices_teardown),
            cmocka_unit_test_teardown(test_same_record_as_uart, devices_teardown),
            cmocka_unit_test_teardown(test_two_devices, devices_teardown),
            cmocka_unit_test_teardown(test_short_reads_pass, devices_teardown),
            cmocka_unit_test_teardown(test_fault_stall, devices_teardown),
            cmocka_unit_test_teardown(test_fault_truncated, devices_teardown),
            cmocka_unit_test_teardown(test_fault_timeout, devices_teardown),
            cmocka_unit_test_teardown(test_fault_garbage, devices_teardown),
            cmocka_unit_test_teardown(test_fault_unplug, devices_teardown),
        };

        usbdev_preload_reexec(argc, argv);
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
