/*
** main.c — the luacomm command, shaped like lua.c: collect_args() checks
** argv without touching Lua; a usage error exits 2 before anything starts.
**
**   luacomm [options] SCRIPT [ARGS...]
**   luacomm [options] -e CODE [ARGS...]
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "host.h"
#include "lc.h"
#include "workers.h"

#define MAX_INCLUDES 64
#define MAX_WORKERS 256

static const char *const progname = "luacomm";

static void usage (FILE *f) {
  fprintf(f,
          "usage: %s [options] SCRIPT [ARGS...]\n"
          "       %s [options] -e CODE [ARGS...]\n"
          "options:\n"
          "  -e CODE             run CODE as the script (no file, so no reload)\n"
          "  -I DIR              prepend DIR to package.path and package.cpath (repeatable)\n"
          "  -c, --check         compile SCRIPT only; report a syntax error and exit 1\n"
          "  --log-level L       debug, info (default), warn, error\n"
          "  --log-format F      text (default) or json\n"
          "  --pidfile FILE      write the pid there at start, remove it at exit\n"
          "  --stop-timeout S    seconds a graceful stop may take (default 5)\n"
          "  --task-budget S     seconds a task may run without yielding (default 5, 0 = off)\n"
          "  --metrics ADDR      serve /metrics, /health and /peers over HTTP on ADDR\n"
          "  --workers N         N worker processes sharing the listening ports, under a supervisor\n"
          "  -v, --version       print the version\n"
          "  -h, --help          print this help\n"
          "  --                  end of options\n",
          progname,
          progname);
}

static int usage_error (const char *fmt, const char *what) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, what);
  fprintf(stderr, "\n");
  usage(stderr);
  return 2;
}

static int parse_seconds (const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= 0)) return -1;
  *out = v;
  return 0;
}

/* Option with a value: "--opt V" or "--opt=V". Returns the value or NULL. */
static const char *value_of (int argc, char **argv, int *i, const char *name) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') return argv[*i] + n + 1;
  if (strcmp(argv[*i], name) != 0) return NULL;
  if (*i + 1 >= argc) return NULL;
  return argv[++*i];
}

static int is_opt (const char *arg, const char *name) {
  size_t n = strlen(name);
  return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

/* Returns -1 to go on, or an exit status. */
static int collect_args (int argc, char **argv, rt_opts *o, const char **incs) {
  int i;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-' || strcmp(a, "-") == 0) break;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      printf("luacomm %s (%s, libevent %s)\n", LC_VERSION, LUA_RELEASE, event_get_version());
      return 0;
    } else if (strcmp(a, "-c") == 0 || strcmp(a, "--check") == 0) {
      o->check = 1;
    } else if (strcmp(a, "-e") == 0) {
      if (i + 1 >= argc) return usage_error("'%s' needs an argument", a);
      o->code = argv[++i];
      o->script_index = i;
      return -1;
    } else if (strcmp(a, "-I") == 0 || strncmp(a, "-I", 2) == 0) {
      const char *dir = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
      if (dir == NULL) return usage_error("'%s' needs an argument", "-I");
      if (o->nincludes == MAX_INCLUDES) return usage_error("too many %s options", "-I");
      incs[o->nincludes++] = dir;
    } else if (is_opt(a, "--log-level")) {
      if ((v = value_of(argc, argv, &i, "--log-level")) == NULL) return usage_error("'%s' needs an argument", a);
      if ((o->log_level = lc_level_from(v)) < 0) return usage_error("unknown log level '%s'", v);
    } else if (is_opt(a, "--log-format")) {
      if ((v = value_of(argc, argv, &i, "--log-format")) == NULL) return usage_error("'%s' needs an argument", a);
      if (strcmp(v, "json") != 0 && strcmp(v, "text") != 0) return usage_error("unknown log format '%s'", v);
      o->log_json = strcmp(v, "json") == 0;
    } else if (is_opt(a, "--pidfile")) {
      if ((o->pidfile = value_of(argc, argv, &i, "--pidfile")) == NULL) return usage_error("'%s' needs an argument", a);
    } else if (is_opt(a, "--stop-timeout")) {
      if ((v = value_of(argc, argv, &i, "--stop-timeout")) == NULL || parse_seconds(v, &o->stop_timeout) != 0)
        return usage_error("'%s' needs a number of seconds", "--stop-timeout");
    } else if (is_opt(a, "--metrics")) {
      if ((o->metrics = value_of(argc, argv, &i, "--metrics")) == NULL) return usage_error("'%s' needs an address", a);
    } else if (is_opt(a, "--task-budget")) {
      if ((v = value_of(argc, argv, &i, "--task-budget")) == NULL || parse_seconds(v, &o->task_budget) != 0)
        return usage_error("'%s' needs a number of seconds", "--task-budget");
    } else if (is_opt(a, "--workers")) {
      char *end;
      long n;
      if ((v = value_of(argc, argv, &i, "--workers")) == NULL) return usage_error("'%s' needs a number", a);
      n = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || n < 1 || n > MAX_WORKERS)
        return usage_error("--workers needs a number from 1 to 256, not '%s'", v);
      o->workers = (int)n;
    } else {
      return usage_error("unknown option '%s'", a);
    }
  }
  if (i >= argc) return usage_error("%s", "no script given");
  o->script = argv[i];
  o->script_index = i;
  return -1;
}

int main (int argc, char **argv) {
  const char *incs[MAX_INCLUDES];
  rt_opts o;
  int st;
  memset(&o, 0, sizeof o);
  o.log_level = LC_INFO;
  o.stop_timeout = 5;
  o.task_budget = 5;
  o.includes = incs;
  o.argc = argc;
  o.argv = argv;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if ((st = collect_args(argc, argv, &o, incs)) >= 0) return st;
  if (o.check) {
    if (o.script == NULL) return usage_error("%s", "--check needs a SCRIPT");
    return rt_host_check(o.script);
  }
  if (o.workers > 0 && o.metrics) /* each worker would bind the one address: all but one would fail */
    return usage_error("%s", "--metrics cannot be combined with --workers (yet): serve metrics from the script");
  if (o.workers > 0) {
    int is_worker = 0;
    st = rt_workers_run(&o, &is_worker);
    if (!is_worker) return st;
  }
  return rt_host_run(&o);
}
