/* The shared metrics mapping and its Prometheus rendering (see metrics.h). Every value of a slot is
 * one cell of a flat array of 64-bit atomics; a table of families says where each family's cells
 * start, which labels index them, and how to print them, so the renderer, the release that folds
 * counters into the retired totals and the tests all walk one description. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <event2/buffer.h>

#include "core/metrics.h"
#include "core/util.h"

_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
	       "shared counters must be lock-free atomics: no lock may live in the mapping");

/* ---- label value sets ---- */

static const char *const metrics_listener_names[METRICS_LISTENER_COUNT] = {
    "pop3", "pop3s", "pop3_proxy", "pop3s_proxy"};

enum { METRICS_STATE_CONNECTED, METRICS_STATE_AUTHENTICATED, METRICS_STATE_COUNT };
static const char *const metrics_state_names[METRICS_STATE_COUNT] = {"connected", "authenticated"};

/* USER/PASS, APOP, and every mechanism of the SASL registry (src/sasl/sasl.c). */
static const char *const metrics_mechanism_names[] = {"USER",
						      "APOP",
						      "PLAIN",
						      "LOGIN",
						      "CRAM-MD5",
						      "SCRAM-SHA-1",
						      "SCRAM-SHA-1-PLUS",
						      "SCRAM-SHA-256",
						      "SCRAM-SHA-256-PLUS",
						      "EXTERNAL"};
#define METRICS_MECHANISM_COUNT ARRAY_SIZE(metrics_mechanism_names)

static const char *const metrics_login_result_names[METRICS_LOGIN_RESULT_COUNT] = {
    "ok", "failed", "refused", "error", "aborted"};

/* The commands of the table in src/pop3/commands.c, then "unknown" for everything else. */
static const char *const metrics_command_names[] = {
    "USER", "PASS", "APOP", "AUTH", "UTF8", "STLS", "CAPA", "QUIT",   "STAT",
    "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",  "UIDL", "LANG", "unknown"};
#define METRICS_COMMAND_COUNT	ARRAY_SIZE(metrics_command_names)
#define METRICS_COMMAND_UNKNOWN (METRICS_COMMAND_COUNT - 1)

/* Latency buckets: most commands answer from memory in microseconds; logins wait for a password
 * hash (tens to hundreds of milliseconds) and failed ones for the penalty delay (2 to 15 s by
 * default); QUIT waits for fsync. The last bucket is +Inf. */
static const struct {
	uint64_t ns;
	const char *le;
} metrics_buckets[] = {{100000, "0.0001"},  {250000, "0.00025"}, {500000, "0.0005"},
		       {1000000, "0.001"},  {2500000, "0.0025"}, {5000000, "0.005"},
		       {10000000, "0.01"},  {25000000, "0.025"}, {50000000, "0.05"},
		       {100000000, "0.1"},  {250000000, "0.25"}, {500000000, "0.5"},
		       {1000000000, "1"},   {2500000000, "2.5"}, {5000000000, "5"},
		       {10000000000, "10"}, {30000000000, "30"}, {UINT64_MAX, "+Inf"}};
#define METRICS_BUCKET_COUNT ARRAY_SIZE(metrics_buckets)

static const char *const metrics_delivery_result_names[METRICS_DELIVERY_RESULT_COUNT] = {
    "delivered", "tempfail", "permfail", "over_quota", "no_space", "too_big"};

enum { METRICS_TLS_OK, METRICS_TLS_FAILED, METRICS_TLS_RESULT_COUNT };
static const char *const metrics_tls_result_names[METRICS_TLS_RESULT_COUNT] = {"ok", "failed"};
/* "unknown": the handshake failed before a version was agreed. */
enum {
	METRICS_TLS_V12,
	METRICS_TLS_V13,
	METRICS_TLS_OTHER,
	METRICS_TLS_UNKNOWN,
	METRICS_TLS_VERSION_COUNT
};
static const char *const metrics_tls_version_names[METRICS_TLS_VERSION_COUNT] = {
    "TLSv1.2", "TLSv1.3", "other", "unknown"};

/* RFC 2449 §8 and RFC 3206 codes that buzon sends, "none" for a -ERR without one. */
static const char *const metrics_error_code_names[] = {
    "IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH", "UTF8", "other", "none"};
#define METRICS_ERROR_CODE_COUNT ARRAY_SIZE(metrics_error_code_names)
#define METRICS_ERROR_CODE_OTHER (METRICS_ERROR_CODE_COUNT - 2)
#define METRICS_ERROR_CODE_NONE	 (METRICS_ERROR_CODE_COUNT - 1)

static const char *const metrics_role_names[] = {"pop3", "lmtp", "auth", "admin"};
#define METRICS_ROLE_COUNT ARRAY_SIZE(metrics_role_names)

/* ---- where each value lives in a slot ---- */

enum {
	MV_SESSIONS = 0, /* [listener][state], gauge */
	MV_CONNECTIONS = MV_SESSIONS + METRICS_LISTENER_COUNT * METRICS_STATE_COUNT,
	MV_LOGINS = MV_CONNECTIONS + METRICS_LISTENER_COUNT, /* [mechanism][result] */
	MV_COMMANDS = MV_LOGINS + METRICS_MECHANISM_COUNT * METRICS_LOGIN_RESULT_COUNT,
	MV_COMMAND_BUCKETS = MV_COMMANDS + METRICS_COMMAND_COUNT, /* [command][bucket] */
	MV_COMMAND_NS = MV_COMMAND_BUCKETS + METRICS_COMMAND_COUNT * METRICS_BUCKET_COUNT,
	MV_BYTES_SENT = MV_COMMAND_NS + METRICS_COMMAND_COUNT,
	MV_BYTES_RECEIVED,
	MV_RETRIEVED,
	MV_DELETED,
	MV_LOCK_CONFLICTS,
	MV_ERROR_REPLIES,				      /* [code] */
	MV_TLS = MV_ERROR_REPLIES + METRICS_ERROR_CODE_COUNT, /* [result][version] */
	MV_DELIVERIES = MV_TLS + METRICS_TLS_RESULT_COUNT * METRICS_TLS_VERSION_COUNT,
	MV_DELIVERED_BYTES = MV_DELIVERIES + METRICS_DELIVERY_RESULT_COUNT,
	MV_AUTH_PENALTIES,
	MV_AUTH_BANS,
	MV_COUNT
};

/* Gauges describe live processes: a released slot's gauges are dropped, not retired. */
static bool metrics_value_is_gauge(unsigned int index)
{
	return index < MV_CONNECTIONS;
}

/* ---- the shared mapping ---- */

/* One process's values. Aligned to a cache line so that two processes never write one line. */
struct metrics_slot {
	_Alignas(64) atomic_uint role; /* 1 + index into metrics_role_names; 0 when free */
	_Atomic uint64_t values[MV_COUNT];
};

struct metrics_shared {
	/* Odd while the master folds a slot into the retired totals (see metrics_snapshot()). */
	atomic_uint release_sequence;
	int64_t start_time; /* CLOCK_REALTIME seconds when the master made the mapping */
	struct metrics_slot retired;
	struct metrics_slot slots[];
};

struct metrics {
	struct metrics_shared *shared;
	size_t map_size;
	unsigned int slot_count;
};

/* The slot this process writes, NULL when it has none. Process state, set once after fork. */
static struct metrics_slot *metrics_own_slot;

struct metrics *metrics_create(unsigned int slot_count)
{
	struct metrics *metrics = xcalloc(1, sizeof(*metrics));

	metrics->slot_count = slot_count;
	metrics->map_size =
	    sizeof(struct metrics_shared) + (size_t)slot_count * sizeof(struct metrics_slot);
	metrics->shared = mmap(NULL, metrics->map_size, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (metrics->shared == MAP_FAILED)
		fatal("mmap of the metrics (%zu bytes) failed", metrics->map_size);
	metrics->shared->start_time = (int64_t)time(NULL);
	return metrics;
}

void metrics_destroy(struct metrics **metricsp)
{
	struct metrics *metrics = *metricsp;

	if (metrics == NULL)
		return;
	if (metrics_own_slot != NULL && metrics_own_slot >= metrics->shared->slots &&
	    metrics_own_slot < metrics->shared->slots + metrics->slot_count)
		metrics_own_slot = NULL;
	munmap(metrics->shared, metrics->map_size);
	x_free(metricsp);
}

int metrics_slot_claim(struct metrics *metrics, const char *role)
{
	unsigned int role_index = 0;

	while (role_index < METRICS_ROLE_COUNT && strcmp(metrics_role_names[role_index], role) != 0)
		role_index++;
	if (role_index == METRICS_ROLE_COUNT)
		fatal("metrics: unknown process role \"%s\"", role);
	for (unsigned int i = 0; i < metrics->slot_count; i++) {
		struct metrics_slot *slot = &metrics->shared->slots[i];
		/* the master is the only writer of roles: a plain check-then-store is enough */
		if (atomic_load_explicit(&slot->role, memory_order_relaxed) == 0) {
			atomic_store_explicit(&slot->role, role_index + 1, memory_order_release);
			return (int)i;
		}
	}
	return -1;
}

void metrics_slot_release(struct metrics *metrics, int slot_number)
{
	if (slot_number < 0)
		return;
	if ((unsigned int)slot_number >= metrics->slot_count)
		fatal("metrics: release of slot %d of %u", slot_number, metrics->slot_count);
	struct metrics_shared *shared = metrics->shared;
	struct metrics_slot *slot = &shared->slots[slot_number];
	unsigned int sequence =
	    atomic_load_explicit(&shared->release_sequence, memory_order_relaxed);

	/* a seqlock's writer: readers that overlap any of this see the sequence move and retry */
	atomic_store_explicit(&shared->release_sequence, sequence + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (unsigned int i = 0; i < MV_COUNT; i++) {
		uint64_t value = atomic_load_explicit(&slot->values[i], memory_order_relaxed);
		/* the master is the retired totals' only writer: no read-modify-write needed */
		if (!metrics_value_is_gauge(i))
			atomic_store_explicit(
			    &shared->retired.values[i],
			    atomic_load_explicit(&shared->retired.values[i], memory_order_relaxed) +
				value,
			    memory_order_relaxed);
		atomic_store_explicit(&slot->values[i], 0, memory_order_relaxed);
	}
	atomic_store_explicit(&slot->role, 0, memory_order_relaxed);
	atomic_store_explicit(&shared->release_sequence, sequence + 2, memory_order_release);
}

void metrics_attach(struct metrics *metrics, int slot)
{
	if (slot >= 0 && (unsigned int)slot >= metrics->slot_count)
		fatal("metrics: attach to slot %d of %u", slot, metrics->slot_count);
	metrics_own_slot = slot >= 0 ? &metrics->shared->slots[slot] : NULL;
}

/* ---- instrumentation ---- */

static void metrics_add(unsigned int index, uint64_t amount)
{
	if (metrics_own_slot != NULL)
		atomic_fetch_add_explicit(&metrics_own_slot->values[index], amount,
					  memory_order_relaxed);
}

/* Gauges go down by adding the two's complement: the sum over slots wraps back into range. */
static void metrics_sub(unsigned int index, uint64_t amount)
{
	if (metrics_own_slot != NULL)
		atomic_fetch_sub_explicit(&metrics_own_slot->values[index], amount,
					  memory_order_relaxed);
}

enum metrics_listener metrics_listener_of(bool implicit_tls, bool proxy)
{
	if (proxy)
		return implicit_tls ? METRICS_LISTENER_POP3S_PROXY : METRICS_LISTENER_POP3_PROXY;
	return implicit_tls ? METRICS_LISTENER_POP3S : METRICS_LISTENER_POP3;
}

static unsigned int metrics_session_index(enum metrics_listener listener, unsigned int state)
{
	return MV_SESSIONS + (unsigned int)listener * METRICS_STATE_COUNT + state;
}

void metrics_session_open(enum metrics_listener listener)
{
	metrics_add(MV_CONNECTIONS + (unsigned int)listener, 1);
	metrics_add(metrics_session_index(listener, METRICS_STATE_CONNECTED), 1);
}

void metrics_session_login(enum metrics_listener listener)
{
	metrics_sub(metrics_session_index(listener, METRICS_STATE_CONNECTED), 1);
	metrics_add(metrics_session_index(listener, METRICS_STATE_AUTHENTICATED), 1);
}

void metrics_session_close(enum metrics_listener listener, bool authenticated)
{
	metrics_sub(metrics_session_index(listener, authenticated ? METRICS_STATE_AUTHENTICATED
								  : METRICS_STATE_CONNECTED),
		    1);
}

/* The index of name in names, or count if it is not there. */
static unsigned int metrics_name_index(const char *const *names, unsigned int count,
				       const char *name)
{
	unsigned int i = 0;

	while (i < count && (name == NULL || strcmp(names[i], name) != 0))
		i++;
	return i;
}

void metrics_count_login(const char *mechanism, enum metrics_login_result result)
{
	unsigned int mech =
	    metrics_name_index(metrics_mechanism_names, METRICS_MECHANISM_COUNT, mechanism);

	if (mech < METRICS_MECHANISM_COUNT && (unsigned int)result < METRICS_LOGIN_RESULT_COUNT)
		metrics_add(MV_LOGINS + mech * METRICS_LOGIN_RESULT_COUNT + (unsigned int)result,
			    1);
}

static uint64_t metrics_monotonic_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now); /* a vDSO call: no system call */
	return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

void metrics_command_start(struct metrics_command_timer *timer, const char *name)
{
	if (metrics_own_slot == NULL)
		return;
	/* "unknown" is the last name: a client cannot make a name match it (commands are upper
	 * case) */
	unsigned int command =
	    metrics_name_index(metrics_command_names, METRICS_COMMAND_UNKNOWN, name);
	metrics_add(MV_COMMANDS + command, 1);
	timer->running = true;
	timer->command = command;
	timer->started_ns = metrics_monotonic_ns();
}

void metrics_command_finish(struct metrics_command_timer *timer)
{
	if (!timer->running || metrics_own_slot == NULL)
		return;
	timer->running = false;
	uint64_t elapsed = metrics_monotonic_ns() - timer->started_ns;
	unsigned int bucket = 0;
	while (elapsed > metrics_buckets[bucket].ns) /* the last bound is UINT64_MAX */
		bucket++;
	metrics_add(MV_COMMAND_BUCKETS + timer->command * METRICS_BUCKET_COUNT + bucket, 1);
	metrics_add(MV_COMMAND_NS + timer->command, elapsed);
}

void metrics_count_bytes_sent(uint64_t bytes)
{
	metrics_add(MV_BYTES_SENT, bytes);
}

void metrics_count_bytes_received(uint64_t bytes)
{
	metrics_add(MV_BYTES_RECEIVED, bytes);
}

void metrics_count_retrieved(void)
{
	metrics_add(MV_RETRIEVED, 1);
}

void metrics_count_deleted(uint64_t messages)
{
	metrics_add(MV_DELETED, messages);
}

void metrics_count_lock_conflict(void)
{
	metrics_add(MV_LOCK_CONFLICTS, 1);
}

/* The response code at the start of text ("[SYS/TEMP] ..."), as an index. */
static unsigned int metrics_error_code(const char *text)
{
	if (strncmp(text, "-ERR", 4) == 0)
		text += text[4] == ' ' ? 5 : 4;
	if (text[0] != '[')
		return METRICS_ERROR_CODE_NONE;
	const char *end = strchr(text, ']');
	if (end == NULL)
		return METRICS_ERROR_CODE_NONE; /* not a response code, just a bracket */
	size_t len = (size_t)(end - text - 1);
	for (unsigned int i = 0; i < METRICS_ERROR_CODE_OTHER; i++) {
		if (strlen(metrics_error_code_names[i]) == len &&
		    memcmp(metrics_error_code_names[i], text + 1, len) == 0)
			return i;
	}
	return METRICS_ERROR_CODE_OTHER;
}

void metrics_count_error_reply(const char *text)
{
	if (metrics_own_slot != NULL)
		metrics_add(MV_ERROR_REPLIES + metrics_error_code(text), 1);
}

void metrics_count_tls_handshake(bool ok, const char *version)
{
	unsigned int v = METRICS_TLS_UNKNOWN;

	if (version != NULL && strcmp(version, "TLSv1.3") == 0)
		v = METRICS_TLS_V13;
	else if (version != NULL && strcmp(version, "TLSv1.2") == 0)
		v = METRICS_TLS_V12;
	else if (version != NULL && strncmp(version, "TLSv", 4) == 0)
		v = METRICS_TLS_OTHER;
	unsigned int result = ok ? METRICS_TLS_OK : METRICS_TLS_FAILED;
	metrics_add(MV_TLS + result * METRICS_TLS_VERSION_COUNT + v, 1);
}

void metrics_count_delivery(enum metrics_delivery_result result, uint64_t bytes)
{
	if ((unsigned int)result >= METRICS_DELIVERY_RESULT_COUNT)
		return;
	metrics_add(MV_DELIVERIES + (unsigned int)result, 1);
	if (result == METRICS_DELIVERY_DELIVERED)
		metrics_add(MV_DELIVERED_BYTES, bytes);
}

void metrics_count_auth_penalty(void)
{
	metrics_add(MV_AUTH_PENALTIES, 1);
}

void metrics_count_auth_ban(void)
{
	metrics_add(MV_AUTH_BANS, 1);
}

/* ---- rendering ---- */

/* A label and its closed set of values. */
struct metrics_label {
	const char *name;
	const char *const *values;
	unsigned int count;
};

#define METRICS_LABEL(label_name, names)                                                           \
	{                                                                                          \
		label_name, names, ARRAY_SIZE(names)                                               \
	}

static const struct metrics_label metrics_label_listener =
    METRICS_LABEL("listener", metrics_listener_names);
static const struct metrics_label metrics_label_state = METRICS_LABEL("state", metrics_state_names);
static const struct metrics_label metrics_label_mechanism =
    METRICS_LABEL("mechanism", metrics_mechanism_names);
static const struct metrics_label metrics_label_login_result =
    METRICS_LABEL("result", metrics_login_result_names);
static const struct metrics_label metrics_label_command =
    METRICS_LABEL("command", metrics_command_names);
static const struct metrics_label metrics_label_code =
    METRICS_LABEL("code", metrics_error_code_names);
static const struct metrics_label metrics_label_tls_result =
    METRICS_LABEL("result", metrics_tls_result_names);
static const struct metrics_label metrics_label_tls_version =
    METRICS_LABEL("version", metrics_tls_version_names);
static const struct metrics_label metrics_label_delivery_result =
    METRICS_LABEL("result", metrics_delivery_result_names);

enum metrics_kind { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

/* A family of the slots' values: its cells start at base, one per combination of its labels (the
 * last label varies fastest). A histogram has one label; its buckets start at base and its sums
 * (in ns) at sum_base. */
struct metrics_family {
	const char *name;
	const char *help;
	enum metrics_kind kind;
	unsigned int base;
	const struct metrics_label *labels[2];
	unsigned int sum_base;
};

static const struct metrics_family metrics_families[] = {
    {"buzon_pop3_sessions",
     "POP3 sessions open now, by listener and state.",
     METRICS_GAUGE,
     MV_SESSIONS,
     {&metrics_label_listener, &metrics_label_state},
     0},
    {"buzon_pop3_connections_total",
     "POP3 connections accepted (not refused by a limit or ban), by listener.",
     METRICS_COUNTER,
     MV_CONNECTIONS,
     {&metrics_label_listener, NULL},
     0},
    {"buzon_pop3_logins_total",
     "POP3 login attempts by mechanism and result (refused: banned, cleartext not allowed, too "
     "many sessions, maildrop in use; error: temporary failure; aborted: SASL cancelled).",
     METRICS_COUNTER,
     MV_LOGINS,
     {&metrics_label_mechanism, &metrics_label_login_result},
     0},
    {"buzon_pop3_commands_total",
     "POP3 commands received, by name.",
     METRICS_COUNTER,
     MV_COMMANDS,
     {&metrics_label_command, NULL},
     0},
    {"buzon_pop3_command_duration_seconds",
     "Time from a POP3 command line being parsed to its reply being queued (multi-line replies: "
     "the status line and the first 64 KiB; logins and QUIT include auth, delay and mailbox work).",
     METRICS_HISTOGRAM,
     MV_COMMAND_BUCKETS,
     {&metrics_label_command, NULL},
     MV_COMMAND_NS},
    {"buzon_pop3_sent_bytes_total",
     "Bytes sent to POP3 clients (before TLS).",
     METRICS_COUNTER,
     MV_BYTES_SENT,
     {NULL, NULL},
     0},
    {"buzon_pop3_received_bytes_total",
     "Bytes received from POP3 clients (after TLS).",
     METRICS_COUNTER,
     MV_BYTES_RECEIVED,
     {NULL, NULL},
     0},
    {"buzon_pop3_retrieved_messages_total",
     "Messages sent whole by RETR.",
     METRICS_COUNTER,
     MV_RETRIEVED,
     {NULL, NULL},
     0},
    {"buzon_pop3_deleted_messages_total",
     "Messages removed by committed QUITs.",
     METRICS_COUNTER,
     MV_DELETED,
     {NULL, NULL},
     0},
    {"buzon_pop3_lock_conflicts_total",
     "Logins refused with [IN-USE] because another session holds the maildrop.",
     METRICS_COUNTER,
     MV_LOCK_CONFLICTS,
     {NULL, NULL},
     0},
    {"buzon_pop3_error_replies_total",
     "POP3 -ERR replies by response code (RFC 2449, 3206).",
     METRICS_COUNTER,
     MV_ERROR_REPLIES,
     {&metrics_label_code, NULL},
     0},
    {"buzon_tls_handshakes_total",
     "TLS handshakes by result and protocol version (unknown: failed before one was agreed).",
     METRICS_COUNTER,
     MV_TLS,
     {&metrics_label_tls_result, &metrics_label_tls_version},
     0},
    {"buzon_lmtp_deliveries_total",
     "LMTP deliveries by result, one per recipient.",
     METRICS_COUNTER,
     MV_DELIVERIES,
     {&metrics_label_delivery_result, NULL},
     0},
    {"buzon_lmtp_delivered_bytes_total",
     "Bytes delivered by LMTP, counted per recipient.",
     METRICS_COUNTER,
     MV_DELIVERED_BYTES,
     {NULL, NULL},
     0},
    {"buzon_auth_penalties_total",
     "Failed logins answered after a penalty delay.",
     METRICS_COUNTER,
     MV_AUTH_PENALTIES,
     {NULL, NULL},
     0},
    {"buzon_auth_bans_total",
     "Client addresses banned after too many failed logins.",
     METRICS_COUNTER,
     MV_AUTH_BANS,
     {NULL, NULL},
     0},
};

/* A consistent sum of every slot and the retired totals. */
struct metrics_snapshot {
	uint64_t values[MV_COUNT];
	unsigned int processes[METRICS_ROLE_COUNT];
};

/* A release takes microseconds, unless the master is preempted in the middle of one; a reader
 * that has seen releases in progress for this long faces a master that died inside one, and
 * renders what it read rather than hang. */
#define METRICS_SNAPSHOT_PATIENCE_NS (100 * 1000 * 1000)

static void metrics_snapshot_read(const struct metrics *metrics, struct metrics_snapshot *snap)
{
	const struct metrics_shared *shared = metrics->shared;

	memset(snap, 0, sizeof(*snap));
	for (unsigned int i = 0; i < MV_COUNT; i++)
		snap->values[i] =
		    atomic_load_explicit(&shared->retired.values[i], memory_order_relaxed);
	for (unsigned int s = 0; s < metrics->slot_count; s++) {
		const struct metrics_slot *slot = &shared->slots[s];
		unsigned int role = atomic_load_explicit(&slot->role, memory_order_relaxed);
		if (role == 0)
			continue; /* free slots are all zero */
		if (role <= METRICS_ROLE_COUNT)
			snap->processes[role - 1]++;
		for (unsigned int i = 0; i < MV_COUNT; i++)
			snap->values[i] +=
			    atomic_load_explicit(&slot->values[i], memory_order_relaxed);
	}
}

/* The seqlock's reader: a snapshot that no release overlapped. */
static void metrics_snapshot(const struct metrics *metrics, struct metrics_snapshot *snap)
{
	const atomic_uint *sequence = &metrics->shared->release_sequence;
	uint64_t give_up = metrics_monotonic_ns() + METRICS_SNAPSHOT_PATIENCE_NS;

	do {
		unsigned int before = atomic_load_explicit(sequence, memory_order_acquire);
		if (before % 2 != 0)
			continue;
		metrics_snapshot_read(metrics, snap);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(sequence, memory_order_relaxed) == before)
			return;
	} while (metrics_monotonic_ns() < give_up);
	metrics_snapshot_read(metrics, snap);
}

static void metrics_render_header(struct evbuffer *out, const char *name, const char *help,
				  const char *type)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes {a="x",b="y"} (plus extra, a preformatted last label) for the cell at combination. */
static void metrics_render_labels(struct evbuffer *out, const struct metrics_family *family,
				  unsigned int combination, const char *extra)
{
	unsigned int inner = family->labels[1] != NULL ? family->labels[1]->count : 1;
	unsigned int indexes[2] = {combination / inner, combination % inner};
	bool any = false;

	for (unsigned int l = 0; l < 2; l++) {
		if (family->labels[l] == NULL)
			continue;
		evbuffer_add_printf(out, "%s%s=\"%s\"", any ? "," : "{", family->labels[l]->name,
				    family->labels[l]->values[indexes[l]]);
		any = true;
	}
	if (extra != NULL) {
		evbuffer_add_printf(out, "%s%s", any ? "," : "{", extra);
		any = true;
	}
	if (any)
		evbuffer_add(out, "}", 1);
}

static unsigned int metrics_family_cells(const struct metrics_family *family)
{
	unsigned int cells = 1;

	for (unsigned int l = 0; l < 2; l++) {
		if (family->labels[l] != NULL)
			cells *= family->labels[l]->count;
	}
	return cells;
}

static void metrics_render_histogram(struct evbuffer *out, const struct metrics_family *family,
				     const struct metrics_snapshot *snap)
{
	for (unsigned int c = 0; c < metrics_family_cells(family); c++) {
		const uint64_t *buckets = &snap->values[family->base + c * METRICS_BUCKET_COUNT];
		uint64_t cumulative = 0;
		char le[32];
		for (unsigned int b = 0; b < METRICS_BUCKET_COUNT; b++) {
			cumulative += buckets[b];
			snprintf(le, sizeof(le), "le=\"%s\"", metrics_buckets[b].le);
			evbuffer_add_printf(out, "%s_bucket", family->name);
			metrics_render_labels(out, family, c, le);
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)cumulative);
		}
		uint64_t ns = snap->values[family->sum_base + c];
		evbuffer_add_printf(out, "%s_sum", family->name);
		metrics_render_labels(out, family, c, NULL);
		evbuffer_add_printf(out, " %llu.%09llu\n", (unsigned long long)(ns / 1000000000u),
				    (unsigned long long)(ns % 1000000000u));
		evbuffer_add_printf(out, "%s_count", family->name);
		metrics_render_labels(out, family, c, NULL);
		evbuffer_add_printf(out, " %llu\n", (unsigned long long)cumulative);
	}
}

static void metrics_render_family(struct evbuffer *out, const struct metrics_family *family,
				  const struct metrics_snapshot *snap)
{
	static const char *const kind_names[] = {"counter", "gauge", "histogram"};

	metrics_render_header(out, family->name, family->help, kind_names[family->kind]);
	if (family->kind == METRICS_HISTOGRAM) {
		metrics_render_histogram(out, family, snap);
		return;
	}
	for (unsigned int c = 0; c < metrics_family_cells(family); c++) {
		uint64_t value = snap->values[family->base + c];
		evbuffer_add(out, family->name, strlen(family->name));
		metrics_render_labels(out, family, c, NULL);
		if (family->kind == METRICS_GAUGE)
			evbuffer_add_printf(out, " %lld\n", (long long)(int64_t)value);
		else
			evbuffer_add_printf(out, " %llu\n", (unsigned long long)value);
	}
}

/* The families that are not slot values: the daemon's start, its processes, its version. */
static void metrics_render_process_families(struct evbuffer *out, const struct metrics *metrics,
					    const struct metrics_snapshot *snap)
{
	metrics_render_header(out, "buzon_start_time_seconds",
			      "Start time of the buzon master process since the Unix epoch.",
			      "gauge");
	evbuffer_add_printf(out, "buzon_start_time_seconds %lld\n",
			    (long long)metrics->shared->start_time);
	metrics_render_header(out, "buzon_processes", "buzon child processes running, by role.",
			      "gauge");
	for (unsigned int r = 0; r < METRICS_ROLE_COUNT; r++)
		evbuffer_add_printf(out, "buzon_processes{role=\"%s\"} %u\n", metrics_role_names[r],
				    snap->processes[r]);
	metrics_render_header(out, "buzon_build_info", "The running buzon version.", "gauge");
	evbuffer_add_printf(out, "buzon_build_info{version=\"%s\"} 1\n", BUZON_VERSION);
}

void metrics_render(const struct metrics *metrics, struct evbuffer *out)
{
	struct metrics_snapshot snap;

	metrics_snapshot(metrics, &snap);
	metrics_render_process_families(out, metrics, &snap);
	for (size_t f = 0; f < ARRAY_SIZE(metrics_families); f++)
		metrics_render_family(out, &metrics_families[f], &snap);
}
