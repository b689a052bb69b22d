/* Allocation wrappers, strings, numbers, hex, time and durable file helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln/limits.h"
#include "kiln/util.h"

static long alloc_countdown = -1;

static int alloc_should_fail(void)
{
        if (alloc_countdown < 0)
                return 0;
        if (alloc_countdown == 0)
                return 1;
        alloc_countdown--;
        return 0;
}

void kiln_alloc_fail_after(long n)
{
        alloc_countdown = n;
}

void *kiln_malloc(size_t n)
{
        if (alloc_should_fail())
                return NULL;
        return malloc(n ? n : 1);
}

void *kiln_calloc(size_t count, size_t size)
{
        if (alloc_should_fail())
                return NULL;
        if (count == 0 || size == 0)
                count = size = 1;
        return calloc(count, size);
}

void *kiln_realloc(void *p, size_t n)
{
        if (alloc_should_fail())
                return NULL;
        return realloc(p, n ? n : 1);
}

char *kiln_strndup(const char *s, size_t n)
{
        size_t len = strnlen(s, n);
        char *d = kiln_malloc(len + 1);

        if (d == NULL)
                return NULL;
        memcpy(d, s, len);
        d[len] = '\0';
        return d;
}

char *kiln_strdup(const char *s)
{
        return kiln_strndup(s, SIZE_MAX);
}

void kiln_free(void *p)
{
        free(p);
}

int kiln_strlcpy(char *dst, const char *src, size_t cap)
{
        size_t n;

        if (cap == 0)
                return KILN_E_RANGE;
        n = strnlen(src, cap - 1);
        memcpy(dst, src, n);
        dst[n] = '\0';
        /* src[n] is readable: either src's terminator or a byte that did not fit */
        return src[n] == '\0' ? KILN_OK : KILN_E_RANGE;
}

int kiln_snprintf(char *dst, size_t cap, const char *fmt, ...)
{
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(dst, cap, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t)n >= cap)
                return KILN_E_RANGE;
        return KILN_OK;
}

int kiln_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
        unsigned long long v;
        char *end = NULL;
        int base = 10;

        if (s == NULL || *s == '\0')
                return KILN_E_SYNTAX;
        /* strtoull accepts leading space and a sign; we do not */
        if (!((*s >= '0' && *s <= '9')))
                return KILN_E_SYNTAX;
        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
                base = 16;
                s += 2;
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
                      (*s >= 'A' && *s <= 'F')))
                        return KILN_E_SYNTAX;
        }
        errno = 0;
        v = strtoull(s, &end, base);
        if (errno == ERANGE)
                return KILN_E_RANGE;
        if (end == s || *end != '\0')
                return KILN_E_SYNTAX;
        if (v < min || v > max)
                return KILN_E_RANGE;
        *ret = v;
        return KILN_OK;
}

int kiln_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret)
{
        uint64_t v;
        int r = kiln_parse_u64(s, min, max, &v);

        if (r == KILN_OK)
                *ret = (uint32_t)v;
        return r;
}

int kiln_hex_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
        static const char digits[] = "0123456789abcdef";

        if (n > (SIZE_MAX - 1) / 2 || cap < 2 * n + 1)
                return KILN_E_RANGE;
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[in[i] >> 4];
                out[2 * i + 1] = digits[in[i] & 15];
        }
        out[2 * n] = '\0';
        return KILN_OK;
}

static int hex_nibble(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int kiln_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *ret_len)
{
        size_t n = strlen(hex);

        if (n % 2 != 0)
                return KILN_E_SYNTAX;
        if (n / 2 > cap)
                return KILN_E_RANGE;
        for (size_t i = 0; i < n / 2; i++) {
                int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return KILN_E_SYNTAX;
                out[i] = (uint8_t)(hi << 4 | lo);
        }
        *ret_len = n / 2;
        return KILN_OK;
}

uint64_t kiln_now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t kiln_now_ms(void)
{
        return kiln_now_us() / 1000u;
}

int64_t kiln_wall_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kiln_utc_iso8601(int64_t epoch_ms, char *out, size_t cap)
{
        time_t secs = (time_t)(epoch_ms / 1000);
        struct tm tm;

        if (epoch_ms < 0 || gmtime_r(&secs, &tm) == NULL)
                return KILN_E_RANGE;
        return kiln_snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                             (int)(epoch_ms % 1000));
}

void kiln_sleep_ms(unsigned ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
}

int kiln_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len)
{
        int fd = -1, r;
        struct stat st;
        uint8_t *p = NULL;
        size_t len = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = kiln_fail(errno == ENOENT ? KILN_E_NOT_FOUND : KILN_E_IO, "cannot open '%s': %s",
                              path, strerror(errno));
                goto out;
        }
        if (fstat(fd, &st) < 0) {
                r = kiln_fail(KILN_E_IO, "cannot stat '%s': %s", path, strerror(errno));
                goto out;
        }
        if (!S_ISREG(st.st_mode)) {
                r = kiln_fail(KILN_E_INVAL, "'%s' is not a regular file", path);
                goto out;
        }
        if ((uint64_t)st.st_size > max) {
                r = kiln_fail(KILN_E_LIMIT, "'%s' is %lld bytes, over the limit of %zu", path,
                              (long long)st.st_size, max);
                goto out;
        }
        p = kiln_malloc((size_t)st.st_size + 1);
        if (p == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        /* read until EOF but never past max: the file may grow while we read */
        for (;;) {
                ssize_t n;
                size_t want = (size_t)st.st_size + 1 - len;

                if (want == 0) {
                        r = kiln_fail(KILN_E_LIMIT, "'%s' grew while being read", path);
                        goto out;
                }
                n = read(fd, p + len, want);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = kiln_fail(KILN_E_IO, "cannot read '%s': %s", path, strerror(errno));
                        goto out;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        p[len] = '\0';
        *ret = p;
        *ret_len = len;
        p = NULL;
        r = KILN_OK;
out:
        kiln_free(p);
        if (fd >= 0)
                close(fd);
        return r;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return errno == ENOSPC || errno == EDQUOT ? KILN_E_NOSPACE : KILN_E_IO;
                p += w;
                n -= (size_t)w;
        }
        return KILN_OK;
}

int kiln_file_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
        char tmp[KILN_PATH_MAX], dir[KILN_PATH_MAX];
        int fd = -1, dfd = -1, r;
        char *slash;

        if (kiln_snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) < 0 ||
            kiln_strlcpy(dir, path, sizeof(dir)) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", path);
        slash = strrchr(dir, '/');
        if (slash == NULL)
                kiln_strlcpy(dir, ".", sizeof(dir));
        else if (slash == dir)
                dir[1] = '\0';
        else
                *slash = '\0';

        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0) {
                r = kiln_fail(KILN_E_IO, "cannot create '%s': %s", tmp, strerror(errno));
                goto out;
        }
        r = write_all(fd, p, n);
        if (r < 0) {
                r = kiln_fail(r, "cannot write '%s': %s", tmp, strerror(errno));
                goto out;
        }
        if (fsync(fd) < 0) {
                r = kiln_fail(KILN_E_IO, "cannot sync '%s': %s", tmp, strerror(errno));
                goto out;
        }
        close(fd);
        fd = -1;
        if (rename(tmp, path) < 0) {
                r = kiln_fail(KILN_E_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                              strerror(errno));
                goto out;
        }
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0 && fsync(dfd) < 0) {
                r = kiln_fail(KILN_E_IO, "cannot sync directory '%s': %s", dir, strerror(errno));
                goto out;
        }
        r = KILN_OK;
out:
        if (fd >= 0) {
                close(fd);
                unlink(tmp);
        }
        if (dfd >= 0)
                close(dfd);
        return r;
}

int kiln_mkdirs(const char *path, mode_t mode)
{
        char p[KILN_PATH_MAX];
        size_t n;

        if (kiln_strlcpy(p, path, sizeof(p)) < 0)
                return kiln_fail(KILN_E_RANGE, "path too long: '%s'", path);
        n = strlen(p);
        for (size_t i = 1; i <= n; i++) {
                if (p[i] != '/' && p[i] != '\0')
                        continue;
                p[i] = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return kiln_fail(KILN_E_IO, "cannot create directory '%s': %s", p,
                                         strerror(errno));
                if (i < n)
                        p[i] = '/';
        }
        return KILN_OK;
}
