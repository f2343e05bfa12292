/* Fuzzes the POP3 command-line parser (src/pop3/parse.c) with one line per input, as the session
 * hands it over: at most POP3_MAX_LINE octets, CRLF removed, NUL-terminated. Beyond memory errors
 * it checks what the parser promises: upper-cased keywords, arguments split at spaces, and message
 * numbers and TOP line counts accepted exactly when they are canonical decimals in range. */
#include <ctype.h>
#include <inttypes.h>

#include "fuzz_common.h"
#include "pop3/parse.h"

/* The reference: is arg a canonical decimal (digits only, no leading zero) of value <= max? */
static bool canonical_decimal(const char *arg, uint64_t max, uint64_t *value_r)
{
	uint64_t value = 0;

	if (arg[0] == '\0' || (arg[0] == '0' && arg[1] != '\0'))
		return false;
	for (const char *p = arg; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return false;
		unsigned digit = (unsigned)(*p - '0');
		if (value > (UINT64_MAX - digit) / 10)
			return false;
		value = value * 10 + digit;
	}
	*value_r = value;
	return value <= max;
}

static void check_numbers(const char *arg)
{
	static const size_t counts[] = {1, 3, 255, 100000, SIZE_MAX};
	uint64_t value;

	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		size_t index;
		bool expected = canonical_decimal(arg, counts[i], &value) && value >= 1;
		int ret = pop3_parse_msgnum(arg, counts[i], &index);
		FUZZ_CHECK((ret == 0) == expected);
		if (ret == 0)
			FUZZ_CHECK(index < counts[i] && (uint64_t)index + 1 == value);
	}
	unsigned long lines;
	bool expected = canonical_decimal(arg, 2147483647UL, &value);
	int ret = pop3_parse_line_count(arg, 2147483647UL, &lines);
	FUZZ_CHECK((ret == 0) == expected);
	if (ret == 0)
		FUZZ_CHECK(lines == value);
}

static bool has_control_byte(const char *line)
{
	for (const unsigned char *c = (const unsigned char *)line; *c != '\0'; c++) {
		if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
			return true;
	}
	return false;
}

/* Compares the parse with a plain re-split of the line at spaces. */
static void check_split(const char *line, const struct pop3_command_line *cmd)
{
	const char *p = line;
	size_t len = 0;

	while (*p == ' ')
		p++;
	while (p[len] != '\0' && p[len] != ' ')
		len++;
	FUZZ_CHECK(len >= 1 && len <= POP3_MAX_KEYWORD && strlen(cmd->keyword) == len);
	for (size_t i = 0; i < len; i++) {
		FUZZ_CHECK(isalnum((unsigned char)p[i]));
		FUZZ_CHECK(cmd->keyword[i] == (char)toupper((unsigned char)p[i]));
	}
	p += len;
	FUZZ_CHECK(cmd->rest == (*p == ' ' && p[1] != '\0' ? p + 1 : NULL));

	size_t tokens = 0;
	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		size_t tok_len = strcspn(p, " ");
		if (tokens < POP3_MAX_ARGS) {
			const char *arg = cmd->args[tokens];
			FUZZ_CHECK(arg >= cmd->argbuf && arg < cmd->argbuf + sizeof(cmd->argbuf));
			FUZZ_CHECK(strlen(arg) == tok_len && memcmp(arg, p, tok_len) == 0);
		}
		tokens++;
		p += tok_len;
	}
	FUZZ_CHECK(cmd->arg_count == (tokens > POP3_MAX_ARGS ? POP3_MAX_ARGS + 1 : tokens));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char line[POP3_MAX_LINE + 1];
	struct pop3_command_line cmd;

	if (size > POP3_MAX_LINE)
		size = POP3_MAX_LINE;
	memcpy(line, data, size);
	line[size] = '\0'; /* an earlier NUL ends the line, as the session refuses NULs anyway */

	switch (pop3_parse_line(line, &cmd)) {
	case POP3_PARSE_OK:
		FUZZ_CHECK(!has_control_byte(line));
		check_split(line, &cmd);
		for (size_t i = 0; i < cmd.arg_count && i < POP3_MAX_ARGS; i++)
			check_numbers(cmd.args[i]);
		break;
	case POP3_PARSE_EMPTY:
		FUZZ_CHECK(!has_control_byte(line) && strspn(line, " ") == strlen(line));
		break;
	case POP3_PARSE_BAD_BYTES:
		FUZZ_CHECK(has_control_byte(line));
		break;
	case POP3_PARSE_BAD_KEYWORD:
		FUZZ_CHECK(!has_control_byte(line));
		break;
	}
	/* the numeric parsers also see raw text, as a handler would with any argument */
	check_numbers(line);
	return 0;
}
