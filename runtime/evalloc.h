/* evalloc.h — libevent's allocator in the host: buffer-sized blocks are
** kept for reuse instead of going back through malloc's bins. */
#ifndef RT_EVALLOC_H
#define RT_EVALLOC_H

/* Hands libevent the allocator; before the first libevent allocation or
** after (a block of either kind may be freed by the other). */
void rt_evalloc_install(void);
/* Frees the blocks kept for reuse (at the host's end). */
void rt_evalloc_release(void);

#endif
