/*
 * Test program for established TCP connections (dump --tcp-established):
 * two processes of the tree connected over loopback, IPv4 and IPv6, with
 * bytes in flight both ways, and a connection to a peer outside the tree.
 *
 * Usage: tcp_conn DIR RESULT_FILE OUTSIDE_PORT
 *
 *   R  root (its own session): listens on 127.0.0.1 and ::1, accepts A's
 *      two connections, connects to 127.0.0.1:OUTSIDE_PORT (the test).
 *   +- A  child: connects to R's two listeners.
 *
 * Before the checkpoint:
 *   - on the IPv4 connection R writes a pattern stream until A's small
 *     receive window and R's send buffer are full (bytes unread at A, bytes
 *     unacknowledged and never sent at R); A writes "A4 before";
 *   - on the IPv6 connection each side writes "<X>6 before" (unread);
 *   - to the outside peer R writes "hello from R" (the test reads it), and
 *     the test writes "to R before" (unread; the test may send part of it
 *     while the tree is down, against the network lock).
 *   - on a second IPv4 connection, half closed, A writes "A half before"
 *     and shuts down for writing (A in FIN_WAIT2, R in CLOSE_WAIT), R
 *     writes "R half before" (unread at A);
 *   TCP_NODELAY and SO_KEEPALIVE are set on R's IPv4 end.
 * R prints "READY pid=R a=A stream=N" once all of that is done.
 *
 * Phase 2 (SIGUSR1 to R, passed on to A): each side checks its addresses,
 * reads what was queued (the whole pattern stream at A, in order), writes
 * "<X> after" on both connections and reads the other's; R reads "to R
 * before" from the outside peer, writes "R after restore" and reads "test
 * after restore". On the half-closed connection R reads "A half before"
 * then EOF, writes "R half after" and shuts down; A reads "R half
 * before", "R half after", then EOF, and cannot write. A writes "result-A"; R collects it and writes
 * RESULT_FILE ("ALL OK" or "FAIL N check(s)").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "selfcheck.h"

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

struct shared {
	atomic_int ready;
	long stream; /* bytes R wrote on the IPv4 connection */
};

static uint8_t pat(long i) { return (uint8_t)(i % 251); }

static int set_int(int fd, int level, int name, int v) { return setsockopt(fd, level, name, &v, sizeof v); }
static int get_int(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	getsockopt(fd, level, name, &v, &l);
	return v;
}

/* Reads exactly N bytes within 30 s (the fd is blocking). */
static int read_all(int fd, void *buf, size_t n)
{
	struct timeval tv = {30, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = write(fd, (const char *)buf + done, n - done);
		if (r <= 0)
			return -1;
		done += (size_t)r;
	}
	return 0;
}

/* Checks that FD is at EOF (the peer's FIN is next). */
static void expect_eof(struct report *R, const char *name, int fd)
{
	char c;
	ssize_t r = read(fd, &c, 1);
	CHECK(R, name, r == 0, "read returned %zd (%s), want EOF", r, r < 0 ? strerror(errno) : "data");
}

/* Checks that FD reads exactly the string S next. */
static void expect(struct report *R, const char *name, int fd, const char *s)
{
	char buf[256] = {0};
	size_t n = strlen(s);
	int r = read_all(fd, buf, n);
	CHECK(R, name, r == 0 && memcmp(buf, s, n) == 0, "read %d: got \"%.*s\", want \"%s\"", r, (int)n, buf, s);
}

static void addrs_same(struct report *R, const char *name, int fd, const struct sockaddr_storage *self, const struct sockaddr_storage *peer)
{
	struct sockaddr_storage a, b;
	socklen_t la = sizeof a, lb = sizeof b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	int r1 = getsockname(fd, (struct sockaddr *)&a, &la);
	int r2 = getpeername(fd, (struct sockaddr *)&b, &lb);
	CHECK(R, name, r1 == 0 && r2 == 0 && memcmp(&a, self, la) == 0 && memcmp(&b, peer, lb) == 0, "addresses changed (%d %d)", r1, r2);
}

static void names(int fd, struct sockaddr_storage *self, struct sockaddr_storage *peer)
{
	socklen_t l = sizeof *self;
	memset(self, 0, sizeof *self);
	memset(peer, 0, sizeof *peer);
	getsockname(fd, (struct sockaddr *)self, &l);
	l = sizeof *peer;
	getpeername(fd, (struct sockaddr *)peer, &l);
}

static void wait_go(void)
{
	suspend_until(SIGUSR1, &go);
}

static int listener(int family, struct sockaddr_storage *addr)
{
	int l = socket(family, SOCK_STREAM, 0);
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	memset(addr, 0, sizeof *addr);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)addr;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)addr;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	}
	if (l < 0 || bind(l, (struct sockaddr *)addr, len) || listen(l, 4) || getsockname(l, (struct sockaddr *)addr, &len))
		die("listener");
	return l;
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof ti;
	memset(&ti, 0, sizeof ti);
	getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l);
	return ti.tcpi_state;
}

/* Waits (30 s at most) until FD is in TCP state ST. */
static int wait_tcp_state(int fd, int st)
{
	for (int i = 0; i < 3000; i++) {
		if (tcp_state(fd) == st)
			return 0;
		sys_sleep_ms(10);
	}
	return -1;
}

static void run_a(struct shared *sh, const struct sockaddr_storage *l4, const struct sockaddr_storage *l6)
{
	struct report rep = {0}, *R = &rep;
	/* Nothing outside the tree after a restore (R does the same when it
	 * announces itself): the test's stdio may be a growing log file. */
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		die("A: /dev/null");
	close(null);
	int c4 = socket(AF_INET, SOCK_STREAM, 0), c6 = socket(AF_INET6, SOCK_STREAM, 0);
	set_int(c4, SOL_SOCKET, SO_RCVBUF, 4096);
	if (c4 < 0 || c6 < 0 || connect(c4, (const struct sockaddr *)l4, sizeof(struct sockaddr_in)) ||
	    connect(c6, (const struct sockaddr *)l6, sizeof(struct sockaddr_in6)))
		die("A connect");
	if (write_all(c4, "A4 before", 9) || write_all(c6, "A6 before", 9))
		die("A write");
	int ch = socket(AF_INET, SOCK_STREAM, 0);
	if (ch < 0 || connect(ch, (const struct sockaddr *)l4, sizeof(struct sockaddr_in)) || write_all(ch, "A half before", 13) ||
	    shutdown(ch, SHUT_WR) || wait_tcp_state(ch, TCP_FIN_WAIT2))
		die("A half-closed connection");
	struct sockaddr_storage s4, p4, s6, p6;
	names(c4, &s4, &p4);
	names(c6, &s6, &p6);
	atomic_fetch_add(&sh->ready, 1);
	wait_go();

	addrs_same(R, "a4-addresses", c4, &s4, &p4);
	addrs_same(R, "a6-addresses", c6, &s6, &p6);
	expect(R, "a6-queued", c6, "R6 before");
	/* The whole stream, in order. */
	long n = sh->stream, bad = -1;
	uint8_t *buf = malloc((size_t)n);
	int r = buf ? read_all(c4, buf, (size_t)n) : -1;
	for (long i = 0; r == 0 && i < n; i++)
		if (buf[i] != pat(i)) {
			bad = i;
			break;
		}
	CHECK(R, "a4-stream", r == 0 && bad < 0, "read %d of %ld bytes, first bad byte at %ld", r, n, bad);
	free(buf);
	write_all(c4, "A after", 7);
	write_all(c6, "A after", 7);
	expect(R, "a4-after", c4, "R after");
	expect(R, "a6-after", c6, "R after");
	/* FIN_WAIT2 until R's FIN comes, then closed (TIME_WAIT is another socket). */
	int hs = tcp_state(ch);
	CHECK(R, "a-half-state", hs == TCP_FIN_WAIT2 || hs == TCP_CLOSE, "state %d, want FIN_WAIT2", hs);
	expect(R, "a-half-queued", ch, "R half before");
	expect(R, "a-half-after", ch, "R half after");
	expect_eof(R, "a-half-eof", ch);
	CHECK(R, "a-half-shut", send(ch, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "writing after shutdown(SHUT_WR): %s", strerror(errno));
	finish_report(R, "result-A");
	exit(report_status(R));
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	if (chdir(argv[1]))
		die("chdir");
	const char *result = argv[2];
	int outside_port = atoi(argv[3]);
	setsid();
	handle_blocked(SIGUSR1, on_usr1);
	struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	struct sockaddr_storage la4, la6;
	int l4 = listener(AF_INET, &la4), l6 = listener(AF_INET6, &la6);
	pid_t a = fork();
	if (a < 0)
		die("fork");
	if (a == 0) {
		close(l4);
		close(l6);
		run_a(sh, &la4, &la6);
	}
	int s4 = accept(l4, NULL, NULL), s6 = accept(l6, NULL, NULL), sh4 = accept(l4, NULL, NULL);
	if (s4 < 0 || s6 < 0 || sh4 < 0)
		die("accept");
	if (wait_tcp_state(sh4, TCP_CLOSE_WAIT) || write_all(sh4, "R half before", 13))
		die("R half-closed connection");
	close(l4);
	close(l6);
	set_int(s4, IPPROTO_TCP, TCP_NODELAY, 1);
	set_int(s4, SOL_SOCKET, SO_KEEPALIVE, 1);

	/* Outside peer. */
	int o = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in oa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)outside_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (o < 0 || connect(o, (struct sockaddr *)&oa, sizeof oa) || write_all(o, "hello from R", 12))
		die("outside");

	if (write_all(s6, "R6 before", 9))
		die("R write");
	/* Fill A's window and R's send buffer. */
	set_int(s4, SOL_SOCKET, SO_SNDBUF, 65536);
	int fl = fcntl(s4, F_GETFL);
	fcntl(s4, F_SETFL, fl | O_NONBLOCK);
	uint8_t block[1024 + 251];
	for (int i = 0; i < (int)sizeof block; i++)
		block[i] = pat(i);
	long total = 0;
	for (int idle = 0; idle < 20;) {
		ssize_t w = write(s4, block + total % 251, 1024);
		if (w > 0) {
			total += w;
			idle = 0;
		} else if (errno == EAGAIN) {
			idle++;
			sys_sleep_ms(10);
		} else {
			die("stream");
		}
	}
	fcntl(s4, F_SETFL, fl);
	sh->stream = total;
	wait_count(&sh->ready, 1);
	struct sockaddr_storage n4s, n4p, n6s, n6p, nos, nop;
	names(s4, &n4s, &n4p);
	names(s6, &n6s, &n6p);
	names(o, &nos, &nop);
	announce_ready("READY pid=%d a=%d stream=%ld\n", getpid(), a, total);
	wait_go();

	kill(a, SIGUSR1);
	struct report rep = {0}, *R = &rep;
	addrs_same(R, "r4-addresses", s4, &n4s, &n4p);
	addrs_same(R, "r6-addresses", s6, &n6s, &n6p);
	addrs_same(R, "outside-addresses", o, &nos, &nop);
	CHECK(R, "r4-nodelay", get_int(s4, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY lost");
	CHECK(R, "r4-keepalive", get_int(s4, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE lost");
	expect(R, "r4-queued", s4, "A4 before");
	expect(R, "r6-queued", s6, "A6 before");
	write_all(s4, "R after", 7);
	write_all(s6, "R after", 7);
	expect(R, "r4-after", s4, "A after");
	expect(R, "r6-after", s6, "A after");
	CHECK(R, "r-half-state", tcp_state(sh4) == TCP_CLOSE_WAIT, "state %d, want CLOSE_WAIT", tcp_state(sh4));
	expect(R, "r-half-queued", sh4, "A half before");
	expect_eof(R, "r-half-eof", sh4);
	CHECK(R, "r-half-after", write_all(sh4, "R half after", 12) == 0 && shutdown(sh4, SHUT_WR) == 0, "write/shutdown: %s", strerror(errno));
	expect(R, "outside-queued", o, "to R before");
	CHECK(R, "outside-write", write_all(o, "R after restore", 15) == 0, "write: %s", strerror(errno));
	expect(R, "outside-after", o, "test after restore");
	int st = 0;
	CHECK(R, "a-exit", waitpid(a, &st, 0) == a && WIFEXITED(st) && WEXITSTATUS(st) == 0, "A: status %#x", st);
	collect_report(R, 'A');
	finish_report(R, result);
	return report_status(R);
}
