/* The simulator's frame log (kiln-dut-sim -v), parsed. See fc_trace.c for the line formats. */
#ifndef KILN_FC_LOG_H
#define KILN_FC_LOG_H

#include <stdint.h>

#include "faults.h"

enum fc_line_kind {
        FC_LINE_OTHER = 0,
        FC_LINE_EVENT,  /* a kiln JSON line (calibration trace only) */
        FC_LINE_RX,     /* a valid frame the device received */
        FC_LINE_TX,     /* a frame the device sent */
        FC_LINE_REJECT, /* a candidate the device rejected (and NAKed) */
        FC_LINE_KEYGEN, /* a key pair generated */
        FC_LINE_BURN,   /* a fuse program carried out (type holds the field) */
        FC_LINE_KIND_MAX
};

struct fc_log_line {
        enum fc_line_kind kind;
        char type[32];
        uint32_t id;
        unsigned len;
        unsigned flags;
        int from_memory;
};

/* What one run did to one simulator. */
struct fc_log {
        unsigned n_rx, n_tx;
        uint32_t ids[FC_FRAMES_MAX]; /* request ids in order of first appearance */
        unsigned n_ids;
        unsigned first_retry; /* ordinal (1-based, in ids) of the first retransmitted request */
        unsigned n_retry;     /* retransmissions the device received */
        unsigned n_memory;    /* answers repeated from the response memory */
        unsigned n_rejected;
        unsigned n_program, n_lifecycle, n_write;
        unsigned n_keygen; /* key pairs generated */
        unsigned n_burn;   /* fuse programs carried out */
        char burned[FC_FIELDS_MAX][32];
        unsigned n_burned;
        int burned_twice; /* a field was programmed twice */
};

int fc_log_line(const char *line, struct fc_log_line *ret);
void fc_log_scan(const char *text, struct fc_log *ret);

#endif
