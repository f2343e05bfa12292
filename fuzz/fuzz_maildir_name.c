/* Fuzzes the Maildir file-name parsers (src/store/maildir.c via maildir_testing.h): base name,
 * ",S=" and ",W=" sizes, ":2," flags. Input: byte 0 picks a flag to add, the rest is a file name
 * (cut at a NUL, as readdir() would give it). Checks that base and info split at the first ':',
 * that a plausible name is one the UID index can store (otherwise its message could never get a
 * UID), that a size is read back exactly as its digits say, and that adding a flag changes only
 * the flags, keeps them sorted and unique, and is idempotent. */
#include <inttypes.h>

#include "fuzz_common.h"
#include "store/maildir_testing.h"
#include "store/uidlist.h"

#define NAME_MAX_FUZZ 300

static void check_size(const char *name, size_t base_len, char key)
{
	char needle[4] = {',', key, '=', '\0'};
	uint64_t size;
	bool found = maildir_name_get_size(name, base_len, key, &size);
	const char *first = NULL;

	for (size_t i = 0; i + 3 <= base_len && first == NULL; i++) {
		if (memcmp(name + i, needle, 3) == 0)
			first = name + i;
	}
	if (first == NULL) {
		FUZZ_CHECK(!found);
		return;
	}
	const char *digits = first + 3, *end = name + base_len;
	size_t n = 0;
	while (digits + n < end && digits[n] >= '0' && digits[n] <= '9')
		n++;
	bool well_formed = n > 0 && (digits + n == end || digits[n] == ',');
	if (!well_formed) {
		FUZZ_CHECK(!found); /* only the first ",S=" counts */
		return;
	}
	if (!found)
		return; /* too big to be a real size; where the cut-off lies is the parser's choice
			 */
	FUZZ_CHECK(size != UIDLIST_SIZE_UNKNOWN);
	/* the value must print back as the digits without their leading zeros */
	while (n > 1 && digits[0] == '0') {
		digits++;
		n--;
	}
	char printed[32];
	int len = snprintf(printed, sizeof(printed), "%" PRIu64, size);
	FUZZ_CHECK((size_t)len == n && memcmp(printed, digits, n) == 0);
}

static void check_add_flag(const char *name, const char *info, size_t base_len, char flag)
{
	char *flagged = maildir_name_add_flag(name, flag);

	if (flagged == NULL) {
		FUZZ_CHECK(info != NULL &&
			   (strncmp(info, ":2,", 3) != 0 || strchr(info + 3, flag) != NULL));
		return;
	}
	/* same base, ":2," info, one more octet: the flag, at its sorted place */
	const char *new_info = maildir_name_info(flagged);
	FUZZ_CHECK(maildir_name_base_len(flagged) == base_len &&
		   memcmp(flagged, name, base_len) == 0);
	FUZZ_CHECK(new_info != NULL && strncmp(new_info, ":2,", 3) == 0);
	const char *old_flags = info != NULL ? info + 3 : "";
	const char *new_flags = new_info + 3;
	FUZZ_CHECK(strlen(new_flags) == strlen(old_flags) + 1);
	const char *pos = strchr(new_flags, flag);
	FUZZ_CHECK(pos != NULL);
	size_t at = (size_t)(pos - new_flags);
	FUZZ_CHECK(memcmp(new_flags, old_flags, at) == 0 && strcmp(pos + 1, old_flags + at) == 0);
	for (size_t i = 0; i < at; i++)
		FUZZ_CHECK((unsigned char)new_flags[i] < (unsigned char)flag);
	FUZZ_CHECK(pos[1] == '\0' || (unsigned char)pos[1] > (unsigned char)flag);
	char *again = maildir_name_add_flag(flagged, flag);
	FUZZ_CHECK(again == NULL); /* a flag is never added twice */
	free(flagged);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size};
	static const char flags[] = "SDFPRT";
	uint8_t pick = fuzz_take_byte(&in, 0);
	char flag = pick < 0xf0 ? flags[pick % (sizeof(flags) - 1)] : (char)(pick & 0x7f);
	char name[NAME_MAX_FUZZ + 1];
	size_t len = in.len < NAME_MAX_FUZZ ? in.len : NAME_MAX_FUZZ;

	if (flag == '\0')
		flag = 'S';
	memcpy(name, in.data, len);
	name[len] = '\0';
	len = strlen(name);

	const char *info = maildir_name_info(name);
	size_t base_len = maildir_name_base_len(name);
	FUZZ_CHECK(info == strchr(name, ':'));
	FUZZ_CHECK(base_len == (info != NULL ? (size_t)(info - name) : len));

	if (maildir_name_plausible(name)) {
		FUZZ_CHECK(name[0] != '.' && len <= UIDLIST_BASENAME_MAX);
		FUZZ_CHECK(uidlist_basename_valid(name, base_len));
		FUZZ_CHECK(info == NULL || uidlist_info_valid(info + 1, strlen(info + 1)));
	} else {
		bool bad_byte = false;
		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)name[i];
			bad_byte |= c <= ' ' || c == 0x7f || c == '/';
		}
		FUZZ_CHECK(name[0] == '.' || len > UIDLIST_BASENAME_MAX || bad_byte ||
			   base_len == 0);
	}
	check_size(name, base_len, 'S');
	check_size(name, base_len, 'W');
	check_add_flag(name, info, base_len, flag);
	return 0;
}
