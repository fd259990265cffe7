/* evmem.h — the host's cache for libevent's buffer chains. */
#ifndef RT_EVMEM_H
#define RT_EVMEM_H

void rt_evmem_install(void);
void rt_evmem_release(void);

#endif
