/*
 * Station configuration: what one station is (id, mode), where its database and HSM are, its
 * slots and label printers. YAML, separate from recipes, checked the same way: every problem is
 * reported with its line and column (docs/station-config.md is the reference of every key).
 *
 * A PIN is never part of the configuration: the file names an environment variable (pin_env) or
 * an owner-only file (pin_file) and a `pin` key is refused outright. Relative paths (database,
 * pin_file, softhsm_conf, work.recipe, file: printers, unix: ports) are resolved against the
 * directory of the configuration file; the struct holds the resolved paths.
 */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/limits.h"
#include "kiln/yaml_doc.h"

#define STATION_CONFIG_SCHEMA 1u
#define STATION_TEXT_MAX 64u       /* work order, lot, operator ids */
#define STATION_ENV_NAME_MAX 64u   /* pin_env variable name */
#define STATION_USB_SERIAL_MAX 64u /* USB iSerial in a port spec */
#define STATION_USB_PATH_MAX 7u    /* hub ports in a usb:BUS-PORT.PATH spec */
#define STATION_UNIX_PATH_MAX 107u /* sun_path */
#define STATION_BAUD_DEFAULT 115200u

enum station_mode { STATION_MODE_DEVELOPMENT, STATION_MODE_PRODUCTION, STATION_MODE_MAX };

enum station_pin_source {
        STATION_PIN_ENV,  /* pin_ref names an environment variable */
        STATION_PIN_FILE, /* pin_ref is a file path (resolved) */
        STATION_PIN_SOURCE_MAX
};

enum station_port_kind {
        STATION_PORT_UART,     /* /dev/ttyUSB0, uart:/dev/ttyUSB0?baud=115200 */
        STATION_PORT_UNIX,     /* unix:/run/kiln/sim-a.sock */
        STATION_PORT_USB_ID,   /* usb:VID:PID[:SERIAL] */
        STATION_PORT_USB_PATH, /* usb:BUS-PORT.PORT... */
        STATION_PORT_KIND_MAX
};

struct station_port {
        enum station_port_kind kind;
        char spec[KILN_PORT_SPEC_MAX + 1];           /* as written */
        char open_spec[KILN_PORT_SPEC_MAX + 1];      /* for proto_transport_open: path resolved */
        char path[KILN_PORT_SPEC_MAX + 1];           /* UART device, UNIX socket (resolved) */
        uint32_t baud;                               /* UART */
        uint16_t vid, pid;                           /* USB_ID */
        char usb_serial[STATION_USB_SERIAL_MAX + 1]; /* USB_ID: "" = any */
        uint8_t bus;                                 /* USB_PATH */
        uint8_t ports[STATION_USB_PATH_MAX];
        unsigned n_ports;
};

/*
 * Parse a port specification (syntax only: nothing is opened). A relative unix: path is resolved
 * against base_dir (NULL: kept). 1 when valid; else 0 with the reason in why.
 */
int station_port_parse(const char *spec, const char *base_dir, struct station_port *ret, char *why,
                       size_t cap);

enum station_printer_kind {
        STATION_PRINTER_FILE,   /* file:DIR: one file per label in DIR */
        STATION_PRINTER_TCP,    /* tcp:HOST:PORT: raw ZPL over TCP (port 9100 on most printers) */
        STATION_PRINTER_DEVICE, /* /dev/usb/lp0: a printer device node */
        STATION_PRINTER_KIND_MAX
};

struct station_printer {
        enum station_printer_kind kind;
        const char *spec;   /* as written */
        const char *target; /* FILE: resolved directory; TCP: host; DEVICE: device path */
        uint16_t port;      /* TCP */
};

enum station_label_format { STATION_LABEL_ZPL, STATION_LABEL_PNG, STATION_LABEL_FORMAT_MAX };

struct station_slot {
        char id[KILN_SLOT_ID_MAX + 1];
        struct station_port port;
        int has_printer;
        struct station_printer printer; /* overrides labels.printer for this slot */
};

struct station_work {
        const char *recipe;     /* resolved path, NULL when not given */
        const char *work_order; /* NULL when not given */
        const char *lot;
        const char *operator_id;
        uint32_t quota; /* 0 when not given */
};

struct station_hsm {
        const char *module;    /* PKCS#11 module path (resolved) */
        const char *token_uri; /* selects the token: "pkcs11:token=kiln-dev" */
        enum station_pin_source pin_source;
        const char *pin_ref;        /* variable name, or resolved file path */
        const char *softhsm_conf;   /* SOFTHSM2_CONF for development tokens; NULL when not given */
        const char *audit_key;      /* signs audit checkpoints and export manifests */
        const char *commitment_key; /* HMAC key for credential commitments; NULL when not given */
        unsigned sessions;          /* session pool size; 0 = the HSM module's default */
};

#define STATION_AUTHORITY_KEYS_MAX 8u

/* Who may release recipes and raise quotas: public keys (PEM files), trusted by this station. */
struct station_authority {
        const char *release_keys[STATION_AUTHORITY_KEYS_MAX]; /* resolved paths */
        unsigned n_release_keys;
        const char *quota_keys[STATION_AUTHORITY_KEYS_MAX];
        unsigned n_quota_keys;
};

struct station_labels {
        int present;
        struct station_printer printer;
        enum station_label_format format;
};

struct station_config {
        unsigned schema;
        char station_id[KILN_STATION_ID_MAX + 1];
        enum station_mode mode;
        int production;     /* mode == STATION_MODE_PRODUCTION */
        const char *path;   /* as loaded */
        const char *dir;    /* what relative paths were resolved against */
        uint8_t sha256[32]; /* of the exact bytes */
        char sha256_hex[65];
        const char *database; /* resolved path */
        struct station_work work;
        struct station_hsm hsm;
        struct station_slot slots[KILN_SLOTS_MAX];
        unsigned n_slots; /* >= 1 */
        struct station_labels labels;
        struct station_authority authority;

        struct yaml_doc *doc; /* private: owns the strings above */
};

/* Load and check path (at most KILN_CONFIG_FILE_MAX bytes). KILN_E_CONFIG when diags got
 * problems; KILN_E_NOT_FOUND / KILN_E_IO (kiln_fail detail) when the file cannot be read. */
int station_config_load_file(const char *path, struct yaml_doc_diags *diags,
                             struct station_config **ret);
/* Check a configuration in memory; relative paths resolve against base_dir (NULL: kept as
 * written). */
int station_config_load_mem(const char *name, const char *base_dir, const uint8_t *data, size_t len,
                            struct yaml_doc_diags *diags, struct station_config **ret);
void station_config_free(struct station_config *c); /* NULL-safe */

/* The slot with this id, NULL when none. */
const struct station_slot *station_config_slot(const struct station_config *c, const char *id);

const char *station_mode_name(enum station_mode m); /* "development", "production" */

#endif
