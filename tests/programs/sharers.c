/*
 * Test program for dumping a tree whose tasks share kernel objects other
 * than memory: the root R (its own session and group) starts
 *   X  with clone(CLONE_FILES): X and R share one descriptor table;
 *   Y  an ordinary fork, which starts a second thread.
 * R opens "shared-table.dat" after X exists, so the fd appears in both.
 *
 * Usage: sharers DIR
 *
 * Prints "READY pid=R x=X y=Y ytid=T fd=N" once every task waits (in
 * pause()), then waits for SIGKILL. Every failure exits 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int *ready;

static int run_x(void *arg)
{
	(void)arg;
	atomic_fetch_add(ready, 1);
	for (;;)
		pause();
	return 0;
}

static void *thread_main(void *arg)
{
	(void)arg;
	atomic_store(&ready[1], (int)syscall(SYS_gettid));
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc != 2 || setsid() < 0 || chdir(argv[1]))
		return 1;
	ready = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ready == MAP_FAILED)
		return 1;
	static char stack[1 << 16] __attribute__((aligned(16)));
	pid_t x = clone(run_x, stack + sizeof stack, CLONE_FILES | SIGCHLD, NULL);
	if (x < 0)
		return 1;
	int fd = open("shared-table.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 1;
	pid_t y = fork();
	if (y < 0)
		return 1;
	if (!y) {
		pthread_t th;
		if (pthread_create(&th, NULL, thread_main, NULL))
			_exit(1);
		for (;;)
			pause();
	}
	while (atomic_load(&ready[0]) < 1 || atomic_load(&ready[1]) == 0)
		usleep(1000);
	printf("READY pid=%d x=%d y=%d ytid=%d fd=%d\n", getpid(), x, y, atomic_load(&ready[1]), fd);
	fflush(stdout);
	for (;;)
		pause();
}
