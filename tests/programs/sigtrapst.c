/*
 * Test program for SIGTRAP state across a checkpoint (both the dump, which
 * runs calls in every thread, and the restore end in forced traps; the
 * kernel resets the handler of a forced signal it finds blocked).
 *
 * Usage: sigtrapst DIR RESULT_FILE MODE
 *
 *   handler  SIGTRAP has an SA_SIGINFO|SA_RESTART handler with SIGUSR2 in
 *            its mask, and a second thread blocks SIGTRAP (its own mask).
 *            The checks: the handler is still installed with its flags and
 *            mask, the thread's mask still holds SIGTRAP, and a raised
 *            SIGTRAP runs the handler.
 *   pending  as handler, plus a SIGTRAP pending for the process (blocked
 *            in every thread; CRIU refuses to dump this, and so must we,
 *            losing nothing). Checks in addition: the SIGTRAP is still
 *            pending (sigpending) and sigwaitinfo takes it with the sender
 *            being this process.
 *
 * READY line: "READY pid=P t=T". On SIGUSR1, P checks and writes "ok"/"FAIL"
 * lines and a last "ALL OK" or "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "selfcheck.h"

static struct report rep;
static volatile sig_atomic_t go, trapped;
static atomic_int t_tid, t_state;
static volatile sig_atomic_t t_go;
static sigset_t t_mask;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void on_usr2(int sig)
{
	(void)sig;
	t_go = 1;
}

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	trapped = si->si_pid == getpid() ? 1 : 2;
}

static void *thread_t(void *arg)
{
	(void)arg;
	sigset_t trap;
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	pthread_sigmask(SIG_BLOCK, &trap, NULL);
	atomic_store(&t_tid, (int)syscall(SYS_gettid));
	sigset_t wait;
	pthread_sigmask(SIG_BLOCK, NULL, &wait);
	sigdelset(&wait, SIGUSR2);
	atomic_store(&t_state, 1);
	while (!t_go)
		sigsuspend(&wait);
	pthread_sigmask(SIG_BLOCK, NULL, &t_mask);
	atomic_store(&t_state, 2);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: sigtrapst DIR RESULT_FILE handler|pending\n");
		return 2;
	}
	const char *result = argv[2];
	int pending = !strcmp(argv[3], "pending");
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	struct sigaction sa = {0};
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	if (sigaction(SIGTRAP, &sa, NULL))
		die("sigaction");
	struct sigaction su2 = {0};
	su2.sa_handler = on_usr2;
	if (sigaction(SIGUSR2, &su2, NULL))
		die("sigaction");
	sigset_t usr2;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	sigprocmask(SIG_BLOCK, &usr2, NULL);
	pthread_t th;
	if (pthread_create(&th, NULL, thread_t, NULL))
		die("pthread_create");
	wait_count(&t_state, 1);
	sigset_t trap;
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	if (pending) {
		/* Blocked in the main thread (the other one blocks it itself). */
		sigprocmask(SIG_BLOCK, &trap, NULL);
		sigaddset(&wait_mask, SIGTRAP);
		kill(getpid(), SIGTRAP);
	}
	announce_ready("READY pid=%d t=%d\n", getpid(), atomic_load(&t_tid));
	while (!go)
		sigsuspend(&wait_mask);

	struct sigaction now;
	sigaction(SIGTRAP, NULL, &now);
	CHECK(&rep, "SIGTRAP handler", now.sa_sigaction == on_trap, "%p, want %p", (void *)now.sa_sigaction, (void *)on_trap);
	CHECK(&rep, "SIGTRAP flags", (now.sa_flags & (SA_SIGINFO | SA_RESTART)) == (SA_SIGINFO | SA_RESTART), "%#x",
	      now.sa_flags);
	CHECK(&rep, "SIGTRAP handler mask", sigismember(&now.sa_mask, SIGUSR2) == 1, "SIGUSR2 not in it");
	t_go = 1;
	pthread_kill(th, SIGUSR2);
	pthread_join(th, NULL);
	CHECK(&rep, "thread blocks SIGTRAP", sigismember(&t_mask, SIGTRAP) == 1, "not blocked");
	if (pending) {
		sigset_t pend;
		sigpending(&pend);
		CHECK(&rep, "SIGTRAP still pending", sigismember(&pend, SIGTRAP) == 1, "not pending");
		siginfo_t si;
		struct timespec zero = {0, 0};
		int s = sigtimedwait(&trap, &si, &zero);
		CHECK(&rep, "pending SIGTRAP taken", s == SIGTRAP && si.si_pid == getpid() && si.si_code == SI_USER,
		      "sig %d pid %d code %d", s, s > 0 ? si.si_pid : 0, s > 0 ? si.si_code : 0);
		sigprocmask(SIG_UNBLOCK, &trap, NULL);
	}
	raise(SIGTRAP);
	CHECK(&rep, "raised SIGTRAP runs the handler", trapped == 1, "trapped %d", trapped);
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
