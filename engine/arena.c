/* arena.c - bump allocator with a measure mode. */
#include "arena.h"

#include <stdint.h>

/* Measuring hands out addresses above this fake base so that a tensor's data
 * pointer is non-NULL (NULL marks a failed allocation). */
#define KG_ARENA_MEASURE_BASE ((uintptr_t)1 << 20)

void kg_arena_init(kg_arena *a, void *base, size_t size)
{
    a->base = base;
    a->size = size;
    a->offset = 0;
    a->peak = 0;
    a->measuring = 0;
}

void kg_arena_init_measure(kg_arena *a)
{
    kg_arena_init(a, NULL, SIZE_MAX / 2);
    a->measuring = 1;
}

void *kg_arena_alloc(kg_arena *a, size_t nbytes)
{
    size_t start = (a->offset + KG_ARENA_ALIGN - 1) & ~(size_t)(KG_ARENA_ALIGN - 1);
    size_t need = (nbytes + KG_ARENA_ALIGN - 1) & ~(size_t)(KG_ARENA_ALIGN - 1);
    if (need == 0)
        need = KG_ARENA_ALIGN;
    if (start > a->size || need > a->size - start)
        return NULL;
    a->offset = start + need;
    if (a->offset > a->peak)
        a->peak = a->offset;
    if (a->measuring)
        return (void *)(KG_ARENA_MEASURE_BASE + start);
    return a->base + start;
}

size_t kg_arena_mark(const kg_arena *a)
{
    return a->offset;
}

void kg_arena_reset(kg_arena *a, size_t mark)
{
    if (mark <= a->offset)
        a->offset = mark;
}
