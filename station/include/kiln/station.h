/* The kiln station program. */
#ifndef KILN_STATION_H
#define KILN_STATION_H

const char *station_version(void);

#endif
