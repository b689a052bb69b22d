/* Transport object, scheme registry and port-specification dispatch. See kiln/transport.h. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "kiln/error.h"
#include "kiln/transport.h"
#include "kiln/util.h"
#include "transport_internal.h"
#include "transport_usb_internal.h"

#define SCHEME_NAME_MAX 15u

struct proto_transport {
        const struct proto_transport_ops *ops;
        void *ctx;
        uint32_t baud;
        char name[KILN_PORT_SPEC_MAX + 1];
};

int proto_transport_new(const struct proto_transport_ops *ops, void *ctx, const char *name,
                        uint32_t baud, struct proto_transport **ret)
{
        struct proto_transport *t = NULL;
        int r;

        if (ops == NULL || ops->read == NULL || ops->write == NULL || name == NULL) {
                r = kiln_fail(KILN_E_INVAL, "transport: read and write operations and a name are "
                                            "required");
                goto out;
        }
        if (name[0] == '\0' || strnlen(name, KILN_PORT_SPEC_MAX + 1) > KILN_PORT_SPEC_MAX) {
                r = kiln_fail(KILN_E_LIMIT, "transport name must be 1..%u bytes",
                              KILN_PORT_SPEC_MAX);
                goto out;
        }
        t = kiln_calloc(1, sizeof(*t));
        if (t == NULL) {
                r = kiln_fail(KILN_E_NOMEM, "transport '%s': out of memory", name);
                goto out;
        }
        t->ops = ops;
        t->ctx = ctx;
        t->baud = baud;
        (void)kiln_strlcpy(t->name, name, sizeof(t->name));
        *ret = t;
        t = NULL;
        r = KILN_OK;
out:
        kiln_free(t);
        return r;
}

void proto_transport_free(struct proto_transport *t)
{
        if (t == NULL)
                return;
        if (t->ops->close != NULL)
                t->ops->close(t->ctx);
        kiln_free(t);
}

int proto_transport_read(struct proto_transport *t, uint8_t *buf, size_t n, unsigned timeout_ms)
{
        if (n == 0)
                return kiln_fail(KILN_E_INVAL, "read of 0 bytes from '%s'", t->name);
        if (n > INT_MAX)
                n = INT_MAX;
        return t->ops->read(t->ctx, buf, n, timeout_ms);
}

int proto_transport_write(struct proto_transport *t, const uint8_t *buf, size_t n,
                          unsigned timeout_ms)
{
        if (n == 0)
                return KILN_OK;
        return t->ops->write(t->ctx, buf, n, timeout_ms);
}

uint32_t proto_transport_baud(const struct proto_transport *t)
{
        return t->baud;
}

const char *proto_transport_name(const struct proto_transport *t)
{
        return t->name;
}

uint64_t proto_transport_now_ms(const struct proto_transport *t)
{
        if (t->ops->now_ms != NULL)
                return t->ops->now_ms(t->ctx);
        return kiln_now_ms();
}

/* --- scheme registry --- */

static struct proto_transport_scheme scheme_uart = {"uart", proto_uart_open, NULL};
static struct proto_transport_scheme scheme_unix = {"unix", proto_unix_open, &scheme_uart};
static struct proto_transport_scheme scheme_usb = {"usb", proto_usb_open, &scheme_unix};
static struct proto_transport_scheme *registry = &scheme_usb;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static int scheme_name_ok(const char *s, size_t n)
{
        if (n < 1 || n > SCHEME_NAME_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
                        return 0;
        return 1;
}

/* Caller holds registry_lock. */
static struct proto_transport_scheme *scheme_find(const char *name, size_t n)
{
        for (struct proto_transport_scheme *s = registry; s != NULL; s = s->next)
                if (strlen(s->name) == n && memcmp(s->name, name, n) == 0)
                        return s;
        return NULL;
}

int proto_transport_scheme_register(struct proto_transport_scheme *scheme)
{
        int r;

        if (scheme == NULL || scheme->name == NULL || scheme->open == NULL ||
            !scheme_name_ok(scheme->name, strnlen(scheme->name, SCHEME_NAME_MAX + 1)))
                return kiln_fail(KILN_E_INVAL,
                                 "transport scheme names are 1..%u characters of "
                                 "[a-z0-9], with an open function",
                                 SCHEME_NAME_MAX);
        pthread_mutex_lock(&registry_lock);
        if (scheme_find(scheme->name, strlen(scheme->name)) != NULL) {
                r = kiln_fail(KILN_E_EXISTS, "transport scheme '%s' is already registered",
                              scheme->name);
        } else {
                scheme->next = registry;
                registry = scheme;
                r = KILN_OK;
        }
        pthread_mutex_unlock(&registry_lock);
        return r;
}

int proto_transport_open(const char *spec, struct proto_transport **ret)
{
        struct proto_transport_scheme *s;
        proto_transport_open_fn open_fn = NULL;
        const char *colon;
        size_t n;

        if (spec == NULL || spec[0] == '\0')
                return kiln_fail(KILN_E_PORT_SPEC, "empty port specification");
        if (strnlen(spec, KILN_PORT_SPEC_MAX + 1) > KILN_PORT_SPEC_MAX)
                return kiln_fail(KILN_E_PORT_SPEC, "port specification longer than %u bytes",
                                 KILN_PORT_SPEC_MAX);
        /* a bare path is a UART: the common case on a line is just "/dev/ttyUSB0" */
        if (spec[0] == '/')
                return proto_uart_open(spec, spec, ret);
        colon = strchr(spec, ':');
        n = colon == NULL ? 0 : (size_t)(colon - spec);
        if (colon == NULL || !scheme_name_ok(spec, n))
                return kiln_fail(KILN_E_PORT_SPEC,
                                 "bad port specification '%s': expected /dev/..., uart:/dev/..., "
                                 "unix:/path or another registered scheme",
                                 spec);
        pthread_mutex_lock(&registry_lock);
        s = scheme_find(spec, n);
        if (s != NULL) {
                open_fn = s->open;
        } else {
                char known[128] = "";
                size_t k = 0;

                for (s = registry; s != NULL && k + SCHEME_NAME_MAX + 3 < sizeof(known);
                     s = s->next) {
                        size_t l = strlen(s->name);

                        if (k > 0) {
                                memcpy(known + k, ", ", 2);
                                k += 2;
                        }
                        memcpy(known + k, s->name, l);
                        k += l;
                        known[k] = '\0';
                }
                pthread_mutex_unlock(&registry_lock);
                return kiln_fail(KILN_E_PORT_SPEC, "unknown port scheme '%.*s' in '%s' (known: %s)",
                                 (int)n, spec, spec, known);
        }
        pthread_mutex_unlock(&registry_lock);
        return open_fn(spec, colon + 1, ret);
}

/* --- helpers for descriptor-based transports --- */

int proto_ms_left(uint64_t deadline_ms)
{
        uint64_t now = kiln_now_ms();

        if (now >= deadline_ms)
                return 0;
        if (deadline_ms - now > INT_MAX)
                return INT_MAX;
        return (int)(deadline_ms - now);
}

int proto_fd_wait(int fd, short events, uint64_t deadline_ms, const char *name, short *ret_revents)
{
        struct pollfd pfd;
        char eb[128];

        for (;;) {
                int left = proto_ms_left(deadline_ms);
                int r;

                pfd.fd = fd;
                pfd.events = events;
                pfd.revents = 0;
                r = poll(&pfd, 1, left);
                if (r > 0) {
                        *ret_revents = pfd.revents;
                        return 1;
                }
                if (r == 0) {
                        if (left == 0 || proto_ms_left(deadline_ms) == 0)
                                return 0;
                        continue; /* woke early (clock granularity): wait out the rest */
                }
                if (errno == EINTR)
                        continue;
                return kiln_fail(KILN_E_IO, "poll on '%s': %s", name,
                                 proto_errno_str(errno, eb, sizeof(eb)));
        }
}

const char *proto_errno_str(int e, char *buf, size_t cap)
{
        if (strerror_r(e, buf, cap) != 0)
                (void)kiln_snprintf(buf, cap, "error %d", e);
        return buf;
}

int proto_errno_gone(int e)
{
        return e == EIO || e == ENXIO || e == ENODEV || e == EPIPE || e == ECONNRESET ||
               e == ENOTCONN || e == ESHUTDOWN;
}
