/*
** resolve.c — host names without stopping the loop: evdns_getaddrinfo
** answers from /etc/hosts at once, or asks the resolv.conf nameservers
** while every other task keeps running. The task that asked is parked on
** the lookup until the answer or its deadline.
**
** Ownership: a lookup is malloc'ed and wrapped in a userdata that the
** asking task keeps on its stack. If the userdata goes first (timeout, task
** cancelled), the lookup is marked abandoned and the evdns callback, which
** always comes, frees it.
*/
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>

#include "lc.h"

#define LC_LOOKUP_T "luacomm.lookup"

struct lc_lookup {
  lc_ctx *ctx;
  lc_waitq waiters;
  struct evdns_getaddrinfo_request *req; /* while pending */
  int done;
  int result;    /* 0 or an EVUTIL_EAI_* code */
  int abandoned; /* its userdata is gone: the callback frees it */
  lc_addr addr;
};

typedef struct {
  lc_lookup *lk;
} lookup_ud;

/* What this file keeps per context (lc_module_state, slot LC_MOD_RESOLVE). */
typedef struct resolve_state {
  struct evdns_base *dns;
} resolve_state;

/* At the context's end (the module state's fini). evdns delivers every
** answer — including "cancelled" and "shut down" — through deferred
** callbacks, so one non-blocking turn of the loop is needed for abandoned
** lookups to be freed. Every handle and the scheduler's event are gone by
** now, and with c->L unset the host's signal events do nothing: no Lua runs
** in that turn. */
static void resolver_free (lc_ctx *c, void *state) {
  resolve_state *rs = state;
  if (rs->dns == NULL) return;
  evdns_base_free(rs->dns, 1);
  rs->dns = NULL;
  event_base_loop(c->base, EVLOOP_NONBLOCK);
}

/* The resolver of this context, created on first use. LUACOMM_RESOLV_CONF
** names another resolv.conf (the specs point it at a nameserver of their own
** on loopback). NULL when it cannot be created. */
static struct evdns_base *dns_base (lc_ctx *c) {
  resolve_state *rs = lc_module_state(c, LC_MOD_RESOLVE, sizeof *rs, resolver_free);
  if (rs == NULL) return NULL;
  if (rs->dns == NULL) {
    const char *conf = getenv("LUACOMM_RESOLV_CONF");
    rs->dns = evdns_base_new(c->base, 0);
    if (rs->dns == NULL) return NULL;
    /* A missing or empty resolv.conf leaves /etc/hosts working. */
    evdns_base_resolv_conf_parse(rs->dns, DNS_OPTIONS_ALL, conf ? conf : "/etc/resolv.conf");
  }
  return rs->dns;
}

/* evdns's answer, always delivered once per request (even cancelled): the
** one place a lookup whose userdata went first is freed. */
static void on_resolved (int result, struct evutil_addrinfo *res, void *arg) {
  lc_lookup *lk = arg;
  lk->req = NULL;
  if (!lk->abandoned) {
    lk->done = 1;
    lk->result = result;
    if (result == 0 && res != NULL && res->ai_addrlen <= sizeof lk->addr.ss) {
      memcpy(&lk->addr.ss, res->ai_addr, res->ai_addrlen);
      lk->addr.len = (socklen_t)res->ai_addrlen;
    } else if (result == 0) {
      lk->result = EVUTIL_EAI_FAIL;
    }
    lc_wake_all(lk->ctx, &lk->waiters);
  }
  if (res) evutil_freeaddrinfo(res);
  if (lk->abandoned) free(lk);
}

/* __gc of the lookup's userdata: frees a finished lookup; a pending one is
** cancelled and left to on_resolved to free. */
static int lookup_gc (lua_State *L) {
  lookup_ud *u = luaL_checkudata(L, 1, LC_LOOKUP_T);
  lc_lookup *lk = u->lk;
  u->lk = NULL;
  if (lk == NULL) return 0;
  if (lk->req) {
    lk->abandoned = 1;
    evdns_getaddrinfo_cancel(lk->req); /* its callback frees lk, now or later */
  } else {
    free(lk);
  }
  return 0;
}

/*
** Starts resolving host and port (a numeric service) and pushes the
** lookup's userdata; returns the lookup, or NULL with an error message
** pushed instead. The answer may already be there when this returns.
*/
lc_lookup *lc_lookup_start (lua_State *L, lc_ctx *c, const char *host, const char *port, int socktype) {
  struct evutil_addrinfo hints;
  struct evdns_base *dns = dns_base(c);
  lookup_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  lc_lookup *lk;
  u->lk = NULL;
  if (luaL_newmetatable(L, LC_LOOKUP_T)) {
    lua_pushcfunction(L, lookup_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (dns == NULL || (lk = calloc(1, sizeof *lk)) == NULL) {
    lua_pop(L, 1);
    lua_pushliteral(L, "cannot start a name lookup");
    return NULL;
  }
  lk->ctx = c;
  u->lk = lk;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = EVUTIL_AI_NUMERICSERV | EVUTIL_AI_ADDRCONFIG;
  /* May call on_resolved before returning (hosts file): then req is NULL. */
  lk->req = evdns_getaddrinfo(dns, host, port, &hints, on_resolved, lk);
  return lk;
}

lc_waitq *lc_lookup_waiters (lc_lookup *lk) {
  return &lk->waiters;
}

/* -1 while pending; else 0 with *a filled, or 1 with *err set. */
int lc_lookup_result (lc_lookup *lk, lc_addr *a, const char **err) {
  if (!lk->done) return -1;
  if (lk->result == 0) {
    *a = lk->addr;
    return 0;
  }
  *err = lk->result == EVUTIL_EAI_NONAME ? "unknown host" : evutil_gai_strerror(lk->result);
  return 1;
}

/* The step every timed wait on a lookup repeats (the lookup userdata at
** stack slot idx, the deadline in kc): 1 with *a filled once the address
** is ready; else 0 and *nret what the caller returns, having failed
** (lookup error, timeout) or yielded until the lookup answers, resuming
** in k. */
int lc_lookup_await (lua_State *L, int idx, lua_KContext kc, lua_KFunction k, lc_addr *a, int *nret) {
  lc_lookup *lk = *(lc_lookup **)lua_touserdata(L, idx);
  const char *err = NULL;
  switch (lc_lookup_result(lk, a, &err)) {
    case 0: return 1;
    case 1: *nret = lc_fail(L, err); return 0;
    default:
      if (lc_expired(L, kc)) *nret = lc_fail(L, "timeout");
      else *nret = lc_wait(lc_getctx(L), L, lc_lookup_waiters(lk), kc, k);
      return 0;
  }
}
