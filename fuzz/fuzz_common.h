/* What the libFuzzer targets share: invariant checks that stop the fuzzer, a cursor over the input,
 * and scratch directories on a tmpfs (several targets write files for every input, and fsync() on
 * a disk would make them a hundred times slower). Header-only: each target is one program. */
#ifndef BUZON_FUZZ_COMMON_H
#define BUZON_FUZZ_COMMON_H

#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken invariant is a bug even when no memory was harmed: trap so that libFuzzer saves the
 * input as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__,         \
				__LINE__);                                                         \
			__builtin_trap();                                                          \
		}                                                                                  \
	} while (0)

/* Consumes the input from the front. */
struct fuzz_input {
	const uint8_t *data;
	size_t len;
};

/* The next byte, or fallback when the input is used up. */
static inline uint8_t fuzz_take_byte(struct fuzz_input *in, uint8_t fallback)
{
	if (in->len == 0)
		return fallback;
	in->len--;
	return *in->data++;
}

/* Up to max bytes for the next chunk of a stream, at least 1 (the input must not be empty): the
 * sizes come from a small generator seeded by the input, so that one input always splits the same
 * way and the fuzzer can still reach every split by changing the seed byte. */
static inline size_t fuzz_chunk_len(uint32_t *state, size_t left, size_t max)
{
	*state = *state * 1103515245u + 12345u;
	size_t len = 1 + (size_t)((*state >> 16) % max);

	return len < left ? len : left;
}

static inline int fuzz_remove_entry(const char *path, const struct stat *st, int flag,
				    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes path and everything below it. */
static inline void fuzz_remove_tree(const char *path)
{
	(void)nftw(path, fuzz_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes a new private directory for this process, on /dev/shm when there is one (tmpfs: fsync is
 * free), else under TMPDIR or /tmp. Returns it newly allocated. */
static inline char *fuzz_scratch_dir(const char *tag)
{
	const char *base = getenv("FUZZ_TMPDIR");

	if (base == NULL)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (base == NULL)
		base = "/tmp";
	char *dir = xasprintf("%s/buzon-fuzz-%s-XXXXXX", base, tag);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		abort();
	}
	return dir;
}

/* Writes len bytes to path (created or truncated); aborts on failure, which is the harness's. */
static inline void fuzz_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "w");

	if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		abort();
	}
}

/* Reads the whole file at path into newly allocated memory (NUL-terminated); NULL if missing. */
static inline char *fuzz_read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "r");
	char *data = NULL;
	size_t len = 0, alloc = 0, n;

	if (f == NULL)
		return NULL;
	do {
		if (alloc - len < 4096) {
			alloc = alloc * 2 + 4096;
			data = xrealloc(data, alloc);
		}
		n = fread(data + len, 1, alloc - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	data[len] = '\0';
	*len_r = len;
	return data;
}

/* Loads a config from text (written to dir/buzon.conf), so that every option a target does not
 * set has its real default; aborts if it does not load. */
static inline struct buzon_config *fuzz_config_load(const char *dir, const char *text)
{
	char *path = xasprintf("%s/buzon.conf", dir), *error = NULL;

	fuzz_write_file(path, text, strlen(text));
	struct buzon_config *config = config_load(path, &error);
	if (config == NULL) {
		fprintf(stderr, "fuzz config: %s\n", error);
		abort();
	}
	free(path);
	return config;
}

#endif
