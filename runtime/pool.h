/* pool.h — the host's allocator for its Lua state: small blocks from
** per-size free lists instead of malloc. */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <stddef.h>

typedef struct rt_pool rt_pool;

/* NULL when the address space cannot be reserved (then keep Lua's own). */
rt_pool *rt_pool_new(void);
void rt_pool_free(rt_pool *p);
/* A lua_Alloc; ud is the pool. Blocks it did not hand out go to free(). */
void *rt_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
