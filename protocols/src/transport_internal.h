/* Shared by the built-in transports: their open functions and file-descriptor helpers. */
#ifndef KILN_TRANSPORT_INTERNAL_H
#define KILN_TRANSPORT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/transport.h"

/* Scheme "uart" and bare "/dev/..." paths (spec is the whole specification). */
int proto_uart_open(const char *spec, const char *rest, struct proto_transport **ret);
/* Scheme "unix". */
int proto_unix_open(const char *spec, const char *rest, struct proto_transport **ret);

/*
 * poll() one descriptor for events until deadline_ms (kiln_now_ms clock), retrying on EINTR.
 * Returns 1 with *ret_revents set, 0 when the deadline passed, KILN_E_IO (with detail naming
 * `name`) on a poll failure.
 */
int proto_fd_wait(int fd, short events, uint64_t deadline_ms, const char *name, short *ret_revents);

/* Milliseconds left until deadline_ms, 0 when passed, clamped to what poll() takes. */
int proto_ms_left(uint64_t deadline_ms);

/* strerror_r into buf; returns buf. */
const char *proto_errno_str(int e, char *buf, size_t cap);

/* errno values that mean the device went away (unplug, hangup, peer closed). */
int proto_errno_gone(int e);

#endif
