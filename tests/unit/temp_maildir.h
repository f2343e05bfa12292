/* A temporary directory for the store's unit tests, with the path of a Maildir inside it, made
 * in a cmocka setup and removed in its teardown. */
#ifndef BUZON_TESTS_TEMP_MAILDIR_H
#define BUZON_TESTS_TEMP_MAILDIR_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/util.h"

struct temp_maildir {
	char dir[64];  /* the temporary directory */
	char *maildir; /* dir/Maildir, created only with its subdirectories */
};

/* Makes /tmp/buzon-NAME-XXXXXX; with subdirectories, also the Maildir with cur, new and tmp. */
static inline int temp_maildir_setup(void **state, const char *name, bool subdirectories)
{
	struct temp_maildir *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/buzon-%s-XXXXXX", name);
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->maildir = xasprintf("%s/Maildir", fx->dir);
	*state = fx;
	if (!subdirectories)
		return 0;
	static const char *const subdirs[] = {"", "/cur", "/new", "/tmp"};
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char *path = xasprintf("%s%s", fx->maildir, subdirs[i]);
		int ret = mkdir(path, 0700);
		free(path);
		if (ret < 0)
			return -1;
	}
	return 0;
}

/* Removes the directory, even parts a test made unreadable. */
static inline int temp_maildir_teardown(void **state)
{
	struct temp_maildir *fx = *state;
	char *cmd = xasprintf("chmod -R u+rwx '%s'; rm -rf '%s'", fx->dir, fx->dir);
	int ret = system(cmd);

	free(cmd);
	free(fx->maildir);
	free(fx);
	return ret == 0 ? 0 : -1;
}

#endif
