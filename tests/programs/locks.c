/*
 * Test program for file locks (dumped and restored with --file-locks).
 *
 * Usage: locks DIR RESULT [mapped]
 * ("mapped": "posix" is also mapped shared, which criu-rs cannot restore
 * with its POSIX locks.)
 * Phase 1, in DIR (in a session of its own): fd 10 holds POSIX locks on
 * "posix" (WRITE bytes 0-99, READ from 200 to EOF), fd 11 a flock
 * LOCK_EX on "flock", fd 12 an OFD WRITE lock on bytes 10-29 of "ofd",
 * fd 13 a flock LOCK_SH on "shared", a description the child holds too
 * (inherited); the child holds a POSIX WRITE lock on bytes 5-9 of "child"
 * (fd 20) and waits on a pipe. Prints "READY pid=N child=C" and waits for
 * SIGUSR1. Phase 2 checks from inside: each lock is listed in
 * /proc/self/fdinfo with its kind, type, owner pid and range, and still
 * keeps others out (a new description cannot take a conflicting lock);
 * the child checks its own. Report to RESULT (selfcheck.h).
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/file.h>
#include <sys/mman.h>

enum { FD_POSIX = 10, FD_FLOCK = 11, FD_OFD = 12, FD_SHARED = 13, FD_CHILD = 20 };

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int open_at(const char *name, int at)
{
	int fd = open(name, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4096) || dup2(fd, at) != at)
		die(name);
	close(fd);
	return at;
}

static int lock(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	return fcntl(fd, cmd, &fl);
}

/* Whether fdinfo of FD lists a lock "KIND ADVISORY TYPE PID dev:ino START END". */
static int listed(int fd, const char *kind, const char *type, int pid, const char *start, const char *end)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int found = 0;
	while (fgets(line, sizeof line, f)) {
		char k[16], adv[16], t[16], s[32], e[32];
		int p;
		if (strncmp(line, "lock:", 5) || sscanf(line, "lock: %*d: %15s %15s %15s %d %*s %31s %31s", k, adv, t, &p, s, e) != 6)
			continue;
		found += !strcmp(k, kind) && !strcmp(adv, "ADVISORY") && !strcmp(t, type) && p == pid && !strcmp(s, start) && !strcmp(e, end);
	}
	fclose(f);
	return found == 1;
}

/* The lock a new description of NAME would conflict with (F_OFD_GETLK).
 * The fd stays open: closing any fd of a file drops the process's POSIX
 * locks on it. */
static struct flock conflict(const char *name, short type, off_t start, off_t len)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	int fd = open(name, O_RDWR);
	if (fd < 0 || fcntl(fd, F_OFD_GETLK, &fl))
		fl.l_type = -1;
	return fl;
}

/* Whether a new description of NAME can take flock OP now (then drops it). */
static int can_flock(const char *name, int op)
{
	int fd = open(name, O_RDONLY);
	int ok = fd >= 0 && flock(fd, op | LOCK_NB) == 0;
	close(fd);
	return ok;
}

static void child_main(int in, int out)
{
	char c;
	if (read(in, &c, 1) != 1)
		_exit(1);
	int me = getpid();
	int ok = listed(FD_CHILD, "POSIX", "WRITE", me, "5", "9") && listed(FD_SHARED, "FLOCK", "READ", getppid(), "0", "EOF");
	struct flock fl = conflict("child", F_WRLCK, 0, 0);
	ok = ok && fl.l_type == F_WRLCK && fl.l_pid == me && fl.l_start == 5 && fl.l_len == 5;
	c = ok ? 'y' : 'n';
	if (write(out, &c, 1) != 1)
		_exit(1);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "mapped"))) {
		fprintf(stderr, "usage: locks DIR RESULT [mapped]\n");
		return 2;
	}
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	/* The child is forked before announce_ready: nothing of the test's
	 * (its stderr may be a growing log) in its table. */
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 2) < 0 || close(null))
		die("/dev/null");
	open_at("posix", FD_POSIX);
	if (argc == 4 && mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, FD_POSIX, 0) == MAP_FAILED)
		die("mmap");
	if (lock(FD_POSIX, F_SETLK, F_WRLCK, 0, 100) || lock(FD_POSIX, F_SETLK, F_RDLCK, 200, 0))
		die("POSIX locks");
	open_at("flock", FD_FLOCK);
	if (flock(FD_FLOCK, LOCK_EX))
		die("flock");
	open_at("ofd", FD_OFD);
	if (lock(FD_OFD, F_OFD_SETLK, F_WRLCK, 10, 20))
		die("OFD lock");
	open_at("shared", FD_SHARED);
	if (flock(FD_SHARED, LOCK_SH))
		die("shared flock");
	open_at("child", FD_CHILD);
	int ask[2], answer[2];
	if (pipe(ask) || pipe(answer))
		die("pipes");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		if (lock(FD_CHILD, F_SETLK, F_WRLCK, 5, 5))
			_exit(3);
		child_main(ask[0], answer[1]);
	}
	close(FD_CHILD);
	announce_ready("READY pid=%d child=%d\n", getpid(), child);
	while (!go)
		sigsuspend(&wait_mask);

	struct report R = {0};
	int me = getpid();
	CHECK(&R, "posix-listed", listed(FD_POSIX, "POSIX", "WRITE", me, "0", "99") && listed(FD_POSIX, "POSIX", "READ", me, "200", "EOF"),
	      "fdinfo of fd %d", FD_POSIX);
	struct flock fl = conflict("posix", F_RDLCK, 50, 1);
	CHECK(&R, "posix-write-holds", fl.l_type == F_WRLCK && fl.l_pid == me && fl.l_start == 0 && fl.l_len == 100, "type %d pid %d %ld+%ld",
	      fl.l_type, fl.l_pid, (long)fl.l_start, (long)fl.l_len);
	fl = conflict("posix", F_WRLCK, 150, 10);
	CHECK(&R, "posix-gap-free", fl.l_type == F_UNLCK, "type %d at 150", fl.l_type);
	fl = conflict("posix", F_WRLCK, 1000, 1);
	CHECK(&R, "posix-read-holds", fl.l_type == F_RDLCK && fl.l_pid == me && fl.l_start == 200 && fl.l_len == 0, "type %d pid %d %ld+%ld",
	      fl.l_type, fl.l_pid, (long)fl.l_start, (long)fl.l_len);
	CHECK(&R, "flock-listed", listed(FD_FLOCK, "FLOCK", "WRITE", me, "0", "EOF"), "fdinfo of fd %d", FD_FLOCK);
	CHECK(&R, "flock-holds", !can_flock("flock", LOCK_SH), "another description took a shared flock");
	CHECK(&R, "ofd-listed", listed(FD_OFD, "OFDLCK", "WRITE", -1, "10", "29"), "fdinfo of fd %d", FD_OFD);
	fl = conflict("ofd", F_RDLCK, 0, 0);
	CHECK(&R, "ofd-holds", fl.l_type == F_WRLCK && fl.l_start == 10 && fl.l_len == 20, "type %d %ld+%ld", fl.l_type, (long)fl.l_start,
	      (long)fl.l_len);
	CHECK(&R, "shared-listed", listed(FD_SHARED, "FLOCK", "READ", me, "0", "EOF"), "fdinfo of fd %d", FD_SHARED);
	CHECK(&R, "shared-holds", can_flock("shared", LOCK_SH) && !can_flock("shared", LOCK_EX), "shared flock not as it was");
	char c = 'x';
	int asked = write(ask[1], "?", 1) == 1 && read(answer[0], &c, 1) == 1;
	CHECK(&R, "child-posix", asked && c == 'y', "the child answered %c", c);
	waitpid(child, NULL, 0);
	if (finish_report(&R, argv[2]))
		return 98;
	return report_status(&R);
}
