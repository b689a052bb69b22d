/*
 * Logging for people. Only station/ logs at info or above; library modules use kiln_debug() at most
 * and return codes with detail instead. Quote user-controlled strings; never log a secret.
 * Thread-safe: each line is written whole.
 */
#ifndef KILN_LOG_H
#define KILN_LOG_H

#include "kiln/error.h"

#define KILN_LOG_LINE_MAX 1024

enum kiln_log_level {
        KILN_LOG_DEBUG,
        KILN_LOG_INFO,
        KILN_LOG_WARN,
        KILN_LOG_ERR,
        KILN_LOG_MAX
};

typedef void (*kiln_log_sink_fn)(void *ctx, enum kiln_log_level level, const char *line);

void kiln_log(enum kiln_log_level level, const char *fmt, ...) KILN_PRINTF(2, 3);
void kiln_log_set_level(enum kiln_log_level level);
int kiln_log_enabled(enum kiln_log_level level);
/* Replace the sink (default: stderr with an ISO 8601 UTC timestamp). NULL restores the default. */
void kiln_log_set_sink(kiln_log_sink_fn fn, void *ctx);

#define kiln_debug(...)                                                                            \
        do {                                                                                       \
                if (kiln_log_enabled(KILN_LOG_DEBUG))                                              \
                        kiln_log(KILN_LOG_DEBUG, __VA_ARGS__);                                     \
        } while (0)

#endif
