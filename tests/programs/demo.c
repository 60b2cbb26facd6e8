/*
 * The README demo: a process that keeps working across a checkpoint.
 *
 * It fills 64 MiB of anonymous memory with a pattern tied to a counter,
 * then once every 100 ms bumps the counter, rewrites one page of the
 * pattern and checks the whole area, printing "tick N pid P ok" (or
 * "tick N pid P CORRUPT" and exiting 1). A restored copy carries on with
 * the next tick, same pid, same memory.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM (64UL << 20)
#define WORDS (MEM / 8)
#define PAGE_WORDS (4096 / 8)

static uint64_t expected(uint64_t i, uint64_t gen)
{
	return (i * 0x9e3779b97f4a7c15ULL) ^ gen;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	uint64_t *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 2;
	/* gen[p] is the generation page p was last written with. */
	uint64_t *gen = calloc(WORDS / PAGE_WORDS, sizeof(*gen));
	if (!gen)
		return 2;
	for (uint64_t i = 0; i < WORDS; i++)
		mem[i] = expected(i, 0);

	struct timespec delay = { 0, 100 * 1000 * 1000 };
	for (uint64_t tick = 1;; tick++) {
		uint64_t page = (tick * 7919) % (WORDS / PAGE_WORDS);
		gen[page] = tick;
		for (uint64_t w = 0; w < PAGE_WORDS; w++)
			mem[page * PAGE_WORDS + w] = expected(page * PAGE_WORDS + w, tick);
		for (uint64_t i = 0; i < WORDS; i++) {
			if (mem[i] != expected(i, gen[i / PAGE_WORDS])) {
				printf("tick %llu pid %d CORRUPT at word %llu\n", (unsigned long long)tick, getpid(),
				       (unsigned long long)i);
				return 1;
			}
		}
		printf("tick %llu pid %d ok\n", (unsigned long long)tick, getpid());
		nanosleep(&delay, NULL);
	}
}
