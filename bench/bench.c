/*
 * The setup the C echo servers of `make bench` share (see bench.h); none
 * of it runs per frame.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

const char *bench_name = "bench";
void (*bench_on_die)(void);

void die(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", bench_name, what, strerror(errno));
    if (bench_on_die)
        bench_on_die();
    exit(1);
}

int bench_listen(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        die("socket");
    if (ss->ss_family == AF_INET &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("SO_REUSEADDR");
    if (bind(fd, (const struct sockaddr *)ss, len) < 0)
        die("bind");
    if (listen(fd, SOMAXCONN) < 0)
        die("listen");
    return fd;
}

int bench_listen_port(const char *port_s)
{
    char *end;
    long port = strtol(port_s, &end, 10);
    if (*port_s == '\0' || *end || port < 1 || port > 65535) {
        fprintf(stderr, "%s: bad port '%s'\n", bench_name, port_s);
        exit(2);
    }
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof ss);
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return bench_listen(&ss, sizeof *in);
}

static struct {
    struct event *listener, *accept_retry;
    void (*conn_open)(int fd);
} serve;

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_add(serve.listener, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what, (void)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int one = 1;
            /* Fails harmlessly on unix sockets. */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            serve.conn_open(fd);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            /* The pending connection stays queued and would wake us at
             * once; pause accepting for a moment instead of spinning. */
            struct timeval pause = { 0, 100 * 1000 };
            fprintf(stderr, "%s: accept: %s\n", bench_name, strerror(errno));
            event_del(serve.listener);
            evtimer_add(serve.accept_retry, &pause);
            return;
        }
        if (errno != EINTR && errno != ECONNABORTED)
            return;             /* EAGAIN: accepted all that was queued */
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    event_base_loopbreak(arg);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void bench_serve(struct event_base *base, int lfd, void (*conn_open)(int fd))
{
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);   /* a peer gone mid-write is just a closed conn */
    serve.conn_open = conn_open;
    serve.listener = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
    serve.accept_retry = evtimer_new(base, on_accept_retry, NULL);
    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    if (!serve.listener || !serve.accept_retry || !sigint || !sigterm ||
        event_add(serve.listener, NULL) < 0 || event_add(sigint, NULL) < 0 ||
        event_add(sigterm, NULL) < 0)
        die("event setup");

    event_base_dispatch(base);

    event_free(sigterm);
    event_free(sigint);
    event_free(serve.accept_retry);
    event_free(serve.listener);
    close(lfd);
}
