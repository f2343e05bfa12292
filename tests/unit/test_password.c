/* Unit tests for password schemes: known vectors from independent tools, round trips, errors. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/password.h"

/* Where each vector comes from, so that it can be recomputed:
 *  - SHA512/SHA256-CRYPT: `openssl passwd -6|-5 -salt …` (OpenSSL's own implementation); the
 *    "Hello world!" ones are also the examples in Drepper's SHA-crypt specification.
 *  - bcrypt "U*U": the OpenBSD bcrypt test vector ($2a$), same hash for $2b$/$2y$.
 *  - bcrypt/yescrypt "correct horse": `mkpasswd -m bcrypt|yescrypt` (Debian package whois).
 *  - ARGON2ID/ARGON2I: the reference implementation's CLI, `echo -n … | argon2 SALT -id|-i …`
 *    (Debian package argon2), not libsodium.
 *  - SHA256/SHA512/SSHA*: Python hashlib + base64 and `openssl dgst`, salt bytes 01..08.
 *  - SCRAM-SHA-1/256 "pencil": the salts and iteration counts of the RFC 5802 §5 and RFC 7677 §3
 *    examples; "correct horse": salt bytes 00..0f. StoredKey/ServerKey from Python
 *    hashlib.pbkdf2_hmac + hmac.
 *  - CRAM-MD5 "password": `doveadm pw -s CRAM-MD5` output quoted in public code; "correct horse":
 *    MD5 states computed by a separate Python MD5 written from RFC 1321. */
#define SCRAM256_CORRECT_HORSE                                                                     \
	"{SCRAM-SHA-256}4096,AAECAwQFBgcICQoLDA0ODw==,"                                            \
	"yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk=,"                                            \
	"RQZr9F8QCYmmp35tAVzp0VB/kDwY283N+s24jDDliG4="
#define SCRAM1_CORRECT_HORSE                                                                       \
	"{SCRAM-SHA-1}4096,AAECAwQFBgcICQoLDA0ODw==,2wGu+bKZ7zLh+iYzqvJq/NfiLx8=,"                 \
	"UjWfJQyA9t0McY5IIIiKTkidjZ0="
struct vector {
	const char *stored;
	const char *password;
};

static const struct vector good_vectors[] = {
    {"{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFN"
     "jnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
     "Hello world!"},
    {"{SHA512-CRYPT}$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oe"
     "qh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
     "Hello world!"},
    {"{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "Hello world!"},
    {"{SHA256-CRYPT}$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
     "Hello world!"},
    {"{CRYPT}$6$Ab12/.xy$0I9ufh13aw5qv4KlY0e4EaN2.UOBTn3MCm.WI6Sv6uklZekaQ.ztLVGoX"
     "U4RZgwj..C0C4HmIlNbhd5aymDSk.",
     "correct horse"},
    /* No prefix: a crypt string. */
    {"$6$Ab12/.xy$0I9ufh13aw5qv4KlY0e4EaN2.UOBTn3MCm.WI6Sv6uklZekaQ.ztLVGoXU4RZgwj"
     "..C0C4HmIlNbhd5aymDSk.",
     "correct horse"},
    {"{BLF-CRYPT}$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
    {"{BLF-CRYPT}$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
    {"{CRYPT}$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"},
    {"{BLF-CRYPT}$2b$05$OASwv0UMQiqnzuneXmpkpeqgg1nBaAG16AiCrvMiRyOdw7DJ7QJlW", "correct horse"},
    {"{YESCRYPT}$y$j9T$aQnA42PSvYAEgEb96OuXt0$VYALRViV6hulV8LoJ6Ch7B9pcXTzIV9jbDrLxjmQex2",
     "correct horse"},
    {"{CRYPT}$y$j9T$aQnA42PSvYAEgEb96OuXt0$VYALRViV6hulV8LoJ6Ch7B9pcXTzIV9jbDrLxjmQex2",
     "correct horse"},
    {"{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0MTIzNA$vWSoMy/UBm7S"
     "hOEEO3CVOYYYpe0ltdjB2r2WSXbPFfc",
     "correct horse"},
    {"{ARGON2ID}$argon2id$v=19$m=8192,t=1,p=4$c2FsdHNhbHRzYWx0MTIzNA$ObO0Z/O9bbDRH"
     "kNWwjP0XySsg3rXmq0NZguDbQft3AA",
     "correct horse"},
    {"{ARGON2I}$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0MTIzNA$CnJfmZTCZjXMTYE"
     "IjrTTQjThxqCJC7lqtM8889M7RTY",
     "correct horse"},
    {"{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=", "correct horse"},
    /* Dovecot also reads a hex digest of the right length. */
    {"{SHA256}4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631", "correct horse"},
    {"{SHA512}VraY3v7bWkNbY0r+MyC7rz/c2SC2xQOkRvx7endrKY1HnRumqLYXgI6wv1ec6aldZoNH"
     "vKtxSQhayTyyeZUZew==",
     "correct horse"},
    {"{SSHA256}CFsq5JPfiBQ0W3uR5Dnao+9mknEq9a739V+FPkJ6yjABAgMEBQYHCA==", "correct horse"},
    {"{SSHA512}ggObOJHDWCqgI5uFv/j9yDNYMvdTgt+Toj8d6cGrSG/e+E9GbH4DkQ8y5jY3NblhoGe"
     "ns+zNVX1mZaFy0qwRwwECAwQFBgcI",
     "correct horse"},
    {"{PLAIN}correct horse", "correct horse"},
    {"{CLEAR}correct horse", "correct horse"},
    {"{CLEARTEXT}correct horse", "correct horse"},
    /* Scheme names are case-insensitive. */
    {"{sha512-crypt}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFN"
     "jnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
     "Hello world!"},
    {"{Ssha256}CFsq5JPfiBQ0W3uR5Dnao+9mknEq9a739V+FPkJ6yjABAgMEBQYHCA==", "correct horse"},
    {"{plain}correct horse", "correct horse"},
    {"{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/fTE=",
     "pencil"},
    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
     "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
     "pencil"},
    {SCRAM256_CORRECT_HORSE, "correct horse"},
    {SCRAM1_CORRECT_HORSE, "correct horse"},
    {"{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740", "password"},
    {"{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29", "correct horse"},
    /* Several secrets in one field: the first known scheme decides. */
    {SCRAM256_CORRECT_HORSE " " SCRAM1_CORRECT_HORSE " {PLAIN}correct horse", "correct horse"},
    {"{FUTURE}abc {PLAIN}correct horse", "correct horse"},
    {"$6$Ab12/.xy$0I9ufh13aw5qv4KlY0e4EaN2.UOBTn3MCm.WI6Sv6uklZekaQ.ztLVGoXU4RZgwj"
     "..C0C4HmIlNbhd5aymDSk. {PLAIN}other",
     "correct horse"},
};

static void test_known_vectors_match(void **state)
{
	for (size_t i = 0; i < sizeof(good_vectors) / sizeof(good_vectors[0]); i++) {
		const char *error = NULL;
		int ret = password_verify(good_vectors[i].stored, good_vectors[i].password, &error);
		if (ret != 1)
			print_error("vector %zu (%s): ret=%d error=%s\n", i, good_vectors[i].stored,
				    ret, error != NULL ? error : "-");
		assert_int_equal(ret, 1);
	}
}

static void test_known_vectors_wrong_password(void **state)
{
	static const char *const wrong[] = {"", "Hello world", "correct horsE", "correct horse ",
					    "U*U*"};

	for (size_t i = 0; i < sizeof(good_vectors) / sizeof(good_vectors[0]); i++) {
		for (size_t j = 0; j < sizeof(wrong) / sizeof(wrong[0]); j++) {
			const char *error = NULL;
			if (strcmp(wrong[j], good_vectors[i].password) == 0)
				continue;
			int ret = password_verify(good_vectors[i].stored, wrong[j], &error);
			if (ret != 0)
				print_error("vector %zu with %s: ret=%d\n", i, wrong[j], ret);
			assert_int_equal(ret, 0);
		}
	}
}

static const char *const hashable_schemes[] = {
    "CRYPT",	"YESCRYPT",	 "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT",
    "ARGON2ID", "ARGON2I",	 "SHA256",	 "SHA512",	 "SSHA256",
    "SSHA512",	"PLAIN",	 "CLEAR",	 "CLEARTEXT",	 "yescrypt",
    "argon2id", "SCRAM-SHA-256", "SCRAM-SHA-1",	 "CRAM-MD5",	 "scram-sha-256",
};

static void assert_has_prefix(const char *s, const char *prefix)
{
	if (strncmp(s, prefix, strlen(prefix)) != 0)
		fail_msg("\"%s\" does not start with \"%s\"", s, prefix);
}

static void test_hash_round_trip(void **state)
{
	for (size_t i = 0; i < sizeof(hashable_schemes) / sizeof(hashable_schemes[0]); i++) {
		const char *error = NULL;
		assert_true(password_scheme_known(hashable_schemes[i]));
		char *stored = password_hash(hashable_schemes[i], "tr0ub4dor&3 ü", &error);
		assert_non_null(stored);
		assert_int_equal(password_verify(stored, "tr0ub4dor&3 ü", &error), 1);
		assert_int_equal(password_verify(stored, "tr0ub4dor&3 u", &error), 0);
		assert_int_equal(password_verify(stored, "", &error), 0);
		free(stored);
	}
}

static void test_hash_format(void **state)
{
	static const struct {
		const char *scheme, *prefix;
	} formats[] = {
	    {"CRYPT", "{CRYPT}$y$"},
	    {"YESCRYPT", "{YESCRYPT}$y$"},
	    {"SHA512-CRYPT", "{SHA512-CRYPT}$6$"},
	    {"SHA256-CRYPT", "{SHA256-CRYPT}$5$"},
	    {"BLF-CRYPT", "{BLF-CRYPT}$2b$"},
	    {"ARGON2ID", "{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=1$"},
	    {"ARGON2I", "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$"},
	    {"sha256", "{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE="},
	    {"SSHA256", "{SSHA256}"},
	    {"PLAIN", "{PLAIN}correct horse"},
	    {"SCRAM-SHA-256", "{SCRAM-SHA-256}4096,"},
	    {"scram-sha-1", "{SCRAM-SHA-1}4096,"},
	    {"CRAM-MD5",
	     "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29"},
	};

	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		const char *error = NULL;
		char *stored = password_hash(formats[i].scheme, "correct horse", &error);
		assert_non_null(stored);
		assert_has_prefix(stored, formats[i].prefix);
		free(stored);
	}
}

static void test_hash_salted_differs(void **state)
{
	static const char *const schemes[] = {"SSHA256", "SSHA512", "SHA512-CRYPT", "ARGON2ID",
					      "SCRAM-SHA-256"};
	const char *error = NULL;

	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		char *a = password_hash(schemes[i], "same", &error);
		char *b = password_hash(schemes[i], "same", &error);
		assert_non_null(a);
		assert_non_null(b);
		assert_string_not_equal(a, b);
		free(a);
		free(b);
	}
	/* 32-byte digest + 16-byte salt = 48 bytes = 64 base64 characters. */
	char *ssha = password_hash("SSHA256", "same", &error);
	assert_int_equal(strlen(ssha), strlen("{SSHA256}") + 64);
	free(ssha);
}

static void test_malformed(void **state)
{
	static const char *const malformed[] = {
	    "",
	    "{SHA256",
	    "{CRYPT}",
	    "{CRYPT}*0",
	    "*",
	    "{SHA512-CRYPT}$6$saltstring$tooshort",
	    "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFN"
	    "jnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1EXTRA",
	    "{BLF-CRYPT}$2b$05$short",
	    "{YESCRYPT}$y$$",
	    "{ARGON2ID}",
	    "{ARGON2ID}$argon2id$v=19$m=bad,t=2,p=1$c2FsdA$aGFzaA",
	    "{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA",
	    "{ARGON2ID}$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA$",
	    "{ARGON2ID}$argon2id$v=16$m=65536,t=2,p=1$c2FsdA$aGFzaA",
	    /* The name says id, the string says i. */
	    "{ARGON2ID}$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHRzYWx0MTIzNA$CnJfmZTCZjXMTY"
	    "EIjrTTQjThxqCJC7lqtM8889M7RTY",
	    "{ARGON2I}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0MTIzNA$vWSoMy/UBm7Sh"
	    "OEEO3CVOYYYpe0ltdjB2r2WSXbPFfc",
	    "{SHA256}",
	    "{SHA256}not base64!",
	    "{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7Vj",
	    "{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjEA",
	    "{SHA512}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=",
	    /* A salted digest needs at least one salt byte. */
	    "{SSHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE=",
	    "{SSHA512}",
	    "{PLAIN}",
	    "{SCRAM-SHA-256}",
	    "{SCRAM-SHA-256}4096,AAECAwQFBgcICQoLDA0ODw==,"
	    "yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk=",
	    "{SCRAM-SHA-256}0,AAECAwQFBgcICQoLDA0ODw==,yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk="
	    ","
	    "RQZr9F8QCYmmp35tAVzp0VB/kDwY283N+s24jDDliG4=",
	    "{SCRAM-SHA-256}x4096,AAECAwQFBgcICQoLDA0ODw==,"
	    "yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk=,"
	    "RQZr9F8QCYmmp35tAVzp0VB/kDwY283N+s24jDDliG4=",
	    "{SCRAM-SHA-256}4096,,yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk=,"
	    "RQZr9F8QCYmmp35tAVzp0VB/kDwY283N+s24jDDliG4=",
	    "{SCRAM-SHA-256}4096,AAECAwQFBgcICQoLDA0ODw==,"
	    "yERwYmHlx0VrpoYfOn54hMTjBUKWnmK42IDjnWgQWkk=,"
	    "RQZr9F8QCYmmp35tAVzp0VB/kDwY283N+s24jDDliG4=,extra",
	    /* SHA-1-sized keys under the SHA-256 name. */
	    "{SCRAM-SHA-256}4096,AAECAwQFBgcICQoLDA0ODw==,2wGu+bKZ7zLh+iYzqvJq/NfiLx8=,"
	    "UjWfJQyA9t0McY5IIIiKTkidjZ0=",
	    "{SCRAM-SHA-1}4096,AAECAwQFBgcICQoLDA0ODw==,2wGu+bKZ7zLh+iYzqvJq/NfiLx8,"
	    "UjWfJQyA9t0McY5IIIiKTkidjZ0=",
	    "{CRAM-MD5}",
	    "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d2",
	    "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d2x",
	    "{FOO}x {BAR}y",
	};

	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		const char *error = NULL;
		int ret = password_verify(malformed[i], "correct horse", &error);
		if (ret != -1)
			print_error("malformed %zu (%s): ret=%d\n", i, malformed[i], ret);
		assert_int_equal(ret, -1);
		assert_non_null(error);
	}
}

static void test_unknown_scheme(void **state)
{
	const char *error = NULL;

	assert_int_equal(password_verify("{FOO}bar", "bar", &error), -1);
	assert_string_equal(error, "unknown password scheme");
	error = NULL;
	assert_int_equal(password_verify("{}bar", "bar", &error), -1);
	assert_non_null(error);
	error = NULL;
	assert_int_equal(password_verify("{PLAINX}bar", "bar", &error), -1);
	assert_non_null(error);
	error = NULL;
	assert_null(password_hash("FOO", "bar", &error));
	assert_non_null(error);
	assert_false(password_scheme_known("FOO"));
	assert_false(password_scheme_known(""));
	assert_false(password_scheme_known("{PLAIN}"));
	assert_true(password_scheme_known("blf-crypt"));
}

static void test_plaintext_detection(void **state)
{
	assert_true(password_scheme_is_plaintext("{PLAIN}x"));
	assert_true(password_scheme_is_plaintext("{clear}x"));
	assert_true(password_scheme_is_plaintext("{CLEARTEXT}x"));
	assert_false(
	    password_scheme_is_plaintext("{SHA256}QQTTb42iwlQ0n4WDZ5Pr4CngyVcGOjTJHC6SAxh7VjE="));
	assert_false(password_scheme_is_plaintext("$6$salt$hash"));
	assert_false(password_scheme_is_plaintext("{FOO}x"));
	assert_false(password_scheme_is_plaintext("{PLAIN"));
	assert_true(password_scheme_is_plaintext(SCRAM256_CORRECT_HORSE " {PLAIN}x y"));
	assert_false(password_scheme_is_plaintext(SCRAM256_CORRECT_HORSE " " SCRAM1_CORRECT_HORSE));
}

static void test_field_parts(void **state)
{
	static const char field[] = SCRAM256_CORRECT_HORSE " " SCRAM1_CORRECT_HORSE " {PLAIN}a b";
	struct password_part part;
	const char *pos = field;
	size_t count = 0;

	while (password_field_next(&pos, &part))
		count++;
	assert_int_equal(count, 3);
	assert_true(password_field_find(field, "scram-sha-1", &part));
	assert_int_equal(part.scheme_len, strlen("SCRAM-SHA-1"));
	assert_memory_equal(part.data, "4096,AAEC", 9);
	assert_int_equal(part.data_len, strlen(SCRAM1_CORRECT_HORSE) - strlen("{SCRAM-SHA-1}"));
	assert_true(password_field_find_plaintext(field, &part));
	assert_int_equal(part.data_len, 3);
	assert_memory_equal(part.data, "a b", 3);
	assert_false(password_field_find(field, "CRAM-MD5", &part));
	assert_false(password_field_find(field, "SCRAM-SHA", &part));
	/* A prefix-less first secret is a crypt string. */
	pos = "$6$x$y {PLAIN}z";
	assert_true(password_field_next(&pos, &part));
	assert_null(part.scheme);
	assert_int_equal(part.data_len, 6);
	assert_true(password_field_next(&pos, &part));
	assert_true(password_part_is_plaintext(&part));
	assert_false(password_field_next(&pos, &part));
}

static void test_hash_multi(void **state)
{
	static const char *const schemes[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-1"};
	const char *error = NULL;
	struct password_part part;

	char *field = password_hash_multi(schemes, 3, "pass word", &error);
	assert_non_null(field);
	/* The plaintext secret goes last, whatever the order asked. */
	assert_has_prefix(field, "{SCRAM-SHA-256}4096,");
	assert_non_null(strstr(field, " {SCRAM-SHA-1}4096,"));
	assert_string_equal(field + strlen(field) - strlen(" {PLAIN}pass word"),
			    " {PLAIN}pass word");
	assert_int_equal(password_verify(field, "pass word", &error), 1);
	assert_int_equal(password_verify(field, "pass", &error), 0);
	assert_true(password_field_find(field, "SCRAM-SHA-1", &part));
	char alone[256];
	snprintf(alone, sizeof(alone), "{SCRAM-SHA-1}%.*s", (int)part.data_len, part.data);
	assert_int_equal(password_verify(alone, "pass word", &error), 1);
	free(field);

	static const char *const two_plain[] = {"PLAIN", "CLEAR"};
	assert_null(password_hash_multi(two_plain, 2, "x", &error));
	static const char *const unknown[] = {"SCRAM-SHA-256", "FOO"};
	error = NULL;
	assert_null(password_hash_multi(unknown, 2, "x", &error));
	assert_non_null(error);
	assert_null(password_hash_multi(schemes, 0, "x", &error));
}

static void test_long_password(void **state)
{
	char long_password[2048];
	const char *error = NULL;

	memset(long_password, 'a', sizeof(long_password) - 1);
	long_password[sizeof(long_password) - 1] = '\0';
	/* Too long for libcrypt: a mismatch, not an error, since the stored string is fine. */
	assert_int_equal(password_verify(good_vectors[0].stored, long_password, &error), 0);
	assert_null(password_hash("SHA512-CRYPT", long_password, &error));
	assert_non_null(error);
	char *stored = password_hash("SSHA512", long_password, &error);
	assert_non_null(stored);
	assert_int_equal(password_verify(stored, long_password, &error), 1);
	free(stored);
}

#define THREAD_COUNT  4
#define THREAD_ROUNDS 5

static void *verify_thread(void *arg)
{
	intptr_t failures = 0;

	for (int round = 0; round < THREAD_ROUNDS; round++) {
		for (size_t i = 0; i < 12; i++) {
			const char *error = NULL;
			if (password_verify(good_vectors[i].stored, good_vectors[i].password,
					    &error) != 1)
				failures++;
			if (password_verify(good_vectors[i].stored, "nope", &error) != 0)
				failures++;
		}
	}
	return (void *)failures;
}

/* The auth process verifies from several threads: crypt state must not be shared. */
static void test_threads(void **state)
{
	pthread_t threads[THREAD_COUNT];

	for (int i = 0; i < THREAD_COUNT; i++)
		assert_int_equal(pthread_create(&threads[i], NULL, verify_thread, NULL), 0);
	for (int i = 0; i < THREAD_COUNT; i++) {
		void *failures;
		assert_int_equal(pthread_join(threads[i], &failures), 0);
		assert_int_equal((intptr_t)failures, 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_vectors_match),
	    cmocka_unit_test(test_known_vectors_wrong_password),
	    cmocka_unit_test(test_hash_round_trip),
	    cmocka_unit_test(test_hash_format),
	    cmocka_unit_test(test_hash_salted_differs),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_unknown_scheme),
	    cmocka_unit_test(test_plaintext_detection),
	    cmocka_unit_test(test_field_parts),
	    cmocka_unit_test(test_hash_multi),
	    cmocka_unit_test(test_long_password),
	    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
