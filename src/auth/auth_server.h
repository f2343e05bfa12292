/* The auth process: owns the user database and password hashes, verifies credentials for the POP3
 * workers in a small thread pool so that slow hashes never block an event loop, and answers with
 * yes/no plus the mailbox location. Workers never see a hash. */
#ifndef BUZON_AUTH_AUTH_SERVER_H
#define BUZON_AUTH_AUTH_SERVER_H

#include "core/config.h"

/* Runs the auth process until control_fd (from the master) closes or SIGTERM arrives.
 * Workers' connections (SOCK_SEQPACKET) arrive over control_fd as SCM_RIGHTS, one per datagram.
 * Returns the process exit status. */
int auth_server_main(const struct buzon_config *config, int control_fd);

/* Sends fd over control_fd as SCM_RIGHTS (used by the master). Returns -1 on failure. */
int auth_server_send_fd(int control_fd, int fd);

#endif
