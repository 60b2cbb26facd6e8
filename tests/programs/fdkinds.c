/*
 * Test program for file kinds beyond regular files and pipes.
 *
 * Usage: fdkinds RESULT
 * Phase 1 puts known state on descriptors (eventfds: counter, semaphore
 * mode, non-blocking, a counter above 32 bits, a dup sharing one
 * description, close-on-exec), prints "READY pid=N" and waits in
 * rt_sigsuspend until SIGUSR1. Phase 2 checks everything from inside and
 * writes the report to RESULT (selfcheck.h); exit status 0 if all passed.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/eventfd.h>

enum { EFD_PLAIN = 10, EFD_SEM = 11, EFD_BIG = 12, EFD_DUP = 13 };
static const uint64_t BIG = (1ULL << 40) + 7;

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void place(int fd, int at)
{
	if (fd < 0 || dup2(fd, at) != at)
		die("placing fd");
	close(fd);
}

static void setup(void)
{
	place(eventfd(5, 0), EFD_PLAIN);
	place(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK), EFD_SEM);
	place(eventfd(0, EFD_CLOEXEC), EFD_BIG);
	fcntl(EFD_BIG, F_SETFD, FD_CLOEXEC);
	if (eventfd_write(EFD_BIG, BIG))
		die("eventfd_write");
	if (dup2(EFD_PLAIN, EFD_DUP) != EFD_DUP)
		die("dup2");
}

static void check(struct report *r)
{
	eventfd_t v = 0;
	CHECK(r, "eventfd-counter", eventfd_read(EFD_PLAIN, &v) == 0 && v == 5, "read %llu (%s)", (unsigned long long)v, strerror(errno));
	CHECK(r, "eventfd-dup-shares", eventfd_write(EFD_DUP, 9) == 0 && eventfd_read(EFD_PLAIN, &v) == 0 && v == 9,
	      "wrote 9 through the dup, read %llu", (unsigned long long)v);
	CHECK(r, "eventfd-blocking", !(fcntl(EFD_PLAIN, F_GETFL) & O_NONBLOCK), "flags %#x", fcntl(EFD_PLAIN, F_GETFL));
	int ones = 0;
	for (int i = 0; i < 4; i++)
		ones += eventfd_read(EFD_SEM, &v) == 0 && v == 1;
	int again = eventfd_read(EFD_SEM, &v) < 0 && errno == EAGAIN;
	CHECK(r, "eventfd-semaphore", ones == 3 && again, "%d reads of 1, then %s", ones, again ? "EAGAIN" : strerror(errno));
	CHECK(r, "eventfd-nonblock", fcntl(EFD_SEM, F_GETFL) & O_NONBLOCK, "flags %#x", fcntl(EFD_SEM, F_GETFL));
	CHECK(r, "eventfd-big-counter", eventfd_read(EFD_BIG, &v) == 0 && v == BIG, "read %#llx", (unsigned long long)v);
	CHECK(r, "eventfd-cloexec", fcntl(EFD_BIG, F_GETFD) == FD_CLOEXEC && fcntl(EFD_PLAIN, F_GETFD) == 0, "fd flags %d %d",
	      fcntl(EFD_BIG, F_GETFD), fcntl(EFD_PLAIN, F_GETFD));
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fdkinds RESULT\n");
		return 2;
	}
	/* Its own session, as a daemon: dumped without --shell-job. */
	setsid();
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t block, empty;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, NULL);
	sigemptyset(&empty);
	setup();
	announce_ready("READY pid=%d\n", getpid());
	while (!go)
		sigsuspend(&empty);
	struct report r = {0};
	check(&r);
	if (finish_report(&r, argv[1]))
		die("writing the report");
	return report_status(&r);
}
