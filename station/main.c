/* kiln: the provisioning station program. Subcommands live in station/src/cmd_*.c. */
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "kiln/cli.h"
#include "kiln/station.h"

struct command {
        const char *name;
        int (*fn)(int argc, char **argv);
        const char *help;
};

static const struct command commands[] = {
        {"audit", station_cmd_audit, "verify the tamper-evident audit trail, sign checkpoints"},
        {"demo", station_cmd_demo, "provision simulated devices with a development HSM token"},
        {"evidence", station_cmd_evidence, "the per-lot compliance evidence pack (json or md)"},
        {"export", station_cmd_export, "stream unit records as JSON Lines or CSV"},
        {"run", station_cmd_run, "run the station's slots (kiln run --config FILE ...)"},
        {"quota", station_cmd_quota, "work order quotas: show, authorize, raise"},
        {"recipe", station_cmd_recipe, "check a recipe (kiln recipe check FILE)"},
        {"trace", station_cmd_trace, "find a unit by serial, UID, MAC or cert serial; its history"},
        {"hsm", station_cmd_hsm, "development PKI and token information (init-dev, info)"},
        {"label", station_cmd_label, "render and print a unit's label (ZPL or PNG)"},
};

static void usage(FILE *f)
{
        fprintf(f, "usage: kiln COMMAND [ARGS]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
        fprintf(f, "\nkiln COMMAND --help shows a command's options. kiln --version prints the "
                   "version.\n");
}

/*
 * DESIGN.md §11: no secret in a core file. Any command may hold the HSM PIN, device credentials or
 * key material in memory: no core dump, and (as ssh-agent does) no ptrace or /proc/PID/mem reading
 * by other processes of the user. Regression test: tests/secrets, test_no_secret_in_core.
 */
static void no_core_dumps(void)
{
        struct rlimit none = {0, 0};

        (void)setrlimit(RLIMIT_CORE, &none);
        (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int main(int argc, char **argv)
{
        no_core_dumps();
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--version") == 0) {
                printf("kiln %s\n", station_version());
                return 0;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
                usage(stdout);
                return 0;
        }
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].fn(argc - 1, argv + 1);
        fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 2;
}
