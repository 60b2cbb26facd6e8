/*
 * Test program for criu-rs restore of a process group whose leader is gone
 * (restore needs a helper task with the leader's pid).
 *
 * Usage: orphan_group RESULT_FILE
 *
 *   R  root: session and group leader, child subreaper
 *   +- T  forked by G, a child of R that made its own group and exited (R
 *         reaped it): T is in group G, whose leader is gone, in R's
 *         session, and was reparented to R.
 *
 * R writes "READY pid=R t=T g=G" once T waits. On SIGUSR1, R passes it to
 * T; T checks its pid, ppid, pgid, sid and that G is gone, exits with the
 * number of failures; R checks its own ids and child-subreaper flag and
 * T's exit, and writes its report ("ALL OK" last) to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <sys/prctl.h>
#include <sys/wait.h>

#include "selfcheck.h"

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

/* Waits for SIGUSR1 (blocked outside the wait). */
static void wait_go(void)
{
	sigset_t none;
	sigemptyset(&none);
	while (!go)
		sigsuspend(&none);
}

static int run_t(pid_t root, pid_t g, int ready_w)
{
	while (getppid() != root)
		sys_sleep_ms(1);
	pid_t me = getpid();
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		die("/dev/null");
	close(null);
	if (write(ready_w, "r", 1) != 1)
		die("ready");
	close(ready_w);
	wait_go();
	int fails = 0;
	fails += getpid() != me;
	fails += getppid() != root;
	fails += getpgrp() != g;
	fails += getsid(0) != root;
	fails += !(kill(g, 0) < 0 && errno == ESRCH);
	return fails;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: orphan_group RESULT_FILE\n");
		return 99;
	}
	syscall(SYS_close_range, 3, ~0U, 0);
	handle_blocked(SIGUSR1, on_usr1);
	pid_t root = getpid();
	if (setsid() < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1))
		die("setsid/subreaper");
	int ready[2];
	if (pipe(ready))
		die("pipe");
	int gpipe[2];
	if (pipe(gpipe))
		die("pipe");
	pid_t g = fork();
	if (g < 0)
		die("fork G");
	if (!g) {
		if (setpgid(0, 0))
			die("setpgid");
		pid_t t = fork();
		if (t < 0)
			die("fork T");
		if (!t) {
			close(ready[0]);
			close(gpipe[0]);
			close(gpipe[1]);
			_exit(run_t(root, getpgrp(), ready[1]));
		}
		if (write(gpipe[1], &t, sizeof t) != sizeof t)
			die("write T");
		_exit(0);
	}
	pid_t t;
	if (read(gpipe[0], &t, sizeof t) != sizeof t || waitpid(g, NULL, 0) != g)
		die("G");
	close(gpipe[0]);
	close(gpipe[1]);
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1)
		die("T not ready");
	close(ready[0]);
	announce_ready("READY pid=%d t=%d g=%d\n", root, t, g);

	wait_go();
	kill(t, SIGUSR1);
	static struct report rep;
	int st = 0;
	pid_t w = waitpid(t, &st, 0);
	CHECK(&rep, "T-checks", w == t && WIFEXITED(st) && WEXITSTATUS(st) == 0, "waitpid %d status %#x", w, st);
	CHECK(&rep, "R-ids", getpid() == root && getsid(0) == root && getpgrp() == root, "pid %d sid %d pgid %d", getpid(),
	      getsid(0), getpgrp());
	int sub = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &sub);
	CHECK(&rep, "child-subreaper", sub == 1, "%d", sub);
	if (finish_report(&rep, argv[1]))
		return 98;
	return report_status(&rep);
}
