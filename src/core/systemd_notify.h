/* Start-up, reload and stop notifications to systemd (sd_notify), for dist/systemd/buzon.service,
 * which is Type=notify: systemd considers buzon started only once the master says it is ready,
 * so units ordered After=buzon.service, and `systemctl start` itself, wait until the listeners
 * are bound and the children forked. Outside systemd (NOTIFY_SOCKET unset) every call does
 * nothing. Only the master may call these: the unit accepts notifications from the main process
 * alone (NotifyAccess=main). */
#ifndef BUZON_CORE_SYSTEMD_NOTIFY_H
#define BUZON_CORE_SYSTEMD_NOTIFY_H

/* Start-up is complete: every listener is bound and every child forked. Also sent after a
 * reload, successful or refused, to end the RELOADING state. status is a one-line text that
 * `systemctl status` shows ("serving, 2 POP3 workers"). */
void systemd_notify_ready(const char *status);

/* A reload (SIGHUP or `buzon reload`) has begun; systemd shows the unit as "reloading" until
 * the next systemd_notify_ready(). */
void systemd_notify_reloading(void);

/* The server is stopping (SIGTERM): sessions drain, then it exits; status says so. */
void systemd_notify_stopping(const char *status);

#endif
