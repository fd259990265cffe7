/*
** log.c — one line per record on stderr, flushed at once so a supervisor or
** a spec reads it as it happens. Text: "2026-11-27T14:08:33.123Z [info] msg".
** JSON: {"ts":"…","level":"info","msg":"…"}.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lc.h"
#include "log.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static int min_level = LC_INFO;
static int as_json = 0;

void rt_log_configure (int level, int json) {
  min_level = level;
  as_json = json;
}

int rt_log_level_from (const char *name) {
  int i;
  for (i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  return -1;
}

static void timestamp (char *buf, size_t size) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, size - n, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Writes msg as the body of a JSON string: quotes, backslashes and control
** characters escaped; bytes >= 0x80 passed through (UTF-8 stays UTF-8). */
static void put_json_string (FILE *f, const char *msg, size_t len) {
  size_t i;
  fputc('"', f);
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)msg[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\t') fputs("\\t", f);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

void rt_log_sink (void *ud, int level, const char *msg, size_t len) {
  char ts[64];
  (void)ud;
  if (level < min_level) return;
  timestamp(ts, sizeof ts);
  if (as_json) {
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
    put_json_string(stderr, msg, len);
    fputs("}\n", stderr);
  } else {
    fprintf(stderr, "%s [%s] %.*s\n", ts, level_names[level], (int)len, msg);
  }
  fflush(stderr);
}

void rt_logf (int level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n >= 0) rt_log_sink(NULL, level, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}
