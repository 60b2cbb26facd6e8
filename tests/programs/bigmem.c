/*
 * Benchmark program for criu-rs dump and restore: fills MEM_MIB of
 * anonymous memory with a non-zero pattern and waits to be checked.
 *
 *   bigmem MEM_MIB
 *       prints "READY pid=N mem=ADDR", then blocks reading stdin; on input
 *       it verifies the pattern and prints OK or FAIL.
 *
 *   bigmem MEM_MIB RESULT [wide N | deep N]
 *       the user's flow (`cargo xtask bench`, user-flow rows): starts its
 *       own session, optionally a tree of N more tasks (wide: N children of
 *       the root; deep: a chain of N descendants), each holding MEM_MIB of
 *       its own pattern; prints "READY pid=N tasks=T" once every task is
 *       waiting, then puts /dev/null on fds 0-2 (nothing in the tree holds
 *       anything but /dev/null then, so any criu restores it as it is).
 *       On SIGUSR1 each task passes the signal on to its children, checks
 *       its own memory, waits for its children and exits 0 (all good) or 1.
 *       The root then writes "OK tasks=T" or "FAIL ..." to RESULT.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t word(size_t i, uint64_t seed)
{
	return (i + seed) * 0x9e3779b97f4a7c15ULL + 1;
}

static uint64_t *fill(size_t len, uint64_t seed)
{
	uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		exit(3);
	for (size_t i = 0; i < len / 8; i++)
		mem[i] = word(i, seed);
	return mem;
}

/* Index of the first wrong word, or -1. */
static long check(const uint64_t *mem, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len / 8; i++)
		if (mem[i] != word(i, seed))
			return (long)i;
	return -1;
}

static int classic(size_t len)
{
	uint64_t *mem = fill(len, 0);
	printf("READY pid=%d mem=%p\n", getpid(), (void *)mem);
	char c;
	if (read(0, &c, 1) != 1)
		return 4;
	long bad = check(mem, len, 0);
	if (bad >= 0) {
		printf("FAIL word %ld\n", bad);
		return 1;
	}
	printf("OK\n");
	return 0;
}

static void on_usr1(int sig)
{
	(void)sig;
}

/* Waits for SIGUSR1 (blocked outside sigsuspend, so none is lost). */
static void wait_usr1(void)
{
	sigset_t none;
	sigemptyset(&none);
	sigsuspend(&none);
}

/* Passes SIGUSR1 on, checks the memory, reaps the children: failures. */
static int check_task(pid_t *kids, int nkids, const uint64_t *mem, size_t len, uint64_t seed, int *tasks)
{
	for (int i = 0; i < nkids; i++)
		kill(kids[i], SIGUSR1);
	int fails = check(mem, len, seed) >= 0;
	for (int i = 0; i < nkids; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st))
			fails++;
		else
			fails += WEXITSTATUS(st) != 0;
		++*tasks;
	}
	return fails;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bigmem MEM_MIB [RESULT [wide N | deep N]]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	size_t len = strtoull(argv[1], NULL, 0) << 20;
	if (argc < 3)
		return classic(len);
	const char *result = argv[2];
	int wide = argc > 4 && !strcmp(argv[3], "wide") ? atoi(argv[4]) : 0;
	int deep = argc > 4 && !strcmp(argv[3], "deep") ? atoi(argv[4]) : 0;
	setsid();
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigaction(SIGUSR1, &sa, NULL);
	int ready[2];
	if (pipe(ready))
		return 3;
	pid_t *kids = calloc(wide > 1 ? wide : 1, sizeof *kids);
	int nkids = 0, depth = 0;
	/* Wide: the root forks every child. Deep: each task forks the next. */
	for (int i = 0; i < wide; i++) {
		pid_t k = fork();
		if (k == 0) {
			nkids = 0;
			depth = i + 1;
			break;
		}
		kids[nkids++] = k;
	}
	while (depth < deep) {
		pid_t k = fork();
		if (k != 0) {
			kids[nkids++] = k;
			break;
		}
		depth++;
	}
	int root = depth == 0;
	uint64_t *mem = fill(len, (uint64_t)depth << 32);
	if (!root) {
		close(ready[0]);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		close(ready[1]);
	} else {
		close(ready[1]);
		for (int want = wide + deep; want > 0;) {
			char buf[256];
			ssize_t n = read(ready[0], buf, want < 256 ? want : 256);
			if (n <= 0)
				return 3;
			want -= n;
		}
		close(ready[0]);
		printf("READY pid=%d tasks=%d\n", getpid(), 1 + wide + deep);
	}
	int null = open("/dev/null", O_RDWR);
	for (int fd = 0; fd < 3; fd++)
		dup2(null, fd);
	if (null > 2)
		close(null);
	wait_usr1();
	int tasks = 1;
	int fails = check_task(kids, nkids, mem, len, (uint64_t)depth << 32, &tasks);
	if (!root)
		_exit(fails != 0);
	/* The chain's tasks each counted their own child only. */
	if (deep)
		tasks = 1 + deep;
	/* Via RESULT.tmp and rename: a reader sees it whole. */
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", result);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return 3;
	if (fails)
		fprintf(f, "FAIL %d task(s)\n", fails);
	else
		fprintf(f, "OK tasks=%d\n", tasks);
	if (fclose(f) || rename(tmp, result))
		return 3;
	return fails != 0;
}
