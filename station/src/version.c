/* Program version, from CMake's project(VERSION). */
#include "kiln/station.h"

const char *station_version(void)
{
        return "0.1.0";
}
