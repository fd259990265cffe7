/*
** sched.c — tasks and the scheduler.
**
** A task is a "luacomm.task" userdata whose first user value is its Lua
** thread. While a task is alive (not finished, failed or cancelled) the
** userdata is anchored in the registry, so a task parked on a socket that
** nothing in Lua references is never collected under its waiter (STYLE 5.3.4).
** Every resume happens in on_drain(), one libevent callback that empties the
** ready queue; nothing else resumes Lua.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc.h"

enum { T_READY, T_RUNNING, T_WAITING, T_DONE, T_FAILED, T_CANCELLED };

struct lc_task {
  lc_ctx *ctx;
  lua_State *co;
  int ref;             /* registry anchor while alive, else LUA_NOREF */
  int status;          /* T_* */
  int nargs;           /* arguments for the first resume */
  int streak;          /* calls that completed without waiting since the last resume */
  int watched;         /* comm.run waits for it: its error is re-raised, not logged */
  double deadline;     /* of the current wait while armed; < 0 for none */
  unsigned long pass;  /* the on_drain that last resumed it */
  struct event *timer; /* the wait's deadline; created on first use */
  lc_waitq *waitq;     /* the queue it is parked on, if any */
  lc_task *prev, *next;
  lc_waitq joiners;
};

#define totask(L, i) ((lc_task *)luaL_checkudata(L, i, LC_TASK_T))
#define ctxup(L) ((lc_ctx *)lua_touserdata(L, lua_upvalueindex(1)))

static int alive (const lc_task *t) {
  return t->status < T_DONE;
}

/* ---- wait queues ---- */

static void waitq_push (lc_waitq *q, lc_task *t) {
  t->next = NULL;
  t->prev = q->tail;
  if (q->tail) q->tail->next = t;
  else q->head = t;
  q->tail = t;
  t->waitq = q;
}

void lc_waitq_remove (lc_waitq *q, lc_task *t) {
  if (t->prev) t->prev->next = t->next;
  else q->head = t->next;
  if (t->next) t->next->prev = t->prev;
  else q->tail = t->prev;
  t->prev = t->next = NULL;
  t->waitq = NULL;
}

/* ---- time ---- */

double lc_now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Rounded up to the microsecond (R18): a short timeout never becomes 0. */
struct timeval lc_timeval (double seconds) {
  struct timeval tv;
  double us = seconds > 0 ? ceil(seconds * 1e6) : 0;
  tv.tv_sec = (time_t)(us / 1e6);
  tv.tv_usec = (suseconds_t)(us - (double)tv.tv_sec * 1e6);
  return tv;
}

/* Optional timeout argument at idx -> absolute deadline, or -1 for none. */
double lc_deadline (lua_State *L, int idx) {
  double s;
  if (lua_isnoneornil(L, idx)) return -1;
  s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s == s, idx, "timeout must be a non-negative number");
  return lc_now() + s;
}

/* ---- waking ---- */

static void ready_push (lc_ctx *c, lc_task *t) {
  t->status = T_READY;
  waitq_push(&c->ready, t);
  c->woken++;
  if (c->ready.head == t && c->running && !c->draining) event_active(c->drain_ev, EV_TIMEOUT, 0);
}

/* Cancels the wait's deadline timer, if armed; the timer event itself is
** kept for the task's next wait (one allocation per task, not per wait). */
static void disarm (lc_task *t) {
  if (t->deadline >= 0) {
    evtimer_del(t->timer);
    t->ctx->sleepers--;
    t->deadline = -1;
  }
}

/* Moves a parked task to the ready queue. Safe to call twice, and on a task
** that is not waiting (no-op): continuations re-check their condition. */
void lc_wake (lc_ctx *c, lc_task *t) {
  if (t->status != T_WAITING) return;
  if (t->waitq) lc_waitq_remove(t->waitq, t);
  disarm(t);
  ready_push(c, t);
}

void lc_wake_one (lc_ctx *c, lc_waitq *q) {
  if (q->head) lc_wake(c, q->head);
}

/* Empties q: every object that owns a wait queue calls this before it is
** freed, since parked tasks point into the queue. */
void lc_wake_all (lc_ctx *c, lc_waitq *q) {
  while (q->head) lc_wake(c, q->head);
}

/* A wait's deadline passed: off its queue and onto the ready queue. The
** continuation sees it through lc_expired, after checking for data. */
static void on_task_timeout (evutil_socket_t fd, short what, void *arg) {
  lc_task *t = arg;
  double left = t->deadline - lc_now();
  (void)fd, (void)what;
  if (left > 0) { /* a base on a coarse clock fires early: wait out the rest */
    struct timeval tv = lc_timeval(left);
    evtimer_add(t->timer, &tv);
    return;
  }
  t->ctx->sleepers--;
  t->deadline = -1;
  if (t->waitq) lc_waitq_remove(t->waitq, t);
  ready_push(t->ctx, t);
}

/* ---- parking ---- */

/* Raises unless L is the task being run and may yield here. */
static lc_task *check_parkable (lc_ctx *c, lua_State *L) {
  lc_task *t = c->current;
  if (t == NULL || !c->running) luaL_error(L, "luacomm: blocking call outside a task (use comm.spawn or comm.run)");
  else if (t->co != L) luaL_error(L, "luacomm: blocking call from a nested coroutine");
  else if (!lua_isyieldable(L))
    luaL_error(L,
               "luacomm: cannot block across a C-call boundary "
               "(metamethod called from C, table.sort, string.gsub, require)");
  return t;
}

/*
** A blocking call's deadline travels on its own stack, not in the task: a
** new call can then never inherit the deadline, or the "timed out" of the
** call before it. The first attempt pushes it (lc_push_deadline) and runs
** its continuation directly with the slot's index as the lua_KContext; the
** continuation hands the same kc to lc_wait, which yields with it, so every
** retry finds the slot where the first attempt left it. kc 0: no deadline.
*/
lua_KContext lc_push_deadline (lua_State *L, double deadline) {
  lua_pushnumber(L, deadline);
  return lua_gettop(L);
}

/* The absolute deadline in slot kc, or -1 for none. */
double lc_kdeadline (lua_State *L, lua_KContext kc) {
  return kc > 0 ? lua_tonumber(L, (int)kc) : -1;
}

/* Whether the deadline in slot kc has passed. A continuation asks this only
** after it found nothing to return, so a wake-up that brought data just as
** the deadline passed still returns the data. */
int lc_expired (lua_State *L, lua_KContext kc) {
  double d = lc_kdeadline(L, kc);
  return d >= 0 && lc_now() >= d;
}

/*
** Parks the calling task on q (may be NULL: woken only by its deadline or
** an explicit lc_wake) until the deadline in slot kc (see lc_push_deadline),
** then continues in k(L, LUA_YIELD, kc). Raises, before any side effect,
** when L is not the task being run. Never returns to its caller: it yields.
** While parked the task is reachable from its registry anchor only; q must
** outlive the wait or be emptied with lc_wake_all before it goes.
*/
int lc_wait (lc_ctx *c, lua_State *L, lc_waitq *q, lua_KContext kc, lua_KFunction k) {
  lc_task *t = check_parkable(c, L);
  double deadline = lc_kdeadline(L, kc);
  if (deadline >= 0) {
    struct timeval tv = lc_timeval(deadline - lc_now());
    if (t->timer == NULL) t->timer = evtimer_new(c->base, on_task_timeout, t);
    if (t->timer == NULL) return luaL_error(L, "luacomm: out of memory");
    event_base_update_cache_time(c->base); /* else relative to when this pass began */
    evtimer_add(t->timer, &tv);
    c->sleepers++;
  }
  t->deadline = deadline;
  if (q) waitq_push(q, t);
  t->status = T_WAITING;
  return lua_yieldk(L, 0, kc, k);
}

/*
** Fairness. A task whose calls keep completing at once (frames already
** buffered, room under the high-water mark, values queued) would run until
** it chose to wait, starving every other ready task. So every LC_SLICE
** such calls since it was last resumed, the next one first yields: true
** means "queued to run again; return lua_yieldk(L, 0, 0, k) now", and k
** then does the call. A count rather than a clock: no syscall per call,
** and one task gives way after the same amount of work on any machine.
*/
#define LC_SLICE 64

int lc_fair (lc_ctx *c, lua_State *L) {
  lc_task *t = c->current;
  if (t == NULL || t->co != L || ++t->streak < LC_SLICE || !lua_isyieldable(L)) return 0;
  ready_push(c, t);
  return 1;
}

/* ---- spawning ---- */

/*
** Stack: fn, arg1..argn at the top (n = nargs). Pops them and pushes a new
** task, queued to run at the next drain.
*/
int lc_spawn_top (lua_State *L, int nargs) {
  lc_ctx *c = lc_getctx(L);
  lc_task *t = lua_newuserdatauv(L, sizeof *t, 2);
  lua_State *co;
  memset(t, 0, sizeof *t);
  t->ctx = c;
  t->ref = LUA_NOREF;
  t->deadline = -1;
  t->status = T_DONE; /* "closed" until fully built (R5) */
  luaL_setmetatable(L, LC_TASK_T);
  co = lua_newthread(L);
  lua_setiuservalue(L, -2, 1);    /* fn, args..., task */
  lua_rotate(L, -(nargs + 2), 1); /* task, fn, args... */
  lua_xmove(L, co, nargs + 1);
  t->co = co;
  t->nargs = nargs;
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->live_tasks++;
  c->n.tasks_spawned++;
  ready_push(c, t);
  return 1;
}

/* comm.spawn(fn, ...) -> task. Never yields: the task runs at the next pass. */
static int sched_spawn (lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  return lc_spawn_top(L, lua_gettop(L) - 1);
}

/* ---- finishing ---- */

/* Pushes the task's userdata (from its anchor) onto c->L. */
static void push_task (lc_ctx *c, lc_task *t) {
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, t->ref);
}

/* Ends a task's life: frees its timer, wakes its joiners, drops its anchor.
** L is any thread that may run API calls now. */
static void release (lc_ctx *c, lua_State *L, lc_task *t, int status) {
  t->status = status;
  if (t->timer) {
    disarm(t);
    event_free(t->timer);
    t->timer = NULL;
  }
  c->live_tasks--;
  lc_wake_all(c, &t->joiners);
  if (c->run_task == t) event_base_loopbreak(c->base);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

/* Moves nres values from the top of co into a table stored as the task's
** second user value: { n = nres, ... } for success, the error for failure. */
static void store_results (lc_ctx *c, lc_task *t, int nres) {
  lua_State *L = c->L;
  int i;
  push_task(c, t);
  lua_createtable(L, nres, 1);
  lua_xmove(t->co, L, nres); /* task, results, v1..vn */
  for (i = nres; i >= 1; i--) lua_rawseti(L, -1 - i, i);
  lua_pushinteger(L, nres);
  lua_setfield(L, -2, "n");
  lua_setiuservalue(L, -2, 2);
  lua_pop(L, 1);
}

static int tostring_call (lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* Pushes a readable text for the error value on top, as lua.c's msghandler
** does: a string as is, __tostring in protected mode, else its type. */
static const char *error_text (lua_State *L) {
  if (lua_type(L, -1) == LUA_TSTRING) {
    lua_pushvalue(L, -1);
  } else if (luaL_getmetafield(L, -1, "__tostring") != LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushcfunction(L, tostring_call);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
    }
  } else {
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
  }
  return lua_tostring(L, -1);
}

/* The task failed: keep the error as its result (join returns it) and,
** unless comm.run waits for this task and re-raises it, log it with the
** task's own traceback and count it. */
static void store_error (lc_ctx *c, lc_task *t) {
  lua_State *L = c->L;
  push_task(c, t);
  lua_xmove(t->co, L, 1); /* task, err */
  if (!t->watched) {
    const char *msg = error_text(L);  /* task, err, text */
    luaL_traceback(L, t->co, msg, 0); /* the task's own stack, still intact */
    lua_remove(L, -2);
    if (LC_ERROR >= c->log_level) { /* not lc_logf: a traceback may be long */
      size_t len;
      const char *text = lua_pushfstring(L, "task failed: %s", lua_tostring(L, -1));
      len = lua_rawlen(L, -1);
      c->log(c->log_ud, LC_ERROR, text, len);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    c->n.task_errors++;
  }
  lua_setiuservalue(L, -2, 2);
  lua_pop(L, 1);
}

/* Runs the pending to-be-closed variables of a cancelled task (as
** coroutine.close does), so a cancelled serve handler closes its
** connection now, not at some later collection. Errors are logged. */
static void close_cancelled (lua_State *from, lc_task *t) {
  if (lc_closethread(t->co, from) != LUA_OK) {
    lc_logf(t->ctx,
            LC_WARN,
            "closing a cancelled task: %s",
            lua_isstring(t->co, -1) ? lua_tostring(t->co, -1) : "(error object is not a string)");
  }
  lua_settop(t->co, 0);
}

/* The one place a task is resumed (on_drain). c->current names it while it
** runs: blocking calls check they come from it (check_parkable). */
static void resume (lc_ctx *c, lc_task *t) {
  lc_guard *guard = lc_guard_of(c);
  int nres, st, nargs = t->nargs;
  t->nargs = 0;
  t->streak = 0;
  t->status = T_RUNNING;
  c->current = t;
  if (guard) lc_guard_enter(guard, t->co);
  st = lua_resume(t->co, c->L, nargs, &nres);
  if (guard) lc_guard_leave(guard);
  c->current = NULL;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    /* A plain coroutine.yield() in a task: treat it as comm.yield(). */
    if (t->status == T_RUNNING) ready_push(c, t);
    else if (t->status == T_CANCELLED) close_cancelled(c->L, t); /* cancelled itself */
    return;
  }
  if (st == LUA_OK) {
    store_results(c, t, nres);
    release(c, c->L, t, T_DONE);
  } else {
    store_error(c, t);
    lc_closethread(t->co, c->L);
    release(c, c->L, t, T_FAILED);
  }
}

/* A pass runs every ready task, each at most once. A task woken or
** spawned by another during the pass runs in it too: the worker a reader
** wakes sends its reply in the pass's one write instead of a poll later
** (one epoll_wait and one timer update less per request and hop). A task
** that yields itself, or is woken again after it ran, waits for the next
** pass, after libevent has looked at I/O again: a pass stays bounded by the
** number of tasks, and two tasks waking each other cannot starve I/O. */
static void on_drain (evutil_socket_t fd, short what, void *arg) {
  static const struct timeval zero = {0, 0};
  lc_ctx *c = arg;
  lc_waitq ran = {NULL, NULL}; /* ready again after their turn in this pass */
  unsigned long pass = ++c->passes;
  lc_task *t;
  int i;
  (void)fd, (void)what;
  c->draining = 1;
  c->woken = 0;
  c->pass_in = 0;
  while ((t = c->ready.head) != NULL) {
    lc_waitq_remove(&c->ready, t);
    if (t->pass == pass) {
      waitq_push(&ran, t);
      continue;
    }
    t->pass = pass;
    resume(c, t);
  }
  c->woken = 0; /* those woken during the pass ran in it: only these wait */
  while ((t = ran.head) != NULL) {
    lc_waitq_remove(&ran, t);
    waitq_push(&c->ready, t);
    c->woken++;
  }
  for (i = 0; i < c->npass_end; i++) c->pass_end[i](c); /* lc_on_pass_end */
  c->draining = 0;
  /* Not event_active: libevent would run us again in this same iteration,
  ** and tasks that keep yielding would starve I/O and timers. A zero
  ** timeout comes after the next poll. */
  if (c->ready.head) event_add(c->drain_ev, &zero);
  else lc_maybe_idle(c);
}

/* Called by an I/O callback as its last act (it must not touch what it
** served afterwards: the tasks may close it). Runs a pass now, instead of
** after every callback of this poll, once LC_PASS_MAX tasks were woken or
** LC_PASS_BYTES of input were read since the last one: each woken task holds its
** input (at least a 1 KiB evbuffer chain, for the smallest frame) until
** it runs, and a poll may return thousands of descriptors, so without a
** bound the memory held at once grows with the number of busy
** connections. The drain event already pending then finds less to do. */
void lc_pass_if_full (lc_ctx *c) {
  if ((c->woken >= LC_PASS_MAX || c->pass_in >= LC_PASS_BYTES) && c->running && !c->draining && c->current == NULL &&
      c->ready.head != NULL)
    on_drain(-1, 0, c);
}

/* Ends core.loop when nothing can make progress any more. A task parked on a
** condition with no deadline is not progress by itself. */
static int idle (const lc_ctx *c) {
  int h = 0, k;
  /* A running task may still sleep or open something: a destroy() inside
  ** it must not end the loop under its feet. */
  if (c->current || c->ready.head || c->sleepers) return 0;
  for (k = 0; k < LC_H_KINDS; k++)
    if (k != LC_H_AUX) h += c->nhandles[k];
  return h == 0;
}

void lc_maybe_idle (lc_ctx *c) {
  if (c->running && idle(c)) event_base_loopbreak(c->base);
}

/* ---- running the loop ---- */

/*
** core.loop([task]): drives the event loop. With a task, until that task
** ends (its error is then not logged: the caller re-raises it); without,
** until nothing is pending or core.stop() is called. Returns true, or
** false and "deadlock" when the awaited task can never be resumed.
*/
static int sched_loop (lua_State *L) {
  lc_ctx *c = ctxup(L);
  lc_task *t = lua_isnoneornil(L, 1) ? NULL : totask(L, 1);
  lua_State *saved = c->L;
  if (c->running) return luaL_error(L, "luacomm: the loop is already running");
  if (t && !alive(t)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (t) t->watched = 1;
  c->run_task = t;
  c->L = L;
  c->running = 1;
  c->stopping = 0;
  /* A loopbreak before dispatch would be forgotten: libevent clears the
  ** flag when a loop starts. So an idle start does not dispatch at all. */
  if (c->ready.head) event_active(c->drain_ev, EV_TIMEOUT, 0);
  if (!idle(c)) event_base_dispatch(c->base);
  c->running = 0;
  c->run_task = NULL;
  c->L = saved;
  if (t && alive(t) && !c->stopping) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "deadlock");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.stop(): ends core.loop at once. The exit status of a host's stop is
** the host's business (scripts/luacomm/host.lua), not the scheduler's. */
static int sched_stop (lua_State *L) {
  lc_ctx *c = ctxup(L);
  c->stopping = 1;
  if (c->running) event_base_loopbreak(c->base);
  return 0;
}

/* ---- blocking calls of the scheduler itself ---- */

static int sched_sleep_k (lua_State *L, int status, lua_KContext kc) {
  (void)L, (void)status, (void)kc;
  return 0;
}

/* comm.sleep(s): yields for at least s seconds (R18: rounded up). */
static int sched_sleep (lua_State *L) {
  lc_ctx *c = ctxup(L);
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s == s, 1, "not a number");
  return lc_wait(c, L, NULL, lc_push_deadline(L, lc_now() + (s > 0 ? s : 0)), sched_sleep_k);
}

/* comm.yield(): back on the ready queue, behind every task already there. */
static int sched_yield (lua_State *L) {
  lc_ctx *c = ctxup(L);
  ready_push(c, check_parkable(c, L));
  return lua_yieldk(L, 0, 0, sched_sleep_k);
}

/* core.turn(): counts one call that completed without waiting, and yields
** when the task has used up its slice (lc_fair). For the Lua layer. */
static int sched_turn (lua_State *L) {
  if (lc_fair(ctxup(L), L)) return lua_yieldk(L, 0, 0, sched_sleep_k);
  return 0;
}

/* comm.running() -> the calling task, or nil outside one. */
static int sched_running (lua_State *L) {
  lc_ctx *c = ctxup(L);
  if (c->current == NULL || c->current->co != L) lua_pushnil(L);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, c->current->ref); /* on L: push_task pushes on c->L */
  return 1;
}

static int sched_now (lua_State *L) {
  lua_pushnumber(L, lc_now());
  return 1;
}

static int sched_time (lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
  return 1;
}

/* ---- task methods ---- */

static int push_outcome (lua_State *L, lc_task *t) {
  if (t->status == T_CANCELLED) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cancelled");
    return 2;
  }
  lua_pushboolean(L, t->status == T_DONE);
  lua_getiuservalue(L, 1, 2);
  if (t->status == T_FAILED) return 2;
  {
    int n, i;
    lua_getfield(L, -1, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n, "too many results");
    for (i = 1; i <= n; i++) lua_rawgeti(L, 3, i); /* true, results, v1..vn */
    lua_remove(L, 3);
    return n + 1;
  }
}

/* Stack: task, deadline (slot kc). Yields until the task ends. */
static int task_join_k (lua_State *L, int status, lua_KContext kc) {
  lc_task *t = totask(L, 1);
  (void)status;
  if (!alive(t)) {
    lua_settop(L, 1);
    return push_outcome(L, t);
  }
  if (lc_expired(L, kc)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return lc_wait(t->ctx, L, &t->joiners, kc, task_join_k);
}

/* task:join([timeout]) -> true, results... | false, err. Yields until the
** task ends (task_join_k). */
static int task_join (lua_State *L) {
  lc_task *t = totask(L, 1);
  lc_ctx *c = t->ctx;
  double deadline = lc_deadline(L, 2);
  lua_settop(L, 1);
  if (!alive(t)) return push_outcome(L, t);
  if (c->current == t) return luaL_error(L, "luacomm: a task cannot join itself");
  if (deadline >= 0 && deadline <= lc_now()) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  return lc_wait(c, L, &t->joiners, lc_push_deadline(L, deadline), task_join_k);
}

/* The task never runs again. Cancelling the running task takes effect when
** it next yields: its current call does not return. */
static int task_cancel (lua_State *L) {
  lc_task *t = totask(L, 1);
  lc_ctx *c = t->ctx;
  if (!alive(t)) return 0;
  if (t->waitq) lc_waitq_remove(t->waitq, t);
  release(c, L, t, T_CANCELLED);               /* arg 1 keeps the userdata alive */
  if (c->current == t) return lua_yield(L, 0); /* closed by resume() */
  close_cancelled(L, t);
  return 0;
}

/* task:status() -> "ready" | "running" | ... (T_* order). */
static int task_status (lua_State *L) {
  static const char *const names[] = {"ready", "running", "waiting", "done", "failed", "cancelled"};
  lc_task *t = totask(L, 1);
  lua_pushstring(L, names[t->status]);
  return 1;
}

/* Only a finished task is collected, except at lua_close, where one may
** still be parked: it leaves its queue and its deadline here, so that a
** connection finalized after it does not wake it through a freed timer. */
static int task_gc (lua_State *L) {
  lc_task *t = totask(L, 1);
  if (t->waitq) lc_waitq_remove(t->waitq, t);
  if (t->timer) {
    disarm(t);
    event_free(t->timer);
    t->timer = NULL;
  }
  return 0;
}

static const luaL_Reg task_methods[] = {
  {"join", task_join},
  {"cancel", task_cancel},
  {"status", task_status},
  {NULL, NULL},
};

static const luaL_Reg sched_funcs[] = {
  {"spawn", sched_spawn},
  {"loop", sched_loop},
  {"stop", sched_stop},
  {"sleep", sched_sleep},
  {"yield", sched_yield},
  {"turn", sched_turn},
  {"running", sched_running},
  {"now", sched_now},
  {"time", sched_time},
  {NULL, NULL},
};

/* A to-be-closed task is cancelled at the end of its block (structured
** concurrency: nothing it started outlives the scope); a collected one is
** no longer alive and frees what its waits used. */
static const lc_class task_class = {
  .name = LC_TASK_T,
  .what = "task",
  .methods = task_methods,
  .funcs = sched_funcs,
  .close = task_cancel,
  .gc = task_gc,
};

/* Module table at -2, ctx at -1 on entry; both stay. */
int lc_sched_open (lua_State *L) {
  lc_ctx *c = lua_touserdata(L, -1);
  if (c->drain_ev == NULL) {
    c->drain_ev = event_new(c->base, -1, 0, on_drain, c);
    if (c->drain_ev == NULL) return luaL_error(L, "luacomm: cannot create the scheduler event");
  }
  lc_newclass(L, &task_class);
  return 0;
}
