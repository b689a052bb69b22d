/*
 * unix: socket transport (the simulator's alternative to a pty), the scheme registry and the
 * dispatch of port specifications, and caller-provided ops. The test is the listening end.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "kiln/error.h"
#include "kiln/transport.h"
#include "kiln/util.h"

struct server {
        char dir[64];
        char path[128];
        char spec[160];
        int lfd;
        int cfd;
};

static void server_listen(struct server *sv, int abstract)
{
        struct sockaddr_un sa;
        socklen_t len;

        memset(sv, 0, sizeof(*sv));
        sv->cfd = -1;
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        if (abstract) {
                snprintf(sv->path, sizeof(sv->path), "@kiln-test-%ld", (long)getpid());
                memcpy(sa.sun_path, sv->path, strlen(sv->path));
                sa.sun_path[0] = '\0';
                len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sv->path));
        } else {
                snprintf(sv->dir, sizeof(sv->dir), "/tmp/kiln-sock-XXXXXX");
                assert_non_null(mkdtemp(sv->dir));
                snprintf(sv->path, sizeof(sv->path), "%s/dut.sock", sv->dir);
                memcpy(sa.sun_path, sv->path, strlen(sv->path) + 1);
                len = (socklen_t)sizeof(sa);
        }
        snprintf(sv->spec, sizeof(sv->spec), "unix:%s", sv->path);
        sv->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_true(sv->lfd >= 0);
        assert_int_equal(bind(sv->lfd, (struct sockaddr *)&sa, len), 0);
        assert_int_equal(listen(sv->lfd, 4), 0);
}

static void server_accept(struct server *sv)
{
        sv->cfd = accept(sv->lfd, NULL, NULL);
        assert_true(sv->cfd >= 0);
}

static void server_close(struct server *sv)
{
        if (sv->cfd >= 0)
                close(sv->cfd);
        if (sv->lfd >= 0)
                close(sv->lfd);
        sv->cfd = sv->lfd = -1;
        if (sv->dir[0] != '\0') {
                unlink(sv->path);
                rmdir(sv->dir);
                sv->dir[0] = '\0';
        }
}

static void check_round_trip(struct server *sv, struct proto_transport *t)
{
        uint8_t out[1000], in[1000];
        size_t got = 0;

        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)(i * 13);
        assert_int_equal(proto_transport_write(t, out, sizeof(out), 1000), KILN_OK);
        while (got < sizeof(out)) {
                ssize_t r = recv(sv->cfd, in + got, sizeof(in) - got, 0);

                assert_true(r > 0);
                got += (size_t)r;
        }
        assert_memory_equal(in, out, sizeof(out));
        assert_int_equal(send(sv->cfd, out, 500, 0), 500);
        got = 0;
        while (got < 500) {
                int r = proto_transport_read(t, in + got, sizeof(in) - got, 2000);

                if (r <= 0)
                        fail_msg("read: %d %s", r, kiln_err_detail());
                got += (size_t)r;
        }
        assert_memory_equal(in, out, 500);
}

static void test_unix_path(void **state)
{
        struct server sv;
        struct proto_transport *t = NULL;
        uint8_t b[8];
        uint64_t t0, dt;

        (void)state;
        kiln_err_reset();
        server_listen(&sv, 0);
        assert_int_equal(proto_transport_open(sv.spec, &t), KILN_OK);
        server_accept(&sv);
        assert_int_equal(proto_transport_baud(t), 0);
        assert_string_equal(proto_transport_name(t), sv.spec);
        check_round_trip(&sv, t);
        /* read timeout: waits, comes back, records no detail */
        t0 = kiln_now_ms();
        assert_int_equal(proto_transport_read(t, b, sizeof(b), 40), KILN_E_TIMEOUT);
        dt = kiln_now_ms() - t0;
        assert_true(dt >= 30 && dt < 5000);
        assert_string_equal(kiln_err_detail(), "");
        /* the device side goes away */
        close(sv.cfd);
        sv.cfd = -1;
        assert_int_equal(proto_transport_read(t, b, sizeof(b), 1000), KILN_E_DEVICE_GONE);
        assert_non_null(strstr(kiln_err_detail(), sv.spec));
        kiln_err_reset();
        /* writing to a closed peer is an error code, not SIGPIPE */
        assert_int_equal(proto_transport_write(t, b, sizeof(b), 1000), KILN_E_DEVICE_GONE);
        proto_transport_free(t);
        server_close(&sv);
}

static void test_unix_abstract(void **state)
{
        struct server sv;
        struct proto_transport *t = NULL;

        (void)state;
        kiln_err_reset();
        server_listen(&sv, 1);
        if (proto_transport_open(sv.spec, &t) != KILN_OK)
                fail_msg("open %s: %s", sv.spec, kiln_err_detail());
        server_accept(&sv);
        check_round_trip(&sv, t);
        proto_transport_free(t);
        server_close(&sv);
}

static void test_unix_errors(void **state)
{
        struct server sv;
        struct proto_transport *t = NULL;
        char spec[300];

        (void)state;
        kiln_err_reset();
        assert_int_equal(proto_transport_open("unix:/tmp/kiln-no-such-dir/dut.sock", &t),
                         KILN_E_PORT_OPEN);
        assert_string_equal(kiln_err_detail(), "cannot open port "
                                               "'unix:/tmp/kiln-no-such-dir/dut.sock': No such "
                                               "file or directory");
        assert_null(t);
        /* a socket file nobody listens on any more */
        server_listen(&sv, 0);
        close(sv.lfd);
        sv.lfd = -1;
        kiln_err_reset();
        assert_int_equal(proto_transport_open(sv.spec, &t), KILN_E_PORT_OPEN);
        assert_non_null(strstr(kiln_err_detail(), "Connection refused"));
        server_close(&sv);
        /* malformed */
        kiln_err_reset();
        assert_int_equal(proto_transport_open("unix:relative.sock", &t), KILN_E_PORT_SPEC);
        assert_int_equal(proto_transport_open("unix:", &t), KILN_E_PORT_SPEC);
        assert_int_equal(proto_transport_open("unix:@", &t), KILN_E_PORT_SPEC);
        memset(spec, 'a', sizeof(spec));
        memcpy(spec, "unix:/", 6);
        spec[5 + 108] = '\0'; /* a path of 108 bytes: one more than sun_path holds */
        assert_int_equal(proto_transport_open(spec, &t), KILN_E_PORT_SPEC);
}

/* ---- scheme registry and dispatch ---- */

static int fake_opened;

static int fake_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        (void)ctx;
        (void)timeout_ms;
        memset(buf, 0x42, n);
        return (int)n;
}

static int fake_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        size_t *count = ctx;

        (void)buf;
        (void)timeout_ms;
        *count += n;
        return KILN_OK;
}

static void fake_close(void *ctx)
{
        free(ctx);
        fake_opened--;
}

static const struct proto_transport_ops fake_ops = {fake_read, fake_write, fake_close, NULL};

static int fake_usb_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        size_t *ctx;
        int r;

        if (strcmp(rest, "0403:6001") != 0)
                return kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': no such device", spec);
        ctx = calloc(1, sizeof(*ctx));
        assert_non_null(ctx);
        r = proto_transport_new(&fake_ops, ctx, spec, 0, ret);
        if (r < 0) {
                free(ctx);
                return r;
        }
        fake_opened++;
        return KILN_OK;
}

static struct proto_transport_scheme fake_scheme = {"fake", fake_usb_open, NULL};
static struct proto_transport_scheme fake_again = {"fake", fake_usb_open, NULL};
static struct proto_transport_scheme builtin_again = {"usb", fake_usb_open, NULL};
static struct proto_transport_scheme bad_scheme = {"FAKE!", fake_usb_open, NULL};

static void test_schemes(void **state)
{
        struct proto_transport *t = NULL;
        uint8_t b[4];
        char long_spec[KILN_PORT_SPEC_MAX + 2];

        (void)state;
        /* before a module registers its scheme: a clear error naming it and the known ones */
        kiln_err_reset();
        assert_int_equal(proto_transport_open("fake:0403:6001", &t), KILN_E_PORT_SPEC);
        assert_non_null(strstr(kiln_err_detail(), "unknown port scheme 'fake'"));
        assert_non_null(strstr(kiln_err_detail(), "uart"));
        assert_non_null(strstr(kiln_err_detail(), "unix"));
        assert_non_null(strstr(kiln_err_detail(), "usb"));
        assert_null(t);
        /* no scheme, empty, too long */
        kiln_err_reset();
        assert_int_equal(proto_transport_open("ttyUSB0", &t), KILN_E_PORT_SPEC);
        assert_non_null(strstr(kiln_err_detail(), "'ttyUSB0'"));
        assert_int_equal(proto_transport_open("", &t), KILN_E_PORT_SPEC);
        assert_int_equal(proto_transport_open(NULL, &t), KILN_E_PORT_SPEC);
        assert_int_equal(proto_transport_open("Uart:/dev/x", &t), KILN_E_PORT_SPEC);
        memset(long_spec, 'a', sizeof(long_spec));
        memcpy(long_spec, "/dev/", 5);
        long_spec[sizeof(long_spec) - 1] = '\0';
        assert_int_equal(proto_transport_open(long_spec, &t), KILN_E_PORT_SPEC);

        /* a module plugs in; callers do not change; built-in names are taken */
        assert_int_equal(proto_transport_scheme_register(&fake_scheme), KILN_OK);
        assert_int_equal(proto_transport_scheme_register(&fake_again), KILN_E_EXISTS);
        assert_int_equal(proto_transport_scheme_register(&builtin_again), KILN_E_EXISTS);
        assert_int_equal(proto_transport_scheme_register(&bad_scheme), KILN_E_INVAL);
        assert_int_equal(proto_transport_scheme_register(NULL), KILN_E_INVAL);
        kiln_err_reset();
        assert_int_equal(proto_transport_open("fake:0403:6001", &t), KILN_OK);
        assert_int_equal(fake_opened, 1);
        assert_string_equal(proto_transport_name(t), "fake:0403:6001");
        assert_int_equal(proto_transport_read(t, b, sizeof(b), 10), 4);
        assert_memory_equal(b, "BBBB", 4);
        assert_int_equal(proto_transport_write(t, b, 3, 10), KILN_OK);
        proto_transport_free(t);
        assert_int_equal(fake_opened, 0);
        assert_int_equal(proto_transport_open("fake:1-2.3", &t), KILN_E_PORT_OPEN);
}

static void test_transport_new(void **state)
{
        struct proto_transport *t = NULL;
        const struct proto_transport_ops no_write = {fake_read, NULL, NULL, NULL};
        char name[KILN_PORT_SPEC_MAX + 2];
        size_t *ctx = calloc(1, sizeof(*ctx));
        uint8_t b[2];

        (void)state;
        assert_non_null(ctx);
        assert_int_equal(proto_transport_new(NULL, ctx, "x", 0, &t), KILN_E_INVAL);
        assert_int_equal(proto_transport_new(&no_write, ctx, "x", 0, &t), KILN_E_INVAL);
        assert_int_equal(proto_transport_new(&fake_ops, ctx, NULL, 0, &t), KILN_E_INVAL);
        assert_int_equal(proto_transport_new(&fake_ops, ctx, "", 0, &t), KILN_E_LIMIT);
        memset(name, 'n', sizeof(name));
        name[sizeof(name) - 1] = '\0';
        assert_int_equal(proto_transport_new(&fake_ops, ctx, name, 0, &t), KILN_E_LIMIT);
        assert_null(t);
        /* on success the transport owns ctx and closes it */
        fake_opened = 1;
        assert_int_equal(proto_transport_new(&fake_ops, ctx, "fuzz", 57600, &t), KILN_OK);
        assert_int_equal(proto_transport_baud(t), 57600);
        assert_int_equal(proto_transport_write(t, b, 2, 0), KILN_OK);
        assert_int_equal(proto_transport_write(t, b, 0, 0), KILN_OK); /* nothing to do */
        assert_int_equal(*ctx, 2);
        assert_int_equal(proto_transport_read(t, b, 0, 0), KILN_E_INVAL);
        assert_true(proto_transport_now_ms(t) > 0);
        proto_transport_free(t);
        assert_int_equal(fake_opened, 0);
        proto_transport_free(NULL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_unix_path),     cmocka_unit_test(test_unix_abstract),
            cmocka_unit_test(test_unix_errors),   cmocka_unit_test(test_schemes),
            cmocka_unit_test(test_transport_new),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
