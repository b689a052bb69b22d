/* Error names, text and the per-thread detail line. */
#include <stdio.h>
#include <string.h>

#include "kiln/error.h"
#include "kiln/limits.h"

struct err_entry {
        int code;
        const char *name;
        const char *text;
};

#define E(c, t) {c, #c, t}
static const struct err_entry err_table[] = {
        E(KILN_OK, "success"),
        E(KILN_E_NOMEM, "out of memory"),
        E(KILN_E_INVAL, "invalid argument"),
        E(KILN_E_RANGE, "value out of range"),
        E(KILN_E_IO, "I/O error"),
        E(KILN_E_TIMEOUT, "timed out"),
        E(KILN_E_NOT_FOUND, "not found"),
        E(KILN_E_EXISTS, "already exists"),
        E(KILN_E_PERM, "not permitted"),
        E(KILN_E_MISMATCH, "verification failed"),
        E(KILN_E_CRYPTO, "cryptographic failure"),
        E(KILN_E_TRUNCATED, "input truncated"),
        E(KILN_E_UNSUPPORTED, "not supported"),
        E(KILN_E_INTERNAL, "internal error"),
        E(KILN_E_NOSPACE, "no space left"),
        E(KILN_E_CANCELLED, "cancelled"),
        E(KILN_E_SYNTAX, "syntax error"),
        E(KILN_E_LIMIT, "size limit exceeded"),
        E(KILN_E_PROTO_CRC, "frame CRC mismatch"),
        E(KILN_E_PROTO_COBS, "invalid COBS encoding"),
        E(KILN_E_PROTO_SHORT, "frame too short"),
        E(KILN_E_PROTO_TOO_LARGE, "frame too large"),
        E(KILN_E_PROTO_VERSION, "unsupported protocol version"),
        E(KILN_E_PROTO_LENGTH, "frame length mismatch"),
        E(KILN_E_PROTO_MALFORMED, "malformed message"),
        E(KILN_E_PROTO_NAK, "device rejected the frame repeatedly (NAK)"),
        E(KILN_E_PROTO_DEVICE, "device reported an error"),
        E(KILN_E_PROTO_SESSION, "device session changed (device rebooted)"),
        E(KILN_E_PROTO_UNEXPECTED, "unexpected response"),
        E(KILN_E_PROTO_NO_RESPONSE, "no response from device"),
        E(KILN_E_PORT_OPEN, "cannot open port"),
        E(KILN_E_PORT_BUSY, "port busy"),
        E(KILN_E_PORT_CONFIG, "cannot configure port"),
        E(KILN_E_DEVICE_GONE, "device disconnected"),
        E(KILN_E_USB, "USB error"),
        E(KILN_E_PORT_SPEC, "malformed port specification"),
        E(KILN_E_HSM_MODULE, "PKCS#11 module failure"),
        E(KILN_E_HSM_URI, "malformed PKCS#11 URI"),
        E(KILN_E_HSM_TOKEN, "token not found"),
        E(KILN_E_HSM_PIN, "PIN incorrect"),
        E(KILN_E_HSM_PIN_LOCKED, "PIN locked or low on retries"),
        E(KILN_E_HSM_PIN_SOURCE, "PIN not available"),
        E(KILN_E_HSM_MECHANISM, "mechanism not supported by token"),
        E(KILN_E_HSM_KEY_NOT_FOUND, "key not found"),
        E(KILN_E_HSM_KEY_AMBIGUOUS, "key ambiguous"),
        E(KILN_E_HSM_KEY_POLICY, "key attributes not allowed"),
        E(KILN_E_HSM_SIGN, "signing failed"),
        E(KILN_E_HSM_RANDOM, "random generation failed"),
        E(KILN_E_HSM_PKCS11, "PKCS#11 failure"),
        E(KILN_E_CERT_BUILD, "certificate build failed"),
        E(KILN_E_CERT_VERIFY, "certificate does not verify"),
        E(KILN_E_POP_INVALID, "proof of possession invalid"),
        E(KILN_E_PUBKEY_INVALID, "public key invalid"),
        E(KILN_E_CERT_TEMPLATE, "certificate template invalid"),
        E(KILN_E_RECIPE, "recipe invalid"),
        E(KILN_E_RECIPE_TOO_LARGE, "recipe too large"),
        E(KILN_E_CONFIG, "station configuration invalid"),
        E(KILN_E_SIM_STATE, "simulator state invalid"),
        E(KILN_E_SIM_POWER_CUT, "simulated power cut"),
        E(KILN_E_DB, "database error"),
        E(KILN_E_DB_CONSTRAINT, "database constraint violated"),
        E(KILN_E_DB_SCHEMA, "database schema version unknown"),
        E(KILN_E_DB_BUSY, "database busy"),
        E(KILN_E_CLONE, "chip UID already provisioned (clone alert)"),
        E(KILN_E_QUOTA, "work order quota exhausted"),
        E(KILN_E_POOL_EXHAUSTED, "allocation pool exhausted"),
        E(KILN_E_WRONG_DEVICE, "wrong device for recipe"),
        E(KILN_E_LIFECYCLE, "device lifecycle does not allow this"),
        E(KILN_E_AUDIT, "audit chain broken"),
        E(KILN_E_FUSE_CONFLICT, "fuse holds different data"),
        E(KILN_E_FUSE_READBACK, "fuse read-back mismatch"),
};
#undef E

static const struct err_entry *err_find(int code)
{
        for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
                if (err_table[i].code == code)
                        return &err_table[i];
        return NULL;
}

const char *kiln_strerror(int code)
{
        const struct err_entry *e = err_find(code);
        return e ? e->text : "unknown error";
}

const char *kiln_errname(int code)
{
        const struct err_entry *e = err_find(code);
        return e ? e->name : "KILN_E_UNKNOWN";
}

#define DETAIL_MAX 512

static _Thread_local char detail[DETAIL_MAX];
static _Thread_local int detail_code;

int kiln_failv(int code, const char *fmt, va_list ap)
{
        if (detail[0] != '\0')
                return code;
        vsnprintf(detail, sizeof(detail), fmt, ap);
        detail_code = code;
        return code;
}

int kiln_fail(int code, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_failv(code, fmt, ap);
        va_end(ap);
        return code;
}

int kiln_fail_append(int code, const char *fmt, ...)
{
        va_list ap;
        size_t n = strlen(detail);

        if (n == 0)
                detail_code = code;
        if (n > 0 && n + 2 < sizeof(detail)) {
                memcpy(detail + n, ": ", 2);
                n += 2;
                detail[n] = '\0';
        }
        if (n + 1 < sizeof(detail)) {
                va_start(ap, fmt);
                vsnprintf(detail + n, sizeof(detail) - n, fmt, ap);
                va_end(ap);
        }
        return code;
}

const char *kiln_err_detail(void)
{
        return detail;
}

int kiln_err_detail_code(void)
{
        return detail_code;
}

void kiln_err_reset(void)
{
        detail[0] = '\0';
        detail_code = 0;
}
