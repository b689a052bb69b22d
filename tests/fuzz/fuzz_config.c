/*
 * Fuzz target: arbitrary bytes as a station configuration (from memory, relative paths resolved
 * against a fixed directory), and the first line as a port specification. Problems must be
 * reported, never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/config.h"
#include "kiln/yaml_doc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct yaml_doc_diags d;
        struct station_config *c = NULL;
        struct station_port port;
        char spec[KILN_PORT_SPEC_MAX + 16], why[160];
        size_t n = 0;
        int rc;

        yaml_doc_diags_init(&d);
        rc = station_config_load_mem("fuzz.yaml", "/etc/kiln", data, size, &d, &c);
        if ((rc == KILN_OK) != (c != NULL) || (rc == KILN_OK && yaml_doc_diags_count(&d) != 0) ||
            (rc == KILN_E_CONFIG && yaml_doc_diags_count(&d) == 0))
                abort();
        if (c != NULL) {
                if (c->n_slots == 0 || c->n_slots > KILN_SLOTS_MAX || c->database == NULL ||
                    c->hsm.pin_ref == NULL || c->hsm.token_uri == NULL)
                        abort();
                for (unsigned i = 0; i < c->n_slots; i++)
                        if (station_config_slot(c, c->slots[i].id) == NULL)
                                abort();
        }
        station_config_free(c);
        yaml_doc_diags_free(&d);

        /* the first line, as a port specification */
        while (n < size && n < sizeof(spec) - 1 && data[n] != '\n' && data[n] != '\0') {
                spec[n] = (char)data[n];
                n++;
        }
        spec[n] = '\0';
        if (station_port_parse(spec, "/etc/kiln", &port, why, sizeof(why)) &&
            (strlen(port.path) > KILN_PORT_SPEC_MAX || port.n_ports > STATION_USB_PATH_MAX))
                abort();
        return 0;
}
