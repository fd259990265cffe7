/* signals.h — SIGHUP, SIGTERM and SIGINT as loop events; SIGPIPE ignored. */
#ifndef RT_SIGNALS_H
#define RT_SIGNALS_H

#include <event2/event.h>

#include "lua.h"

int rt_signals_install(struct event_base *base, lua_State *L);
void rt_signals_free(void);

#endif
