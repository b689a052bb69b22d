/* Host-side helpers for the agent and simulator tests (see test_host.h). */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "kiln/endian.h"
#include "kiln/frame.h"
#include "test_host.h"

void th_pb_reset(struct th_pb *pb)
{
        pb->n = 0;
}

void th_pb_bytes(struct th_pb *pb, const void *p, size_t n)
{
        if (n > sizeof(pb->b) - pb->n)
                n = sizeof(pb->b) - pb->n;
        if (n > 0)
                memcpy(pb->b + pb->n, p, n);
        pb->n += n;
}

void th_pb_u8(struct th_pb *pb, uint8_t v)
{
        th_pb_bytes(pb, &v, 1);
}

void th_pb_le16(struct th_pb *pb, uint16_t v)
{
        uint8_t b[2];

        kiln_put_le16(b, v);
        th_pb_bytes(pb, b, 2);
}

void th_pb_le32(struct th_pb *pb, uint32_t v)
{
        uint8_t b[4];

        kiln_put_le32(b, v);
        th_pb_bytes(pb, b, 4);
}

void th_pb_name(struct th_pb *pb, const char *s)
{
        size_t n = strlen(s);

        th_pb_u8(pb, (uint8_t)n);
        th_pb_bytes(pb, s, n);
}

size_t th_encode(uint8_t type, uint8_t flags, uint32_t session, uint32_t request_id,
                 const void *payload, size_t len, uint8_t *out, size_t cap)
{
        struct kiln_frame f = {
                .version = 1,
                .type = type,
                .flags = flags,
                .status = 0,
                .session = session,
                .request_id = request_id,
                .len = (uint32_t)len,
                .payload = payload,
        };
        size_t n = 0;

        if (kiln_frame_encode(&f, out, cap, &n) != KILN_OK)
                return 0;
        return n;
}

size_t th_decode_all(const uint8_t *in, size_t n, struct th_frame *frames, size_t max,
                     size_t *ret_rejected)
{
        static uint8_t buf[KILN_FRAME_WIRE_MAX(TH_PAYLOAD_MAX)];
        struct kiln_decoder d;
        size_t off = 0, count = 0, rejected = 0;

        kiln_decoder_init(&d, buf, sizeof(buf), TH_PAYLOAD_MAX);
        while (off < n) {
                struct kiln_frame f;
                size_t used = 0;
                int r = kiln_decoder_feed(&d, in + off, n - off, &used, &f);

                off += used;
                if (r < 0)
                        rejected++;
                if (r != KILN_DEC_FRAME)
                        continue;
                if (count < max) {
                        struct th_frame *t = &frames[count];

                        t->version = f.version;
                        t->type = f.type;
                        t->flags = f.flags;
                        t->status = f.status;
                        t->session = f.session;
                        t->request_id = f.request_id;
                        t->len = f.len;
                        if (f.len > 0)
                                memcpy(t->payload, f.payload, f.len);
                }
                count++;
        }
        if (ret_rejected)
                *ret_rejected = rejected;
        return count;
}

int th_error_payload(const struct th_frame *f, uint32_t *ret_detail, char *ret_msg)
{
        uint8_t n;

        if (f->len < 5)
                return 0;
        n = f->payload[4];
        if (n > 64 || f->len != 5u + n)
                return 0;
        *ret_detail = kiln_le32(f->payload);
        memcpy(ret_msg, f->payload + 5, n);
        ret_msg[n] = '\0';
        return 1;
}

void th_hello_payload(struct th_pb *pb, uint8_t min_v, uint8_t max_v, uint32_t host_max)
{
        th_pb_reset(pb);
        th_pb_u8(pb, min_v);
        th_pb_u8(pb, max_v);
        th_pb_le16(pb, 0);
        th_pb_le32(pb, host_max);
}

void th_write_payload(struct th_pb *pb, const char *name, uint8_t flags, uint32_t total,
                      uint32_t offset, const void *data, uint32_t len)
{
        th_pb_reset(pb);
        th_pb_name(pb, name);
        th_pb_u8(pb, flags);
        th_pb_u8(pb, 0);
        th_pb_u8(pb, 0);
        th_pb_u8(pb, 0);
        th_pb_le32(pb, total);
        th_pb_le32(pb, offset);
        th_pb_le32(pb, len);
        th_pb_bytes(pb, data, len);
}

void th_read_payload(struct th_pb *pb, const char *name, uint32_t offset, uint32_t max_len)
{
        th_pb_reset(pb);
        th_pb_name(pb, name);
        th_pb_le32(pb, offset);
        th_pb_le32(pb, max_len);
}

void th_fuse_program_payload(struct th_pb *pb, const char *name, const void *value, uint8_t len)
{
        th_pb_reset(pb);
        th_pb_name(pb, name);
        th_pb_u8(pb, len);
        th_pb_bytes(pb, value, len);
}

void th_sha256(const void *p, size_t n, uint8_t ret[32])
{
        unsigned int len = 32;

        EVP_Digest(p, n, ret, &len, EVP_sha256(), NULL);
}

void th_signed_digest(const char *label, const uint8_t nonce[32], const uint8_t *uid,
                      size_t uid_len, uint8_t slot, uint8_t ret_digest[32])
{
        uint8_t msg[256];
        size_t n = 0, l = strlen(label);

        memcpy(msg, label, l);
        n += l;
        memcpy(msg + n, nonce, 32);
        n += 32;
        msg[n++] = (uint8_t)uid_len;
        memcpy(msg + n, uid, uid_len);
        n += uid_len;
        msg[n++] = slot;
        th_sha256(msg, n, ret_digest);
}

int th_p256_verify(const uint8_t *pub, size_t pub_len, const uint8_t digest[32], const uint8_t *sig,
                   size_t sig_len)
{
        OSSL_PARAM_BLD *bld = NULL;
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *kctx = NULL, *vctx = NULL;
        EVP_PKEY *pkey = NULL;
        ECDSA_SIG *es = NULL;
        BIGNUM *r = NULL, *s = NULL;
        unsigned char *der = NULL;
        int der_len, ok = 0;

        if (pub_len != 65 || sig_len != 64)
                goto out;
        bld = OSSL_PARAM_BLD_new();
        if (bld == NULL ||
            !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len))
                goto out;
        params = OSSL_PARAM_BLD_to_param(bld);
        kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (params == NULL || kctx == NULL || EVP_PKEY_fromdata_init(kctx) <= 0 ||
            EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
                goto out;
        es = ECDSA_SIG_new();
        r = BN_bin2bn(sig, 32, NULL);
        s = BN_bin2bn(sig + 32, 32, NULL);
        if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s))
                goto out;
        r = s = NULL;
        der_len = i2d_ECDSA_SIG(es, &der);
        if (der_len <= 0)
                goto out;
        vctx = EVP_PKEY_CTX_new(pkey, NULL);
        if (vctx == NULL || EVP_PKEY_verify_init(vctx) <= 0)
                goto out;
        ok = EVP_PKEY_verify(vctx, der, (size_t)der_len, digest, 32) == 1;
out:
        OPENSSL_free(der);
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        EVP_PKEY_CTX_free(vctx);
        EVP_PKEY_CTX_free(kctx);
        EVP_PKEY_free(pkey);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        return ok;
}

static int nib(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int th_hex(const char *hex, uint8_t *out, size_t cap, size_t *ret_len)
{
        size_t n = strlen(hex);

        if (n % 2 != 0 || n / 2 > cap)
                return 0;
        for (size_t i = 0; i < n / 2; i++) {
                int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);

                if (hi < 0 || lo < 0)
                        return 0;
                out[i] = (uint8_t)(hi << 4 | lo);
        }
        *ret_len = n / 2;
        return 1;
}
