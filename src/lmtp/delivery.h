/* The one delivery path, shared by the LMTP server and `buzon deliver`: a message is written once,
 * durably, and linked into every recipient's Maildir.
 *
 * Order (DESIGN.md, "Delivery"): stream into tmp/ of the first recipient's Maildir (never holding
 * the message in memory), fsync the file; then for each recipient hard-link it (or, across
 * filesystems, copy it) into that recipient's tmp/, rename into new/ under a name carrying ,S= and
 * ,W=, fsync new/; only then report success. A crash before the rename leaves only tmp/ files,
 * which POP3 never shows and maildir_cleanup_tmp() (store.h) removes at the next login.
 *
 * Stored form: LF line ends (the caller passes LF-only text: CRLF converted, dot-unstuffed), with a
 * "Return-Path: <sender>" header first and, when the message has exactly one recipient, a
 * "Delivered-To: <recipient>" header (several recipients share one file, so no per-recipient
 * header can be added without writing the message again). */
#ifndef BUZON_LMTP_DELIVERY_H
#define BUZON_LMTP_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum delivery_result {
	DELIVERY_OK = 0,
	DELIVERY_TEMPFAIL,   /* retry later: I/O error, permissions (451 4.3.0 / EX_TEMPFAIL) */
	DELIVERY_NO_SPACE,   /* retry later: the Maildir's filesystem is full, ENOSPC or EDQUOT
				(452 4.3.1 / EX_TEMPFAIL) */
	DELIVERY_OVER_QUOTA, /* the recipient's quota is full (552 5.2.2 or 452 4.2.2) */
	DELIVERY_PERMFAIL,   /* will not work on retry (5.x.x / EX_CANTCREAT) */
};

struct delivery_recipient {
	const char *address;  /* as the client gave it, for Delivered-To and logs */
	const char *user;     /* canonical user name */
	const char *maildir;  /* the Maildir path (the location without "maildir:") */
	uint64_t quota_bytes; /* 0: no limit */
	uint64_t quota_messages;
	/* out: */
	enum delivery_result result;
	char *error; /* newly allocated reason for the log, or NULL */
};

struct delivery;

/* Starts a message for recipients (count >= 1; the array must outlive the delivery). sender may
 * be "" (the null reverse-path). Returns NULL with *error_r if no temp file can be created. */
struct delivery *delivery_begin(struct delivery_recipient *recipients, size_t count,
				const char *sender, enum delivery_result *result_r, char **error_r);

/* Appends len bytes of LF-only message text. Returns -1 on a write error (then finish reports
 * TEMPFAIL for everyone). */
int delivery_write(struct delivery *delivery, const void *data, size_t len);

/* Makes the message durable and links it into every recipient's new/, checking and updating each
 * recipient's quota. Fills each recipient's result. Frees the delivery and sets *delivery NULL.
 * Returns the number of recipients that got DELIVERY_OK. */
size_t delivery_finish(struct delivery **delivery);

/* Abandons the message (the client went away, or RSET): removes the temp file. */
void delivery_abort(struct delivery **delivery);

/* Quota check at RCPT time for a message of about size octets (0 if unknown): returns
 * DELIVERY_OK or DELIVERY_OVER_QUOTA (or TEMPFAIL if the usage cannot be read). */
enum delivery_result delivery_quota_check(const struct delivery_recipient *recipient, uint64_t size,
					  char **error_r);

#endif
