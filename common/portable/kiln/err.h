/*
 * Kiln error codes.
 *
 * Every fallible function returns int: KILN_OK (0) or a negative code from this enum. Codes are
 * grouped in ranges per module so a number tells where it came from:
 *
 *      -1 ..  -99  common
 *    -100 .. -199  protocols (codec, session, transports, agent)
 *    -200 .. -299  hsm (PKCS#11, certificates)
 *    -300 .. -399  fixtures and recipes / station configuration
 *    -400 .. -499  station and traceability database
 *
 * Numbers are never reused or renumbered: a retired code keeps its slot with a comment. Add new codes
 * at the end of their module's range.
 *
 * This header is self-contained (no includes) so the portable device agent can use it.
 */
#ifndef KILN_ERR_H
#define KILN_ERR_H

enum kiln_err {
        KILN_OK = 0,

        /* common */
        KILN_E_NOMEM = -1,       /* out of memory */
        KILN_E_INVAL = -2,       /* invalid argument (caller bug or bad user input) */
        KILN_E_RANGE = -3,       /* value out of range or size arithmetic overflow */
        KILN_E_IO = -4,          /* operating system I/O error */
        KILN_E_TIMEOUT = -5,     /* deadline passed */
        KILN_E_NOT_FOUND = -6,   /* no such thing */
        KILN_E_EXISTS = -7,      /* already exists */
        KILN_E_PERM = -8,        /* permission or policy refuses it */
        KILN_E_MISMATCH = -9,    /* verification failed: values differ */
        KILN_E_CRYPTO = -10,     /* cryptographic library failure */
        KILN_E_TRUNCATED = -11,  /* input ended early */
        KILN_E_UNSUPPORTED = -12,/* not supported */
        KILN_E_INTERNAL = -13,   /* internal invariant broken (a bug) */
        KILN_E_NOSPACE = -14,    /* disk or device storage full */
        KILN_E_CANCELLED = -15,  /* interrupted by a signal or the operator */
        KILN_E_SYNTAX = -16,     /* malformed text input */
        KILN_E_LIMIT = -17,      /* a hard size limit from limits.h was exceeded */

        /* protocols */
        KILN_E_PROTO_CRC = -100,        /* frame CRC-32C mismatch */
        KILN_E_PROTO_COBS = -101,       /* invalid COBS encoding */
        KILN_E_PROTO_SHORT = -102,      /* frame shorter than header + CRC */
        KILN_E_PROTO_TOO_LARGE = -103,  /* frame larger than the negotiated maximum */
        KILN_E_PROTO_VERSION = -104,    /* unsupported protocol version */
        KILN_E_PROTO_LENGTH = -105,     /* header length field disagrees with the frame */
        KILN_E_PROTO_MALFORMED = -106,  /* payload fields malformed */
        KILN_E_PROTO_NAK = -107,        /* device kept answering NAK; retries exhausted */
        KILN_E_PROTO_DEVICE = -108,     /* device answered with an error status */
        KILN_E_PROTO_SESSION = -109,    /* session mismatch: the device rebooted */
        KILN_E_PROTO_UNEXPECTED = -110, /* response of the wrong type or request id */
        KILN_E_PROTO_NO_RESPONSE = -111,/* no valid response within the deadline, retries exhausted */
        KILN_E_PORT_OPEN = -120,        /* cannot open the port (missing, wrong type) */
        KILN_E_PORT_BUSY = -121,        /* port is held by another process */
        KILN_E_PORT_CONFIG = -122,      /* cannot set baud, parity, flow control */
        KILN_E_DEVICE_GONE = -123,      /* device disconnected */
        KILN_E_USB = -124,              /* other libusb failure */
        KILN_E_PORT_SPEC = -125,        /* malformed port specification */

        /* hsm */
        KILN_E_HSM_MODULE = -200,        /* PKCS#11 module cannot be loaded or initialised */
        KILN_E_HSM_URI = -201,           /* malformed PKCS#11 URI */
        KILN_E_HSM_TOKEN = -202,         /* token not found or ambiguous */
        KILN_E_HSM_PIN = -203,           /* PIN incorrect */
        KILN_E_HSM_PIN_LOCKED = -204,    /* PIN locked, count low or final try: login refused */
        KILN_E_HSM_PIN_SOURCE = -205,    /* PIN not available or PIN file unsafe */
        KILN_E_HSM_MECHANISM = -206,     /* token lacks a required mechanism */
        KILN_E_HSM_KEY_NOT_FOUND = -207, /* no key matches */
        KILN_E_HSM_KEY_AMBIGUOUS = -208, /* several keys match */
        KILN_E_HSM_KEY_POLICY = -209,    /* key attributes not allowed (extractable, not sensitive) */
        KILN_E_HSM_SIGN = -210,          /* signing failed */
        KILN_E_HSM_RANDOM = -211,        /* random generation failed */
        KILN_E_HSM_PKCS11 = -212,        /* other PKCS#11 failure */
        KILN_E_CERT_BUILD = -220,        /* certificate could not be built */
        KILN_E_CERT_VERIFY = -221,       /* issued certificate does not verify against its chain */
        KILN_E_POP_INVALID = -222,       /* device proof of possession does not verify */
        KILN_E_PUBKEY_INVALID = -223,    /* device public key malformed or not on the curve */
        KILN_E_CERT_TEMPLATE = -224,     /* certificate template invalid */

        /* fixtures, recipes, station configuration */
        KILN_E_RECIPE = -300,          /* recipe invalid (details in the report) */
        KILN_E_RECIPE_TOO_LARGE = -301,/* recipe file over the size limit */
        KILN_E_CONFIG = -302,          /* station configuration invalid */
        KILN_E_SIM_STATE = -320,       /* simulator state file corrupt or unreadable */
        KILN_E_SIM_POWER_CUT = -321,   /* simulated power cut (the simulator stops) */

        /* station and database */
        KILN_E_DB = -400,             /* database failure */
        KILN_E_DB_CONSTRAINT = -401,  /* uniqueness or integrity constraint refused a write */
        KILN_E_DB_SCHEMA = -402,      /* schema version unknown (newer than this program) */
        KILN_E_DB_BUSY = -403,        /* database locked by another process */
        KILN_E_CLONE = -410,          /* chip UID already provisioned: clone alert */
        KILN_E_QUOTA = -411,          /* work order quota exhausted */
        KILN_E_POOL_EXHAUSTED = -412, /* serial or MAC pool exhausted */
        KILN_E_WRONG_DEVICE = -413,   /* device does not match the recipe */
        KILN_E_LIFECYCLE = -414,      /* device lifecycle does not allow the recipe */
        KILN_E_AUDIT = -420,          /* audit chain broken */
        KILN_E_FUSE_CONFLICT = -430,  /* fuse already holds different data */
        KILN_E_FUSE_READBACK = -431,  /* fuse read-back differs from what was programmed */

        KILN_E_MAX = -500
};

#endif
