/* log.h — the host's log sink: text or JSON lines on stderr. */
#ifndef RT_LOG_H
#define RT_LOG_H

#include <stddef.h>

void rt_log_configure(int json);
void rt_log_sink(void *ud, int level, const char *msg, size_t len);
void rt_log_set_worker(int id); /* -1 none, 0 supervisor, N worker N */

#endif
