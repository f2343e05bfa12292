/* Subcommands of the buzon executable. Each takes argc/argv with argv[0] being the subcommand's
 * name and returns the process exit status. */
#ifndef BUZON_CLI_CLI_H
#define BUZON_CLI_CLI_H

#include "core/config.h"

/* buzon serve -c FILE */
int cli_serve_main(int argc, char **argv);
/* buzon check-config -c FILE */
int cli_check_config_main(int argc, char **argv);
/* buzon user add|passwd|del|list -c FILE [--scheme S] [--password-stdin] [USER] */
int cli_user_main(int argc, char **argv);
/* buzon hash [--scheme S] [--password-stdin] */
int cli_hash_main(int argc, char **argv);
/* buzon deliver [-c FILE] -u USER [-f SENDER]: delivers stdin; exit codes per sysexits.h */
int cli_deliver_main(int argc, char **argv);
/* The undelete window (retention_cmd.c): buzon undelete [-c FILE] [--since TIME] [--uidl X]...
 * [--dry-run] USER, and buzon purge [-c FILE] [USER...]; exit codes per sysexits.h. */
int cli_undelete_main(int argc, char **argv);
int cli_purge_main(int argc, char **argv);
/* buzon import [-c FILE] [--dry-run] USER...: imports the UIDLs of the replaced server's
 * dovecot-uidlist or courierpop3dsizelist (import_cmd.c); exit codes per sysexits.h. */
int cli_import_main(int argc, char **argv);

/* The operator's commands, which ask the running server over its control socket
 * (admin_cmd.c): buzon who, kick USER|IP, stats, reload, ban list|add|del, each with -c FILE.
 * Exit 69 when the server is not running, 77 when the caller may not use the socket. */
int cli_who_main(int argc, char **argv);
int cli_kick_main(int argc, char **argv);
int cli_stats_main(int argc, char **argv);
int cli_reload_main(int argc, char **argv);
int cli_ban_main(int argc, char **argv);

/* Loads the configuration at path; on error prints it ("buzon: FILE:LINE: …") and returns NULL
 * (the command then exits EX_CONFIG). */
struct buzon_config *cli_config_load(const char *path);
/* Started as root: becomes [server] user, the owner of the mail, as the server's mail processes
 * do, so that files the command writes belong to it. Returns 0, or EX_NOPERM after saying why. */
int cli_become_mail_owner(const struct buzon_config *config);

/* The default config path when -c is not given. */
#define CLI_DEFAULT_CONFIG "/etc/buzon/buzon.conf"

#endif
