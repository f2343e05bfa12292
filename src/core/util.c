/* Small helpers every module uses: allocation, number and duration parsing, durable file work. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

static void *check_alloc(void *ptr)
{
	if (ptr == NULL) {
		fputs("buzon: out of memory\n", stderr);
		abort();
	}
	return ptr;
}

void *xmalloc(size_t size)
{
	return check_alloc(malloc(size == 0 ? 1 : size));
}

void *xcalloc(size_t count, size_t size)
{
	return check_alloc(calloc(count == 0 ? 1 : count, size == 0 ? 1 : size));
}

void *xrealloc(void *ptr, size_t size)
{
	return check_alloc(realloc(ptr, size == 0 ? 1 : size));
}

char *xstrdup(const char *s)
{
	return check_alloc(strdup(s));
}

char *xstrndup(const char *s, size_t n)
{
	return check_alloc(strndup(s, n));
}

char *xasprintf(const char *fmt, ...)
{
	va_list args;
	char *out = NULL;

	va_start(args, fmt);
	int ret = vasprintf(&out, fmt, args);
	va_end(args);
	if (ret < 0)
		check_alloc(NULL);
	return out;
}

void fatal(const char *fmt, ...)
{
	char msg[512];
	va_list args;

	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	log_error("fatal", "reason=%s", log_quote(msg));
	abort();
}

int str_parse_uint_n(const char *s, size_t len, unsigned long long min, unsigned long long max,
		     unsigned long long *value_r)
{
	unsigned long long value = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned digit = (unsigned)(s[i] - '0');
		/* value * 10 + digit <= max, written so that nothing can wrap */
		if (digit > max || value > (max - digit) / 10)
			return -1;
		value = value * 10 + digit;
	}
	if (value < min)
		return -1;
	*value_r = value;
	return 0;
}

int str_parse_uint(const char *s, unsigned long long min, unsigned long long max,
		   unsigned long long *value_r)
{
	return str_parse_uint_n(s, strlen(s), min, max, value_r);
}

int str_parse_duration(const char *s, unsigned int *seconds_r)
{
	static const struct {
		char suffix;
		unsigned long long factor;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	size_t len = strlen(s);
	unsigned long long factor = 1, value;
	char digits[32];

	if (len == 0 || len >= sizeof(digits))
		return -1;
	memcpy(digits, s, len + 1);
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (digits[len - 1] == units[i].suffix) {
			factor = units[i].factor;
			digits[len - 1] = '\0';
			break;
		}
	}
	if (str_parse_uint(digits, 0, 0xffffffffULL / factor, &value) < 0)
		return -1;
	*seconds_r = (unsigned int)(value * factor);
	return 0;
}

int str_parse_size(const char *s, uint64_t *bytes_r)
{
	static const char units[] = "KMGT";
	size_t len = strlen(s);
	unsigned long long value, factor = 1;

	if (len == 0)
		return -1;
	const char *unit = strchr(units, s[len - 1] & ~0x20);
	if (s[len - 1] >= 'A' && unit != NULL && *unit != '\0') {
		for (const char *u = units; u <= unit; u++)
			factor *= 1024;
		len--;
	}
	char digits[32];
	if (len == 0 || len >= sizeof(digits))
		return -1;
	memcpy(digits, s, len);
	digits[len] = '\0';
	if (str_parse_uint(digits, 0, UINT64_MAX / factor, &value) < 0)
		return -1;
	*bytes_r = value * factor;
	return 0;
}

int str_parse_bool(const char *s, bool *value_r)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*value_r = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*value_r = false;
			return 0;
		}
	}
	return -1;
}

char *str_trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' ||
			   s[len - 1] == '\n'))
		s[--len] = '\0';
	return s;
}

char *str_put_u64(char *p, uint64_t value)
{
	char digits[STR_U64_DIGITS_MAX];
	size_t n = 0;

	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + value % 10);
		value /= 10;
	} while (value != 0);
	memcpy(p, digits + sizeof(digits) - n, n);
	return p + n;
}

int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t ret = write(fd, p, len);
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += ret;
		len -= (size_t)ret;
	}
	return 0;
}

int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int ret = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return ret;
}

int mkdir_parents(const char *path, unsigned int mode)
{
	char *copy = xstrdup(path);
	size_t len = strlen(copy);

	for (size_t i = 1; i <= len; i++) {
		if (copy[i] != '/' && copy[i] != '\0')
			continue;
		char saved = copy[i];
		copy[i] = '\0';
		if (mkdir(copy, mode) < 0 && errno != EEXIST) {
			int err = errno;
			free(copy);
			errno = err;
			return -1;
		}
		copy[i] = saved;
	}
	free(copy);
	return 0;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if it is not one. */
size_t utf8_sequence_len(const unsigned char *s)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int64_t monotonic_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

time_t wall_now(void)
{
	const char *fixed = getenv("BUZON_TEST_NOW");
	unsigned long long seconds;

	if (fixed != NULL && str_parse_uint(fixed, 0, INT64_MAX, &seconds) == 0)
		return (time_t)seconds;
	return time(NULL);
}

void block_stop_signals(void)
{
	sigset_t stop_signals;

	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGUSR1);
	sigprocmask(SIG_BLOCK, &stop_signals, NULL);
}
