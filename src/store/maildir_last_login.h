/* The Maildir backend's record of a maildrop's last successful login, for RFC 2449 LOGIN-DELAY
 * (store_backend.last_login_get / last_login_set; format in maildir_last_login.c). */
#ifndef BUZON_STORE_MAILDIR_LAST_LOGIN_H
#define BUZON_STORE_MAILDIR_LAST_LOGIN_H

#include <time.h>

/* File names inside the maildir. */
#define MAILDIR_LAST_LOGIN_NAME "buzon-lastlogin"
#define MAILDIR_LAST_LOGIN_TMP	"buzon-lastlogin.tmp"

/* Reads maildir/buzon-lastlogin. A missing file is no record (*when_r = 0, returns 0); an
 * unreadable or malformed one returns -1 with a newly allocated *error_r and *when_r = 0. */
int maildir_last_login_get(const char *maildir, time_t *when_r, char **error_r);

/* Replaces maildir/buzon-lastlogin with when. Call with the maildrop lock held. Returns 0, or
 * -1 with a newly allocated *error_r. */
int maildir_last_login_set(const char *maildir, time_t when, char **error_r);

#endif
