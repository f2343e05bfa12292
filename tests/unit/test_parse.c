/* Unit tests for the POP3 command-line and argument parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pop3/parse.h"

static void test_keyword_upper_cased_and_args_split(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("top 1 10", &cmd), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "TOP");
	assert_int_equal(cmd.arg_count, 2);
	assert_string_equal(cmd.args[0], "1");
	assert_string_equal(cmd.args[1], "10");

	assert_int_equal(pop3_parse_line("StAt", &cmd), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "STAT");
	assert_int_equal(cmd.arg_count, 0);
	assert_null(cmd.rest);
}

static void test_runs_of_spaces_and_trailing_spaces(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("  LIST   2   ", &cmd), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "LIST");
	assert_int_equal(cmd.arg_count, 1);
	assert_string_equal(cmd.args[0], "2");
}

static void test_pass_keeps_spaces_in_rest(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("PASS my secret  pass ", &cmd), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "PASS");
	assert_string_equal(cmd.rest, "my secret  pass ");
	assert_int_equal(cmd.arg_count, POP3_MAX_ARGS + 1);
}

static void test_too_many_args_flagged(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("RETR 1 2 3", &cmd), POP3_PARSE_OK);
	assert_int_equal(cmd.arg_count, POP3_MAX_ARGS + 1);
}

static void test_bad_lines(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("", &cmd), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_line("    ", &cmd), POP3_PARSE_EMPTY);
	assert_int_equal(pop3_parse_line("RE-R 1", &cmd), POP3_PARSE_BAD_KEYWORD);
	assert_int_equal(pop3_parse_line("UTF8", &cmd), POP3_PARSE_OK);
	assert_int_equal(pop3_parse_line("VERYLONGKEYWORD", &cmd), POP3_PARSE_BAD_KEYWORD);
	assert_int_equal(pop3_parse_line("USER a\x01"
					 "b",
					 &cmd),
			 POP3_PARSE_BAD_BYTES);
	assert_int_equal(pop3_parse_line("USER a\x7f", &cmd), POP3_PARSE_BAD_BYTES);
	assert_int_equal(pop3_parse_line("US\x1bR", &cmd), POP3_PARSE_BAD_BYTES);
}

static void test_utf8_arguments_allowed(void **state)
{
	struct pop3_command_line cmd;

	assert_int_equal(pop3_parse_line("USER jos\xc3\xa9@example.org", &cmd), POP3_PARSE_OK);
	assert_string_equal(cmd.args[0], "jos\xc3\xa9@example.org");
}

static void test_msgnum_strict(void **state)
{
	size_t index;

	assert_int_equal(pop3_parse_msgnum("1", 3, &index), 0);
	assert_int_equal(index, 0);
	assert_int_equal(pop3_parse_msgnum("3", 3, &index), 0);
	assert_int_equal(index, 2);
	const char *bad[] = {"0",
			     "4",
			     "-1",
			     "+1",
			     "1x",
			     "x1",
			     "01",
			     " 1",
			     "1 ",
			     "",
			     "99999999999999999999999",
			     "18446744073709551616",
			     "0x1",
			     "1.0"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(pop3_parse_msgnum(bad[i], 3, &index), -1);
	assert_int_equal(pop3_parse_msgnum("1", 0, &index), -1);
}

static void test_line_count(void **state)
{
	unsigned long lines;

	assert_int_equal(pop3_parse_line_count("0", 100, &lines), 0);
	assert_int_equal(lines, 0);
	assert_int_equal(pop3_parse_line_count("100", 100, &lines), 0);
	assert_int_equal(lines, 100);
	assert_int_equal(pop3_parse_line_count("101", 100, &lines), -1);
	assert_int_equal(pop3_parse_line_count("-1", 100, &lines), -1);
	assert_int_equal(pop3_parse_line_count("00", 100, &lines), -1);
	assert_int_equal(pop3_parse_line_count("1a", 100, &lines), -1);
	assert_int_equal(pop3_parse_line_count("", 100, &lines), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keyword_upper_cased_and_args_split),
	    cmocka_unit_test(test_runs_of_spaces_and_trailing_spaces),
	    cmocka_unit_test(test_pass_keeps_spaces_in_rest),
	    cmocka_unit_test(test_too_many_args_flagged),
	    cmocka_unit_test(test_bad_lines),
	    cmocka_unit_test(test_utf8_arguments_allowed),
	    cmocka_unit_test(test_msgnum_strict),
	    cmocka_unit_test(test_line_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
