/* Whole-object transfers over a session: chunked, resumable, verified by SHA-256 (§5.4-§5.6). */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "kiln/error.h"
#include "kiln/session.h"
#include "kiln/util.h"
#include "session_internal.h"

static int sha256(const uint8_t *p, size_t n, uint8_t out[PROTO_SHA256_LEN])
{
        static const uint8_t empty[1];
        unsigned int len = 0;

        if (EVP_Digest(n > 0 ? p : empty, n, out, &len, EVP_sha256(), NULL) != 1 ||
            len != PROTO_SHA256_LEN) {
                ERR_clear_error();
                return kiln_fail(KILN_E_CRYPTO, "SHA-256 failed");
        }
        return KILN_OK;
}

static void hex8(const uint8_t *d, char out[17])
{
        static const char hx[] = "0123456789abcdef";

        for (int i = 0; i < 8; i++) {
                out[2 * i] = hx[d[i] >> 4];
                out[2 * i + 1] = hx[d[i] & 15];
        }
        out[16] = '\0';
}

/*
 * Where to (re)start writing `name`: ask OBJECT_HASH. *ret_done = 1 when an identical complete
 * object is already there. A write in progress of the same size and flags whose prefix matches our
 * data continues from the bytes held; anything else (nothing there, another object, a prefix that
 * differs) starts again from 0, which discards what the device holds.
 */
static int object_resume_point(struct proto_session *s, const char *name, uint8_t flags,
                               const uint8_t *data, uint32_t total,
                               const uint8_t digest[PROTO_SHA256_LEN], uint32_t *ret_off,
                               int *ret_done)
{
        struct proto_err_mark mark;
        struct proto_object_hash h;
        uint8_t prefix[PROTO_SHA256_LEN];
        uint32_t off = 0;
        int done = 0;
        int r;

        proto_err_mark_set(&mark);
        r = proto_session_object_hash(s, name, &h);
        if (r == KILN_E_PROTO_DEVICE &&
            proto_session_device_error(s)->status == KILN_ST_NOT_FOUND) {
                proto_err_mark_forget(&mark);
                r = KILN_OK;
                goto found;
        }
        if (r < 0)
                goto out;
        if (h.total_len != total || h.flags != flags)
                goto found;
        if (h.complete) {
                done = CRYPTO_memcmp(h.sha256, digest, PROTO_SHA256_LEN) == 0;
                goto found;
        }
        r = sha256(data, h.received, prefix);
        if (r < 0)
                goto out;
        if (CRYPTO_memcmp(h.sha256, prefix, PROTO_SHA256_LEN) == 0)
                off = h.received;
found:
        *ret_off = off;
        *ret_done = done;
out:
        return r;
}

static int object_verify(struct proto_session *s, const char *name, uint8_t flags, uint32_t total,
                         const uint8_t digest[PROTO_SHA256_LEN])
{
        struct proto_object_hash h;
        char want[17], got[17];
        int r;

        r = proto_session_object_hash(s, name, &h);
        if (r < 0)
                return r;
        /* start from failure; success is set in one place */
        r = KILN_E_MISMATCH;
        hex8(digest, want);
        hex8(h.sha256, got);
        if (!h.complete || h.total_len != total)
                kiln_fail(r, "object '%s' on the device: %u of %u bytes, %s, after writing %u",
                          name, h.received, h.total_len, h.complete ? "complete" : "incomplete",
                          total);
        else if (h.flags != flags)
                kiln_fail(r, "object '%s' on the device has flags 0x%02x, written with 0x%02x",
                          name, h.flags, flags);
        else if (CRYPTO_memcmp(h.sha256, digest, PROTO_SHA256_LEN) != 0)
                kiln_fail(r, "object '%s' on the device has SHA-256 %s..., written %s...", name,
                          got, want);
        else
                r = KILN_OK;
        return r;
}

int proto_object_write(struct proto_session *s, const char *name, uint8_t flags,
                       const uint8_t *data, size_t len, proto_progress_fn progress,
                       void *progress_ctx)
{
        uint8_t digest[PROTO_SHA256_LEN];
        uint32_t total, off = 0;
        unsigned resyncs = 0;
        int done = 0;
        int r;

        if (proto_msg_name_check(name) < 0) {
                r = kiln_fail(KILN_E_INVAL,
                              "object name must be 1..%u characters of [A-Za-z0-9._-]",
                              KILN_NAME_MAX);
                goto out;
        }
        if (len > 0 && data == NULL) {
                r = kiln_fail(KILN_E_INVAL, "object '%s': no data", name);
                goto out;
        }
        if (len > KILN_OBJECT_MAX) {
                r = kiln_fail(KILN_E_LIMIT, "object '%s' of %zu bytes is over the limit of %u",
                              name, len, KILN_OBJECT_MAX);
                goto out;
        }
        total = (uint32_t)len;
        r = sha256(data, len, digest);
        if (r < 0)
                goto out;
        r = object_resume_point(s, name, flags, data, total, digest, &off, &done);
        if (r < 0)
                goto out;

        while (!done) {
                struct proto_write_result w;
                struct proto_write_req req;
                uint32_t max = proto_session_max_payload(s);
                uint32_t chunk;
                struct proto_err_mark mark;

                /* names are at most 32 bytes and max_payload at least 256: chunk is positive */
                chunk = max - (uint32_t)PROTO_WRITE_OVERHEAD(strlen(name));
                if (chunk > total - off)
                        chunk = total - off;
                req.name = name;
                req.flags = flags;
                req.total_len = total;
                req.offset = off;
                req.data = chunk > 0 ? data + off : NULL;
                req.data_len = chunk;
                proto_err_mark_set(&mark);
                r = proto_session_write_chunk(s, &req, &w);
                if (r == KILN_E_PROTO_DEVICE &&
                    proto_session_device_error(s)->status == KILN_ST_OFFSET && resyncs < 3) {
                        /* the device holds something else than we think (it lost a chunk, or
                         * another write interleaved): ask it and continue from what matches */
                        proto_err_mark_forget(&mark);
                        resyncs++;
                        r = object_resume_point(s, name, flags, data, total, digest, &off, &done);
                        if (r < 0)
                                goto out;
                        continue;
                }
                if (r < 0)
                        goto out;
                off = w.received;
                if (progress != NULL) {
                        r = progress(progress_ctx, off, total);
                        if (r < 0) {
                                kiln_fail(r, "writing object '%s' stopped at %u of %u bytes", name,
                                          off, total);
                                goto out;
                        }
                }
                done = w.complete;
        }
        r = object_verify(s, name, flags, total, digest);
        if (r < 0)
                goto out;
        if (progress != NULL && off != total) {
                /* already complete on the device: report it once */
                r = progress(progress_ctx, total, total);
                if (r < 0) {
                        kiln_fail(r, "writing object '%s' stopped", name);
                        goto out;
                }
        }
        r = KILN_OK;
out:
        return r;
}

int proto_object_read(struct proto_session *s, const char *name, size_t max, uint8_t **ret_data,
                      size_t *ret_len)
{
        uint8_t digest[PROTO_SHA256_LEN];
        struct proto_object_hash h;
        uint8_t *buf = NULL;
        uint32_t total = 0, off = 0;
        int first = 1;
        int r;

        if (proto_msg_name_check(name) < 0) {
                r = kiln_fail(KILN_E_INVAL,
                              "object name must be 1..%u characters of [A-Za-z0-9._-]",
                              KILN_NAME_MAX);
                goto out;
        }
        if (max > KILN_OBJECT_MAX)
                max = KILN_OBJECT_MAX;
        while (first || off < total) {
                struct proto_read_result rr;
                uint32_t chunk = proto_session_max_payload(s) - PROTO_READ_OVERHEAD;

                r = proto_session_read_chunk(s, name, off, chunk, &rr);
                if (r < 0)
                        goto out;
                if (first) {
                        total = rr.total_len;
                        if (total > max) {
                                r = kiln_fail(KILN_E_LIMIT,
                                              "object '%s' on the device is %u "
                                              "bytes, over the limit of %zu",
                                              name, total, max);
                                goto out;
                        }
                        buf = kiln_malloc(total);
                        if (buf == NULL) {
                                r = kiln_fail(KILN_E_NOMEM, "object '%s': out of memory", name);
                                goto out;
                        }
                        first = 0;
                } else if (rr.total_len != total) {
                        r = kiln_fail(KILN_E_MISMATCH,
                                      "object '%s' changed size from %u to %u while being read",
                                      name, total, rr.total_len);
                        goto out;
                }
                /* the session checked data_len == min(chunk, total - off): always progress */
                if (rr.data_len > 0)
                        memcpy(buf + off, rr.data, rr.data_len);
                off += rr.data_len;
        }
        r = sha256(buf, total, digest);
        if (r < 0)
                goto out;
        r = proto_session_object_hash(s, name, &h);
        if (r < 0)
                goto out;
        if (!h.complete || h.total_len != total ||
            CRYPTO_memcmp(h.sha256, digest, PROTO_SHA256_LEN) != 0) {
                r = kiln_fail(KILN_E_MISMATCH,
                              "object '%s' read back does not match the device's "
                              "SHA-256 (changed while being read?)",
                              name);
                goto out;
        }
        *ret_data = buf;
        buf = NULL;
        *ret_len = total;
        r = KILN_OK;
out:
        kiln_free(buf);
        return r;
}
