/* `buzon user add|passwd|del|list` edits the passwd file; `buzon hash` prints a new secret. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/passwd_file.h"
#include "auth/password.h"
#include "auth/saslprep.h"
#include "auth/scheme_policy.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/util.h"

/* Longest password read: past any real passphrase, and the buffer lives on the stack. */
#define CLI_PASSWORD_MAX 1024
/* The longest password a POP3 client can send: SASL PLAIN's limit (RFC 4616 §2). Longer input is
 * read (so the error is clear) and refused. */
#define CLI_LOGIN_PASSWORD_MAX 255
/* What `buzon hash` uses without --scheme, the same as the config's default_scheme default. */
#define CLI_HASH_DEFAULT_SCHEME "YESCRYPT"

#define CLI_EXIT_OK   0
#define CLI_EXIT_FAIL 1

struct user_options {
	const char *config_path;
	const char *scheme; /* NULL: the config's default_scheme */
	bool password_stdin;
	const char *action;
	const char *user;
	char
	    *user_prepared; /* the name after SASLprep, which user points to; freed by the caller */
};

struct user_action {
	const char *name;
	bool needs_user;
	bool takes_password; /* --scheme and --password-stdin apply */
	int (*run)(const struct user_options *opts, const struct buzon_config *config);
};

static const char user_usage_text[] =
    "usage: buzon user add [-c FILE] [--scheme S] [--password-stdin] USER\n"
    "       buzon user passwd [-c FILE] [--scheme S] [--password-stdin] USER\n"
    "       buzon user del [-c FILE] USER\n"
    "       buzon user list [-c FILE]\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  --scheme S          password scheme (default: [auth] default_scheme)\n"
    "  --password-stdin    read the password from one line of standard input\n";

static const char hash_usage_text[] =
    "usage: buzon hash [--scheme S] [--password-stdin]\n"
    "  --scheme S          password scheme (default " CLI_HASH_DEFAULT_SCHEME ")\n"
    "  --password-stdin    read the password from one line of standard input\n";

enum cli_option { CLI_OPTION_SCHEME = 256, CLI_OPTION_PASSWORD_STDIN };

static int cli_usage_error(const char *usage, const char *message, const char *arg)
{
	fprintf(stderr, "buzon: %s%s%s\n%s", message, arg != NULL ? ": " : "",
		arg != NULL ? arg : "", usage);
	return EX_USAGE;
}

static int cli_fail(const char *message, const char *detail)
{
	fprintf(stderr, "buzon: %s%s%s\n", message, detail != NULL ? ": " : "",
		detail != NULL ? detail : "");
	return CLI_EXIT_FAIL;
}

/* Saved while echo is off, so that a signal handler can put the terminal back. */
static struct termios cli_tty_saved;
static volatile sig_atomic_t cli_tty_fd = -1;
static const int cli_tty_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void cli_tty_signal_handler(int sig)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};

	if (cli_tty_fd >= 0)
		tcsetattr(cli_tty_fd, TCSAFLUSH, &cli_tty_saved);
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

static void cli_tty_echo_restore(int fd, const struct sigaction old[])
{
	tcsetattr(fd, TCSAFLUSH, &cli_tty_saved);
	cli_tty_fd = -1;
	for (size_t i = 0; i < ARRAY_SIZE(cli_tty_signals); i++)
		sigaction(cli_tty_signals[i], &old[i], NULL);
}

/* Turns echo off until cli_tty_echo_restore(); a signal meanwhile restores it too. */
static int cli_tty_echo_off(int fd, struct sigaction old[])
{
	struct sigaction handler = {.sa_handler = cli_tty_signal_handler};
	struct termios quiet;

	if (tcgetattr(fd, &cli_tty_saved) < 0)
		return -1;
	quiet = cli_tty_saved;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
	cli_tty_fd = fd;
	for (size_t i = 0; i < ARRAY_SIZE(cli_tty_signals); i++)
		sigaction(cli_tty_signals[i], &handler, &old[i]);
	if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0) {
		cli_tty_echo_restore(fd, old);
		return -1;
	}
	return 0;
}

/* Reads one line from fd byte by byte, without stdio, so that no copy of the password stays in a
 * FILE buffer and nothing past the line is consumed. Strips LF or CRLF. */
static int cli_read_line(int fd, char *buf, size_t size, const char **error_r)
{
	size_t len = 0;
	char c;

	for (;;) {
		ssize_t ret = read(fd, &c, 1);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			*error_r = strerror(errno);
			return -1;
		}
		if (ret == 0 || c == '\n')
			break;
		if (c == '\0' || len + 1 >= size) {
			*error_r = c == '\0' ? "password contains a NUL byte" : "password too long";
			return -1;
		}
		buf[len++] = c;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return 0;
}

static int cli_tty_prompt(int fd, const char *prompt, char *buf, size_t size, const char **error_r)
{
	if (write_full(fd, prompt, strlen(prompt)) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	int ret = cli_read_line(fd, buf, size, error_r);
	/* The user's Enter was not echoed. */
	(void)write_full(fd, "\n", 1);
	return ret;
}

/* Asks twice on the terminal with echo off and refuses a mismatch. */
static int cli_read_password_tty(char *buf, size_t size, const char **error_r)
{
	char again[CLI_PASSWORD_MAX + 1];
	struct sigaction old[ARRAY_SIZE(cli_tty_signals)];
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		*error_r = "no terminal to ask for the password (use --password-stdin)";
		return -1;
	}
	int ret = -1;
	if (cli_tty_echo_off(fd, old) < 0) {
		*error_r = "cannot turn off terminal echo";
		close(fd);
		return -1;
	}
	if (cli_tty_prompt(fd, "Password: ", buf, size, error_r) == 0 &&
	    cli_tty_prompt(fd, "Retype password: ", again, sizeof(again), error_r) == 0) {
		ret = strcmp(buf, again) == 0 ? 0 : -1;
		if (ret < 0)
			*error_r = "passwords do not match";
	}
	cli_tty_echo_restore(fd, old);
	close(fd);
	sodium_memzero(again, sizeof(again));
	return ret;
}

/* Fills buf (CLI_PASSWORD_MAX + 1 bytes) with a non-empty password. */
static int cli_read_password(bool from_stdin, char *buf, size_t size, const char **error_r)
{
	int ret = from_stdin ? cli_read_line(STDIN_FILENO, buf, size, error_r)
			     : cli_read_password_tty(buf, size, error_r);

	if (ret == 0 && buf[0] == '\0') {
		*error_r = "empty password refused";
		ret = -1;
	}
	if (ret < 0)
		sodium_memzero(buf, size);
	return ret;
}

/* Reads a password and hashes it into a newly allocated "{SCHEME}…" secret (scheme NULL: what
 * the config's policy asks for), or NULL after printing why. */
static char *cli_make_secret(const struct buzon_config *config, const char *scheme, bool from_stdin)
{
	char password[CLI_PASSWORD_MAX + 1];
	const char *error;
	char *secret = NULL;

	if (cli_read_password(from_stdin, password, sizeof(password), &error) < 0) {
		cli_fail(error, NULL);
		return NULL;
	}
	/* RFC 4616 and a 255-octet PASS line: a longer password could never be used to log in */
	if (strlen(password) > CLI_LOGIN_PASSWORD_MAX) {
		sodium_memzero(password, sizeof(password));
		cli_fail("passwords longer than 255 octets cannot be sent by POP3 clients", NULL);
		return NULL;
	}
	/* stored as SASLprep (RFC 4013) makes it, so that any client's form of it matches */
	char *prepared = NULL;
	if (saslprep(password, true, &prepared) < 0) {
		sodium_memzero(password, sizeof(password));
		cli_fail("the password holds characters SASLprep (RFC 4013) forbids", NULL);
		return NULL;
	}
	snprintf(password, sizeof(password), "%s", prepared);
	sodium_memzero(prepared, strlen(prepared));
	free(prepared);
	secret = scheme != NULL ? password_hash(scheme, password, &error)
				: scheme_policy_hash(config, password, &error);
	sodium_memzero(password, sizeof(password));
	if (secret == NULL)
		cli_fail("hashing failed", error);
	return secret;
}

static void cli_secret_free(char **secret)
{
	/* A PLAIN secret is the password. */
	if (*secret != NULL)
		sodium_memzero(*secret, strlen(*secret));
	x_free(secret);
}

/* Whether user is in path, so that add/passwd fail before asking for a password. A missing
 * file has no users. */
static int cli_user_exists(const char *path, const char *user, bool *exists_r)
{
	struct passwd_db db;
	char *error = NULL;

	if (passwd_db_load(path, &db, NULL, NULL, &error) < 0) {
		/* the load's own errno (ENOENT only for a failed open): asking access() afterwards
		 * raced with a parallel `user add` creating the file in between */
		if (errno == ENOENT) {
			free(error);
			*exists_r = false;
			return 0;
		}
		cli_fail(error, NULL);
		free(error);
		return -1;
	}
	*exists_r = passwd_db_lookup(&db, user) != NULL;
	passwd_db_free(&db);
	return 0;
}

static int user_set_secret(const struct user_options *opts, const struct buzon_config *config,
			   bool add)
{
	const char *path = config->passwd_file;
	const char *scheme = opts->scheme;
	char *error = NULL;
	bool exists;

	if (scheme != NULL && !password_scheme_known(scheme))
		return cli_fail("unknown password scheme", scheme);
	if (cli_user_exists(path, opts->user, &exists) < 0)
		return CLI_EXIT_FAIL;
	if (exists && add)
		return cli_fail("user already exists", opts->user);
	if (!exists && !add)
		return cli_fail("no such user", opts->user);

	char *secret = cli_make_secret(config, scheme, opts->password_stdin);
	if (secret == NULL)
		return CLI_EXIT_FAIL;
	int ret = passwd_file_set(path, opts->user, secret, add, &error);
	cli_secret_free(&secret);
	if (ret < 0) {
		cli_fail(error, NULL);
		free(error);
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

static int user_action_add(const struct user_options *opts, const struct buzon_config *config)
{
	return user_set_secret(opts, config, true);
}

static int user_action_passwd(const struct user_options *opts, const struct buzon_config *config)
{
	return user_set_secret(opts, config, false);
}

static int user_action_del(const struct user_options *opts, const struct buzon_config *config)
{
	char *error = NULL;

	if (passwd_file_delete(config->passwd_file, opts->user, &error) < 0) {
		cli_fail(error, NULL);
		free(error);
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

static void user_list_report(void *context, unsigned int line, const char *message)
{
	fprintf(stderr, "buzon: warning: %s:%u: %s (line skipped)\n", (const char *)context, line,
		message);
}

/* Prints "{SCHEME}" of a stored secret; one without a prefix is a crypt string. */
static void user_list_print(const struct passwd_entry *entry)
{
	const char *end = entry->secret[0] == '{' ? strchr(entry->secret, '}') : NULL;

	if (entry->secret[0] != '{')
		printf("%s {CRYPT}\n", entry->user);
	else if (end == NULL)
		printf("%s {?}\n", entry->user);
	else
		printf("%s %.*s\n", entry->user, (int)(end - entry->secret + 1), entry->secret);
}

static int user_action_list(const struct user_options *opts, const struct buzon_config *config)
{
	struct passwd_db db;
	char *error = NULL;

	if (passwd_db_load(config->passwd_file, &db, user_list_report, config->passwd_file,
			   &error) < 0) {
		cli_fail(error, NULL);
		free(error);
		return CLI_EXIT_FAIL;
	}
	for (size_t i = 0; i < db.count; i++)
		user_list_print(&db.entries[i]);
	passwd_db_free(&db);
	return fflush(stdout) == 0 ? CLI_EXIT_OK : cli_fail("cannot write", strerror(errno));
}

static const struct user_action user_actions[] = {
    {"add", true, true, user_action_add},
    {"passwd", true, true, user_action_passwd},
    {"del", true, false, user_action_del},
    {"list", false, false, user_action_list},
};

static const struct option user_long_options[] = {
    {"config", required_argument, NULL, 'c'},
    {"scheme", required_argument, NULL, CLI_OPTION_SCHEME},
    {"password-stdin", no_argument, NULL, CLI_OPTION_PASSWORD_STDIN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option hash_long_options[] = {
    {"scheme", required_argument, NULL, CLI_OPTION_SCHEME},
    {"password-stdin", no_argument, NULL, CLI_OPTION_PASSWORD_STDIN},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

struct cli_syntax {
	const char *short_options;
	const struct option *long_options;
	const char *usage;
};

static const struct cli_syntax user_syntax = {":c:h", user_long_options, user_usage_text};
static const struct cli_syntax hash_syntax = {":h", hash_long_options, hash_usage_text};

/* The option getopt_long() just refused, as the user typed it. */
static const char *cli_bad_option(char **argv, char *buf, size_t size)
{
	if (optopt > 0 && optopt < 128 && optopt != '?') {
		snprintf(buf, size, "-%c", optopt);
		return buf;
	}
	return argv[optind - 1];
}

/* Parses the options. Returns -1 after a usage error with *exit_r set, 1 after --help, 0 to go
 * on; positional arguments are left from optind. */
static int cli_parse_options(int argc, char **argv, const struct cli_syntax *syntax,
			     struct user_options *opts, int *exit_r)
{
	char bad[8];
	int c;

	/* getopt may have run before (main's own options); 0 makes glibc start afresh. */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, syntax->short_options, syntax->long_options, NULL)) !=
	       -1) {
		if (c == 'c') {
			opts->config_path = optarg;
		} else if (c == CLI_OPTION_SCHEME) {
			opts->scheme = optarg;
		} else if (c == CLI_OPTION_PASSWORD_STDIN) {
			opts->password_stdin = true;
		} else if (c == 'h') {
			fputs(syntax->usage, stdout);
			*exit_r = CLI_EXIT_OK;
			return 1;
		} else {
			const char *what = c == ':' ? "option needs an argument" : "unknown option";
			*exit_r = cli_usage_error(syntax->usage, what,
						  cli_bad_option(argv, bad, sizeof(bad)));
			return -1;
		}
	}
	if (opts->scheme != NULL && !password_scheme_known(opts->scheme)) {
		*exit_r = cli_usage_error(syntax->usage, "unknown password scheme", opts->scheme);
		return -1;
	}
	return 0;
}

static const struct user_action *user_action_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(user_actions); i++) {
		if (strcmp(user_actions[i].name, name) == 0)
			return &user_actions[i];
	}
	return NULL;
}

/* Checks the positional arguments against the action. Returns 0 or a usage exit status. */
static int user_check_arguments(const struct user_action *action, int argc, char **argv,
				struct user_options *opts)
{
	int wanted = action->needs_user ? 2 : 1;

	if (argc - optind != wanted)
		return cli_usage_error(user_usage_text, "wrong number of arguments for action",
				       action->name);
	if (!action->takes_password && (opts->scheme != NULL || opts->password_stdin))
		return cli_usage_error(user_usage_text,
				       "--scheme and --password-stdin do not apply to action",
				       action->name);
	if (action->needs_user) {
		if (saslprep(argv[optind + 1], true, &opts->user_prepared) < 0)
			return cli_usage_error(user_usage_text,
					       "user name refused by SASLprep (RFC 4013)",
					       argv[optind + 1]);
		opts->user = opts->user_prepared;
		if (!passwd_user_name_valid(opts->user))
			return cli_usage_error(user_usage_text, "invalid user name", opts->user);
	}
	return 0;
}

int cli_user_main(int argc, char **argv)
{
	struct user_options opts = {.config_path = CLI_DEFAULT_CONFIG};
	int exit_status;

	int ret = cli_parse_options(argc, argv, &user_syntax, &opts, &exit_status);
	if (ret != 0)
		return exit_status;
	if (optind >= argc)
		return cli_usage_error(user_usage_text, "missing action", NULL);
	const struct user_action *action = user_action_find(argv[optind]);
	if (action == NULL)
		return cli_usage_error(user_usage_text, "unknown action", argv[optind]);
	if ((exit_status = user_check_arguments(action, argc, argv, &opts)) != 0) {
		free(opts.user_prepared);
		return exit_status;
	}

	char *error = NULL;
	struct buzon_config *config = config_load(opts.config_path, &error);
	if (config == NULL) {
		cli_fail(error, NULL);
		free(error);
		free(opts.user_prepared);
		return CLI_EXIT_FAIL;
	}
	exit_status = action->run(&opts, config);
	config_free(&config);
	free(opts.user_prepared);
	return exit_status;
}

int cli_hash_main(int argc, char **argv)
{
	struct user_options opts = {.scheme = NULL};
	int exit_status;

	if (cli_parse_options(argc, argv, &hash_syntax, &opts, &exit_status) != 0)
		return exit_status;
	if (optind != argc)
		return cli_usage_error(hash_usage_text, "unexpected argument", argv[optind]);

	char *secret = cli_make_secret(
	    NULL, opts.scheme != NULL ? opts.scheme : CLI_HASH_DEFAULT_SCHEME, opts.password_stdin);
	if (secret == NULL)
		return CLI_EXIT_FAIL;
	printf("%s\n", secret);
	cli_secret_free(&secret);
	return fflush(stdout) == 0 ? CLI_EXIT_OK : cli_fail("cannot write", strerror(errno));
}
