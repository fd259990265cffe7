/*
** evmem.c — a small cache in front of malloc for libevent's buffer chains.
**
** An evbuffer allocates a chain of at least 1 KiB whenever it needs room
** and frees it as soon as it is drained: for a node echoing small frames,
** one chain per read and one per write, every time. A 1 KiB block is just
** over glibc's per-thread cache limit (1032 bytes), so each of these went
** through malloc's slow path and made it consolidate the freed Lua strings
** (callgrind: a tenth of the echo server's instructions). Here blocks of a
** few power-of-two sizes are kept on free lists instead, 64 KiB at most.
** The host installs it before any libevent call; the module never does (a
** library must not change a process-wide allocator).
*/
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "evmem.h"

#define MIN_CLASS 10 /* 1 KiB */
#define MAX_CLASS 14 /* 16 KiB */
#define NCLASSES (MAX_CLASS - MIN_CLASS + 1)
#define KEEP_BYTES (64 * 1024) /* at most this much kept in all: RSS matters too */

/* Every block starts with its size, padded to keep the payload aligned. */
typedef union header {
  size_t size;
  max_align_t align;
} header;

typedef struct free_block {
  struct free_block *next;
} free_block;

static free_block *lists[NCLASSES];
static size_t kept; /* bytes on the lists */

/* The class whose blocks hold exactly `size`, or -1. */
static int class_of (size_t size) {
  int k;
  for (k = 0; k < NCLASSES; k++)
    if (size == (size_t)1 << (MIN_CLASS + k)) return k;
  return -1;
}

static void *mem_malloc (size_t size) {
  int k = class_of(size);
  header *h;
  if (k >= 0 && lists[k] != NULL) {
    h = (header *)(void *)lists[k];
    lists[k] = lists[k]->next;
    kept -= size;
  } else {
    h = malloc(sizeof *h + size);
    if (h == NULL) return NULL;
  }
  h->size = size;
  return h + 1;
}

static void mem_free (void *p) {
  header *h;
  int k;
  if (p == NULL) return;
  h = (header *)p - 1;
  k = class_of(h->size);
  if (k >= 0 && kept + h->size <= KEEP_BYTES) {
    free_block *b = (free_block *)(void *)h;
    b->next = lists[k];
    lists[k] = b;
    kept += h->size;
    return;
  }
  free(h);
}

static void *mem_realloc (void *p, size_t size) {
  void *q;
  size_t old;
  if (p == NULL) return mem_malloc(size);
  old = ((header *)p - 1)->size;
  if (size <= old && class_of(old) < 0) return p;
  q = mem_malloc(size);
  if (q == NULL) return NULL;
  memcpy(q, p, old < size ? old : size);
  mem_free(p);
  return q;
}

/* Not under AddressSanitizer: it must see every block come and go. */
void rt_evmem_install (void) {
#ifdef __SANITIZE_ADDRESS__
  (void)mem_realloc;
#else
  event_set_mem_functions(mem_malloc, mem_realloc, mem_free);
#endif
}

/* At exit, so leak checkers see every block returned. */
void rt_evmem_release (void) {
  int k;
  for (k = 0; k < NCLASSES; k++) {
    while (lists[k]) {
      free_block *b = lists[k];
      lists[k] = b->next;
      free(b);
    }
  }
  kept = 0;
}
