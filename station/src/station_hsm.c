/* Opening the station's HSM token from its configuration, for every command that needs it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/config.h"
#include "kiln/error.h"
#include "kiln/hsm.h"
#include "kiln/station.h"

int station_hsm_open(const struct station_config *cfg, unsigned pool_size,
                     struct hsm_token **ret)
{
        struct hsm_config hc;

        /* a development token's SoftHSM configuration; refused in production by the config */
        if (cfg->hsm.softhsm_conf != NULL && setenv("SOFTHSM2_CONF", cfg->hsm.softhsm_conf, 1))
                return kiln_fail(KILN_E_IO, "cannot set SOFTHSM2_CONF: %s", strerror(errno));
        memset(&hc, 0, sizeof(hc));
        hc.module = cfg->hsm.module;
        hc.token_uri = cfg->hsm.token_uri;
        hc.pin_source = cfg->hsm.pin_source == STATION_PIN_ENV ? HSM_PIN_ENV : HSM_PIN_FILE;
        hc.pin_ref = cfg->hsm.pin_ref;
        hc.pool_size = cfg->hsm.sessions ? cfg->hsm.sessions : pool_size;
        hc.production = cfg->production;
        return hsm_token_open(&hc, ret);
}
