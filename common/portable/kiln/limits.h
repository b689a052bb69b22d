/*
 * Every hard size limit in Kiln, in one place. A buffer that holds outside input is sized by one of
 * these; input over a limit is refused with KILN_E_LIMIT (or the protocol's E_TOO_LARGE), never
 * truncated silently. Self-contained so the device agent can use it.
 */
#ifndef KILN_LIMITS_H
#define KILN_LIMITS_H

/* --- wire protocol (docs/protocol.md) --- */
#define KILN_FRAME_HDR_LEN 16u            /* fixed header */
#define KILN_FRAME_CRC_LEN 4u             /* CRC-32C trailer */
#define KILN_PAYLOAD_MIN_MAX 256u         /* every implementation accepts payloads of this size */
#define KILN_PAYLOAD_MAX 65536u           /* largest payload any Kiln implementation negotiates */
#define KILN_NAME_MAX 32u                 /* object and fuse field names */
#define KILN_UID_MAX 32u                  /* chip UID bytes */
#define KILN_PRODUCT_MAX 32u              /* product id string */
#define KILN_FWVER_MAX 32u                /* firmware version string */
#define KILN_AGENT_NAME_MAX 32u           /* agent name in HELLO */
#define KILN_ERRMSG_MAX 64u               /* device error message in an error response */
#define KILN_NONCE_LEN 32u                /* station nonce for KEYGEN proof and ATTEST */
#define KILN_SESSION_NONCE_LEN 16u        /* per-boot session nonce */
#define KILN_FUSE_BYTES_MAX 64u           /* widest fuse field (512 bits) */
#define KILN_PUBKEY_MAX 133u              /* SEC1 uncompressed point, up to P-521 */
#define KILN_SIG_MAX 132u                 /* raw r||s, up to P-521 */
#define KILN_KEY_SLOTS_MAX 16u            /* key slots a device may report */
#define KILN_NOISE_SKIP_MAX (1u << 20)    /* noise bytes tolerated while waiting for one response */

/* --- host side --- */
#define KILN_OBJECT_MAX (64u << 20)       /* largest object (firmware image) the station sends */
#define KILN_RECIPE_FILE_MAX (256u << 10) /* recipe YAML file */
#define KILN_CONFIG_FILE_MAX (64u << 10)  /* station configuration YAML file */
#define KILN_YAML_DEPTH_MAX 16u           /* nesting depth in recipe and config files */
#define KILN_YAML_NODES_MAX 20000u        /* YAML nodes in one file */
#define KILN_SLOTS_MAX 64u                /* slots per station */
#define KILN_RECIPE_KEYS_MAX 8u           /* keys per recipe */
#define KILN_RECIPE_OBJECTS_MAX 32u       /* data objects per recipe */
#define KILN_RECIPE_FUSES_MAX 64u         /* fuse fields in a recipe's fuse plan */
#define KILN_RECIPE_EXTENSIONS_MAX 16u    /* extra certificate extensions per template */
#define KILN_RECIPE_ID_MAX 64u            /* recipe id */
#define KILN_RECIPE_VERSION_MAX 32u       /* recipe version string */
#define KILN_RECIPE_TEXT_MAX 256u         /* one-line recipe strings: names, model, SBOM reference */
#define KILN_RECIPE_DESCRIPTION_MAX 2048u /* recipe description */
#define KILN_RECIPE_URL_MAX 512u          /* URLs and URL templates in a recipe */
#define KILN_RECIPE_HW_REVISIONS_MAX 16u  /* hardware revisions a recipe admits */
#define KILN_RECIPE_CREDENTIALS_MAX 8u    /* credentials per recipe */
#define KILN_RECIPE_RDNS_MAX 16u          /* subject attributes per certificate template */
#define KILN_RECIPE_SANS_MAX 8u           /* subjectAltName entries per certificate template */
#define KILN_RECIPE_EKUS_MAX 8u           /* extended key usages per certificate template */
#define KILN_RECIPE_EXT_DER_MAX 1024u     /* DER value of one extra certificate extension */
#define KILN_RECIPE_OID_MAX 64u           /* dotted OID text */
#define KILN_RECIPE_TEMPLATE_MAX 4096u    /* template source text */
#define KILN_RECIPE_RENDER_MAX 16384u     /* longest rendering of an object template */
#define KILN_RECIPE_FILE_OBJECT_MAX (1u << 20) /* data object read from a file next to the recipe */
#define KILN_RECIPE_LABEL_FIELDS_MAX 8u   /* text lines on a label */
#define KILN_RECIPE_SECRET_MAX 256u       /* password characters or random bytes of a credential */
#define KILN_RECIPE_QUOTA_MAX 100000000u  /* units per work order */
#define KILN_SERIAL_MAX 63u               /* rendered serial number characters */
#define KILN_MACS_PER_UNIT_MAX 8u         /* MAC addresses per unit */
#define KILN_STATION_ID_MAX 32u           /* station id characters */
#define KILN_SLOT_ID_MAX 16u              /* slot id characters */
#define KILN_DIAG_MAX 100u                /* problems reported per checked recipe or config file */
#define KILN_RECIPE_LABEL_TEXT_MAX 128u   /* rendered label text line */
#define KILN_RECIPE_SAN_MAX 255u          /* rendered subjectAltName entry */
#define KILN_RECIPE_POOL_MAX 64u          /* serial / MAC allocation pool name */
#define KILN_PATH_MAX 4096u               /* file system paths */
#define KILN_PORT_SPEC_MAX 256u           /* port specification strings */
#define KILN_URI_MAX 1024u                /* PKCS#11 URIs */
#define KILN_PIN_MAX 256u                 /* PIN length */
#define KILN_CERT_DER_MAX (16u << 10)     /* one DER certificate */
#define KILN_LINE_MAX 4096u               /* one line of text output or input */
#define KILN_SIM_STATE_MAX (128u << 20)   /* simulator state file */
#define KILN_SIM_OBJECTS_MAX 64u          /* objects in a simulated chip */
#define KILN_SIM_FUSES_MAX 64u            /* fuse fields in a simulated chip */

#endif
