/* Small helpers every module uses: allocation that cannot fail silently, bounded string work. */
#ifndef BUZON_CORE_UTIL_H
#define BUZON_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

#define BUZON_VERSION "0.1.0"
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation failures end the process: a server that runs out of memory halfway through a
 * protocol step cannot answer honestly, and the master restarts the worker. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Formats into newly allocated memory; never returns NULL. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Frees *ptr and sets it to NULL, so a dangling pointer cannot be used twice. */
#define x_free(pptr)                                                                               \
	do {                                                                                       \
		free(*(pptr));                                                                     \
		*(pptr) = NULL;                                                                    \
	} while (0)

/* Logs a fatal message and aborts: for broken invariants only, never for bad input. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Parses the len bytes at s as a decimal number in [min, max]; returns -1 on any noise, sign or
 * overflow. */
int str_parse_uint_n(const char *s, size_t len, unsigned long long min, unsigned long long max,
		     unsigned long long *value_r);

/* Parses a whole decimal number in [min, max]; returns -1 on any noise, sign or overflow. */
int str_parse_uint(const char *s, unsigned long long min, unsigned long long max,
		   unsigned long long *value_r);

/* Parses a duration such as "600", "90s", "10m", "2h", "7d" into seconds. Returns -1 if invalid. */
int str_parse_duration(const char *s, unsigned int *seconds_r);

/* Parses a size such as "0", "512", "10K", "50M", "2G", "1T" (powers of 1024) into bytes.
 * Returns -1 if invalid. */
int str_parse_size(const char *s, uint64_t *bytes_r);

/* Parses yes/no/true/false/on/off/1/0. Returns -1 if invalid. */
int str_parse_bool(const char *s, bool *value_r);

/* Strips leading and trailing blanks in place; returns s moved past the leading ones. */
char *str_trim(char *s);

/* The longest decimal form of a uint64_t. */
#define STR_U64_DIGITS_MAX 20

/* Writes value in decimal at p (at most STR_U64_DIGITS_MAX bytes, no NUL) and returns the end.
 * For hot loops that format hundreds of thousands of numbers, where printf's format parsing
 * dominated the profile (UIDL listings, the UID index). */
char *str_put_u64(char *p, uint64_t value);

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if it is not one (overlong forms,
 * surrogates and code points past U+10FFFF included). Reads no further than a NUL. */
size_t utf8_sequence_len(const unsigned char *s);

/* Writes the whole buffer to fd, retrying on EINTR and short writes. Returns -1 on error. */
int write_full(int fd, const void *buf, size_t len);

/* fsync()s the directory at path so that a rename or unlink inside it survives a crash. */
int fsync_dir(const char *path);

/* Creates dir and missing parents with mode. Returns -1 and sets errno on failure. */
int mkdir_parents(const char *path, unsigned int mode);

/* Milliseconds of CLOCK_MONOTONIC: for durations and deadlines, which must not jump when the
 * wall clock is set. */
int64_t monotonic_ms(void);

/* Wall-clock seconds since the epoch, for times that are stored (last login, retrieval and
 * deletion times). Test hook, inert unless set in the environment: BUZON_TEST_NOW=SECONDS makes it
 * return that fixed value instead, so that tests of delays and retention periods need not wait. */
time_t wall_now(void);

/* Blocks SIGTERM, SIGINT and SIGUSR1 for good. For a child whose event loop has ended: it is on its
 * way out, and a stop signal arriving now (the master signals every child when it stops) must not
 * kill it half-way through its clean-up, as it would once libevent has put the default handlers
 * back. */
void block_stop_signals(void);

#endif
