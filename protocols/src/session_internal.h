/* Helpers shared by session.c and object.c. */
#ifndef KILN_SESSION_INTERNAL_H
#define KILN_SESSION_INTERNAL_H

#include "kiln/error.h"

/*
 * An error the code handles itself (OBJECT_HASH answering NOT_FOUND before a first write, SESSION
 * answering a retried RESET) must not leave its detail behind: the first detail wins, and it would
 * mask the real cause of a later failure. Mark before the call; forget after handling, which clears
 * the detail only if there was none at the mark.
 */
struct proto_err_mark {
        int had_detail;
};

static inline void proto_err_mark_set(struct proto_err_mark *m)
{
        m->had_detail = kiln_err_detail()[0] != '\0';
}

static inline void proto_err_mark_forget(const struct proto_err_mark *m)
{
        if (!m->had_detail)
                kiln_err_reset();
}

#endif
