/* The per-lot compliance evidence pack: see station/src/evidence.c and docs/quality.md. */
#ifndef KILN_EVIDENCE_H
#define KILN_EVIDENCE_H

#include "kiln/buf.h"
#include "kiln/db.h"

enum evidence_format {
        EVIDENCE_JSON,
        EVIDENCE_MD,
        EVIDENCE_FORMAT_MAX
};

/* Build the evidence pack of one work order into out. */
int evidence_build(struct db *db, const char *work_order, enum evidence_format fmt,
                   struct kiln_buf *out);

#endif
