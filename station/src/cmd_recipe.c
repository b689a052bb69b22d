/* PLACEHOLDER until the recipe module lands: replaced wholesale by its owner. */
#include <stdio.h>

#include "kiln/cli.h"

int station_cmd_recipe(int argc, char **argv)
{
        (void)argc;
        (void)argv;
        fprintf(stderr, "kiln recipe: not built yet\n");
        return 2;
}
