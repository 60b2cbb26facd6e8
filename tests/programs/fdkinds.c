/*
 * Test program for file kinds beyond regular files and pipes.
 *
 * Usage: fdkinds RESULT
 * Phase 1 puts known state on descriptors (eventfds: counter, semaphore
 * mode, non-blocking, a counter above 32 bits, a dup sharing one
 * description, close-on-exec; pipes: 1 MiB of capacity holding 1 MiB, an
 * empty one of 256 KiB, one shrunk to a page; unlinked files: a sparse
 * one with an odd owner, set-id mode and mtime, a small one, and one opened
 * twice (two descriptions, read-write and read-only) before it was
 * unlinked, which must stay one file; owners:
 * a pipe sending SIGRTMIN+1 to this process (F_SETOWN_EX, F_SETSIG,
 * O_ASYNC, set under euid 1000), a FIFO sending SIGIO to its thread; a
 * shared mapping of a file opened O_RDWR, read-only in part), prints "READY pid=N" and waits in
 * rt_sigsuspend until SIGUSR1. Phase 2 checks everything from inside and
 * writes the report to RESULT (selfcheck.h); exit status 0 if all passed.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>

enum { EFD_PLAIN = 10, EFD_SEM = 11, EFD_BIG = 12, EFD_DUP = 13 };
static const uint64_t BIG = (1ULL << 40) + 7;
/* Pipes: read end, write end. */
enum { P_FULL = 20, P_EMPTY = 22, P_SMALL = 24 };
#define MiB (1 << 20)
/* Owned descriptions: a pipe (read end, write end), a FIFO's read end. */
enum { P_OWNED = 40, F_OWNED = 42 };
#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif
/* Unlinked files. */
enum { G_SPARSE = 30, G_SMALL = 31, G_TWICE_RW = 32, G_TWICE_RO = 33 };
#define SPARSE_AT (4 * MiB)
#define SPARSE_SIZE (7 * MiB)
static const char SMALL[] = "a small unlinked file\n";

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void place(int fd, int at)
{
	if (fd < 0 || dup2(fd, at) != at)
		die("placing fd");
	close(fd);
}

/* A pipe at fds AT, AT+1 with capacity SIZE holding N pattern bytes. */
static void make_pipe(int at, int size, size_t n)
{
	int p[2];
	if (pipe(p))
		die("pipe");
	if (fcntl(p[1], F_SETPIPE_SZ, size) != size)
		die("F_SETPIPE_SZ");
	place(p[0], at);
	place(p[1], at + 1);
	static uint8_t buf[4096];
	fcntl(at + 1, F_SETFL, O_NONBLOCK);
	for (size_t done = 0; done < n;) {
		size_t k = n - done < sizeof buf ? n - done : sizeof buf;
		fill_bytes(buf, k, (uint8_t)(done / sizeof buf));
		ssize_t w = write(at + 1, buf, k);
		if (w != (ssize_t)k)
			die("filling a pipe");
		done += k;
	}
	fcntl(at + 1, F_SETFL, 0);
}

/* Whether the pipe at fds AT, AT+1 has capacity SIZE and holds exactly the
 * N pattern bytes make_pipe put there. */
static int pipe_intact(int at, int size, size_t n, char *why, size_t len)
{
	int got = fcntl(at, F_GETPIPE_SZ);
	if (got != size) {
		snprintf(why, len, "capacity %d, not %d", got, size);
		return 0;
	}
	static uint8_t buf[4096], want[4096];
	fcntl(at, F_SETFL, O_NONBLOCK);
	size_t done = 0;
	for (;;) {
		ssize_t k = read(at, buf, sizeof buf);
		if (k <= 0)
			break;
		for (ssize_t i = 0; i < k; i++, done++) {
			if (i == 0 || (done % sizeof want) == 0)
				fill_bytes(want, sizeof want, (uint8_t)(done / sizeof want));
			if (buf[i] != want[done % sizeof want]) {
				snprintf(why, len, "byte %zu differs", done);
				return 0;
			}
		}
	}
	if (done != n) {
		snprintf(why, len, "%zu bytes queued, not %zu", done, n);
		return 0;
	}
	return 1;
}

/* An unlinked file at fd AT, made next to RESULT. */
static int ghost(const char *result, const char *name, int at)
{
	char path[4200];
	snprintf(path, sizeof path, "%s.%s", result, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || unlink(path))
		die("making an unlinked file");
	place(fd, at);
	return at;
}

static void make_ghosts(const char *result)
{
	int fd = ghost(result, "sparse", G_SPARSE);
	static uint8_t block[8192];
	fill_bytes(block, sizeof block, 0x5a);
	if (write(fd, "head", 4) != 4 || pwrite(fd, block, sizeof block, SPARSE_AT) != sizeof block || ftruncate(fd, SPARSE_SIZE))
		die("writing the sparse file");
	if (fchown(fd, 1234, 5678) || fchmod(fd, 06604))
		die("owner and mode");
	struct timespec ts[2] = {{1000, 0}, {123456, 789000}};
	if (futimens(fd, ts) || lseek(fd, 2, SEEK_SET) != 2)
		die("times");
	fd = ghost(result, "small", G_SMALL);
	if (write(fd, SMALL, sizeof SMALL - 1) != sizeof SMALL - 1 || fchmod(fd, 0640))
		die("writing the small file");
	char path[4200];
	snprintf(path, sizeof path, "%s.twice", result);
	place(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600), G_TWICE_RW);
	place(open(path, O_RDONLY), G_TWICE_RO);
	if (unlink(path) || write(G_TWICE_RW, "twice", 5) != 5 || lseek(G_TWICE_RO, 3, SEEK_SET) != 3)
		die("a file opened twice");
}

static void check_ghosts(struct report *r)
{
	struct stat st;
	int ok = fstat(G_SPARSE, &st) == 0;
	CHECK(r, "ghost-owner-mode", ok && st.st_uid == 1234 && st.st_gid == 5678 && st.st_mode == (S_IFREG | 06604),
	      "uid %d gid %d mode %o", st.st_uid, st.st_gid, st.st_mode);
	CHECK(r, "ghost-mtime", ok && st.st_mtim.tv_sec == 123456 && st.st_mtim.tv_nsec == 789000, "mtime %ld.%09ld",
	      (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	CHECK(r, "ghost-size-pos", ok && st.st_size == SPARSE_SIZE && lseek(G_SPARSE, 0, SEEK_CUR) == 2, "size %ld pos %ld",
	      (long)st.st_size, (long)lseek(G_SPARSE, 0, SEEK_CUR));
	CHECK(r, "ghost-holes", ok && st.st_blocks * 512 < MiB && lseek(G_SPARSE, 4096, SEEK_DATA) == SPARSE_AT,
	      "%ld blocks, data after the head at %ld", (long)st.st_blocks, (long)lseek(G_SPARSE, 4096, SEEK_DATA));
	static uint8_t got[8192], want[8192];
	char head[4];
	fill_bytes(want, sizeof want, 0x5a);
	CHECK(r, "ghost-contents",
	      pread(G_SPARSE, head, 4, 0) == 4 && !memcmp(head, "head", 4) && pread(G_SPARSE, got, sizeof got, SPARSE_AT) == sizeof got &&
		      !memcmp(got, want, sizeof got),
	      "contents differ");
	char small[64] = "";
	ssize_t n = pread(G_SMALL, small, sizeof small, 0);
	CHECK(r, "ghost-small", n == sizeof SMALL - 1 && !memcmp(small, SMALL, n) && fstat(G_SMALL, &st) == 0 && st.st_mode == (S_IFREG | 0640),
	      "read %zd bytes, mode %o", n, st.st_mode);
	struct stat rw, ro;
	CHECK(r, "ghost-twice-one-inode", fstat(G_TWICE_RW, &rw) == 0 && fstat(G_TWICE_RO, &ro) == 0 && rw.st_ino == ro.st_ino && rw.st_dev == ro.st_dev,
	      "inodes %lu and %lu", (unsigned long)rw.st_ino, (unsigned long)ro.st_ino);
	char two[8] = "";
	CHECK(r, "ghost-twice-positions", lseek(G_TWICE_RW, 0, SEEK_CUR) == 5 && lseek(G_TWICE_RO, 0, SEEK_CUR) == 3 &&
		      (fcntl(G_TWICE_RO, F_GETFL) & O_ACCMODE) == O_RDONLY,
	      "positions %ld and %ld", (long)lseek(G_TWICE_RW, 0, SEEK_CUR), (long)lseek(G_TWICE_RO, 0, SEEK_CUR));
	CHECK(r, "ghost-twice-shared-writes", pwrite(G_TWICE_RW, "TW", 2, 0) == 2 && pread(G_TWICE_RO, two, 5, 0) == 5 && !memcmp(two, "TWice", 5),
	      "read \"%s\" through the other description", two);
}

static void make_owned(const char *result)
{
	make_pipe(P_OWNED, 4096, 0);
	struct f_owner_ex own = {F_OWNER_PID, getpid()};
	/* The kernel records who set the owner: set it as euid 1000. */
	if (setresuid(0, 1000, 0) || fcntl(P_OWNED, F_SETOWN_EX, &own) || setresuid(0, 0, 0))
		die("F_SETOWN_EX");
	if (fcntl(P_OWNED, F_SETSIG, SIGRTMIN + 1) || fcntl(P_OWNED, F_SETFL, O_ASYNC))
		die("F_SETSIG");
	char path[4200];
	snprintf(path, sizeof path, "%s.fifo", result);
	unlink(path);
	if (mkfifo(path, 0600))
		die("mkfifo");
	place(open(path, O_RDONLY | O_NONBLOCK), F_OWNED);
	struct f_owner_ex tid = {F_OWNER_TID, (pid_t)syscall(SYS_gettid)};
	if (fcntl(F_OWNED, F_SETOWN_EX, &tid))
		die("F_SETOWN_EX tid");
}

static void check_owned(struct report *r)
{
	struct f_owner_ex own = {0};
	uint32_t uids[2] = {0};
	int ok = fcntl(P_OWNED, F_GETOWN_EX, &own) == 0 && fcntl(P_OWNED, F_GETOWNER_UIDS, uids) == 0;
	int owned = ok && own.type == F_OWNER_PID && own.pid == getpid() && uids[0] == 0 && uids[1] == 1000;
	CHECK(r, "fown-pid", owned, "type %d pid %d uids %u/%u", own.type, own.pid, uids[0], uids[1]);
	int sig = fcntl(P_OWNED, F_GETSIG) == SIGRTMIN + 1 && (fcntl(P_OWNED, F_GETFL) & O_ASYNC);
	CHECK(r, "fown-signal", sig, "sig %d flags %#x", fcntl(P_OWNED, F_GETSIG), fcntl(P_OWNED, F_GETFL));
	struct f_owner_ex tid = {0};
	CHECK(r, "fown-fifo-tid", fcntl(F_OWNED, F_GETOWN_EX, &tid) == 0 && tid.type == F_OWNER_TID && tid.pid == getpid(), "type %d pid %d",
	      tid.type, tid.pid);
	if (!owned || !sig) {
		CHECK(r, "fown-delivers", 0, "not tried: the owner is wrong");
		return;
	}
	/* It works: writing into the pipe signals us. */
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &rt, NULL);
	struct timespec patience = {30, 0};
	siginfo_t si = {0};
	int sent = write(P_OWNED + 1, "x", 1) == 1;
	int got = sigtimedwait(&rt, &si, &patience);
	CHECK(r, "fown-delivers", sent && got == SIGRTMIN + 1 && si.si_fd == P_OWNED, "write %d, signal %d fd %d", sent, got, si.si_fd);
}

/* Two pages of a file opened O_RDWR, mapped shared and read-only, the
 * second page made writable; the fd closed (zdtm maps_file_prot). */
static char *shared_map;

static void make_shared_map(const char *result)
{
	char path[4200];
	snprintf(path, sizeof path, "%s.map", result);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 2 * PAGE))
		die("the mapped file");
	shared_map = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (shared_map == MAP_FAILED || mprotect(shared_map + PAGE, PAGE, PROT_READ | PROT_WRITE))
		die("mapping the file");
	close(fd);
}

static void check_shared_map(struct report *r)
{
	shared_map[PAGE] = 1;
	CHECK(r, "map-file-mode", mprotect(shared_map, PAGE, PROT_READ | PROT_WRITE) == 0, "mprotect(PROT_WRITE) of the read-only part: %s",
	      strerror(errno));
}

static void setup(void)
{
	make_pipe(P_FULL, MiB, MiB);
	make_pipe(P_EMPTY, 256 << 10, 0);
	make_pipe(P_SMALL, 4096, 100);
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
	check_ghosts(r);
	check_owned(r);
	check_shared_map(r);
	char why[128] = "";
	CHECK(r, "pipe-1MiB-full", pipe_intact(P_FULL, MiB, MiB, why, sizeof why), "%s", why);
	CHECK(r, "pipe-256KiB-empty", pipe_intact(P_EMPTY, 256 << 10, 0, why, sizeof why), "%s", why);
	CHECK(r, "pipe-one-page", pipe_intact(P_SMALL, 4096, 100, why, sizeof why), "%s", why);
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
	make_ghosts(argv[1]);
	make_owned(argv[1]);
	make_shared_map(argv[1]);
	announce_ready("READY pid=%d\n", getpid());
	while (!go)
		sigsuspend(&empty);
	struct report r = {0};
	check(&r);
	if (finish_report(&r, argv[1]))
		die("writing the report");
	return report_status(&r);
}
