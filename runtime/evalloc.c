/*
** evalloc.c — libevent's allocator in the host.
**
** Why: every read and every flush of a connection takes a buffer chain
** from libevent and gives it back once drained, a KiB or more each. glibc
** keeps only 7 freed blocks of a size in its per-thread cache; with more
** connections than that busy at once, the rest go through its bins, and a
** chain's malloc and free then cost some 450 instructions: 15 % of all the
** host does per message with 64 or 1,000 connections (callgrind, echo
** scenarios B and E). Here a freed block of MIN_BLOCK to MAX_BLOCK bytes
** waits in a list per power-of-two size for the next request of that
** size, up to KEEP_BYTES a size; everything else is plain malloc.
**
** No header: a block's size is read back with malloc_usable_size, and a
** block is kept under the largest size it can serve. So a block from
** plain malloc may come here to be freed and a block from here may go to
** plain free: installing late (a worker, forked from a supervisor that
** ran libevent) is safe. Under AddressSanitizer it steps aside.
*/
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "evalloc.h"

#define MIN_SHIFT 9  /* 512 B */
#define MAX_SHIFT 14 /* 16 KiB */
#define SIZES (MAX_SHIFT - MIN_SHIFT + 1)
#define KEEP_BYTES (1024 * 1024)
#define LONG_BITS ((int)(sizeof(unsigned long) * CHAR_BIT))

#if defined(__SANITIZE_ADDRESS__)
#define EVALLOC_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVALLOC_OFF 1
#endif
#endif

/* A kept block holds the address of the next one. */
static struct {
  void *head;
  size_t count;
} kept[SIZES];

/* The smallest size index whose blocks hold n bytes; -1 outside the range. */
static int index_for (size_t n) {
  if (n < ((size_t)1 << MIN_SHIFT) || n > ((size_t)1 << MAX_SHIFT)) return -1;
  return n == ((size_t)1 << MIN_SHIFT) ? 0 : LONG_BITS - __builtin_clzl(n - 1) - MIN_SHIFT;
}

static void *ev_malloc (size_t n) {
  int i = index_for(n);
  void *p;
  if (i < 0) return malloc(n);
  if ((p = kept[i].head) != NULL) {
    memcpy(&kept[i].head, p, sizeof p);
    kept[i].count--;
    return p;
  }
  return malloc((size_t)1 << (MIN_SHIFT + i)); /* the whole size: it can be kept */
}

static void ev_free (void *p) {
  size_t u;
  int i;
  if (p == NULL) return;
  u = malloc_usable_size(p);
  i = LONG_BITS - 1 - __builtin_clzl(u | 1) - MIN_SHIFT;                            /* the largest size u holds */
  if (i < 0 || i >= SIZES || (kept[i].count + 1) << (MIN_SHIFT + i) > KEEP_BYTES) { /* small, large, enough kept */
    free(p);
    return;
  }
  memcpy(p, &kept[i].head, sizeof p);
  kept[i].head = p;
  kept[i].count++;
}

static void *ev_realloc (void *p, size_t n) {
  return realloc(p, n); /* arrays that grow (epoll's, the timer heap): rare */
}

void rt_evalloc_install (void) {
#ifndef EVALLOC_OFF
  event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
#endif
}

void rt_evalloc_release (void) {
  int i;
  for (i = 0; i < SIZES; i++) {
    while (kept[i].head != NULL) {
      void *p = kept[i].head;
      memcpy(&kept[i].head, p, sizeof p);
      free(p);
    }
    kept[i].count = 0;
  }
}
