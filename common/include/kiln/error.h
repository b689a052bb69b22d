/*
 * Error text and the per-thread error detail.
 *
 * A failing function returns a negative enum kiln_err and may record one line of detail with
 * kiln_fail(). The first detail recorded since the last kiln_err_reset() wins: the lowest-level
 * message is the one kept, the callers above only return the code. At a library boundary append the
 * foreign code (CK_RV name, sqlite3_errmsg, drained OpenSSL queue) with kiln_fail_append().
 *
 * The detail is thread-local, so concurrent slots do not see each other's messages. Call
 * kiln_err_reset() at the start of each top-level operation (one unit step, one CLI command).
 * Detail text must never contain a secret.
 */
#ifndef KILN_ERROR_H
#define KILN_ERROR_H

#include <stdarg.h>

#include "kiln/err.h"

#ifdef __GNUC__
#define KILN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define KILN_VPRINTF(a) __attribute__((format(printf, a, 0)))
#else
#define KILN_PRINTF(a, b)
#define KILN_VPRINTF(a)
#endif

/* Short description of an error code ("timeout", "PKCS#11 PIN incorrect"). Never NULL. */
const char *kiln_strerror(int code);

/* Stable symbolic name of an error code ("KILN_E_TIMEOUT"). Never NULL. */
const char *kiln_errname(int code);

/* Record detail if none is recorded yet; returns code unchanged so callers can `return kiln_fail(..)`. */
int kiln_fail(int code, const char *fmt, ...) KILN_PRINTF(2, 3);
int kiln_failv(int code, const char *fmt, va_list ap) KILN_VPRINTF(2);

/* Append ": text" to the current detail (or start one). Returns code. Used at library boundaries. */
int kiln_fail_append(int code, const char *fmt, ...) KILN_PRINTF(2, 3);

/* The current detail line, "" when none. Valid until the next kiln_fail/reset on this thread. */
const char *kiln_err_detail(void);

/* The code passed to the kiln_fail() call that recorded the detail, 0 when none. */
int kiln_err_detail_code(void);

void kiln_err_reset(void);

#endif
