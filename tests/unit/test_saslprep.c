/* Unit tests for SASLprep (RFC 4013 §3 examples and the stored/query distinction). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "auth/saslprep.h"

static void expect(const char *in, bool stored, const char *want)
{
	char *out = NULL;

	assert_int_equal(saslprep(in, stored, &out), 0);
	assert_string_equal(out, want);
	free(out);
}

static void expect_refused(const char *in, bool stored)
{
	char *out = NULL;

	assert_int_equal(saslprep(in, stored, &out), -1);
	assert_null(out);
}

/* RFC 4013 §3, the examples table. */
static void test_rfc4013_examples(void **state)
{
	expect("I\xc2\xadX", false, "IX");   /* SOFT HYPHEN mapped to nothing */
	expect("user", false, "user");	     /* no transformation */
	expect("USER", false, "USER");	     /* case preserved */
	expect("\xc2\xaa", false, "a");	     /* ORDINAL INDICATOR -> a (NFKC) */
	expect("\xe2\x85\xa8", false, "IX"); /* ROMAN NUMERAL NINE -> IX */
	expect_refused("\x07", false);	     /* control character */
	expect_refused("\xd8\xa7"
		       "1",
		       false); /* bidi check: RandALCat and L/number mixed */
}

static void test_ascii_passwords_unchanged(void **state)
{
	expect("correct horse battery staple", true, "correct horse battery staple");
	expect("p@ss:w0rd!~", false, "p@ss:w0rd!~");
}

static void test_non_ascii_space_becomes_space(void **state)
{
	expect("a\xc2\xa0"
	       "b",
	       false, "a b"); /* NO-BREAK SPACE */
}

/* U+0221 was unassigned in Unicode 3.2: allowed in a query, refused when stored (RFC 3454 §7). */
static void test_unassigned_stored_vs_query(void **state)
{
	char *out = NULL;

	assert_int_equal(saslprep("x\xc8\xa1", false, &out), 0);
	free(out);
	expect_refused("x\xc8\xa1", true);
}

static void test_invalid_utf8_refused(void **state)
{
	expect_refused("\xc3", false);
	expect_refused("\xff\xfe", false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc4013_examples),
	    cmocka_unit_test(test_ascii_passwords_unchanged),
	    cmocka_unit_test(test_non_ascii_space_becomes_space),
	    cmocka_unit_test(test_unassigned_stored_vs_query),
	    cmocka_unit_test(test_invalid_utf8_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
