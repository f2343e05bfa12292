/* The POP3 command-line parser (see parse.h). */
#include <ctype.h>
#include <string.h>

#include "core/util.h"
#include "pop3/parse.h"

enum pop3_parse_result pop3_parse_line(const char *line, struct pop3_command_line *out)
{
	const char *p = line;
	size_t len = 0;

	memset(out, 0, sizeof(*out));
	for (const unsigned char *c = (const unsigned char *)line; *c != '\0'; c++) {
		/* Passwords may hold any printable byte, UTF-8 included, but never control bytes.
		 */
		if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
			return POP3_PARSE_BAD_BYTES;
	}
	while (*p == ' ')
		p++;
	if (*p == '\0')
		return POP3_PARSE_EMPTY;
	while (p[len] != '\0' && p[len] != ' ') {
		/* letters, and digits for extensions such as RFC 6856's UTF8 */
		if (!isalnum((unsigned char)p[len]) || len >= POP3_MAX_KEYWORD)
			return POP3_PARSE_BAD_KEYWORD;
		out->keyword[len] = (char)toupper((unsigned char)p[len]);
		len++;
	}
	p += len;
	if (*p == ' ' && p[1] != '\0')
		out->rest = p + 1;

	size_t arg_len = strlen(p);
	if (arg_len >= sizeof(out->argbuf))
		arg_len = sizeof(out->argbuf) - 1;
	memcpy(out->argbuf, p, arg_len);
	out->argbuf[arg_len] = '\0';
	char *a = out->argbuf;
	for (;;) {
		while (*a == ' ')
			*a++ = '\0';
		if (*a == '\0')
			return POP3_PARSE_OK;
		if (out->arg_count == POP3_MAX_ARGS) {
			out->arg_count = POP3_MAX_ARGS + 1;
			return POP3_PARSE_OK;
		}
		out->args[out->arg_count++] = a;
		while (*a != '\0' && *a != ' ')
			a++;
	}
}

/* Digits only, no leading zero unless the number is 0 itself. */
static int pop3_parse_decimal(const char *arg, unsigned long long max, unsigned long long *value_r)
{
	if (arg[0] == '0' && arg[1] != '\0')
		return -1;
	return str_parse_uint(arg, 0, max, value_r);
}

int pop3_parse_msgnum(const char *arg, size_t count, size_t *index_r)
{
	unsigned long long value;

	if (count == 0 || pop3_parse_decimal(arg, count, &value) < 0 || value == 0)
		return -1;
	*index_r = (size_t)(value - 1);
	return 0;
}

int pop3_parse_line_count(const char *arg, unsigned long max, unsigned long *value_r)
{
	unsigned long long value;

	if (pop3_parse_decimal(arg, max, &value) < 0)
		return -1;
	*value_r = (unsigned long)value;
	return 0;
}
