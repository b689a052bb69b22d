/* Label test helpers (see label_test.h). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "label_test.h"

/* a bound on waiting for the peer in the listener: a hung sender fails the test, never hangs it */
#define LT_LISTEN_WAIT_MS 60000

static char build_dir[4096], source_dir[4096];

static void resolve(const char *var, char *out, size_t cap)
{
        const char *v = getenv(var);
        char tmp[4096];

        if (v == NULL || v[0] == '\0')
                fail_msg("%s is not set (run through ctest)", var);
        if (realpath(v, tmp) == NULL)
                fail_msg("cannot resolve %s=%s: %s", var, v, strerror(errno));
        snprintf(out, cap, "%s", tmp);
}

const char *lt_build_dir(void)
{
        if (build_dir[0] == '\0')
                resolve("KILN_BUILD_DIR", build_dir, sizeof(build_dir));
        return build_dir;
}

const char *lt_source_dir(void)
{
        if (source_dir[0] == '\0')
                resolve("KILN_SOURCE_DIR", source_dir, sizeof(source_dir));
        return source_dir;
}

void lt_tmpdir(const char *name, char *out, size_t cap)
{
        char base[4200];

        snprintf(base, sizeof(base), "%s/label-tmp", lt_build_dir());
        if (mkdir(base, 0700) != 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", base, strerror(errno));
        if ((size_t)snprintf(out, cap, "%s/%s-XXXXXX", base, name) >= cap)
                fail_msg("temporary path too long");
        if (mkdtemp(out) == NULL)
                fail_msg("mkdtemp %s: %s", out, strerror(errno));
}

static void slurp_fd(int fd, char *buf, size_t cap)
{
        size_t n = 0;

        if (buf == NULL)
                return;
        lseek(fd, 0, SEEK_SET);
        for (;;) {
                ssize_t k;

                if (n + 1 >= cap)
                        break;
                k = read(fd, buf + n, cap - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t)k;
        }
        buf[n] = '\0';
}

int lt_run(const char *const *argv, char *out, size_t out_cap, char *err, size_t err_cap)
{
        char opath[] = "/tmp/kiln-lt-out-XXXXXX", epath[] = "/tmp/kiln-lt-err-XXXXXX";
        int ofd = mkstemp(opath), efd = mkstemp(epath), status = 0;
        pid_t pid;

        assert_true(ofd >= 0 && efd >= 0);
        unlink(opath);
        unlink(epath);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDONLY);

                if (devnull >= 0)
                        dup2(devnull, 0);
                dup2(ofd, 1);
                dup2(efd, 2);
                execvp(argv[0], (char *const *)(uintptr_t)argv);
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                assert_int_equal(errno, EINTR);
        slurp_fd(ofd, out, out_cap);
        slurp_fd(efd, err, err_cap);
        close(ofd);
        close(efd);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int lt_kiln(const char *const *args, char *out, size_t out_cap, char *err, size_t err_cap)
{
        const char *argv[40];
        char kiln[4200];
        unsigned n = 0;

        snprintf(kiln, sizeof(kiln), "%s/kiln", lt_build_dir());
        argv[n++] = kiln;
        for (unsigned i = 0; args[i] != NULL; i++) {
                assert_true(n < 39);
                argv[n++] = args[i];
        }
        argv[n] = NULL;
        return lt_run(argv, out, out_cap, err, err_cap);
}

void lt_assert_qr(const char *png, const char *const *want, unsigned n)
{
        const char *argv[] = {"zbarimg", "--raw", "-q", png, NULL};
        char *out = malloc(LT_OUT_MAX), *err = malloc(LT_OUT_MAX);
        unsigned seen[8] = {0}, got = 0;
        int st;

        assert_non_null(out);
        assert_non_null(err);
        assert_true(n <= 8);
        st = lt_run(argv, out, LT_OUT_MAX, err, LT_OUT_MAX);
        if (st == 127)
                fail_msg("zbarimg is not installed (apt-get install zbar-tools): the QR codes "
                         "cannot be checked");
        if (st != 0)
                fail_msg("zbarimg found no QR code in %s (exit %d): %s", png, st, err);
        for (char *line = out, *nl; *line != '\0'; line = nl + 1) {
                unsigned k;

                nl = strchr(line, '\n');
                if (nl == NULL)
                        fail_msg("%s: zbarimg output does not end in a newline", png);
                *nl = '\0';

                for (k = 0; k < n; k++)
                        if (strcmp(line, want[k]) == 0)
                                break;
                if (k == n)
                        fail_msg("%s: unexpected QR payload '%s'", png, line);
                seen[k]++;
                got++;
        }
        for (unsigned k = 0; k < n; k++)
                if (seen[k] != 1)
                        fail_msg("%s: payload '%s' decoded %u times, want once", png, want[k],
                                 seen[k]);
        assert_int_equal(got, n);
        free(out);
        free(err);
}

unsigned lt_count_lines(const char *s)
{
        unsigned n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

char *lt_read(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        char *buf;
        long n;

        if (f == NULL)
                fail_msg("cannot open %s: %s", path, strerror(errno));
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        n = ftell(f);
        assert_true(n >= 0);
        rewind(f);
        buf = malloc((size_t)n + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
        buf[n] = '\0';
        fclose(f);
        if (ret_len != NULL)
                *ret_len = (size_t)n;
        return buf;
}

static void *listener_main(void *p)
{
        struct lt_listener *l = p;
        struct pollfd pf = {.fd = l->fd, .events = POLLIN};
        size_t cap = 0;
        int c;

        if (poll(&pf, 1, LT_LISTEN_WAIT_MS) != 1)
                return NULL;
        c = accept(l->fd, NULL, NULL);
        if (c < 0)
                return NULL;
        for (;;) {
                struct pollfd q = {.fd = c, .events = POLLIN};
                uint8_t buf[4096];
                ssize_t k;

                if (poll(&q, 1, LT_LISTEN_WAIT_MS) != 1)
                        break;
                k = read(c, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        break;
                if (k == 0) {
                        l->ok = 1;
                        break;
                }
                if (l->len + (size_t)k > cap) {
                        uint8_t *d;

                        cap = 2 * (l->len + (size_t)k);
                        d = realloc(l->data, cap);
                        if (d == NULL)
                                break;
                        l->data = d;
                }
                memcpy(l->data + l->len, buf, (size_t)k);
                l->len += (size_t)k;
        }
        close(c);
        return NULL;
}

void lt_listener_start(struct lt_listener *l)
{
        struct sockaddr_in a;
        socklen_t alen = sizeof(a);

        memset(l, 0, sizeof(*l));
        l->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(l->fd >= 0);
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        assert_int_equal(bind(l->fd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(listen(l->fd, 1), 0);
        assert_int_equal(getsockname(l->fd, (struct sockaddr *)&a, &alen), 0);
        l->port = ntohs(a.sin_port);
        assert_int_equal(pthread_create(&l->thread, NULL, listener_main, l), 0);
}

void lt_listener_join(struct lt_listener *l)
{
        assert_int_equal(pthread_join(l->thread, NULL), 0);
}

void lt_listener_free(struct lt_listener *l)
{
        if (l->fd >= 0)
                close(l->fd);
        free(l->data);
        l->data = NULL;
        l->fd = -1;
}

uint16_t lt_closed_port(void)
{
        struct sockaddr_in a;
        socklen_t alen = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
        close(fd);
        return ntohs(a.sin_port);
}
