/* The multi-line response encoder for RETR and TOP: converts bare LF to CRLF and dot-stuffs lines
 * that begin with ".", chunk by chunk, with every state carried across chunk boundaries so that a
 * message can be streamed in slices of any size (RFC 1939 §3). */
#ifndef BUZON_POP3_DOTSTUFF_H
#define BUZON_POP3_DOTSTUFF_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

struct dotstuff {
	bool at_line_start;    /* the next byte begins a line (start of message or after LF) */
	bool cr_pending;       /* a CR was held back: CRLF or a lone CR depends on the next byte */
	bool line_has_content; /* the current line has a byte other than its line end */
	bool in_body;	       /* TOP: the header/body separator line has been passed */
	bool done;	       /* TOP: the limit is reached; further input is ignored */
	long body_lines_left;  /* TOP: body lines still to send; -1 sends the whole message */
};

/* Prepares for one message. top_lines < 0: the whole message (RETR); otherwise the headers, the
 * blank line and at most top_lines lines of the body (TOP). */
void dotstuff_init(struct dotstuff *ds, long top_lines);

/* Encodes len bytes of the message into out. Returns true once TOP's limit is reached, after which
 * the caller should stop reading the message (further calls output nothing and return true).
 * A message without a blank line is all headers: TOP sends all of it. */
bool dotstuff_feed(struct dotstuff *ds, const char *in, size_t len, struct evbuffer *out);

/* Ends the response: a CRLF if the message did not end with LF (an empty message needs none), then
 * ".\r\n". Call it also after feed() returned true. */
void dotstuff_finish(struct dotstuff *ds, struct evbuffer *out);

#endif
