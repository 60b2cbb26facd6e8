/*
 * Test program for terminals of a shell job (--shell-job).
 *
 * Usage: shelljob RESULT   (stdin, stdout, stderr: a pty slave)
 * The started process plays the shell: it takes the pty as its
 * controlling terminal (setsid + TIOCSCTTY), forks the job into its own
 * process group, makes it the foreground group and waits forever. The job
 * sets known terminal state (raw mode, VMIN 3, a 33x77 window), opens
 * /dev/tty as fd 5, writes its pid to RESULT.ready and waits in
 * rt_sigsuspend until SIGUSR1. Then it checks from inside that fds 0-2 and
 * 5 are one terminal with that state, writes "HELLO FROM THE JOB" on
 * stdout and the report to RESULT (selfcheck.h); exit status 0 if all
 * passed. The job, not the shell, is what a test dumps.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void setup(void)
{
	struct termios t;
	if (tcgetattr(0, &t))
		die("tcgetattr");
	t.c_lflag &= ~(ECHO | ICANON);
	t.c_cc[VMIN] = 3;
	t.c_cc[VTIME] = 7;
	if (tcsetattr(0, TCSANOW, &t))
		die("tcsetattr");
	struct winsize w = {.ws_row = 33, .ws_col = 77};
	if (ioctl(0, TIOCSWINSZ, &w))
		die("TIOCSWINSZ");
	int tty = open("/dev/tty", O_RDWR);
	if (tty < 0 || dup2(tty, 5) != 5)
		die("/dev/tty");
	close(tty);
}

static void check(struct report *r)
{
	struct termios t;
	int got = tcgetattr(0, &t) == 0;
	CHECK(r, "raw-mode", got && !(t.c_lflag & (ECHO | ICANON)), "c_lflag %#x", got ? t.c_lflag : 0);
	CHECK(r, "control-chars", got && t.c_cc[VMIN] == 3 && t.c_cc[VTIME] == 7, "VMIN %d VTIME %d", got ? t.c_cc[VMIN] : -1,
	      got ? t.c_cc[VTIME] : -1);
	struct winsize w = {0};
	CHECK(r, "window-size", ioctl(0, TIOCGWINSZ, &w) == 0 && w.ws_row == 33 && w.ws_col == 77, "%dx%d", w.ws_row, w.ws_col);
	struct stat s[3];
	int same = 1;
	for (int i = 0; i < 3; i++)
		same &= fstat(i, &s[i]) == 0 && isatty(i) && s[i].st_rdev == s[0].st_rdev;
	CHECK(r, "one-terminal", same, "fds 0, 1 and 2 are not one terminal");
	/* /dev/tty has its own inode; it is the same terminal if it sees the same window. */
	struct winsize w5 = {0};
	CHECK(r, "dev-tty", ioctl(5, TIOCGWINSZ, &w5) == 0 && w5.ws_row == 33 && w5.ws_col == 77, "/dev/tty: %dx%d (%s)", w5.ws_row,
	      w5.ws_col, strerror(errno));
	const char hello[] = "HELLO FROM THE JOB\n";
	CHECK(r, "write-stdout", write(1, hello, sizeof hello - 1) == (ssize_t)sizeof hello - 1, "%s", strerror(errno));
}

static int job(const char *result)
{
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block, empty;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigemptyset(&empty);
	setup();
	char ready[4200];
	snprintf(ready, sizeof ready, "%s.ready", result);
	struct report pid = {0};
	say(&pid, "%d\n", getpid());
	/* Written aside, then renamed: the test reads it as soon as it exists. */
	char tmp[4300];
	snprintf(tmp, sizeof tmp, "%s.tmp", ready);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, pid.buf, pid.len) != (ssize_t)pid.len || close(fd) || rename(tmp, ready))
		die("writing RESULT.ready");
	while (!go)
		sigsuspend(&empty);
	struct report r = {0};
	check(&r);
	if (finish_report(&r, result))
		die("writing the report");
	return report_status(&r);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: shelljob RESULT\n");
		return 2;
	}
	if (setsid() < 0 || ioctl(0, TIOCSCTTY, 0))
		die("taking the terminal");
	int sync[2];
	if (pipe(sync))
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char c;
		setpgid(0, 0);
		close(sync[1]);
		/* Wait until the shell made this group the foreground one. */
		if (read(sync[0], &c, 1) != 1)
			die("waiting for the foreground");
		close(sync[0]);
		return job(argv[1]);
	}
	setpgid(child, child);
	signal(SIGTTOU, SIG_IGN);
	if (tcsetpgrp(0, child))
		die("tcsetpgrp");
	close(sync[0]);
	if (write(sync[1], "g", 1) != 1)
		die("starting the job");
	close(sync[1]);
	for (;;) {
		int st;
		/* The job dies at the dump; the shell stays, holding the terminal. */
		if (waitpid(-1, &st, 0) < 0)
			pause();
	}
}
