/*
 * Benchmark program for live snapshots (`cargo xtask bench`, stall rows):
 * how long a snapshot keeps a busy process from running, seen from inside.
 *
 *   stall MIB RESULT
 *
 * Fills MIB of private anonymous memory, prints "READY pid=N" and puts fds
 * 0-2 on /dev/null. A writer thread then rewrites 5% of the pages every
 * 100 ms, in slices of 1 ms (pages picked at random), and records the
 * longest time between the ends of two slices: about 1 ms while it runs
 * freely; a freeze, or a write that waits on a snapshot, shows up as a
 * longer gap. SIGUSR1 resets the longest gap; SIGUSR2 writes
 * "max_gap_us=N slices=S ended=T" to RESULT (via RESULT.tmp and rename),
 * T the wall-clock time the longest gap ended (to find it in a -v4 log).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static uint64_t *mem;
static size_t pages;
static volatile uint64_t max_gap_ns, max_gap_at_ns, slices;
static volatile int reset;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *writer(void *arg)
{
	(void)arg;
	uint64_t x = 88172645463325252ULL, last = now_ns();
	/* 5% per 100 ms = 0.05% per 1 ms slice. */
	size_t per_slice = pages / 2000 ? pages / 2000 : 1;
	for (uint64_t gen = 1;; gen++) {
		for (size_t i = 0; i < per_slice; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t pg = x % pages;
			mem[pg * (PAGE / 8) + (gen % (PAGE / 8))] = gen;
		}
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		uint64_t t = now_ns();
		if (reset) {
			reset = 0;
			max_gap_ns = 0;
		} else if (t - last > max_gap_ns) {
			struct timespec wall;
			clock_gettime(CLOCK_REALTIME, &wall);
			max_gap_ns = t - last;
			max_gap_at_ns = (uint64_t)wall.tv_sec * 1000000000ULL + (uint64_t)wall.tv_nsec;
		}
		last = t;
		slices++;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: stall MIB RESULT\n");
		return 2;
	}
	const char *result = argv[2];
	pages = (size_t)atol(argv[1]) * 256;
	setsid();
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 3;
	for (size_t i = 0; i < pages * (PAGE / 8); i++)
		mem[i] = i * 0x9e3779b97f4a7c15ULL + 1;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	pthread_t th;
	if (pthread_create(&th, NULL, writer, NULL))
		return 4;
	printf("READY pid=%d\n", getpid());
	fflush(stdout);
	int null = open("/dev/null", O_RDWR);
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig))
			continue;
		if (sig == SIGUSR1) {
			reset = 1;
			continue;
		}
		char tmp[4200], line[128];
		snprintf(tmp, sizeof tmp, "%s.tmp", result);
		int n = snprintf(line, sizeof line, "max_gap_us=%llu slices=%llu ended=%llu.%09llu\n",
				 (unsigned long long)(max_gap_ns / 1000), (unsigned long long)slices,
				 (unsigned long long)(max_gap_at_ns / 1000000000ULL), (unsigned long long)(max_gap_at_ns % 1000000000ULL));
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0 && write(fd, line, (size_t)n) == n && !close(fd))
			rename(tmp, result);
	}
}
