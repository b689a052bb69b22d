/* The kiln station program: helpers shared by its commands. */
#ifndef KILN_STATION_H
#define KILN_STATION_H

struct station_config;
struct hsm_token;

const char *station_version(void);

/* Open and log in to the configured HSM token with a pool of pool_size sessions (0: the
 * configuration's, else the module default). The PIN comes from the configured source. */
int station_hsm_open(const struct station_config *cfg, unsigned pool_size,
                     struct hsm_token **ret);

#endif
