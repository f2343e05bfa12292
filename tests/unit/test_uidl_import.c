/* Unit tests for the UIDL import (store/uidl_import.c): Dovecot's pop3_uidl_format, the
 * dovecot-uidlist and courierpop3dsizelist parsers (malformed and hostile input), the plan that
 * keeps UIDs, the buzon-uidl-import map, and the import at a Maildir open (crash safety). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "temp_maildir.h"

#include "core/util.h"
#include "store/store.h"
#include "store/uidl_import.h"
#include "store/uidlist.h"

/* ---- helpers ---- */

static struct uidl_format parse_format_ok(const char *text)
{
	struct uidl_format format;
	char *error = NULL;

	if (uidl_format_parse(text, &format, &error) < 0)
		fail_msg("format %s refused: %s", text, error);
	return format;
}

static struct uidl_import_source *parse_dovecot(const char *text, const char *format_text)
{
	struct uidl_format format = parse_format_ok(format_text);

	return uidl_import_parse_dovecot(text, strlen(text), &format);
}

static const struct uidl_import_record *record_named(const struct uidl_import_source *source,
						     const char *basename)
{
	for (size_t i = 0; i < source->count; i++) {
		if (strcmp(source->records[i].basename, basename) == 0)
			return &source->records[i];
	}
	return NULL;
}

static const struct uidl_import_item *item_named(const struct uidl_import_plan *plan,
						 const char *basename)
{
	for (size_t i = 0; i < plan->count; i++) {
		if (strcmp(plan->items[i].record->basename, basename) == 0)
			return &plan->items[i];
	}
	return NULL;
}

static struct uidl_import_plan *plan_ok(const struct uidl_import_source *source)
{
	struct uidl_import_plan *plan = NULL;
	char *error = NULL;

	if (uidl_import_plan_build(source, &plan, &error) < 0)
		fail_msg("plan refused: %s", error);
	return plan;
}

/* The invariants of goal 1 on a plan: UIDs unique and below next_uid, shown UIDLs unique. */
static void assert_plan_sound(const struct uidl_import_plan *plan)
{
	char native[STORE_UIDL_LEN + 1];
	char **shown = xcalloc(plan->count + 1, sizeof(*shown));

	for (size_t i = 0; i < plan->count; i++) {
		const struct uidl_import_item *item = &plan->items[i];
		assert_true(item->uid >= 1);
		assert_true(item->uid < plan->list->next_uid);
		if (i > 0)
			assert_true(plan->items[i - 1].uid < item->uid);
		uidl_native_format(native, item->uid, plan->list->uidvalidity);
		shown[i] = xstrdup(item->shown != NULL ? item->shown : native);
		assert_true(uidl_text_valid(shown[i], strlen(shown[i])));
	}
	for (size_t i = 0; i < plan->count; i++) {
		for (size_t j = i + 1; j < plan->count; j++)
			assert_string_not_equal(shown[i], shown[j]);
	}
	/* nor may any of them be what a later message (from next_uid on) will show */
	for (size_t i = 0; i < plan->count; i++) {
		unsigned int uid;
		if (strlen(shown[i]) == STORE_UIDL_LEN && sscanf(shown[i], "%8x", &uid) == 1) {
			uidl_native_format(native, uid, plan->list->uidvalidity);
			if (strcmp(native, shown[i]) == 0)
				assert_int_equal(uid, plan->items[i].uid);
		}
		free(shown[i]);
	}
	free(shown);
}

/* ---- the format ---- */

static void test_format_matches_dovecot(void **state)
{
	/* what Dovecot 2.3.19 printed for these formats, with UID 1, UIDVALIDITY 1795724064 and
	 * the file 1700000001.M1P9.test (recorded from the real server) */
	static const struct {
		const char *format, *expected;
	} cases[] = {
	    {"%08Xu%08Xv", "000000016b089320"},
	    {"%f", "1700000001.M1P9.test"},
	    {"%g", "1700000001.M1P9.test"},
	    {"%u", "1"},
	    {"%v", "1795724064"},
	    {"%Xv", "6b089320"},
	    {"%08u", "00000001"},
	    {"%3f", "170"},
	    {"%UXv", "6b089320"},
	    {"%XUv", "6B089320"},
	    {"a%%b%u", "a%b1"},
	    {"%LXv", "6b089320"},
	    {"%03u", "001"},
	    {"%012Xv", "00006b089320"},
	};
	struct uidl_format_values values = {.uid = 1,
					    .uidvalidity = 1795724064,
					    .filename = "1700000001.M1P9.test",
					    .guid = "1700000001.M1P9.test"};
	char out[STORE_UIDL_MAX + 1];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct uidl_format format = parse_format_ok(cases[i].format);
		assert_true(uidl_format_expand(&format, &values, out));
		assert_string_equal(out, cases[i].expected);
	}
	/* X of something that is not a number is "0", as in Dovecot */
	struct uidl_format format = parse_format_ok("%Xf");
	assert_true(uidl_format_expand(&format, &values, out));
	assert_string_equal(out, "0");
}

static void test_format_refuses_what_buzon_cannot_compute(void **state)
{
	static const char *const refused[] = {
	    "%m",      /* header MD5 */
	    "%{uid}",  /* long names */
	    "%2.5f",   /* offsets */
	    "%-3f",    /* negative width */
	    "%Ru",     /* other modifiers */
	    "%q",      /* unknown variable */
	    "UIDL",    /* no variable */
	    "a b%u",   /* a space cannot be in a UIDL */
	    "%",       /* cut off */
	    "%08",     /* cut off */
	    "%99u",    /* wider than a UIDL */
	    "%XXXXXu", /* too many modifiers */
	};
	char long_format[UIDL_FORMAT_TEXT_MAX + 8];
	struct uidl_format format;
	char *error = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		error = NULL;
		assert_int_equal(uidl_format_parse(refused[i], &format, &error), -1);
		assert_non_null(error);
		assert_non_null(strstr(error, "import_uidl_format"));
		free(error);
	}
	memset(long_format, 'a', sizeof(long_format) - 1);
	long_format[sizeof(long_format) - 1] = '\0';
	long_format[0] = '%';
	long_format[1] = 'u';
	assert_int_equal(uidl_format_parse(long_format, &format, &error), -1);
	free(error);
}

static void test_format_result_must_be_a_uidl(void **state)
{
	struct uidl_format format = parse_format_ok("%f%f%f");
	struct uidl_format_values values = {.uid = 1,
					    .uidvalidity = 1,
					    .filename = "0123456789abcdefghijklmnopqrstuvwxyz",
					    .guid = "g"};
	char out[STORE_UIDL_MAX + 1];

	(void)state;
	/* 3 x 36 octets: longer than RFC 1939 allows */
	assert_false(uidl_format_expand(&format, &values, out));
	assert_true(uidl_text_valid("x", 1));
	assert_false(uidl_text_valid("", 0));
	assert_false(uidl_text_valid("a b", 3));
	assert_false(uidl_text_valid("a\x7f", 2));
}

static void test_native_format(void **state)
{
	char out[STORE_UIDL_LEN + 1];

	(void)state;
	uidl_native_format(out, 0x1a, 0x6553f100);
	assert_string_equal(out, "0000001a6553f100");
	uidl_native_format(out, 0xffffffffU, 1);
	assert_string_equal(out, "ffffffff00000001");
}

/* ---- dovecot-uidlist ---- */

static void test_dovecot_v3(void **state)
{
	struct uidl_import_source *source =
	    parse_dovecot("3 V1795724064 N9 G2d64e6032093086bc128000083ecc375\n"
			  "1 W23 :1700000001.M1P9.test:2,S\n"
			  "2 W23 POLDSERVER-7 :1700000002.M2P9.test\n"
			  "3 P :1700000003.M3P9.test:2,\n"
			  "4 G0123abcd S40 :1700000004.M4P9.test\n",
			  "%08Xu%08Xv");

	(void)state;
	assert_string_equal(source->name, UIDL_IMPORT_DOVECOT_NAME);
	assert_int_equal(source->uidvalidity, 1795724064U);
	assert_int_equal(source->next_uid, 9);
	assert_int_equal(source->count, 4);
	assert_int_equal(source->note_count, 0);
	assert_string_equal(record_named(source, "1700000001.M1P9.test")->uidl, "000000016b089320");
	/* a P field is the UIDL Dovecot showed, whatever the format */
	assert_string_equal(record_named(source, "1700000002.M2P9.test")->uidl, "OLDSERVER-7");
	/* an empty P is the base file name */
	assert_string_equal(record_named(source, "1700000003.M3P9.test")->uidl,
			    "1700000003.M3P9.test");
	assert_int_equal(record_named(source, "1700000004.M4P9.test")->uid, 4);
	uidl_import_source_free(&source);
	assert_null(source);

	/* %g is the G field when there is one, else the base name */
	source = parse_dovecot("3 V5 N3\n1 G0123abcd :a.b.c\n2 :d.e.f\n", "%g");
	assert_string_equal(record_named(source, "a.b.c")->uidl, "0123abcd");
	assert_string_equal(record_named(source, "d.e.f")->uidl, "d.e.f");
	uidl_import_source_free(&source);
}

static void test_dovecot_v1_and_v2(void **state)
{
	struct uidl_import_source *source =
	    parse_dovecot("1 1000 5\n1 1.a.host:2,S\n4 4.b.host\n", "%u-%v");

	(void)state;
	assert_int_equal(source->uidvalidity, 1000);
	assert_int_equal(source->next_uid, 5);
	assert_int_equal(source->count, 2);
	assert_string_equal(record_named(source, "4.b.host")->uidl, "4-1000");
	uidl_import_source_free(&source);

	source = parse_dovecot("2 77 3\n2 0 2.c.host\n", "%u");
	assert_int_equal(source->count, 1);
	assert_string_equal(record_named(source, "2.c.host")->uidl, "2");
	uidl_import_source_free(&source);
}

static void test_dovecot_malformed_lines_are_skipped(void **state)
{
	struct uidl_import_source *source =
	    parse_dovecot("3 V100 N20\n"
			  "garbage\n"
			  "0 :zero.uid\n" /* UID 0 */
			  "5 :five.ok\n"
			  "4 :four.not.ascending\n"	 /* not above the line before */
			  "4294967295 :too.high\n"	 /* Dovecot's "UID too high" */
			  "6 xbad :lowercase.key\n"	 /* extension keys are A-Z */
			  "7 W1\n"			 /* no file name */
			  "8 :dir/name\n"		 /* not a file name */
			  "9 :has space\n"		 /* the index cannot hold it */
			  "10 P\x01\x02 :control.uidl\n" /* a UIDL no client may see */
			  "\n"
			  "99999999999999999999 :huge\n"
			  "11 :cut.off", /* no newline */
			  "%08Xu%08Xv");

	(void)state;
	assert_int_equal(source->uidvalidity, 100);
	/* five.ok, and control.uidl without a UIDL (it keeps its UID, shows buzon's) */
	assert_int_equal(source->count, 2);
	assert_non_null(record_named(source, "five.ok"));
	assert_null(record_named(source, "control.uidl")->uidl);
	assert_true(source->note_count >= 10);
	uidl_import_source_free(&source);
}

static void test_dovecot_bad_header_imports_nothing(void **state)
{
	static const char *const files[] = {
	    "", "3 N5\n1 :a\n", "7 V1 N2\n1 :a\n", "x\n", "3 Vabc N2\n", "1 5\n",
	};
	char *error = NULL;
	struct uidl_import_plan *plan = NULL;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		struct uidl_import_source *source = parse_dovecot(files[i], "%u");
		assert_int_equal(source->uidvalidity, 0);
		assert_int_equal(uidl_import_plan_build(source, &plan, &error), -1);
		assert_null(plan);
		assert_non_null(strstr(error, "UIDVALIDITY"));
		free(error);
		error = NULL;
		uidl_import_source_free(&source);
	}
}

/* ---- courierpop3dsizelist ---- */

static void test_courier(void **state)
{
	static const char file[] = "/3 12 1700000000\n"
				   "1700000001.M1P1.courier:2,S 120 1:1700000000:0\n"
				   "1700000002.M2P1.courier 130 2:1700000000:1\n"
				   "1700000003.M3P1.courier:2, 140 3:0:0\n"
				   "odd'name+x 7 0:1700000000:0\n"
				   "1700000005.M5P1.courier 99 5:1699999999\n" /* version 2 line */
				   "has space.courier 10 6:1700000000:0\n"
				   "bad line\n"
				   "x.y 12 7:abc:0\n"
				   "x.z 12 8:1:2\n";
	struct uidl_import_source *source = uidl_import_parse_courier(file, strlen(file));

	(void)state;
	assert_string_equal(source->name, UIDL_IMPORT_COURIER_NAME);
	assert_int_equal(source->uidvalidity, 1700000000U);
	assert_int_equal(source->next_uid, 12);
	assert_int_equal(source->count, 5);
	assert_string_equal(record_named(source, "1700000001.M1P1.courier")->uidl,
			    "UID1-1700000000");
	assert_string_equal(record_named(source, "1700000003.M3P1.courier")->uidl, "UID3");
	/* UID 0: the base name, odd octets as +XX (Courier's version 0 UIDL) */
	assert_string_equal(record_named(source, "odd'name+x")->uidl, "odd+27name+2Bx");
	assert_string_equal(record_named(source, "1700000005.M5P1.courier")->uidl,
			    "UID5-1699999999");
	assert_int_equal(source->note_count, 4);
	uidl_import_source_free(&source);

	source = uidl_import_parse_courier("3 12 1\n", 7);
	assert_int_equal(source->uidvalidity, 0);
	uidl_import_source_free(&source);
}

/* ---- the plan ---- */

static void test_plan_keeps_uids_above_next_uid(void **state)
{
	/* Dovecot deleted UIDs 3, 5 and 6; its next UID is 7 */
	struct uidl_import_source *source =
	    parse_dovecot("3 V100 N7\n1 :a\n2 :b\n4 :c\n", "%08Xu%08Xv");
	struct uidl_import_plan *plan = plan_ok(source);

	(void)state;
	assert_int_equal(plan->count, 3);
	assert_int_equal(plan->list->uidvalidity, 100);
	assert_int_equal(plan->list->next_uid, 7);
	assert_int_equal(item_named(plan, "c")->uid, 4);
	/* the default format is buzon's own UIDL: nothing to keep in the map */
	assert_int_equal(plan->map->count, 0);
	assert_false(plan->map->done);
	for (size_t i = 0; i < plan->count; i++) {
		assert_null(plan->items[i].shown);
		assert_false(plan->items[i].uidl_dropped);
	}
	assert_plan_sound(plan);
	/* the index learns the UIDs by base name */
	assert_int_equal(uidlist_lookup(plan->list, "b", 1)->uid, 2);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);

	/* no N: above the highest UID */
	source = parse_dovecot("3 V100\n3 :a\n9 :b\n", "%u");
	plan = plan_ok(source);
	assert_int_equal(plan->list->next_uid, 10);
	assert_string_equal(item_named(plan, "b")->shown, "9");
	assert_plan_sound(plan);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
}

static void test_plan_duplicate_names_and_uids(void **state)
{
	/* Dovecot: a name listed twice belongs to its later line */
	struct uidl_import_source *source =
	    parse_dovecot("3 V100 N4\n1 :a\n2 :b\n3 :a:2,S\n", "%u.%v");
	struct uidl_import_plan *plan = plan_ok(source);

	(void)state;
	assert_int_equal(plan->count, 2);
	assert_int_equal(item_named(plan, "a")->uid, 3);
	assert_string_equal(item_named(plan, "a")->shown, "3.100");
	assert_int_equal(plan->note_count, 1);
	assert_plan_sound(plan);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);

	/* Courier: two UIDVALIDITYs gave UID 2 twice; the second gets a new UID but its UIDL */
	static const char file[] = "/3 5 10\n"
				   "m1 1 2:10:0\n"
				   "m2 1 2:11:0\n"
				   "m3 1 4294967296:10:0\n";
	source = uidl_import_parse_courier(file, strlen(file));
	plan = plan_ok(source);
	assert_int_equal(item_named(plan, "m1")->uid, 2);
	assert_int_equal(item_named(plan, "m2")->uid, 5);
	assert_string_equal(item_named(plan, "m2")->shown, "UID2-11");
	assert_int_equal(item_named(plan, "m3")->uid, 6);
	assert_string_equal(item_named(plan, "m3")->shown, "UID4294967296-10");
	assert_int_equal(plan->list->next_uid, 7);
	assert_plan_sound(plan);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
}

static void test_plan_hostile_uidls_cannot_collide(void **state)
{
	/* UIDVALIDITY 100 is 00000064: a P of buzon's form for UID 9 would be shown again by the
	 * message that gets UID 9 later; two P fields alike would show one UIDL twice */
	struct uidl_import_source *source = parse_dovecot("3 V100 N5\n"
							  "1 P0000000900000064 :a\n"
							  "2 PSAME :b\n"
							  "3 PSAME :c\n"
							  "4 P0000000400000064 :d\n",
							  "%u");
	struct uidl_import_plan *plan = plan_ok(source);

	(void)state;
	assert_true(item_named(plan, "a")->uidl_dropped);
	assert_null(item_named(plan, "a")->shown);
	assert_string_equal(item_named(plan, "b")->shown, "SAME");
	assert_true(item_named(plan, "c")->uidl_dropped);
	/* buzon's own UIDL of the message itself is kept, without a map entry */
	assert_false(item_named(plan, "d")->uidl_dropped);
	assert_null(item_named(plan, "d")->shown);
	assert_int_equal(plan->map->count, 1);
	assert_plan_sound(plan);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
}

static void test_plan_refuses_the_end_of_the_uid_space(void **state)
{
	static const char *const files[] = {
	    "3 V100 N4294967296\n1 :a\n",
	    "1 100 4294967290\n1 :a\n",
	};
	char *error = NULL;
	struct uidl_import_plan *plan = NULL;

	(void)state;
	/* N 4294967296 leaves no UID for new mail; records needing new UIDs past the end */
	struct uidl_import_source *source = parse_dovecot(files[0], "%u");
	assert_int_equal(uidl_import_plan_build(source, &plan, &error), -1);
	assert_non_null(strstr(error, "UID space"));
	free(error);
	uidl_import_source_free(&source);

	static const char courier[] = "/3 4294967294 10\nm1 1 0:10:0\nm2 1 4294967295:10:0\n";
	source = uidl_import_parse_courier(courier, strlen(courier));
	assert_int_equal(uidl_import_plan_build(source, &plan, &error), -1);
	free(error);
	uidl_import_source_free(&source);

	source = parse_dovecot(files[1], "%u");
	plan = plan_ok(source);
	assert_int_equal(plan->list->next_uid, 4294967290ULL);
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
}

/* Random lines of the files' own alphabet: the parsers and the plan must never crash, and what
 * the plan makes must keep goal 1 whatever the input. */
static void test_random_input_never_breaks_the_rules(void **state)
{
	static const char alphabet[] = "0123456789 :\n/VNPGWSx-abc3214";
	unsigned int seed = 12345;
	char data[400];

	(void)state;
	for (int round = 0; round < 3000; round++) {
		size_t len = (size_t)(rand_r(&seed) % (sizeof(data) - 20));
		size_t head = (size_t)snprintf(
		    data, sizeof(data), round % 2 ? "3 V7 N%d\n" : "/3 %d 7\n", rand_r(&seed) % 12);
		for (size_t i = head; i < len; i++)
			data[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		len = len > head ? len : head;
		struct uidl_format format = parse_format_ok(round % 3 ? "%u" : "%08Xu%08Xv");
		struct uidl_import_source *source =
		    round % 2 ? uidl_import_parse_dovecot(data, len, &format)
			      : uidl_import_parse_courier(data, len);
		struct uidl_import_plan *plan = NULL;
		char *error = NULL;
		if (uidl_import_plan_build(source, &plan, &error) == 0) {
			assert_plan_sound(plan);
			uidl_import_plan_free(&plan);
		} else {
			free(error);
		}
		bool damaged;
		struct uidl_import_map *map = uidl_import_map_parse(data, len, &damaged);
		uidl_import_map_check(map, 7, NULL, NULL);
		uidl_import_map_free(&map);
		uidl_import_source_free(&source);
	}
}

/* ---- the map ---- */

static void test_map_round_trip_and_damage(void **state)
{
	struct uidl_import_map map = {
	    .done = true, .uidvalidity = 1700000000, .source = "courierpop3dsizelist"};
	struct uidl_import_map_entry entries[] = {{3, "UID3-1700000000"}, {9, "UID9-1700000000"}};
	size_t len;
	bool damaged;

	(void)state;
	map.entries = entries;
	map.count = 2;
	char *text = uidl_import_map_format(&map, &len);
	assert_string_equal(text, "buzon-uidl-import 1 done 1700000000 courierpop3dsizelist\n"
				  "3 UID3-1700000000\n9 UID9-1700000000\nend 2\n");
	struct uidl_import_map *parsed = uidl_import_map_parse(text, len, &damaged);
	assert_false(damaged);
	assert_true(parsed->done);
	assert_int_equal(parsed->uidvalidity, 1700000000U);
	assert_string_equal(parsed->source, "courierpop3dsizelist");
	assert_string_equal(uidl_import_map_lookup(parsed, 9), "UID9-1700000000");
	assert_null(uidl_import_map_lookup(parsed, 4));
	uidl_import_map_free(&parsed);

	/* cut off before the trailer: damaged, the lines that parse stay */
	parsed = uidl_import_map_parse(text, len - 10, &damaged);
	assert_true(damaged);
	assert_int_equal(parsed->count, 1);
	uidl_import_map_free(&parsed);

	/* no header: never applied (UIDVALIDITY 0) and never imported again (done) */
	parsed = uidl_import_map_parse("3 x\nend 1\n", 10, &damaged);
	assert_true(damaged);
	assert_true(parsed->done);
	assert_int_equal(parsed->uidvalidity, 0);
	uidl_import_map_free(&parsed);
	free(text);

	/* a hand-edited map cannot show one UIDL twice */
	static const char edited[] = "buzon-uidl-import 1 done 100 dovecot-uidlist\n"
				     "1 SAME\n2 SAME\n3 0000000700000064\nend 3\n";
	parsed = uidl_import_map_parse(edited, strlen(edited), &damaged);
	assert_int_equal(uidl_import_map_check(parsed, 100, NULL, NULL), 2);
	assert_string_equal(uidl_import_map_lookup(parsed, 1), "SAME");
	assert_null(uidl_import_map_lookup(parsed, 2));
	assert_null(uidl_import_map_lookup(parsed, 3));
	uidl_import_map_free(&parsed);
}

/* ---- at a Maildir open ---- */

static int setup(void **state)
{
	return temp_maildir_setup(state, "uidlimport", true);
}

static int teardown(void **state)
{
	return temp_maildir_teardown(state);
}

static void put_file(const struct temp_maildir *fx, const char *name, const char *data)
{
	char *path = xasprintf("%s/%s", fx->maildir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, strlen(data)), 0);
	assert_int_equal(close(fd), 0);
	free(path);
}

static char *get_file(const struct temp_maildir *fx, const char *name)
{
	char *path = xasprintf("%s/%s", fx->maildir, name);
	FILE *f = fopen(path, "r");
	char *data = xcalloc(1, 65536);

	free(path);
	if (f == NULL) {
		free(data);
		return NULL;
	}
	size_t n = fread(data, 1, 65535, f);
	data[n] = '\0';
	fclose(f);
	return data;
}

static struct store_mailbox *open_ok(const struct temp_maildir *fx)
{
	struct store_mailbox *box = NULL;
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;

	if (store_backend_maildir.open(fx->maildir, &box, &kind, &error) < 0)
		fail_msg("open failed: %s", error);
	return box;
}

static void put_three_messages(const struct temp_maildir *fx)
{
	put_file(fx, "cur/1700000001.M1P9.test:2,S", "Subject: 1\n\none\n");
	put_file(fx, "cur/1700000002.M2P9.test:2,", "Subject: 2\n\ntwo\n");
	put_file(fx, "new/1700000003.M3P9.test", "Subject: 3\n\nthree\n");
}

static void test_open_imports_once(void **state)
{
	struct temp_maildir *fx = *state;

	put_three_messages(fx);
	put_file(fx, "dovecot-uidlist",
		 "3 V100 N8 Gabc\n"
		 "2 :1700000001.M1P9.test:2,S\n"
		 "5 POLD-5 :1700000002.M2P9.test\n"
		 "6 :1700000003.M3P9.test\n"
		 "7 :1700000004.M4P9.gone\n");
	put_file(fx, "new/1700000009.M9P9.test", "Subject: 9\n\narrived later\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 4);
	assert_string_equal(box->messages[0].uidl, "0000000200000064");
	assert_string_equal(box->messages[1].uidl, "OLD-5");
	assert_string_equal(box->messages[2].uidl, "0000000600000064");
	/* not in the old list: the next UID after the old server's next UID */
	assert_string_equal(box->messages[3].uidl, "0000000800000064");
	box->backend->close(&box);

	char *map = get_file(fx, UIDL_IMPORT_MAP_NAME);
	assert_string_equal(map, "buzon-uidl-import 1 done 100 dovecot-uidlist\n5 OLD-5\nend 1\n");
	free(map);
	/* the old file changing later changes nothing: the import ran once */
	put_file(fx, "dovecot-uidlist", "3 V200 N2\n1 :1700000001.M1P9.test\n");
	box = open_ok(fx);
	assert_int_equal(box->count, 4);
	assert_string_equal(box->messages[1].uidl, "OLD-5");
	assert_string_equal(box->messages[3].uidl, "0000000800000064");
	box->backend->close(&box);
}

static void test_open_redoes_an_interrupted_import(void **state)
{
	struct temp_maildir *fx = *state;

	/* a crash after the map was written, before the index: pending, no buzon-uidlist */
	put_three_messages(fx);
	put_file(fx, "courierpop3dsizelist",
		 "/3 4 1700000000\n"
		 "1700000001.M1P9.test:2,S 15 1:1700000000:0\n"
		 "1700000003.M3P9.test 17 3:1700000000:0\n");
	put_file(
	    fx, UIDL_IMPORT_MAP_NAME,
	    "buzon-uidl-import 1 pending 1700000000 courierpop3dsizelist\n1 UID1-1700000000\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_string_equal(box->messages[0].uidl, "UID1-1700000000");
	assert_string_equal(box->messages[1].uidl, "UID3-1700000000");
	assert_int_equal(box->messages[2].uid, 4);
	assert_string_equal(box->messages[2].uidl, "000000046553f100");
	box->backend->close(&box);
	char *map = get_file(fx, UIDL_IMPORT_MAP_NAME);
	assert_non_null(strstr(map, " done 1700000000 "));
	free(map);
}

static void test_open_never_repeats_a_finished_import(void **state)
{
	struct temp_maildir *fx = *state;

	/* the index is lost after an import: importing again could hand out UID 4 again (buzon may
	 * have given it to a message since), so every UIDL changes instead */
	put_three_messages(fx);
	put_file(fx, "dovecot-uidlist", "3 V100 N4\n1 :1700000001.M1P9.test\n");
	put_file(fx, UIDL_IMPORT_MAP_NAME, "buzon-uidl-import 1 done 100 dovecot-uidlist\nend 0\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 3);
	for (size_t i = 0; i < box->count; i++) {
		assert_int_equal(box->messages[i].uid, i + 1);
		assert_string_not_equal(box->messages[i].uidl + 8, "00000064");
	}
	box->backend->close(&box);
}

static void test_open_fails_when_the_old_list_cannot_be_read(void **state)
{
	struct temp_maildir *fx = *state;
	struct store_mailbox *box = NULL;
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL, *path = xasprintf("%s/dovecot-uidlist", fx->maildir);

	/* going on would show new UIDLs for good; the client can retry once it is fixed */
	put_three_messages(fx);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(store_backend_maildir.open(fx->maildir, &box, &kind, &error), -1);
	assert_int_equal(kind, STORE_ERROR_TEMP);
	assert_non_null(strstr(error, "dovecot-uidlist"));
	free(error);
	free(path);
	char *index = get_file(fx, UIDLIST_FILE_NAME);
	assert_null(index);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_matches_dovecot),
	    cmocka_unit_test(test_format_refuses_what_buzon_cannot_compute),
	    cmocka_unit_test(test_format_result_must_be_a_uidl),
	    cmocka_unit_test(test_native_format),
	    cmocka_unit_test(test_dovecot_v3),
	    cmocka_unit_test(test_dovecot_v1_and_v2),
	    cmocka_unit_test(test_dovecot_malformed_lines_are_skipped),
	    cmocka_unit_test(test_dovecot_bad_header_imports_nothing),
	    cmocka_unit_test(test_courier),
	    cmocka_unit_test(test_plan_keeps_uids_above_next_uid),
	    cmocka_unit_test(test_plan_duplicate_names_and_uids),
	    cmocka_unit_test(test_plan_hostile_uidls_cannot_collide),
	    cmocka_unit_test(test_plan_refuses_the_end_of_the_uid_space),
	    cmocka_unit_test(test_random_input_never_breaks_the_rules),
	    cmocka_unit_test(test_map_round_trip_and_damage),
	    cmocka_unit_test_setup_teardown(test_open_imports_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_redoes_an_interrupted_import, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_open_never_repeats_a_finished_import, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_open_fails_when_the_old_list_cannot_be_read, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
