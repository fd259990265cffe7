/*
 * What the C echo servers of `make bench` (ceiling, ceiling_tls, floor)
 * share around their per-frame work: the frame header, dying on setup
 * errors, the listening socket and the accept/signal loop. The per-frame
 * work stays in each server, so each reference keeps its own cost.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>

#define MAX_FRAME (16u << 20)    /* a larger announced frame closes the connection */

/* The u32 big-endian frame length; inline, it is on every frame's path. */
static inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Set by main before anything can fail: the name errors start with, and
 * what else to print when dying (NULL: nothing). */
extern const char *bench_name;
extern void (*bench_on_die)(void);

_Noreturn void die(const char *what);

/* A listening socket on 127.0.0.1:port (exit 2 on a bad port), or on ss. */
int bench_listen_port(const char *port_s);
int bench_listen(const struct sockaddr_storage *ss, socklen_t len);

/* Raises the descriptor limit, ignores SIGPIPE, accepts on lfd (with
 * TCP_NODELAY, pausing while out of descriptors) handing each socket to
 * conn_open, until SIGINT/SIGTERM. Open connections are left to exit. */
void bench_serve(struct event_base *base, int lfd, void (*conn_open)(int fd));

#endif
