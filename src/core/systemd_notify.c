/* Notifications to systemd (see systemd_notify.h). */
#include <systemd/sd-daemon.h>
#include <time.h>

#include "core/systemd_notify.h"

/* unset_environment stays 0: the master notifies again at every reload and at stop. A failure
 * is not worth handling: systemd would only see the service late, and logs say the rest. */
void systemd_notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void systemd_notify_reloading(void)
{
	struct timespec now;

	/* MONOTONIC_USEC tells systemd (Type=notify-reload, systemd 253+) which reload this is */
	clock_gettime(CLOCK_MONOTONIC, &now);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
		   (unsigned long long)now.tv_sec * 1000000ULL +
		       (unsigned long long)now.tv_nsec / 1000ULL);
}

void systemd_notify_stopping(const char *status)
{
	sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}
