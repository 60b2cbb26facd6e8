/*
 * Test program for event and anonymous-inode descriptors (issue 13): epoll
 * sets, timerfds, signalfds, inotify watches, memfds and pidfds, each set up
 * with state the kernel lets a checkpoint read back, checked from the inside
 * after a restore.
 *
 * Usage: evfds PARTS WORKDIR RESULT_FILE
 *
 * PARTS is a comma-separated list of: epoll, timer, signal, inotify, memfd,
 * pidfd, fanotify, or "all". WORKDIR must exist (inotify and fanotify
 * watch files there).
 *
 * Phase 1 sets up every part, points fds 0-2 at /dev/null, prints
 * "READY pid=N fds=M" and waits in rt_sigsuspend for SIGUSR1 (sent by the
 * test after a restore, or without any checkpoint). Phase 2 checks every
 * part, writes "ok NAME" / "FAIL NAME: detail" lines and "ALL OK" (or
 * "FAIL N check(s)") to RESULT_FILE and exits 0, or 10 + failures; 99 when
 * set-up failed.
 *
 * Extra part, for a refusal: "pidfd-outside" opens a pidfd of the parent
 * (outside any dumped tree).
 */
#define _GNU_SOURCE
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/timerfd.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include "selfcheck.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static const char *parts;
static struct report rep;

static int want(const char *name)
{
	if (!strcmp(parts, "all"))
		return strcmp(name, "pidfd-outside");
	size_t n = strlen(name);
	for (const char *p = parts; (p = strstr(p, name)); p += n)
		if ((p == parts || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return 1;
	return 0;
}

/* The kind-specific fdinfo line of FD that starts with PREFIX and contains
 * NEEDLE (NULL: any), copied to OUT; 0 if none. */
static int fdinfo_line(int fd, const char *prefix, const char *needle, char *out, size_t len)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f >= 0 ? read(f, buf, sizeof buf - 1) : -1;
	if (f >= 0)
		close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	for (char *save, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(l, prefix, strlen(prefix)) && (!needle || strstr(l, needle))) {
			snprintf(out, len, "%s", l);
			return 1;
		}
	}
	return 0;
}

/* ---------- epoll ---------- */

#define D_PIPE_IN 0xa1a1a1a1a1a1a1a1ULL
#define D_PIPE_OUT 0xb2b2b2b2b2b2b2b2ULL
#define D_EVENT 0xe0e0e0e00000e0e0ULL
#define D_MOVED 0x4d4f564544ULL /* "MOVED" */
#define D_EXCL 0x45584ccULL
#define D_NESTED 0x4e4553544544ULL /* "NESTED" */

static struct {
	int p[2], efd, moved, excl, ep, ep2;
} ep;

static void setup_epoll(void)
{
	struct epoll_event ev;
	if (pipe2(ep.p, O_NONBLOCK) || (ep.efd = eventfd(0, EFD_NONBLOCK)) < 0)
		die("epoll: pipe/eventfd");
	if ((ep.ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || (ep.ep2 = epoll_create1(0)) < 0)
		die("epoll_create1");
	/* The write end, one-shot: fires once now and stays disarmed. */
	ev = (struct epoll_event){.events = EPOLLOUT | EPOLLONESHOT, .data.u64 = D_PIPE_OUT};
	if (epoll_ctl(ep.ep, EPOLL_CTL_ADD, ep.p[1], &ev))
		die("epoll add out");
	struct epoll_event got[4];
	if (epoll_wait(ep.ep, got, 4, 1000) != 1 || got[0].data.u64 != D_PIPE_OUT)
		die("epoll one-shot");
	ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = D_PIPE_IN};
	if (epoll_ctl(ep.ep, EPOLL_CTL_ADD, ep.p[0], &ev))
		die("epoll add in");
	ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = D_EVENT};
	if (epoll_ctl(ep.ep, EPOLL_CTL_ADD, ep.efd, &ev))
		die("epoll add eventfd");
	/* Registered through an fd that is then dup'd and closed. */
	int first = eventfd(0, EFD_NONBLOCK);
	ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = D_MOVED};
	if (first < 0 || epoll_ctl(ep.ep, EPOLL_CTL_ADD, first, &ev))
		die("epoll add moved");
	if ((ep.moved = fcntl(first, F_DUPFD, 100)) < 0 || close(first))
		die("epoll dup");
	ep.excl = eventfd(0, EFD_NONBLOCK);
	ev = (struct epoll_event){.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = D_EXCL};
	if (ep.excl < 0 || epoll_ctl(ep.ep, EPOLL_CTL_ADD, ep.excl, &ev))
		die("epoll add exclusive");
	ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = D_NESTED};
	if (epoll_ctl(ep.ep2, EPOLL_CTL_ADD, ep.ep, &ev))
		die("epoll add nested");
	/* Pending before the dump, never consumed. */
	if (write(ep.p[1], "x", 1) != 1)
		die("epoll pipe write");
}

/* epoll_wait with a hang guard; returns the number of events. */
static int wait_events(int epfd, struct epoll_event *got, int max, int ms)
{
	int n;
	do
		n = epoll_wait(epfd, got, max, ms);
	while (n < 0 && errno == EINTR);
	return n;
}

static void check_epoll(void)
{
	struct epoll_event got[8];
	int n = wait_events(ep.ep2, got, 8, 10000);
	CHECK(&rep, "epoll.nested", n == 1 && got[0].data.u64 == D_NESTED, "n=%d data=%#llx", n,
	      n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
	n = wait_events(ep.ep, got, 8, 0);
	CHECK(&rep, "epoll.pending", n == 1 && got[0].data.u64 == D_PIPE_IN, "n=%d data=%#llx (the pipe's byte, only)", n,
	      n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
	n = wait_events(ep.ep, got, 8, 0);
	CHECK(&rep, "epoll.edge_consumed", n == 0, "n=%d after the edge was reported", n);
	uint64_t one = 1;
	if (write(ep.efd, &one, 8) != 8)
		die("eventfd write");
	n = wait_events(ep.ep, got, 8, 10000);
	CHECK(&rep, "epoll.eventfd", n == 1 && got[0].data.u64 == D_EVENT, "n=%d data=%#llx", n,
	      n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
	uint64_t v;
	if (read(ep.efd, &v, 8) != 8)
		die("eventfd read");
	if (write(ep.moved, &one, 8) != 8)
		die("moved write");
	n = wait_events(ep.ep, got, 8, 10000);
	CHECK(&rep, "epoll.dup_closed_target", n == 1 && got[0].data.u64 == D_MOVED, "n=%d data=%#llx", n,
	      n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
	if (read(ep.moved, &v, 8) != 8)
		die("moved read");
	if (write(ep.excl, &one, 8) != 8)
		die("excl write");
	n = wait_events(ep.ep, got, 8, 10000);
	CHECK(&rep, "epoll.exclusive", n == 1 && got[0].data.u64 == D_EXCL, "n=%d", n);
	if (read(ep.excl, &v, 8) != 8)
		die("excl read");
	/* excl got the number the moved target was registered with: two
	 * targets of this set show the same tfd. */
	char line[256], needle[64];
	snprintf(needle, sizeof needle, "data: %16llx", D_EXCL);
	int found = fdinfo_line(ep.ep, "tfd:", needle, line, sizeof line);
	unsigned ev = 0;
	if (found)
		sscanf(strstr(line, "events:") + 7, "%x", &ev);
	CHECK(&rep, "epoll.flags_kept", found && (ev & EPOLLEXCLUSIVE),
	      "fdinfo: %s", found ? line : "(no line)");
	/* The pipe's read end is registered under its own fd number. */
	struct epoll_event add = {.events = EPOLLIN, .data.u64 = 1};
	CHECK(&rep, "epoll.same_key", epoll_ctl(ep.ep, EPOLL_CTL_ADD, ep.p[0], &add) < 0 && errno == EEXIST,
	      "adding fd %d again: %s", ep.p[0], strerror(errno));
	/* The one-shot write end is disarmed, and re-arms under its fd number. */
	n = wait_events(ep.ep, got, 8, 0);
	CHECK(&rep, "epoll.oneshot_disarmed", n == 0, "n=%d", n);
	struct epoll_event mod = {.events = EPOLLOUT | EPOLLONESHOT, .data.u64 = D_PIPE_OUT};
	int r = epoll_ctl(ep.ep, EPOLL_CTL_MOD, ep.p[1], &mod);
	n = r ? -1 : wait_events(ep.ep, got, 8, 10000);
	CHECK(&rep, "epoll.oneshot_rearmed", n == 1 && got[0].data.u64 == D_PIPE_OUT, "mod=%d (%s) n=%d", r,
	      r ? strerror(errno) : "", n);
	/* A new edge on the pipe. */
	if (write(ep.p[1], "y", 1) != 1)
		die("pipe write");
	n = wait_events(ep.ep, got, 8, 10000);
	CHECK(&rep, "epoll.new_edge", n == 1 && got[0].data.u64 == D_PIPE_IN, "n=%d", n);
	char b[4];
	CHECK(&rep, "epoll.pipe_data", read(ep.p[0], b, 4) == 2 && b[0] == 'x' && b[1] == 'y', "pipe bytes lost");
	CHECK(&rep, "epoll.cloexec", fcntl(ep.ep, F_GETFD) == FD_CLOEXEC && fcntl(ep.ep2, F_GETFD) == 0, "fd flags");
}

/* ---------- timerfd ---------- */

static struct {
	int expired, periodic, longone, absolute, soon, idle;
	uint64_t periodic_ticks;
} tm;

static int timer(int clock, int flags, int setflags, time_t vs, long vns, time_t is, long ins)
{
	int fd = timerfd_create(clock, flags);
	struct itimerspec its = {{is, ins}, {vs, vns}};
	if (fd < 0 || ((vs || vns) && timerfd_settime(fd, setflags, &its, NULL)))
		die("timerfd");
	return fd;
}

static uint64_t fdinfo_ticks(int fd)
{
	char line[128];
	unsigned long long t = 0;
	if (fdinfo_line(fd, "ticks:", NULL, line, sizeof line))
		sscanf(line + 6, "%llu", &t);
	return t;
}

static void setup_timer(void)
{
	tm.expired = timer(CLOCK_MONOTONIC, 0, 0, 0, 1000000, 0, 0);
	tm.periodic = timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 0, 1000000, 0, 5000000);
	tm.longone = timer(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC, 0, 3600, 0, 0, 0);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	tm.absolute = timer(CLOCK_REALTIME, 0, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, now.tv_sec + 3600, 0, 0, 0);
	tm.soon = timer(CLOCK_BOOTTIME, 0, 0, 0, 300000000, 0, 0);
	tm.idle = timer(CLOCK_MONOTONIC, 0, 0, 0, 0, 0, 0);
	/* At least 8 periods pass unread. The kernel counts them only when the
	 * timer is read (or timerfd_gettime'd): its fdinfo says 1 meanwhile. */
	struct timespec ts = {0, 45000000};
	while (nanosleep(&ts, &ts))
		;
	while (fdinfo_ticks(tm.expired) < 1)
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	tm.periodic_ticks = 8;
}

static void check_timer(void)
{
	uint64_t t = 0;
	struct itimerspec cur;
	CHECK(&rep, "timer.expired_ticks", read(tm.expired, &t, 8) == 8 && t == 1, "read %llu", (unsigned long long)t);
	t = 0;
	ssize_t r = read(tm.periodic, &t, 8);
	CHECK(&rep, "timer.periodic_ticks", r == 8 && t >= tm.periodic_ticks, "read %zd: %llu, had %llu before", r,
	      (unsigned long long)t, (unsigned long long)tm.periodic_ticks);
	struct pollfd pf = {.fd = tm.periodic, .events = POLLIN};
	CHECK(&rep, "timer.periodic_fires", poll(&pf, 1, 10000) == 1, "no tick within 10 s");
	CHECK(&rep, "timer.nonblock", (fcntl(tm.periodic, F_GETFL) & O_NONBLOCK) && !(fcntl(tm.expired, F_GETFL) & O_NONBLOCK),
	      "status flags");
	timerfd_gettime(tm.longone, &cur);
	CHECK(&rep, "timer.remaining", cur.it_value.tv_sec >= 3300 && cur.it_value.tv_sec < 3600 && !cur.it_interval.tv_sec,
	      "%ld s left", (long)cur.it_value.tv_sec);
	CHECK(&rep, "timer.cloexec", fcntl(tm.longone, F_GETFD) == FD_CLOEXEC, "fd flags");
	timerfd_gettime(tm.absolute, &cur);
	CHECK(&rep, "timer.absolute", cur.it_value.tv_sec >= 3300 && cur.it_value.tv_sec < 3600, "%ld s left",
	      (long)cur.it_value.tv_sec);
	char line[128] = "";
	fdinfo_line(tm.absolute, "settime flags:", NULL, line, sizeof line);
	CHECK(&rep, "timer.settime_flags", !strcmp(line, "settime flags: 03"), "%s", line);
	fdinfo_line(tm.absolute, "clockid:", NULL, line, sizeof line);
	CHECK(&rep, "timer.clock", !strcmp(line, "clockid: 0"), "%s", line);
	pf.fd = tm.soon;
	t = 0;
	CHECK(&rep, "timer.oneshot_fires", poll(&pf, 1, 10000) == 1 && read(tm.soon, &t, 8) == 8 && t == 1, "ticks %llu",
	      (unsigned long long)t);
	fdinfo_line(tm.soon, "clockid:", NULL, line, sizeof line);
	CHECK(&rep, "timer.boottime", !strcmp(line, "clockid: 7"), "%s", line);
	timerfd_gettime(tm.idle, &cur);
	CHECK(&rep, "timer.disarmed", !cur.it_value.tv_sec && !cur.it_value.tv_nsec, "armed");
}

/* ---------- signalfd ---------- */

static int sfd;

static void setup_signal(void)
{
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigaddset(&m, SIGRTMIN + 3);
	if (sigprocmask(SIG_BLOCK, &m, NULL) || (sfd = signalfd(-1, &m, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		die("signalfd");
	union sigval sv = {.sival_int = 77};
	if (sigqueue(getpid(), SIGRTMIN + 3, sv))
		die("sigqueue");
}

static void check_signal(void)
{
	struct signalfd_siginfo si;
	char line[128] = "";
	fdinfo_line(sfd, "sigmask:", NULL, line, sizeof line);
	unsigned long long want_mask = (1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGRTMIN + 3 - 1)), got_mask = 0;
	sscanf(line + 8, "%llx", &got_mask);
	CHECK(&rep, "signal.mask", got_mask == want_mask, "%s", line);
	ssize_t r = read(sfd, &si, sizeof si);
	CHECK(&rep, "signal.queued_before", r == sizeof si && (int)si.ssi_signo == SIGRTMIN + 3 && si.ssi_int == 77,
	      "read %zd signo %u int %d", r, si.ssi_signo, si.ssi_int);
	kill(getpid(), SIGUSR2);
	r = read(sfd, &si, sizeof si);
	CHECK(&rep, "signal.sent_after", r == sizeof si && si.ssi_signo == SIGUSR2 && (pid_t)si.ssi_pid == getpid(),
	      "read %zd signo %u", r, si.ssi_signo);
	r = read(sfd, &si, sizeof si);
	CHECK(&rep, "signal.nonblock", r < 0 && errno == EAGAIN, "read %zd", r);
	CHECK(&rep, "signal.cloexec", fcntl(sfd, F_GETFD) == FD_CLOEXEC, "fd flags");
}

/* ---------- inotify ---------- */

static struct {
	int fd, wd_file, wd_dir;
	char file[4096], dir[4096];
} in;

static void setup_inotify(const char *work)
{
	char gone[4200];
	snprintf(in.file, sizeof in.file, "%s/watched", work);
	snprintf(in.dir, sizeof in.dir, "%s/wdir", work);
	snprintf(gone, sizeof gone, "%s/gone", work);
	int f = open(in.file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (f < 0 || close(f) || (mkdir(in.dir, 0755) && errno != EEXIST) || (mkdir(gone, 0755) && errno != EEXIST))
		die("inotify files");
	if ((in.fd = inotify_init1(IN_NONBLOCK)) < 0)
		die("inotify_init1");
	/* Watch 1 is removed, so the kept ones are not numbered from 1. */
	int w1 = inotify_add_watch(in.fd, gone, IN_CREATE);
	in.wd_file = inotify_add_watch(in.fd, in.file, IN_MODIFY | IN_CLOSE_WRITE);
	in.wd_dir = inotify_add_watch(in.fd, in.dir, IN_CREATE | IN_ONLYDIR | IN_EXCL_UNLINK);
	if (w1 < 0 || in.wd_file < 0 || in.wd_dir < 0 || inotify_rm_watch(in.fd, w1))
		die("inotify_add_watch");
	char buf[4096];
	while (read(in.fd, buf, sizeof buf) > 0)
		;
}

/* Reads one inotify event (waiting up to 10 s). */
static int next_event(struct inotify_event *ev, size_t len)
{
	struct pollfd pf = {.fd = in.fd, .events = POLLIN};
	if (poll(&pf, 1, 10000) != 1)
		return 0;
	return read(in.fd, ev, len) > 0;
}

static void check_inotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	struct inotify_event *ev = (void *)buf;
	int f = open(in.file, O_WRONLY | O_APPEND);
	if (f < 0 || write(f, "z", 1) != 1)
		die("inotify write");
	int ok = next_event(ev, sizeof buf);
	CHECK(&rep, "inotify.modify", ok && ev->wd == in.wd_file && (ev->mask & IN_MODIFY), "ok=%d wd=%d (want %d) mask=%#x",
	      ok, ok ? ev->wd : -1, in.wd_file, ok ? ev->mask : 0);
	close(f);
	ok = next_event(ev, sizeof buf);
	CHECK(&rep, "inotify.close_write", ok && ev->wd == in.wd_file && (ev->mask & IN_CLOSE_WRITE), "ok=%d mask=%#x", ok,
	      ok ? ev->mask : 0);
	char path[4200];
	snprintf(path, sizeof path, "%s/newfile", in.dir);
	f = open(path, O_WRONLY | O_CREAT, 0644);
	if (f < 0)
		die("inotify create");
	close(f);
	ok = next_event(ev, sizeof buf);
	CHECK(&rep, "inotify.create", ok && ev->wd == in.wd_dir && (ev->mask & IN_CREATE) && !strcmp(ev->name, "newfile"),
	      "ok=%d wd=%d (want %d) name=%s", ok, ok ? ev->wd : -1, in.wd_dir, ok ? ev->name : "");
	unlink(path);
	/* The same inode is watched: adding a watch on it again returns its wd. */
	int again = inotify_add_watch(in.fd, in.file, IN_MODIFY | IN_CLOSE_WRITE);
	CHECK(&rep, "inotify.same_inode", again == in.wd_file, "wd %d, want %d", again, in.wd_file);
	char line[512];
	char needle[32];
	snprintf(needle, sizeof needle, "wd:%x ", in.wd_dir);
	int found = fdinfo_line(in.fd, "inotify", needle, line, sizeof line);
	unsigned mask = 0;
	if (found)
		sscanf(strstr(line, "mask:") + 5, "%x", &mask);
	CHECK(&rep, "inotify.mask", found && (mask & (IN_EXCL_UNLINK | IN_CREATE)) == (IN_EXCL_UNLINK | IN_CREATE), "%s",
	      found ? line : "(no line)");
	CHECK(&rep, "inotify.nonblock", fcntl(in.fd, F_GETFL) & O_NONBLOCK, "status flags");
}

/* ---------- memfd ---------- */

#define MEMFD_SIZE (3 * PAGE + 100)

static struct {
	int fd, sealed;
	uint8_t *shared, *orphan;
} mf;

static void setup_memfd(void)
{
	mf.fd = memfd_create("ev-memfd", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (mf.fd < 0 || ftruncate(mf.fd, MEMFD_SIZE))
		die("memfd_create");
	uint8_t buf[MEMFD_SIZE];
	fill_bytes(buf, MEMFD_SIZE, 11);
	if (pwrite(mf.fd, buf, MEMFD_SIZE, 0) != MEMFD_SIZE)
		die("memfd write");
	mf.shared = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mf.fd, 0);
	if (mf.shared == MAP_FAILED)
		die("memfd mmap");
	mf.shared[5] = 0x55; /* through the mapping, seen by the fd */
	if (fcntl(mf.fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) || lseek(mf.fd, 1234, SEEK_SET) != 1234)
		die("memfd seals");
	mf.sealed = memfd_create("ev-sealed", MFD_ALLOW_SEALING);
	if (mf.sealed < 0 || write(mf.sealed, "hello", 5) != 5 || fcntl(mf.sealed, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL))
		die("memfd sealed");
	/* A memfd only mapped: its fd is closed. */
	int o = memfd_create("ev-orphan", 0);
	if (o < 0 || ftruncate(o, 2 * PAGE))
		die("memfd orphan");
	mf.orphan = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, o, 0);
	if (mf.orphan == MAP_FAILED)
		die("memfd orphan mmap");
	close(o);
	memset(mf.orphan + PAGE, 0x6f, PAGE);
}

static void check_memfd(void)
{
	char link[256] = "";
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", mf.fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	CHECK(&rep, "memfd.name", !strcmp(link, "/memfd:ev-memfd (deleted)"), "%s", link);
	struct statfs sf;
	CHECK(&rep, "memfd.is_memfd", !fstatfs(mf.fd, &sf) && sf.f_type == TMPFS_MAGIC, "f_type %#lx", (long)sf.f_type);
	struct stat st;
	fstat(mf.fd, &st);
	CHECK(&rep, "memfd.size", st.st_size == MEMFD_SIZE, "size %lld", (long long)st.st_size);
	int seals = fcntl(mf.fd, F_GET_SEALS);
	CHECK(&rep, "memfd.seals", seals == (F_SEAL_SHRINK | F_SEAL_GROW), "seals %#x", seals);
	CHECK(&rep, "memfd.pos", lseek(mf.fd, 0, SEEK_CUR) == 1234, "pos");
	CHECK(&rep, "memfd.cloexec", fcntl(mf.fd, F_GETFD) == FD_CLOEXEC, "fd flags");
	uint8_t want[MEMFD_SIZE], got[MEMFD_SIZE];
	fill_bytes(want, MEMFD_SIZE, 11);
	want[5] = 0x55;
	CHECK(&rep, "memfd.contents", pread(mf.fd, got, MEMFD_SIZE, 0) == MEMFD_SIZE && !memcmp(got, want, MEMFD_SIZE),
	      "contents differ");
	CHECK(&rep, "memfd.mapped", !memcmp(mf.shared, want, MEMFD_SIZE), "mapping differs");
	/* The mapping and the fd are one object. */
	mf.shared[7] = 0x42;
	uint8_t b = 0;
	pread(mf.fd, &b, 1, 7);
	uint8_t c = 0x24;
	pwrite(mf.fd, &c, 1, 8);
	CHECK(&rep, "memfd.same_object", b == 0x42 && mf.shared[8] == 0x24, "fd sees %#x, mapping sees %#x", b, mf.shared[8]);
	CHECK(&rep, "memfd.grow_sealed", ftruncate(mf.fd, 10 * PAGE) < 0 && errno == EPERM, "could grow");
	seals = fcntl(mf.sealed, F_GET_SEALS);
	CHECK(&rep, "memfd.sealed", seals == (F_SEAL_WRITE | F_SEAL_SEAL), "seals %#x", seals);
	char h[6] = "";
	CHECK(&rep, "memfd.sealed_contents", pread(mf.sealed, h, 5, 0) == 5 && !memcmp(h, "hello", 5), "%s", h);
	CHECK(&rep, "memfd.sealed_write", write(mf.sealed, "x", 1) < 0 && errno == EPERM, "could write");
	uint8_t z[PAGE] = {0};
	CHECK(&rep, "memfd.orphan", !memcmp(mf.orphan, z, PAGE) && mf.orphan[PAGE] == 0x6f && mf.orphan[2 * PAGE - 1] == 0x6f,
	      "orphan mapping differs");
	char maps[256];
	snprintf(maps, sizeof maps, "/proc/self/map_files/%lx-%lx", (unsigned long)mf.orphan, (unsigned long)mf.orphan + 2 * PAGE);
	n = readlink(maps, link, sizeof link - 1);
	link[n > 0 ? n : 0] = 0;
	CHECK(&rep, "memfd.orphan_name", !strcmp(link, "/memfd:ev-orphan (deleted)"), "%s", link);
	snprintf(maps, sizeof maps, "/proc/self/map_files/%lx-%lx", (unsigned long)mf.shared, (unsigned long)mf.shared + 4 * PAGE);
	struct stat fst;
	CHECK(&rep, "memfd.mapping_inode", !stat(maps, &st) && !fstat(mf.fd, &fst) && st.st_ino == fst.st_ino,
	      "the mapping's inode %lu is not the fd's %lu", (unsigned long)st.st_ino, (unsigned long)fst.st_ino);
}

/* ---------- pidfd ---------- */

static struct {
	int child_fd, self_fd, dead_fd;
	pid_t child, dead;
} pf;

static int pidfd_open(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

static void setup_pidfd(void)
{
	pf.child = fork();
	if (pf.child < 0)
		die("fork");
	if (!pf.child) {
		/* Nothing of the test's (its stderr may be a growing log file). */
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		for (;;)
			pause();
	}
	pf.dead = fork();
	if (pf.dead < 0)
		die("fork");
	if (!pf.dead)
		_exit(7);
	if ((pf.child_fd = pidfd_open(pf.child, PIDFD_NONBLOCK)) < 0 || (pf.self_fd = pidfd_open(getpid(), 0)) < 0 ||
	    (pf.dead_fd = pidfd_open(pf.dead, 0)) < 0)
		die("pidfd_open");
	int st;
	if (waitpid(pf.dead, &st, 0) != pf.dead)
		die("waitpid");
}

static void check_pidfd(void)
{
	char line[128] = "";
	int pid = 0;
	fdinfo_line(pf.child_fd, "Pid:", NULL, line, sizeof line);
	sscanf(line + 4, "%d", &pid);
	CHECK(&rep, "pidfd.child", pid == pf.child, "Pid %d, want %d", pid, pf.child);
	fdinfo_line(pf.self_fd, "Pid:", NULL, line, sizeof line);
	sscanf(line + 4, "%d", &pid);
	CHECK(&rep, "pidfd.self", pid == getpid(), "Pid %d", pid);
	CHECK(&rep, "pidfd.nonblock", (fcntl(pf.child_fd, F_GETFL) & O_NONBLOCK) && !(fcntl(pf.self_fd, F_GETFL) & O_NONBLOCK),
	      "status flags");
	struct pollfd p = {.fd = pf.child_fd, .events = POLLIN};
	CHECK(&rep, "pidfd.alive", poll(&p, 1, 0) == 0, "child looks gone");
	int r = (int)syscall(SYS_pidfd_send_signal, pf.child_fd, SIGTERM, NULL, 0);
	CHECK(&rep, "pidfd.send_signal", r == 0, "%s", strerror(errno));
	CHECK(&rep, "pidfd.exit_seen", poll(&p, 1, 10000) == 1 && (p.revents & POLLIN), "no exit within 10 s");
	siginfo_t si = {0};
	r = waitid(P_PIDFD, pf.child_fd, &si, WEXITED);
	CHECK(&rep, "pidfd.waitid", r == 0 && si.si_pid == pf.child && si.si_code == CLD_KILLED && si.si_status == SIGTERM,
	      "r=%d pid=%d code=%d status=%d", r, si.si_pid, si.si_code, si.si_status);
	p.fd = pf.dead_fd;
	CHECK(&rep, "pidfd.dead", poll(&p, 1, 0) == 1 && (p.revents & POLLIN), "the reaped child's pidfd is not readable");
	fdinfo_line(pf.dead_fd, "Pid:", NULL, line, sizeof line);
	CHECK(&rep, "pidfd.dead_pid", !strcmp(line, "Pid:\t-1"), "%s", line);
}

/* ---------- fanotify ---------- */

static struct {
	int fd;
	char file[4200];
} fa;

static void setup_fanotify(const char *work)
{
	snprintf(fa.file, sizeof fa.file, "%s/fanotified", work);
	int f = open(fa.file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (f < 0 || close(f))
		die("fanotify file");
	fa.fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (fa.fd < 0 || fanotify_mark(fa.fd, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, fa.file) ||
	    fanotify_mark(fa.fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_CLOSE_NOWRITE, AT_FDCWD,
			  fa.file) ||
	    fanotify_mark(fa.fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, AT_FDCWD, work))
		die("fanotify");
}

static void check_fanotify(void)
{
	char line[512] = "";
	int mount = fdinfo_line(fa.fd, "fanotify mnt_id:", NULL, line, sizeof line);
	CHECK(&rep, "fanotify.mount_mark", mount && strstr(line, "mask:8 "), "%s", line);
	int inode = fdinfo_line(fa.fd, "fanotify ino:", NULL, line, sizeof line);
	CHECK(&rep, "fanotify.inode_mark", inode && strstr(line, "mask:2 ") && strstr(line, "ignored_mask:10"), "%s", line);
	CHECK(&rep, "fanotify.nonblock", fcntl(fa.fd, F_GETFL) & O_NONBLOCK, "status flags");
	int f = open(fa.file, O_WRONLY | O_APPEND);
	if (f < 0 || write(f, "z", 1) != 1)
		die("fanotify write");
	int modify = 0;
	char buf[4096] __attribute__((aligned(8)));
	struct pollfd pf = {.fd = fa.fd, .events = POLLIN};
	while (!modify && poll(&pf, 1, 10000) == 1) {
		ssize_t n = read(fa.fd, buf, sizeof buf);
		for (struct fanotify_event_metadata *m = (void *)buf; n > 0 && FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			if (m->fd >= 0) {
				char path[64], link[4200] = "";
				snprintf(path, sizeof path, "/proc/self/fd/%d", m->fd);
				ssize_t k = readlink(path, link, sizeof link - 1);
				link[k > 0 ? k : 0] = 0;
				modify |= (m->mask & FAN_MODIFY) && !strcmp(link, fa.file);
				close(m->fd);
			}
		}
	}
	close(f);
	CHECK(&rep, "fanotify.modify", modify, "no FAN_MODIFY event for %s within 10 s", fa.file);
}

/* ---------- refusals ---------- */

static void setup_refusals(void)
{
	if (want("pidfd-outside") && pidfd_open(getppid(), 0) < 0)
		die("pidfd of the parent");
}

/* ---------- main ---------- */

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 99;
	parts = argv[1];
	const char *work = argv[2], *result = argv[3];
	handle_blocked(SIGUSR1, on_usr1);
	if (want("epoll"))
		setup_epoll();
	if (want("timer"))
		setup_timer();
	if (want("signal"))
		setup_signal();
	if (want("inotify"))
		setup_inotify(work);
	if (want("memfd"))
		setup_memfd();
	if (want("pidfd"))
		setup_pidfd();
	if (want("fanotify"))
		setup_fanotify(work);
	setup_refusals();
	int nfds = 0;
	for (int fd = 0; fd < 1024; fd++)
		nfds += fcntl(fd, F_GETFD) >= 0;
	announce_ready("READY pid=%d fds=%d\n", getpid(), nfds);
	suspend_until(SIGUSR1, &go);
	if (want("epoll"))
		check_epoll();
	if (want("timer"))
		check_timer();
	if (want("signal"))
		check_signal();
	if (want("inotify"))
		check_inotify();
	if (want("memfd"))
		check_memfd();
	if (want("pidfd"))
		check_pidfd();
	if (want("fanotify"))
		check_fanotify();
	if (finish_report(&rep, result))
		return 98;
	return report_status(&rep);
}
