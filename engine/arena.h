/* arena.h - bump allocator for activations.
 *
 * A session runs each forward once in measure mode (no memory behind the
 * arena, ops skipped) to learn the peak, then reserves exactly that with one
 * backend allocation. Blocks take scratch between a mark and a reset. */
#ifndef KG_ARENA_H
#define KG_ARENA_H

#include <stddef.h>

#define KG_ARENA_ALIGN 256

typedef struct kg_arena {
    char *base;    /* backend memory; NULL while measuring */
    size_t size;   /* bytes behind base */
    size_t offset; /* next free byte */
    size_t peak;   /* highest offset seen since the last kg_arena_init */
    int measuring; /* 1: only count, hand out fake addresses */
} kg_arena;

void kg_arena_init(kg_arena *a, void *base, size_t size);
void kg_arena_init_measure(kg_arena *a);

/* Returns KG_ARENA_ALIGN-aligned memory, or NULL when it does not fit.
 * While measuring it returns a non-NULL address that must not be touched. */
void *kg_arena_alloc(kg_arena *a, size_t nbytes);

size_t kg_arena_mark(const kg_arena *a);
void kg_arena_reset(kg_arena *a, size_t mark);

#endif
