/*
 * bench_hsm: device certificates per second through the hsm module, against the development PKI of
 * `kiln hsm init-dev --dir DIR`. Each certificate is what the station does per unit: a serial from
 * C_GenerateRandom, the certificate built from the template, its TBS hashed and signed in the token,
 * assembled, parsed back and verified. Device key pairs are made before the clock starts (the
 * device makes them, not the station).
 *
 *     bench_hsm --dir DIR [--count N] [--threads T] [--out FILE]
 *
 * Prints "name: value" lines (bench/run reads hsm_certs_per_s). --out writes the last certificate
 * (DER) so the figures can be checked by hand.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/hsm_cert.h"
#include "kiln/hsm_dev.h"
#include "kiln/hsm_devkey.h"
#include "kiln/util.h"

#define KEYS 256
#define WARMUP 50

static struct hsm_devkey *keys[KEYS];

static const char *const eku[] = {"clientAuth", "1.3.6.1.4.1.55555.2.1"};
static const struct hsm_san san_tpl[] = {
        {HSM_SAN_URI, "urn:kiln:unit:bench"},
        {HSM_SAN_EMAIL, "quality@example.com"},
        {HSM_SAN_IP, "192.0.2.7"},
};
static const struct hsm_extension ext[] = {
        {"1.3.6.1.4.1.55555.3.1", 0, HSM_EXT_DER_HEX, "0403010203"},
        {"1.3.6.1.4.1.55555.3.2", 0, HSM_EXT_UTF8, "product=smartplug-a1"},
};

struct job {
        struct hsm_issuer *iss;
        unsigned first, count;
        int failed;
        struct hsm_cert *last;
};

/* One unit's certificate: subject and SAN DNS name from the unit number, as the station fills them. */
static int issue_one(struct hsm_issuer *iss, unsigned unit, struct hsm_cert **ret)
{
        char cn[32], sn[16], dns[64];
        struct hsm_name_attr subject[] = {
                {"C", "DE"},  {"O", "Kiln Bench Devices"}, {"OU", "Line 3"},
                {"CN", cn},   {"serialNumber", sn},
        };
        struct hsm_san san[4];
        struct hsm_cert_template t = {
                .subject = subject,
                .n_subject = 5,
                .not_after = HSM_TIME_NO_EXPIRY,
                .key_usage = HSM_KU_DIGITAL_SIGNATURE | HSM_KU_KEY_AGREEMENT,
                .eku = eku,
                .n_eku = 2,
                .san = san,
                .n_san = 4,
                .ext = ext,
                .n_ext = 2,
        };

        snprintf(cn, sizeof(cn), "SP-A1-%06u", unit);
        snprintf(sn, sizeof(sn), "%06u", unit);
        snprintf(dns, sizeof(dns), "sp-a1-%06u.devices.example", unit);
        san[0] = (struct hsm_san){HSM_SAN_DNS, dns};
        memcpy(&san[1], san_tpl, sizeof(san_tpl));
        return hsm_cert_issue(iss, &t, keys[unit % KEYS], ret);
}

static void *worker(void *arg)
{
        struct job *j = arg;

        for (unsigned i = 0; i < j->count; i++) {
                struct hsm_cert *c = NULL;

                if (issue_one(j->iss, j->first + i, &c) != KILN_OK) {
                        fprintf(stderr, "bench_hsm: %s\n", kiln_err_detail());
                        j->failed = 1;
                        return NULL;
                }
                hsm_cert_free(j->last);
                j->last = c;
        }
        return NULL;
}

static int make_keys(void)
{
        for (int i = 0; i < KEYS; i++) {
                EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
                uint8_t point[65];
                size_t len = 0;
                int r;

                if (pk == NULL || EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY,
                                                                  point, sizeof(point),
                                                                  &len) != 1) {
                        EVP_PKEY_free(pk);
                        return KILN_E_CRYPTO;
                }
                EVP_PKEY_free(pk);
                r = hsm_devkey_parse(point, len, &keys[i]);
                if (r < 0)
                        return r;
        }
        return KILN_OK;
}

/* Issue count certificates over threads; returns seconds taken, -1 on failure. */
static double run(struct hsm_issuer *iss, unsigned first, unsigned count, unsigned threads,
                  struct hsm_cert **ret_last)
{
        struct job jobs[64];
        pthread_t th[64];
        uint64_t t0 = kiln_now_us();
        int failed = 0;

        for (unsigned i = 0; i < threads; i++) {
                jobs[i] = (struct job){iss, first + i * (count / threads), count / threads, 0,
                                       NULL};
                if (pthread_create(&th[i], NULL, worker, &jobs[i]) != 0)
                        return -1;
        }
        for (unsigned i = 0; i < threads; i++) {
                pthread_join(th[i], NULL);
                failed |= jobs[i].failed;
                if (ret_last != NULL && i == 0) {
                        *ret_last = jobs[i].last;
                        jobs[i].last = NULL;
                }
                hsm_cert_free(jobs[i].last);
        }
        if (failed)
                return -1;
        return (double)(kiln_now_us() - t0) / 1e6;
}

int main(int argc, char **argv)
{
        const char *dir = NULL, *out = NULL;
        uint32_t count = 2000, threads = 1;
        struct hsm_token *t = NULL;
        struct hsm_issuer *iss = NULL;
        struct hsm_cert *last = NULL;
        struct hsm_config cfg;
        struct hsm_dev d;
        double secs;
        int rc = 1;

        for (int i = 1; i < argc; i += 2) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                int ok = v != NULL;

                if (ok && strcmp(argv[i], "--dir") == 0)
                        dir = v;
                else if (ok && strcmp(argv[i], "--out") == 0)
                        out = v;
                else if (ok && strcmp(argv[i], "--count") == 0)
                        ok = kiln_parse_u32(v, 1, 10000000, &count) == KILN_OK;
                else if (ok && strcmp(argv[i], "--threads") == 0)
                        ok = kiln_parse_u32(v, 1, 64, &threads) == KILN_OK;
                else
                        ok = 0;
                if (!ok) {
                        dir = NULL;
                        break;
                }
        }
        if (dir == NULL) {
                fprintf(stderr, "usage: bench_hsm --dir DIR [--count N] [--threads T] "
                                "[--out FILE]\n");
                return 2;
        }
        if (hsm_dev_use(dir, NULL, &d) < 0)
                goto out;
        cfg = d.cfg;
        cfg.pool_size = threads;
        cfg.production = 1;
        if (hsm_token_open(&cfg, &t) < 0 || hsm_issuer_load(t, HSM_DEV_ISSUING_URI, &iss) < 0 ||
            make_keys() < 0)
                goto out;
        if (run(iss, 0, WARMUP, 1, NULL) < 0)
                goto out;
        secs = run(iss, WARMUP, count - count % threads, threads, &last);
        if (secs <= 0)
                goto out;
        printf("hsm_certs: %u\n", count - count % threads);
        printf("hsm_threads: %u\n", threads);
        printf("hsm_cert_us: %.1f\n", secs * 1e6 / (count - count % threads) * threads);
        printf("hsm_certs_per_s: %.0f\n", (count - count % threads) / secs);
        if (out != NULL && last != NULL &&
            kiln_file_write_atomic(out, last->der, last->len, 0644) < 0)
                goto out;
        rc = 0;
out:
        if (rc != 0)
                fprintf(stderr, "bench_hsm: %s\n",
                        kiln_err_detail()[0] ? kiln_err_detail() : "failed");
        hsm_cert_free(last);
        for (int i = 0; i < KEYS; i++)
                hsm_devkey_free(keys[i]);
        hsm_issuer_free(iss);
        hsm_token_free(t);
        return rc;
}
