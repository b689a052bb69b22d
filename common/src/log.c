/* Logging sink: one whole line per call, serialised across threads. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "kiln/log.h"
#include "kiln/util.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static enum kiln_log_level log_level = KILN_LOG_INFO;
static kiln_log_sink_fn log_sink;
static void *log_sink_ctx;

static const char *const level_names[KILN_LOG_MAX] = {"debug", "info", "warn", "error"};

void kiln_log_set_level(enum kiln_log_level level)
{
        if (level < KILN_LOG_MAX)
                log_level = level;
}

int kiln_log_enabled(enum kiln_log_level level)
{
        return level >= log_level;
}

void kiln_log_set_sink(kiln_log_sink_fn fn, void *ctx)
{
        pthread_mutex_lock(&log_lock);
        log_sink = fn;
        log_sink_ctx = ctx;
        pthread_mutex_unlock(&log_lock);
}

void kiln_log(enum kiln_log_level level, const char *fmt, ...)
{
        char line[KILN_LOG_LINE_MAX];
        char ts[32];
        va_list ap;

        if (level >= KILN_LOG_MAX || !kiln_log_enabled(level))
                return;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&log_lock);
        if (log_sink != NULL) {
                log_sink(log_sink_ctx, level, line);
        } else {
                if (kiln_utc_iso8601(kiln_wall_ms(), ts, sizeof(ts)) < 0)
                        ts[0] = '\0';
                fprintf(stderr, "%s %s %s\n", ts, level_names[level], line);
        }
        pthread_mutex_unlock(&log_lock);
}
