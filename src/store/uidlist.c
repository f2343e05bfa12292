/* The persistent per-mailbox UID index: parsing, lookup, and atomic saving of buzon-uidlist.
 *
 * File format (text, one record per LF-terminated line, fields separated by one space):
 *
 *   buzon-uidlist 3 <uidvalidity> <next_uid> <cur_mtime> <new_mtime>
 *   <uid> <crlf_size> <file_size> <basename>[:<info>]
 *   <uid> <crlf_size> <file_size> <retrieved_at> <deleted_at> <basename>[:<info>]
 *   ...
 *   end <uidvalidity> <next_uid> <count>
 *
 *  - "3" is the format version. Version 2 files (no times on message lines) and version 1 files
 *    (no mtimes in the header, no info) are read too: their lines are version 3 lines without
 *    times, so an old index needs no conversion and is written as version 3 at its next save.
 *  - cur_mtime, new_mtime: "<seconds>.<nanoseconds>" of the cur/ and new/ directories when the
 *    lines were known to list cur/ exactly (see struct uidlist_dir_stamp), or "-" for both.
 *  - uidvalidity: 1..4294967295; next_uid: 1..4294967296 (one past the highest UID ever assigned,
 *    including UIDs of messages deleted since; it never goes down).
 *  - One line per message in ascending UID order. uid: 1..4294967295, unique. crlf_size: the size
 *    RETR sends (bare LF counted as CRLF); file_size: the size of the file that crlf_size was
 *    computed for, so that a changed file is noticed; either may be "-" (not cached).
 *    basename: the Maildir file name before ':' (1..255 bytes, no control bytes, space, DEL, '/'
 *    or ':'); info: what followed ':' in the file's name in cur/ when last seen (flags such as
 *    "2,S"; same bytes as basename, ':' allowed), absent when unknown. They are the rest of the
 *    line.
 *  - The two times (version 3) are written only when one of them is set, so a line keeps its
 *    short form until then; the form is told by the number of fields (a name holds no space).
 *    retrieved_at: seconds since the epoch when a session that RETRieved the whole message
 *    committed (for EXPIRE), or "-". deleted_at: "-" for a message in cur/; otherwise the message
 *    was deleted then and waits in the undelete area (buzon-deleted/basename[:info], see
 *    store/retention.h), invisible to POP3 but keeping its UID, until it is purged or restored.
 *    Both are 1..9223372036854775807.
 *  - The trailer repeats uidvalidity and next_uid and gives the number of message lines. A file
 *    whose last line is not the trailer was truncated; a damaged header is recovered from it.
 *
 * Reading is tolerant because the index is the only record of which UID each message has: losing a
 * line changes one UIDL (the message is downloaded again), losing the file changes them all. So
 * every line that parses keeps its UID, and next_uid is raised above every UID seen. A line cut off
 * without its LF is dropped, because its base name may be cut short too. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "store/uidlist.h"

#define UIDLIST_VERSION	     3
#define UIDLIST_VERSION_MIN  1
#define UIDLIST_HEADER_WORD  "buzon-uidlist"
#define UIDLIST_TRAILER_WORD "end"

/* An index of a million messages is about 100 MB; anything far larger is not an index we wrote,
 * and reading it whole would only exhaust memory. */
#define UIDLIST_FILE_MAX (512ULL * 1024 * 1024)

/* What the header or trailer says; valid is false if the line did not parse. */
struct uidlist_bounds {
	bool valid;
	uint32_t uidvalidity;
	uint64_t next_uid;
	uint64_t count;			/* trailer only */
	struct uidlist_dir_stamp stamp; /* header of version 2 only */
};

/* A growing text buffer for uidlist_format(). */
struct uidlist_text {
	char *data;
	size_t len;
	size_t alloc;
};

uint32_t uidlist_uidvalidity_now(void)
{
	uint32_t now = (uint32_t)time(NULL);

	return now == 0 ? 1 : now;
}

struct uidlist *uidlist_new(uint32_t uidvalidity)
{
	struct uidlist *list = xcalloc(1, sizeof(*list));

	list->uidvalidity = uidvalidity;
	list->next_uid = 1;
	list->sorted_by_name = true;
	return list;
}

void uidlist_free(struct uidlist **list)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < (*list)->count; i++) {
		free((*list)->entries[i].basename); /* info lives in the same block */
	}
	free((*list)->entries);
	x_free(list);
}

bool uidlist_info_valid(const char *info, size_t len)
{
	if (len > UIDLIST_BASENAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)info[i];
		if (c <= ' ' || c == 0x7f || c == '/')
			return false;
	}
	return true;
}

bool uidlist_basename_valid(const char *basename, size_t len)
{
	if (len == 0 || len > UIDLIST_BASENAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)basename[i];
		if (c <= ' ' || c == 0x7f || c == '/' || c == ':')
			return false;
	}
	return true;
}

/* ---- parsing ---- */

/* Parses a decimal number at *p that ends at a space or at end, in [min, max]; moves *p past it. */
static int uidlist_parse_number(const char **p, const char *end, uint64_t min, uint64_t max,
				uint64_t *value_r)
{
	const char *space = memchr(*p, ' ', (size_t)(end - *p));
	size_t len = (size_t)((space != NULL ? space : end) - *p);
	unsigned long long value;

	if (str_parse_uint_n(*p, len, min, max, &value) < 0)
		return -1;
	*p += len;
	*value_r = value;
	return 0;
}

/* Expects one space at *p and moves past it. */
static int uidlist_parse_space(const char **p, const char *end)
{
	if (*p == end || **p != ' ')
		return -1;
	(*p)++;
	return 0;
}

/* Parses a size field: a number or "-". */
static int uidlist_parse_size(const char **p, const char *end, uint64_t *value_r)
{
	if (*p < end && **p == '-') {
		(*p)++;
		*value_r = UIDLIST_SIZE_UNKNOWN;
		return *p == end || **p == ' ' ? 0 : -1;
	}
	return uidlist_parse_number(p, end, 0, UIDLIST_SIZE_UNKNOWN - 1, value_r);
}

/* Parses "<seconds>.<nanoseconds>" (ends at a space or at end). */
static int uidlist_parse_mtime(const char **p, const char *end, struct timespec *ts_r)
{
	const char *space = memchr(*p, ' ', (size_t)(end - *p));
	const char *stop = space != NULL ? space : end;
	const char *dot = memchr(*p, '.', (size_t)(stop - *p));
	unsigned long long sec, nsec;

	if (dot == NULL || str_parse_uint_n(*p, (size_t)(dot - *p), 1, INT64_MAX, &sec) < 0 ||
	    str_parse_uint_n(dot + 1, (size_t)(stop - dot - 1), 0, 999999999, &nsec) < 0)
		return -1;
	ts_r->tv_sec = (time_t)sec;
	ts_r->tv_nsec = (long)nsec;
	*p = stop;
	return 0;
}

/* Parses " <cur_mtime> <new_mtime>" of a version 2 header: both times, or "- -". */
static int uidlist_parse_stamp(const char **p, const char *end, struct uidlist_dir_stamp *stamp_r)
{
	memset(stamp_r, 0, sizeof(*stamp_r));
	if (uidlist_parse_space(p, end) < 0)
		return -1;
	if ((size_t)(end - *p) == 3 && memcmp(*p, "- -", 3) == 0) {
		*p = end;
		return 0;
	}
	if (uidlist_parse_mtime(p, end, &stamp_r->cur_mtime) < 0 ||
	    uidlist_parse_space(p, end) < 0 || uidlist_parse_mtime(p, end, &stamp_r->new_mtime) < 0)
		return -1;
	stamp_r->valid = true;
	return 0;
}

/* Parses "<word> <uidvalidity> <next_uid>" and, when with_count, " <count>"; nothing may follow. */
static int uidlist_parse_bounds(const char *line, const char *end, const char *word,
				bool with_count, struct uidlist_bounds *bounds_r)
{
	size_t word_len = strlen(word);
	const char *p = line;
	uint64_t uidvalidity, version;

	if ((size_t)(end - p) <= word_len || memcmp(p, word, word_len) != 0)
		return -1;
	p += word_len;
	version = UIDLIST_VERSION_MIN;
	if (!with_count &&
	    (uidlist_parse_space(&p, end) < 0 ||
	     uidlist_parse_number(&p, end, UIDLIST_VERSION_MIN, UIDLIST_VERSION, &version) < 0))
		return -1;
	if (uidlist_parse_space(&p, end) < 0 ||
	    uidlist_parse_number(&p, end, 1, UINT32_MAX, &uidvalidity) < 0 ||
	    uidlist_parse_space(&p, end) < 0 ||
	    uidlist_parse_number(&p, end, 1, (uint64_t)UIDLIST_UID_MAX + 1, &bounds_r->next_uid) <
		0)
		return -1;
	bounds_r->count = 0;
	memset(&bounds_r->stamp, 0, sizeof(bounds_r->stamp));
	if (!with_count && version >= 2 && uidlist_parse_stamp(&p, end, &bounds_r->stamp) < 0)
		return -1;
	if (with_count && (uidlist_parse_space(&p, end) < 0 ||
			   uidlist_parse_number(&p, end, 0, UINT64_MAX - 1, &bounds_r->count) < 0))
		return -1;
	if (p != end)
		return -1;
	bounds_r->uidvalidity = (uint32_t)uidvalidity;
	bounds_r->valid = true;
	return 0;
}

/* One allocation holds the base name and, after its NUL, the info part: a big mailbox's index
 * has a hundred thousand entries, and an allocation per string showed in the open profile. */
static void uidlist_entry_store_names(struct uidlist_entry *entry, const char *basename, size_t len,
				      const char *info, size_t info_len)
{
	char *block = xmalloc(len + 1 + (info != NULL ? info_len + 1 : 0));

	memcpy(block, basename, len);
	block[len] = '\0';
	entry->basename = block;
	entry->info = NULL;
	if (info != NULL) {
		entry->info = block + len + 1;
		memcpy(entry->info, info, info_len);
		entry->info[info_len] = '\0';
	}
}

static void uidlist_append_entry(struct uidlist *list, uint32_t uid, uint64_t crlf_size,
				 uint64_t file_size, const char *basename, size_t len,
				 const char *info, size_t info_len)
{
	if (list->count == list->alloc) {
		list->alloc = list->alloc == 0 ? 64 : list->alloc * 2;
		list->entries = xrealloc(list->entries, list->alloc * sizeof(list->entries[0]));
	}
	struct uidlist_entry *entry = &list->entries[list->count++];
	entry->uid = uid;
	entry->present = true;
	entry->crlf_size = crlf_size;
	entry->file_size = file_size;
	entry->retrieved_at = 0;
	entry->deleted_at = 0;
	uidlist_entry_store_names(entry, basename, len, info, info_len);
	list->sorted_by_name = false;
}

/* Parses a time field: seconds since the epoch, or "-" for none (0). */
static int uidlist_parse_time(const char **p, const char *end, time_t *time_r)
{
	uint64_t value;

	if (*p < end && **p == '-') {
		(*p)++;
		*time_r = 0;
		return *p == end || **p == ' ' ? 0 : -1;
	}
	if (uidlist_parse_number(p, end, 1, INT64_MAX, &value) < 0)
		return -1;
	*time_r = (time_t)value;
	return 0;
}

/* Parses " <retrieved_at> <deleted_at>" when the rest of the line (from *p, after the sizes) has
 * them: a name holds no space, so a space ahead means the long form. */
static int uidlist_parse_times(const char **p, const char *end, time_t *retrieved_r,
			       time_t *deleted_r)
{
	*retrieved_r = 0;
	*deleted_r = 0;
	if (*p == end || **p != ' ' || memchr(*p + 1, ' ', (size_t)(end - *p - 1)) == NULL)
		return 0;
	(*p)++;
	if (uidlist_parse_time(p, end, retrieved_r) < 0 || uidlist_parse_space(p, end) < 0 ||
	    uidlist_parse_time(p, end, deleted_r) < 0)
		return -1;
	return 0;
}

/* Parses "<uid> <crlf_size> <file_size> [<retrieved_at> <deleted_at> ]<basename>[:<info>]" and
 * appends it. Returns -1 if malformed. */
static int uidlist_parse_entry(struct uidlist *list, const char *line, const char *end)
{
	const char *p = line;
	uint64_t uid, crlf_size, file_size;
	time_t retrieved_at, deleted_at;

	if (uidlist_parse_number(&p, end, 1, UIDLIST_UID_MAX, &uid) < 0 ||
	    uidlist_parse_space(&p, end) < 0 || uidlist_parse_size(&p, end, &crlf_size) < 0 ||
	    uidlist_parse_space(&p, end) < 0 || uidlist_parse_size(&p, end, &file_size) < 0 ||
	    uidlist_parse_times(&p, end, &retrieved_at, &deleted_at) < 0 ||
	    uidlist_parse_space(&p, end) < 0)
		return -1;
	const char *colon = memchr(p, ':', (size_t)(end - p));
	const char *base_end = colon != NULL ? colon : end;
	if (!uidlist_basename_valid(p, (size_t)(base_end - p)) ||
	    (colon != NULL && !uidlist_info_valid(colon + 1, (size_t)(end - colon - 1))))
		return -1;
	uidlist_append_entry(list, (uint32_t)uid, crlf_size, file_size, p, (size_t)(base_end - p),
			     colon != NULL ? colon + 1 : NULL,
			     colon != NULL ? (size_t)(end - colon - 1) : 0);
	list->entries[list->count - 1].retrieved_at = retrieved_at;
	list->entries[list->count - 1].deleted_at = deleted_at;
	return 0;
}

static int uidlist_cmp_uid(const void *a, const void *b)
{
	const struct uidlist_entry *x = a, *y = b;

	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return strcmp(x->basename, y->basename);
}

static int uidlist_cmp_name(const void *a, const void *b)
{
	const struct uidlist_entry *x = a, *y = b;
	int ret = strcmp(x->basename, y->basename);

	if (ret != 0)
		return ret;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Removes entry i+1 when it has the same key as entry i (the list being sorted on that key).
 * Returns how many entries were dropped. */
static size_t uidlist_drop_adjacent(struct uidlist *list, bool by_uid)
{
	size_t out = 0;

	for (size_t i = 0; i < list->count; i++) {
		struct uidlist_entry *entry = &list->entries[i];
		if (out > 0) {
			const struct uidlist_entry *kept = &list->entries[out - 1];
			bool same = by_uid ? kept->uid == entry->uid
					   : strcmp(kept->basename, entry->basename) == 0;
			if (same) {
				free(entry->basename);
				continue;
			}
		}
		list->entries[out++] = *entry;
	}
	size_t dropped = list->count - out;
	list->count = out;
	return dropped;
}

/* Two lines claiming one UID, or one base name with two UIDs, can only come from damage; keeping
 * the lowest of each pair is arbitrary but stable, and the loser is treated as a new message. */
static size_t uidlist_drop_duplicates(struct uidlist *list)
{
	size_t dropped;

	if (list->count == 0)
		return 0; /* entries may be NULL, which qsort() must not see */
	qsort(list->entries, list->count, sizeof(list->entries[0]), uidlist_cmp_uid);
	dropped = uidlist_drop_adjacent(list, true);
	qsort(list->entries, list->count, sizeof(list->entries[0]), uidlist_cmp_name);
	dropped += uidlist_drop_adjacent(list, false);
	list->sorted_by_name = true;
	return dropped;
}

static bool uidlist_uids_ascending(const struct uidlist *list)
{
	for (size_t i = 1; i < list->count; i++) {
		if (list->entries[i - 1].uid >= list->entries[i].uid)
			return false;
	}
	return true;
}

/* A hash of a base name for the duplicate check below, eight octets per step: a big index holds
 * megabytes of names, and hashing them an octet at a time took longer than the table work. */
static uint64_t uidlist_name_hash(const char *name)
{
	size_t len = strlen(name), i = 0;
	uint64_t hash = len, word;

	for (; i + sizeof(word) <= len; i += sizeof(word)) {
		memcpy(&word, name + i, sizeof(word));
		hash = (hash ^ word) * 0x9e3779b97f4a7c15ULL;
		hash ^= hash >> 29;
	}
	word = 0;
	memcpy(&word, name + i, len - i);
	hash = (hash ^ word) * 0x9e3779b97f4a7c15ULL;
	return hash ^ (hash >> 32);
}

/* True if two entries (in ascending UID order) share a base name. A file as we write it never
 * has such a pair, but one damaged while its header, trailer and UID order survived would make an
 * open from the index alone list one message twice. This runs on every clean index, so it avoids
 * the sort of uidlist_drop_duplicates(): new messages get their UIDs in name order, so names
 * mostly ascend with UIDs, and then one pass over neighbours settles it (under 1 ms for 100,000
 * names); otherwise a hash set does (about 5 ms). */
static bool uidlist_names_repeat(const struct uidlist *list)
{
	struct slot {
		uint32_t tag;	/* the hash's low half, to skip most string compares */
		uint32_t entry; /* entry index + 1; 0 is a free slot */
	};
	size_t slots = 16;
	bool repeat = false, ascending = true;

	for (size_t i = 1; i < list->count && ascending; i++)
		ascending = strcmp(list->entries[i - 1].basename, list->entries[i].basename) < 0;
	if (ascending)
		return false;
	while (slots < 2 * list->count)
		slots *= 2;
	struct slot *table = xcalloc(slots, sizeof(*table));
	for (size_t i = 0; i < list->count && !repeat; i++) {
		const char *name = list->entries[i].basename;
		uint64_t hash = uidlist_name_hash(name);
		size_t at = (size_t)(hash >> 32) & (slots - 1);
		while (table[at].entry != 0 && !repeat) {
			repeat = table[at].tag == (uint32_t)hash &&
				 strcmp(list->entries[table[at].entry - 1].basename, name) == 0;
			at = (at + 1) & (slots - 1);
		}
		table[at].tag = (uint32_t)hash;
		table[at].entry = (uint32_t)(i + 1);
	}
	free(table);
	return repeat;
}

/* Settles UIDVALIDITY and next_uid from the header, the trailer and the lines themselves. */
static bool uidlist_apply_bounds(struct uidlist *list, const struct uidlist_bounds *header,
				 const struct uidlist_bounds *trailer, size_t lines)
{
	bool damaged = !header->valid || !trailer->valid;
	uint64_t next_uid = 1;

	if (header->valid)
		list->uidvalidity = header->uidvalidity;
	else if (trailer->valid)
		list->uidvalidity = trailer->uidvalidity;
	if (header->valid && trailer->valid &&
	    (header->uidvalidity != trailer->uidvalidity || header->next_uid != trailer->next_uid))
		damaged = true;
	if (trailer->valid && trailer->count != lines)
		damaged = true;
	if (header->valid)
		next_uid = header->next_uid;
	if (trailer->valid && trailer->next_uid > next_uid)
		next_uid = trailer->next_uid;
	for (size_t i = 0; i < list->count; i++) {
		if (list->entries[i].uid >= next_uid) {
			next_uid = (uint64_t)list->entries[i].uid + 1;
			damaged = true;
		}
	}
	list->next_uid = next_uid;
	return damaged;
}

/* The state of one uidlist_parse() run. */
struct uidlist_parser {
	struct uidlist *list;
	struct uidlist_bounds header, trailer;
	size_t lines; /* message lines that parsed, for the trailer's count */
	bool damaged;
};

/* Parses one line (without its LF): the header if first, the trailer if last, else a message. */
static void uidlist_parse_line(struct uidlist_parser *parser, const char *line, const char *end,
			       bool first, bool last)
{
	if (first &&
	    uidlist_parse_bounds(line, end, UIDLIST_HEADER_WORD, false, &parser->header) == 0)
		return;
	if (last &&
	    uidlist_parse_bounds(line, end, UIDLIST_TRAILER_WORD, true, &parser->trailer) == 0)
		return;
	if (uidlist_parse_entry(parser->list, line, end) == 0)
		parser->lines++;
	else
		parser->damaged = true;
}

struct uidlist *uidlist_parse(const char *data, size_t len, bool *damaged_r)
{
	struct uidlist_parser parser = {.list = uidlist_new(0)};
	const char *end = data + len, *line = data;

	while (line < end) {
		const char *lf = memchr(line, '\n', (size_t)(end - line));
		if (lf == NULL) {
			parser.damaged = true; /* truncated in the middle of a line */
			break;
		}
		uidlist_parse_line(&parser, line, lf, line == data, lf + 1 == end);
		line = lf + 1;
	}
	/* The bounds first: a lost header or trailer is damage too, and next_uid must stay above
	 * the UIDs of duplicates about to be dropped. */
	if (uidlist_apply_bounds(parser.list, &parser.header, &parser.trailer, parser.lines))
		parser.damaged = true;
	/* A file as we write it has strictly ascending UIDs and, since every name is added only
	 * after a lookup, no name twice: only damage calls for the sorting duplicate check. */
	if ((parser.damaged || !uidlist_uids_ascending(parser.list) ||
	     uidlist_names_repeat(parser.list)) &&
	    uidlist_drop_duplicates(parser.list) > 0)
		parser.damaged = true;
	if (!parser.damaged)
		parser.list->stamp = parser.header.stamp;
	*damaged_r = parser.damaged;
	return parser.list;
}

/* ---- formatting and saving ---- */

/* Makes room for len more bytes. */
static char *uidlist_text_reserve(struct uidlist_text *text, size_t len)
{
	if (text->alloc - text->len < len) {
		text->alloc = text->alloc * 2 + len;
		text->data = xrealloc(text->data, text->alloc);
	}
	return text->data + text->len;
}

static void uidlist_text_append_mem(struct uidlist_text *text, const void *data, size_t len)
{
	memcpy(uidlist_text_reserve(text, len), data, len);
	text->len += len;
}

/* Appends the decimal digits of value: the index of a big mailbox has hundreds of thousands of
 * numbers, and printf's parsing of a format for each would dominate the save. */
static void uidlist_text_append_number(struct uidlist_text *text, uint64_t value)
{
	char *end = str_put_u64(uidlist_text_reserve(text, STR_U64_DIGITS_MAX), value);

	text->len = (size_t)(end - text->data);
}

static void uidlist_text_append_size(struct uidlist_text *text, uint64_t size)
{
	if (size == UIDLIST_SIZE_UNKNOWN) {
		uidlist_text_append_mem(text, " -", 2);
		return;
	}
	uidlist_text_append_mem(text, " ", 1);
	uidlist_text_append_number(text, size);
}

static void uidlist_text_append_mtime(struct uidlist_text *text, const struct timespec *ts)
{
	char buf[48];
	int n = snprintf(buf, sizeof(buf), " %lld.%09ld", (long long)ts->tv_sec, ts->tv_nsec);

	uidlist_text_append_mem(text, buf, (size_t)n);
}

static void uidlist_text_append_header(struct uidlist_text *text, const struct uidlist *list)
{
	char buf[96];
	int n = snprintf(buf, sizeof(buf), "%s %d %lu %llu", UIDLIST_HEADER_WORD, UIDLIST_VERSION,
			 (unsigned long)list->uidvalidity, (unsigned long long)list->next_uid);

	uidlist_text_append_mem(text, buf, (size_t)n);
	if (list->stamp.valid) {
		uidlist_text_append_mtime(text, &list->stamp.cur_mtime);
		uidlist_text_append_mtime(text, &list->stamp.new_mtime);
	} else {
		uidlist_text_append_mem(text, " - -", 4);
	}
	uidlist_text_append_mem(text, "\n", 1);
}

static void uidlist_text_append_time(struct uidlist_text *text, time_t when)
{
	if (when <= 0) {
		uidlist_text_append_mem(text, " -", 2);
		return;
	}
	uidlist_text_append_mem(text, " ", 1);
	uidlist_text_append_number(text, (uint64_t)when);
}

static void uidlist_text_append_entry(struct uidlist_text *text, const struct uidlist_entry *entry)
{
	uidlist_text_append_number(text, entry->uid);
	uidlist_text_append_size(text, entry->crlf_size);
	uidlist_text_append_size(text, entry->file_size);
	if (entry->retrieved_at > 0 || entry->deleted_at > 0) {
		uidlist_text_append_time(text, entry->retrieved_at);
		uidlist_text_append_time(text, entry->deleted_at);
	}
	uidlist_text_append_mem(text, " ", 1);
	uidlist_text_append_mem(text, entry->basename, strlen(entry->basename));
	if (entry->info != NULL) {
		uidlist_text_append_mem(text, ":", 1);
		uidlist_text_append_mem(text, entry->info, strlen(entry->info));
	}
	uidlist_text_append_mem(text, "\n", 1);
}

static int uidlist_cmp_uid_ptr(const void *a, const void *b)
{
	const struct uidlist_entry *const *x = a, *const *y = b;

	return uidlist_cmp_uid(*x, *y);
}

char *uidlist_format(const struct uidlist *list, size_t *len_r)
{
	const struct uidlist_entry **sorted = xcalloc(list->count, sizeof(*sorted));
	struct uidlist_text text = {.alloc = 128 + list->count * 64};
	char trailer[96];

	text.data = xmalloc(text.alloc);
	for (size_t i = 0; i < list->count; i++)
		sorted[i] = &list->entries[i];
	if (!uidlist_uids_ascending(list))
		qsort(sorted, list->count, sizeof(*sorted), uidlist_cmp_uid_ptr);
	uidlist_text_append_header(&text, list);
	for (size_t i = 0; i < list->count; i++)
		uidlist_text_append_entry(&text, sorted[i]);
	int n = snprintf(trailer, sizeof(trailer), "%s %lu %llu %zu\n", UIDLIST_TRAILER_WORD,
			 (unsigned long)list->uidvalidity, (unsigned long long)list->next_uid,
			 list->count);
	uidlist_text_append_mem(&text, trailer, (size_t)n);
	uidlist_text_append_mem(&text, "", 1); /* the NUL the caller may rely on */
	text.len--;
	free(sorted);
	*len_r = text.len;
	return text.data;
}

/* The directory holding path, for the fsync that makes the rename durable. */
static char *uidlist_dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* Writes data to the temp file beside path and fsyncs it; returns its name in *tmp_r. The name is
 * fixed, not unique: saves of one index are serialized by the maildrop lock, and a temp file that a
 * crash left behind is then simply overwritten by the next save. Unique names piled up, one per
 * crash during a save, with nothing that could tell a stale one from a save in progress. */
static int uidlist_write_temp(const char *path, const char *data, size_t len, char **tmp_r,
			      char **error_r)
{
	char *tmp = xasprintf("%s%s", path, UIDLIST_TEMP_SUFFIX);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0) {
		*error_r = xasprintf("open(%s): %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	if (write_full(fd, data, len) < 0 || fsync(fd) < 0) {
		int err = errno;
		*error_r = xasprintf("write(%s): %s", tmp, strerror(err));
		close(fd);
		unlink(tmp);
		free(tmp);
		errno = err;
		return -1;
	}
	if (close(fd) < 0) {
		int err = errno;
		*error_r = xasprintf("close(%s): %s", tmp, strerror(err));
		unlink(tmp);
		free(tmp);
		errno = err;
		return -1;
	}
	*tmp_r = tmp;
	return 0;
}

int uidlist_save(const struct uidlist *list, const char *path, char **error_r)
{
	size_t len;
	char *data = uidlist_format(list, &len), *tmp = NULL;
	int ret = uidlist_write_temp(path, data, len, &tmp, error_r);

	free(data);
	if (ret < 0)
		return -1;
	if (rename(tmp, path) < 0) {
		int err = errno;
		*error_r = xasprintf("rename(%s, %s): %s", tmp, path, strerror(err));
		unlink(tmp);
		free(tmp);
		errno = err;
		return -1;
	}
	free(tmp);
	char *dir = uidlist_dir_of(path);
	if (fsync_dir(dir) < 0) {
		int err = errno;
		*error_r = xasprintf("fsync(%s): %s", dir, strerror(err));
		free(dir);
		errno = err;
		return -1;
	}
	free(dir);
	return 0;
}

/* ---- loading ---- */

/* Reads the whole file behind fd into newly allocated memory. */
static int uidlist_read_all(int fd, char **data_r, size_t *len_r)
{
	size_t alloc = 65536, len = 0;
	char *data = xmalloc(alloc);

	for (;;) {
		if (len == alloc) {
			if (alloc >= UIDLIST_FILE_MAX) {
				free(data);
				errno = EFBIG;
				return -1;
			}
			alloc *= 2;
			data = xrealloc(data, alloc);
		}
		ssize_t n = read(fd, data + len, alloc - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			free(data);
			errno = err;
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*data_r = data;
	*len_r = len;
	return 0;
}

int uidlist_load(const char *path, struct uidlist **list_r, bool *damaged_r, char **error_r)
{
	char *data;
	size_t len;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	*damaged_r = false;
	if (fd < 0 && errno == ENOENT) {
		*list_r = uidlist_new(uidlist_uidvalidity_now());
		return 0;
	}
	if (fd < 0 || uidlist_read_all(fd, &data, &len) < 0) {
		int err = errno;
		*error_r = xasprintf("read(%s): %s", path, strerror(err));
		if (fd >= 0)
			close(fd);
		errno = err;
		return -1;
	}
	close(fd);
	*list_r = uidlist_parse(data, len, damaged_r);
	free(data);
	if ((*list_r)->uidvalidity == 0) {
		/* Both header and trailer are gone: every UIDL changes, which makes clients
		 * download everything again, but that is safer than guessing and matching old
		 * UIDLs. */
		(*list_r)->uidvalidity = uidlist_uidvalidity_now();
		*damaged_r = true;
	}
	return 1;
}

/* ---- lookup and upkeep ---- */

struct uidlist_key {
	const char *name;
	size_t len;
};

static int uidlist_cmp_key(const void *k, const void *e)
{
	const struct uidlist_key *key = k;
	const struct uidlist_entry *entry = e;
	/* strncmp stops at entry's NUL if it is shorter; valid keys hold no NUL. */
	int ret = strncmp(key->name, entry->basename, key->len);

	if (ret != 0)
		return ret;
	return entry->basename[key->len] == '\0' ? 0 : -1;
}

struct uidlist_entry *uidlist_lookup(struct uidlist *list, const char *basename, size_t len)
{
	struct uidlist_key key = {basename, len};

	if (!uidlist_basename_valid(basename, len) || list->count == 0)
		return NULL;
	if (!list->sorted_by_name) {
		qsort(list->entries, list->count, sizeof(list->entries[0]), uidlist_cmp_name);
		list->sorted_by_name = true;
	}
	return bsearch(&key, list->entries, list->count, sizeof(list->entries[0]), uidlist_cmp_key);
}

int uidlist_add(struct uidlist *list, const char *basename, size_t len, uint64_t crlf_size,
		uint64_t file_size, uint32_t *uid_r)
{
	if (!uidlist_basename_valid(basename, len) || list->next_uid > UIDLIST_UID_MAX)
		return -1;
	*uid_r = (uint32_t)list->next_uid++;
	uidlist_append_entry(list, *uid_r, crlf_size, file_size, basename, len, NULL, 0);
	return 0;
}

bool uidlist_entry_set_info(struct uidlist_entry *entry, const char *info, size_t len)
{
	char *old = entry->basename;

	if (info != NULL && !uidlist_info_valid(info, len))
		info = NULL;
	if (info == NULL ? entry->info == NULL
			 : entry->info != NULL && strlen(entry->info) == len &&
			       memcmp(entry->info, info, len) == 0)
		return false;
	uidlist_entry_store_names(entry, old, strlen(old), info, len);
	free(old);
	return true;
}

void uidlist_mark_all(struct uidlist *list, bool present)
{
	for (size_t i = 0; i < list->count; i++)
		list->entries[i].present = present;
}

size_t uidlist_sweep(struct uidlist *list)
{
	size_t out = 0;

	for (size_t i = 0; i < list->count; i++) {
		if (!list->entries[i].present) {
			free(list->entries[i].basename);
			continue;
		}
		list->entries[out++] = list->entries[i];
	}
	size_t dropped = list->count - out;
	list->count = out;
	return dropped;
}
