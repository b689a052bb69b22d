/*
 * Fuzz the simulator's state-file parser (the file is hostile input).
 *
 * Input: byte 0 even: the rest is a whole state file; odd: the rest is a body, sealed here with a
 * valid header and SHA-256 so the fuzzer reaches the field checks. A state that parses must
 * serialize, parse again and serialize to the same bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/error.h"
#include "kiln/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct sim_state *st = NULL, *back = NULL;
        uint8_t *file = NULL, *a = NULL, *b = NULL;
        size_t fn = 0, an = 0, bn = 0;
        int r;

        if (size < 1)
                return 0;
        kiln_err_reset();
        if (data[0] & 1) {
                if (sim_state_seal(data + 1, size - 1, &file, &fn) < 0)
                        return 0;
                r = sim_state_parse(file, fn, &st);
        } else {
                r = sim_state_parse(data + 1, size - 1, &st);
        }
        if (r < 0) {
                /* refused with the right code and a one-line reason (or out of memory) */
                if (r != KILN_E_SIM_STATE && r != KILN_E_NOMEM)
                        abort();
                if (r == KILN_E_SIM_STATE &&
                    (kiln_err_detail()[0] == '\0' || strchr(kiln_err_detail(), '\n') != NULL))
                        abort();
                goto out;
        }
        if (st->storage_cap > SIM_STORAGE_MAX || sim_state_storage_used(st) > st->storage_cap ||
            st->n_objects > KILN_SIM_OBJECTS_MAX)
                abort();
        if (sim_state_serialize(st, &a, &an) < 0 || sim_state_parse(a, an, &back) < 0 ||
            sim_state_serialize(back, &b, &bn) < 0)
                abort();
        if (an != bn || memcmp(a, b, an) != 0)
                abort();
        if ((data[0] & 1) && (an != fn || memcmp(a, file, an) != 0))
                abort();
out:
        free(file);
        free(a);
        free(b);
        sim_state_free(st);
        sim_state_free(back);
        return 0;
}
