/* The auth process: owns the user database and password hashes, verifies credentials for the POP3
 * workers in a small thread pool so that slow hashes never block an event loop, and answers with
 * yes/no plus the mailbox location. Workers never see a hash. */
#ifndef BUZON_AUTH_AUTH_SERVER_H
#define BUZON_AUTH_AUTH_SERVER_H

#include "auth/penalty.h"
#include "core/config.h"

struct ban_table;
struct net_list;

/* Runs the auth process until control_fd (from the master) closes; it ignores stop signals.
 * Workers' connections (SOCK_SEQPACKET) arrive over control_fd as SCM_RIGHTS, one per datagram.
 * Banned client IPs are written into bans, which the workers read. Returns the exit status. */
int auth_server_main(const struct buzon_config *config, int control_fd, struct ban_table *bans);

/* Builds the penalty settings from [auth]; *trusted_r gets the parsed trusted_networks (free with
 * net_list_free()). Returns -1 with a newly allocated *error_r if a value is out of range, so the
 * master can refuse such a config before it starts anything. */
int auth_penalty_config(const struct buzon_config *config, struct penalty_config *pc,
			struct net_list **trusted_r, char **error_r);

/* Sends fd over control_fd as SCM_RIGHTS (used by the master). Returns -1 on failure. */
int auth_server_send_fd(int control_fd, int fd);

#endif
