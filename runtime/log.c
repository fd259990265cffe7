/*
** log.c — the host's sink: it formats and writes, nothing else (the level
** is the core's, the names are lc_level_names). One line per record on stderr, flushed at once so a supervisor or
** a spec reads it as it happens. Text: "2026-11-27T14:08:33.123Z [info] msg".
** JSON: {"ts":"…","level":"info","msg":"…"}. Under --workers each record
** says whose it is: "[supervisor]" / "[worker N]" after the level, or a
** "worker" field (0 for the supervisor).
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lc.h"
#include "log.h"

static int as_json = 0;
static int worker_id = -1; /* under --workers: 0 supervisor, 1.. a worker */

void rt_log_set_worker (int id) {
  worker_id = id;
}

void rt_log_configure (int json) {
  as_json = json;
}

static void timestamp (char *buf, size_t size) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, size - n, ".%03dZ", (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0:
** no overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_len (const unsigned char *p, size_t n) {
  size_t len, i;
  unsigned char lo = 0x80, hi = 0xBF;
  if (p[0] >= 0xC2 && p[0] <= 0xDF) len = 2;
  else if (p[0] >= 0xE0 && p[0] <= 0xEF) len = 3;
  else if (p[0] >= 0xF0 && p[0] <= 0xF4) len = 4;
  else return 0;
  if (len > n) return 0;
  if (p[0] == 0xE0) lo = 0xA0;
  else if (p[0] == 0xED) hi = 0x9F;
  else if (p[0] == 0xF0) lo = 0x90;
  else if (p[0] == 0xF4) hi = 0x8F;
  if (p[1] < lo || p[1] > hi) return 0;
  for (i = 2; i < len; i++)
    if (p[i] < 0x80 || p[i] > 0xBF) return 0;
  return len;
}

/* Writes msg as a JSON string. Quotes, backslashes and control characters
** are escaped; well-formed UTF-8 passes through; any other byte (a log line
** may quote binary from a peer) becomes \u00XX, because JSON text must be
** UTF-8 and one bad byte would make strict parsers reject the whole line. */
static void put_json_string (FILE *f, const char *msg, size_t len) {
  const unsigned char *p = (const unsigned char *)msg;
  size_t i = 0, n;
  fputc('"', f);
  while (i < len) {
    unsigned char ch = p[i];
    if (ch >= 0x80) {
      if ((n = utf8_len(p + i, len - i)) > 0) {
        fwrite(p + i, 1, n, f);
        i += n;
        continue;
      }
      fprintf(f, "\\u%04x", ch);
    } else if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\t') fputs("\\t", f);
    else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
    i++;
  }
  fputc('"', f);
}

/* One record, formatted onto f. */
static void put_record (FILE *f, int level, const char *msg, size_t len) {
  char ts[64];
  timestamp(ts, sizeof ts);
  if (as_json) {
    fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, lc_level_names[level]);
    put_json_string(f, msg, len);
    if (worker_id >= 0) fprintf(f, ",\"worker\":%d", worker_id);
    fputs("}\n", f);
  } else if (worker_id == 0) {
    fprintf(f, "%s [%s] [supervisor] %.*s\n", ts, lc_level_names[level], (int)len, msg);
  } else if (worker_id > 0) {
    fprintf(f, "%s [%s] [worker %d] %.*s\n", ts, lc_level_names[level], worker_id, (int)len, msg);
  } else {
    fprintf(f, "%s [%s] %.*s\n", ts, lc_level_names[level], (int)len, msg);
  }
}

static void write_all (int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* stderr gone: nowhere left to say so */
    p += w;
    n -= (size_t)w;
  }
}

/* The core's sink (lc_set_log): the core filtered already, this writes.
** A record is built in memory and written with one write(2): stderr is
** unbuffered, and under --workers several processes share it, so a record
** written piecemeal would interleave with another's mid-line. */
void rt_log_sink (void *ud, int level, const char *msg, size_t len) {
  char *buf = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&buf, &size);
  (void)ud;
  if (f == NULL) { /* out of memory: piecemeal beats silence */
    put_record(stderr, level, msg, len);
    fflush(stderr);
    return;
  }
  put_record(f, level, msg, len);
  if (fclose(f) == 0) write_all(STDERR_FILENO, buf, size);
  free(buf);
}
