/*
 * Stable failure codes that operators, line systems and quality engineers see. A code never changes
 * meaning and is never reused; new codes are appended. Each has the action an operator should take.
 */
#ifndef KILN_FAILCODE_H
#define KILN_FAILCODE_H

enum failcode {
        FC_NONE,
        FC_PORT,             /* E-PORT */
        FC_LINK,             /* E-LINK */
        FC_DISCONNECT,       /* E-DISCONNECT */
        FC_WRONG_DEVICE,     /* E-WRONG-DEVICE */
        FC_FIRMWARE,         /* E-FIRMWARE */
        FC_LIFECYCLE,        /* E-LIFECYCLE */
        FC_CLONE,            /* E-CLONE */
        FC_QUOTA,            /* E-QUOTA */
        FC_POOL,             /* E-POOL */
        FC_DISPOSITION,      /* E-DISPOSITION */
        FC_RECIPE_MISMATCH,  /* E-RECIPE-MISMATCH */
        FC_KEYGEN,           /* E-KEYGEN */
        FC_POP,              /* E-POP */
        FC_HSM,              /* E-HSM */
        FC_CERT,             /* E-CERT */
        FC_DUPLICATE,        /* E-DUPLICATE */
        FC_WRITE,            /* E-WRITE */
        FC_WRITE_VERIFY,     /* E-WRITE-VERIFY */
        FC_ATTEST,           /* E-ATTEST */
        FC_DB,               /* E-DB */
        FC_DISK_FULL,        /* E-DISK-FULL */
        FC_FUSE_CONFLICT,    /* E-FUSE-CONFLICT */
        FC_FUSE_PROGRAM,     /* E-FUSE-PROGRAM */
        FC_FUSE_READBACK,    /* E-FUSE-READBACK */
        FC_LOCK_INTERRUPTED, /* E-LOCK-INTERRUPTED */
        FC_DEBUG_OPEN,       /* E-DEBUG-OPEN */
        FC_SECURE_BOOT,      /* E-SECURE-BOOT */
        FC_CANCELLED,        /* E-CANCELLED */
        FC_INTERNAL,         /* E-INTERNAL */
        FC_MAX
};

/* "E-FUSE-READBACK" */
const char *failcode_name(enum failcode fc);
/* What the operator should do: "set the unit aside for quality" */
const char *failcode_action(enum failcode fc);

#endif
