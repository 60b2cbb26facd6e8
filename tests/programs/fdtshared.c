/*
 * Test program for tasks sharing one descriptor table (CLONE_FILES):
 *
 *   R  root (own session)
 *   +- X  clone(CLONE_FILES): shares R's table
 *   |  +- Z  clone(CLONE_FILES) by X: shares it too
 *   +- Y  fork: its own copy of the table
 *
 * Before the forks R opens "fdt.dat" (fd F) and dups it to fd 50.
 *
 * Usage: fdtshared DIR RESULT_FILE [split]
 *
 * With "split", X leaves the table (unshare(CLONE_FILES)) once Z exists:
 * R and Z then share one table that Z's parent does not (a layout
 * criu-rs refuses to dump), and X's changes are seen by neither.
 *
 * Prints "READY pid=R x=X y=Y z=Z" once every task waits (R in sigsuspend,
 * the others polling a shared step counter). After SIGUSR1 to R, each
 * task in turn changes the table and the next one checks what it sees:
 *   1. R: dup2(F, 100), close(50)
 *   2. X: sees 100 (the file) and not 50; dup2(F, 101)
 *   3. Z: sees 100 and 101; close(100)
 *   4. Y: sees neither 100 nor 101, still 50 (its own table)
 *   5. R: sees 101, not 100.
 * Then every task exits; R writes each task's lines, prefixed by its
 * name, and "ALL OK" or "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "selfcheck.h"

enum { R_, X_, Z_, Y_, NTASKS };
static const char NAMES[NTASKS] = {'R', 'X', 'Z', 'Y'};

struct shared {
	struct report rep[NTASKS];
	atomic_int ready;
	atomic_int step;
	pid_t z;
};

static struct shared *sh;
static int file_fd;
static volatile sig_atomic_t go;
static int split;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void wait_step(int n)
{
	while (atomic_load(&sh->step) < n)
		sys_sleep_ms(2);
}

/* Whether fd N is open on the test file. */
static int is_the_file(int n)
{
	struct stat a, b;
	return fstat(n, &a) == 0 && fstat(file_fd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

static int is_closed(int n)
{
	return fcntl(n, F_GETFD) == -1 && errno == EBADF;
}

static int run_z(void *arg)
{
	(void)arg;
	struct report *r = &sh->rep[Z_];
	atomic_fetch_add(&sh->ready, 1);
	wait_step(2);
	CHECK(r, "Z sees the fd X added (not after a split)", is_the_file(101) == !split, "fd 101: %d", is_the_file(101));
	CHECK(r, "Z sees the fd R added", is_the_file(100), "fd 100 is not the file");
	close(100);
	atomic_store(&sh->step, 3);
	wait_step(5);
	_exit(0);
}

static char z_stack[1 << 16] __attribute__((aligned(16)));

static int run_x(void *arg)
{
	(void)arg;
	struct report *r = &sh->rep[X_];
	pid_t z = clone(run_z, z_stack + sizeof z_stack, CLONE_FILES | SIGCHLD, NULL);
	if (z < 0)
		_exit(1);
	sh->z = z;
	if (split && unshare(CLONE_FILES))
		_exit(1);
	atomic_fetch_add(&sh->ready, 1);
	wait_step(1);
	CHECK(r, "X sees the fd R added (not after a split)", is_the_file(100) == !split, "fd 100: %d", is_the_file(100));
	CHECK(r, "X sees the fd R closed (not after a split)", is_closed(50) == !split, "fd 50 closed: %d", is_closed(50));
	if (dup2(file_fd, 101) != 101)
		CHECK(r, "dup2 in X", 0, "%s", strerror(errno));
	atomic_store(&sh->step, 2);
	wait_step(5);
	int st;
	CHECK(r, "Z exits 0", waitpid(z, &st, 0) == z && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 3 && !(argc == 4 && !strcmp(argv[3], "split")))
		return 2;
	split = argc == 4;
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	/* Y keeps a copy of the table from before announce_ready: nothing of
	 * the test's (its stderr may be a growing log) in it. */
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 2) < 0 || close(null))
		die("/dev/null");
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	file_fd = open("fdt.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (file_fd < 0 || dup2(file_fd, 50) != 50)
		die("open");
	static char x_stack[1 << 16] __attribute__((aligned(16)));
	pid_t x = clone(run_x, x_stack + sizeof x_stack, CLONE_FILES | SIGCHLD, NULL);
	if (x < 0)
		die("clone");
	pid_t y = fork();
	if (y < 0)
		die("fork");
	if (!y) {
		struct report *r = &sh->rep[Y_];
		atomic_fetch_add(&sh->ready, 1);
		wait_step(3);
		CHECK(r, "Y does not see R's new fd", is_closed(100), "fd 100 open");
		CHECK(r, "Y does not see X's new fd", is_closed(101), "fd 101 open");
		CHECK(r, "Y keeps its copy of fd 50", is_the_file(50), "fd 50 is not the file");
		atomic_store(&sh->step, 4);
		wait_step(5);
		_exit(0);
	}
	wait_count(&sh->ready, 3);
	announce_ready("READY pid=%d x=%d y=%d z=%d\n", getpid(), x, y, sh->z);
	sigset_t s = wait_mask;
	sigdelset(&s, SIGUSR1);
	while (!go)
		sigsuspend(&s);

	struct report *r = &sh->rep[R_];
	if (dup2(file_fd, 100) != 100 || close(50))
		CHECK(r, "dup2/close in R", 0, "%s", strerror(errno));
	atomic_store(&sh->step, 1);
	wait_step(4);
	CHECK(r, "R sees the fd X added (not after a split)", is_the_file(101) == !split, "fd 101: %d", is_the_file(101));
	CHECK(r, "R sees the fd Z closed", is_closed(100), "fd 100 still open");
	atomic_store(&sh->step, 5);
	int st;
	CHECK(r, "X exits 0", waitpid(x, &st, 0) == x && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	CHECK(r, "Y exits 0", waitpid(y, &st, 0) == y && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	struct report all = {0};
	for (int i = 0; i < NTASKS; i++) {
		struct report *t = &sh->rep[i];
		char *save, *l = strtok_r(t->buf, "\n", &save);
		for (; l; l = strtok_r(NULL, "\n", &save))
			say(&all, "%c: %s\n", NAMES[i], l);
		all.fails += t->fails;
	}
	if (finish_report(&all, argv[2]))
		die("report");
	return report_status(&all);
}
