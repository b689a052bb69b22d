/*
 * Slots: each runs its own thread and unit state machine, so a slow or failing unit never holds up
 * another slot. Where devices come from is a fixture: the configured ports of a real line, or
 * simulators started per unit (kiln demo).
 */
#ifndef KILN_RUN_H
#define KILN_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/report.h"

#define RUN_SLOT_NAME_MAX 32

struct run_fixture_ops {
        /* The port of the next device in this slot. KILN_E_NOT_FOUND: this slot has no more
         * devices. Called on the slot's own thread; may block (waiting for an operator), but must
         * return KILN_E_CANCELLED soon after *engine->stop or *enough is set (enough: the run has
         * all the units it wants, so this slot need not wait any longer). */
        int (*next)(void *ctx, unsigned slot, const volatile int *enough, char *port, size_t cap);
        /* The device in the slot is finished with: res is its result, NULL when the run ended
         * before it was provisioned. May be NULL. */
        void (*done)(void *ctx, unsigned slot, const struct unit_result *res);
};

struct run_opts {
        unsigned n_slots;
        const char *const *slot_names; /* n_slots names as operators know them */
        uint64_t max_units;            /* 0: until the fixture runs out or a stop */
        const struct run_fixture_ops *fx;
        void *fx_ctx;
        /* Called once per finished unit (any thread, serialised). May be NULL. */
        void (*on_unit)(void *ctx, const struct unit_result *res);
        void *on_unit_ctx;
};

/*
 * Run the slots until done. A station-level failure (database, disk full, HSM, quota, pool) stops
 * new units on every slot; units already running finish. *ret gets the totals. Returns KILN_OK, or
 * the first station-level error.
 */
int station_run(struct engine *e, const struct run_opts *o, struct report_summary *ret);

#endif
