/*
 * What the operator and line systems see while a station runs.
 *
 *   REPORT_TTY    a live status line per slot, redrawn in place, with finished units and alerts
 *                 printed above it (stdout is a terminal)
 *   REPORT_LINES  one plain line per event (stdout is a file or pipe)
 *   REPORT_JSON   one JSON object per line per event, for line systems (--json)
 *
 * Thread-safe: slot threads report concurrently.
 */
#ifndef KILN_REPORT_H
#define KILN_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "kiln/failcode.h"

enum report_mode {
        REPORT_TTY,
        REPORT_LINES,
        REPORT_JSON,
        REPORT_MODE_MAX
};

struct report;

struct report_unit {
        const char *slot;
        const char *serial; /* NULL before admission */
        const char *chip_uid;
        const char *mac;
        const char *verdict; /* PASS, FAIL, LOCK_FAILED, SCRAP */
        enum failcode code;
        const char *reason;  /* one line, no secrets */
        double seconds;
        unsigned attempt;
        int resumed;
};

struct report_summary {
        unsigned pass;
        unsigned fail;
        unsigned lock_failed;
        unsigned scrap;
        unsigned unrecorded; /* no verdict could be written (database failure): IN_PROGRESS */
        double seconds;
        int64_t quota_left; /* -1 unknown */
};

int report_new(enum report_mode mode, FILE *out, unsigned n_slots, struct report **ret);
void report_free(struct report *r); /* NULL-safe; stops the redraw thread */

void report_run_start(struct report *r, const char *station_id, const char *work_order,
                      const char *operator_id, const char *recipe_id, int development);
/* A slot's current activity (TTY status line; JSON "step" events come from report_step). */
void report_slot(struct report *r, unsigned slot_index, const char *slot, const char *serial,
                 const char *activity);
void report_step(struct report *r, const char *slot, const char *serial, const char *step, int ok,
                 double ms, enum failcode code, const char *detail);
void report_unit(struct report *r, const struct report_unit *u);
/* An informational line (quota left, recipe release), event "note" in JSON. */
void report_note(struct report *r, const char *kind, const char *text);
/* Something the operator must see now (clone alert, interrupted units, quota low). */
void report_alert(struct report *r, const char *slot, const char *kind, const char *text);
void report_run_end(struct report *r, const struct report_summary *s);

#endif
