/* A resumable walk over every mailbox directory a [mail] location template can name, for the
 * background purge: it goes a bounded number of directory entries at a time, so that a mail root
 * of a hundred thousand users is walked in small steps between other work.
 *
 * The template after the mail root (sandbox_mail_root()) is taken component by component: one
 * with a '%' variable matches every subdirectory whose name does not start with '.', a literal
 * one only itself ("/srv/mail/%d/%n" walks /srv/mail/X/Y, "/home/%u/Maildir" walks
 * /home/X/Maildir). That may name directories no user has, which the caller skips (no index, no
 * undelete area); it never misses a user's. */
#ifndef BUZON_STORE_MAILROOT_WALK_H
#define BUZON_STORE_MAILROOT_WALK_H

#include <stddef.h>

struct mailroot_walk;

/* A walk over the mailboxes of location (such as "maildir:/srv/mail/%d/%n"). Returns NULL if the
 * location names no absolute path or has more variable components than the walk follows (8). */
struct mailroot_walk *mailroot_walk_new(const char *location);

/* Goes on with the walk, reading at most *budget directory entries (decremented by what it
 * reads). Returns 1 with *maildir_r (owned by the walk, valid until the next call) when it comes
 * to a candidate mailbox directory; 0 when the budget ran out first; -1 when the pass is complete
 * (the next call starts a new pass from the root). Directories that cannot be opened are
 * skipped. */
int mailroot_walk_next(struct mailroot_walk *walk, size_t *budget, const char **maildir_r);

/* Frees the walk (closing its directories) and sets *walk to NULL. */
void mailroot_walk_free(struct mailroot_walk **walk);

#endif
