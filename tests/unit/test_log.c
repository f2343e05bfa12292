/* log_quote: what reaches the log from a client (user names, commands) is quoted and escaped so
 * that one value stays one field and every line stays valid UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"

static void plain_values_are_left_alone(void **state)
{
	assert_string_equal(log_quote("demo"), "demo");
	assert_string_equal(log_quote("user@example.org"), "user@example.org");
}

static void spaces_quotes_and_empty_values_are_quoted(void **state)
{
	assert_string_equal(log_quote(""), "\"\"");
	assert_string_equal(log_quote("a b"), "\"a b\"");
	assert_string_equal(log_quote("k=v"), "\"k=v\"");
	assert_string_equal(log_quote("say \"hi\""), "\"say \\\"hi\\\"\"");
}

static void control_bytes_are_escaped(void **state)
{
	assert_string_equal(log_quote("a\r\nb"), "\"a\\x0d\\x0ab\"");
	assert_string_equal(log_quote("\x7f"), "\"\\x7f\"");
}

static void valid_utf8_passes_through(void **state)
{
	assert_string_equal(log_quote("ni\xc3\xb1o"), "ni\xc3\xb1o");
	assert_string_equal(log_quote("\xf0\x9f\x93\xab"), "\xf0\x9f\x93\xab");
}

static void invalid_utf8_is_escaped_byte_by_byte(void **state)
{
	assert_string_equal(log_quote("\xff"), "\"\\xff\"");
	/* an overlong '/', a lone continuation byte and a truncated sequence */
	assert_string_equal(log_quote("\xc0\xaf"), "\"\\xc0\\xaf\"");
	assert_string_equal(log_quote("a\x80"), "\"a\\x80\"");
	assert_string_equal(log_quote("\xe2\x82"), "\"\\xe2\\x82\"");
	/* a UTF-16 surrogate encoded in UTF-8 */
	assert_string_equal(log_quote("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"");
}

static void long_values_are_cut_with_an_ellipsis(void **state)
{
	char value[2000];
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	const char *quoted = log_quote(value);
	size_t len = strlen(quoted);
	assert_true(len < 512);
	assert_memory_equal(quoted + len - 3, "...", 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(plain_values_are_left_alone),
	    cmocka_unit_test(spaces_quotes_and_empty_values_are_quoted),
	    cmocka_unit_test(control_bytes_are_escaped),
	    cmocka_unit_test(valid_utf8_passes_through),
	    cmocka_unit_test(invalid_utf8_is_escaped_byte_by_byte),
	    cmocka_unit_test(long_values_are_cut_with_an_ellipsis),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
