/*
 * Test program for criu-rs restore of process trees: four levels, every
 * task checking itself, the root collecting the reports.
 *
 * Usage: tree DIR RESULT_FILE [orphans]
 *
 *   R  root: session and group leader (setsid)
 *   +- Z  zombie: exits 42 at once, R reaps it only in phase 2
 *   +- A  child in its own process group (setpgid)
 *      +- B  grandchild in its own session (setsid)
 *         +- C  great-grandchild (B's session and group)
 *
 * With "orphans", R is also a child subreaper and has one more child:
 *   +- F  forked by E, a child of R that called setsid() and exited (R
 *         reaped it): F is in a session and group whose leader is gone,
 *         and was reparented to R. Restoring it needs a helper for E.
 *
 * Shared between tasks: a pipe from A to R holding bytes A wrote and R has
 * not read; one open file description (R opened it, A inherited it);
 * MAP_SHARED|MAP_ANONYMOUS memory created by R before forking, inherited by
 * all. Each task has its own TLS value, signal mask and register values,
 * and waits in a raw rt_sigsuspend loop (selfcheck.h). R writes
 * "READY pid=R a=A b=B c=C z=Z" once all wait (then every task has fds 0-2
 * on /dev/null).
 *
 * Phase 2 (SIGUSR1 to R; each task passes it on to its child): every task
 * checks its registers, pid, ppid, pgid, sid, TLS, mask, the shared memory
 * contents, and that the memory is still shared (each task counts to 1000
 * in its own slot and waits to see every other task's slot reach 1000). R
 * and A also check the pipe (the old bytes are still there, new ones A
 * writes arrive) and the shared file offset (A moves it, R sees the move).
 * R checks Z is a zombie with status 42 and reaps it. Each task writes
 * "result-NAME" in DIR and exits 0 or 10 + failures; each parent waits for
 * its child; R then writes all lines, prefixed by task name, and a last
 * line "ALL OK" or "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "selfcheck.h"

enum { R_, A_, B_, C_, F_, NTASKS };
static const char NAMES[NTASKS] = {'R', 'A', 'B', 'C', 'F'};
static int ntasks = F_; /* F_ + 1 with "orphans" */

struct shared {
	char page0[4096];               /* written by R before the forks */
	char page1[4096];               /* written by A */
	pid_t pid[NTASKS];              /* filled in by each task */
	atomic_int ready;
	volatile uint32_t count[NTASKS]; /* phase 2 */
	volatile int offset_moved;      /* phase 2: A moved the shared offset */
};

#define PIPE_OLD "bytes A wrote before the checkpoint"
#define PIPE_NEW "bytes A wrote after the restore"
#define OFF_BEFORE 123
#define OFF_AFTER 4567

static struct shared *shm;
static int role, avx512, pipe_r = -1, pipe_w = -1, shfd = -1;
static pid_t want_pid, want_ppid, want_pgid, want_sid, child_pid = -1, zombie_pid = -1, gone_pid = -1;
static __thread uint64_t tls_value;
static struct regblock rb;
static uint64_t mask_before, wait_mask;
static struct report rep;

static void on_usr1(int sig)
{
	(void)sig;
	rb.go = 1;
}

/* Puts this task's own state in place, tells R it is ready and waits. */
static void become(int r)
{
	role = r;
	if (r != R_) {
		/* Like R after READY: no fd on whatever the test's stdio is (a
		 * log file would grow between dump and restore). */
		int null = open("/dev/null", O_RDWR);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
			die("/dev/null");
		close(null);
	}
	want_pid = getpid();
	want_ppid = getppid();
	want_pgid = getpgrp();
	want_sid = getsid(0);
	shm->pid[r] = want_pid;
	tls_value = 0x7ee0000000000000ULL | ((uint64_t)r << 40) | (uint64_t)want_pid;
	char name[16];
	snprintf(name, sizeof name, "tree-%c", NAMES[r]);
	prctl(PR_SET_NAME, name);
	uint64_t m = bit(SIGUSR1) | bit(SIGRTMIN + 1 + r) | (r % 2 ? bit(SIGUSR2) : bit(SIGHUP));
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &m, NULL, 8);
	mask_before = raw_sigmask();
	wait_mask = mask_before & ~bit(SIGUSR1);
	regs_init(&rb, 0x40 + (uint64_t)r);
	if (r != R_)
		atomic_fetch_add(&shm->ready, 1);
}

static int wait_until(volatile uint32_t *p, uint32_t v)
{
	for (int i = 0; i < 20000 && *p < v; i++) {
		struct timespec ts = {0, 500000};
		nanosleep(&ts, NULL);
	}
	return *p >= v;
}

static void check_self(void)
{
	struct report *R = &rep;
	check_registers(R, &rb, avx512);
	pid_t pid = (pid_t)syscall(SYS_getpid);
	CHECK(R, "pid", pid == want_pid, "%d, want %d", pid, want_pid);
	if (role != R_)
		CHECK(R, "ppid", getppid() == want_ppid, "%d, want %d", getppid(), want_ppid);
	CHECK(R, "pgid", getpgrp() == want_pgid, "%d, want %d", getpgrp(), want_pgid);
	CHECK(R, "sid", getsid(0) == want_sid, "%d, want %d", getsid(0), want_sid);
	CHECK(R, "tls", tls_value == (0x7ee0000000000000ULL | ((uint64_t)role << 40) | (uint64_t)want_pid), "%#lx",
	      tls_value);
	uint64_t m = raw_sigmask();
	CHECK(R, "signal-mask", m == mask_before, "%#lx, want %#lx", m, mask_before);
	char name[17] = "", want_name[16];
	prctl(PR_GET_NAME, name);
	snprintf(want_name, sizeof want_name, "tree-%c", NAMES[role]);
	CHECK(R, "comm", !strcmp(name, want_name), "'%s'", name);
	int pdeath = -1;
	prctl(PR_GET_PDEATHSIG, &pdeath);
	CHECK(R, "pdeath-signal", pdeath == (role == C_ ? SIGURG : 0), "%d", pdeath);
	CHECK(R, "shared-memory-contents",
	      !strcmp(shm->page0, "written by R before fork") && !strcmp(shm->page1, "written by A after fork"),
	      "'%.30s' / '%.30s'", shm->page0, shm->page1);
	int pids_ok = 1;
	for (int i = 0; i < ntasks; i++)
		pids_ok &= shm->pid[i] > 0;
	CHECK(R, "shared-memory-pids", pids_ok && shm->pid[role] == want_pid, "slot %d holds %d", role, shm->pid[role]);
}

/* Everyone counts in its own slot and waits for all others' counts. */
static void check_still_shared(void)
{
	for (int i = 0; i < 1000; i++)
		__atomic_add_fetch(&shm->count[role], 1, __ATOMIC_SEQ_CST);
	int missing = 0;
	for (int i = 0; i < ntasks; i++)
		missing += !wait_until(&shm->count[i], 1000);
	CHECK(&rep, "shared-memory-still-shared", !missing, "counts %u %u %u %u %u", shm->count[0], shm->count[1],
	      shm->count[2], shm->count[3], shm->count[4]);
}

/* Writes this task's report to result-NAME (in DIR, the cwd). */
static void write_own_result(void)
{
	char path[32];
	snprintf(path, sizeof path, "result-%c", NAMES[role]);
	if (finish_report(&rep, path))
		exit(98);
}

static void wait_child(const char *what)
{
	int st = 0;
	pid_t w = waitpid(child_pid, &st, 0);
	CHECK(&rep, what, w == child_pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "waitpid %d status %#x", w, st);
}

static void wait_for_go_and_pass_on(void)
{
	wait_for_go(&rb, &wait_mask, avx512);
	if (child_pid > 0)
		kill(child_pid, SIGUSR1);
	if (role == R_ && ntasks > F_)
		kill(shm->pid[F_], SIGUSR1);
}

static void run_c(void)
{
	/* A parent-death signal (harmless: B outlives C). */
	if (prctl(PR_SET_PDEATHSIG, SIGURG))
		die("PR_SET_PDEATHSIG");
	become(C_);
	wait_for_go_and_pass_on();
	check_self();
	check_still_shared();
	write_own_result();
	exit(report_status(&rep));
}

static void run_b(void)
{
	if (setsid() < 0)
		die("setsid");
	child_pid = fork();
	if (child_pid < 0)
		die("fork");
	if (!child_pid)
		run_c();
	become(B_);
	wait_for_go_and_pass_on();
	check_self();
	check_still_shared();
	wait_child("child-C-exited-ok");
	write_own_result();
	exit(report_status(&rep));
}

static void run_a(void)
{
	if (setpgid(0, 0))
		die("setpgid");
	close(pipe_r);
	if (write(pipe_w, PIPE_OLD, sizeof PIPE_OLD) != sizeof PIPE_OLD)
		die("write pipe");
	strcpy(shm->page1, "written by A after fork");
	lseek(shfd, OFF_BEFORE, SEEK_SET);
	child_pid = fork();
	if (child_pid < 0)
		die("fork");
	if (!child_pid)
		run_b();
	become(A_);
	wait_for_go_and_pass_on();
	check_self();
	CHECK(&rep, "shared-file-offset", lseek(shfd, 0, SEEK_CUR) == OFF_BEFORE, "offset %ld",
	      (long)lseek(shfd, 0, SEEK_CUR));
	lseek(shfd, OFF_AFTER, SEEK_SET);
	shm->offset_moved = 1;
	CHECK(&rep, "pipe-write", write(pipe_w, PIPE_NEW, sizeof PIPE_NEW) == sizeof PIPE_NEW, "%s", strerror(errno));
	check_still_shared();
	wait_child("child-B-exited-ok");
	write_own_result();
	exit(report_status(&rep));
}

/* F: waits until its parent E is gone and it belongs to R, then is a task like the others. */
static void run_f(pid_t root)
{
	while (getppid() != root) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	become(F_);
	wait_for_go_and_pass_on();
	check_self();
	CHECK(&rep, "leader-gone", want_sid == want_pgid && want_sid != want_pid && kill(want_sid, 0) < 0 && errno == ESRCH,
	      "sid %d pgid %d", want_sid, want_pgid);
	check_still_shared();
	write_own_result();
	exit(report_status(&rep));
}

/* Forks E, which starts a session, forks F and exits; reaps E. */
static void start_orphan(void)
{
	pid_t root = getpid();
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		die("PR_SET_CHILD_SUBREAPER");
	gone_pid = fork();
	if (gone_pid < 0)
		die("fork");
	if (!gone_pid) {
		if (setsid() < 0)
			die("setsid");
		pid_t f = fork();
		if (f < 0)
			die("fork");
		if (!f)
			run_f(root);
		_exit(0);
	}
	int st;
	if (waitpid(gone_pid, &st, 0) != gone_pid)
		die("waitpid E");
}

/* R's own checks of what it shares with A and of its zombie. */
static void check_root_extras(void)
{
	struct report *R = &rep;
	char buf[256] = "";
	struct pollfd p = {pipe_r, POLLIN, 0};
	ssize_t n = read(pipe_r, buf, sizeof PIPE_OLD);
	CHECK(R, "pipe-old-bytes", n == sizeof PIPE_OLD && !strcmp(buf, PIPE_OLD), "read %zd '%.40s'", n, buf);
	memset(buf, 0, sizeof buf);
	n = poll(&p, 1, 10000) == 1 ? read(pipe_r, buf, sizeof PIPE_NEW) : -1;
	CHECK(R, "pipe-new-bytes", n == sizeof PIPE_NEW && !strcmp(buf, PIPE_NEW), "read %zd '%.40s'", n, buf);
	int moved = 0;
	for (int i = 0; i < 20000 && !(moved = shm->offset_moved); i++) {
		struct timespec ts = {0, 500000};
		nanosleep(&ts, NULL);
	}
	CHECK(R, "shared-file-offset-shared", moved && lseek(shfd, 0, SEEK_CUR) == OFF_AFTER, "moved %d offset %ld", moved,
	      (long)lseek(shfd, 0, SEEK_CUR));

	char path[64], stat_line[512] = "";
	snprintf(path, sizeof path, "/proc/%d/stat", zombie_pid);
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		if (read(fd, stat_line, sizeof stat_line - 1) < 0)
			stat_line[0] = 0;
		close(fd);
	}
	char *rp = strrchr(stat_line, ')');
	CHECK(R, "zombie-state", rp && rp[1] == ' ' && rp[2] == 'Z', "stat '%.60s'", stat_line);
	siginfo_t si;
	memset(&si, 0, sizeof si);
	int r = waitid(P_PID, zombie_pid, &si, WEXITED | WNOHANG | WNOWAIT);
	CHECK(R, "zombie-status", r == 0 && si.si_pid == zombie_pid && si.si_code == CLD_EXITED && si.si_status == 42,
	      "waitid %d pid %d code %d status %d", r, si.si_pid, si.si_code, si.si_status);
	int st = 0;
	pid_t w = waitpid(zombie_pid, &st, 0);
	CHECK(R, "zombie-reaped", w == zombie_pid && WIFEXITED(st) && WEXITSTATUS(st) == 42, "waitpid %d status %#x", w, st);
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "orphans"))) {
		fprintf(stderr, "usage: tree DIR RESULT_FILE [orphans]\n");
		return 99;
	}
	if (argc == 4)
		ntasks = F_ + 1;
	syscall(SYS_close_range, 3, ~0U, 0);
	if (setsid() < 0 || chdir(argv[1]))
		die("setsid/chdir");
	avx512 = have_avx512();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	uint64_t m = bit(SIGUSR1);
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &m, NULL, 8);

	shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		die("mmap");
	strcpy(shm->page0, "written by R before fork");
	shm->pid[R_] = getpid();
	if (ntasks > F_)
		start_orphan();
	int pfd[2];
	if (pipe(pfd))
		die("pipe");
	pipe_r = pfd[0];
	pipe_w = pfd[1];
	shfd = open("shared-fd.dat", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (shfd < 0 || ftruncate(shfd, 8192))
		die("shared-fd.dat");

	zombie_pid = fork();
	if (zombie_pid < 0)
		die("fork");
	if (!zombie_pid)
		_exit(42);
	siginfo_t si;
	if (waitid(P_PID, zombie_pid, &si, WEXITED | WNOWAIT))
		die("waitid zombie");

	child_pid = fork();
	if (child_pid < 0)
		die("fork");
	if (!child_pid)
		run_a();
	close(pipe_w);
	become(R_);
	wait_count(&shm->ready, ntasks - 1);
	char extra[64] = "";
	if (ntasks > F_)
		snprintf(extra, sizeof extra, " f=%d e=%d", shm->pid[F_], gone_pid);
	announce_ready("READY pid=%d a=%d b=%d c=%d z=%d%s\n", shm->pid[R_], shm->pid[A_], shm->pid[B_], shm->pid[C_],
		       zombie_pid, extra);

	wait_for_go_and_pass_on();
	check_self();
	check_root_extras();
	if (ntasks > F_) {
		int sub = 0;
		prctl(PR_GET_CHILD_SUBREAPER, &sub);
		CHECK(&rep, "child-subreaper", sub == 1, "PR_GET_CHILD_SUBREAPER %d", sub);
	}
	check_still_shared();
	wait_child("child-A-exited-ok");
	if (ntasks > F_) {
		int st = 0;
		pid_t w = waitpid(shm->pid[F_], &st, 0);
		CHECK(&rep, "orphan-F-exited-ok", w == shm->pid[F_] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "waitpid %d status %#x", w, st);
	}
	write_own_result();

	static struct report all;
	for (int r = 0; r < ntasks; r++)
		collect_report(&all, NAMES[r]);
	if (finish_report(&all, argv[2]))
		return 98;
	return report_status(&all);
}
