/* Response languages (RFC 6856 §3, LANG): the languages buzon speaks, the matching of a client's
 * language range to one of them, and the catalog that turns each English reply format into the
 * session's language. Replies are translated where they are written (pop3_reply_ok/err), by their
 * format string, so code that replies never names a language.
 *
 * Rules for reply formats (tests/unit/test_lang.c enforces them):
 * - the format passed to pop3_reply_ok/pop3_reply_err is one string literal, and every format with
 *   words in it has an entry in the catalog (a format of conversions only, "%zu %llu", is data);
 * - arguments are data (numbers, UIDLs, command names, response codes), never English words: a
 *   sentence that varies is written as separate whole formats;
 * - a translation keeps the response code ("[IN-USE]", or a leading "%s" that carries one) first,
 *   and the same printf conversions in the same order. */
#ifndef BUZON_POP3_LANG_H
#define BUZON_POP3_LANG_H

#include <stdbool.h>
#include <stddef.h>

/* English is 0, so a zeroed session speaks it: the language of RFC 1939, plain ASCII, until the
 * client asks for another. */
enum pop3_lang { POP3_LANG_EN = 0, POP3_LANG_ES, POP3_LANG_COUNT };

/* The language "LANG *" selects (RFC 6856 §3.2: "preferred by the server administrator"). */
#define POP3_LANG_PREFERRED POP3_LANG_EN

struct pop3_language {
	const char *tag;  /* RFC 5646 language tag, as the LANG listing and reply show it */
	const char *name; /* its name in the language itself, UTF-8, for the LANG listing */
};

/* The language's tag and name; lang must be below POP3_LANG_COUNT. */
const struct pop3_language *pop3_lang_get(enum pop3_lang lang);

enum pop3_lang_match_result {
	POP3_LANG_MATCHED,
	POP3_LANG_UNAVAILABLE, /* a well-formed range that names no language buzon has */
	POP3_LANG_MALFORMED,   /* not a basic language range (RFC 4647 §2.1) */
};

/* Matches a LANG argument, a basic language range or "*", against the languages by RFC 4647
 * §3.3.1 basic filtering (case-insensitive; "en" matches "en" and "en-GB", "en-GB" does not match
 * "en"); the first language in enum order that matches wins. "*" selects POP3_LANG_PREFERRED. */
enum pop3_lang_match_result pop3_lang_match(const char *range, enum pop3_lang *lang_r);

/* The format to use for the English reply format fmt in lang: its translation, or fmt itself for
 * English and for formats without words. The result is a static string. format_arg lets the
 * compiler check the arguments against fmt, as for gettext(). */
const char *pop3_lang_format(enum pop3_lang lang, const char *fmt) __attribute__((format_arg(2)));

/* True if fmt has human-readable words, outside its printf conversions and its leading response
 * code: such a format needs a translation in every language. */
bool pop3_lang_format_has_words(const char *fmt);

/* The catalog, for the tests: entry i's English format and its translation into lang (never
 * NULL). Returns false when i is past the end. */
bool pop3_lang_catalog_entry(size_t i, enum pop3_lang lang, const char **english_r,
			     const char **translated_r);

#endif
