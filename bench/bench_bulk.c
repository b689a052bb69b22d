/*
 * bench_bulk: payload throughput of an object transfer over a paced UART, against the line rate.
 *
 *     bench_bulk --sim PATH --dir WORK [--baud B] [--kib N] [--repeat R] [--flash-ms-per-kib MS]
 *
 * One kiln-dut-sim (a fresh chip, state file in WORK) on a pseudo-terminal with the line model at B
 * baud (default 115200: every byte takes 10 bit times each way). The host opens the pts as the
 * station does (the UART transport), says HELLO (4096-byte payloads both sides offer by default),
 * then times R writes (default 5) of N KiB (default 64) of random data with proto_object_write():
 * the resume check (OBJECT_HASH), the chunks, the final OBJECT_HASH verification, each with its
 * response. Objects have distinct names so each write is complete, never "already there".
 *
 *     bulk_line_rate_pct = payload bytes / seconds / (B / 10) * 100   (median of the R writes)
 *
 * The median, because on a loaded machine the simulator now and then holds a response back for up
 * to a second (a race in its poll loop, reported separately): that is the fixture, not the line or
 * the station. bulk_line_rate_pct_min and _mean show what the slowest write and the mean were.
 *
 * Also printed: the bytes that crossed the line each way per payload byte (framing, COBS and the
 * small requests and responses around the chunks) and the session's retries and timeouts, which
 * must be 0 for the figure to mean anything.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "bench_common.h"
#include "kiln/error.h"
#include "kiln/session.h"
#include "kiln/simfix.h"
#include "kiln/transport.h"
#include "kiln/util.h"

#define PATH_CAP 4096
#define KIB_MAX 16384u

int main(int argc, char **argv)
{
        const char *sim = NULL, *dir = NULL;
        uint32_t baud = 115200, kib = 64, repeat = 5, flash = 0;
        struct simfix_dev dev = {.pid = 0};
        struct proto_transport *t = NULL;
        struct proto_session *s = NULL;
        struct proto_session_stats st0, st1;
        uint8_t *data = NULL;
        char state[PATH_CAP], logp[PATH_CAP], bs[16], fs[16], load0[64], load1[64];
        const char *args[12];
        double secs = 0, rate[100], tmp;
        size_t len;
        unsigned n = 0;
        int r = KILN_OK, rc = 1;

        for (int i = 1; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int ok = v != NULL;

                if (ok && strcmp(argv[i], "--sim") == 0)
                        sim = v;
                else if (ok && strcmp(argv[i], "--dir") == 0)
                        dir = v;
                else if (ok && strcmp(argv[i], "--baud") == 0)
                        ok = kiln_parse_u32(v, 300, 4000000, &baud) == KILN_OK;
                else if (ok && strcmp(argv[i], "--kib") == 0)
                        ok = kiln_parse_u32(v, 1, KIB_MAX, &kib) == KILN_OK;
                else if (ok && strcmp(argv[i], "--repeat") == 0)
                        ok = kiln_parse_u32(v, 1, 100, &repeat) == KILN_OK;
                else if (ok && strcmp(argv[i], "--flash-ms-per-kib") == 0)
                        ok = kiln_parse_u32(v, 0, 60000, &flash) == KILN_OK;
                else
                        ok = 0;
                if (!ok) {
                        sim = NULL;
                        break;
                }
        }
        if (sim == NULL || dir == NULL) {
                fprintf(stderr, "usage: bench_bulk --sim PATH --dir WORK [--baud B] [--kib N] "
                                "[--repeat R] [--flash-ms-per-kib MS]\n");
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        r = kiln_mkdirs(dir, 0700);
        if (r < 0)
                goto out;
        if (kiln_snprintf(state, sizeof(state), "%s/bulk.state", dir) < 0 ||
            kiln_snprintf(logp, sizeof(logp), "%s/bulk.log", dir) < 0) {
                r = kiln_fail(KILN_E_RANGE, "path too long");
                goto out;
        }
        unlink(state);
        unlink(logp);
        snprintf(bs, sizeof(bs), "%u", baud);
        snprintf(fs, sizeof(fs), "%u", flash);
        args[n++] = "--state";
        args[n++] = state;
        args[n++] = "--baud";
        args[n++] = bs;
        args[n++] = "--flash-ms-per-kib";
        args[n++] = fs;
        if (getenv("KILN_BENCH_SIM_VERBOSE") != NULL)
                args[n++] = "-v";
        args[n] = NULL;
        r = simfix_start(sim, args, logp, 10000, &dev);
        if (r < 0)
                goto out;
        len = (size_t)kib * 1024u;
        data = kiln_malloc(len);
        if (data == NULL) {
                r = KILN_E_NOMEM;
                goto out;
        }
        r = proto_transport_open(dev.port, &t);
        if (r == KILN_OK)
                r = proto_session_new(t, NULL, &s);
        if (r == KILN_OK)
                r = proto_session_hello(s, NULL);
        if (r < 0)
                goto out;
        proto_session_stats_get(s, &st0);
        bench_loadavg(load0, sizeof(load0));
        for (uint32_t i = 0; i < repeat; i++) {
                char name[32];
                uint64_t t0;

                if (RAND_bytes(data, (int)len) != 1) {
                        r = kiln_fail(KILN_E_CRYPTO, "no random bytes");
                        goto out;
                }
                snprintf(name, sizeof(name), "bulk%u", i);
                t0 = kiln_now_us();
                r = proto_object_write(s, name, 0, data, len, NULL, NULL);
                tmp = (double)(kiln_now_us() - t0) / 1e6;
                if (r < 0)
                        goto out;
                secs += tmp;
                rate[i] = (double)len / tmp / (baud / 10.0) * 100.0;
        }
        bench_loadavg(load1, sizeof(load1));
        proto_session_stats_get(s, &st1);
        printf("bulk_bytes: %zu\n", len);
        printf("bulk_writes: %u\n", repeat);
        printf("bulk_payload_bytes_per_s: %.0f\n", (double)len * repeat / secs);
        printf("bulk_line_bytes_per_s: %.0f\n", baud / 10.0);
        /* median of the writes' rates (insertion sort: at most 100) */
        for (uint32_t i = 1; i < repeat; i++)
                for (uint32_t j = i; j > 0 && rate[j - 1] > rate[j]; j--) {
                        tmp = rate[j];
                        rate[j] = rate[j - 1];
                        rate[j - 1] = tmp;
                }
        printf("bulk_line_rate_pct: %.1f\n",
               repeat % 2 ? rate[repeat / 2] : (rate[repeat / 2 - 1] + rate[repeat / 2]) / 2);
        printf("bulk_line_rate_pct_min: %.1f\n", rate[0]);
        printf("bulk_line_rate_pct_mean: %.1f\n",
               (double)len * repeat / secs / (baud / 10.0) * 100.0);
        printf("bulk_max_payload: %u\n", proto_session_max_payload(s));
        printf("bulk_wire_out_per_payload: %.4f\n",
               (double)(st1.bytes_out - st0.bytes_out) / ((double)len * repeat));
        printf("bulk_wire_in_per_payload: %.4f\n",
               (double)(st1.bytes_in - st0.bytes_in) / ((double)len * repeat));
        printf("bulk_requests: %llu\n", (unsigned long long)(st1.requests - st0.requests));
        printf("bulk_retries: %llu\n", (unsigned long long)(st1.retries - st0.retries));
        printf("bulk_timeouts: %llu\n", (unsigned long long)(st1.timeouts - st0.timeouts));
        printf("bulk_load_before: %s\n", load0);
        printf("bulk_load_after: %s\n", load1);
        rc = 0;
out:
        if (rc != 0)
                fprintf(stderr, "bench_bulk: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : kiln_strerror(r));
        proto_session_free(s);
        proto_transport_free(t);
        simfix_stop(&dev, 5000, NULL);
        kiln_free(data);
        return rc;
}
