/*
 * sh_notify.c -- the sd_notify(3) protocol without libsystemd: one
 * datagram of "VAR=VALUE" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (systemd's "Notification socket" in sd_notify(3) and
 * systemd.service(5), Type=notify).
 *
 * Not supported: "vsock:" addresses (a VM's manager on the host), file
 * descriptor passing (FDSTORE=1), and sending as another pid
 * (sd_pid_notify): shotover needs none of them.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sh_notify.h"

int
sh_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    size_t len, n = strlen(state);
    socklen_t salen;
    ssize_t sent;
    int fd;

    if (name == NULL || name[0] == '\0') {
        return SH_DECLINED;
    }
    len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len >= sizeof(sa.sun_path)) {
        sh_log_warn("NOTIFY_SOCKET \"%s\": not a socket path or an "
                    "@abstract name that fits sun_path: not notified", name);
        return SH_ERROR;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, name, len);
    salen = (socklen_t) (offsetof(struct sockaddr_un, sun_path) + len);
    if (name[0] == '@') {
        sa.sun_path[0] = '\0';    /* abstract: the length bounds the name */
    } else {
        salen++;                  /* a path: its terminating NUL too */
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sh_log_warn("NOTIFY_SOCKET \"%s\": socket: %s", name,
                    strerror(errno));
        return SH_ERROR;
    }
    do {
        sent = sendto(fd, state, n, MSG_NOSIGNAL, (struct sockaddr *) &sa,
                      salen);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 || (size_t) sent != n) {
        sh_log_warn("NOTIFY_SOCKET \"%s\": sending \"%s\": %s", name, state,
                    sent < 0 ? strerror(errno) : "short write");
        close(fd);
        return SH_ERROR;
    }
    close(fd);
    sh_log_debug("told the service manager %s", state);
    return SH_OK;
}

int
sh_notify_ready(void)
{
    return sh_notify("READY=1");
}

int
sh_notify_reloading(void)
{
    struct timespec ts;
    char state[64];

    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long) ts.tv_sec * 1000000ULL
             + (unsigned long long) ts.tv_nsec / 1000ULL);
    return sh_notify(state);
}

int
sh_notify_stopping(void)
{
    return sh_notify("STOPPING=1");
}
