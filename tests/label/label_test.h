/*
 * Helpers shared by the label tests: private directories under the build tree, running a program
 * with its output captured, decoding every QR code of a PNG with zbarimg, a one-shot TCP listener
 * standing in for a raw-port printer.
 */
#ifndef KILN_LABEL_TEST_H
#define KILN_LABEL_TEST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define LT_OUT_MAX (1u << 20)

/* KILN_BUILD_DIR / KILN_SOURCE_DIR (set by kiln_add_test), made absolute. */
const char *lt_build_dir(void);
const char *lt_source_dir(void);

/* A fresh directory BUILD/label-tmp/NAME-XXXXXX into out. */
void lt_tmpdir(const char *name, char *out, size_t cap);

/*
 * Run argv (argv[0] a path, or a name looked up in PATH) with stdout and stderr captured into
 * out / err (NUL-terminated, either may be NULL). Returns the exit status, or 128 + signal. A
 * program that cannot be started exits 127.
 */
int lt_run(const char *const *argv, char *out, size_t out_cap, char *err, size_t err_cap);

/* `kiln ARGS...` from the build tree. */
int lt_kiln(const char *const *args, char *out, size_t out_cap, char *err, size_t err_cap);

/*
 * Every QR code in a PNG, decoded by `zbarimg --raw -q`, compared as a set with want[0..n): the
 * test fails unless each expected payload is decoded exactly once and nothing else is. zbarimg
 * missing fails the test.
 */
void lt_assert_qr(const char *png, const char *const *want, unsigned n);

/* Number of '\n' in s. */
unsigned lt_count_lines(const char *s);

/* Whole file into a NUL-terminated heap buffer (free with free()). */
char *lt_read(const char *path, size_t *ret_len);

/* A listener on 127.0.0.1 (ephemeral port) that accepts one connection and keeps every byte
 * until the peer closes. */
struct lt_listener {
        int fd;
        uint16_t port;
        pthread_t thread;
        uint8_t *data;
        size_t len;
        int ok; /* 1 when the connection was accepted and read to its end */
};

void lt_listener_start(struct lt_listener *l);
/* Wait for the connection to end (bounded by ctest's timeout); data/len hold what arrived. */
void lt_listener_join(struct lt_listener *l);
void lt_listener_free(struct lt_listener *l);

/* A TCP port on 127.0.0.1 where nothing listens (bound, then closed). */
uint16_t lt_closed_port(void);

#endif
