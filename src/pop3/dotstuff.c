/* The RETR/TOP encoder: a byte-level state machine that turns bare LF into CRLF and dot-stuffs
 * lines, fed in chunks of any size (a CR ending one chunk pairs with an LF starting the next).
 *
 * Sizes must agree with the store: the store counts a message as its octets plus one per bare LF,
 * so every input byte maps to itself except a bare LF (two bytes) and a leading '.' (two bytes,
 * the stuffing that RFC 1939 says is not part of the size). A lone CR is passed through as is. */
#include <string.h>

#include <event2/buffer.h>

#include "core/util.h"
#include "pop3/dotstuff.h"

/* Output is gathered here and handed to libevent in large pieces: one evbuffer_add() per byte
 * would cost a call and a chain check for every octet of every message. 8 KiB keeps the stack
 * frame modest while making the per-call overhead negligible. */
#define DOTSTUFF_BATCH_SIZE 8192

struct dotstuff_batch {
	struct evbuffer *out;
	size_t used;
	char data[DOTSTUFF_BATCH_SIZE];
};

static void dotstuff_evbuffer_add(struct evbuffer *out, const char *data, size_t len)
{
	/* libevent fails only on allocation failure, which ends the process like xmalloc does. */
	if (evbuffer_add(out, data, len) < 0)
		fatal("evbuffer_add: out of memory");
}

static void dotstuff_batch_flush(struct dotstuff_batch *batch)
{
	if (batch->used > 0)
		dotstuff_evbuffer_add(batch->out, batch->data, batch->used);
	batch->used = 0;
}

static void dotstuff_batch_put(struct dotstuff_batch *batch, const char *data, size_t len)
{
	if (len > sizeof(batch->data) - batch->used) {
		dotstuff_batch_flush(batch);
		if (len > sizeof(batch->data)) {
			dotstuff_evbuffer_add(batch->out, data, len);
			return;
		}
	}
	memcpy(batch->data + batch->used, data, len);
	batch->used += len;
}

void dotstuff_init(struct dotstuff *ds, long top_lines)
{
	memset(ds, 0, sizeof(*ds));
	ds->at_line_start = true;
	ds->body_lines_left = top_lines < 0 ? -1 : top_lines;
}

/* Called after each LF: TOP counts the blank separator line and then body lines. */
static void dotstuff_end_line(struct dotstuff *ds)
{
	bool blank = !ds->line_has_content;

	ds->at_line_start = true;
	ds->line_has_content = false;
	if (ds->body_lines_left < 0)
		return;
	if (!ds->in_body) {
		if (!blank)
			return;
		ds->in_body = true;
	} else {
		ds->body_lines_left--;
	}
	if (ds->body_lines_left == 0)
		ds->done = true;
}

/* Resolves a held-back CR against the next byte c. Returns true if c was its LF (consumed). */
static bool dotstuff_resolve_cr(struct dotstuff *ds, char c, struct dotstuff_batch *batch)
{
	ds->cr_pending = false;
	if (c == '\n') {
		dotstuff_batch_put(batch, "\r\n", 2);
		dotstuff_end_line(ds);
		return true;
	}
	/* A lone CR is content of the line, not a line end: it goes out unchanged. */
	dotstuff_batch_put(batch, "\r", 1);
	ds->at_line_start = false;
	ds->line_has_content = true;
	return false;
}

/* Copies the run of ordinary bytes starting at in[0]; returns how many bytes it took. */
static size_t dotstuff_put_run(struct dotstuff *ds, const char *in, size_t len,
			       struct dotstuff_batch *batch)
{
	size_t n = 0;

	if (ds->at_line_start && in[0] == '.')
		dotstuff_batch_put(batch, ".", 1);
	/* memchr() scans a word or a vector at a time; most lines hold no CR at all (Maildir files
	 * written by Postfix end lines with LF), so the second scan is short and rarely finds one
	 */
	const char *lf = memchr(in, '\n', len);
	n = lf != NULL ? (size_t)(lf - in) : len;
	const char *cr = memchr(in, '\r', n);
	if (cr != NULL)
		n = (size_t)(cr - in);
	dotstuff_batch_put(batch, in, n);
	ds->at_line_start = false;
	ds->line_has_content = true;
	return n;
}

bool dotstuff_feed(struct dotstuff *ds, const char *in, size_t len, struct evbuffer *out)
{
	struct dotstuff_batch batch;
	size_t i = 0;

	if (ds->done)
		return true;
	batch.out = out;
	batch.used = 0;
	while (i < len && !ds->done) {
		if (ds->cr_pending && dotstuff_resolve_cr(ds, in[i], &batch)) {
			i++;
		} else if (in[i] == '\r') {
			ds->cr_pending = true;
			i++;
		} else if (in[i] == '\n') {
			dotstuff_batch_put(&batch, "\r\n", 2);
			dotstuff_end_line(ds);
			i++;
		} else {
			i += dotstuff_put_run(ds, in + i, len - i, &batch);
		}
	}
	dotstuff_batch_flush(&batch);
	return ds->done;
}

void dotstuff_finish(struct dotstuff *ds, struct evbuffer *out)
{
	char tail[8];
	size_t n = 0;

	if (ds->cr_pending) {
		/* The message ended in a lone CR: it is content, and the line still needs its end.
		 */
		tail[n++] = '\r';
		ds->cr_pending = false;
		ds->at_line_start = false;
	}
	if (!ds->at_line_start) {
		tail[n++] = '\r';
		tail[n++] = '\n';
	}
	memcpy(tail + n, ".\r\n", 3);
	n += 3;
	dotstuff_evbuffer_add(out, tail, n);
	ds->done = true;
}
