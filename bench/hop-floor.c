/*
 * hop-floor.c -- the cheapest user-space TCP hop, to measure what any proxy
 * between redis-benchmark and Redis must add on this machine.
 *
 * Listens on LPORT and relays every connection to 127.0.0.1:RPORT, bytes as
 * they come, no parsing, one backend connection per client:
 *
 *   threads: two blocking threads per connection (client to backend and
 *            back), a read(2) and a write(2) per chunk: no poll at all.
 *   epoll:   one thread, level-triggered epoll_wait, then a read(2) and a
 *            write(2) per ready socket: the shape of a one-loop proxy.
 *   spin:    the same loop, but epoll_wait never sleeps (timeout 0): a
 *            whole CPU spent so that no byte waits for a wake-up.
 *
 * Whatever it adds to direct access (one client, -P 1) is the floor of a
 * hop through two more loopback sockets and two more wake-ups; a proxy
 * that parses, routes and multiplexes can only add to it.  TCP_NODELAY on
 * every socket.  See bench/README.md.
 *
 *   cc -O2 -pthread -o /tmp/hop-floor bench/hop-floor.c
 *   /tmp/hop-floor threads 7001 6379 &   (or: epoll, spin)
 *   redis-benchmark -p 7001 -t get -c 1 -n 100000
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
#define MAXFD 4096

static int rport;

static int
dial(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons(rport) };
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
        perror("connect to the backend");
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Write all of buf; 0 on success, -1 when the other end has gone. */
static int
write_all(int fd, const char *buf, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);

        if (w <= 0)
            return -1;
        buf += w;
        n -= w;
    }
    return 0;
}

/* One relayed connection: the two pumps share it; the last to end closes. */
struct relay {
    int fd[2];
    int left;
};

struct pump_arg {
    struct relay *r;
    int from, to;
};

static void *
pump(void *arg)
{
    struct pump_arg p = *(struct pump_arg *) arg;
    char *buf = malloc(BUF);
    ssize_t n;

    free(arg);
    while ((n = read(p.from, buf, BUF)) > 0)
        if (write_all(p.to, buf, n) < 0)
            break;
    shutdown(p.to, SHUT_WR);
    free(buf);
    if (__atomic_sub_fetch(&p.r->left, 1, __ATOMIC_ACQ_REL) == 0) {
        close(p.r->fd[0]);
        close(p.r->fd[1]);
        free(p.r);
    }
    return NULL;
}

static void
spawn(struct relay *r, int from, int to)
{
    struct pump_arg *p = malloc(sizeof(*p));
    pthread_t t;

    p->r = r;
    p->from = from;
    p->to = to;
    pthread_create(&t, NULL, pump, p);
    pthread_detach(t);
}

static void
run_threads(int lfd)
{
    for (;;) {
        int one = 1, c = accept(lfd, NULL, NULL);
        struct relay *r;

        if (c < 0)
            continue;
        r = malloc(sizeof(*r));
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        r->fd[0] = c;
        r->fd[1] = dial();
        r->left = 2;
        spawn(r, c, r->fd[1]);
        spawn(r, r->fd[1], c);
    }
}

static void
run_epoll(int lfd, int timeout)
{
    static int peer[MAXFD];
    struct epoll_event ev = { .events = EPOLLIN }, evs[256];
    char *buf = malloc(BUF);
    int ep = epoll_create1(0);

    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int i, n = epoll_wait(ep, evs, 256, timeout);

        for (i = 0; i < n; i++) {
            int fd = evs[i].data.fd, one = 1;
            ssize_t r;

            if (fd == lfd) {
                int c = accept(lfd, NULL, NULL), b;

                if (c < 0)
                    continue;
                if (c >= MAXFD) {
                    close(c);
                    continue;
                }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                b = dial();
                if (b >= MAXFD)
                    exit(1);
                peer[c] = b;
                peer[b] = c;
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                ev.data.fd = b;
                epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev);
                continue;
            }
            if (peer[fd] < 0)       /* closed earlier in this batch */
                continue;
            r = read(fd, buf, BUF);
            if (r > 0 && write_all(peer[fd], buf, r) == 0)
                continue;
            close(peer[fd]);        /* closing removes both from epoll */
            close(fd);
            peer[peer[fd]] = -1;
            peer[fd] = -1;
        }
    }
}

int
main(int argc, char **argv)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    int one = 1, lfd;

    if (argc != 4 || (strcmp(argv[1], "threads") && strcmp(argv[1], "epoll")
                      && strcmp(argv[1], "spin"))) {
        fprintf(stderr, "usage: hop-floor threads|epoll|spin LPORT RPORT\n");
        return 2;
    }
    rport = atoi(argv[3]);
    a.sin_port = htons(atoi(argv[2]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(lfd, (struct sockaddr *) &a, sizeof(a)) < 0
        || listen(lfd, 1024) < 0) {
        perror("listen");
        return 1;
    }
    if (argv[1][0] == 't')
        run_threads(lfd);
    else
        run_epoll(lfd, argv[1][0] == 's' ? 0 : -1);
    return 0;
}
