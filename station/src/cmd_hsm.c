/* PLACEHOLDER until the hsm module lands: replaced wholesale by its owner. */
#include <stdio.h>

#include "kiln/cli.h"

int station_cmd_hsm(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "kiln hsm: not built yet\n");
        return 2;
}
