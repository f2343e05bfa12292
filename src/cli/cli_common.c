/* What several subcommands do the same way: reading the configuration and, started as root,
 * becoming the owner of the mail. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli/cli.h"

struct buzon_config *cli_config_load(const char *path)
{
	char *error = NULL;
	struct buzon_config *config = config_load(path, &error);

	if (config == NULL) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
	}
	return config;
}

int cli_become_mail_owner(const struct buzon_config *config)
{
	if (geteuid() != 0)
		return 0;
	if (config->server_user == NULL) {
		fprintf(stderr, "buzon: started as root, but [server] user (the owner of the "
				"mailboxes) is not set; run as that user\n");
		return EX_NOPERM;
	}
	const struct passwd *pw = getpwnam(config->server_user);
	if (pw == NULL || pw->pw_uid == 0) {
		fprintf(stderr, "buzon: [server] user %s: no such user, or root\n",
			config->server_user);
		return EX_NOPERM;
	}
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "buzon: cannot become %s: %s\n", config->server_user,
			strerror(errno));
		return EX_NOPERM;
	}
	return 0;
}
