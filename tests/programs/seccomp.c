/*
 * Test program for seccomp: filters and strict mode come back, per thread,
 * and still forbid what they forbade.
 *
 * Usage: seccomp DIR RESULT_FILE
 *
 *   R  root, no seccomp; collects everything
 *   +- F  two filters; its thread T adds a third of its own (threads differ)
 *   +- S  two threads sharing one chain installed with TSYNC
 *   +- K  a filter that kills the process on getpid()
 *   +- M  strict mode, blocked in read() on a pipe from R
 *
 * Filters: A: sysinfo -> errno 101; B: times -> errno 102;
 * C (T only): getrusage -> errno 103; K's: getpid -> SECCOMP_RET_KILL_PROCESS.
 *
 * R writes "READY pid=R f=F s=S k=K m=M t=T" once every task is set up
 * (F, S and K wait in rt_sigsuspend, M in read, the threads in nanosleep). On SIGUSR1, R passes SIGUSR1 on to F,
 * S and K and writes a byte to M's pipe. Then:
 *   F checks in both threads that each filtered call fails with its errno
 *     (and T's own filter only in T), that /proc/self/task/TID/status says
 *     "Seccomp: 2" with 2 and 3 filters, and that a TSYNC filter is refused
 *     because T's chain is not F's (returns T's tid), as before the dump.
 *   S checks that a new TSYNC filter is accepted (the threads share their
 *     chain again) and that both threads see every filter.
 *   K calls getpid() and dies of SIGSYS.
 *   M writes "strict" to its answer pipe and calls getppid(): SIGKILL.
 * R checks how each ended (exit 0, SIGSYS, SIGKILL), M's answer, its own
 * "Seccomp: 0", collects result-F and result-S from DIR and writes every
 * line and a last "ALL OK" or "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/times.h>
#include <sys/wait.h>

#include "selfcheck.h"

static struct report rep;
static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

/* A filter: NR -> ACTION, everything else allowed. */
static void install(int nr, unsigned action, unsigned flags, long *ret)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (ret)
		*ret = r;
	else if (r)
		die("seccomp");
}

#define ERRNO(e) (SECCOMP_RET_ERRNO | (e))

/* "Seccomp:" and "Seccomp_filters:" of one thread. */
static void seccomp_status(pid_t tid, int *mode, int *filters)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	*mode = *filters = -1;
	if (n <= 0)
		return;
	buf[n] = 0;
	char *p = strstr(buf, "\nSeccomp:");
	if (p)
		*mode = atoi(p + 9);
	p = strstr(buf, "\nSeccomp_filters:");
	if (p)
		*filters = atoi(p + 17);
}

/* Checks, in the calling thread, which filtered calls fail with which errno. */
static void check_calls(struct report *r, const char *who, int want_c)
{
	char name[64];
	struct sysinfo si;
	struct tms t;
	struct rusage ru;
	errno = 0;
	long a = syscall(SYS_sysinfo, &si);
	int ea = errno;
	errno = 0;
	long b = syscall(SYS_times, &t);
	int eb = errno;
	errno = 0;
	long c = syscall(SYS_getrusage, RUSAGE_SELF, &ru);
	int ec = errno;
	snprintf(name, sizeof name, "%s sysinfo-filtered", who);
	CHECK(r, name, a == -1 && ea == 101, "ret %ld errno %d", a, ea);
	snprintf(name, sizeof name, "%s times-filtered", who);
	CHECK(r, name, b == -1 && eb == 102, "ret %ld errno %d", b, eb);
	snprintf(name, sizeof name, "%s getrusage", who);
	CHECK(r, name, want_c ? (c == -1 && ec == 103) : c == 0, "ret %ld errno %d", c, ec);
}

static void check_status(struct report *r, const char *who, pid_t tid, int want_filters)
{
	int mode, filters;
	char name[64];
	seccomp_status(tid, &mode, &filters);
	snprintf(name, sizeof name, "%s status", who);
	CHECK(r, name, mode == 2 && filters == want_filters, "Seccomp %d, %d filters (want 2, %d)", mode, filters, want_filters);
}

/* ---------- F: two filters, its thread a third ---------- */

static atomic_int t_state; /* 1: T set up; 2: T may check; 3: T done */
static pid_t t_tid;
static struct report t_rep;

static void *f_thread(void *arg)
{
	(void)arg;
	t_tid = (pid_t)syscall(SYS_gettid);
	install(SYS_getrusage, ERRNO(103), 0, NULL);
	atomic_store(&t_state, 1);
	while (atomic_load(&t_state) != 2)
		usleep(1000);
	check_calls(&t_rep, "T", 1);
	check_status(&t_rep, "T", t_tid, 3);
	atomic_store(&t_state, 3);
	return NULL;
}

static void f_checks(void)
{
	pid_t me = getpid();
	check_calls(&rep, "F", 0);
	check_status(&rep, "F", me, 2);
	long r;
	install(SYS_uname, ERRNO(104), SECCOMP_FILTER_FLAG_TSYNC, &r);
	CHECK(&rep, "F tsync-refused", r == t_tid, "seccomp(TSYNC) returned %ld, want T's tid %d", r, t_tid);
	atomic_store(&t_state, 2);
	while (atomic_load(&t_state) != 3)
		usleep(1000);
	say(&rep, "%s", t_rep.buf);
	rep.fails += t_rep.fails;
}

/* ---------- S: two threads sharing a TSYNC chain ---------- */

static atomic_int s_state; /* 1: thread up; 2: may check; 3: done */
static struct report s_rep;
static pid_t s_tid;

static void *s_thread(void *arg)
{
	(void)arg;
	s_tid = (pid_t)syscall(SYS_gettid);
	atomic_store(&s_state, 1);
	while (atomic_load(&s_state) != 2)
		usleep(1000);
	check_calls(&s_rep, "S2", 0);
	struct utsname { char b[6 * 65]; } u;
	errno = 0;
	long r = syscall(SYS_uname, &u);
	CHECK(&s_rep, "S2 uname-filtered-by-tsync", r == -1 && errno == 104, "ret %ld errno %d", r, errno);
	check_status(&s_rep, "S2", s_tid, 3);
	atomic_store(&s_state, 3);
	return NULL;
}

static void s_checks(void)
{
	check_calls(&rep, "S", 0);
	long r;
	install(SYS_uname, ERRNO(104), SECCOMP_FILTER_FLAG_TSYNC, &r);
	CHECK(&rep, "S tsync-accepted", r == 0, "seccomp(TSYNC) returned %ld", r);
	check_status(&rep, "S", getpid(), 3);
	atomic_store(&s_state, 2);
	while (atomic_load(&s_state) != 3)
		usleep(1000);
	say(&rep, "%s", s_rep.buf);
	rep.fails += s_rep.fails;
}

/* ---------- the tasks ---------- */

static void to_null(void)
{
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		die("/dev/null");
	close(null);
}

/* A child that waits for SIGUSR1 (F, S, K). */
__attribute__((noreturn)) static void child(char name, atomic_int *ready, const sigset_t *wait_mask)
{
	to_null();
	pthread_t th;
	switch (name) {
	case 'F':
		install(SYS_sysinfo, ERRNO(101), 0, NULL);
		install(SYS_times, ERRNO(102), 0, NULL);
		if (pthread_create(&th, NULL, f_thread, NULL))
			die("pthread_create");
		while (atomic_load(&t_state) != 1)
			usleep(1000);
		atomic_store(&ready[1], t_tid);
		break;
	case 'S':
		if (pthread_create(&th, NULL, s_thread, NULL))
			die("pthread_create");
		while (atomic_load(&s_state) != 1)
			usleep(1000);
		install(SYS_sysinfo, ERRNO(101), SECCOMP_FILTER_FLAG_TSYNC, NULL);
		install(SYS_times, ERRNO(102), SECCOMP_FILTER_FLAG_TSYNC, NULL);
		break;
	case 'K':
		install(SYS_getpid, SECCOMP_RET_KILL_PROCESS, 0, NULL);
		break;
	}
	atomic_fetch_add(ready, 1);
	while (!go)
		sigsuspend(wait_mask);
	if (name == 'K') {
		syscall(SYS_getpid);
		exit(50); /* not killed: R sees the wrong end */
	}
	if (name == 'F')
		f_checks();
	else
		s_checks();
	char path[32];
	snprintf(path, sizeof path, "result-%c", name);
	if (finish_report(&rep, path))
		die("writing the report");
	exit(report_status(&rep));
}

/* M: strict mode, then read() a byte, answer, and make a forbidden call. */
__attribute__((noreturn)) static void strict_child(int in, int out, atomic_int *ready)
{
	to_null();
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		die("PR_SET_SECCOMP");
	atomic_fetch_add(ready, 1); /* a plain store: no syscall */
	char c;
	if (syscall(SYS_read, in, &c, 1) == 1)
		syscall(SYS_write, out, "strict", 6);
	syscall(SYS_getppid);
	syscall(SYS_exit, 51); /* not killed */
	__builtin_unreachable();
}

static void expect_end(pid_t pid, const char *name, int sig)
{
	int st = 0;
	char what[64];
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid");
	snprintf(what, sizeof what, "%s-end", name);
	if (sig)
		CHECK(&rep, what, WIFSIGNALED(st) && WTERMSIG(st) == sig, "status %#x, want signal %d", st, sig);
	else
		CHECK(&rep, what, WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: seccomp DIR RESULT_FILE\n");
		return 2;
	}
	if (chdir(argv[1]))
		die("chdir");
	const char *result = argv[2];
	if (setsid() < 0)
		die("setsid");
	struct sigaction sa = {.sa_handler = on_usr1};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	atomic_int *ready = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ready == MAP_FAILED)
		die("mmap");
	int to_m[2], from_m[2];
	if (pipe(to_m) || pipe(from_m))
		die("pipe");
	pid_t kids[3];
	const char names[3] = {'F', 'S', 'K'};
	for (int i = 0; i < 3; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0) {
			close(to_m[0]), close(to_m[1]), close(from_m[0]), close(from_m[1]);
			child(names[i], ready, &wait_mask);
		}
	}
	pid_t m = fork();
	if (m < 0)
		die("fork");
	if (m == 0) {
		close(to_m[1]), close(from_m[0]);
		strict_child(to_m[0], from_m[1], ready);
	}
	close(to_m[0]), close(from_m[1]);
	wait_count(ready, 4);
	announce_ready("READY pid=%d f=%d s=%d k=%d m=%d t=%d\n", getpid(), kids[0], kids[1], kids[2], m, ready[1]);
	while (!go)
		sigsuspend(&wait_mask);

	int mode, filters;
	seccomp_status(getpid(), &mode, &filters);
	CHECK(&rep, "R no-seccomp", mode == 0, "Seccomp %d", mode);
	for (int i = 0; i < 3; i++)
		if (kill(kids[i], SIGUSR1))
			die("kill");
	if (write(to_m[1], "g", 1) != 1)
		die("write");
	char answer[16] = {0};
	ssize_t n = read(from_m[0], answer, sizeof answer - 1);
	CHECK(&rep, "M answered", n == 6 && !strcmp(answer, "strict"), "read %zd: %s", n, answer);
	expect_end(kids[0], "F", 0);
	expect_end(kids[1], "S", 0);
	expect_end(kids[2], "K", SIGSYS);
	expect_end(m, "M", SIGKILL);
	collect_report(&rep, 'F');
	collect_report(&rep, 'S');
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
