/*
 * Test program for the freeze timeout: prints "READY pid=N", then vfork()s;
 * the child waits for a byte on stdin before exiting, so the parent sits in
 * an uninterruptible (killable) wait that ptrace cannot interrupt. Once the
 * child is gone the parent prints "OK".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <sys/wait.h>

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	printf("READY pid=%d\n", getpid());
	pid_t c = vfork();
	if (c == 0) {
		char b;
		/* Shares the parent's memory: only a read and _exit here. */
		if (read(0, &b, 1) < 0)
			_exit(1);
		_exit(0);
	}
	int st = 0;
	waitpid(c, &st, 0);
	printf(WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "OK\n" : "FAIL child\n");
	return 0;
}
