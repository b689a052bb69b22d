/*
 * Local stream socket transport ("unix:/path", or "unix:@name" for the Linux abstract namespace):
 * the simulator's alternative to a pseudo-terminal. Non-blocking socket, poll() with a deadline for
 * every read and write; EOF, reset and broken pipe are KILN_E_DEVICE_GONE. Unpaced (baud 0).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kiln/error.h"
#include "kiln/transport.h"
#include "kiln/util.h"
#include "transport_internal.h"

struct usock {
        int fd;
        char name[KILN_PORT_SPEC_MAX + 1];
};

static void usock_close(void *ctx)
{
        struct usock *u = ctx;

        if (u == NULL)
                return;
        if (u->fd >= 0)
                (void)close(u->fd);
        kiln_free(u);
}

static int usock_gone(struct usock *u, const char *why)
{
        return kiln_fail(KILN_E_DEVICE_GONE, "device on '%s' disconnected (%s)", u->name, why);
}

static int usock_read(void *ctx, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct usock *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        char eb[128];

        for (;;) {
                short rev = 0;
                ssize_t got;
                int r = proto_fd_wait(u->fd, POLLIN, deadline, u->name, &rev);

                if (r < 0)
                        return r;
                if (r == 0)
                        return KILN_E_TIMEOUT;
                got = recv(u->fd, buf, n, MSG_DONTWAIT);
                if (got > 0)
                        return (int)got;
                if (got == 0)
                        return usock_gone(u, "peer closed the connection");
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        continue;
                if (proto_errno_gone(errno))
                        return usock_gone(u, proto_errno_str(errno, eb, sizeof(eb)));
                return kiln_fail(KILN_E_IO, "read from '%s': %s", u->name,
                                 proto_errno_str(errno, eb, sizeof(eb)));
        }
}

static int usock_write(void *ctx, const uint8_t *buf, size_t n, unsigned timeout_ms)
{
        struct usock *u = ctx;
        uint64_t deadline = kiln_now_ms() + timeout_ms;
        size_t off = 0;
        char eb[128];

        while (off < n) {
                short rev = 0;
                ssize_t put;
                int r = proto_fd_wait(u->fd, POLLOUT, deadline, u->name, &rev);

                if (r < 0)
                        return r;
                if (r == 0)
                        return KILN_E_TIMEOUT;
                /* MSG_NOSIGNAL: a closed peer is an error code, not a SIGPIPE */
                put = send(u->fd, buf + off, n - off, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (put >= 0) {
                        off += (size_t)put;
                        continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        continue;
                if (proto_errno_gone(errno))
                        return usock_gone(u, proto_errno_str(errno, eb, sizeof(eb)));
                return kiln_fail(KILN_E_IO, "write to '%s': %s", u->name,
                                 proto_errno_str(errno, eb, sizeof(eb)));
        }
        return KILN_OK;
}

static const struct proto_transport_ops usock_ops = {
    .read = usock_read,
    .write = usock_write,
    .close = usock_close,
    .now_ms = NULL,
};

int proto_unix_open(const char *spec, const char *rest, struct proto_transport **ret)
{
        struct sockaddr_un sa;
        struct usock *u = NULL;
        socklen_t salen;
        size_t plen = strlen(rest);
        char eb[128];
        int r;

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        if (plen < 1 || plen >= sizeof(sa.sun_path) || (rest[0] != '/' && rest[0] != '@') ||
            (rest[0] == '@' && plen < 2)) {
                r = kiln_fail(KILN_E_PORT_SPEC,
                              "bad port specification '%s': expected unix:/path "
                              "or unix:@name, at most %zu bytes",
                              spec, sizeof(sa.sun_path) - 1);
                goto out;
        }
        memcpy(sa.sun_path, rest, plen);
        if (rest[0] == '@')
                sa.sun_path[0] = '\0'; /* abstract namespace: no file, no cleanup */
        salen =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (rest[0] == '@' ? 0 : 1));

        u = kiln_calloc(1, sizeof(*u));
        if (u == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "cannot open port '%s': out of memory", spec);
                goto out;
        }
        (void)kiln_strlcpy(u->name, spec, sizeof(u->name));
        u->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (u->fd < 0) {
                r = kiln_fail(KILN_E_PORT_OPEN, "cannot open port '%s': socket: %s", spec,
                              proto_errno_str(errno, eb, sizeof(eb)));
                goto out;
        }
        /* a local connect completes at once or fails; EAGAIN means the listener's queue is full */
        if (connect(u->fd, (const struct sockaddr *)&sa, salen) != 0) {
                int e = errno;

                r = kiln_fail(e == EAGAIN ? KILN_E_PORT_BUSY : KILN_E_PORT_OPEN,
                              "cannot open port '%s': %s", spec,
                              proto_errno_str(e, eb, sizeof(eb)));
                goto out;
        }
        r = proto_transport_new(&usock_ops, u, spec, 0, ret);
        if (r < 0)
                goto out;
        u = NULL;
out:
        usock_close(u);
        return r;
}
