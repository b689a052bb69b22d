/* kiln: the provisioning station program. */
#include <stdio.h>
#include <string.h>

#include "kiln/station.h"

int main(int argc, char **argv)
{
        if (argc > 1 && strcmp(argv[1], "--version") == 0) {
                printf("kiln %s\n", station_version());
                return 0;
        }
        fprintf(stderr, "usage: kiln COMMAND ...\n");
        return 2;
}
