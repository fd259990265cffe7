/*
** guard.c — the runaway guard (--task-budget): a task that runs longer
** than its budget without yielding gets an error raised inside it, again at
** every line until it unwinds, so a pcall cannot swallow it for good.
**
** Why no hook until one is needed: while any hook is set on a thread, Lua's
** interpreter takes its slow path on every instruction of it (the trap in
** luaV_execute), about a tenth of all the instructions an echo server runs.
** So a periodic timer signal (every budget / 4 of the process's CPU time:
** an idle process is never woken) looks at what runs: when
** the same resume of a task is still running at two ticks in a row, it arms
** a count hook on the thread running (lua_sethook may be called from a
** signal handler; Lua's own interpreter does it for ^C). The hook then
** measures, on the loop's thread, and raises once the budget is spent.
**
** A task may also spin inside a plain coroutine it resumed, so the hook
** must go on that thread: under a guard, coroutine.resume and
** coroutine.wrap note the innermost running thread while they run.
**
** One guard per process (the host's context): the signal handler finds it
** through a static pointer.
*/
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc.h"

/* Instructions between two looks at the clock once a hook is armed. */
#define CHECK_EVERY 1000

struct lc_guard {
  double budget;
  double resumed_at;            /* of the task running now */
  char *runaway;                /* the error while that task unwinds */
  _Atomic(lua_State *) task;    /* the running task's thread, or NULL */
  _Atomic(lua_State *) active;  /* the innermost thread running for it */
  atomic_ulong resumes;         /* counts resumes: same count, same run */
  atomic_ulong seen, armed_for; /* the resume seen at the last tick, and armed for */
  timer_t timer;
};

static _Atomic(lc_guard *) the_guard;

/* ---- the hook ---- */

static void runaway_hook (lua_State *L, lua_Debug *ar) {
  lc_guard *g = atomic_load(&the_guard);
  double ran;
  (void)ar;
  if (g == NULL || atomic_load(&g->task) == NULL || atomic_load(&g->resumes) != atomic_load(&g->armed_for)) {
    lua_sethook(L, NULL, 0, 0); /* armed for a run that has yielded since */
    return;
  }
  ran = lc_now() - g->resumed_at;
  if (ran <= g->budget) return; /* not yet: look again CHECK_EVERY on */
  if (g->runaway == NULL) {
    char what[96];
    snprintf(what, sizeof what, "task ran %.3g s without yielding (budget %.3g s): interrupted", ran, g->budget);
    luaL_where(L, 0);
    lua_pushfstring(L, "%s%s", lua_tostring(L, -1), what);
    g->runaway = strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_sethook(L, runaway_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1); /* every line until it unwinds */
  lua_pushstring(L, g->runaway ? g->runaway : "task interrupted: over its budget");
  lua_error(L);
}

/* ---- the tick (a signal handler: atomics and lua_sethook only) ---- */

static void on_tick (int sig) {
  lc_guard *g = atomic_load(&the_guard);
  int saved = errno;
  (void)sig;
  if (g != NULL) {
    unsigned long n = atomic_load_explicit(&g->resumes, memory_order_acquire);
    lua_State *task = atomic_load_explicit(&g->task, memory_order_acquire);
    lua_State *active = atomic_load_explicit(&g->active, memory_order_acquire);
    if (task != NULL && active != NULL && n == atomic_load(&g->seen) && atomic_load(&g->armed_for) != n) {
      atomic_store(&g->armed_for, n); /* one run, two ticks */
      lua_sethook(active, runaway_hook, LUA_MASKCOUNT, CHECK_EVERY);
      if (task != active) lua_sethook(task, runaway_hook, LUA_MASKCOUNT, CHECK_EVERY);
    }
    atomic_store(&g->seen, n);
  }
  errno = saved;
}

/* ---- the scheduler's side ---- */

/* The handler interrupts this thread, so it sees these stores in program
** order as long as the compiler keeps them so: release stores, not locked
** ones (a resume is on every message's path). */
void lc_guard_enter (lc_guard *g, lua_State *co) {
  unsigned long n = atomic_load_explicit(&g->resumes, memory_order_relaxed);
  g->resumed_at = lc_now();
  free(g->runaway);
  g->runaway = NULL;
  if (lua_gethook(co) == runaway_hook) lua_sethook(co, NULL, 0, 0); /* a hook of the script stays */
  atomic_store_explicit(&g->active, co, memory_order_release);
  atomic_store_explicit(&g->task, co, memory_order_release);
  atomic_store_explicit(&g->resumes, n + 1, memory_order_release);
}

void lc_guard_leave (lc_guard *g) {
  atomic_store_explicit(&g->task, NULL, memory_order_release);
  atomic_store_explicit(&g->active, NULL, memory_order_release);
}

/* ---- coroutines nested in a task ---- */

/* Calls the stock coroutine.resume (upvalue 1) on the arguments, with co
** noted as the innermost running thread meanwhile. It never raises once
** its first argument is a thread: errors come back as (false, err). */
static int resume_noted (lua_State *L, lc_guard *g, lua_State *co) {
  lua_State *outer = atomic_load_explicit(&g->active, memory_order_relaxed);
  if (outer != NULL) atomic_store_explicit(&g->active, co, memory_order_release);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (outer != NULL) atomic_store_explicit(&g->active, outer, memory_order_release);
  return lua_gettop(L);
}

static int guarded_resume (lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_checktype(L, 1, LUA_TTHREAD);
  return resume_noted(L, lua_touserdata(L, lua_upvalueindex(2)), co);
}

/* The function coroutine.wrap returns (upvalue 3: its thread): as the
** stock one, an error in the coroutine is raised in the caller, a string
** with the caller's position before it. */
static int guarded_wrapped (lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(3));
  int stat;
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_insert(L, 1);
  resume_noted(L, lua_touserdata(L, lua_upvalueindex(2)), co);
  if (lua_toboolean(L, 1)) return lua_gettop(L) - 1;
  stat = lua_status(co);
  if (stat != LUA_OK && stat != LUA_YIELD) { /* an error in it: close its tbc variables */
    stat = lua_resetthread(co);
    lua_xmove(co, L, 1);
  }
  if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

static int guarded_wrap (lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushvalue(L, lua_upvalueindex(1)); /* the stock resume */
  lua_pushvalue(L, lua_upvalueindex(2)); /* the guard */
  lua_rotate(L, -3, 2);                  /* resume, guard, thread */
  lua_pushcclosure(L, guarded_wrapped, 3);
  return 1;
}

/* Replaces coroutine.resume and coroutine.wrap (the library must be open). */
static void note_coroutines (lua_State *L, lc_guard *g) {
  lua_getglobal(L, "coroutine");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "resume");
  lua_pushlightuserdata(L, g);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, guarded_resume, 2);
  lua_setfield(L, -4, "resume");
  lua_pushcclosure(L, guarded_wrap, 2);
  lua_setfield(L, -2, "wrap");
  lua_pop(L, 1);
}

/* ---- start and end ---- */

static void guard_fini (lc_ctx *c, void *state) {
  lc_guard *g = state;
  (void)c;
  timer_delete(g->timer);
  atomic_store(&the_guard, NULL);
  signal(SIGRTMIN, SIG_IGN); /* not SIG_DFL: a tick still queued would end the process */
  free(g->runaway);
  g->runaway = NULL;
}

static int start_ticks (lc_guard *g, double budget) {
  struct sigaction sa;
  struct sigevent sev;
  struct itimerspec its;
  double tick = budget / 4 > 0.001 ? budget / 4 : 0.001;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_tick;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGRTMIN, &sa, NULL) != 0) return -1;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGRTMIN;
  if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &g->timer) != 0) return -1;
  its.it_interval.tv_sec = (time_t)tick;
  its.it_interval.tv_nsec = (long)((tick - (double)(time_t)tick) * 1e9);
  its.it_value = its.it_interval;
  if (timer_settime(g->timer, 0, &its, NULL) != 0) {
    timer_delete(g->timer);
    return -1;
  }
  return 0;
}

/* Guards every task of c with budget seconds (> 0). The host calls it
** once, after opening the standard libraries; -1 (errno) when the
** process has a guard already or the timer cannot be made. */
int lc_guard_start (lua_State *L, lc_ctx *c, double budget) {
  lc_guard *g;
  if (atomic_load(&the_guard) != NULL || c->mods[LC_MOD_GUARD].state != NULL) {
    errno = EBUSY;
    return -1;
  }
  g = calloc(1, sizeof *g);
  if (g == NULL) return -1;
  g->budget = budget;
  if (start_ticks(g, budget) != 0) {
    free(g);
    return -1;
  }
  c->mods[LC_MOD_GUARD].state = g;
  c->mods[LC_MOD_GUARD].fini = guard_fini;
  note_coroutines(L, g);
  atomic_store(&the_guard, g);
  return 0;
}
