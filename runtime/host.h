/* host.h — the Lua state's life in the host, from options to exit status. */
#ifndef RT_HOST_H
#define RT_HOST_H

typedef struct rt_opts {
  const char *script;    /* SCRIPT, or NULL with -e */
  const char *code;      /* -e CODE, or NULL */
  const char **includes; /* -I dirs, in the order given */
  int nincludes;
  int check; /* -c / --check */
  int log_level;
  int log_json;
  const char *pidfile;
  const char *metrics; /* --metrics ADDR, or NULL */
  double stop_timeout;
  double task_budget;
  int workers; /* --workers N, or 0 */
  char **argv; /* the whole command line */
  int argc;
  int script_index; /* argv index of SCRIPT (or of -e's CODE) */
} rt_opts;

int rt_host_run(const rt_opts *o);
int rt_host_check(const char *script);
void rt_host_exit_now(int status);

#endif
