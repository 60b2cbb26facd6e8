/*
 * Test program for dumping a tree that changes while it is frozen: the
 * root forks without pause. Each child forks a grandchild, spins a little
 * and exits; each grandchild spins and exits. So at any moment some
 * children and grandchildren are starting, running, or zombies.
 *
 * Usage: forker COUNTER_FILE
 *
 * The root (its own session and group) prints "READY pid=P" and then keeps
 * the number of children it has reaped, as a decimal line, in COUNTER_FILE
 * (rewritten every 16 rounds), so a test can see it still works. It never
 * exits by itself; every failure exits 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

static void child(void)
{
	pid_t g = fork();
	if (g < 0)
		_exit(1);
	if (!g) {
		spin(20000);
		_exit(0);
	}
	spin(50000);
	int st;
	if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st))
		_exit(1);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: forker COUNTER_FILE\n");
		return 99;
	}
	if (setsid() < 0)
		return 1;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 1;
	printf("READY pid=%d\n", getpid());
	fflush(stdout);
	for (unsigned long n = 1;; n++) {
		pid_t c = fork();
		if (c < 0)
			return 1;
		if (!c)
			child();
		int st;
		if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
			return 1;
		if (n % 16 == 0) {
			char line[32];
			int len = snprintf(line, sizeof line, "%lu\n", n);
			if (pwrite(fd, line, len, 0) != len)
				return 1;
		}
	}
}
