/*
 * Test program for per-task state that must come back exactly: scheduling
 * policy, priority and nice of every thread, oom_score_adj of every
 * process, membarrier registrations of every address space.
 *
 * Usage: schedstate DIR RESULT_FILE
 *
 *   R  oom_score_adj 300; main thread SCHED_OTHER nice 5, thread R1
 *   |  SCHED_BATCH nice 10, thread R2 SCHED_IDLE; membarrier: every
 *   |  registration the kernel offers (global, private, sync-core, rseq)
 *   +- A  oom_score_adj 700; main thread SCHED_RR priority 3 with
 *         SCHED_RESET_ON_FORK, thread A1 SCHED_FIFO priority 7; membarrier:
 *         private expedited only
 *
 * Every thread waits in rt_sigsuspend. R writes "READY pid=R a=A" once all
 * do. On SIGUSR1, R passes it on to A; each process has its threads check
 * themselves (SIGUSR2 to each), checks itself, and writes its report
 * ("result-A" in DIR; R collects it into RESULT_FILE, with "ALL OK" or
 * "FAIL N check(s)" last). The checks compare with the values set, read
 * back from inside: sched_getscheduler/sched_getparam/getpriority per
 * thread, /proc/self/oom_score_adj, membarrier(GET_REGISTRATIONS) and a
 * private expedited barrier (refused without its registration).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "selfcheck.h"

#define MB_QUERY 0
#define MB_REGISTER_GLOBAL_EXPEDITED (1 << 2)
#define MB_PRIVATE_EXPEDITED (1 << 3)
#define MB_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#define MB_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE (1 << 6)
#define MB_REGISTER_PRIVATE_EXPEDITED_RSEQ (1 << 8)
#define MB_GET_REGISTRATIONS (1 << 9)

static struct report rep;
static volatile sig_atomic_t go;
static pthread_mutex_t rep_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_signal(int sig)
{
	(void)sig;
	go = 1;
}

static long membarrier(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

/* What one thread should run with. */
struct sched_want {
	const char *name;
	int policy; /* with SCHED_RESET_ON_FORK if wanted */
	int prio;
	int nice;
};

static void set_sched(const struct sched_want *w)
{
	if (setpriority(PRIO_PROCESS, 0, w->nice))
		die("setpriority");
	struct sched_param p = {.sched_priority = w->prio};
	if (sched_setscheduler(0, w->policy, &p))
		die("sched_setscheduler");
}

static void check_sched(const struct sched_want *w)
{
	char name[64];
	struct sched_param p = {0};
	int policy = sched_getscheduler(0);
	int r = sched_getparam(0, &p);
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	pthread_mutex_lock(&rep_lock);
	snprintf(name, sizeof name, "%s policy", w->name);
	CHECK(&rep, name, policy == w->policy, "%#x, want %#x", policy, w->policy);
	snprintf(name, sizeof name, "%s priority", w->name);
	CHECK(&rep, name, r == 0 && p.sched_priority == w->prio, "%d, want %d", p.sched_priority, w->prio);
	snprintf(name, sizeof name, "%s nice", w->name);
	CHECK(&rep, name, nice == w->nice, "%d, want %d", nice, w->nice);
	pthread_mutex_unlock(&rep_lock);
}

/* ---------- threads ---------- */

struct thread {
	const struct sched_want *want;
	pthread_t th;
	atomic_int state; /* 1: set up and waiting; 2: checked */
	volatile sig_atomic_t *flag;
};

static volatile sig_atomic_t t_go;

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	set_sched(t->want);
	sigset_t wait_mask;
	sigfillset(&wait_mask);
	sigdelset(&wait_mask, SIGUSR2);
	atomic_store(&t->state, 1);
	while (!t_go)
		sigsuspend(&wait_mask);
	check_sched(t->want);
	atomic_store(&t->state, 2);
	return NULL;
}

static void start_threads(struct thread *ts, int n)
{
	for (int i = 0; i < n; i++) {
		if (pthread_create(&ts[i].th, NULL, thread_main, &ts[i]))
			die("pthread_create");
		while (atomic_load(&ts[i].state) != 1)
			usleep(1000);
	}
}

/* Wakes every thread (one SIGUSR2 to the process reaches one of them; the
 * flag then lets each leave its loop once woken by its own signal). */
static void check_threads(struct thread *ts, int n)
{
	t_go = 1;
	for (int i = 0; i < n; i++) {
		pthread_kill(ts[i].th, SIGUSR2);
		pthread_join(ts[i].th, NULL);
		CHECK(&rep, "thread checked", atomic_load(&ts[i].state) == 2, "state %d", atomic_load(&ts[i].state));
	}
}

/* ---------- process-wide ---------- */

static void set_oom(int v)
{
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	char buf[16];
	int n = snprintf(buf, sizeof buf, "%d", v);
	if (fd < 0 || write(fd, buf, n) != n)
		die("oom_score_adj");
	close(fd);
}

static void check_process(const char *who, int oom, long mb_want)
{
	char name[64], buf[32] = {0};
	int fd = open("/proc/self/oom_score_adj", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	snprintf(name, sizeof name, "%s oom_score_adj", who);
	CHECK(&rep, name, n > 0 && atoi(buf) == oom, "%s, want %d", buf, oom);
	long mb = membarrier(MB_GET_REGISTRATIONS);
	snprintf(name, sizeof name, "%s membarrier registrations", who);
	CHECK(&rep, name, mb == mb_want, "%#lx, want %#lx", mb, mb_want);
	long r = membarrier(MB_PRIVATE_EXPEDITED);
	snprintf(name, sizeof name, "%s private expedited barrier", who);
	CHECK(&rep, name, r == 0, "ret %ld errno %d", r, errno);
}

static const struct sched_want R_MAIN = {"R", SCHED_OTHER, 0, 5};
static const struct sched_want R_THREADS[2] = {{"R1", SCHED_BATCH, 0, 10}, {"R2", SCHED_IDLE, 0, 0}};
static const struct sched_want A_MAIN = {"A", SCHED_RR | SCHED_RESET_ON_FORK, 3, 0};
static const struct sched_want A_THREADS[1] = {{"A1", SCHED_FIFO, 7, 0}};

/* Registers every membarrier the kernel offers; returns what it registered. */
static long register_all(void)
{
	long offered = membarrier(MB_QUERY);
	long want = 0;
	const int cmds[] = {MB_REGISTER_GLOBAL_EXPEDITED, MB_REGISTER_PRIVATE_EXPEDITED,
			    MB_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, MB_REGISTER_PRIVATE_EXPEDITED_RSEQ};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		if (offered < 0 || !(offered & cmds[i]))
			continue;
		if (membarrier(cmds[i]))
			die("membarrier register");
		want |= cmds[i];
	}
	return want;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: schedstate DIR RESULT_FILE\n");
		return 2;
	}
	const char *result = argv[2];
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_signal, &wait_mask);
	handle_blocked(SIGUSR2, on_signal);
	/* Only SIGUSR1 ends the wait: SIGUSR2 is for the threads. */
	sigaddset(&wait_mask, SIGUSR2);
	atomic_int *ready = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ready == MAP_FAILED)
		die("mmap");

	pid_t a = fork();
	if (a < 0)
		die("fork");
	if (a == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
			die("/dev/null");
		close(null);
		set_oom(700);
		if (membarrier(MB_REGISTER_PRIVATE_EXPEDITED))
			die("membarrier");
		static struct thread ts[1] = {{.want = &A_THREADS[0]}};
		start_threads(ts, 1);
		set_sched(&A_MAIN);
		atomic_fetch_add(ready, 1);
		while (!go)
			sigsuspend(&wait_mask);
		check_sched(&A_MAIN);
		check_threads(ts, 1);
		check_process("A", 700, MB_REGISTER_PRIVATE_EXPEDITED);
		if (finish_report(&rep, "result-A"))
			die("writing the report");
		exit(report_status(&rep));
	}
	set_oom(300);
	long mb = register_all();
	static struct thread ts[2] = {{.want = &R_THREADS[0]}, {.want = &R_THREADS[1]}};
	start_threads(ts, 2);
	set_sched(&R_MAIN);
	wait_count(ready, 1);
	announce_ready("READY pid=%d a=%d\n", getpid(), a);
	while (!go)
		sigsuspend(&wait_mask);
	if (kill(a, SIGUSR1))
		die("kill");
	check_sched(&R_MAIN);
	check_threads(ts, 2);
	check_process("R", 300, mb);
	CHECK(&rep, "R registered something", mb & MB_REGISTER_PRIVATE_EXPEDITED, "%#lx", mb);
	int st;
	if (waitpid(a, &st, 0) != a)
		die("waitpid");
	CHECK(&rep, "A-exit", WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	collect_report(&rep, 'A');
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
