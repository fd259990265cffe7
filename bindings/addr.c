/*
** addr.c — address strings <-> sockaddrs, sockets, and errno -> the short
** lower-case error vocabulary of the contract.
**
** Accepted forms: "host:port", "[v6addr]:port", "unix:/path". Port 0 asks
** for an ephemeral port. Host names resolve through getaddrinfo.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/util.h>

#include "lc.h"

/* The contract's words for the errors users branch on; the OS's own text
** (lower-cased) for everything else. Copies into buf when it must. */
const char *lc_strerror (int err, char *buf, size_t size) {
  switch (err) {
    case ECONNREFUSED: return "connection refused";
    case EADDRINUSE: return "address in use";
    case ETIMEDOUT: return "timeout";
    case EPIPE:
    case ECONNRESET: return "closed";
    default: break;
  }
  snprintf(buf, size, "%s", strerror(err));
  if (buf[0]) buf[0] = (char)tolower((unsigned char)buf[0]);
  return buf;
}

/* "unix:/path" -> a; -1 when the path does not fit sun_path (the kernel
** would silently cut it, and bind a different file). */
static int parse_unix (const char *path, lc_addr *a) {
  struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof un->sun_path) return -1;
  memset(un, 0, sizeof *un);
  un->sun_family = AF_UNIX;
  memcpy(un->sun_path, path, n);
  a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

/* Splits "host:port" / "[v6]:port" into host and port (both in buf). */
int lc_split_addr (const char *s, char *buf, size_t size, const char **host, const char **port) {
  char *colon;
  if (strlen(s) >= size) return -1;
  strcpy(buf, s);
  if (buf[0] == '[') {
    char *close = strchr(buf, ']');
    if (close == NULL || close[1] != ':') return -1;
    *close = '\0';
    *host = buf + 1;
    *port = close + 2;
  } else {
    colon = strrchr(buf, ':');
    if (colon == NULL || strchr(buf, ':') != colon) return -1;
    *colon = '\0';
    *host = buf;
    *port = colon + 1;
  }
  if (**port == '\0' || strspn(*port, "0123456789") != strlen(*port)) return -1;
  if (atoi(*port) > 65535) return -1;
  return 0;
}

/*
** Parses s into a. Returns NULL on success, else the error text: a message
** about the string's form (the caller raises: it is a programming error) is
** prefixed with '!', a failed name lookup is not (the caller returns it).
** With numeric set, a host name is not looked up: the result is LC_NEEDS_DNS.
*/
const char *lc_parse_addr_opt (const char *s, int socktype, lc_addr *a, int numeric) {
  char buf[512];
  const char *host, *port;
  struct evutil_addrinfo hints, *res = NULL;
  int rc;
  memset(a, 0, sizeof *a);
  if (strncmp(s, "unix:", 5) == 0) return parse_unix(s + 5, a) == 0 ? NULL : "!bad unix socket path";
  if (lc_split_addr(s, buf, sizeof buf, &host, &port) != 0)
    return "!address must be \"host:port\", \"[v6]:port\" or \"unix:/path\"";
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = EVUTIL_AI_NUMERICSERV | EVUTIL_AI_ADDRCONFIG;
  if (numeric) hints.ai_flags |= EVUTIL_AI_NUMERICHOST;
  if (*host == '\0' || strcmp(host, "*") == 0) {
    host = NULL;
    hints.ai_flags |= EVUTIL_AI_PASSIVE;
  }
  rc = evutil_getaddrinfo(host, port, &hints, &res);
  if (rc != 0 && numeric && host != NULL) return LC_NEEDS_DNS;
  if (rc != 0) return rc == EVUTIL_EAI_NONAME ? "unknown host" : evutil_gai_strerror(rc);
  memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
  a->len = (socklen_t)res->ai_addrlen;
  evutil_freeaddrinfo(res);
  return NULL;
}

/* Blocking for host names: for listen and UDP, set up at start, not per call. */
const char *lc_parse_addr (const char *s, int socktype, lc_addr *a) {
  return lc_parse_addr_opt(s, socktype, a, 0);
}

/* Pushes host, port of sa (for AF_UNIX: the path and nil). */
int lc_push_sockaddr (lua_State *L, const struct sockaddr *sa, socklen_t len) {
  char host[INET6_ADDRSTRLEN];
  if (sa->sa_family == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
      ? strnlen(un->sun_path, len - offsetof(struct sockaddr_un, sun_path))
      : 0;
    lua_pushlstring(L, un->sun_path, n);
    lua_pushnil(L);
    return 2;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    evutil_inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(in6->sin6_port));
    return 2;
  }
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    evutil_inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    lua_pushstring(L, host);
    lua_pushinteger(L, ntohs(in->sin_port));
    return 2;
  }
  lua_pushnil(L);
  lua_pushnil(L);
  return 2;
}

/* Pushes "host:port" / "[v6]:port" / "unix:/path". */
void lc_push_addrstring (lua_State *L, const struct sockaddr *sa, socklen_t len) {
  const char *fmt = sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d";
  lc_push_sockaddr(L, sa, len); /* host, port */
  if (sa->sa_family == AF_UNIX) lua_pushfstring(L, "unix:%s", lua_tostring(L, -2));
  else lua_pushfstring(L, fmt, lua_tostring(L, -2), (int)lua_tointeger(L, -1));
  lua_replace(L, -3); /* str, port */
  lua_pop(L, 1);
}

/* A non-blocking, close-on-exec socket for a, or -1 with errno set. */
evutil_socket_t lc_socket (const lc_addr *a, int socktype) {
  evutil_socket_t fd = socket(a->ss.ss_family, socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0 && socktype == SOCK_STREAM && a->ss.ss_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}
