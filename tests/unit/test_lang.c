/* Unit tests for RFC 6856 LANG (src/pop3/lang.c): language-range matching, and the catalog kept
 * honest: every translation has the printf conversions of its English format in the same order
 * and keeps the response code first, and every reply format with words in the .c files of
 * src/pop3 has a translation (the sources are scanned: a new reply text cannot be forgotten). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/util.h"
#include "pop3/lang.h"

/* ---- matching ---- */

static void expect_match(const char *range, enum pop3_lang want)
{
	enum pop3_lang lang = POP3_LANG_COUNT;

	assert_int_equal(pop3_lang_match(range, &lang), POP3_LANG_MATCHED);
	assert_int_equal(lang, want);
}

static void expect_no_match(const char *range, enum pop3_lang_match_result want)
{
	enum pop3_lang lang = POP3_LANG_COUNT;

	assert_int_equal(pop3_lang_match(range, &lang), want);
	assert_int_equal(lang, POP3_LANG_COUNT); /* untouched */
}

static void test_match_basic_filtering(void **state)
{
	expect_match("en", POP3_LANG_EN);
	expect_match("es", POP3_LANG_ES);
	expect_match("ES", POP3_LANG_ES); /* RFC 4647: case-insensitive */
	expect_match("eN", POP3_LANG_EN);
	/* a range more specific than every tag matches none (basic filtering is not lookup) */
	expect_no_match("es-MX", POP3_LANG_UNAVAILABLE);
	expect_no_match("en-boont", POP3_LANG_UNAVAILABLE);
	/* RFC 6856 §3.3's examples */
	expect_no_match("MUL", POP3_LANG_UNAVAILABLE);
	expect_no_match("uga", POP3_LANG_UNAVAILABLE);
	/* a prefix that is not a whole subtag is no match */
	expect_no_match("e", POP3_LANG_UNAVAILABLE);
}

static void test_match_star_is_the_preferred_language(void **state)
{
	expect_match("*", POP3_LANG_PREFERRED);
}

static void test_match_rejects_malformed_ranges(void **state)
{
	static const char *const bad[] = {
	    "",	   "-",	 "es-",	 "-es", "es--MX", "es_ES",  "e s",   "abcdefghi", "en-123456789",
	    "1en", "**", "*-es", "es*", "én",	  "es-MX-", "en.GB", "e\x01",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		expect_no_match(bad[i], POP3_LANG_MALFORMED);
	/* digits are allowed after the first subtag, eight characters per subtag at most */
	expect_no_match("es-419", POP3_LANG_UNAVAILABLE);
	expect_no_match("abcdefgh-12345678", POP3_LANG_UNAVAILABLE);
}

static void test_languages_listed(void **state)
{
	assert_string_equal(pop3_lang_get(POP3_LANG_EN)->tag, "en");
	assert_string_equal(pop3_lang_get(POP3_LANG_EN)->name, "English");
	assert_string_equal(pop3_lang_get(POP3_LANG_ES)->tag, "es");
	assert_string_equal(pop3_lang_get(POP3_LANG_ES)->name, "Espa\xc3\xb1ol");
}

/* ---- the catalog ---- */

static void test_format_lookup(void **state)
{
	const char *fmt = "Unknown command";

	assert_ptr_equal(pop3_lang_format(POP3_LANG_EN, fmt), fmt);
	assert_string_equal(pop3_lang_format(POP3_LANG_ES, fmt), "Comando desconocido");
	assert_string_equal(pop3_lang_format(POP3_LANG_ES, "%s Language changed"),
			    "%s Idioma cambiado");
	/* data only, or unknown: unchanged */
	const char *data = "%zu %llu";
	assert_ptr_equal(pop3_lang_format(POP3_LANG_ES, data), data);
	const char *unknown = "Not in the catalog";
	assert_ptr_equal(pop3_lang_format(POP3_LANG_ES, unknown), unknown);
	assert_ptr_equal(pop3_lang_format(POP3_LANG_COUNT, fmt), fmt);
}

static void test_format_has_words(void **state)
{
	assert_false(pop3_lang_format_has_words(""));
	assert_false(pop3_lang_format_has_words("%s"));
	assert_false(pop3_lang_format_has_words("%zu %llu"));
	assert_false(pop3_lang_format_has_words("%zu %s"));
	assert_false(pop3_lang_format_has_words("[SYS/TEMP]"));
	assert_false(pop3_lang_format_has_words("%-8.3lld %%"));
	assert_true(pop3_lang_format_has_words("%s is not valid in this state"));
	assert_true(pop3_lang_format_has_words("[IN-USE] Mailbox is locked by another session"));
	assert_true(pop3_lang_format_has_words("%llu octets"));
}

/* The printf conversions of fmt, "%%" left out, each ended by a '|': "%zu|%llu|". */
static void conversions(const char *fmt, char *out, size_t out_size)
{
	size_t n = 0;

	for (const char *p = fmt; *p != '\0'; p++) {
		if (*p != '%')
			continue;
		if (p[1] == '%') {
			p++;
			continue;
		}
		size_t len = 1;
		while (p[len] != '\0' && strchr("-+ #0123456789.*hljztL", p[len]) != NULL)
			len++;
		assert_true(p[len] != '\0'); /* a conversion cut short */
		len++;
		assert_true(n + len + 2 <= out_size);
		memcpy(out + n, p, len);
		n += len;
		out[n++] = '|';
		p += len - 1;
	}
	out[n] = '\0';
}

/* A well-formed UTF-8 string without control characters. */
static bool is_printable_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		size_t extra;
		unsigned int cp;
		if (*p < 0x20 || *p == 0x7f)
			return false;
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((*p & 0xe0) == 0xc0) {
			extra = 1;
			cp = *p & 0x1f;
		} else if ((*p & 0xf0) == 0xe0) {
			extra = 2;
			cp = *p & 0x0f;
		} else if ((*p & 0xf8) == 0xf0) {
			extra = 3;
			cp = *p & 0x07;
		} else {
			return false;
		}
		for (size_t i = 1; i <= extra; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		/* overlong forms, surrogates, beyond Unicode, C1 controls */
		static const unsigned int min_of[] = {0, 0x80, 0x800, 0x10000};
		if (cp < min_of[extra] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff ||
		    (cp >= 0x80 && cp < 0xa0))
			return false;
		p += extra + 1;
	}
	return true;
}

static void check_entry(const char *english, const char *translated)
{
	char want[256], got[256];

	/* the same conversions in the same order: vsnprintf reads the English call's arguments */
	conversions(english, want, sizeof(want));
	conversions(translated, got, sizeof(got));
	if (strcmp(want, got) != 0)
		fail_msg("conversions differ: \"%s\" has %s, \"%s\" has %s", english, want,
			 translated, got);
	assert_null(strstr(translated, "%n"));
	/* the response code stays first, whether written out or passed as a leading "%s" (which
	 * otherwise carries a command name, also first in both) */
	if (english[0] == '[') {
		size_t code_len = (size_t)(strchr(english, ']') - english) + 1;
		if (strncmp(english, translated, code_len) != 0 || translated[code_len] != ' ')
			fail_msg("\"%s\" does not start with the code of \"%s\"", translated,
				 english);
	}
	if (strncmp(english, "%s ", 3) == 0 && strncmp(translated, "%s ", 3) != 0)
		fail_msg("\"%s\" does not start with the \"%%s\" of \"%s\"", translated, english);
	if (!is_printable_utf8(translated))
		fail_msg("\"%s\" is not printable UTF-8", translated);
	assert_true(pop3_lang_format_has_words(english));
	assert_string_not_equal(english, translated);
	/* session.c formats replies into 512 octets */
	assert_true(strlen(translated) < 300);
}

static void test_catalog_translations_match_their_formats(void **state)
{
	const char *english, *translated;
	size_t count = 0;

	for (size_t i = 0; pop3_lang_catalog_entry(i, POP3_LANG_EN, &english, &translated); i++) {
		count++;
		assert_ptr_equal(english, translated);
		for (enum pop3_lang lang = POP3_LANG_EN + 1; lang < POP3_LANG_COUNT; lang++) {
			assert_true(pop3_lang_catalog_entry(i, lang, &english, &translated));
			check_entry(english, translated);
			assert_ptr_equal(pop3_lang_format(lang, english), translated);
		}
		/* each English format once: a second entry would never be found */
		const char *other, *unused;
		for (size_t j = 0; j < i; j++) {
			assert_true(pop3_lang_catalog_entry(j, POP3_LANG_EN, &other, &unused));
			if (strcmp(other, english) == 0)
				fail_msg("\"%s\" is in the catalog twice", english);
		}
	}
	assert_true(count >= 40);
}

/* ---- the sources: every reply format has a translation ---- */

/* The reply formats found in the sources. */
struct scan {
	char *formats[512];
	size_t count;
	unsigned int problems;
	bool quiet; /* count problems without printing them (the scanner's own test) */
};

/* One open call or parenthesis while scanning. */
struct frame {
	char name[64];	     /* the function called, "" for a parenthesis that is no call */
	bool reply;	     /* pop3_reply_ok or pop3_reply_err */
	unsigned int arg;    /* index of the argument being read */
	char format[512];    /* reply: the literals of argument 1, concatenated */
	bool format_literal; /* reply: argument 1 has been string literals only */
	int line;
};

struct scanner {
	const char *path;
	const char *p;
	int line;
	struct frame stack[64];
	size_t depth;
	char last_ident[64];   /* the previous token, if an identifier; else "" */
	char before_ident[64]; /* the token before that, if an identifier */
	struct scan *scan;
};

static void scan_problem(struct scanner *s, int line, const char *what, const char *text)
{
	if (!s->scan->quiet)
		fprintf(stderr, "%s:%d: %s: \"%s\"\n", s->path, line, what, text);
	s->scan->problems++;
}

/* Reads the literal at s->p (after its opening quote) into out, decoding \n, \r, \t and the
 * escaped quote and backslash (the sources use no others in replies). */
static void scan_string(struct scanner *s, char *out, size_t out_size)
{
	size_t n = 0;

	while (*s->p != '\0' && *s->p != '"') {
		char c = *s->p++;
		if (c == '\\' && *s->p != '\0') {
			char e = *s->p++;
			c = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e;
		}
		if (n + 1 < out_size)
			out[n++] = c;
	}
	if (*s->p == '"')
		s->p++;
	out[n] = '\0';
}

static bool scan_in_call(const struct scanner *s, const char *name)
{
	for (size_t i = 0; i < s->depth; i++) {
		if (strcmp(s->stack[i].name, name) == 0)
			return true;
	}
	return false;
}

static void scan_literal(struct scanner *s, const char *text)
{
	struct frame *top = s->depth > 0 ? &s->stack[s->depth - 1] : NULL;

	if (top != NULL && top->reply && top->arg == 1) {
		size_t used = strlen(top->format);
		snprintf(top->format + used, sizeof(top->format) - used, "%s", text);
		return;
	}
	/* a status line written past the reply functions would escape the catalog; only the
	 * refusals before a session exists (pop3_refuse) have no language to speak */
	bool status = strncmp(text, "+OK ", 4) == 0 || strncmp(text, "-ERR ", 5) == 0;
	if (status && pop3_lang_format_has_words(strchr(text, ' ') + 1) &&
	    !scan_in_call(s, "pop3_refuse"))
		scan_problem(s, s->line, "status line written without pop3_reply_ok/err", text);
}

static void scan_open(struct scanner *s)
{
	struct frame *top = s->depth > 0 ? &s->stack[s->depth - 1] : NULL;

	if (top != NULL && top->reply && top->arg == 1)
		top->format_literal = false;
	assert_true(s->depth < ARRAY_SIZE(s->stack));
	struct frame *f = &s->stack[s->depth++];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", s->last_ident);
	/* "void pop3_reply_ok(struct ...)" is the definition, not a call */
	f->reply =
	    (strcmp(f->name, "pop3_reply_ok") == 0 || strcmp(f->name, "pop3_reply_err") == 0) &&
	    strcmp(s->before_ident, "void") != 0;
	f->format_literal = true;
	f->line = s->line;
}

static void scan_close(struct scanner *s)
{
	if (s->depth == 0)
		return;
	struct frame *f = &s->stack[--s->depth];
	if (!f->reply)
		return;
	if (!f->format_literal || f->arg < 1) {
		scan_problem(s, f->line, "reply format is not one string literal", f->name);
		return;
	}
	assert_true(s->scan->count < ARRAY_SIZE(s->scan->formats));
	s->scan->formats[s->scan->count++] = strdup(f->format);
}

static void scan_token_other(struct scanner *s)
{
	struct frame *top = s->depth > 0 ? &s->stack[s->depth - 1] : NULL;

	if (top != NULL && top->reply && top->arg == 1)
		top->format_literal = false;
}

/* Skips a comment or a character literal at s->p; returns false if there is none. */
static bool scan_skip(struct scanner *s)
{
	if (s->p[0] == '/' && s->p[1] == '/') {
		while (*s->p != '\0' && *s->p != '\n')
			s->p++;
		return true;
	}
	if (s->p[0] == '/' && s->p[1] == '*') {
		const char *end = strstr(s->p + 2, "*/");
		for (const char *q = s->p; q < (end != NULL ? end : s->p + strlen(s->p)); q++)
			s->line += *q == '\n';
		s->p = end != NULL ? end + 2 : s->p + strlen(s->p);
		return true;
	}
	if (s->p[0] == '\'') {
		s->p++;
		while (*s->p != '\0' && *s->p != '\'')
			s->p += *s->p == '\\' ? 2 : 1;
		if (*s->p != '\0')
			s->p++;
		return true;
	}
	return false;
}

static void scan_source(struct scan *scan, const char *path, const char *text)
{
	struct scanner s = {.path = path, .p = text, .line = 1, .scan = scan};

	while (*s.p != '\0') {
		char c = *s.p;
		if (scan_skip(&s))
			continue;
		if (c == '\n' || c == ' ' || c == '\t' || c == '\r') {
			s.line += c == '\n';
			s.p++;
			continue;
		}
		if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9')) {
			char ident[64];
			size_t n = 0;
			while (*s.p == '_' || (*s.p >= 'a' && *s.p <= 'z') ||
			       (*s.p >= 'A' && *s.p <= 'Z') || (*s.p >= '0' && *s.p <= '9')) {
				if (n + 1 < sizeof(ident))
					ident[n++] = *s.p;
				s.p++;
			}
			ident[n] = '\0';
			scan_token_other(&s);
			memcpy(s.before_ident, s.last_ident, sizeof(s.before_ident));
			memcpy(s.last_ident, ident, sizeof(s.last_ident));
			continue;
		}
		s.p++;
		if (c == '"') {
			char literal[1024];
			scan_string(&s, literal, sizeof(literal));
			scan_literal(&s, literal);
		} else if (c == '(') {
			scan_open(&s);
		} else if (c == ')') {
			scan_close(&s);
		} else if (c == ',' && s.depth > 0) {
			s.stack[s.depth - 1].arg++;
		} else {
			scan_token_other(&s);
		}
		if (c != '"') {
			s.before_ident[0] = '\0';
			s.last_ident[0] = '\0';
		}
	}
}

/* src/pop3 of this source tree: the test is built from tests/unit/test_lang.c, and run from the
 * top of the tree (scripts/check.sh), or anywhere if __FILE__ is absolute. */
static char *pop3_source_dir(void)
{
	const char *suffix = "tests/unit/test_lang.c";
	size_t len = strlen(__FILE__), suffix_len = strlen(suffix);

	assert_true(len >= suffix_len && strcmp(__FILE__ + len - suffix_len, suffix) == 0);
	return xasprintf("%.*ssrc/pop3", (int)(len - suffix_len), __FILE__);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	assert_true(size >= 0);
	rewind(f);
	char *text = xmalloc((size_t)size + 1);
	assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
	text[size] = '\0';
	fclose(f);
	return text;
}

static void scan_sources(struct scan *scan)
{
	char *dir = pop3_source_dir();
	DIR *d = opendir(dir);

	if (d == NULL)
		fail_msg("cannot open %s: run from the top of the source tree", dir);
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		size_t len = strlen(e->d_name);
		if (len < 3 || strcmp(e->d_name + len - 2, ".c") != 0)
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		char *text = read_file(path);
		scan_source(scan, path, text);
		free(text);
		free(path);
	}
	closedir(d);
	free(dir);
}

static bool in_catalog(const char *fmt, enum pop3_lang lang)
{
	const char *english, *translated;

	for (size_t i = 0; pop3_lang_catalog_entry(i, lang, &english, &translated); i++) {
		if (strcmp(english, fmt) == 0)
			return true;
	}
	return false;
}

static bool in_scan(const struct scan *scan, const char *fmt)
{
	for (size_t i = 0; i < scan->count; i++) {
		if (strcmp(scan->formats[i], fmt) == 0)
			return true;
	}
	return false;
}

/* The scanner itself, on a made-up source: it must see through what the real ones do. */
static void test_scanner_finds_formats_and_problems(void **state)
{
	static const char source[] =
	    "void pop3_reply_ok(struct pop3_session *session, const char *fmt, ...)\n"
	    "{ pop3_reply_line(session, \"+OK\", fmt, args); }\n"
	    "/* pop3_reply_err(session, \"in a comment\"); */\n"
	    "// pop3_reply_err(session, \"in a line comment\");\n"
	    "static void f(struct pop3_session *session, char c)\n"
	    "{\n"
	    "\tif (c == '(')\n"
	    "\t\tpop3_reply_err(session, \"%s Cannot \"\n"
	    "\t\t\t\t\t\"open \\\"it\\\"\", code(kind, \"x\"));\n"
	    "\telse pop3_reply_ok(session, c ? \"Yes\" : \"No\");\n"
	    "\tpop3_reply_ok(session, text);\n"
	    "\tpop3_refuse(fd, false, \"-ERR [SYS/TEMP] Too many\\r\\n\");\n"
	    "\tevbuffer_add(out, \"-ERR Written directly\\r\\n\", 23);\n"
	    "\tevbuffer_add(out, \"+OK\\r\\n\", 5);\n"
	    "}\n";
	struct scan scan = {.quiet = true};

	scan_source(&scan, "made-up.c", source);
	assert_int_equal(scan.count, 1);
	assert_string_equal(scan.formats[0], "%s Cannot open \"it\"");
	/* the ternary, the variable and the direct -ERR line */
	assert_int_equal(scan.problems, 3);
	free(scan.formats[0]);
}

static void test_every_reply_format_is_translated(void **state)
{
	struct scan scan = {0};

	scan_sources(&scan);
	/* the scanner works: it found the texts every session sends */
	assert_true(scan.count >= 40);
	assert_true(in_scan(&scan, "Unknown command"));
	assert_true(in_scan(&scan, "[IN-USE] Mailbox is locked by another session"));
	assert_true(in_scan(&scan, "Line too long (at most %d octets), authentication cancelled"));
	for (size_t i = 0; i < scan.count; i++) {
		if (!pop3_lang_format_has_words(scan.formats[i]))
			continue;
		for (enum pop3_lang lang = POP3_LANG_EN + 1; lang < POP3_LANG_COUNT; lang++) {
			if (!in_catalog(scan.formats[i], lang)) {
				fprintf(stderr,
					"reply format without a translation into %s "
					"(src/pop3/lang.c): \"%s\"\n",
					pop3_lang_get(lang)->tag, scan.formats[i]);
				scan.problems++;
			}
		}
	}
	/* and the other way: an entry no code sends is a text that was changed in one place */
	const char *english, *translated;
	for (size_t i = 0; pop3_lang_catalog_entry(i, POP3_LANG_EN, &english, &translated); i++) {
		if (!in_scan(&scan, english)) {
			fprintf(stderr, "catalog entry no reply uses: \"%s\"\n", english);
			scan.problems++;
		}
	}
	for (size_t i = 0; i < scan.count; i++)
		free(scan.formats[i]);
	assert_int_equal(scan.problems, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_match_basic_filtering),
	    cmocka_unit_test(test_match_star_is_the_preferred_language),
	    cmocka_unit_test(test_match_rejects_malformed_ranges),
	    cmocka_unit_test(test_languages_listed),
	    cmocka_unit_test(test_format_lookup),
	    cmocka_unit_test(test_format_has_words),
	    cmocka_unit_test(test_catalog_translations_match_their_formats),
	    cmocka_unit_test(test_scanner_finds_formats_and_problems),
	    cmocka_unit_test(test_every_reply_format_is_translated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
