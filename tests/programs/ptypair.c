/*
 * A pty pair held inside the tree, checked from the inside after a restore.
 *
 *   ptypair RESULT
 *
 * The root (a session of its own) opens a pair and keeps both ends; it sets
 * the slave's termios (canonical, no echo, no CR/NL translation on output,
 * VINTR = ^G, VEOL = '@'), a window size, packet and exclusive mode on the
 * master, and queues bytes both ways without reading them: through the
 * master "line1\nline2@partial" (two lines and the start of a third, for
 * the slave to read), through the slave "out1\nout2" (for the master to
 * read). Its child starts a session whose controlling terminal is the
 * slave, holds the slave and /dev/tty but not the master; its grandchild,
 * a job in a group of its own, is the terminal's foreground group. Both wait for
 * SIGUSR1; then the root checks termios, window size, modes, the queued
 * bytes in order and by lines, new bytes both ways, and has the child check
 * its session, foreground group and controlling terminal and answer
 * through /dev/tty. Writes the report to RESULT (ALL OK or FAIL lines).
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>

static struct report R;
static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

static const char IN_QUEUED[] = "line1\nline2@partial";
static const char OUT_QUEUED[] = "out1\nout2";

/* Reads from the master (packet mode: each read starts with a status byte,
 * TIOCPKT_DATA for data) until WANT bytes of data came or 10 s passed. */
static int read_master(int fdm, char *buf, int want)
{
	int got = 0;
	for (int i = 0; i < 1000 && got < want; i++) {
		struct pollfd p = {fdm, POLLIN, 0};
		if (poll(&p, 1, 10) <= 0)
			continue;
		char tmp[256];
		ssize_t n = read(fdm, tmp, sizeof tmp);
		if (n <= 0)
			return got;
		if (tmp[0] != TIOCPKT_DATA || got + n - 1 > want)
			return -1;
		memcpy(buf + got, tmp + 1, (size_t)n - 1);
		got += (int)n - 1;
	}
	return got;
}

/* The child: the slave is its controlling terminal. Answers "child-XX\n"
 * through /dev/tty, XX the failed checks as bits (1 session, 2 tcgetsid,
 * 4 foreground group not the job's, 8 the slave is not the controlling
 * terminal, 16 /dev/tty does not open, 32 the answer, 64 the job did not
 * exit well); exits with them. */
static int child_checks(int fds, int tty, pid_t job)
{
	int fails = 0;
	pid_t me = getpid();
	if (getsid(0) != me)
		fails |= 1;
	if (tcgetsid(tty) != me)
		fails |= 2;
	if (tcgetpgrp(tty) != job || getpgid(job) != job)
		fails |= 4;
	if (tcgetsid(fds) != me)
		fails |= 8;
	int again = open("/dev/tty", O_RDWR);
	if (again < 0)
		fails |= 16;
	close(again);
	char line[32];
	int n = snprintf(line, sizeof line, "child-%02x\n", fails);
	if (write(tty, line, (size_t)n) != n)
		fails |= 32;
	int status = 0;
	if (kill(job, SIGUSR1) || waitpid(job, &status, 0) != job || !WIFEXITED(status) || WEXITSTATUS(status))
		fails |= 64;
	return fails;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 99;
	if (setsid() < 0)
		die("setsid");
	handle_blocked(SIGUSR1, on_usr1);
	int fdm = posix_openpt(O_RDWR | O_NOCTTY);
	if (fdm < 0 || grantpt(fdm) || unlockpt(fdm))
		die("posix_openpt");
	int fds = open(ptsname(fdm), O_RDWR | O_NOCTTY);
	if (fds < 0)
		die("open slave");
	struct termios t;
	if (tcgetattr(fds, &t))
		die("tcgetattr");
	t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOKE);
	t.c_lflag |= ICANON;
	t.c_oflag &= ~ONLCR;
	t.c_iflag |= IGNBRK;
	t.c_cc[VINTR] = 7;
	t.c_cc[VEOL] = '@';
	struct winsize ws = {.ws_row = 37, .ws_col = 123, .ws_xpixel = 5, .ws_ypixel = 7};
	int one = 1;
	if (tcsetattr(fds, TCSANOW, &t) || ioctl(fdm, TIOCSWINSZ, &ws) || ioctl(fdm, TIOCPKT, &one) || ioctl(fdm, TIOCEXCL))
		die("setting the pair up");
	if (write(fdm, IN_QUEUED, strlen(IN_QUEUED)) != (ssize_t)strlen(IN_QUEUED) ||
	    write(fds, OUT_QUEUED, strlen(OUT_QUEUED)) != (ssize_t)strlen(OUT_QUEUED))
		die("queueing");

	int ready[2];
	if (pipe(ready))
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(fdm);
		close(ready[0]);
		if (setsid() < 0 || ioctl(fds, TIOCSCTTY, 0))
			_exit(90);
		/* A job in a group of its own, the terminal's foreground group. */
		pid_t job = fork();
		if (job == 0) {
			setpgid(0, 0);
			suspend_until(SIGUSR1, &go);
			_exit(0);
		}
		if (job < 0 || setpgid(job, job) || tcsetpgrp(fds, job))
			_exit(92);
		int tty = open("/dev/tty", O_RDWR), null = open("/dev/null", O_RDWR);
		if (tty < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 || write(ready[1], "r", 1) != 1)
			_exit(91);
		close(null);
		close(ready[1]);
		suspend_until(SIGUSR1, &go);
		_exit(child_checks(fds, tty, job));
	}
	close(ready[1]);
	char c;
	if (read(ready[0], &c, 1) != 1)
		die("child setup");
	close(ready[0]);
	announce_ready("READY pid=%d child=%d\n", getpid(), child);
	suspend_until(SIGUSR1, &go);

	struct termios now;
	CHECK(&R, "termios", !tcgetattr(fds, &now), "tcgetattr: %s", strerror(errno));
	CHECK(&R, "termios flags", now.c_lflag == t.c_lflag && now.c_iflag == t.c_iflag && now.c_oflag == t.c_oflag && now.c_cflag == t.c_cflag,
	      "lflag %#x iflag %#x oflag %#x cflag %#x, set %#x %#x %#x %#x", now.c_lflag, now.c_iflag, now.c_oflag, now.c_cflag, t.c_lflag,
	      t.c_iflag, t.c_oflag, t.c_cflag);
	CHECK(&R, "special chars", now.c_cc[VINTR] == 7 && now.c_cc[VEOL] == '@', "VINTR %d VEOL %d", now.c_cc[VINTR], now.c_cc[VEOL]);
	struct winsize w = {0};
	CHECK(&R, "window size", !ioctl(fds, TIOCGWINSZ, &w) && w.ws_row == 37 && w.ws_col == 123 && w.ws_xpixel == 5 && w.ws_ypixel == 7,
	      "%dx%d %dx%d", w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel);
	int pkt = 0, excl = 0;
	CHECK(&R, "packet mode", !ioctl(fdm, TIOCGPKT, &pkt) && pkt == 1, "TIOCGPKT %d", pkt);
	CHECK(&R, "exclusive master", !ioctl(fdm, TIOCGEXCL, &excl) && excl == 1, "TIOCGEXCL %d", excl);
	int index = -1;
	struct stat st;
	CHECK(&R, "slave of the master", !ioctl(fdm, TIOCGPTN, &index) && !fstat(fds, &st) && minor(st.st_rdev) + (major(st.st_rdev) - 136) * 256 == (unsigned)index,
	      "master %d, slave %d:%d", index, major(st.st_rdev), minor(st.st_rdev));

	/* The input queue, line by line: the partial line waits for its end. */
	char buf[256];
	ssize_t n = read(fds, buf, sizeof buf);
	CHECK(&R, "input line 1", n == 6 && !memcmp(buf, "line1\n", 6), "%zd bytes: %.*s", n, (int)(n > 0 ? n : 0), buf);
	n = read(fds, buf, sizeof buf);
	CHECK(&R, "input line 2 (VEOL)", n == 6 && !memcmp(buf, "line2@", 6), "%zd bytes: %.*s", n, (int)(n > 0 ? n : 0), buf);
	fcntl(fds, F_SETFL, O_NONBLOCK);
	n = read(fds, buf, sizeof buf);
	CHECK(&R, "partial line waits", n < 0 && errno == EAGAIN, "%zd bytes: %.*s", n, (int)(n > 0 ? n : 0), buf);
	fcntl(fds, F_SETFL, 0);
	CHECK(&R, "write to master", write(fdm, "!\n", 2) == 2, "%s", strerror(errno));
	n = read(fds, buf, sizeof buf);
	CHECK(&R, "partial line completed", n == 9 && !memcmp(buf, "partial!\n", 9), "%zd bytes: %.*s", n, (int)(n > 0 ? n : 0), buf);

	/* The output queue, then new bytes both ways. */
	int got = read_master(fdm, buf, (int)strlen(OUT_QUEUED));
	CHECK(&R, "output queue", got == (int)strlen(OUT_QUEUED) && !memcmp(buf, OUT_QUEUED, (size_t)got), "%d bytes: %.*s", got,
	      got > 0 ? got : 0, buf);
	CHECK(&R, "write to slave", write(fds, "after\n", 6) == 6, "%s", strerror(errno));
	got = read_master(fdm, buf, 6);
	CHECK(&R, "slave to master", got == 6 && !memcmp(buf, "after\n", 6), "%d bytes: %.*s", got, got > 0 ? got : 0, buf);

	/* The child: its session and controlling terminal, an answer through it. */
	kill(child, SIGUSR1);
	got = read_master(fdm, buf, 9);
	CHECK(&R, "child answers through /dev/tty", got == 9 && !memcmp(buf, "child-00\n", 9), "%d bytes: %.*s", got, got > 0 ? got : 0, buf);
	int status = 0;
	CHECK(&R, "child checks", waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);

	if (finish_report(&R, argv[1]))
		return 98;
	return report_status(&R);
}
