/*
 * writev-vs-copy.c -- what the kernel charges for many small iovecs.
 *
 * Writes N buffers of SIZE bytes to a loopback TCP socket ITERS times,
 * either with one writev of N iovecs (mode 0) or copied into one buffer
 * and written with one write (mode 1), and prints the writing thread's CPU
 * per call (user + system, the loopback receive path included, as it is
 * for shotover's writes).  A thread drains the other end.  This is the
 * measurement behind shotover writing small frames flat
 * (sh_write_flat_fits in c/sh_worker.h); see bench/README.md.
 *
 *   cc -O2 -o /tmp/writev-vs-copy bench/writev-vs-copy.c -lpthread
 *   /tmp/writev-vs-copy 16 10 100000 0; /tmp/writev-vs-copy 16 10 100000 1
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_IOV 1024

static int rfd;

static void *
drain(void *arg)
{
    char buf[65536];

    (void) arg;
    while (read(rfd, buf, sizeof(buf)) > 0) {
    }
    return NULL;
}

static double
thread_cpu(void)
{
    struct rusage u;

    getrusage(RUSAGE_THREAD, &u);
    return (double) (u.ru_utime.tv_sec + u.ru_stime.tv_sec)
           + (double) (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int
main(int argc, char **argv)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    struct iovec iov[MAX_IOV];
    socklen_t alen = sizeof(a);
    int n, size, iters, flat, ls, w, one = 1, i, k;
    char *data, *copy;
    pthread_t t;
    double c0;

    if (argc != 5 || (n = atoi(argv[1])) < 1 || n > MAX_IOV
        || (size = atoi(argv[2])) < 1 || (iters = atoi(argv[3])) < 1)
    {
        fprintf(stderr, "usage: %s N SIZE ITERS MODE (0: writev, 1: copy)\n",
                argv[0]);
        return 2;
    }
    flat = atoi(argv[4]);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ls = socket(AF_INET, SOCK_STREAM, 0);
    w = socket(AF_INET, SOCK_STREAM, 0);
    if (ls < 0 || w < 0 || bind(ls, (struct sockaddr *) &a, sizeof(a)) != 0
        || listen(ls, 1) != 0
        || getsockname(ls, (struct sockaddr *) &a, &alen) != 0
        || connect(w, (struct sockaddr *) &a, sizeof(a)) != 0
        || (rfd = accept(ls, NULL, NULL)) < 0)
    {
        perror("loopback socket");
        return 1;
    }
    setsockopt(w, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pthread_create(&t, NULL, drain, NULL);
    data = malloc((size_t) n * (size_t) size);
    copy = malloc((size_t) n * (size_t) size);
    memset(data, 'x', (size_t) n * (size_t) size);
    for (i = 0; i < n; i++) {
        iov[i].iov_base = data + (size_t) i * (size_t) size;
        iov[i].iov_len = (size_t) size;
    }
    c0 = thread_cpu();
    for (k = 0; k < iters; k++) {
        ssize_t r;

        if (flat) {
            char *p = copy;

            for (i = 0; i < n; i++) {
                memcpy(p, iov[i].iov_base, iov[i].iov_len);
                p += iov[i].iov_len;
            }
            r = write(w, copy, (size_t) (p - copy));
        } else {
            r = writev(w, iov, n);
        }
        if (r < 0) {
            perror("write");
            return 1;
        }
    }
    printf("%d x %d B, %s: %.2f us of CPU per call\n", n, size,
           flat ? "copied, one write" : "writev", (thread_cpu() - c0) * 1e6 / iters);
    shutdown(w, SHUT_WR);
    pthread_join(t, NULL);
    return 0;
}
