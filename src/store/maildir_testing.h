/* The Maildir file-name parsers of maildir.c, exported only so that the fuzz target
 * (fuzz/fuzz_maildir_name.c) can reach them; the rest of the server uses them through the store
 * backend. A name is "<base>[:<info>]"; the base may carry ",S=<size>" and ",W=<size>". */
#ifndef BUZON_STORE_MAILDIR_TESTING_H
#define BUZON_STORE_MAILDIR_TESTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The info part of name (from its first ':'), or NULL if there is none. */
const char *maildir_name_info(const char *name);

/* Length of the base name: the part of name before the info part. */
size_t maildir_name_base_len(const char *name);

/* True for a name a Maildir writer could have made and the index can hold: no leading dot, at
 * most UIDLIST_BASENAME_MAX octets, no control byte, space, DEL or '/', a non-empty base. */
bool maildir_name_plausible(const char *name);

/* Finds ",<key>=<digits>" in the first base_len octets of name (the digits end at ',' or at the
 * end of the base). Returns false if there is none, it is malformed or it overflows. */
bool maildir_name_get_size(const char *name, size_t base_len, char key, uint64_t *size_r);

/* Inserts flag into the ":2," info of name, keeping flags sorted and unique. Returns the new name
 * newly allocated, or NULL if name needs no change (flag present, or info other than ":2,"). */
char *maildir_name_add_flag(const char *name, char flag);

#endif
