/* The auth process's request handling without its poll loop, signals or sandbox, exported only for
 * the fuzz target (fuzz/fuzz_auth_request.c): it hands datagrams in as if a worker had sent them,
 * reads the replies from its end of the connection, and decides when the hashing threads' verdicts
 * are taken. The server itself runs exactly the code auth_server_main() runs. */
#ifndef BUZON_AUTH_AUTH_SERVER_TESTING_H
#define BUZON_AUTH_AUTH_SERVER_TESTING_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

struct auth_server;
struct ban_table;

/* Sets up what auth_server_main() sets up (dummy secret, mechanisms, penalties, the passwd-file,
 * [auth] threads hashing threads) but installs no signal handler and no sandbox. config and bans
 * must outlive the server. Free with auth_server_testing_free(). */
struct auth_server *auth_server_testing_new(const struct buzon_config *config,
					    struct ban_table *bans);
/* Stops the hashing threads, closes every connection, frees *server and sets it to NULL. */
void auth_server_testing_free(struct auth_server **server);

/* Takes fd (a SOCK_SEQPACKET end) as a worker connection, as if the master had passed it. */
void auth_server_testing_add_conn(struct auth_server *server, int fd);

/* Handles one datagram received on connection fd, as the poll loop does: decode, dispatch, and
 * replies sent on fd; a malformed datagram closes fd. Password checks go to the hashing threads
 * and are answered only by auth_server_testing_settle(). Returns false if fd was closed. Aborts if
 * fd is not an open connection. */
bool auth_server_testing_datagram(struct auth_server *server, int fd, const void *buf, size_t len);

/* Closes connection fd as when its worker goes away (checks in flight are still finished, their
 * answers dropped). Does nothing if fd is not an open connection. */
void auth_server_testing_close_conn(struct auth_server *server, int fd);

/* Waits until every password check submitted so far is done and answered. */
void auth_server_testing_settle(struct auth_server *server);

/* Forgets every client's failures and bans, and makes new per-process keys, as a restart of the
 * auth process would; so that one fuzz input cannot change how the next one is answered. */
void auth_server_testing_forget_clients(struct auth_server *server);

#endif
