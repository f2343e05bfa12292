/* The one POP3 command-line parser: splits a line into a keyword and arguments and validates
 * numeric arguments strictly (no zero message numbers, no signs, no leading zeros, no overflow,
 * no trailing noise). Everything that reaches a command handler has passed through here. */
#ifndef BUZON_POP3_PARSE_H
#define BUZON_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 2449 §4: a command line is at most 255 octets including the CRLF. */
#define POP3_MAX_LINE 255
/* SASL responses (RFC 5034 §4) are not commands: long enough for any mechanism buzon offers
 * (SCRAM's client-final with channel binding is a few hundred octets) with room to spare. */
#define POP3_MAX_SASL_LINE 8192
/* RFC 2449 §4: keywords are 3 or 4 characters (longer ones are allowed for extensions). */
#define POP3_MAX_KEYWORD 8
/* No POP3 command takes more than two arguments. */
#define POP3_MAX_ARGS 2

enum pop3_parse_result {
	POP3_PARSE_OK = 0,
	POP3_PARSE_EMPTY,	/* nothing but blanks */
	POP3_PARSE_BAD_KEYWORD, /* not letters, or too long */
	POP3_PARSE_BAD_BYTES,	/* NUL or other control bytes in the line */
};

struct pop3_command_line {
	char keyword[POP3_MAX_KEYWORD + 1]; /* upper-cased */
	const char *args[POP3_MAX_ARGS];    /* point into argbuf */
	size_t arg_count;		    /* POP3_MAX_ARGS + 1 means "more than the maximum" */
	/* the whole text after the keyword and one space, for PASS, whose single argument may
	 * contain spaces (RFC 1939 §7); NULL when there is none */
	const char *rest;
	char argbuf[POP3_MAX_LINE + 1];
};

/* Parses line (NUL-terminated, without CRLF, at most POP3_MAX_LINE octets); out->rest points into
 * line, the arguments into out->argbuf. Arguments are separated by runs of spaces; trailing spaces
 * are ignored. */
enum pop3_parse_result pop3_parse_line(const char *line, struct pop3_command_line *out);

/* Parses a message number in 1..count. Returns -1 if arg is not such a number. */
int pop3_parse_msgnum(const char *arg, size_t count, size_t *index_r);

/* Parses a non-negative line count for TOP (0..max). Returns -1 if invalid. */
int pop3_parse_line_count(const char *arg, unsigned long max, unsigned long *value_r);

#endif
