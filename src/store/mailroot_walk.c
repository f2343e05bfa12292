/* The resumable walk over a mail root's mailbox directories (see mailroot_walk.h). */
#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/sandbox.h"
#include "core/util.h"
#include "store/mailroot_walk.h"
#include "store/store.h"

/* Variable components followed: "%d/%n" needs two; more than a few is no mail layout. */
#define MAILROOT_WALK_DEPTH_MAX 8

/* A directory being listed: its entries stand for template component `component`. */
struct mailroot_level {
	DIR *dir;
	char *path;
	size_t component;
};

struct mailroot_walk {
	char *root;
	char **components; /* the template after the root, split at '/' */
	size_t component_count;
	struct mailroot_level levels[MAILROOT_WALK_DEPTH_MAX];
	size_t depth;
	bool in_pass;
	char *candidate; /* the last directory returned */
};

static bool mailroot_component_variable(const char *component)
{
	return strchr(component, '%') != NULL;
}

/* Splits the template's path after the root into its non-empty components. */
static void mailroot_walk_split(struct mailroot_walk *walk, const char *rest)
{
	while (*rest != '\0') {
		size_t len = strcspn(rest, "/");
		if (len > 0) {
			walk->components =
			    xrealloc(walk->components,
				     (walk->component_count + 1) * sizeof(walk->components[0]));
			walk->components[walk->component_count++] = xstrndup(rest, len);
		}
		rest += len + (rest[len] == '/');
	}
}

struct mailroot_walk *mailroot_walk_new(const char *location)
{
	const char *path;
	char *root = sandbox_mail_root(location);
	size_t variables = 0;

	if (root == NULL || store_backend_find(location, &path) == NULL) {
		free(root);
		return NULL;
	}
	struct mailroot_walk *walk = xcalloc(1, sizeof(*walk));
	walk->root = root;
	/* the root is a prefix of the path ("/srv/mail" of "/srv/mail/%d/%n") */
	mailroot_walk_split(walk, path + strlen(root));
	for (size_t i = 0; i < walk->component_count; i++)
		variables += mailroot_component_variable(walk->components[i]);
	if (variables > MAILROOT_WALK_DEPTH_MAX)
		mailroot_walk_free(&walk);
	return walk;
}

static char *mailroot_join(const char *dir, const char *name)
{
	size_t len = strlen(dir);

	return len > 0 && dir[len - 1] == '/' ? xasprintf("%s%s", dir, name)
					      : xasprintf("%s/%s", dir, name);
}

/* Follows the literal components from component on below path (taken over). Returns 1 when the
 * template is used up (path is a candidate), 0 after opening the next directory to list (or
 * skipping one that cannot be opened). */
static int mailroot_walk_descend(struct mailroot_walk *walk, char *path, size_t component)
{
	while (component < walk->component_count &&
	       !mailroot_component_variable(walk->components[component])) {
		char *next = mailroot_join(path, walk->components[component++]);
		free(path);
		path = next;
	}
	if (component == walk->component_count) {
		free(walk->candidate);
		walk->candidate = path;
		return 1;
	}
	DIR *dir = walk->depth < MAILROOT_WALK_DEPTH_MAX ? opendir(path) : NULL;
	if (dir == NULL) {
		free(path);
		return 0;
	}
	walk->levels[walk->depth++] = (struct mailroot_level){dir, path, component};
	return 0;
}

static void mailroot_walk_pop(struct mailroot_walk *walk)
{
	struct mailroot_level *level = &walk->levels[--walk->depth];

	closedir(level->dir);
	free(level->path);
}

int mailroot_walk_next(struct mailroot_walk *walk, size_t *budget, const char **maildir_r)
{
	if (!walk->in_pass) {
		walk->in_pass = true;
		if (mailroot_walk_descend(walk, xstrdup(walk->root), 0) == 1) {
			*maildir_r = walk->candidate; /* a template without variables */
			return 1;
		}
	}
	while (walk->depth > 0) {
		if (*budget == 0)
			return 0;
		(*budget)--;
		struct mailroot_level *level = &walk->levels[walk->depth - 1];
		struct dirent *d = readdir(level->dir);
		if (d == NULL) {
			mailroot_walk_pop(walk);
			continue;
		}
		if (d->d_name[0] == '.' ||
		    (d->d_type != DT_DIR && d->d_type != DT_LNK && d->d_type != DT_UNKNOWN))
			continue;
		if (mailroot_walk_descend(walk, mailroot_join(level->path, d->d_name),
					  level->component + 1) == 1) {
			*maildir_r = walk->candidate;
			return 1;
		}
	}
	walk->in_pass = false;
	return -1;
}

void mailroot_walk_free(struct mailroot_walk **walkp)
{
	struct mailroot_walk *walk = *walkp;

	if (walk == NULL)
		return;
	while (walk->depth > 0)
		mailroot_walk_pop(walk);
	for (size_t i = 0; i < walk->component_count; i++)
		free(walk->components[i]);
	free(walk->components);
	free(walk->root);
	free(walk->candidate);
	x_free(walkp);
}
