/*
 * kiln subcommands. Each `kiln NAME ...` is one function in station/src/cmd_NAME.c, called with
 * argv[0] = NAME. It returns the process exit status: 0 success, 1 the operation failed (checks
 * failed, units failed), 2 usage or input errors.
 */
#ifndef KILN_CLI_H
#define KILN_CLI_H

int station_cmd_audit(int argc, char **argv);
int station_cmd_demo(int argc, char **argv);
int station_cmd_evidence(int argc, char **argv);
int station_cmd_export(int argc, char **argv);
int station_cmd_hsm(int argc, char **argv);
int station_cmd_label(int argc, char **argv);
int station_cmd_quota(int argc, char **argv);
int station_cmd_recipe(int argc, char **argv);
int station_cmd_run(int argc, char **argv);
int station_cmd_trace(int argc, char **argv);

#endif
