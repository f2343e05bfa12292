/* Fuzzes the UIDL index reader (src/store/uidlist.c, formats 1 to 3) with the whole file as input.
 * Checks the rules the index promises (uidlist.h): next_uid above every UID, no UID or base name
 * twice, only names the format can hold; that what it writes reads back unchanged and undamaged
 * (so a save never loses a UID); and that lookups, additions and sweeps keep those rules. */
#include "fuzz_common.h"
#include "store/uidlist.h"

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Base names are unique too: a lookup finds each entry, and an entry is found by one name only. */
static void check_rules(struct uidlist *list)
{
	FUZZ_CHECK(list->next_uid >= 1 && list->next_uid <= (uint64_t)UIDLIST_UID_MAX + 1);
	/* the first lookup sorts the entries by name: do it before walking them by index */
	(void)uidlist_lookup(list, "-", 1);
	for (size_t i = 0; i < list->count; i++) {
		const struct uidlist_entry *e = &list->entries[i];
		FUZZ_CHECK(e->uid >= 1 && e->uid < list->next_uid);
		FUZZ_CHECK(uidlist_basename_valid(e->basename, strlen(e->basename)));
		FUZZ_CHECK(e->info == NULL || uidlist_info_valid(e->info, strlen(e->info)));
		/* the name leads to this entry and no other */
		const struct uidlist_entry *found =
		    uidlist_lookup(list, e->basename, strlen(e->basename));
		FUZZ_CHECK(found != NULL && found->uid == e->uid);
	}
	/* no UID twice: sort a copy of them */
	uint32_t *uids = xcalloc(list->count + 1, sizeof(*uids));
	for (size_t i = 0; i < list->count; i++)
		uids[i] = list->entries[i].uid;
	qsort(uids, list->count, sizeof(*uids), uid_cmp);
	for (size_t i = 1; i < list->count; i++)
		FUZZ_CHECK(uids[i - 1] != uids[i]);
	free(uids);
}

/* Every entry of a is in b with the same UID, sizes, times and info, and nothing else is. */
static void check_same(struct uidlist *a, struct uidlist *b)
{
	FUZZ_CHECK(a->uidvalidity == b->uidvalidity && a->next_uid == b->next_uid);
	FUZZ_CHECK(a->count == b->count);
	FUZZ_CHECK(a->stamp.valid == b->stamp.valid);
	if (a->stamp.valid)
		FUZZ_CHECK(a->stamp.cur_mtime.tv_sec == b->stamp.cur_mtime.tv_sec &&
			   a->stamp.cur_mtime.tv_nsec == b->stamp.cur_mtime.tv_nsec &&
			   a->stamp.new_mtime.tv_sec == b->stamp.new_mtime.tv_sec &&
			   a->stamp.new_mtime.tv_nsec == b->stamp.new_mtime.tv_nsec);
	for (size_t i = 0; i < a->count; i++) {
		const struct uidlist_entry *x = &a->entries[i];
		const struct uidlist_entry *y = uidlist_lookup(b, x->basename, strlen(x->basename));
		FUZZ_CHECK(y != NULL && y->uid == x->uid && y->crlf_size == x->crlf_size &&
			   y->file_size == x->file_size);
		FUZZ_CHECK(y->retrieved_at == x->retrieved_at && y->deleted_at == x->deleted_at);
		FUZZ_CHECK((x->info == NULL) == (y->info == NULL));
		FUZZ_CHECK(x->info == NULL || strcmp(x->info, y->info) == 0);
	}
}

/* What a mailbox open does with the list: a new message, a flag change, a sweep. */
static void check_upkeep(struct uidlist *list)
{
	uint64_t next_uid = list->next_uid;
	char name[64];
	uint32_t uid;

	snprintf(name, sizeof(name), "fuzz-new.%zu", list->count);
	if (uidlist_lookup(list, name, strlen(name)) == NULL) {
		int ret = uidlist_add(list, name, strlen(name), 10, 9, &uid);
		FUZZ_CHECK((ret == 0) == (next_uid <= UIDLIST_UID_MAX));
		if (ret == 0) {
			FUZZ_CHECK(uid == next_uid && list->next_uid == next_uid + 1);
			struct uidlist_entry *e = uidlist_lookup(list, name, strlen(name));
			FUZZ_CHECK(e != NULL && e->uid == uid && e->info == NULL);
			FUZZ_CHECK(uidlist_entry_set_info(e, "2,S", 3));
			FUZZ_CHECK(!uidlist_entry_set_info(e, "2,S", 3));
			FUZZ_CHECK(strcmp(e->info, "2,S") == 0 && strcmp(e->basename, name) == 0);
		}
	}
	size_t before = list->count, kept = 0;
	uidlist_mark_all(list, false);
	for (size_t i = 0; i < list->count; i += 2) {
		list->entries[i].present = true;
		kept++;
	}
	next_uid = list->next_uid;
	FUZZ_CHECK(uidlist_sweep(list) == before - kept && list->count == kept);
	FUZZ_CHECK(list->next_uid == next_uid); /* swept UIDs are never handed out again */
	check_rules(list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool damaged, damaged_again;
	struct uidlist *list = uidlist_parse((const char *)data, size, &damaged);

	check_rules(list);
	if (list->uidvalidity == 0) {
		FUZZ_CHECK(damaged);   /* no header and no trailer is damage */
		list->uidvalidity = 1; /* what uidlist_load() does (with the current time) */
	}
	size_t len, len_again;
	char *text = uidlist_format(list, &len);
	FUZZ_CHECK(strlen(text) == len);
	struct uidlist *again = uidlist_parse(text, len, &damaged_again);
	FUZZ_CHECK(!damaged_again);
	check_same(list, again);
	char *text_again = uidlist_format(again, &len_again);
	FUZZ_CHECK(len_again == len && memcmp(text, text_again, len) == 0);

	check_upkeep(again);
	free(text);
	free(text_again);
	uidlist_free(&again);
	uidlist_free(&list);
	FUZZ_CHECK(list == NULL);
	return 0;
}
