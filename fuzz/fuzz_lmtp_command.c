/* Fuzzes the LMTP command side (src/lmtp/lmtp_commands.c and the line reader of lmtp_session.c):
 * the input is what the client sends, byte for byte, over a real socketpair into a real session
 * (fuzz_lmtp.h). Checks: no memory error, leak or stall, and every reply is a well-formed line:
 * three digits, a space or a hyphen, printable text, CRLF (a reply that echoes an address must not
 * carry control bytes from it). */
#include "fuzz_lmtp.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_lmtp_init("lmtpcmd");
	fuzz_lmtp_self_test();
	return 0;
}

static void check_replies(struct evbuffer *received)
{
	size_t len = evbuffer_get_length(received);
	const unsigned char *out = evbuffer_pullup(received, -1);
	size_t pos = 0;

	FUZZ_CHECK(len >= 4 && memcmp(out, "220 ", 4) == 0);
	while (pos < len) {
		const unsigned char *line = out + pos;
		const unsigned char *lf = memchr(line, '\n', len - pos);
		FUZZ_CHECK(lf != NULL); /* the last reply is complete too */
		size_t line_len = (size_t)(lf - line);
		FUZZ_CHECK(line_len >= 5 && line[line_len - 1] == '\r');
		FUZZ_CHECK(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
			   line[2] >= '0' && line[2] <= '9' && (line[3] == ' ' || line[3] == '-'));
		for (size_t i = 0; i + 1 < line_len; i++)
			FUZZ_CHECK(line[i] >= 0x20 && line[i] != 0x7f);
		pos += line_len + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const void *parts[] = {data};
	size_t lens[] = {size};

	fuzz_lmtp_run(parts, lens, 1);
	check_replies(fuzz_lmtp.client.received);
	fuzz_lmtp_end();
	return 0;
}
