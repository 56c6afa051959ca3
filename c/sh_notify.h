/*
 * sh_notify.h -- telling the service manager how the process is doing: the
 * sd_notify(3) protocol, spoken without libsystemd.
 */
#ifndef SH_NOTIFY_H
#define SH_NOTIFY_H

#include "sh_core.h"

/*
 * sh_notify: send `state` (newline-separated VAR=VALUE lines, e.g.
 * "READY=1") as one datagram to the AF_UNIX socket $NOTIFY_SOCKET names: a
 * path, or an abstract name written with a leading '@'.  Returns SH_OK when
 * it was sent, SH_DECLINED when there is nothing to tell (NOTIFY_SOCKET
 * unset or empty: not run by a service manager that asks), SH_ERROR when
 * sending failed (logged at warn; the caller goes on: readiness is the
 * manager's concern, not a reason to stop serving).
 */
int sh_notify(const char *state);

/* every listener and the admin endpoint are up: "READY=1" */
int sh_notify_ready(void);

/* a config reload begins ("RELOADING=1" with the MONOTONIC_USEC that
 * Type=notify-reload asks for); sh_notify_ready() when it is done */
int sh_notify_reloading(void);

/* stopping has begun: "STOPPING=1" */
int sh_notify_stopping(void);

#endif /* SH_NOTIFY_H */
