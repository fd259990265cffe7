/*
** workers.c — `luacomm --workers N SCRIPT`: one supervisor process and N
** worker processes, each a whole luacomm host running SCRIPT. Every
** listener of a worker sets SO_REUSEPORT (scripts/luacomm.lua does it when
** registry "luacomm.worker" is set), so the workers share the script's
** ports and the kernel spreads connections over them.
**
** The supervisor runs no Lua: a libevent loop over its signals, the
** workers' report pipes and a few timers.
**   - A worker that dies (a signal, or a non-zero exit) is restarted and
**     logged; one that keeps dying soon after its start waits longer each
**     time (0.1 s doubling to 5 s); one that lived STABLE_AFTER seconds
**     restarts after 0.1 s again. A worker that exits 0 is not restarted.
**   - SIGHUP rolls a reload over the workers in order: SIGHUP to worker i,
**     then wait for its report ("ok" or "fail <why>") on its pipe before
**     worker i+1. The first failure (or a worker that dies, or says
**     nothing for REPORT_TIMEOUT) stops the roll: the rest keep the old code.
**   - SIGTERM / SIGINT: SIGTERM to every worker (each stops gracefully,
**     CONTRACT §5), then the supervisor exits 0 once all have ended; past
**     stop_timeout + KILL_GRACE, or at a second signal, SIGKILL.
** Workers run in their own process group (a terminal's ^C reaches the
** supervisor only, which passes it on once) and get SIGTERM if the
** supervisor dies (PR_SET_PDEATHSIG).
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lauxlib.h"
#include "lc.h"
#include "log.h"
#include "workers.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 5.0
#define STABLE_AFTER 5.0    /* seconds alive after which a death is not "keeps dying" */
#define REPORT_TIMEOUT 60.0 /* seconds a worker may take to report a reload */
#define KILL_GRACE 5.0      /* past stop_timeout, before SIGKILL */

typedef struct worker {
  int id;                   /* 1..count */
  pid_t pid;                /* 0 while not running */
  int report_fd;            /* read end of its report pipe, or -1 */
  struct event *report_ev;  /* reads report_fd; NULL with it */
  struct event *restart_ev; /* the backoff timer; owned here, made at start */
  double started;           /* monotonic seconds at its last start */
  double delay;             /* backoff of its next restart; 0 = none yet */
  struct supervisor *sup;
} worker;

typedef struct supervisor {
  struct event_base *base;
  rt_opts *o;
  int count;
  worker *w; /* count workers */
  int stopping;
  int rolling;              /* id of the worker reloading now; 0: no roll */
  struct event *roll_timer; /* REPORT_TIMEOUT of the worker rolling */
  struct event *kill_timer; /* SIGKILL past the stop deadline */
  struct event *sig[4];
  int is_child; /* set in a fork: leave the loop, be a worker */
} supervisor;

/* The supervisor runs no core, so it filters its own records by level
** (--log-level) before the host's sink formats them. */
static int log_level = LC_INFO;

static void slog (int level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  int n;
  if (level < log_level) return;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n >= 0) rt_log_sink(NULL, level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* In a worker process: who it is, and where its reports go. */
static int my_id, my_count, my_report_fd = -1;

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval tv_of (double s) {
  struct timeval tv;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

static int running (const supervisor *s) {
  int i, n = 0;
  for (i = 0; i < s->count; i++) n += s->w[i].pid != 0;
  return n;
}

/* No worker runs and none waits for a restart: the supervisor is done. */
static void end_if_idle (supervisor *s) {
  int i;
  if (running(s) > 0) return;
  for (i = 0; i < s->count; i++)
    if (evtimer_pending(s->w[i].restart_ev, NULL)) return;
  event_base_loopbreak(s->base);
}

static void close_report (worker *w) {
  if (w->report_ev) event_free(w->report_ev);
  if (w->report_fd >= 0) close(w->report_fd);
  w->report_ev = NULL;
  w->report_fd = -1;
}

/* Frees everything the supervisor owns. In a fresh worker too: the fork
** copied it all, and the worker's own loop and state start from scratch. */
static void supervisor_free (supervisor *s) {
  int i;
  for (i = 0; i < s->count; i++) {
    close_report(&s->w[i]);
    if (s->w[i].restart_ev) event_free(s->w[i].restart_ev);
  }
  for (i = 0; i < 4; i++)
    if (s->sig[i]) event_free(s->sig[i]);
  if (s->roll_timer) event_free(s->roll_timer);
  if (s->kill_timer) event_free(s->kill_timer);
  event_base_free(s->base);
  free(s->w);
}

static void on_report(evutil_socket_t fd, short what, void *arg);

/* Forks worker w. In the parent: 0, or -1 (logged) when it cannot. In
** the child: 0 with s->is_child set; the caller leaves the loop. */
static int start_worker (supervisor *s, worker *w) {
  int fds[2];
  pid_t pid;
  if (pipe(fds) != 0) {
    slog(LC_ERROR, "worker %d: cannot make its report pipe: %s", w->id, strerror(errno));
    return -1;
  }
  fflush(NULL); /* or the child would print the parent's buffered output again */
  pid = fork();
  if (pid < 0) {
    slog(LC_ERROR, "worker %d: cannot fork: %s", w->id, strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    pid_t parent = getppid();
    close(fds[0]);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1); /* the supervisor died before prctl */
    setpgid(0, 0);
    my_id = w->id;
    my_count = s->count;
    my_report_fd = fds[1];
    s->is_child = 1;
    event_base_loopbreak(s->base);
    return 0;
  }
  close(fds[1]);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  w->pid = pid;
  w->report_fd = fds[0];
  w->report_ev = event_new(s->base, fds[0], EV_READ | EV_PERSIST, on_report, w);
  if (w->report_ev) event_add(w->report_ev, NULL);
  w->started = now();
  slog(LC_INFO, "worker %d started (pid %ld)", w->id, (long)pid);
  return 0;
}

static void on_restart (evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  (void)fd;
  (void)what;
  if (!w->sup->stopping) start_worker(w->sup, w);
}

/* ------------------------------------------------------------ reload roll */

/* The roll ends here; `why` (NULL when every worker reloaded) is logged. */
static void roll_end (supervisor *s, const char *why) {
  int id = s->rolling;
  evtimer_del(s->roll_timer);
  s->rolling = 0;
  if (why == NULL) {
    slog(LC_INFO, "reload: all %d worker(s) reloaded", s->count);
  } else if (id < s->count) {
    slog(LC_ERROR,
         "reload failed in worker %d: %s; the roll stops: worker(s) %d-%d keep the old code",
         id,
         why,
         id + 1,
         s->count);
  } else {
    slog(LC_ERROR, "reload failed in worker %d: %s", id, why);
  }
}

/* SIGHUP to the next worker, then wait for its report. */
static void roll_next (supervisor *s) {
  worker *w;
  struct timeval tv = tv_of(REPORT_TIMEOUT);
  if (s->rolling == s->count) {
    roll_end(s, NULL);
    return;
  }
  w = &s->w[s->rolling++];
  if (w->pid == 0) {
    roll_end(s, "it is not running");
    return;
  }
  slog(LC_INFO, "reload: worker %d (pid %ld)", w->id, (long)w->pid);
  kill(w->pid, SIGHUP);
  evtimer_add(s->roll_timer, &tv);
}

static void on_roll_timeout (evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  roll_end(arg, "no report in time");
}

/* A worker's report lines: "ok" or "fail <why>", one per reload. Only the
** worker the roll waits for moves it on; others (a reload someone asked
** of a worker directly) are only logged. */
static void handle_report (worker *w, char *line) {
  supervisor *s = w->sup;
  int ok = strncmp(line, "ok", 2) == 0;
  const char *why = strncmp(line, "fail ", 5) == 0 ? line + 5 : line;
  if (s->rolling != w->id) {
    slog(LC_DEBUG, "worker %d reported a reload outside the roll: %s", w->id, line);
    return;
  }
  if (ok) {
    slog(LC_INFO, "reload: worker %d ok", w->id);
    roll_next(s);
  } else {
    roll_end(s, why);
  }
}

static void on_report (evutil_socket_t fd, short what, void *arg) {
  worker *w = arg;
  char buf[1024], *line, *nl;
  ssize_t n;
  (void)what;
  n = read(fd, buf, sizeof buf - 1);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    close_report(w); /* the worker is gone; SIGCHLD tells the rest */
    return;
  }
  buf[n] = '\0';
  /* reports are short single writes (< PIPE_BUF): whole lines */
  for (line = buf; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
    *nl = '\0';
    handle_report(w, line);
  }
}

/* ---------------------------------------------------------------- signals */

static worker *find (supervisor *s, pid_t pid) {
  int i;
  for (i = 0; i < s->count; i++)
    if (s->w[i].pid == pid) return &s->w[i];
  return NULL;
}

static void describe (int st, char *buf, size_t size) {
  if (WIFSIGNALED(st)) snprintf(buf, size, "killed by signal %d", WTERMSIG(st));
  else snprintf(buf, size, "exit status %d", WEXITSTATUS(st));
}

/* A worker ended: restart it unless stopping or it ended well. */
static void reap (supervisor *s, worker *w, int st) {
  char how[64];
  double lived = now() - w->started;
  struct timeval tv;
  describe(st, how, sizeof how);
  close_report(w);
  w->pid = 0;
  if (s->rolling == w->id) roll_end(s, "the worker died");
  if (s->stopping) {
    slog(LC_INFO, "worker %d stopped (%s)", w->id, how);
    return;
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    slog(LC_INFO, "worker %d ended (%s); not restarted", w->id, how);
    return;
  }
  if (lived >= STABLE_AFTER || w->delay == 0) w->delay = BACKOFF_MIN;
  else w->delay = w->delay * 2 > BACKOFF_MAX ? BACKOFF_MAX : w->delay * 2;
  slog(LC_WARN, "worker %d died (%s) after %.1f s; restarting in %.1f s", w->id, how, lived, w->delay);
  tv = tv_of(w->delay);
  evtimer_add(w->restart_ev, &tv);
}

static void on_sigchld (evutil_socket_t sig, short what, void *arg) {
  supervisor *s = arg;
  pid_t pid;
  int st;
  (void)sig;
  (void)what;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    worker *w = find(s, pid);
    if (w) reap(s, w, st);
  }
  end_if_idle(s);
}

static void kill_all (supervisor *s, int sig) {
  int i;
  for (i = 0; i < s->count; i++)
    if (s->w[i].pid) kill(s->w[i].pid, sig);
}

static void on_kill_timer (evutil_socket_t fd, short what, void *arg) {
  supervisor *s = arg;
  (void)fd;
  (void)what;
  slog(LC_WARN, "stop timeout: killing %d worker(s)", running(s));
  kill_all(s, SIGKILL);
}

static void on_stop (evutil_socket_t sig, short what, void *arg) {
  supervisor *s = arg;
  const char *name = sig == SIGINT ? "INT" : "TERM";
  struct timeval tv = tv_of(s->o->stop_timeout + KILL_GRACE);
  int i;
  (void)what;
  if (s->stopping) {
    slog(LC_ERROR, "second SIG%s during the stop: killing the workers", name);
    kill_all(s, SIGKILL);
    return;
  }
  s->stopping = 1;
  slog(LC_INFO, "SIG%s: stopping %d worker(s)", name, running(s));
  for (i = 0; i < s->count; i++) evtimer_del(s->w[i].restart_ev);
  if (s->rolling) roll_end(s, "stopping");
  kill_all(s, SIGTERM);
  evtimer_add(s->kill_timer, &tv);
  end_if_idle(s);
}

static void on_sighup (evutil_socket_t sig, short what, void *arg) {
  supervisor *s = arg;
  (void)sig;
  (void)what;
  if (s->stopping) return;
  if (s->rolling) {
    slog(LC_WARN, "SIGHUP: a reload is rolling already (worker %d); ignored", s->rolling);
    return;
  }
  slog(LC_INFO, "SIGHUP: reloading %d worker(s) one at a time", s->count);
  roll_next(s);
}

/* ---------------------------------------------------------------- main */

/* The supervisor's loop polls (no epoll): a worker, forked from inside
** it, frees its copy, and with epoll that would delete the supervisor's
** registrations from the epoll instance the two share after fork. */
static struct event_base *base_new (void) {
  struct event_config *cfg = event_config_new();
  struct event_base *base;
  if (cfg == NULL) return NULL;
  event_config_avoid_method(cfg, "epoll");
  base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  return base;
}

static int setup (supervisor *s) {
  static const int sigs[4] = {SIGCHLD, SIGHUP, SIGTERM, SIGINT};
  event_callback_fn fns[4] = {on_sigchld, on_sighup, on_stop, on_stop};
  int i;
  s->base = base_new();
  s->w = calloc((size_t)s->count, sizeof *s->w);
  if (s->base == NULL || s->w == NULL) return -1;
  for (i = 0; i < s->count; i++) {
    worker *w = &s->w[i];
    w->id = i + 1;
    w->report_fd = -1;
    w->sup = s;
    if ((w->restart_ev = evtimer_new(s->base, on_restart, w)) == NULL) return -1;
  }
  for (i = 0; i < 4; i++) {
    s->sig[i] = evsignal_new(s->base, sigs[i], fns[i], s);
    if (s->sig[i] == NULL || evsignal_add(s->sig[i], NULL) != 0) return -1;
  }
  s->roll_timer = evtimer_new(s->base, on_roll_timeout, s);
  s->kill_timer = evtimer_new(s->base, on_kill_timer, s);
  return s->roll_timer && s->kill_timer ? 0 : -1;
}

static void write_pidfile (const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    slog(LC_WARN, "cannot write pidfile %s", path);
    return;
  }
  fprintf(f, "%ld\n", (long)getpid());
  fclose(f);
}

int rt_workers_run (rt_opts *o, int *is_worker) {
  supervisor s;
  int i;
  memset(&s, 0, sizeof s);
  s.o = o;
  s.count = o->workers;
  rt_log_configure(o->log_json);
  log_level = o->log_level;
  rt_log_set_worker(0);
  signal(SIGPIPE, SIG_IGN);
  if (setup(&s) != 0) {
    fprintf(stderr, "luacomm: cannot set up the supervisor\n");
    if (s.base) supervisor_free(&s);
    return 1;
  }
  if (o->pidfile) write_pidfile(o->pidfile);
  slog(LC_INFO,
       "supervisor (pid %ld): starting %d worker(s) of %s",
       (long)getpid(),
       s.count,
       o->script ? o->script : "(command line)");
  for (i = 0; i < s.count && !s.is_child; i++) start_worker(&s, &s.w[i]);
  if (!s.is_child) {
    end_if_idle(&s); /* not one worker could start */
    if (running(&s) > 0) event_base_dispatch(s.base);
  }
  supervisor_free(&s);
  if (s.is_child) {
    *is_worker = 1;
    o->pidfile = NULL; /* the supervisor's */
    rt_log_set_worker(my_id);
    return 0;
  }
  if (o->pidfile) unlink(o->pidfile);
  slog(LC_INFO, "all workers ended");
  return 0;
}

/* ------------------------------------------------------------ in a worker */

/* report(ok[, why]): tells the supervisor how a reload it asked for went. */
static int worker_report (lua_State *L) {
  char line[512];
  int n;
  if (lua_toboolean(L, 1)) n = snprintf(line, sizeof line, "ok\n");
  else n = snprintf(line, sizeof line, "fail %s\n", luaL_optstring(L, 2, "reload failed"));
  if (n >= (int)sizeof line) {
    n = (int)sizeof line;
    line[n - 1] = '\n';
  }
  /* one short write: the supervisor reads whole lines */
  if (my_report_fd >= 0 && write(my_report_fd, line, (size_t)n) != n)
    slog(LC_WARN, "cannot report the reload to the supervisor: %s", strerror(errno));
  return 0;
}

void rt_workers_publish (lua_State *L) {
  if (my_id == 0) return;
  lua_createtable(L, 2, 0);
  lua_pushinteger(L, my_id);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, my_count);
  lua_rawseti(L, -2, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, "luacomm.worker");
  lua_pushcfunction(L, worker_report);
  lua_setfield(L, LUA_REGISTRYINDEX, "luacomm.worker.report");
}
