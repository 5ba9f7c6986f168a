/* Persistent worker pool behind mt_parallel_for (kernels.h). mt_pool_start(n) runs n - 1
 * workers; the calling thread is the n-th participant of every parallel loop. Idle workers
 * spin on a generation counter for a short while (cheap dispatch between the back-to-back
 * matrix products of a forward pass), then sleep on a futex. Loops issued from inside a loop
 * body run serially; loops issued from several threads at once are serialised. Starting or
 * stopping the pool while a loop runs is not supported. */
#ifndef MT_KERNELS_CPU_THREADPOOL_H
#define MT_KERNELS_CPU_THREADPOOL_H

/* (Re)starts the pool with n participants in total (n <= 0: one per online CPU). */
void mt_pool_start(int n);
/* Joins and frees the workers; later loops run on the calling thread alone. */
void mt_pool_stop(void);
/* Participants of a parallel loop (1 when the pool is not running). */
int mt_pool_threads(void);
/* 1 when called from inside a parallel loop body (where nested loops run serially). */
int mt_pool_in_loop(void);

#endif
