/*
 * uring-vs-write.c -- a small reply to each of many sockets: a write(2)
 * each, or one io_uring submission of a send each.
 *
 * Opens NSOCK loopback TCP connections and, ITERS times, sends a 9-byte
 * reply ("$3\r\nbar\r\n") to every one of them: with write(2) per socket
 * (mode 0), or with io_uring, BATCH sends with MSG_DONTWAIT per submission
 * (mode 1), as shotover sends the replies of one loop iteration
 * (c/sh_uring.c).  Between rounds the other ends are read (not timed).
 * Prints the wall time per reply of the sending part, and the cost of a
 * null system call (getppid) for scale.  See bench/README.md.
 *
 *   cc -O2 -o /tmp/uring-vs-write bench/uring-vs-write.c -luring
 *   /tmp/uring-vs-write 0; /tmp/uring-vs-write 1 3; /tmp/uring-vs-write 1 50
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NSOCK 50
#define ITERS 20000

static double
now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int
main(int argc, char **argv)
{
    static const char reply[] = "$3\r\nbar\r\n";
    int mode = argc > 1 ? atoi(argv[1]) : 0;
    int batch = argc > 2 ? atoi(argv[2]) : NSOCK;
    int ls, cs[NSOCK], ss[NSOCK], one = 1, i, it, b;
    struct sockaddr_in a = { .sin_family = AF_INET };
    socklen_t len = sizeof(a);
    struct io_uring ring;
    char buf[65536];
    double t = 0, t0;
    long short_sends = 0;

    if (batch < 1 || batch > NSOCK) {
        fprintf(stderr, "batch: 1..%d\n", NSOCK);
        return 2;
    }
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ls = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(ls, (struct sockaddr *) &a, sizeof(a)) != 0
        || getsockname(ls, (struct sockaddr *) &a, &len) != 0
        || listen(ls, NSOCK) != 0)
    {
        perror("listen");
        return 1;
    }
    for (i = 0; i < NSOCK; i++) {
        cs[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(cs[i], (struct sockaddr *) &a, sizeof(a));
        ss[i] = accept(ls, NULL, NULL);
        setsockopt(ss[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (io_uring_queue_init(NSOCK, &ring, IORING_SETUP_SUBMIT_ALL
                            | IORING_SETUP_COOP_TASKRUN
                            | IORING_SETUP_SINGLE_ISSUER
                            | IORING_SETUP_DEFER_TASKRUN) != 0)
    {
        perror("io_uring_queue_init");
        return 1;
    }
    for (it = 0; it < ITERS; it++) {
        t0 = now_us();
        if (mode == 0) {
            for (i = 0; i < NSOCK; i++) {
                if (write(ss[i], reply, 9) != 9) {
                    short_sends++;
                }
            }
        } else {
            for (b = 0; b < NSOCK; b += batch) {
                struct io_uring_cqe *cqe;
                unsigned head, k = 0;

                for (i = b; i < b + batch && i < NSOCK; i++) {
                    io_uring_prep_send(io_uring_get_sqe(&ring), ss[i], reply,
                                       9, MSG_DONTWAIT | MSG_NOSIGNAL);
                }
                io_uring_submit_and_get_events(&ring);
                io_uring_for_each_cqe(&ring, head, cqe) {
                    if (cqe->res != 9) {
                        short_sends++;
                    }
                    k++;
                }
                io_uring_cq_advance(&ring, k);
            }
        }
        t += now_us() - t0;
        for (i = 0; i < NSOCK; i++) {
            while (read(cs[i], buf, sizeof(buf)) > 0) {
            }
        }
    }
    t0 = now_us();
    for (i = 0; i < 1000000; i++) {
        syscall(SYS_getppid);
    }
    printf("%s: %.2f us per reply (%ld short); a null system call %.2f us\n",
           mode == 0 ? "write(2)" : "io_uring", t / ITERS / NSOCK,
           short_sends, (now_us() - t0) / 1e6);
    if (mode != 0) {
        printf("  (%d sends per submission)\n", batch);
    }
    return 0;
}
