/* Small helpers used across modules: allocation, strings, numbers, hex, time, files. */
#ifndef KILN_UTIL_H
#define KILN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kiln/error.h"

/*
 * Allocation goes through these wrappers so a test can make the n-th allocation fail
 * (kiln_alloc_fail_after). They never abort; callers handle NULL.
 */
void *kiln_malloc(size_t n);
void *kiln_calloc(size_t count, size_t size);
void *kiln_realloc(void *p, size_t n);
char *kiln_strdup(const char *s);
char *kiln_strndup(const char *s, size_t n);
void kiln_free(void *p);
/* Test hook: the allocation after `n` more succeed fails; -1 disables (default). Not thread-safe. */
void kiln_alloc_fail_after(long n);

/* Copy with truncation detection: KILN_E_RANGE (dst still NUL-terminated) when src does not fit. */
int kiln_strlcpy(char *dst, const char *src, size_t cap);
/* snprintf that returns KILN_E_RANGE on truncation instead of a length. */
int kiln_snprintf(char *dst, size_t cap, const char *fmt, ...) KILN_PRINTF(3, 4);

/* Decimal or 0x-hex unsigned integer within [min, max]; the whole string must be the number. */
int kiln_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret);
int kiln_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *ret);

/* Lowercase hex. out needs 2*n+1 bytes. */
int kiln_hex_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/* Even-length hex (either case, no separators) into out; *ret_len bytes written. */
int kiln_hex_decode(const char *hex, uint8_t *out, size_t cap, size_t *ret_len);

uint64_t kiln_now_ms(void); /* monotonic */
uint64_t kiln_now_us(void); /* monotonic */
int64_t kiln_wall_ms(void); /* Unix epoch, UTC */
/* "2026-11-24T10:11:12.345Z" (with millis) into out[32]. */
int kiln_utc_iso8601(int64_t epoch_ms, char *out, size_t cap);
void kiln_sleep_ms(unsigned ms);

/* Read a whole file of at most max bytes; KILN_E_LIMIT when larger. The buffer is NUL-terminated
 * (not counted in *ret_len). Caller frees with kiln_free. */
int kiln_file_read(const char *path, size_t max, uint8_t **ret, size_t *ret_len);
/* Write path atomically and durably: temp file in the same directory, fsync, rename, fsync dir. */
int kiln_file_write_atomic(const char *path, const void *p, size_t n, mode_t mode);
/* mkdir -p with the given mode for created directories. */
int kiln_mkdirs(const char *path, mode_t mode);

#endif
