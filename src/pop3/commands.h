/* Internal to src/pop3/: the command handlers that live outside commands.c (login.c: USER, PASS,
 * APOP, AUTH, UTF8) and what they share with it. */
#ifndef BUZON_POP3_COMMANDS_H
#define BUZON_POP3_COMMANDS_H

#include <event2/buffer.h>

#include "pop3/parse.h"
#include "pop3/session.h"

enum pop3_outcome pop3_cmd_user(struct pop3_session *session, const struct pop3_command_line *cmd);
enum pop3_outcome pop3_cmd_pass(struct pop3_session *session, const struct pop3_command_line *cmd);
enum pop3_outcome pop3_cmd_apop(struct pop3_session *session, const struct pop3_command_line *cmd);
enum pop3_outcome pop3_cmd_auth(struct pop3_session *session, const struct pop3_command_line *cmd);
enum pop3_outcome pop3_cmd_utf8(struct pop3_session *session, const struct pop3_command_line *cmd);
/* lang.c */
enum pop3_outcome pop3_cmd_lang(struct pop3_session *session, const struct pop3_command_line *cmd);

/* A client response line during a SASL exchange (RFC 5034): base64, "=" for empty, "*" cancels. */
enum pop3_outcome pop3_sasl_response(struct pop3_session *session, const char *line);

/* Ends the SASL exchange in progress without a response (the auth process forgets it). Used when a
 * response line is refused before it is decoded (too long, NUL bytes): the -ERR for that line ends
 * the exchange for the client (RFC 5034 §4), so the server must not read the next line as one. */
void pop3_sasl_abort(struct pop3_session *session);

/* Appends the CAPA "SASL …" line with the mechanisms allowed on this connection (nothing if none).
 */
void pop3_capa_sasl(struct pop3_session *session, struct evbuffer *out);

/* The RFC 2449/3206 response code for a storage failure. */
const char *pop3_store_error_code(enum store_error kind);

#endif
