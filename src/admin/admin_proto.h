/* The admin process's wire formats (the channels are described in admin.h): the datagrams between
 * the master and the admin process, the text lines between the admin process and the POP3
 * workers, and the limits of the control protocol that `buzon who|kick|stats|reload|ban` speaks.
 *
 * Control protocol (client <-> admin process, over the control socket): the client sends one
 * request line ending in LF (a CR before it is ignored), at most ADMIN_REQUEST_LINE_MAX octets:
 *
 *   WHO                        the sessions of every worker
 *   KICK USER <name>           end the sessions of a logged-in user (the rest of the line)
 *   KICK IP <address>          end the sessions from a client address
 *   STATS                      the metrics, in the Prometheus text format
 *   RELOAD                     ask the master to reload; its answer is the final line
 *   BAN LIST                   the bans in force
 *   BAN ADD <address> [<duration>]   ban a client ([auth] ban_time when no duration: 90s, 10m…)
 *   BAN DEL <address>          lift a ban
 *
 * The answer is zero or more data lines, each starting with "* ", then one final line starting
 * with "OK" or "ERR" and a short text, then the server closes the connection. Data lines:
 *   WHO:      * USER IP STATE SINCE SENT RECEIVED TLS SESSION
 *             USER is "-" before login, with bytes below 0x21, 0x7f and "%" written as %XX;
 *             STATE is auth or transaction; SINCE is the connection's Unix time; SENT and
 *             RECEIVED are bytes of the protocol (before TLS); TLS is yes or no.
 *   STATS:    * <a line of the Prometheus exposition>
 *   BAN LIST: * ADDRESS UNTIL SOURCE   (UNTIL in Unix time; SOURCE auth or admin)
 * Final lines: "OK sessions=N workers=N unanswered=N" (WHO), "OK kicked=N workers=N
 * unanswered=N" (KICK: unanswered workers may still hold matching sessions), "OK bans=N",
 * "OK banned ADDRESS until=T", "OK lifted ADDRESS" or "ERR not banned ADDRESS", the master's
 * answer for RELOAD, "ERR <why>" for anything refused.
 *
 * Worker channel (admin process <-> one POP3 worker, SOCK_STREAM): the admin process writes
 * "TOKEN WHO", "TOKEN KICK USER <name>" or "TOKEN KICK IP <address>" lines; the worker answers
 * each in order with "TOKEN S USER IP STATE SINCE SENT RECEIVED TLS SESSION" lines (WHO) and a
 * final "TOKEN END N" (N sessions listed or ended) or "TOKEN ERR <why>". TOKEN is chosen by the
 * admin process (its pid and a counter) so that an answer left in the socket by an admin process
 * that has since exited (a reload replaces it) is recognised and skipped by the next one. */
#ifndef BUZON_ADMIN_ADMIN_PROTO_H
#define BUZON_ADMIN_ADMIN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "admin/admin.h"

struct evbuffer;

/* A request line of the control protocol: the longest is KICK USER with a name, and POP3 names
 * fit in a 255-octet command line. */
#define ADMIN_REQUEST_LINE_MAX 1024

/* A line on a worker channel, either way. A WHO line carries a user name of at most
 * ADMIN_USER_FIELD_MAX octets plus a few numbers. */
#define ADMIN_WORKER_LINE_MAX 2048
/* A user name as WHO shows it, after %XX encoding; longer ones are cut (and end in "..."). SASL
 * authorization identities can be long, but a listing needs only enough to recognise one. */
#define ADMIN_USER_FIELD_MAX 512
/* The token that starts each worker-channel line: digits and dots. */
#define ADMIN_TOKEN_MAX 32

/* ---- master <-> admin datagrams ---- */

enum admin_wire_type {
	ADMIN_WIRE_WORKER = 1, /* master -> admin: a worker's channel (one descriptor attached) */
	ADMIN_WIRE_REQUEST,    /* admin -> master: enum admin_master_request */
	ADMIN_WIRE_REPLY,      /* master -> admin: the answer to the pending request */
};

/* The longest reply text from the master: a refused reload names the file, the line and the
 * fault. Longer texts are cut. */
#define ADMIN_REPLY_TEXT_MAX 1024
/* The largest datagram: the header (magic, version, type: 8 octets), ok, the text. */
#define ADMIN_WIRE_MAX (8 + 1 + ADMIN_REPLY_TEXT_MAX)

struct admin_wire_message {
	enum admin_wire_type type;
	/* ADMIN_WIRE_WORKER */
	unsigned int index;
	unsigned int generation;
	pid_t pid;
	/* ADMIN_WIRE_REQUEST */
	enum admin_master_request request;
	/* ADMIN_WIRE_REPLY: the text has no control characters */
	bool ok;
	char text[ADMIN_REPLY_TEXT_MAX + 1];
};

/* Encodes msg into buf (at least ADMIN_WIRE_MAX octets) and returns its length. A reply's text is
 * cut to ADMIN_REPLY_TEXT_MAX octets and its control characters become spaces. */
size_t admin_wire_encode(const struct admin_wire_message *msg, unsigned char *buf);
/* Decodes one datagram. Returns 0, or -1 if it is not exactly a well-formed message of this
 * version (wrong magic, version, type or length, a control character or NUL in a text). */
int admin_wire_decode(const unsigned char *buf, size_t len, struct admin_wire_message *msg_r);

/* Receives one datagram from fd into buf (ADMIN_WIRE_MAX + 1 octets) with at most one attached
 * descriptor, which is returned in *fd_r (-1 if none; more than one, or any other control data,
 * makes the message malformed and every descriptor that came with it is closed). flags go to
 * recvmsg(). Returns the length, 0 at EOF, -1 on error (errno set; EBADMSG for a truncated
 * datagram or bad control data). */
ssize_t admin_wire_recv(int fd, unsigned char *buf, int *fd_r, int flags);

/* ---- worker channel and WHO fields ---- */

/* True if token (len octets) is a valid token: 1 to ADMIN_TOKEN_MAX digits and dots. */
bool admin_token_valid(const char *token, size_t len);

/* Writes user as a WHO field into out (size octets, at least ADMIN_USER_FIELD_MAX + 1): bytes
 * below 0x21, 0x7f and '%' as %XX, "-" for NULL or an empty name (and "%2D" for a user named
 * "-"), cut to ADMIN_USER_FIELD_MAX octets with a final "...". Returns out. */
const char *admin_user_field(const char *user, char *out, size_t size);

/* What admin_proto_take_line() returns when it has no line. */
#define ADMIN_LINE_PENDING (-1)	 /* no whole line has arrived yet */
#define ADMIN_LINE_TOO_LONG (-2) /* longer than ADMIN_WORKER_LINE_MAX: drained as far as it came */

/* Takes the next LF-terminated line of the worker channel protocol out of in, into line (at
 * least ADMIN_WORKER_LINE_MAX + 1 octets; the LF is dropped and a NUL ends it). Returns the
 * line's length (it may hold NUL bytes: the caller checks), or ADMIN_LINE_PENDING or
 * ADMIN_LINE_TOO_LONG. */
ssize_t admin_proto_take_line(struct evbuffer *in, char *line);

#endif
