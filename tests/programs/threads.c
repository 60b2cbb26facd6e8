/*
 * Test program for criu-rs restore of threads: 8 threads plus the main
 * thread, each with its own state, each checking itself.
 *
 * Usage: threads DIR RESULT_FILE
 *
 * Phase 1: every thread (main included) sets its name, a TLS value and a
 * TLS string, its own signal mask, its own sigaltstack and a pending
 * real-time signal queued to it alone with a value, records its tid, fs base
 * and robust list, then waits in a raw rt_sigsuspend loop holding its own
 * register values (selfcheck.h). When all threads wait, main writes
 * "READY pid=N tids=T1,T2,..." on the original stdout (then fds 0-2 point
 * at /dev/null).
 *
 * Phase 2 starts with SIGUSR1 to the process: the thread that gets it wakes
 * all others with tgkill. Each thread checks its registers, tid, TLS, name,
 * fs base, robust list, rseq registration, mask, sigaltstack and that its
 * own queued signal (and no other thread's) is pending for it. Main joins
 * all threads (so CLONE_CHILD_CLEARTID must work again), checks the thread
 * list, writes every thread's lines to RESULT_FILE with a last line
 * "ALL OK" or "FAIL N check(s)", and exits 0 or 10 + failures.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>

#include "selfcheck.h"

#define NTHREADS 8
#define ALT_SIZE (32 * 1024)

struct tstate {
	struct regblock rb;
	uint64_t mask, wait_mask;
	pid_t tid;
	int idx;
	uint64_t fs;
	void *robust_head;
	size_t robust_len;
	long rseq_before;
	stack_t ss;
	uint8_t *alt;
	volatile int usr1_on_alt;
	pthread_t th;
	struct report rep;
};

static struct tstate T[NTHREADS + 1]; /* 0 is the main thread */
static __thread struct tstate *me;
static __thread uint64_t tls_value;
static __thread char tls_name[32];
static atomic_int ready;
static pid_t my_pid;
static int avx512;

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)si, (void)ctx;
	char here;
	if (!me)
		return;
	me->usr1_on_alt = (uint8_t *)&here >= me->alt && (uint8_t *)&here < me->alt + ALT_SIZE;
	me->rb.go = 1;
}

static long rseq_probe(void)
{
	void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
	long r = syscall(SYS_rseq, area, 32, 0, 0x53053053);
	return r < 0 ? -errno : r;
}

static uint64_t own_signal(int idx) { return (uint64_t)(SIGRTMIN + idx); }

/* Phase 1 for one thread: its own state, then wait. */
static void setup_and_wait(struct tstate *t)
{
	me = t;
	t->tid = (pid_t)syscall(SYS_gettid);
	tls_value = 0x7100000000000000ULL | ((uint64_t)t->idx << 32) | (uint64_t)t->tid;
	snprintf(tls_name, sizeof tls_name, "tls string %d", t->idx);
	char name[16];
	snprintf(name, sizeof name, t->idx ? "thr-%d" : "threads-main", t->idx);
	prctl(PR_SET_NAME, name);

	t->alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->alt == MAP_FAILED)
		die("mmap");
	t->ss.ss_sp = t->alt;
	t->ss.ss_size = ALT_SIZE;
	if (sigaltstack(&t->ss, NULL))
		die("sigaltstack");
	sigaltstack(NULL, &t->ss);

	uint64_t m = bit(SIGUSR1) | bit(SIGRTMIN + t->idx) | bit(SIGRTMIN + 10 + t->idx % 3);
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &m, NULL, 8);
	t->mask = raw_sigmask();
	t->wait_mask = t->mask & ~bit(SIGUSR1);

	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = (int)own_signal(t->idx);
	si.si_code = SI_QUEUE;
	si.si_pid = my_pid;
	si.si_uid = getuid();
	si.si_value.sival_int = 1000 + t->idx;
	if (syscall(SYS_rt_tgsigqueueinfo, my_pid, t->tid, si.si_signo, &si))
		die("rt_tgsigqueueinfo");

	syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &t->fs);
	syscall(SYS_get_robust_list, 0, &t->robust_head, &t->robust_len);
	t->rseq_before = rseq_probe();
	if (t->rseq_before == 0)
		t->rseq_before = rseq_probe();
	regs_init(&t->rb, (uint64_t)t->idx + 1);
	atomic_fetch_add(&ready, 1);

	wait_for_go(&t->rb, &t->wait_mask, avx512);

	/* Wake the others (a pending SIGUSR1 is harmless to one already awake). */
	for (int j = 0; j <= NTHREADS; j++)
		if (j != t->idx)
			syscall(SYS_tgkill, my_pid, T[j].tid, SIGUSR1);
}

/* Phase 2 for one thread. */
static void check_self(struct tstate *t)
{
	struct report *R = &t->rep;
	check_registers(R, &t->rb, avx512);
	pid_t tid = (pid_t)syscall(SYS_gettid), pid = (pid_t)syscall(SYS_getpid);
	CHECK(R, "tid", tid == t->tid && pid == my_pid, "tid %d pid %d, want %d %d", tid, pid, t->tid, my_pid);
	CHECK(R, "tls", me == t && tls_value == (0x7100000000000000ULL | ((uint64_t)t->idx << 32) | (uint64_t)t->tid),
	      "tls %#lx", tls_value);
	char want[32];
	snprintf(want, sizeof want, "tls string %d", t->idx);
	CHECK(R, "tls-string", !strcmp(tls_name, want), "'%s'", tls_name);
	uint64_t fs = 0;
	syscall(SYS_arch_prctl, 0x1003, &fs);
	CHECK(R, "fs-base", fs == t->fs, "%#lx, want %#lx", fs, t->fs);
	void *head = NULL;
	size_t len = 0;
	syscall(SYS_get_robust_list, 0, &head, &len);
	CHECK(R, "robust-list", head == t->robust_head && len == t->robust_len, "%p/%zu, want %p/%zu", head, len,
	      t->robust_head, t->robust_len);
	long rs = rseq_probe();
	CHECK(R, "rseq-registered", rs == t->rseq_before, "probe %ld, before %ld", rs, t->rseq_before);
	char name[17] = "";
	prctl(PR_GET_NAME, name);
	snprintf(want, sizeof want, t->idx ? "thr-%d" : "threads-main", t->idx);
	CHECK(R, "comm", !strcmp(name, want), "'%s'", name);
	uint64_t m = raw_sigmask();
	CHECK(R, "signal-mask", m == t->mask, "%#lx, want %#lx", m, t->mask);
	stack_t ss;
	sigaltstack(NULL, &ss);
	CHECK(R, "sigaltstack", ss.ss_sp == t->ss.ss_sp && ss.ss_size == t->ss.ss_size && ss.ss_flags == t->ss.ss_flags,
	      "%p/%zu/%d", ss.ss_sp, ss.ss_size, ss.ss_flags);
	CHECK(R, "handler-on-own-altstack", t->usr1_on_alt, "SIGUSR1 did not run on this thread's altstack");

	sigset_t pend;
	sigpending(&pend);
	int others = 0;
	for (int j = 0; j <= NTHREADS; j++)
		if (j != t->idx && sigismember(&pend, (int)own_signal(j)))
			others++;
	CHECK(R, "no-other-threads-signals", !others, "%d other threads' signals pending here", others);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, (int)own_signal(t->idx));
	struct timespec zero = {0, 0};
	siginfo_t si;
	int s = sigtimedwait(&set, &si, &zero);
	CHECK(R, "own-pending-signal", s == (int)own_signal(t->idx) && si.si_code == SI_QUEUE &&
					      si.si_value.sival_int == 1000 + t->idx && si.si_pid == my_pid,
	      "got %d code %d value %d pid %d", s, si.si_code, si.si_value.sival_int, si.si_pid);
	s = sigtimedwait(&set, &si, &zero);
	CHECK(R, "own-pending-signal-once", s < 0, "queued twice");
}

static void *thread_main(void *arg)
{
	struct tstate *t = arg;
	setup_and_wait(t);
	check_self(t);
	return NULL;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: threads DIR RESULT_FILE\n");
		return 99;
	}
	syscall(SYS_close_range, 3, ~0U, 0);
	if (setsid() < 0 || chdir(argv[1]))
		die("setsid/chdir");
	my_pid = getpid();
	avx512 = have_avx512();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	uint64_t m = bit(SIGUSR1);
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &m, NULL, 8);

	for (int i = 0; i <= NTHREADS; i++)
		T[i].idx = i;
	T[0].tid = my_pid;
	for (int i = 1; i <= NTHREADS; i++)
		if (pthread_create(&T[i].th, NULL, thread_main, &T[i]))
			die("pthread_create");
	wait_count(&ready, NTHREADS);
	char tid_list[256];
	int n = 0;
	for (int i = 1; i <= NTHREADS; i++)
		n += snprintf(tid_list + n, sizeof tid_list - n, "%s%d", i > 1 ? "," : "", T[i].tid);
	announce_ready("READY pid=%d tids=%s\n", my_pid, tid_list);

	setup_and_wait(&T[0]);
	check_self(&T[0]);
	for (int i = 1; i <= NTHREADS; i++)
		pthread_join(T[i].th, NULL);

	static struct report all;
	int fails = 0;
	for (int i = 0; i <= NTHREADS; i++) {
		char *save, *l = strtok_r(T[i].rep.buf, "\n", &save);
		for (; l; l = strtok_r(NULL, "\n", &save))
			say(&all, "thread %d: %s\n", i, l);
		fails += T[i].rep.fails;
	}
	/* After the joins only main is left. */
	int tids[64], nt = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d)) && nt < 64)
		if (e->d_name[0] != '.')
			tids[nt++] = atoi(e->d_name);
	if (d)
		closedir(d);
	qsort(tids, nt, sizeof tids[0], cmp_int);
	CHECK(&all, "joined", nt == 1 && tids[0] == my_pid, "%d threads left", nt);
	all.fails += fails;
	if (finish_report(&all, argv[2]))
		return 98;
	return report_status(&all);
}
