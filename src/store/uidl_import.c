/* Importing the UIDLs of the replaced POP3 server (Dovecot, Courier) into a Maildir's first index.
 *
 * Files read (in the Maildir, written by the old server; every line is checked, none trusted):
 *
 *  dovecot-uidlist (Dovecot's src/lib-storage/index/maildir/maildir-uidlist.c):
 *    version 3:  "3 V<uidvalidity> N<next uid> [<key><value> ...]"
 *                "<uid> [<key><value> ...] :<file name>"   keys A-Z; P is the POP3 UIDL that
 *                overrides pop3_uidl_format (an empty P means the base file name), G the GUID
 *                (%g; the base file name when absent)
 *    versions 1 and 2:  "<1|2> <uidvalidity> <next uid>", then "<uid> <file name>" (version 2:
 *                "<uid> <flags> <file name>")
 *    UIDs ascend strictly; Dovecot rejects a UID not above the one before and UID 4294967295. A
 *    file name listed twice belongs to its later line (Dovecot drops the older record).
 *
 *  courierpop3dsizelist (Courier's imap/pop3dserver.c):
 *    "/<2|3> <next uid> [<uidvalidity>]", then "<file name> <size> <uid>:<uidvalidity>[:<utf8>]"
 *    with the two numbers after the last two spaces (the name may hold spaces). Courier shows
 *    "UID<uid>-<uidvalidity>" ("UID<uid>" when the UIDVALIDITY is 0), and for UID 0 the base
 *    file name with octets outside 0x21..0x7e and ' " + written as +XX.
 *
 * File written (by buzon, atomically, under the maildrop lock):
 *
 *  buzon-uidl-import:
 *    "buzon-uidl-import 1 <pending|done> <uidvalidity> <source file name>"
 *    "<uid> <uidl>"      one line per message whose old UIDL differs from buzon's own form,
 *                        ascending UID (an import from Dovecot's default format has none)
 *    "end <count>"
 *  It stays after the import: it is the record that the import was done, and the only copy of
 *  the UIDLs buzon cannot compute. A save writes buzon-uidl-import.tmp, fsyncs it and renames it.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/uidl_import.h"

#define UIDL_IMPORT_MAP_VERSION	    1
#define UIDL_IMPORT_MAP_WORD	    "buzon-uidl-import"
#define UIDL_IMPORT_MAP_TRAILER	    "end"
#define UIDL_IMPORT_MAP_TEMP_SUFFIX ".tmp"

/* A list of a million messages is some 60 MB; a far larger file is not one a server wrote, and
 * reading it whole would only exhaust memory. */
#define UIDL_IMPORT_FILE_MAX (256ULL * 1024 * 1024)

/* A damaged file could make a note of every line; `buzon import` lists this many, then says
 * that there are more. */
#define UIDL_IMPORT_NOTES_MAX 1000

/* Dovecot rejects UID 4294967295 in its list (maildir-uidlist.c: "UID too high"). */
#define UIDL_IMPORT_DOVECOT_UID_MAX 0xfffffffeU

static struct uidl_format uidl_import_format;
static bool uidl_import_format_set;

/* Makes room for one more element in an array of *count elements of size each, doubling its
 * capacity (*alloc) when full: the lists read here have an entry per message. */
static void *uidl_import_grow(void *array, size_t count, size_t *alloc, size_t size)
{
	if (count < *alloc)
		return array;
	*alloc = *alloc == 0 ? 64 : *alloc * 2;
	return xrealloc(array, *alloc * size);
}

/* ---- notes ---- */

static void uidl_import_note(char ***notes, size_t *count, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void uidl_import_note(char ***notes, size_t *count, const char *fmt, ...)
{
	char buf[512];
	va_list args;

	if (*count > UIDL_IMPORT_NOTES_MAX)
		return;
	if (*count == UIDL_IMPORT_NOTES_MAX) {
		snprintf(buf, sizeof(buf), "(more problems not listed)");
	} else {
		va_start(args, fmt);
		vsnprintf(buf, sizeof(buf), fmt, args);
		va_end(args);
	}
	*notes = xrealloc(*notes, (*count + 1) * sizeof(**notes));
	(*notes)[(*count)++] = xstrdup(buf);
}

static void uidl_import_notes_free(char ***notes, size_t *count)
{
	for (size_t i = 0; i < *count; i++)
		free((*notes)[i]);
	x_free(notes);
	*count = 0;
}

/* ---- the format ---- */

bool uidl_text_valid(const char *text, size_t len)
{
	if (len == 0 || len > STORE_UIDL_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c < 0x21 || c > 0x7e)
			return false;
	}
	return true;
}

/* Written by hand because a big mailbox formats a hundred thousand of them per open. */
void uidl_native_format(char out[STORE_UIDL_LEN + 1], uint32_t uid, uint32_t uidvalidity)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 8; i++) {
		out[7 - i] = hex[(uid >> (4 * i)) & 0xf];
		out[15 - i] = hex[(uidvalidity >> (4 * i)) & 0xf];
	}
	out[STORE_UIDL_LEN] = '\0';
}

/* Dovecot's modifiers (var-expand.c); buzon computes X, L and U and refuses the rest. */
static bool uidl_format_is_dovecot_modifier(char c)
{
	return c != '\0' && strchr("LUEXRHNMDT", c) != NULL;
}

static int uidl_format_fail(char **error_r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int uidl_format_fail(char **error_r, const char *fmt, ...)
{
	char buf[256];
	va_list args;

	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	*error_r = xasprintf("import_uidl_format: %s", buf);
	return -1;
}

static void uidl_format_add_literal(struct uidl_format *format, char c)
{
	struct uidl_format_part *last =
	    format->count > 0 ? &format->parts[format->count - 1] : NULL;

	if (last == NULL || last->variable != 0) {
		size_t text_len = 0; /* literal runs are stored one after the other */
		for (size_t i = 0; i < format->count; i++)
			text_len += format->parts[i].literal_len;
		last = &format->parts[format->count++];
		memset(last, 0, sizeof(*last));
		last->literal_start = text_len;
	}
	format->text[last->literal_start + last->literal_len++] = c;
}

/* Parses the variable after a '%' at text[*i]; moves *i past it. */
static int uidl_format_parse_variable(const char *text, size_t *i, struct uidl_format *format,
				      char **error_r)
{
	struct uidl_format_part *part = &format->parts[format->count];
	size_t p = *i;

	memset(part, 0, sizeof(*part));
	if (text[p] == '-')
		return uidl_format_fail(error_r, "negative widths (%%-N) are not supported");
	if (text[p] == '0') {
		part->zero_pad = true;
		p++;
	}
	for (; text[p] >= '0' && text[p] <= '9'; p++) {
		part->width = part->width * 10 + (unsigned int)(text[p] - '0');
		if (part->width > STORE_UIDL_MAX)
			return uidl_format_fail(
			    error_r, "a width above %d is more than a UIDL holds", STORE_UIDL_MAX);
	}
	if (text[p] == '.')
		return uidl_format_fail(error_r, "offsets (%%N.M) are not supported");
	for (; uidl_format_is_dovecot_modifier(text[p]); p++) {
		if (strchr("XLU", text[p]) == NULL)
			return uidl_format_fail(
			    error_r, "modifier %c is not supported (X, L and U are)", text[p]);
		if (part->modifier_count == UIDL_FORMAT_MODIFIERS_MAX)
			return uidl_format_fail(error_r, "more than %d modifiers on one variable",
						UIDL_FORMAT_MODIFIERS_MAX);
		part->modifiers[part->modifier_count++] = text[p];
	}
	switch (text[p]) {
	case 'u':
	case 'v':
	case 'f':
	case 'g':
		part->variable = text[p];
		break;
	case 'm':
		return uidl_format_fail(error_r,
					"%%m (header MD5) is not supported: Dovecot computes "
					"it for mbox only, not for Maildir");
	case '{':
		return uidl_format_fail(error_r,
					"%%{name} is not supported (Dovecot 2.3 refuses it "
					"in pop3_uidl_format too); use %%u, %%v, %%f or %%g");
	case '\0':
		return uidl_format_fail(error_r, "ends in the middle of a variable");
	default:
		return uidl_format_fail(error_r,
					"unknown variable %%%c (supported: %%u, %%v, %%f, %%g)",
					isprint((unsigned char)text[p]) ? text[p] : '?');
	}
	format->count++;
	*i = p + 1;
	return 0;
}

int uidl_format_parse(const char *text, struct uidl_format *format_r, char **error_r)
{
	size_t len = strlen(text);
	bool has_variable = false;

	memset(format_r, 0, sizeof(*format_r));
	if (len > UIDL_FORMAT_TEXT_MAX)
		return uidl_format_fail(error_r, "longer than %d characters", UIDL_FORMAT_TEXT_MAX);
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)text[i];
		if (c != '%') {
			if (c < 0x21 || c > 0x7e)
				return uidl_format_fail(error_r,
							"a space or control character cannot "
							"be part of a UIDL");
			uidl_format_add_literal(format_r, (char)c);
			i++;
			continue;
		}
		i++;
		if (text[i] == '%') {
			uidl_format_add_literal(format_r, '%');
			i++;
			continue;
		}
		if (uidl_format_parse_variable(text, &i, format_r, error_r) < 0)
			return -1;
		has_variable = true;
	}
	if (!has_variable)
		return uidl_format_fail(error_r, "no variable, so every message would have the "
						 "same UIDL (Dovecot refuses it too)");
	return 0;
}

/* Dovecot's X: the value as a decimal number, in lower-case hex; "0" if it is not a number. */
static void uidl_format_hex(char *value, size_t size)
{
	unsigned long long number;

	if (str_parse_uint(value, 0, UINT64_MAX, &number) < 0)
		number = 0;
	snprintf(value, size, "%llx", number);
}

/* Appends one variable to out (at *len). Returns false when the UIDL would grow too long. */
static bool uidl_format_put_variable(const struct uidl_format_part *part,
				     const struct uidl_format_values *values, char *out,
				     size_t *len)
{
	char value[UIDLIST_BASENAME_MAX + 32];
	size_t value_len, pad = 0;

	if (part->variable == 'u' || part->variable == 'v')
		snprintf(
		    value, sizeof(value), "%lu",
		    (unsigned long)(part->variable == 'u' ? values->uid : values->uidvalidity));
	else
		snprintf(value, sizeof(value), "%s",
			 part->variable == 'f' ? values->filename : values->guid);
	for (size_t m = 0; m < part->modifier_count; m++) {
		for (char *c = value; *c != '\0'; c++) {
			if (part->modifiers[m] == 'L')
				*c = (char)tolower((unsigned char)*c);
			else if (part->modifiers[m] == 'U')
				*c = (char)toupper((unsigned char)*c);
		}
		if (part->modifiers[m] == 'X')
			uidl_format_hex(value, sizeof(value));
	}
	value_len = strlen(value);
	if (part->width > 0 && !part->zero_pad && value_len > part->width)
		value_len = part->width; /* Dovecot cuts to the width unless it pads with zeros */
	if (part->zero_pad && value_len < part->width)
		pad = part->width - value_len;
	if (*len + pad + value_len > STORE_UIDL_MAX)
		return false;
	memset(out + *len, '0', pad);
	memcpy(out + *len + pad, value, value_len);
	*len += pad + value_len;
	return true;
}

bool uidl_format_expand(const struct uidl_format *format, const struct uidl_format_values *values,
			char out[STORE_UIDL_MAX + 1])
{
	size_t len = 0;

	for (size_t i = 0; i < format->count; i++) {
		const struct uidl_format_part *part = &format->parts[i];
		if (part->variable != 0) {
			if (!uidl_format_put_variable(part, values, out, &len))
				return false;
			continue;
		}
		if (len + part->literal_len > STORE_UIDL_MAX)
			return false;
		memcpy(out + len, format->text + part->literal_start, part->literal_len);
		len += part->literal_len;
	}
	out[len] = '\0';
	return uidl_text_valid(out, len);
}

int uidl_import_set_format(const char *text, char **error_r)
{
	struct uidl_format format;

	if (uidl_format_parse(text, &format, error_r) < 0)
		return -1;
	uidl_import_format = format;
	uidl_import_format_set = true;
	return 0;
}

static const struct uidl_format *uidl_import_current_format(void)
{
	char *error = NULL;

	if (!uidl_import_format_set && uidl_import_set_format(UIDL_FORMAT_DEFAULT, &error) < 0)
		fatal("the default import_uidl_format does not parse: %s", error);
	return &uidl_import_format;
}

/* ---- reading the old server's files ---- */

/* Calls line(context, text, end, number) for each LF-terminated line; a last line without LF is
 * reported as cut off. */
static void uidl_import_each_line(const char *data, size_t len, char ***notes, size_t *note_count,
				  bool (*line)(void *, const char *, const char *, size_t),
				  void *context)
{
	const char *p = data, *end = data + len;
	size_t number = 0;

	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		number++;
		if (lf == NULL) {
			uidl_import_note(notes, note_count,
					 "line %zu: cut off (no newline), skipped", number);
			return;
		}
		if (!line(context, p, lf, number))
			return;
		p = lf + 1;
	}
}

/* Parses a decimal number ending at a space, ':' or end; moves *p past it. */
static bool uidl_import_number(const char **p, const char *end, uint64_t max, uint64_t *value_r)
{
	const char *start = *p;
	unsigned long long value;

	while (*p < end && **p >= '0' && **p <= '9')
		(*p)++;
	if (str_parse_uint_n(start, (size_t)(*p - start), 0, max, &value) < 0)
		return false;
	*value_r = value;
	return true;
}

static bool uidl_import_skip_spaces(const char **p, const char *end)
{
	const char *start = *p;

	while (*p < end && **p == ' ')
		(*p)++;
	return *p > start;
}

/* Appends a record for the file name in [name, name_end) with uidl (NULL: none). Returns false
 * (and notes why) if the name cannot be in buzon's index. */
static bool uidl_import_add_record(struct uidl_import_source *source, uint64_t uid,
				   const char *name, const char *name_end, const char *uidl,
				   size_t line)
{
	const char *colon = memchr(name, ':', (size_t)(name_end - name));
	const char *base_end = colon != NULL ? colon : name_end;
	size_t base_len = (size_t)(base_end - name);

	if (memchr(name, '/', (size_t)(name_end - name)) != NULL ||
	    !uidlist_basename_valid(name, base_len)) {
		uidl_import_note(&source->notes, &source->note_count,
				 "line %zu: not a file name buzon can keep, skipped", line);
		return false;
	}
	source->records = uidl_import_grow(source->records, source->count, &source->records_alloc,
					   sizeof(*source->records));
	struct uidl_import_record *record = &source->records[source->count++];
	record->uid = uid;
	record->basename = xstrndup(name, base_len);
	record->uidl = uidl != NULL ? xstrdup(uidl) : NULL;
	record->line = line;
	if (uidl == NULL)
		uidl_import_note(&source->notes, &source->note_count,
				 "line %zu: its UIDL is not a valid POP3 UIDL; %s gets buzon's",
				 line, record->basename);
	return true;
}

void uidl_import_source_free(struct uidl_import_source **source)
{
	if (*source == NULL)
		return;
	for (size_t i = 0; i < (*source)->count; i++) {
		free((*source)->records[i].basename);
		free((*source)->records[i].uidl);
	}
	free((*source)->records);
	uidl_import_notes_free(&(*source)->notes, &(*source)->note_count);
	x_free(source);
}

/* ---- dovecot-uidlist ---- */

struct uidl_import_dovecot {
	struct uidl_import_source *source;
	const struct uidl_format *format;
	unsigned int version;
	uint64_t prev_uid;
};

/* A whole field [p, end) as a decimal number of at most max. */
static bool uidl_import_number_field(const char *p, const char *end, uint64_t max,
				     uint64_t *value_r)
{
	return uidl_import_number(&p, end, max, value_r) && p == end;
}

/* "3 V<uidvalidity> N<next uid> ..." or "<1|2> <uidvalidity> <next uid>". */
static bool uidl_import_dovecot_header(struct uidl_import_dovecot *parse, const char *p,
				       const char *end)
{
	uint64_t version, uidvalidity = 0, next_uid = 0;

	if (!uidl_import_number(&p, end, 3, &version) || version == 0)
		return false;
	parse->version = (unsigned int)version;
	if (version < 3 && !(uidl_import_skip_spaces(&p, end) &&
			     uidl_import_number(&p, end, UINT32_MAX, &uidvalidity) &&
			     uidl_import_skip_spaces(&p, end) &&
			     uidl_import_number(&p, end, (uint64_t)UIDLIST_UID_MAX + 1, &next_uid)))
		return false;
	while (version == 3 && uidl_import_skip_spaces(&p, end) && p < end) {
		char key = *p++;
		const char *value = p;
		while (p < end && *p != ' ')
			p++;
		if (key == 'V' && !uidl_import_number_field(value, p, UINT32_MAX, &uidvalidity))
			return false;
		if (key == 'N' &&
		    !uidl_import_number_field(value, p, (uint64_t)UIDLIST_UID_MAX + 1, &next_uid))
			return false;
	}
	if (p != end)
		return false;
	parse->source->uidvalidity = (uint32_t)uidvalidity;
	parse->source->next_uid = next_uid;
	return true;
}

/* The fields of one version 3 record before ':<file name>'. */
struct uidl_import_dovecot_fields {
	const char *pop3_uidl; /* P: NULL if absent */
	size_t pop3_uidl_len;
	const char *guid; /* G: NULL if absent */
	size_t guid_len;
};

/* Reads "[<key><value> ...] :" of a version 3 record; leaves *p after the ':'. */
static bool uidl_import_dovecot_fields(const char **p, const char *end,
				       struct uidl_import_dovecot_fields *fields)
{
	memset(fields, 0, sizeof(*fields));
	while (*p < end && **p != ':') {
		const char *start = *p;
		while (*p < end && **p != ' ')
			(*p)++;
		if (*start < 'A' || *start > 'Z')
			return false;
		if (*start == 'P') {
			fields->pop3_uidl = start + 1;
			fields->pop3_uidl_len = (size_t)(*p - start - 1);
		} else if (*start == 'G') {
			fields->guid = start + 1;
			fields->guid_len = (size_t)(*p - start - 1);
		}
		uidl_import_skip_spaces(p, end);
	}
	if (*p == end)
		return false;
	(*p)++;
	return true;
}

/* The UIDL Dovecot showed for a record: its P field, else the format. */
static bool uidl_import_dovecot_uidl(const struct uidl_import_dovecot *parse, uint32_t uid,
				     const char *name, const char *name_end,
				     const struct uidl_import_dovecot_fields *fields,
				     char out[STORE_UIDL_MAX + 1])
{
	const char *colon = memchr(name, ':', (size_t)(name_end - name));
	size_t base_len = (size_t)((colon != NULL ? colon : name_end) - name);
	char base[UIDLIST_BASENAME_MAX + 1], guid[UIDLIST_BASENAME_MAX + 1];

	if (base_len > UIDLIST_BASENAME_MAX)
		return false;
	memcpy(base, name, base_len);
	base[base_len] = '\0';
	if (fields->pop3_uidl != NULL) {
		/* an empty P means the base file name (Dovecot's maildir-mail.c) */
		const char *text = fields->pop3_uidl_len > 0 ? fields->pop3_uidl : base;
		size_t len = fields->pop3_uidl_len > 0 ? fields->pop3_uidl_len : base_len;
		if (!uidl_text_valid(text, len))
			return false;
		memcpy(out, text, len);
		out[len] = '\0';
		return true;
	}
	if (fields->guid != NULL && fields->guid_len > UIDLIST_BASENAME_MAX)
		return false;
	if (fields->guid != NULL) {
		memcpy(guid, fields->guid, fields->guid_len);
		guid[fields->guid_len] = '\0';
	}
	struct uidl_format_values values = {.uid = uid,
					    .uidvalidity = parse->source->uidvalidity,
					    .filename = base,
					    .guid = fields->guid != NULL ? guid : base};
	return uidl_format_expand(parse->format, &values, out);
}

static bool uidl_import_dovecot_line(void *context, const char *p, const char *end, size_t line)
{
	struct uidl_import_dovecot *parse = context;
	struct uidl_import_source *source = parse->source;
	struct uidl_import_dovecot_fields fields = {0};
	char uidl[STORE_UIDL_MAX + 1];
	uint64_t uid;

	if (line == 1) {
		if (uidl_import_dovecot_header(parse, p, end))
			return true;
		source->uidvalidity = 0;
		uidl_import_note(&source->notes, &source->note_count,
				 "line 1: not a dovecot-uidlist header of version 1, 2 or 3");
		return false;
	}
	if (!uidl_import_number(&p, end, UIDL_IMPORT_DOVECOT_UID_MAX, &uid) || uid == 0 ||
	    !uidl_import_skip_spaces(&p, end) ||
	    (parse->version == 3 && !uidl_import_dovecot_fields(&p, end, &fields))) {
		uidl_import_note(&source->notes, &source->note_count,
				 "line %zu: not a message record, skipped", line);
		return true;
	}
	if (parse->version == 2) { /* "<uid> <flags> <file name>" */
		while (p < end && *p != ' ')
			p++;
		uidl_import_skip_spaces(&p, end);
	}
	if (p == end || uid <= parse->prev_uid) {
		uidl_import_note(&source->notes, &source->note_count,
				 p == end ? "line %zu: no file name, skipped"
					  : "line %zu: UID not above the line before, skipped",
				 line);
		return true;
	}
	parse->prev_uid = uid;
	bool have_uidl = uidl_import_dovecot_uidl(parse, (uint32_t)uid, p, end, &fields, uidl);
	uidl_import_add_record(source, uid, p, end, have_uidl ? uidl : NULL, line);
	return true;
}

struct uidl_import_source *uidl_import_parse_dovecot(const char *data, size_t len,
						     const struct uidl_format *format)
{
	struct uidl_import_dovecot parse = {.source = xcalloc(1, sizeof(*parse.source)),
					    .format = format};

	parse.source->name = UIDL_IMPORT_DOVECOT_NAME;
	uidl_import_each_line(data, len, &parse.source->notes, &parse.source->note_count,
			      uidl_import_dovecot_line, &parse);
	if (len == 0)
		uidl_import_note(&parse.source->notes, &parse.source->note_count, "empty file");
	return parse.source;
}

/* ---- courierpop3dsizelist ---- */

/* "/<2|3> <next uid> [<uidvalidity>]" */
static bool uidl_import_courier_header(struct uidl_import_source *source, const char *p,
				       const char *end)
{
	uint64_t version, next_uid, uidvalidity = 0;

	if (p == end || *p++ != '/' || !uidl_import_number(&p, end, 3, &version) || version < 2 ||
	    !uidl_import_skip_spaces(&p, end) ||
	    !uidl_import_number(&p, end, UINT64_MAX - 1, &next_uid))
		return false;
	if (uidl_import_skip_spaces(&p, end) &&
	    !uidl_import_number(&p, end, UINT64_MAX - 1, &uidvalidity))
		return false;
	if (p != end)
		return false;
	source->next_uid = next_uid;
	/* Courier's UIDLs carry each message's own UIDVALIDITY; the mailbox's only matters for
	 * buzon's UIDLs of later messages, which never look like Courier's. */
	source->uidvalidity = uidvalidity >= 1 && uidvalidity <= UINT32_MAX
				  ? (uint32_t)uidvalidity
				  : uidlist_uidvalidity_now();
	return true;
}

/* Courier's UIDL of a message with UID 0: the base name, odd octets written as +XX. */
static bool uidl_import_courier_name_uidl(const char *name, const char *name_end,
					  char out[STORE_UIDL_MAX + 1])
{
	size_t len = 0;

	for (const char *p = name; p < name_end && *p != ':'; p++) {
		unsigned char c = (unsigned char)*p;
		bool escape = c < 0x21 || c > 0x7e || c == '\'' || c == '"' || c == '+';
		if (len + (escape ? 3 : 1) > STORE_UIDL_MAX)
			return false;
		if (escape)
			len += (size_t)snprintf(out + len, 4, "+%02X", c);
		else
			out[len++] = (char)c;
	}
	out[len] = '\0';
	return len > 0;
}

/* The UIDL Courier showed for a record with uid and uidvalidity. */
static bool uidl_import_courier_uidl(uint64_t uid, uint64_t uidvalidity, const char *name,
				     const char *name_end, char out[STORE_UIDL_MAX + 1])
{
	int n;

	if (uid == 0)
		return uidl_import_courier_name_uidl(name, name_end, out);
	n = uidvalidity != 0
		? snprintf(out, STORE_UIDL_MAX + 1, "UID%llu-%llu", (unsigned long long)uid,
			   (unsigned long long)uidvalidity)
		: snprintf(out, STORE_UIDL_MAX + 1, "UID%llu", (unsigned long long)uid);
	return n > 0 && (size_t)n <= STORE_UIDL_MAX;
}

/* "<uid>:<uidvalidity>[:<utf8>]" from p to end. */
static bool uidl_import_courier_ids(const char *p, const char *end, uint64_t *uid_r,
				    uint64_t *uidvalidity_r)
{
	uint64_t utf8;

	if (!uidl_import_number(&p, end, UINT64_MAX - 1, uid_r) || p == end || *p++ != ':' ||
	    !uidl_import_number(&p, end, UINT64_MAX - 1, uidvalidity_r))
		return false;
	if (p < end && (*p++ != ':' || !uidl_import_number(&p, end, 1, &utf8)))
		return false;
	return p == end;
}

static bool uidl_import_courier_line(void *context, const char *p, const char *end, size_t line)
{
	struct uidl_import_source *source = context;
	const char *ids_space = NULL, *size_space = NULL;
	uint64_t size, uid, uidvalidity;
	char uidl[STORE_UIDL_MAX + 1];

	if (line == 1) {
		if (uidl_import_courier_header(source, p, end))
			return true;
		uidl_import_note(&source->notes, &source->note_count,
				 "line 1: not a courierpop3dsizelist header of version 2 or 3");
		return false;
	}
	/* the name may hold spaces: the size and the IDs are the last two fields */
	for (const char *q = p; q < end; q++) {
		if (*q == ' ') {
			size_space = ids_space;
			ids_space = q;
		}
	}
	const char *size_at = size_space != NULL ? size_space + 1 : NULL;
	if (size_space == NULL || size_space == p ||
	    !uidl_import_number(&size_at, ids_space, UINT64_MAX - 1, &size) ||
	    size_at != ids_space ||
	    !uidl_import_courier_ids(ids_space + 1, end, &uid, &uidvalidity)) {
		uidl_import_note(&source->notes, &source->note_count,
				 "line %zu: not a message record, skipped", line);
		return true;
	}
	bool have_uidl = uidl_import_courier_uidl(uid, uidvalidity, p, size_space, uidl);
	uidl_import_add_record(source, uid, p, size_space, have_uidl ? uidl : NULL, line);
	return true;
}

struct uidl_import_source *uidl_import_parse_courier(const char *data, size_t len)
{
	struct uidl_import_source *source = xcalloc(1, sizeof(*source));

	source->name = UIDL_IMPORT_COURIER_NAME;
	uidl_import_each_line(data, len, &source->notes, &source->note_count,
			      uidl_import_courier_line, source);
	if (len == 0)
		uidl_import_note(&source->notes, &source->note_count, "empty file");
	return source;
}

/* ---- files ---- */

/* Reads a whole regular file (not through a symlink, which could point at another user's
 * mail). Returns 1, 0 if it does not exist, or -1 with errno set. */
static int uidl_import_read_file(const char *path, char **data_r, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;
	size_t done = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > UIDL_IMPORT_FILE_MAX) {
		int err = fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? EFBIG : EINVAL;
		close(fd);
		errno = err;
		return -1;
	}
	char *data = xmalloc((size_t)st.st_size + 1);
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, data + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			free(data);
			close(fd);
			errno = err;
			return -1;
		}
		if (n == 0)
			break; /* shrank while we read: what was read is what there is */
		done += (size_t)n;
	}
	close(fd);
	data[done] = '\0';
	*data_r = data;
	*len_r = done;
	return 1;
}

/* The modification time of maildir/name, or false if it is not there. */
static bool uidl_import_mtime(const char *maildir, const char *name, struct timespec *mtime_r)
{
	char *path = xasprintf("%s/%s", maildir, name);
	struct stat st;
	bool found = lstat(path, &st) == 0;

	free(path);
	if (found)
		*mtime_r = st.st_mtim;
	return found;
}

int uidl_import_source_read(const char *maildir, const struct uidl_format *format,
			    struct uidl_import_source **source_r, char **error_r)
{
	struct timespec dovecot_time, courier_time;
	bool dovecot = uidl_import_mtime(maildir, UIDL_IMPORT_DOVECOT_NAME, &dovecot_time);
	bool courier = uidl_import_mtime(maildir, UIDL_IMPORT_COURIER_NAME, &courier_time);
	char *data, *path;
	size_t len;

	if (!dovecot && !courier)
		return 0;
	/* both: the server that wrote last is the one clients saw last */
	if (dovecot && courier &&
	    (courier_time.tv_sec > dovecot_time.tv_sec ||
	     (courier_time.tv_sec == dovecot_time.tv_sec &&
	      courier_time.tv_nsec > dovecot_time.tv_nsec)))
		dovecot = false;
	path = xasprintf("%s/%s", maildir,
			 dovecot ? UIDL_IMPORT_DOVECOT_NAME : UIDL_IMPORT_COURIER_NAME);
	int ret = uidl_import_read_file(path, &data, &len);
	if (ret <= 0) {
		if (ret < 0)
			*error_r = xasprintf("read(%s): %s", path, strerror(errno));
		free(path);
		return ret;
	}
	free(path);
	*source_r = dovecot ? uidl_import_parse_dovecot(data, len, format)
			    : uidl_import_parse_courier(data, len);
	free(data);
	return 1;
}

/* ---- the map ---- */

void uidl_import_map_free(struct uidl_import_map **map)
{
	if (*map == NULL)
		return;
	free((*map)->entries);
	free((*map)->texts);
	free((*map)->source);
	x_free(map);
}

static int uidl_import_entry_cmp_uid(const void *a, const void *b)
{
	const struct uidl_import_map_entry *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

const char *uidl_import_map_lookup_next(const struct uidl_import_map *map, uint32_t uid,
					size_t *cursor)
{
	if (map == NULL)
		return NULL;
	while (*cursor < map->count && map->entries[*cursor].uid < uid)
		(*cursor)++;
	return *cursor < map->count && map->entries[*cursor].uid == uid ? map->entries[*cursor].uidl
									: NULL;
}

const char *uidl_import_map_lookup(const struct uidl_import_map *map, uint32_t uid)
{
	struct uidl_import_map_entry key = {.uid = uid};
	const struct uidl_import_map_entry *found;

	if (map == NULL || map->count == 0)
		return NULL;
	found = bsearch(&key, map->entries, map->count, sizeof(key), uidl_import_entry_cmp_uid);
	return found != NULL ? found->uidl : NULL;
}

/* If uidl has buzon's own form under uidvalidity, the UID it names, else 0. */
static uint32_t uidl_import_native_uid(const char *uidl, uint32_t uidvalidity)
{
	char native[STORE_UIDL_LEN + 1];
	unsigned long long uid;

	if (strlen(uidl) != STORE_UIDL_LEN)
		return 0;
	for (size_t i = 0; i < STORE_UIDL_LEN; i++) {
		if (!isxdigit((unsigned char)uidl[i]) || isupper((unsigned char)uidl[i]))
			return 0;
	}
	uidl_native_format(native, 0, uidvalidity);
	if (memcmp(uidl + 8, native + 8, 8) != 0)
		return 0;
	if (sscanf(uidl, "%8llx", &uid) != 1)
		return 0;
	return (uint32_t)uid;
}

static uint64_t uidl_import_text_hash(const char *text)
{
	uint64_t hash = 0xcbf29ce484222325ULL; /* FNV-1a: UIDLs are short */

	for (; *text != '\0'; text++)
		hash = (hash ^ (unsigned char)*text) * 0x100000001b3ULL;
	return hash;
}

/* Removes the UIDL (frees it, sets NULL) of every entry whose UIDL a lower UID shows too; the
 * entries ascend by UID, so the first one seen keeps it. A hash set rather than a sort: a map
 * from Courier has an entry per message, and it is checked at every open (100,000 entries take
 * a few milliseconds). */
static void uidl_import_map_drop_repeats(struct uidl_import_map *map,
					 void (*dropped)(void *, uint32_t, const char *,
							 const char *),
					 void *context)
{
	size_t slots = 16;

	while (slots < 2 * map->count)
		slots *= 2;
	size_t *table = xcalloc(slots, sizeof(*table)); /* entry index + 1; 0: free */
	for (size_t i = 0; i < map->count; i++) {
		struct uidl_import_map_entry *entry = &map->entries[i];
		const struct uidl_import_map_entry *kept = NULL;
		if (entry->uidl == NULL)
			continue;
		size_t at = (size_t)uidl_import_text_hash(entry->uidl) & (slots - 1);
		for (; table[at] != 0 && kept == NULL; at = (at + 1) & (slots - 1)) {
			if (strcmp(map->entries[table[at] - 1].uidl, entry->uidl) == 0)
				kept = &map->entries[table[at] - 1];
		}
		if (kept == NULL) {
			table[at] = i + 1;
			continue;
		}
		if (dropped != NULL) {
			char why[64];
			snprintf(why, sizeof(why), "the same UIDL as UID %lu",
				 (unsigned long)kept->uid);
			dropped(context, entry->uid, entry->uidl, why);
		}
		entry->uidl = NULL;
	}
	free(table);
}

size_t uidl_import_map_check(struct uidl_import_map *map, uint32_t uidvalidity,
			     void (*dropped)(void *context, uint32_t uid, const char *uidl,
					     const char *why),
			     void *context)
{
	size_t out = 0, removed;

	for (size_t i = 0; i < map->count; i++) {
		struct uidl_import_map_entry *entry = &map->entries[i];
		uint32_t other = uidl_import_native_uid(entry->uidl, uidvalidity);
		if (other == 0)
			continue;
		/* buzon's own UIDL of this very UID needs no entry; that of another UID belongs
		 * to that message (now, or when a later delivery gets that UID) */
		if (other != entry->uid && dropped != NULL)
			dropped(context, entry->uid, entry->uidl,
				"has the form of buzon's UIDL of another message");
		entry->uidl = NULL;
	}
	uidl_import_map_drop_repeats(map, dropped, context);
	for (size_t i = 0; i < map->count; i++) {
		if (map->entries[i].uidl != NULL)
			map->entries[out++] = map->entries[i];
	}
	removed = map->count - out;
	map->count = out;
	return removed;
}

/* "buzon-uidl-import 1 <pending|done> <uidvalidity> <source>" */
static bool uidl_import_map_header(struct uidl_import_map *map, const char *p, const char *end)
{
	size_t word_len = strlen(UIDL_IMPORT_MAP_WORD);
	uint64_t version, uidvalidity;

	if ((size_t)(end - p) <= word_len || memcmp(p, UIDL_IMPORT_MAP_WORD, word_len) != 0)
		return false;
	p += word_len;
	if (!uidl_import_skip_spaces(&p, end) ||
	    !uidl_import_number(&p, end, UIDL_IMPORT_MAP_VERSION, &version) || version < 1 ||
	    !uidl_import_skip_spaces(&p, end))
		return false;
	if ((size_t)(end - p) > 5 && memcmp(p, "done ", 5) == 0)
		map->done = true;
	else if ((size_t)(end - p) > 8 && memcmp(p, "pending ", 8) == 0)
		map->done = false;
	else
		return false;
	p += map->done ? 5 : 8;
	if (!uidl_import_number(&p, end, UINT32_MAX, &uidvalidity) || uidvalidity == 0 ||
	    !uidl_import_skip_spaces(&p, end) || p == end || !uidl_text_valid(p, (size_t)(end - p)))
		return false;
	map->uidvalidity = (uint32_t)uidvalidity;
	map->source = xstrndup(p, (size_t)(end - p));
	return true;
}

struct uidl_import_map_parser {
	struct uidl_import_map *map; /* its texts are the file's copy, which the lines point into */
	size_t entries_alloc;
	bool header_ok, trailer_ok, damaged;
	uint64_t trailer_count;
	const char *end_of_data;
};

static bool uidl_import_map_line(void *context, const char *p, const char *end, size_t line)
{
	struct uidl_import_map_parser *parser = context;
	struct uidl_import_map *map = parser->map;
	uint64_t uid;

	if (line == 1) {
		parser->header_ok = uidl_import_map_header(map, p, end);
		if (!parser->header_ok)
			parser->damaged = true;
		return true;
	}
	if (end + 1 == parser->end_of_data && (size_t)(end - p) > 4 && memcmp(p, "end ", 4) == 0) {
		const char *q = p + 4;
		parser->trailer_ok =
		    uidl_import_number(&q, end, UINT64_MAX - 1, &parser->trailer_count) && q == end;
		if (parser->trailer_ok)
			return true;
	}
	if (!uidl_import_number(&p, end, UIDLIST_UID_MAX, &uid) || uid == 0 || p == end ||
	    *p++ != ' ' || !uidl_text_valid(p, (size_t)(end - p))) {
		parser->damaged = true;
		return true;
	}
	map->entries = uidl_import_grow(map->entries, map->count, &parser->entries_alloc,
					sizeof(*map->entries));
	map->entries[map->count].uid = (uint32_t)uid;
	map->entries[map->count++].uidl = p;
	map->texts[end - map->texts] = '\0'; /* the line's LF: the UIDL ends there */
	return true;
}

struct uidl_import_map *uidl_import_map_parse(const char *data, size_t len, bool *damaged_r)
{
	struct uidl_import_map *map = xcalloc(1, sizeof(*map));
	struct uidl_import_map_parser parser = {.map = map};
	char **notes = NULL;
	size_t note_count = 0, out = 0;

	map->texts = xmalloc(len + 1);
	memcpy(map->texts, data, len);
	map->texts[len] = '\0';
	parser.end_of_data = map->texts + len;
	uidl_import_each_line(map->texts, len, &notes, &note_count, uidl_import_map_line, &parser);
	if (note_count > 0)
		parser.damaged = true;
	uidl_import_notes_free(&notes, &note_count);
	if (!parser.header_ok) {
		/* unknown state and UIDVALIDITY: never applied, never imported again */
		map->done = true;
		map->uidvalidity = 0;
	}
	if (!parser.trailer_ok || parser.trailer_count != map->count)
		parser.damaged = true;
	bool ascending = true; /* as written: then no sort */
	for (size_t i = 1; i < map->count && ascending; i++)
		ascending = map->entries[i - 1].uid < map->entries[i].uid;
	if (!ascending)
		qsort(map->entries, map->count, sizeof(map->entries[0]), uidl_import_entry_cmp_uid);
	for (size_t i = 0; i < map->count; i++) {
		if (out > 0 && map->entries[out - 1].uid == map->entries[i].uid) {
			parser.damaged = true; /* one UID twice: only damage does that */
			continue;
		}
		map->entries[out++] = map->entries[i];
	}
	map->count = out;
	*damaged_r = parser.damaged;
	return map;
}

char *uidl_import_map_format(const struct uidl_import_map *map, size_t *len_r)
{
	size_t alloc = 128 + strlen(map->source) + map->count * (12 + STORE_UIDL_MAX);
	char *text = xmalloc(alloc);
	size_t len = (size_t)snprintf(text, alloc, "%s %d %s %lu %s\n", UIDL_IMPORT_MAP_WORD,
				      UIDL_IMPORT_MAP_VERSION, map->done ? "done" : "pending",
				      (unsigned long)map->uidvalidity, map->source);

	for (size_t i = 0; i < map->count; i++)
		len += (size_t)snprintf(text + len, alloc - len, "%lu %s\n",
					(unsigned long)map->entries[i].uid, map->entries[i].uidl);
	len += (size_t)snprintf(text + len, alloc - len, "%s %zu\n", UIDL_IMPORT_MAP_TRAILER,
				map->count);
	*len_r = len;
	return text;
}

int uidl_import_map_load(const char *maildir, struct uidl_import_map **map_r, char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, UIDL_IMPORT_MAP_NAME);
	char *data;
	size_t len;
	bool damaged;
	int ret = uidl_import_read_file(path, &data, &len);

	if (ret < 0)
		*error_r = xasprintf("read(%s): %s", path, strerror(errno));
	if (ret > 0) {
		*map_r = uidl_import_map_parse(data, len, &damaged);
		free(data);
		if (damaged)
			log_warn("uidl_import_map_damaged", "path=%s entries=%zu uidvalidity=%lu",
				 log_quote(path), (*map_r)->count,
				 (unsigned long)(*map_r)->uidvalidity);
	}
	free(path);
	return ret;
}

/* Writes text to tmp and fsyncs it. */
static int uidl_import_write_temp(const char *tmp, const char *text, size_t len, char **error_r)
{
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0) {
		*error_r = xasprintf("open(%s): %s", tmp, strerror(errno));
		return -1;
	}
	if (write_full(fd, text, len) < 0 || fsync(fd) < 0) {
		int err = errno;
		*error_r = xasprintf("write(%s): %s", tmp, strerror(err));
		close(fd);
		unlink(tmp);
		errno = err;
		return -1;
	}
	if (close(fd) < 0) {
		int err = errno;
		*error_r = xasprintf("close(%s): %s", tmp, strerror(err));
		unlink(tmp);
		errno = err;
		return -1;
	}
	return 0;
}

int uidl_import_map_save(const char *maildir, const struct uidl_import_map *map, char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, UIDL_IMPORT_MAP_NAME);
	char *tmp = xasprintf("%s%s", path, UIDL_IMPORT_MAP_TEMP_SUFFIX);
	size_t len;
	char *text = uidl_import_map_format(map, &len);
	int ret = -1;

	if (uidl_import_write_temp(tmp, text, len, error_r) < 0)
		goto out;
	if (rename(tmp, path) < 0) {
		int err = errno;
		*error_r = xasprintf("rename(%s, %s): %s", tmp, path, strerror(err));
		unlink(tmp);
		errno = err;
		goto out;
	}
	if (fsync_dir(maildir) < 0) {
		*error_r = xasprintf("fsync(%s): %s", maildir, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(text);
	free(tmp);
	free(path);
	return ret;
}

/* ---- the plan ---- */

static int uidl_import_record_cmp_name(const void *a, const void *b)
{
	const struct uidl_import_record *const *x = a, *const *y = b;
	int ret = strcmp((*x)->basename, (*y)->basename);

	if (ret != 0)
		return ret;
	return (*x)->line < (*y)->line ? -1 : (*x)->line > (*y)->line;
}

static int uidl_import_record_cmp_uid(const void *a, const void *b)
{
	const struct uidl_import_record *const *x = a, *const *y = b;

	if ((*x)->uid != (*y)->uid)
		return (*x)->uid < (*y)->uid ? -1 : 1;
	return (*x)->line < (*y)->line ? -1 : (*x)->line > (*y)->line;
}

/* The records to import: of several for one base name, the last line (Dovecot drops the older
 * record of a name listed twice). Returns them sorted by name; *count_r gets how many. */
static const struct uidl_import_record **
uidl_import_latest_per_name(const struct uidl_import_source *source, struct uidl_import_plan *plan,
			    size_t *count_r)
{
	const struct uidl_import_record **all = xcalloc(source->count + 1, sizeof(*all));
	size_t out = 0;

	for (size_t i = 0; i < source->count; i++)
		all[i] = &source->records[i];
	if (source->count > 1)
		qsort(all, source->count, sizeof(*all), uidl_import_record_cmp_name);
	for (size_t i = 0; i < source->count; i++) {
		if (i + 1 < source->count && strcmp(all[i]->basename, all[i + 1]->basename) == 0) {
			uidl_import_note(&plan->notes, &plan->note_count,
					 "line %zu: %s is listed again on line %zu, which counts",
					 all[i]->line, all[i]->basename, all[i + 1]->line);
			continue;
		}
		all[out++] = all[i];
	}
	*count_r = out;
	return all;
}

static void uidl_import_plan_add_item(struct uidl_import_plan *plan,
				      const struct uidl_import_record *record, uint32_t uid)
{
	struct uidl_import_item *item = &plan->items[plan->count++];

	item->record = record;
	item->uid = uid;
}

static int uidl_import_item_cmp_uid(const void *a, const void *b)
{
	const struct uidl_import_item *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* uidl_import_map_check()'s report of an old UIDL that cannot be kept. */
static void uidl_import_plan_dropped(void *context, uint32_t uid, const char *uidl, const char *why)
{
	struct uidl_import_plan *plan = context;
	struct uidl_import_item key = {.uid = uid};
	const struct uidl_import_item *item =
	    bsearch(&key, plan->items, plan->count, sizeof(key), uidl_import_item_cmp_uid);

	uidl_import_note(&plan->notes, &plan->note_count,
			 "line %zu: UIDL %s %s; %s shows buzon's UIDL instead",
			 item != NULL ? item->record->line : 0, uidl, why,
			 item != NULL ? item->record->basename : "the message");
}

/* Copies the UIDLs the entries point to into one block the map owns. */
static void uidl_import_map_own_texts(struct uidl_import_map *map)
{
	size_t total = 1, at = 0;

	for (size_t i = 0; i < map->count; i++)
		total += strlen(map->entries[i].uidl) + 1;
	map->texts = xmalloc(total);
	for (size_t i = 0; i < map->count; i++) {
		size_t len = strlen(map->entries[i].uidl) + 1;
		memcpy(map->texts + at, map->entries[i].uidl, len);
		map->entries[i].uidl = map->texts + at;
		at += len;
	}
}

/* The map of every item whose old UIDL differs from buzon's own form, checked for conflicts. */
static void uidl_import_plan_map(struct uidl_import_plan *plan,
				 const struct uidl_import_source *source)
{
	struct uidl_import_map *map = xcalloc(1, sizeof(*map));
	char native[STORE_UIDL_LEN + 1];

	map->uidvalidity = plan->list->uidvalidity;
	map->source = xstrdup(source->name);
	map->entries = xcalloc(plan->count + 1, sizeof(*map->entries));
	for (size_t i = 0; i < plan->count; i++) {
		const struct uidl_import_item *item = &plan->items[i];
		uidl_native_format(native, item->uid, map->uidvalidity);
		if (item->record->uidl == NULL || strcmp(item->record->uidl, native) == 0)
			continue;
		map->entries[map->count].uid = item->uid;
		map->entries[map->count++].uidl = item->record->uidl;
	}
	uidl_import_map_check(map, map->uidvalidity, uidl_import_plan_dropped, plan);
	uidl_import_map_own_texts(map);
	for (size_t i = 0; i < plan->count; i++) {
		struct uidl_import_item *item = &plan->items[i];
		uidl_native_format(native, item->uid, map->uidvalidity);
		item->shown = uidl_import_map_lookup(map, item->uid);
		item->uidl_dropped =
		    item->record->uidl == NULL ||
		    strcmp(item->record->uidl, item->shown != NULL ? item->shown : native) != 0;
	}
	plan->map = map;
}

/* Marks in fresh (indexed like source->records) the records whose UID cannot be kept: none, out
 * of range, or another record's. records is sorted by UID. Returns how many, and the highest UID
 * kept in *last_r. */
static size_t uidl_import_mark_fresh(const struct uidl_import_source *source,
				     const struct uidl_import_record **records, size_t count,
				     bool *fresh, struct uidl_import_plan *plan, uint64_t *last_r)
{
	uint64_t last = 0;
	size_t fresh_count = 0;

	for (size_t i = 0; i < count; i++) {
		uint64_t uid = records[i]->uid;
		if (uid != 0 && uid <= UIDLIST_UID_MAX && uid != last) {
			last = uid;
			continue;
		}
		fresh[records[i] - source->records] = true;
		fresh_count++;
		if (uid != 0)
			uidl_import_note(&plan->notes, &plan->note_count,
					 "line %zu: UID %llu %s; %s gets a new UID",
					 records[i]->line, (unsigned long long)uid,
					 uid == last ? "is another line's" : "is out of range",
					 records[i]->basename);
	}
	*last_r = last;
	return fresh_count;
}

/* Fills plan->list: the records with usable UIDs keep them, in ascending order (uidlist_add()
 * hands out next_uid, so setting it first skips the UIDs in between, as if they had been
 * deleted: next_uid stays above every UID held), then the others get new UIDs from next_uid on,
 * in name order (as new messages do at an open). */
static void uidl_import_plan_uids(struct uidl_import_plan *plan,
				  const struct uidl_import_source *source,
				  const struct uidl_import_record **by_uid,
				  const struct uidl_import_record **by_name, size_t count,
				  const bool *fresh, uint64_t next_uid)
{
	uint32_t uid;

	for (size_t i = 0; i < count; i++) {
		if (fresh[by_uid[i] - source->records])
			continue;
		plan->list->next_uid = by_uid[i]->uid;
		if (uidlist_add(plan->list, by_uid[i]->basename, strlen(by_uid[i]->basename),
				UIDLIST_SIZE_UNKNOWN, UIDLIST_SIZE_UNKNOWN, &uid) < 0)
			fatal("uidl import: UID %lu refused", (unsigned long)by_uid[i]->uid);
		uidl_import_plan_add_item(plan, by_uid[i], uid);
	}
	plan->list->next_uid = next_uid;
	for (size_t i = 0; i < count; i++) {
		if (!fresh[by_name[i] - source->records])
			continue;
		if (uidlist_add(plan->list, by_name[i]->basename, strlen(by_name[i]->basename),
				UIDLIST_SIZE_UNKNOWN, UIDLIST_SIZE_UNKNOWN, &uid) < 0)
			fatal("uidl import: no UID left after the check");
		uidl_import_plan_add_item(plan, by_name[i], uid);
	}
}

int uidl_import_plan_build(const struct uidl_import_source *source,
			   struct uidl_import_plan **plan_r, char **error_r)
{
	struct uidl_import_plan *plan;
	const struct uidl_import_record **by_name, **by_uid;
	size_t count, fresh_count;
	uint64_t last, next_uid;
	bool *fresh;

	if (source->uidvalidity == 0) {
		*error_r = xasprintf("%s gives no UIDVALIDITY", source->name);
		return -1;
	}
	plan = xcalloc(1, sizeof(*plan));
	for (size_t i = 0; i < source->note_count; i++)
		uidl_import_note(&plan->notes, &plan->note_count, "%s", source->notes[i]);
	by_name = uidl_import_latest_per_name(source, plan, &count);
	by_uid = xcalloc(count + 1, sizeof(*by_uid));
	memcpy(by_uid, by_name, count * sizeof(*by_uid));
	if (count > 1)
		qsort(by_uid, count, sizeof(*by_uid), uidl_import_record_cmp_uid);
	fresh = xcalloc(source->count + 1, sizeof(*fresh));
	fresh_count = uidl_import_mark_fresh(source, by_uid, count, fresh, plan, &last);
	/* above every UID kept and every UID the old server handed out (its next UID), so that
	 * no UID a client may have seen is given to another message; and at least one UID must be
	 * left for new mail, or the mailbox could take none (a file claiming the last UIDs is
	 * damaged or hostile: starting over is what the old server would have done) */
	next_uid = source->next_uid > last + 1 ? source->next_uid : last + 1;
	if (next_uid + fresh_count > UIDLIST_UID_MAX) {
		*error_r = xasprintf("%s uses UIDs up to the end of the UID space", source->name);
		uidl_import_plan_free(&plan);
	} else {
		plan->list = uidlist_new(source->uidvalidity);
		plan->items = xcalloc(count + 1, sizeof(*plan->items));
		uidl_import_plan_uids(plan, source, by_uid, by_name, count, fresh, next_uid);
		uidl_import_plan_map(plan, source);
	}
	free(fresh);
	free(by_uid);
	free(by_name);
	*plan_r = plan;
	return plan != NULL ? 0 : -1;
}

void uidl_import_plan_free(struct uidl_import_plan **plan)
{
	if (*plan == NULL)
		return;
	uidlist_free(&(*plan)->list);
	uidl_import_map_free(&(*plan)->map);
	free((*plan)->items);
	uidl_import_notes_free(&(*plan)->notes, &(*plan)->note_count);
	x_free(plan);
}

/* ---- at open ---- */

/* The map of an index that exists: marks a pending one done (the index was saved after it, so
 * its import finished) and applies it if it belongs to this index. */
static void uidl_import_map_apply(const char *maildir, struct uidl_import_map *map,
				  const struct uidlist *list, struct uidl_import_map **map_r)
{
	char *error;

	if (!map->done) {
		map->done = true;
		if (uidl_import_map_save(maildir, map, &error) < 0) {
			log_warn("uidl_import_save_failed", "error=%s", log_quote(error));
			free(error);
		}
	}
	if (map->uidvalidity != list->uidvalidity) {
		/* the index lost its UIDVALIDITY since: every UIDL changed, the old ones too */
		log_warn("uidl_import_map_stale", "maildir=%s map_uidvalidity=%lu uidvalidity=%lu",
			 log_quote(maildir), (unsigned long)map->uidvalidity,
			 (unsigned long)list->uidvalidity);
		uidl_import_map_free(&map);
		return;
	}
	size_t dropped = uidl_import_map_check(map, list->uidvalidity, NULL, NULL);
	if (dropped > 0)
		log_warn("uidl_import_map_conflicts", "maildir=%s dropped=%zu", log_quote(maildir),
			 dropped);
	*map_r = map;
}

/* Imports the old server's file, if there is one, into a new *list and a pending map. */
static int uidl_import_run(const char *maildir, struct uidlist **list,
			   struct uidl_import_map **map_r, bool *imported_r, char **error_r)
{
	struct uidl_import_source *source = NULL;
	struct uidl_import_plan *plan = NULL;
	char *error = NULL;
	size_t kept = 0;
	int ret = uidl_import_source_read(maildir, uidl_import_current_format(), &source, error_r);

	if (ret <= 0)
		return ret;
	if (uidl_import_plan_build(source, &plan, &error) < 0) {
		/* what the old server itself would have done: start over with new UIDs */
		log_warn("uidl_import_refused", "maildir=%s source=%s reason=%s",
			 log_quote(maildir), source->name, log_quote(error));
		free(error);
		uidl_import_source_free(&source);
		return 0;
	}
	if (uidl_import_map_save(maildir, plan->map, error_r) < 0) {
		uidl_import_plan_free(&plan);
		uidl_import_source_free(&source);
		return -1;
	}
	for (size_t i = 0; i < plan->count; i++)
		kept += plan->items[i].uidl_dropped ? 0 : 1;
	log_info("uidl_imported",
		 "maildir=%s source=%s uidvalidity=%lu next_uid=%llu listed=%zu uidl_kept=%zu "
		 "problems=%zu",
		 log_quote(maildir), source->name, (unsigned long)plan->list->uidvalidity,
		 (unsigned long long)plan->list->next_uid, plan->count, kept, plan->note_count);
	uidlist_free(list);
	*list = plan->list;
	plan->list = NULL;
	*map_r = plan->map;
	plan->map = NULL;
	*imported_r = true;
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
	return 0;
}

int uidl_import_open(const char *maildir, struct uidlist **list, bool index_missing,
		     struct uidl_import_map **map_r, bool *imported_r, char **error_r)
{
	struct uidl_import_map *map = NULL;

	*map_r = NULL;
	*imported_r = false;
	if (uidl_import_map_load(maildir, &map, error_r) < 0)
		return -1;
	if (!index_missing) {
		if (map != NULL)
			uidl_import_map_apply(maildir, map, *list, map_r);
		return 0;
	}
	if (map != NULL && map->done) {
		/* The index was lost after an import. Importing again would restart the UIDs
		 * where the old server left them and could give a UID that buzon handed out since
		 * to another message; a new UIDVALIDITY (every UIDL changes) is the safe way. */
		log_warn("uidl_import_not_repeated", "maildir=%s reason=%s", log_quote(maildir),
			 log_quote("the index is missing but the import was done before"));
		if ((*list)->uidvalidity == map->uidvalidity)
			(*list)->uidvalidity =
			    map->uidvalidity == UINT32_MAX ? 1 : map->uidvalidity + 1;
		uidl_import_map_free(&map);
		return 0;
	}
	uidl_import_map_free(&map); /* pending: a crash interrupted that import; start over */
	return uidl_import_run(maildir, list, map_r, imported_r, error_r);
}

void uidl_import_finish(const char *maildir, struct uidl_import_map *map)
{
	char *error;

	map->done = true;
	if (uidl_import_map_save(maildir, map, &error) < 0) {
		log_warn("uidl_import_save_failed", "error=%s", log_quote(error));
		free(error);
	}
}
