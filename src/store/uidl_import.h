/* Keeping the UIDLs of the POP3 server buzon replaces. When a Maildir without a buzon-uidlist holds
 * Dovecot's dovecot-uidlist or Courier's courierpop3dsizelist, the first open (under the maildrop
 * lock) reads it once: every message keeps its old UID and the mailbox its UIDVALIDITY, and the
 * UIDLs that buzon's own form (store.h) would not reproduce are kept in buzon-uidl-import, a map
 * from UID to the old UIDL text read at every open. The file formats are described at the top of
 * uidl_import.c.
 *
 * Rules that keep DESIGN.md goal 1 (a UIDL never changes and is never reused):
 *  - imported messages keep their UIDs and next_uid starts above every one of them, and above the
 *    old server's own next UID, so no UID is handed out twice;
 *  - no two messages show one UIDL: an imported UIDL that another message shows too, or that has
 *    the form of buzon's UIDL of another UID (which a later message could get), is dropped, and
 *    that message shows buzon's UIDL instead (it is downloaded again rather than never);
 *  - the import runs once: the map is written before the index ("pending") and marked "done"
 *    after it; an open that finds no index and a pending map imports again (a crash interrupted
 *    it), one that finds a done map does not (the index was lost later, and importing again
 *    could give a UID buzon used since to another message).
 */
#ifndef BUZON_STORE_UIDL_IMPORT_H
#define BUZON_STORE_UIDL_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "store/uidlist.h"

#define UIDL_IMPORT_MAP_NAME	 "buzon-uidl-import"
#define UIDL_IMPORT_DOVECOT_NAME "dovecot-uidlist"
#define UIDL_IMPORT_COURIER_NAME "courierpop3dsizelist"

/* Dovecot 2.3's default pop3_uidl_format, which gives the same text as buzon's own UIDL. */
#define UIDL_FORMAT_DEFAULT "%08Xu%08Xv"

/* ---- Dovecot's pop3_uidl_format ---- */

/* A format longer than this cannot be a useful UIDL template (a UIDL has at most 70 octets). */
#define UIDL_FORMAT_TEXT_MAX 128
/* Modifiers stacked on one variable; Dovecot allows 10, and more than a few is never useful. */
#define UIDL_FORMAT_MODIFIERS_MAX 4

struct uidl_format_part {
	char variable;	    /* 'u', 'v', 'f', 'g', or 0 for literal text */
	bool zero_pad;	    /* %08u: pad with '0' up to width */
	unsigned int width; /* 0: none; without zero_pad the value is cut to width (Dovecot) */
	char modifiers[UIDL_FORMAT_MODIFIERS_MAX]; /* 'X', 'L', 'U', applied left to right */
	size_t modifier_count;
	size_t literal_start, literal_len; /* into uidl_format.text, for literal parts */
};

/* A parsed format: literal text and variables. Fixed size, so that it can be kept per process
 * without an allocation. */
struct uidl_format {
	char text[UIDL_FORMAT_TEXT_MAX + 1]; /* literal text with "%%" already reduced to '%' */
	struct uidl_format_part parts[UIDL_FORMAT_TEXT_MAX];
	size_t count;
};

/* Parses a pop3_uidl_format: literal octets 0x21..0x7e, "%%", and variables
 * %[0][width][X|L|U...]{u,v,f,g} (UID, UIDVALIDITY, base file name, GUID). Refuses what buzon
 * cannot compute from a Maildir exactly as Dovecot did: %m (header MD5), offsets ("%2.5f"),
 * negative widths, other modifiers, %{long} names (Dovecot 2.3 refuses those here too), and a
 * format without a variable. Returns 0, or -1 with a newly allocated *error_r. */
int uidl_format_parse(const char *text, struct uidl_format *format_r, char **error_r);

/* What a format's variables stand for, for one message. */
struct uidl_format_values {
	uint32_t uid;
	uint32_t uidvalidity;
	const char *filename; /* the base name (before ':') */
	const char *guid;     /* Dovecot's G field if the record has one, else the base name */
};

/* Expands format into out. Returns false if the result is not a valid UIDL (uidl_text_valid). */
bool uidl_format_expand(const struct uidl_format *format, const struct uidl_format_values *values,
			char out[STORE_UIDL_MAX + 1]);

/* Sets the format that opens in this process use to import a dovecot-uidlist (the config's [mail]
 * import_uidl_format; UIDL_FORMAT_DEFAULT until called). Returns -1 with *error_r as
 * uidl_format_parse(). */
int uidl_import_set_format(const char *text, char **error_r);

/* ---- the old server's list ---- */

/* RFC 1939 §7: a UIDL is 1 to 70 octets in the range 0x21..0x7e. */
bool uidl_text_valid(const char *text, size_t len);

/* buzon's own UIDL (store.h): 8 lower-case hex digits of the UID, then 8 of the UIDVALIDITY. */
void uidl_native_format(char out[STORE_UIDL_LEN + 1], uint32_t uid, uint32_t uidvalidity);

/* One message of the old server's list. */
struct uidl_import_record {
	uint64_t uid;	/* the old server's UID; kept when in 1..UIDLIST_UID_MAX and unique */
	char *basename; /* valid for the index (uidlist_basename_valid) */
	char *uidl;	/* the UIDL the old server showed; NULL if it is not a valid UIDL */
	size_t line;	/* in the file, from 1 */
};

/* What the old server's file says. Lines that cannot be used are skipped and described in notes
 * (for `buzon import`); parsing never fails and never reads past len. */
struct uidl_import_source {
	const char *name;     /* UIDL_IMPORT_DOVECOT_NAME or UIDL_IMPORT_COURIER_NAME */
	uint32_t uidvalidity; /* 0: the header gave none, and nothing can be imported */
	uint64_t next_uid;    /* the old server's next UID (0: not given) */
	struct uidl_import_record *records;
	size_t count;
	size_t records_alloc; /* private */
	char **notes;
	size_t note_count;
};

/* Parses a dovecot-uidlist (versions 1, 2 and 3) with format for the messages whose record has
 * no P (POP3 UIDL) field. Free with uidl_import_source_free(). */
struct uidl_import_source *uidl_import_parse_dovecot(const char *data, size_t len,
						     const struct uidl_format *format);

/* Parses a courierpop3dsizelist (versions 2 and 3): UIDL "UID<n>-<uidvalidity>" per message. */
struct uidl_import_source *uidl_import_parse_courier(const char *data, size_t len);

void uidl_import_source_free(struct uidl_import_source **source);

/* Reads the old server's file in maildir: dovecot-uidlist or courierpop3dsizelist, the newer of
 * the two if both are there. Returns 1 with *source_r, 0 if there is neither, or -1 with a newly
 * allocated *error_r (a file that exists but cannot be read). */
int uidl_import_source_read(const char *maildir, const struct uidl_format *format,
			    struct uidl_import_source **source_r, char **error_r);

/* ---- buzon-uidl-import: UID -> old UIDL ---- */

struct uidl_import_map_entry {
	uint32_t uid;
	const char *uidl; /* in the map's texts (or the caller's, for a map it builds) */
};

struct uidl_import_map {
	bool done;	      /* the index was saved after the import */
	uint32_t uidvalidity; /* the index's when imported; the map applies to that index only */
	char *source;	      /* the file imported from */
	struct uidl_import_map_entry *entries; /* ascending UID, unique UIDs and UIDLs */
	size_t count;
	/* private: every UIDL in one block, for a map of a hundred thousand entries is read at
	 * every open of its mailbox */
	char *texts;
};

/* The old UIDL of uid, or NULL if the message shows buzon's own (may be map NULL). */
const char *uidl_import_map_lookup(const struct uidl_import_map *map, uint32_t uid);

/* The same for UIDs asked in ascending order, in O(1) each: *cursor starts at 0. */
const char *uidl_import_map_lookup_next(const struct uidl_import_map *map, uint32_t uid,
					size_t *cursor);

/* Drops the entries that could make two messages show one UIDL under uidvalidity: a UIDL shown
 * for a lower UID too, or one of buzon's form for another UID. dropped (may be NULL) is told each
 * one with the reason. Returns how many were dropped. */
size_t uidl_import_map_check(struct uidl_import_map *map, uint32_t uidvalidity,
			     void (*dropped)(void *context, uint32_t uid, const char *uidl,
					     const char *why),
			     void *context);

/* Parses the map file (never fails; bad lines are skipped and *damaged_r set; a header that does
 * not parse reads as done, with UIDVALIDITY 0, so that it is neither applied nor imported again).
 */
struct uidl_import_map *uidl_import_map_parse(const char *data, size_t len, bool *damaged_r);

/* Serializes map into newly allocated memory (NUL-terminated; *len_r without the NUL). */
char *uidl_import_map_format(const struct uidl_import_map *map, size_t *len_r);

/* Reads maildir/buzon-uidl-import. Returns 1 with *map_r, 0 if there is none, or -1 with a
 * newly allocated *error_r. */
int uidl_import_map_load(const char *maildir, struct uidl_import_map **map_r, char **error_r);

/* Writes the map atomically (temp file, fsync, rename, fsync of the directory). Returns 0 or -1
 * with a newly allocated *error_r; a failure leaves the previous file. */
int uidl_import_map_save(const char *maildir, const struct uidl_import_map *map, char **error_r);

void uidl_import_map_free(struct uidl_import_map **map);

/* ---- the import ---- */

/* One message of the old list, as the import treats it. */
struct uidl_import_item {
	const struct uidl_import_record *record;
	uint32_t uid;	   /* buzon's UID: the old one, or a new one if that was unusable */
	const char *shown; /* the UIDL buzon shows: the old one, or NULL for buzon's own form */
	bool uidl_dropped; /* the old UIDL could not be kept (invalid, duplicate, collision) */
};

/* What an import does: the index to start from, the map, and a line per problem. */
struct uidl_import_plan {
	struct uidlist *list;	     /* the imported UIDs; the caller may take it (set to NULL) */
	struct uidl_import_map *map; /* not done yet; the caller may take it */
	struct uidl_import_item *items; /* one per record kept, ascending buzon UID */
	size_t count;
	char **notes; /* the source's notes, then the plan's */
	size_t note_count;
};

/* Builds the import of source. Returns 0, or -1 with a newly allocated *error_r when nothing can
 * be imported (no UIDVALIDITY, or UIDs too close to the end of the UID space). The plan points
 * into source, which must outlive it. */
int uidl_import_plan_build(const struct uidl_import_source *source,
			   struct uidl_import_plan **plan_r, char **error_r);

void uidl_import_plan_free(struct uidl_import_plan **plan);

/* The import step of a Maildir open, under the maildrop lock, right after the index was read into
 * *list (index_missing: there was no index file). Loads the map; with no index and no finished
 * import, imports the old server's file if there is one: writes the map (pending) and replaces
 * *list. *map_r gets the map to apply (NULL: none) and *imported_r whether the caller must call
 * uidl_import_finish() once the index is saved. Returns 0, or -1 with a newly allocated *error_r
 * when the map or the old server's file cannot be read or the map cannot be written (the open
 * must fail: going on would change UIDLs for good). */
int uidl_import_open(const char *maildir, struct uidlist **list, bool index_missing,
		     struct uidl_import_map **map_r, bool *imported_r, char **error_r);

/* Marks the map done once the index of an import is saved. A failure is logged only: the next
 * open finds the index and marks it then. */
void uidl_import_finish(const char *maildir, struct uidl_import_map *map);

#endif
