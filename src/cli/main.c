/* The buzon executable: one binary with subcommands, like git or doveadm. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/util.h"

struct cli_command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
};

static const struct cli_command cli_commands[] = {
    {"serve", cli_serve_main, "run the POP3 server in the foreground"},
    {"check-config", cli_check_config_main, "validate and print the effective config"},
    {"user", cli_user_main, "add, passwd, del or list users in the passwd-file"},
    {"hash", cli_hash_main, "print a password hash for the passwd-file"},
    {"deliver", cli_deliver_main, "deliver one message from stdin (for an MTA)"},
    {"undelete", cli_undelete_main, "restore messages a user deleted (undelete window)"},
    {"purge", cli_purge_main, "purge expired deleted messages and apply EXPIRE"},
    {"import", cli_import_main, "import the UIDLs of a Dovecot or Courier Maildir"},
    {"who", cli_who_main, "list the running server's sessions"},
    {"kick", cli_kick_main, "end the sessions of a user or client address"},
    {"stats", cli_stats_main, "summarise the running server's counters"},
    {"reload", cli_reload_main, "reload the configuration, users and TLS files"},
    {"ban", cli_ban_main, "list, add or lift bans of client addresses"},
};

static void cli_usage(FILE *out)
{
	fprintf(out, "usage: buzon COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++)
		fprintf(out, "  %-13s %s\n", cli_commands[i].name, cli_commands[i].summary);
	fprintf(out, "  %-13s %s\n", "version", "print the version");
	fprintf(out, "\nRun 'buzon COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		cli_usage(stderr);
		return 64;
	}
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("buzon %s\n", BUZON_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0) {
		cli_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cli_commands); i++) {
		if (strcmp(argv[1], cli_commands[i].name) == 0)
			return cli_commands[i].main(argc - 1, argv + 1);
	}
	fprintf(stderr, "buzon: unknown command '%s'\n", argv[1]);
	cli_usage(stderr);
	return 64;
}
