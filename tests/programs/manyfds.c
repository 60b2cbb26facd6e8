/*
 * Test and benchmark program: a process holding many descriptors of mixed
 * kinds, for the speed of dumping and restoring them (issue 13: 10,000 in
 * well under a second).
 *
 * Usage: manyfds N RESULT_FILE
 *
 * Opens about N descriptors in groups of 11: a pipe with a queued byte (2),
 * an eventfd with counter k, two dups of it (3), a timerfd armed for an hour,
 * a signalfd, an epoll set over the pipe's read end and the eventfd, a
 * regular file (RESULT_FILE.data) and a dup of it (2), /dev/null, a memfd of one page (every
 * 16th group), a socketpair-free remainder of /dev/null opens. Records what
 * each fd is (its /proc/self/fd link kind), prints "READY pid=P fds=M" and
 * waits for SIGUSR1; then checks every fd: same kind at the same number,
 * each eventfd's counter, each pipe's byte, each epoll set reporting its
 * two targets, and writes the report to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#include "selfcheck.h"

struct group {
	int p[2], efd, dup1, dup2, tfd, sfd, ep, file, filedup, null, memfd;
	uint64_t counter;
};

static struct group *groups;
static int ngroups;
static char (*kinds)[24];
static int maxfd;

static void kind_of(int fd, char *out)
{
	char path[64], link[256];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n < 0) {
		strcpy(out, "-");
		return;
	}
	link[n] = 0;
	/* "pipe:[123]" -> "pipe", "anon_inode:[eventfd]" -> "anon_inode:[eventfd]", "/path" -> "/" */
	char *br = strchr(link, '[');
	if (link[0] == '/')
		snprintf(out, 24, "%s", strncmp(link, "/memfd:", 7) ? "/" : "memfd");
	else if (br && !strncmp(link, "pipe:", 5))
		strcpy(out, "pipe");
	else
		snprintf(out, 24, "%.23s", link);
}

static volatile sig_atomic_t go;
static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 99;
	int want = atoi(argv[1]);
	const char *result = argv[2];
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	handle_blocked(SIGUSR1, on_usr1);
	handle_blocked(SIGUSR2, SIG_IGN);
	ngroups = want / 11 + 1;
	groups = calloc(ngroups, sizeof *groups);
	char name[4200];
	snprintf(name, sizeof name, "%s.data", result);
	int base = open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (base < 0)
		die("file");
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR2);
	for (int i = 0; i < ngroups; i++) {
		struct group *g = &groups[i];
		g->counter = (uint64_t)i + 1;
		if (pipe(g->p) || write(g->p[1], "x", 1) != 1)
			die("pipe");
		if ((g->efd = eventfd((unsigned)g->counter, EFD_NONBLOCK)) < 0 || (g->dup1 = dup(g->efd)) < 0 ||
		    (g->dup2 = dup(g->efd)) < 0)
			die("eventfd");
		struct itimerspec its = {{0, 0}, {3600, 0}};
		if ((g->tfd = timerfd_create(CLOCK_MONOTONIC, 0)) < 0 || timerfd_settime(g->tfd, 0, &its, NULL))
			die("timerfd");
		if ((g->sfd = signalfd(-1, &ss, 0)) < 0)
			die("signalfd");
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i << 1};
		if ((g->ep = epoll_create1(0)) < 0 || epoll_ctl(g->ep, EPOLL_CTL_ADD, g->p[0], &ev))
			die("epoll");
		ev.data.u64 = ((uint64_t)i << 1) | 1;
		if (epoll_ctl(g->ep, EPOLL_CTL_ADD, g->efd, &ev))
			die("epoll add");
		if ((g->file = open(name, O_RDONLY)) < 0 || (g->filedup = dup(g->file)) < 0)
			die("file");
		if ((g->null = open("/dev/null", O_WRONLY)) < 0)
			die("null");
		g->memfd = -1;
		if (i % 16 == 0) {
			if ((g->memfd = memfd_create("manyfds", 0)) < 0 || write(g->memfd, &i, sizeof i) != sizeof i)
				die("memfd");
		}
	}
	for (int fd = 0; fd < (int)rl.rlim_cur; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			maxfd = fd;
	kinds = calloc(maxfd + 1, sizeof *kinds);
	int nfds = 0;
	for (int fd = 0; fd <= maxfd; fd++) {
		kind_of(fd, kinds[fd]);
		nfds += kinds[fd][0] != '-';
	}
	announce_ready("READY pid=%d fds=%d\n", getpid(), nfds);
	suspend_until(SIGUSR1, &go);

	static struct report rep;
	int bad_kind = 0, bad_counter = 0, bad_pipe = 0, bad_epoll = 0, bad_memfd = 0;
	char k[24];
	for (int fd = 0; fd <= maxfd; fd++) {
		if (fd <= 2)
			continue; /* stdio: the restoring side's choice */
		kind_of(fd, k);
		if (strcmp(k, kinds[fd]) && bad_kind++ < 3)
			say(&rep, "fd %d: %s, was %s\n", fd, k, kinds[fd]);
	}
	for (int i = 0; i < ngroups; i++) {
		struct group *g = &groups[i];
		struct epoll_event got[4];
		int n = epoll_wait(g->ep, got, 4, 0);
		uint64_t seen = 0;
		for (int j = 0; j < n; j++)
			seen |= 1ULL << (got[j].data.u64 == ((uint64_t)i << 1) ? 0 : got[j].data.u64 == (((uint64_t)i << 1) | 1) ? 1 : 2);
		bad_epoll += seen != 3;
		uint64_t c = 0;
		bad_counter += read(g->dup2, &c, 8) != 8 || c != g->counter;
		char b;
		bad_pipe += read(g->p[0], &b, 1) != 1 || b != 'x';
		int v = -1;
		if (g->memfd >= 0)
			bad_memfd += pread(g->memfd, &v, sizeof v, 0) != sizeof v || v != i;
	}
	CHECK(&rep, "kinds", !bad_kind, "%d fds changed kind", bad_kind);
	CHECK(&rep, "eventfd_counters", !bad_counter, "%d counters differ", bad_counter);
	CHECK(&rep, "pipe_bytes", !bad_pipe, "%d pipes lost their byte", bad_pipe);
	CHECK(&rep, "epoll_targets", !bad_epoll, "%d epoll sets miss targets", bad_epoll);
	CHECK(&rep, "memfd_contents", !bad_memfd, "%d memfds differ", bad_memfd);
	say(&rep, "fds %d\n", nfds);
	if (finish_report(&rep, result))
		return 98;
	return report_status(&rep);
}
