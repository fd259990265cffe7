/* workers.h — `luacomm --workers N`: a supervisor and N worker processes. */
#ifndef RT_WORKERS_H
#define RT_WORKERS_H

#include "lua.h"

#include "host.h"

/* Runs the supervisor; returns only in the supervisor, with its exit
** status. Each worker process returns from here into rt_host_run's path
** through *is_worker = 1 (then the return value means nothing). */
int rt_workers_run(rt_opts *o, int *is_worker);

/* In a worker: publishes its id and count to Lua (registry
** "luacomm.worker" = { id, count }) and the reload reporter (registry
** "luacomm.worker.report"). Does nothing outside --workers. */
void rt_workers_publish(lua_State *L);

#endif
