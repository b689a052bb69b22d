/* Portable SHA-256 (FIPS 180-4) for the device agent: no allocation, no OS, C99. */
#include <string.h>

#include "kiln/agent.h"

static const uint32_t sha256_k[64] = {
        0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
        0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
        0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
        0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
        0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
        0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
        0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
        0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
        0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
        0xc67178f2u,
};

static uint32_t ror32(uint32_t x, unsigned n)
{
        return (x >> n) | (x << (32u - n));
}

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
        uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
        unsigned i;

        for (i = 0; i < 16; i++)
                w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
                       ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
        for (i = 16; i < 64; i++) {
                uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);

                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        a = h[0];
        b = h[1];
        c = h[2];
        d = h[3];
        e = h[4];
        f = h[5];
        g = h[6];
        k = h[7];
        for (i = 0; i < 64; i++) {
                t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
                     sha256_k[i] + w[i];
                t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
                k = g;
                g = f;
                f = e;
                e = d + t1;
                d = c;
                c = b;
                b = a;
                a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += k;
}

void kiln_agent_sha256_init(struct kiln_agent_sha256 *c)
{
        static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                       0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};

        memcpy(c->h, iv, sizeof(iv));
        c->bytes = 0;
        c->fill = 0;
}

void kiln_agent_sha256_update(const void *p, size_t n, struct kiln_agent_sha256 *c)
{
        const uint8_t *b = p;

        c->bytes += n;
        while (n > 0) {
                size_t take;

                if (c->fill == 0 && n >= 64) {
                        sha256_block(c->h, b);
                        b += 64;
                        n -= 64;
                        continue;
                }
                take = 64u - c->fill;
                if (take > n)
                        take = n;
                memcpy(c->block + c->fill, b, take);
                c->fill += (uint32_t)take;
                b += take;
                n -= take;
                if (c->fill == 64) {
                        sha256_block(c->h, c->block);
                        c->fill = 0;
                }
        }
}

void kiln_agent_sha256_final(struct kiln_agent_sha256 *c, uint8_t ret_digest[KILN_AGENT_SHA256_LEN])
{
        uint64_t bits = c->bytes * 8u;
        unsigned i;

        c->block[c->fill++] = 0x80;
        if (c->fill > 56) {
                memset(c->block + c->fill, 0, 64u - c->fill);
                sha256_block(c->h, c->block);
                c->fill = 0;
        }
        memset(c->block + c->fill, 0, 56u - c->fill);
        for (i = 0; i < 8; i++)
                c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
        sha256_block(c->h, c->block);
        for (i = 0; i < 8; i++) {
                ret_digest[4 * i] = (uint8_t)(c->h[i] >> 24);
                ret_digest[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
                ret_digest[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
                ret_digest[4 * i + 3] = (uint8_t)c->h[i];
        }
        memset(c, 0, sizeof(*c));
}
