/*
** pool.c — the Lua state's allocator in the host.
**
** Why: a message workload makes and drops one string per frame. Through
** malloc each costs a trip through glibc's bins, and the freed chunks
** that pile up in its fastbins are merged again (malloc_consolidate)
** every time libevent asks for a buffer chain. Here blocks up to
** POOL_MAX bytes come from a free list per 16-byte size class, refilled
** by bumping a pointer through one reserved stretch of address space:
** allocating and freeing are a few instructions, and pages are only
** backed (and counted in RSS) once touched. Larger blocks, and every
** block handed out before the pool was installed (luaL_newstate's own),
** go through realloc/free: a block is the pool's exactly when its
** address lies in the reservation.
**
** Freed small blocks stay in their lists for reuse; the memory goes back
** to the system when the state is closed. Under AddressSanitizer the pool
** steps aside (everything through malloc) so overflows stay visible.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pool.h"

#define POOL_STEP 16
#define POOL_MAX 512
#define POOL_CLASSES (POOL_MAX / POOL_STEP)
#define POOL_RESERVE ((size_t)1 << 32) /* address space, not memory */

#if defined(__SANITIZE_ADDRESS__)
#define POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_OFF 1
#endif
#endif

struct rt_pool {
  char *base, *bump, *end;
  void *free[POOL_CLASSES]; /* each free block holds the next one's address */
};

rt_pool *rt_pool_new (void) {
#ifdef POOL_OFF
  return NULL;
#else
  rt_pool *p = calloc(1, sizeof *p);
  void *m;
  if (p == NULL) return NULL;
  m = mmap(NULL, POOL_RESERVE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    free(p);
    return NULL;
  }
  p->base = p->bump = m;
  p->end = p->base + POOL_RESERVE;
  return p;
#endif
}

void rt_pool_free (rt_pool *p) {
  if (p == NULL) return;
  munmap(p->base, POOL_RESERVE);
  free(p);
}

static size_t size_class (size_t n) {
  return n == 0 ? 0 : (n - 1) / POOL_STEP;
}

static int owned (const rt_pool *p, const void *b) {
  return (const char *)b >= p->base && (const char *)b < p->end;
}

/* A block of n (1..POOL_MAX) bytes, or NULL when the reservation is used up. */
static void *take (rt_pool *p, size_t n) {
  size_t k = size_class(n), sz = (k + 1) * POOL_STEP;
  void *b = p->free[k];
  if (b != NULL) {
    p->free[k] = *(void **)b;
    return b;
  }
  if ((size_t)(p->end - p->bump) < sz) return NULL;
  b = p->bump;
  p->bump += sz;
  return b;
}

/* Releases b, n bytes as Lua knows it, to its list or to free(). */
static void give (rt_pool *p, void *b, size_t n) {
  if (owned(p, b)) {
    size_t k = size_class(n);
    *(void **)b = p->free[k];
    p->free[k] = b;
  } else {
    free(b);
  }
}

void *rt_pool_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  rt_pool *p = ud;
  void *b;
  if (ptr == NULL) osize = 0; /* osize then tells the kind of object */
  if (nsize == 0) {
    if (ptr != NULL) give(p, ptr, osize);
    return NULL;
  }
  if (ptr != NULL && owned(p, ptr) && nsize <= POOL_MAX && size_class(osize) == size_class(nsize)) return ptr;
  if (ptr != NULL && !owned(p, ptr) && nsize > POOL_MAX) return realloc(ptr, nsize);
  b = nsize <= POOL_MAX ? take(p, nsize) : NULL;
  if (b == NULL) b = malloc(nsize);
  if (b == NULL) return nsize <= osize ? ptr : NULL; /* Lua: a shrink never fails */
  if (ptr != NULL) {
    memcpy(b, ptr, osize < nsize ? osize : nsize);
    give(p, ptr, osize);
  }
  return b;
}
