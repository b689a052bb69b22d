/*
 * Kiln provisioning protocol v1: wire constants. docs/protocol.md is the contract; this header
 * mirrors its tables. Self-contained C99 so device firmware can include it.
 */
#ifndef KILN_PROTO_H
#define KILN_PROTO_H

#include <stdint.h>

#define KILN_PROTO_VERSION 1u

/* Header field offsets (all integers little-endian). */
#define KILN_HDR_VERSION 0u
#define KILN_HDR_TYPE 1u
#define KILN_HDR_FLAGS 2u
#define KILN_HDR_STATUS 3u
#define KILN_HDR_SESSION 4u
#define KILN_HDR_REQUEST_ID 8u
#define KILN_HDR_LENGTH 12u

/* Header flags. */
#define KILN_FLAG_RESPONSE 0x01u /* set on every device-to-host frame */
#define KILN_FLAG_RETRY 0x02u    /* host: this request is a retransmission (informative) */
#define KILN_FLAGS_KNOWN (KILN_FLAG_RESPONSE | KILN_FLAG_RETRY)

enum kiln_msg_type {
        KILN_MSG_HELLO = 0x01,
        KILN_MSG_GET_INFO = 0x02,
        KILN_MSG_KEYGEN = 0x03,
        KILN_MSG_WRITE_OBJECT = 0x04,
        KILN_MSG_READ_OBJECT = 0x05,
        KILN_MSG_OBJECT_HASH = 0x06,
        KILN_MSG_FUSE_READ = 0x07,
        KILN_MSG_FUSE_PROGRAM = 0x08,
        KILN_MSG_ATTEST = 0x09,
        KILN_MSG_SET_LIFECYCLE = 0x0A,
        KILN_MSG_RESET = 0x0B,
        KILN_MSG_NAK = 0x7F,
        KILN_MSG_MAX
};

/* Status byte of a response. 0 is success; anything else is an error response. */
enum kiln_status {
        KILN_ST_OK = 0,
        KILN_ST_UNKNOWN_COMMAND = 1,
        KILN_ST_MALFORMED = 2,
        KILN_ST_TOO_LARGE = 3,
        KILN_ST_SESSION = 4,
        KILN_ST_NOT_FOUND = 5,
        KILN_ST_OFFSET = 6,
        KILN_ST_NO_SPACE = 7,
        KILN_ST_PROTECTED = 8,
        KILN_ST_LIFECYCLE = 9,
        KILN_ST_KEY_SLOT = 10,
        KILN_ST_ALGORITHM = 11,
        KILN_ST_HARDWARE = 12,
        KILN_ST_BUSY = 13,
        KILN_ST_REQID_REUSE = 14,
        KILN_ST_VERSION = 15,
        KILN_ST_INTERNAL = 16,
        KILN_ST_MAX
};

/* NAK reasons (first payload byte of a NAK). */
enum kiln_nak_reason {
        KILN_NAK_CRC = 1,
        KILN_NAK_FORMAT = 2,    /* COBS invalid, too short, or length field wrong */
        KILN_NAK_TOO_LARGE = 3, /* over the negotiated maximum */
        KILN_NAK_VERSION = 4,
        KILN_NAK_MAX
};

/* Device lifecycle states (GET_INFO, SET_LIFECYCLE). Transitions only move forward. */
enum kiln_lifecycle {
        KILN_LC_MANUFACTURING = 1,
        KILN_LC_PRODUCTION = 2,
        KILN_LC_RMA = 3,
        KILN_LC_DECOMMISSIONED = 4,
        KILN_LC_MAX
};

/* Key algorithms (KEYGEN, ATTEST). */
enum kiln_key_alg {
        KILN_ALG_ECDSA_P256_SHA256 = 1,
        KILN_ALG_MAX
};

/* HELLO capability bits. */
#define KILN_CAP_KEYGEN_P256 0x00000001u
#define KILN_CAP_ATTEST 0x00000002u
#define KILN_CAP_OBJECTS 0x00000004u
#define KILN_CAP_FUSES 0x00000008u
#define KILN_CAP_LIFECYCLE 0x00000010u
#define KILN_CAP_RESET 0x00000020u
#define KILN_CAP_SIMULATED 0x80000000u /* a simulated device: production stations refuse it */

/* WRITE_OBJECT flags. */
#define KILN_OBJ_SECRET 0x01u /* never returned by READ_OBJECT; OBJECT_HASH still works */

/* FUSE_READ / FUSE_PROGRAM attribute bits. */
#define KILN_FUSE_WRITE_PROTECTED 0x01u
#define KILN_FUSE_READ_PROTECTED 0x02u

/* GET_INFO debug port state. */
#define KILN_DEBUG_CLOSED 0u
#define KILN_DEBUG_OPEN 1u

/* Domain-separation labels that prefix the signed messages (ASCII, no terminator). */
#define KILN_POP_LABEL "KILN-POP-V1"
#define KILN_POP_LABEL_LEN 11u
#define KILN_ATTEST_LABEL "KILN-ATTEST-V1"
#define KILN_ATTEST_LABEL_LEN 14u

#endif
