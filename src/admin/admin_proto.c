/* The admin process's wire formats (admin_proto.h) and the master's side of its channel
 * (admin.h): the control socket, worker channels handed over with SCM_RIGHTS, reload requests and
 * answers. The master treats the admin process as hostile: every datagram is checked for size and
 * form, and descriptors the admin process might try to pass the master are closed unused. */
#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/admin_proto.h"
#include "core/util.h"

/* "bzAd" in the first four octets of every datagram. */
#define ADMIN_WIRE_MAGIC   0x627a4164u
#define ADMIN_WIRE_VERSION 1
#define ADMIN_WIRE_HEADER  8

/* Connections the control socket queues before the admin process accepts them. */
#define ADMIN_CONTROL_BACKLOG 64

static unsigned char *admin_put_u32(unsigned char *p, uint32_t value)
{
	memcpy(p, &value, sizeof(value));
	return p + sizeof(value);
}

static uint32_t admin_get_u32(const unsigned char *p)
{
	uint32_t value;

	memcpy(&value, p, sizeof(value));
	return value;
}

static bool admin_text_char_ok(unsigned char c)
{
	return c >= 0x20 && c != 0x7f;
}

size_t admin_wire_encode(const struct admin_wire_message *msg, unsigned char *buf)
{
	unsigned char *p = admin_put_u32(buf, ADMIN_WIRE_MAGIC);
	uint32_t version_type = ADMIN_WIRE_VERSION | (uint32_t)msg->type << 16;

	p = admin_put_u32(p, version_type);
	switch (msg->type) {
	case ADMIN_WIRE_WORKER:
		p = admin_put_u32(p, msg->index);
		p = admin_put_u32(p, msg->generation);
		p = admin_put_u32(p, (uint32_t)msg->pid);
		break;
	case ADMIN_WIRE_REQUEST:
		p = admin_put_u32(p, (uint32_t)msg->request);
		break;
	case ADMIN_WIRE_REPLY:
		*p++ = msg->ok ? 1 : 0;
		for (size_t i = 0; i < ADMIN_REPLY_TEXT_MAX && msg->text[i] != '\0'; i++) {
			unsigned char c = (unsigned char)msg->text[i];
			*p++ = admin_text_char_ok(c) ? c : ' ';
		}
		break;
	}
	return (size_t)(p - buf);
}

int admin_wire_decode(const unsigned char *buf, size_t len, struct admin_wire_message *msg_r)
{
	memset(msg_r, 0, sizeof(*msg_r));
	if (len < ADMIN_WIRE_HEADER || len > ADMIN_WIRE_MAX ||
	    admin_get_u32(buf) != ADMIN_WIRE_MAGIC)
		return -1;
	uint32_t version_type = admin_get_u32(buf + 4);
	if ((version_type & 0xffff) != ADMIN_WIRE_VERSION)
		return -1;
	const unsigned char *body = buf + ADMIN_WIRE_HEADER;
	size_t body_len = len - ADMIN_WIRE_HEADER;
	msg_r->type = (enum admin_wire_type)(version_type >> 16);
	switch (msg_r->type) {
	case ADMIN_WIRE_WORKER:
		if (body_len != 12)
			return -1;
		msg_r->index = admin_get_u32(body);
		msg_r->generation = admin_get_u32(body + 4);
		msg_r->pid = (pid_t)admin_get_u32(body + 8);
		return msg_r->pid > 0 ? 0 : -1;
	case ADMIN_WIRE_REQUEST:
		if (body_len != 4)
			return -1;
		msg_r->request = (enum admin_master_request)admin_get_u32(body);
		return msg_r->request == ADMIN_MASTER_RELOAD ? 0 : -1;
	case ADMIN_WIRE_REPLY:
		if (body_len < 1 || body[0] > 1)
			return -1;
		msg_r->ok = body[0] == 1;
		for (size_t i = 1; i < body_len; i++) {
			if (!admin_text_char_ok(body[i]))
				return -1;
		}
		memcpy(msg_r->text, body + 1, body_len - 1);
		msg_r->text[body_len - 1] = '\0';
		return 0;
	}
	return -1;
}

/* Closes every descriptor carried by the control messages of msg. */
static void admin_close_passed_fds(struct msghdr *msg)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

ssize_t admin_wire_recv(int fd, unsigned char *buf, int *fd_r, int flags)
{
	/* room for more than one descriptor, so that a message carrying several is seen whole and
	 * all of them can be closed */
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = ADMIN_WIRE_MAX + 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t len;

	*fd_r = -1;
	do
		len = recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
	while (len < 0 && errno == EINTR);
	if (len <= 0)
		return len;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	bool control_ok =
	    c == NULL || (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
			  c->cmsg_len == CMSG_LEN(sizeof(int)) && CMSG_NXTHDR(&msg, c) == NULL);
	if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || !control_ok) {
		admin_close_passed_fds(&msg);
		errno = EBADMSG;
		return -1;
	}
	if (c != NULL)
		memcpy(fd_r, CMSG_DATA(c), sizeof(int));
	return len;
}

/* Sends one datagram, with fd attached when it is not -1. Never blocks: a full channel is an
 * error rather than a master stuck on an admin process that does not read. */
static int admin_wire_send(int channel, const struct admin_wire_message *wire, int fd)
{
	unsigned char buf[ADMIN_WIRE_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = admin_wire_encode(wire, buf)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t sent;

	if (fd >= 0) {
		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		sent = sendmsg(channel, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (sent < 0 && errno == EINTR);
	return sent == (ssize_t)iov.iov_len ? 0 : -1;
}

int admin_send_worker_channel(int admin_fd, unsigned int index, unsigned int generation, pid_t pid,
			      int channel_fd)
{
	struct admin_wire_message wire = {
	    .type = ADMIN_WIRE_WORKER, .index = index, .generation = generation, .pid = pid};

	return admin_wire_send(admin_fd, &wire, channel_fd);
}

int admin_master_read_request(int admin_fd, enum admin_master_request *request_r)
{
	unsigned char buf[ADMIN_WIRE_MAX + 1];
	struct admin_wire_message wire;
	int passed_fd;
	ssize_t len = admin_wire_recv(admin_fd, buf, &passed_fd, MSG_DONTWAIT);

	if (passed_fd >= 0) {
		close(passed_fd); /* the master takes no descriptors from the admin process */
		return -1;
	}
	if (len <= 0 || admin_wire_decode(buf, (size_t)len, &wire) < 0 ||
	    wire.type != ADMIN_WIRE_REQUEST)
		return -1;
	*request_r = wire.request;
	return 0;
}

int admin_master_reply(int admin_fd, bool ok, const char *text)
{
	struct admin_wire_message wire = {.type = ADMIN_WIRE_REPLY, .ok = ok};

	snprintf(wire.text, sizeof(wire.text), "%s", text != NULL ? text : "");
	return admin_wire_send(admin_fd, &wire, -1);
}

/* ---- the control socket ---- */

/* Refuses to take over a path where a server still answers, or that is not a socket. */
static int admin_control_path_free(const char *path, const struct sockaddr_un *addr, char **error_r)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		*error_r = xasprintf("cannot use control socket %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		*error_r = xasprintf("control socket %s exists and is not a socket", path);
		return -1;
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (const struct sockaddr *)addr, sizeof(*addr)) == 0) {
		close(probe);
		*error_r =
		    xasprintf("control socket %s is in use: is another buzon running?", path);
		return -1;
	}
	if (probe >= 0)
		close(probe);
	unlink(path); /* left behind by a server that did not stop cleanly */
	return 0;
}

static int admin_control_dir(const char *path, char **error_r)
{
	char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	int ret = 0;

	if (slash != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir_parents(dir, 0755) < 0) {
			*error_r = xasprintf("cannot create %s: %s", dir, strerror(errno));
			ret = -1;
		}
	}
	free(dir);
	return ret;
}

int admin_control_socket_open(const char *path, bool change_owner, uid_t owner, gid_t group,
			      char **error_r)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	if (path == NULL || path[0] != '/' || strlen(path) >= sizeof(addr.sun_path)) {
		*error_r = xasprintf("control socket path %s must be absolute and shorter than %zu",
				     path != NULL ? path : "(none)", sizeof(addr.sun_path));
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (admin_control_dir(path, error_r) < 0 ||
	    admin_control_path_free(path, &addr, error_r) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = xasprintf("cannot create the control socket: %s", strerror(errno));
		return -1;
	}
	/* the file is born 0600: nobody else can connect between bind() and chmod() */
	mode_t old_umask = umask(0177);
	int bound = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old_umask);
	if (bound < 0 || chmod(path, 0600) < 0 ||
	    (change_owner && lchown(path, owner, group) < 0) ||
	    listen(fd, ADMIN_CONTROL_BACKLOG) < 0) {
		*error_r =
		    xasprintf("cannot listen on control socket %s: %s", path, strerror(errno));
		if (bound == 0)
			unlink(path);
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- worker channel fields ---- */

bool admin_token_valid(const char *token, size_t len)
{
	if (len == 0 || len > ADMIN_TOKEN_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!((token[i] >= '0' && token[i] <= '9') || token[i] == '.'))
			return false;
	}
	return true;
}

const char *admin_user_field(const char *user, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	/* room for one more %XX and the "..." that marks a cut */
	size_t limit = (size - 1 < ADMIN_USER_FIELD_MAX ? size - 1 : ADMIN_USER_FIELD_MAX) - 3;
	size_t n = 0;

	if (user == NULL || user[0] == '\0') {
		snprintf(out, size, "-");
		return out;
	}
	if (strcmp(user, "-") == 0) {
		snprintf(out, size, "%%2D"); /* not the "-" of a session before login */
		return out;
	}
	for (const unsigned char *p = (const unsigned char *)user; *p != '\0'; p++) {
		bool escape = *p < 0x21 || *p == 0x7f || *p == '%';
		if (n + (escape ? 3 : 1) > limit) {
			memcpy(out + n, "...", 3);
			n += 3;
			break;
		}
		if (escape) {
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		} else {
			out[n++] = (char)*p;
		}
	}
	out[n] = '\0';
	return out;
}

ssize_t admin_proto_take_line(struct evbuffer *in, char *line)
{
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);

	if (eol.pos < 0) {
		if (evbuffer_get_length(in) <= ADMIN_WORKER_LINE_MAX)
			return ADMIN_LINE_PENDING;
		evbuffer_drain(in, evbuffer_get_length(in));
		return ADMIN_LINE_TOO_LONG;
	}
	if ((size_t)eol.pos > ADMIN_WORKER_LINE_MAX) {
		evbuffer_drain(in, (size_t)eol.pos + eol_len);
		return ADMIN_LINE_TOO_LONG;
	}
	evbuffer_remove(in, line, (size_t)eol.pos);
	evbuffer_drain(in, eol_len);
	line[eol.pos] = '\0';
	return (ssize_t)eol.pos;
}
