/* Stable failure codes and operator actions. */
#include "kiln/failcode.h"

struct fc_entry {
        const char *name;
        const char *action;
};

static const struct fc_entry fc_table[FC_MAX] = {
        [FC_NONE] = {"", ""},
        [FC_PORT] = {"E-PORT", "check the fixture cable and the port in the station config"},
        [FC_LINK] = {"E-LINK", "reseat the unit and retry; if it repeats, check the fixture"},
        [FC_DISCONNECT] = {"E-DISCONNECT", "the unit was disconnected: reseat it and retry"},
        [FC_WRONG_DEVICE] = {"E-WRONG-DEVICE", "wrong product or hardware revision for this work "
                                               "order: set the unit aside"},
        [FC_FIRMWARE] = {"E-FIRMWARE", "unexpected factory firmware: reflash and retry"},
        [FC_LIFECYCLE] = {"E-LIFECYCLE", "the unit is not in a lifecycle this recipe accepts: set "
                                         "it aside for quality"},
        [FC_CLONE] = {"E-CLONE", "CLONE ALERT: this chip UID was already provisioned; quarantine "
                                 "the unit and call quality"},
        [FC_QUOTA] = {"E-QUOTA", "the work order quota is used up: stop and ask for an "
                                 "authorised quota"},
        [FC_POOL] = {"E-POOL", "a serial or MAC pool is exhausted: stop the line and call "
                               "engineering"},
        [FC_DISPOSITION] = {"E-DISPOSITION", "this unit awaits a quality disposition: set it "
                                             "aside"},
        [FC_RECIPE_MISMATCH] = {"E-RECIPE-MISMATCH", "this unit was started with another recipe: "
                                                     "set it aside for quality"},
        [FC_KEYGEN] = {"E-KEYGEN", "the device could not generate its key: retry once, then set "
                                   "it aside"},
        [FC_POP] = {"E-POP", "the device's key proof failed: set the unit aside for quality"},
        [FC_HSM] = {"E-HSM", "the HSM refused: stop the line and call the PKI officer"},
        [FC_CERT] = {"E-CERT", "certificate issuance failed: stop the line and call "
                               "engineering"},
        [FC_DUPLICATE] = {"E-DUPLICATE", "the device returned a key already used by another "
                                         "unit: quarantine it and call quality"},
        [FC_WRITE] = {"E-WRITE", "writing to the device failed: reseat and retry"},
        [FC_WRITE_VERIFY] = {"E-WRITE-VERIFY", "the device stored different data: retry once, "
                                               "then set it aside"},
        [FC_ATTEST] = {"E-ATTEST", "attestation failed: set the unit aside for quality"},
        [FC_DB] = {"E-DB", "the traceability database failed: stop the line and call "
                           "engineering"},
        [FC_DISK_FULL] = {"E-DISK-FULL", "the station disk is full: stop the line and free "
                                         "space"},
        [FC_FUSE_CONFLICT] = {"E-FUSE-CONFLICT", "the unit's fuses already hold other data: set "
                                                 "it aside for quality"},
        [FC_FUSE_PROGRAM] = {"E-FUSE-PROGRAM", "a fuse failed to program: set the unit aside "
                                               "for quality"},
        [FC_FUSE_READBACK] = {"E-FUSE-READBACK", "a fuse reads back wrong after programming: "
                                                 "set the unit aside for quality"},
        [FC_LOCK_INTERRUPTED] = {"E-LOCK-INTERRUPTED", "the unit was lost during the lock: set it "
                                                       "aside for quality"},
        [FC_DEBUG_OPEN] = {"E-DEBUG-OPEN", "the debug port is still open after the lock: set "
                                           "the unit aside for quality"},
        [FC_SECURE_BOOT] = {"E-SECURE-BOOT", "secure boot is not enforced after the lock: set "
                                             "the unit aside for quality"},
        [FC_CANCELLED] = {"E-CANCELLED", "the run was stopped: retry the unit"},
        [FC_INTERNAL] = {"E-INTERNAL", "internal error: keep the log and call engineering"},
};

const char *failcode_name(enum failcode fc)
{
        return (unsigned)fc < FC_MAX ? fc_table[fc].name : "E-INTERNAL";
}

const char *failcode_action(enum failcode fc)
{
        return (unsigned)fc < FC_MAX ? fc_table[fc].action : fc_table[FC_INTERNAL].action;
}
