/* `buzon deliver -u USER [-f SENDER]`: the local delivery agent an MTA pipes one message into.
 *
 * Exit codes follow sysexits.h, which Postfix's pipe(8) and Exim's pipe transport understand:
 *   0  EX_OK         delivered
 *   64 EX_USAGE      bad command line
 *   67 EX_NOUSER     no such user (bounced as 5.1.1)
 *   73 EX_CANTCREAT  will not work on retry: an invalid mailbox path, or a full mailbox when
 *                    [lmtp] quota_full_tempfail is off. Postfix maps 73 to 5.2.0 (mailbox
 *                    status), the closest sysexits code to 5.2.2 "mailbox full".
 *   75 EX_TEMPFAIL   retry later: I/O error, disk full, permissions, an unreadable passwd-file,
 *                    or a full mailbox when quota_full_tempfail is on
 *   78 EX_CONFIG     the configuration cannot be read
 * The reason goes to stderr, which the MTA puts into its log or the bounce. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "auth/passwd_file.h"
#include "auth/recipient.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "lmtp/delivery.h"
#include "store/store.h"

/* stdin is read in pieces of this size; the message is never held whole. */
#define DELIVER_CHUNK 65536

/* The mbox separator some callers (procmail-style) put before the message. */
#define DELIVER_FROM_LINE     "From "
#define DELIVER_FROM_LINE_LEN (sizeof(DELIVER_FROM_LINE) - 1)

static const char deliver_usage_text[] =
    "usage: buzon deliver [-c FILE] -u USER [-f SENDER]\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  -u, --user USER     recipient: a user name or address in the passwd-file\n"
    "  -f, --from SENDER   envelope sender for Return-Path (default: empty)\n";

struct deliver_options {
	const char *config_path;
	const char *user;
	const char *sender;
};

/* Where the input stream is: deciding whether a "From " line comes first, skipping it, or
 * copying the message. */
enum deliver_input_state {
	DELIVER_INPUT_HEAD,
	DELIVER_INPUT_SKIP_FROM,
	DELIVER_INPUT_BODY,
};

struct deliver_input {
	struct delivery *delivery;
	enum deliver_input_state state;
	char head[DELIVER_FROM_LINE_LEN]; /* first bytes, held until they decide the state */
	size_t head_len;
	bool pending_cr; /* a CR at the end of a chunk: CRLF or a lone CR is decided next */
	char out[DELIVER_CHUNK + 1];
};

static int deliver_parse_args(int argc, char **argv, struct deliver_options *opts)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{"user", required_argument, NULL, 'u'},
						{"from", required_argument, NULL, 'f'},
						{"help", no_argument, NULL, 'h'},
						{NULL, 0, NULL, 0}};
	int opt;

	opts->config_path = CLI_DEFAULT_CONFIG;
	opts->user = NULL;
	opts->sender = "";
	optind = 0; /* getopt may have run before; 0 makes glibc start afresh */
	while ((opt = getopt_long(argc, argv, "c:u:f:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			opts->config_path = optarg;
			break;
		case 'u':
			opts->user = optarg;
			break;
		case 'f':
			opts->sender = optarg;
			break;
		default:
			fputs(deliver_usage_text, opt == 'h' ? stdout : stderr);
			return opt == 'h' ? EX_OK : EX_USAGE;
		}
	}
	if (opts->user == NULL || opts->user[0] == '\0' || optind != argc) {
		fputs(deliver_usage_text, stderr);
		return EX_USAGE;
	}
	return -1;
}

/* Writes data converting CRLF to LF; a lone CR stays. */
static int deliver_input_body(struct deliver_input *in, const char *data, size_t len)
{
	size_t out = 0;

	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (in->pending_cr) {
			in->pending_cr = false;
			if (c != '\n')
				in->out[out++] = '\r';
		}
		if (c == '\r')
			in->pending_cr = true;
		else
			in->out[out++] = c;
		if (out >= DELIVER_CHUNK) {
			if (delivery_write(in->delivery, in->out, out) < 0)
				return -1;
			out = 0;
		}
	}
	return out == 0 ? 0 : delivery_write(in->delivery, in->out, out);
}

/* Feeds one chunk of stdin through the "From " check, the skip and the CRLF conversion. */
static int deliver_input_feed(struct deliver_input *in, const char *data, size_t len)
{
	while (len > 0 && in->state != DELIVER_INPUT_BODY) {
		if (in->state == DELIVER_INPUT_SKIP_FROM) {
			const char *lf = memchr(data, '\n', len);
			if (lf == NULL)
				return 0;
			len -= (size_t)(lf + 1 - data);
			data = lf + 1;
			in->state = DELIVER_INPUT_BODY;
			break;
		}
		in->head[in->head_len++] = *data++;
		len--;
		if (memcmp(in->head, DELIVER_FROM_LINE, in->head_len) != 0) {
			in->state = DELIVER_INPUT_BODY;
			if (deliver_input_body(in, in->head, in->head_len) < 0)
				return -1;
		} else if (in->head_len == DELIVER_FROM_LINE_LEN) {
			in->state = DELIVER_INPUT_SKIP_FROM;
		}
	}
	return len == 0 ? 0 : deliver_input_body(in, data, len);
}

/* Ends the input: flushes a held-back CR or a short beginning that was not "From ". */
static int deliver_input_end(struct deliver_input *in)
{
	if (in->state == DELIVER_INPUT_HEAD && in->head_len > 0) {
		in->state = DELIVER_INPUT_BODY;
		if (deliver_input_body(in, in->head, in->head_len) < 0)
			return -1;
	}
	if (in->pending_cr) {
		in->pending_cr = false;
		return delivery_write(in->delivery, "\r", 1);
	}
	return 0;
}

/* Copies stdin into the delivery. Returns -1 with a message on stderr on a read error. */
static int deliver_copy_stdin(struct delivery *delivery)
{
	struct deliver_input *in = xcalloc(1, sizeof(*in));
	char *buf = xmalloc(DELIVER_CHUNK);
	int ret = 0;

	in->delivery = delivery;
	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, DELIVER_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "buzon: reading the message: %s\n", strerror(errno));
			ret = -1;
			break;
		}
		if (n == 0) {
			ret = deliver_input_end(in);
			break;
		}
		/* A write error is remembered by the delivery and reported by finish. */
		if (deliver_input_feed(in, buf, (size_t)n) < 0)
			break;
	}
	free(buf);
	free(in);
	return ret;
}

static int deliver_exit_code(enum delivery_result result, const struct buzon_config *config)
{
	switch (result) {
	case DELIVERY_OK:
		return EX_OK;
	case DELIVERY_OVER_QUOTA:
		return config->lmtp_quota_full_tempfail ? EX_TEMPFAIL : EX_CANTCREAT;
	case DELIVERY_PERMFAIL:
		return EX_CANTCREAT;
	case DELIVERY_TEMPFAIL:
	case DELIVERY_NO_SPACE:
	default:
		return EX_TEMPFAIL;
	}
}

static int deliver_report(enum delivery_result result, const char *error,
			  const struct buzon_config *config)
{
	if (result != DELIVERY_OK)
		fprintf(stderr, "buzon: delivery failed%s%s\n", error != NULL ? ": " : "",
			error != NULL ? error : "");
	return deliver_exit_code(result, config);
}

/* Delivers stdin to one resolved recipient. */
static int deliver_run(const struct buzon_config *config, struct delivery_recipient *rcpt,
		       const char *sender)
{
	enum delivery_result result;
	char *error = NULL;
	struct delivery *delivery = delivery_begin(rcpt, 1, sender, &result, &error);

	if (delivery == NULL) {
		int code = deliver_report(result, error, config);
		free(error);
		return code;
	}
	if (deliver_copy_stdin(delivery) < 0) {
		delivery_abort(&delivery);
		return EX_TEMPFAIL;
	}
	(void)delivery_finish(&delivery);
	int code = deliver_report(rcpt->result, rcpt->error, config);
	x_free(&rcpt->error);
	return code;
}

/* Finds the user and the Maildir; fills rcpt (rcpt->maildir points into *location_r). */
static int deliver_resolve(const struct buzon_config *config, const struct passwd_db *db,
			   const char *address, struct delivery_recipient *rcpt, char **location_r)
{
	const struct passwd_entry *entry = recipient_lookup(db, address);
	const char *path;

	if (entry == NULL) {
		fprintf(stderr, "buzon: no such user: %s\n", address);
		return EX_NOUSER;
	}
	*location_r = config_expand_location(config->mail_location, entry->user);
	if (*location_r == NULL ||
	    store_backend_find(*location_r, &path) != &store_backend_maildir) {
		fprintf(stderr, "buzon: [mail] location cannot be used for user %s\n", entry->user);
		return EX_CONFIG;
	}
	rcpt->address = address;
	rcpt->user = entry->user;
	rcpt->maildir = path;
	recipient_quota(config, entry, &rcpt->quota_bytes, &rcpt->quota_messages);
	return -1;
}

static int deliver_with_config(const struct buzon_config *config,
			       const struct deliver_options *opts)
{
	struct passwd_db db = {0};
	struct delivery_recipient rcpt = {0};
	char *location = NULL;
	char *error = NULL;
	int code;

	if (passwd_db_load(config->passwd_file, &db, NULL, NULL, &error) < 0) {
		/* The file may be in the middle of an edit or on a slow mount: let the MTA retry.
		 */
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return EX_TEMPFAIL;
	}
	code = deliver_resolve(config, &db, opts->user, &rcpt, &location);
	if (code < 0)
		code = deliver_run(config, &rcpt, opts->sender);
	free(location);
	passwd_db_free(&db);
	return code;
}

int cli_deliver_main(int argc, char **argv)
{
	struct deliver_options opts;
	int code = deliver_parse_args(argc, argv, &opts);

	if (code >= 0)
		return code;
	struct buzon_config *config = cli_config_load(opts.config_path);
	if (config == NULL)
		return EX_CONFIG;
	log_init("deliver", config->log_level);
	log_configure(config);
	code = deliver_with_config(config, &opts);
	config_free(&config);
	return code;
}
