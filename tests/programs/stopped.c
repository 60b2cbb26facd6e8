/*
 * Test program for stopped tasks: dumped stopped, restored stopped, running
 * again on SIGCONT and checking itself from inside.
 *
 * Usage: stopped DIR RESULT_FILE job|child|child-tstp
 *
 *   job:    R (session leader, two threads) stops itself with SIGSTOP
 *           after its READY line: a stopped job. On SIGCONT it checks
 *           itself and writes RESULT_FILE.
 *   child:  R runs (waits in rt_sigsuspend); its child S (two threads)
 *           stops itself with SIGSTOP. R sees S stopped through
 *           waitid(WSTOPPED | WNOWAIT) before it says READY. On SIGUSR1, R
 *           checks that S is reported stopped by SIGSTOP (waitid again:
 *           the restored child stopped for its parent too), sends it
 *           SIGCONT, waits for its exit and collects its report
 *           ("result-S" in DIR) into RESULT_FILE.
 *   child-tstp: as child, but S moves to a process group of its own (not
 *           orphaned: its parent is in another group of the session) and
 *           stops with SIGTSTP; once it is stopped, R queues two more
 *           SIGSTOPs for it (kill: the group's queue, tgkill: its own).
 *           R checks that S is reported stopped by SIGTSTP.
 *
 * The task that stopped checks, once continued: its SIGCONT handler ran,
 * a memory pattern written before the stop, its pid and parent, and that
 * its second thread (stopped with it) runs again.
 *
 * READY line: "READY pid=R s=S t=T" (s=0 in job mode; T is the stopping
 * task's second thread).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "selfcheck.h"

#define PAGES 16

static struct report rep;
static volatile sig_atomic_t conted, go;
static uint64_t *pattern_area;
static atomic_long ticks;
static atomic_int t_tid;
static int stop_sig = SIGSTOP;

/* The state letter of PID from /proc/PID/stat ('?' if unreadable). */
static char proc_state_of(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

static void on_cont(int sig)
{
	(void)sig;
	conted++;
}

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void *ticker(void *arg)
{
	(void)arg;
	/* SIGCONT is sent to the process: its handler must run in the thread
	 * that stopped and checks it, not here after that thread's check. */
	sigset_t cont;
	sigemptyset(&cont);
	sigaddset(&cont, SIGCONT);
	pthread_sigmask(SIG_BLOCK, &cont, NULL);
	atomic_store(&t_tid, (int)syscall(SYS_gettid));
	for (;;) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		atomic_fetch_add(&ticks, 1);
	}
	return NULL;
}

/* Sets up the task that will stop: pattern, SIGCONT handler, thread. */
static void prepare_stopper(void)
{
	pattern_area = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pattern_area == MAP_FAILED)
		die("mmap");
	fill(pattern_area, 7, PAGES);
	struct sigaction sa = {.sa_handler = on_cont};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCONT, &sa, NULL))
		die("sigaction");
	pthread_t th;
	if (pthread_create(&th, NULL, ticker, NULL))
		die("pthread_create");
	while (!atomic_load(&t_tid))
		usleep(1000);
}

/* Stops (stop_sig), then checks itself once continued (its parent only if
 * WANT_PPID is not 0: a restored root's parent is not the dumped one). */
static void stop_and_check(pid_t want_pid, pid_t want_ppid)
{
	raise(stop_sig);
	CHECK(&rep, "sigcont-handler", conted == 1, "ran %d times", (int)conted);
	size_t bad = 0;
	for (size_t pg = 0; pg < PAGES; pg++)
		bad += page_diff(pattern_area, 7, pg);
	CHECK(&rep, "memory", bad == 0, "%zu words differ", bad);
	CHECK(&rep, "pid", getpid() == want_pid, "%d, want %d", getpid(), want_pid);
	if (want_ppid)
		CHECK(&rep, "ppid", getppid() == want_ppid, "%d, want %d", getppid(), want_ppid);
	/* The thread runs again: its counter moves (a hang guard, not a timing check). */
	long t0 = atomic_load(&ticks);
	int moved = 0;
	for (int i = 0; i < 60000 && !moved; i++) {
		usleep(1000);
		moved = atomic_load(&ticks) > t0 + 2;
	}
	CHECK(&rep, "second-thread-runs", moved, "counter stuck at %ld", t0);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: stopped DIR RESULT_FILE job|child|child-tstp\n");
		return 2;
	}
	if (chdir(argv[1]))
		die("chdir");
	const char *result = argv[2];
	int job = !strcmp(argv[3], "job");
	if (!strcmp(argv[3], "child-tstp"))
		stop_sig = SIGTSTP;
	if (setsid() < 0)
		die("setsid");
	pid_t me = getpid();
	if (job) {
		prepare_stopper();
		announce_ready("READY pid=%d s=0 t=%d\n", me, atomic_load(&t_tid));
		stop_and_check(me, 0);
		if (finish_report(&rep, result))
			die("writing the result");
		return report_status(&rep);
	}

	struct sigaction sa = {.sa_handler = on_usr1};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block, wait_mask;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &wait_mask);
	int tpipe[2];
	if (pipe(tpipe))
		die("pipe");
	pid_t s = fork();
	if (s < 0)
		die("fork");
	if (s == 0) {
		close(tpipe[0]);
		int null = open("/dev/null", O_RDWR);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
			die("/dev/null");
		close(null);
		sigprocmask(SIG_SETMASK, &wait_mask, NULL);
		if (stop_sig == SIGTSTP && setpgid(0, 0))
			die("setpgid");
		prepare_stopper();
		int t = atomic_load(&t_tid);
		if (write(tpipe[1], &t, sizeof t) != sizeof t)
			die("write");
		close(tpipe[1]);
		stop_and_check(getpid(), me);
		if (finish_report(&rep, "result-S"))
			die("writing the report");
		exit(report_status(&rep));
	}
	close(tpipe[1]);
	int t = 0;
	if (read(tpipe[0], &t, sizeof t) != sizeof t)
		die("read");
	close(tpipe[0]);
	siginfo_t si;
	memset(&si, 0, sizeof si);
	if (waitid(P_PID, s, &si, WSTOPPED | WNOWAIT))
		die("waitid");
	if (si.si_code != CLD_STOPPED || si.si_status != stop_sig)
		die("S did not stop");
	if (stop_sig == SIGTSTP && (kill(s, SIGSTOP) || syscall(SYS_tgkill, s, s, SIGSTOP)))
		die("queueing SIGSTOP");
	announce_ready("READY pid=%d s=%d t=%d\n", me, s, t);
	while (!go)
		sigsuspend(&wait_mask);

	memset(&si, 0, sizeof si);
	int r = waitid(P_PID, s, &si, WSTOPPED | WNOHANG | WNOWAIT);
	CHECK(&rep, "child-reported-stopped", r == 0 && si.si_pid == s && si.si_code == CLD_STOPPED && si.si_status == stop_sig,
	      "waitid %d: pid %d code %d status %d", r, si.si_pid, si.si_code, si.si_status);
	CHECK(&rep, "child-still-stopped", proc_state_of(s) == 'T', "state %c", proc_state_of(s));
	if (kill(s, SIGCONT))
		die("kill");
	int st = 0;
	for (;;) {
		pid_t w = waitpid(s, &st, WUNTRACED | WCONTINUED);
		if (w < 0)
			die("waitpid");
		if (WIFEXITED(st) || WIFSIGNALED(st))
			break;
	}
	CHECK(&rep, "child-exit", WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	collect_report(&rep, 'S');
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
