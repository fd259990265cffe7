/*
** signals.c — signals become loop events (evsignal), so their handling runs
** between task resumes like any other event. Each one spawns a task that
** calls the host's "signal" hook (core.set_host, from host.lua) with the signal's
** name ("HUP", "TERM", "INT"); the policy (reload, graceful stop) is Lua's.
** A second TERM/INT while a stop is under way exits at once with status 1.
*/
#include <signal.h>
#include <stdlib.h>

#include "lc.h"
#include "host.h"
#include "signals.h"

static struct event *events[3];
static int stop_signals; /* TERM/INT seen so far */

typedef struct {
  lua_State *L;
  const char *name;
} sig_arg;

static sig_arg args[3];

static void on_signal (evutil_socket_t sig, short what, void *arg) {
  sig_arg *a = arg;
  lc_ctx *c = lc_getctx(a->L);
  lua_State *L = c->L;
  (void)what;
  if (sig != SIGHUP && ++stop_signals > 1) {
    lc_logf(c, LC_ERROR, "second SIG%s during the stop: exiting now", a->name);
    rt_host_exit_now(1);
  }
  if (L == NULL) return;                       /* the loop is not running: nothing to do it in */
  if (!lc_push_host_hook(L, "signal")) return; /* no host hooks yet */
  lua_pushstring(L, a->name);
  lc_spawn_top(L, 1);
  lua_pop(L, 1);
}

int rt_signals_install (struct event_base *base, lua_State *L) {
  static const int sigs[3] = {SIGHUP, SIGTERM, SIGINT};
  static const char *const names[3] = {"HUP", "TERM", "INT"};
  int i;
  signal(SIGPIPE, SIG_IGN);
  for (i = 0; i < 3; i++) {
    args[i].L = L;
    args[i].name = names[i];
    events[i] = evsignal_new(base, sigs[i], on_signal, &args[i]);
    if (events[i] == NULL || evsignal_add(events[i], NULL) != 0) return -1;
  }
  return 0;
}

void rt_signals_free (void) {
  int i;
  for (i = 0; i < 3; i++) {
    if (events[i]) event_free(events[i]);
    events[i] = NULL;
  }
}
