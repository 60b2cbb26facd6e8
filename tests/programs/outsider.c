/*
 * Test program for a tree with a process group led from outside it: the
 * root R leads its session; its child P starts Q in a group of Q's own and
 * exits, so Q (still in R's session) is adopted by init and is no longer
 * R's descendant; R's child S then joins Q's group.
 *
 * Usage: outsider
 *
 * Prints "READY pid=R q=Q s=S" once S is in Q's group; every task then
 * waits in pause() until killed. Every failure exits 1.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	if (setsid() < 0)
		return 1;
	int qpipe[2];
	if (pipe(qpipe))
		return 1;
	pid_t p = fork();
	if (p < 0)
		return 1;
	if (!p) {
		pid_t q = fork();
		if (q < 0)
			_exit(1);
		if (!q) {
			if (setpgid(0, 0))
				_exit(1);
			/* Once for P, once for R. */
			pid_t me[2] = {getpid(), getpid()};
			if (write(qpipe[1], &me[0], sizeof me[0]) != sizeof me[0] ||
			    write(qpipe[1], &me[1], sizeof me[1]) != sizeof me[1])
				_exit(1);
			for (;;)
				pause();
		}
		/* Q told us it leads its group: leave it to init. */
		pid_t got;
		if (read(qpipe[0], &got, sizeof got) != sizeof got || got != q)
			_exit(1);
		_exit(0);
	}
	pid_t q;
	int st;
	if (read(qpipe[0], &q, sizeof q) != sizeof q || waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st))
		return 1;
	int spipe[2];
	if (pipe(spipe))
		return 1;
	pid_t s = fork();
	if (s < 0)
		return 1;
	if (!s) {
		char ok = setpgid(0, q) ? 'n' : 'y';
		if (write(spipe[1], &ok, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	char ok = 0;
	if (read(spipe[0], &ok, 1) != 1 || ok != 'y')
		return 1;
	printf("READY pid=%d q=%d s=%d\n", getpid(), q, s);
	fflush(stdout);
	for (;;)
		pause();
}
