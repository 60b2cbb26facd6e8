/*
 * Test program for unix sockets across a checkpoint: a process (and one
 * child) holding unix sockets of every kind in known states, checking them
 * from the inside after a restore.
 *
 * Usage: unixsk DIR RESULT_FILE [ext=PATH] [scm] [scmsock]
 *
 * Phase 1 (in DIR, which must be short enough for socket paths):
 *   dgram    socketpair(SOCK_DGRAM): three datagrams queued one way, one
 *            the other way
 *   stream   socketpair(SOCK_STREAM): 100000 bytes queued one way, 3 the
 *            other way
 *   seqpk    socketpair(SOCK_SEQPACKET): three packets of different sizes
 *   lpath    stream listener bound to DIR/l.sock (backlog 5) with:
 *              a connection accepted (bytes queued both ways),
 *              a connection pending (connected, not accepted; the client
 *              wrote nothing)
 *   labs     stream listener on an abstract name, one connection accepted
 *   dsrv     datagram socket bound to DIR/d.sock, two datagrams queued from
 *            a client connected to it (the client is kept), then one from
 *            a sender bound to DIR/snd.sock (kept) and one from a sender
 *            bound to an abstract name (closed): recvfrom must name them
 *   opts     a stream pair end with SO_SNDBUF, SO_RCVBUF, SO_PASSCRED,
 *            SO_PASSSEC, SO_PEEK_OFF, SO_RCVLOWAT, SO_PRIORITY, SO_RCVTIMEO,
 *            SO_SNDTIMEO, SO_LINGER set, O_NONBLOCK, an F_SETOWN owner (the
 *            process) and F_SETSIG SIGRTMIN+2 (restored by the file
 *            framework once the tree exists)
 *   shut     stream pair, one end shut down for writing after 5 bytes
 *   child    a child holding one end of a stream pair, blocked in read()
 *   unbound  a plain unconnected datagram socket
 *   rel      a datagram socket bound to the relative name "r.sock" (in DIR)
 *   gone     a stream listener bound to DIR/gone.sock, its file removed,
 *            with an accepted connection carrying bytes
 *   ext      (with ext=PATH) a datagram socket connected to PATH, a socket
 *            outside the process; phase 2 sends "restored" through it
 *   scm      (with scm) descriptors in flight (SCM_RIGHTS): a datagram
 *            pair with a message carrying a pipe's read end (held by no
 *            one else) and a second one carrying a file the process keeps
 *            open too (at offset 3: the offset must stay shared) and an
 *            eventfd (counter 5); a stream pair with "abc", "d" carrying
 *            another pipe's read end, "ef" queued. Phase 2 receives them,
 *            reads the pipes, the eventfd and the shared offset
 *   scmsock  (with scmsock) a datagram pair with a unix socket in flight
 * then writes "READY pid=N child=C" and waits for SIGUSR1.
 *
 * Phase 2 (SIGUSR1): checks every queue (bytes, order, message boundaries),
 * names (getsockname/getpeername), states (SO_ACCEPTCONN, SO_TYPE), options
 * and flags, that the pending connection is accepted now, that a new
 * connection to each listener is accepted, that every pair still carries
 * data both ways, the shutdown half (EOF after the 5 bytes, EPIPE for the
 * shut end, the other way still open) and that the child answers. Writes
 * one line per check and "ALL OK" or "FAIL N check(s)" to RESULT_FILE,
 * removes its socket files and exits 0 or 10 + failures (99: set-up failed).
 */
#define _GNU_SOURCE
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "selfcheck.h"

#define BIG 100000
static uint8_t big[BIG];

static struct report R;
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

struct fds {
	int dg[2], st[2], sq[2];
	int lpath, lp_acc, lp_cli, lp_pending;
	int labs, la_acc, la_cli;
	int dsrv, dcli, dsnd;
	int opt[2];
	int sh[2];
	int ch; /* our end of the child's pair */
	int unb;
	int ext;
	int scm[2];
	int scms[2], scm_file;
	int scmu[2];
	int rel;
	int gone, gone_cli, gone_acc;
};
static struct fds F;
static char lpath_name[108], dsrv_name[108], abs_name[64], gone_name[108], snd_name[108], gsnd_name[64];
static socklen_t gsnd_len;
static socklen_t abs_len;

/* What phase 1 set on the options socket, as getsockopt reported it. */
static int o_snd, o_rcv, o_prio, o_lowat;
static pid_t child;

static void xsocketpair(int type, int sv[2])
{
	if (socketpair(AF_UNIX, type, 0, sv))
		die("socketpair");
}

static void xsend(int fd, const void *b, size_t n)
{
	if (send(fd, b, n, MSG_NOSIGNAL) != (ssize_t)n)
		die("send");
}

static int un_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
	return (int)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

static int abs_addr(struct sockaddr_un *a)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	memcpy(a->sun_path, abs_name, abs_len);
	return (int)(offsetof(struct sockaddr_un, sun_path) + abs_len);
}

static int listener(struct sockaddr_un *a, int len, int backlog)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || bind(s, (struct sockaddr *)a, len) || listen(s, backlog))
		die("listener");
	return s;
}

static int connect_to(struct sockaddr_un *a, int len, int type)
{
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || connect(s, (struct sockaddr *)a, len))
		die("connect");
	return s;
}

static const char *ext_path;
static int with_scm, with_scm_sock;

/* A stream listener bound to PATH (backlog BACKLOG), returned, with one
 * connection made (*CLI) and accepted (*ACC). */
/* Sends MSG on SK with the N descriptors FDS in flight. */
static void send_fds(int sk, const char *msg, const int *fds, int n)
{
	char c[CMSG_SPACE(4 * sizeof(int))];
	struct iovec iov = {(void *)msg, strlen(msg)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = CMSG_SPACE(n * sizeof(int))};
	struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(ch), fds, n * sizeof(int));
	if (sendmsg(sk, &mh, 0) != (ssize_t)strlen(msg))
		die("sendmsg SCM_RIGHTS");
}

/* Receives one message of at most LEN bytes from SK into BUF and up to 4
 * descriptors into FDS (-1 for those not received); returns its length. */
static ssize_t recv_fds(int sk, char *buf, size_t len, int fds[4])
{
	char c[CMSG_SPACE(4 * sizeof(int))];
	struct iovec iov = {buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
	for (int i = 0; i < 4; i++)
		fds[i] = -1;
	ssize_t n = recvmsg(sk, &mh, MSG_DONTWAIT);
	struct cmsghdr *ch = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (ch && ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS) {
		size_t k = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds, CMSG_DATA(ch), (k > 4 ? 4 : k) * sizeof(int));
	}
	return n;
}

/* A pipe holding TEXT whose write end is closed: its read end. */
static int pipe_with(const char *text)
{
	int p[2];
	if (pipe(p) || write(p[1], text, strlen(text)) != (ssize_t)strlen(text))
		die("pipe");
	close(p[1]);
	return p[0];
}

static int listen_with_one(const char *path, int backlog, int *cli, int *acc)
{
	struct sockaddr_un a;
	unlink(path);
	int len = un_addr(&a, path);
	int l = listener(&a, len, backlog);
	*cli = connect_to(&a, len, SOCK_STREAM);
	*acc = accept(l, NULL, NULL);
	if (*acc < 0)
		die("accept");
	return l;
}

static void setup(const char *dir)
{
	struct sockaddr_un a;
	int len;
	fill_bytes(big, BIG, 0x31);

	xsocketpair(SOCK_DGRAM, F.dg);
	xsend(F.dg[0], "first", 5);
	xsend(F.dg[0], "second datagram", 15);
	xsend(F.dg[0], "3", 1);
	xsend(F.dg[1], "back", 4);

	xsocketpair(SOCK_STREAM, F.st);
	xsend(F.st[0], big, BIG);
	xsend(F.st[1], "abc", 3);

	xsocketpair(SOCK_SEQPACKET, F.sq);
	xsend(F.sq[0], "p1", 2);
	xsend(F.sq[0], big, 3000);
	xsend(F.sq[0], "packet three", 12);

	snprintf(lpath_name, sizeof lpath_name, "%s/l.sock", dir);
	F.lpath = listen_with_one(lpath_name, 5, &F.lp_cli, &F.lp_acc);
	xsend(F.lp_cli, "to server", 9);
	xsend(F.lp_acc, "to client!", 10);
	len = un_addr(&a, lpath_name);
	F.lp_pending = connect_to(&a, len, SOCK_STREAM);

	abs_len = (socklen_t)(1 + snprintf(abs_name + 1, sizeof abs_name - 1, "criu-rs-unixsk-%d", getpid()));
	len = abs_addr(&a);
	F.labs = listener(&a, len, 3);
	F.la_cli = connect_to(&a, len, SOCK_STREAM);
	F.la_acc = accept(F.labs, NULL, NULL);
	if (F.la_acc < 0)
		die("accept abstract");
	xsend(F.la_cli, "hello abstract", 14);

	snprintf(dsrv_name, sizeof dsrv_name, "%s/d.sock", dir);
	unlink(dsrv_name);
	len = un_addr(&a, dsrv_name);
	F.dsrv = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (F.dsrv < 0 || bind(F.dsrv, (struct sockaddr *)&a, len))
		die("dgram server");
	F.dcli = connect_to(&a, len, SOCK_DGRAM);
	xsend(F.dcli, "log line 1", 10);
	xsend(F.dcli, "log line two", 12);
	snprintf(snd_name, sizeof snd_name, "%s/snd.sock", dir);
	unlink(snd_name);
	struct sockaddr_un b;
	int blen = un_addr(&b, snd_name);
	F.dsnd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (F.dsnd < 0 || bind(F.dsnd, (struct sockaddr *)&b, blen) ||
	    sendto(F.dsnd, "from snd", 8, 0, (struct sockaddr *)&a, len) != 8)
		die("bound sender");
	gsnd_len = (socklen_t)(1 + snprintf(gsnd_name + 1, sizeof gsnd_name - 1, "criu-rs-unixsk-gone-%d", getpid()));
	memset(&b, 0, sizeof b);
	b.sun_family = AF_UNIX;
	memcpy(b.sun_path, gsnd_name, gsnd_len);
	int g = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (g < 0 || bind(g, (struct sockaddr *)&b, (socklen_t)offsetof(struct sockaddr_un, sun_path) + gsnd_len) ||
	    sendto(g, "from gone", 9, 0, (struct sockaddr *)&a, len) != 9)
		die("closed sender");
	close(g);

	xsocketpair(SOCK_STREAM, F.opt);
	int v = 300000, one = 1;
	struct timeval rt = {3, 500000}, st = {7, 0};
	struct linger lg = {1, 9};
	v = 300000;
	setsockopt(F.opt[0], SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
	v = 120000;
	setsockopt(F.opt[0], SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	setsockopt(F.opt[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
	setsockopt(F.opt[0], SOL_SOCKET, SO_PASSSEC, &one, sizeof one);
	v = 0;
	setsockopt(F.opt[0], SOL_SOCKET, SO_PEEK_OFF, &v, sizeof v);
	v = 4;
	setsockopt(F.opt[0], SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
	v = 5;
	setsockopt(F.opt[0], SOL_SOCKET, SO_PRIORITY, &v, sizeof v);
	setsockopt(F.opt[0], SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt);
	setsockopt(F.opt[0], SOL_SOCKET, SO_SNDTIMEO, &st, sizeof st);
	setsockopt(F.opt[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	fcntl(F.opt[0], F_SETFL, O_NONBLOCK);
	fcntl(F.opt[0], F_SETOWN, getpid());
	fcntl(F.opt[0], F_SETSIG, SIGRTMIN + 2);
	socklen_t sl = sizeof(int);
	getsockopt(F.opt[0], SOL_SOCKET, SO_SNDBUF, &o_snd, &sl);
	getsockopt(F.opt[0], SOL_SOCKET, SO_RCVBUF, &o_rcv, &sl);
	getsockopt(F.opt[0], SOL_SOCKET, SO_PRIORITY, &o_prio, &sl);
	getsockopt(F.opt[0], SOL_SOCKET, SO_RCVLOWAT, &o_lowat, &sl);

	xsocketpair(SOCK_STREAM, F.sh);
	xsend(F.sh[0], "final", 5);
	if (shutdown(F.sh[0], SHUT_WR))
		die("shutdown");

	int cp[2];
	xsocketpair(SOCK_STREAM, cp);
	child = fork();
	if (child < 0)
		die("fork");
	if (!child) {
		/* Answers one "ping" with "pong", whenever it comes. */
		close(cp[0]);
		int null = open("/dev/null", O_RDWR);
		for (int i = 0; i < 3; i++)
			dup2(null, i);
		char b[8] = {0};
		ssize_t n = read(cp[1], b, 4);
		_exit(n == 4 && !memcmp(b, "ping", 4) && write(cp[1], "pong", 4) == 4 ? 0 : 1);
	}
	close(cp[1]);
	F.ch = cp[0];

	F.unb = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (F.unb < 0)
		die("socket");

	F.rel = socket(AF_UNIX, SOCK_DGRAM, 0);
	unlink("r.sock");
	len = un_addr(&a, "r.sock");
	if (F.rel < 0 || bind(F.rel, (struct sockaddr *)&a, len))
		die("bind r.sock");

	snprintf(gone_name, sizeof gone_name, "%s/gone.sock", dir);
	F.gone = listen_with_one(gone_name, 2, &F.gone_cli, &F.gone_acc);
	if (unlink(gone_name))
		die("unlink gone.sock");
	xsend(F.gone_cli, "to the gone one", 15);

	F.ext = -1;
	if (ext_path) {
		len = un_addr(&a, ext_path);
		F.ext = connect_to(&a, len, SOCK_DGRAM);
	}
	F.scm[0] = F.scm[1] = F.scms[0] = F.scms[1] = F.scm_file = -1;
	if (with_scm) {
		xsocketpair(SOCK_DGRAM, F.scm);
		int fd = pipe_with("through fd");
		send_fds(F.scm[0], "fd", &fd, 1);
		close(fd);
		F.scm_file = open("scm.file", O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (F.scm_file < 0 || write(F.scm_file, "0123456789", 10) != 10 || lseek(F.scm_file, 3, SEEK_SET) != 3)
			die("scm.file");
		int two[2] = {F.scm_file, eventfd(5, 0)};
		send_fds(F.scm[0], "f2", two, 2);
		close(two[1]);
		xsocketpair(SOCK_STREAM, F.scms);
		xsend(F.scms[0], "abc", 3);
		fd = pipe_with("by stream");
		send_fds(F.scms[0], "d", &fd, 1);
		close(fd);
		xsend(F.scms[0], "ef", 2);
	}
	F.scmu[0] = F.scmu[1] = -1;
	if (with_scm_sock) {
		int q[2];
		xsocketpair(SOCK_DGRAM, F.scmu);
		xsocketpair(SOCK_DGRAM, q);
		send_fds(F.scmu[0], "s", q, 1);
		close(q[0]);
		close(q[1]);
	}
}

/* ---------- phase 2 ---------- */

/* The directory part of PATH (a static copy). */
static const char *dirname_of(const char *path)
{
	static char d[108];
	snprintf(d, sizeof d, "%s", path);
	char *slash = strrchr(d, '/');
	if (slash)
		*slash = 0;
	return d;
}

/* Receives one message (datagram/packet) and compares it with WANT. */
static void check_msg(const char *name, int fd, const void *want, size_t n)
{
	static uint8_t buf[1 << 17];
	ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	CHECK(&R, name, got == (ssize_t)n && !memcmp(buf, want, n), "got %zd bytes (%.*s), want %zu", got,
	      got > 0 && got < 40 ? (int)got : 0, buf, n);
}

/* Receives one datagram and checks its bytes and its sender's name. */
static void check_from(const char *name, int fd, const void *want, size_t n, const void *from, socklen_t from_len)
{
	char buf[256];
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	memset(&a, 0, sizeof a);
	ssize_t got = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&a, &l);
	socklen_t alen = l > offsetof(struct sockaddr_un, sun_path) ? l - (socklen_t)offsetof(struct sockaddr_un, sun_path) : 0;
	CHECK(&R, name, got == (ssize_t)n && !memcmp(buf, want, n) && alen == from_len && !memcmp(a.sun_path, from, from_len),
	      "got %zd bytes from a name of %u bytes (%.*s), want %zu from %u bytes", got, alen, (int)alen,
	      a.sun_path[0] ? a.sun_path : a.sun_path + 1, n, from_len);
}

/* Reads exactly N bytes of a stream and compares them with WANT. */
static void check_bytes(const char *name, int fd, const void *want, size_t n)
{
	static uint8_t buf[BIG];
	size_t have = 0;
	while (have < n) {
		ssize_t k = recv(fd, buf + have, n - have, MSG_DONTWAIT);
		if (k <= 0)
			break;
		have += (size_t)k;
	}
	CHECK(&R, name, have == n && !memcmp(buf, want, n), "got %zu of %zu bytes (%s)", have, n,
	      have == n ? "different" : "short");
}

static void check_empty(const char *name, int fd)
{
	char b;
	ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
	CHECK(&R, name, n < 0 && errno == EAGAIN, "recv gave %zd (%s)", n, n < 0 ? strerror(errno) : "data");
}

/* A message each way still goes through. */
static void check_pair_alive(const char *name, int a, int b)
{
	char n1[64], n2[64];
	snprintf(n1, sizeof n1, "%s-a-to-b", name);
	snprintf(n2, sizeof n2, "%s-b-to-a", name);
	xsend(a, "new1", 4);
	check_msg(n1, b, "new1", 4);
	xsend(b, "new22", 5);
	check_msg(n2, a, "new22", 5);
}

static int sock_int(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof v;
	getsockopt(fd, SOL_SOCKET, opt, &v, &l);
	return v;
}

static void check_name(const char *name, int fd, int peer, const void *want, socklen_t len)
{
	struct sockaddr_un a;
	socklen_t l = sizeof a;
	int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l);
	socklen_t n = l - (socklen_t)offsetof(struct sockaddr_un, sun_path);
	CHECK(&R, name, !r && n == len && !memcmp(a.sun_path, want, len), "r=%d len %u want %u (%.*s)", r, n, len,
	      (int)n, a.sun_path[0] ? a.sun_path : a.sun_path + 1);
}

static void check_listener(const char *name, int l, struct sockaddr_un *a, int len)
{
	char n[64];
	snprintf(n, sizeof n, "%s-listening", name);
	CHECK(&R, n, sock_int(l, SO_ACCEPTCONN) == 1, "SO_ACCEPTCONN %d", sock_int(l, SO_ACCEPTCONN));
	int c = connect_to(a, len, SOCK_STREAM);
	int s = accept(l, NULL, NULL);
	snprintf(n, sizeof n, "%s-new-connection", name);
	CHECK(&R, n, s >= 0, "accept: %s", strerror(errno));
	if (s >= 0) {
		snprintf(n, sizeof n, "%s-new", name);
		check_pair_alive(n, c, s);
		close(s);
	}
	close(c);
}

static void check_all(void)
{
	struct sockaddr_un a;
	int len;

	check_msg("dgram-1", F.dg[1], "first", 5);
	check_msg("dgram-2", F.dg[1], "second datagram", 15);
	check_msg("dgram-3", F.dg[1], "3", 1);
	check_empty("dgram-drained", F.dg[1]);
	check_msg("dgram-back", F.dg[0], "back", 4);
	CHECK(&R, "dgram-type", sock_int(F.dg[0], SO_TYPE) == SOCK_DGRAM, "SO_TYPE %d", sock_int(F.dg[0], SO_TYPE));
	check_pair_alive("dgram", F.dg[0], F.dg[1]);

	check_bytes("stream-queue", F.st[1], big, BIG);
	check_empty("stream-drained", F.st[1]);
	check_bytes("stream-back", F.st[0], "abc", 3);
	check_pair_alive("stream", F.st[0], F.st[1]);

	check_msg("seqpacket-1", F.sq[1], "p1", 2);
	check_msg("seqpacket-2", F.sq[1], big, 3000);
	check_msg("seqpacket-3", F.sq[1], "packet three", 12);
	CHECK(&R, "seqpacket-type", sock_int(F.sq[0], SO_TYPE) == SOCK_SEQPACKET, "SO_TYPE %d", sock_int(F.sq[0], SO_TYPE));
	check_pair_alive("seqpacket", F.sq[0], F.sq[1]);

	len = un_addr(&a, lpath_name);
	struct stat st;
	CHECK(&R, "lpath-file", !stat(lpath_name, &st) && S_ISSOCK(st.st_mode), "%s: %s", lpath_name, strerror(errno));
	check_bytes("lpath-accepted-queue", F.lp_acc, "to server", 9);
	check_bytes("lpath-client-queue", F.lp_cli, "to client!", 10);
	check_pair_alive("lpath-accepted", F.lp_cli, F.lp_acc);
	check_name("lpath-accepted-name", F.lp_acc, 0, lpath_name, (socklen_t)strlen(lpath_name) + 1);
	check_name("lpath-client-peername", F.lp_cli, 1, lpath_name, (socklen_t)strlen(lpath_name) + 1);
	int p = accept(F.lpath, NULL, NULL);
	CHECK(&R, "lpath-pending-accepted", p >= 0, "accept: %s", strerror(errno));
	if (p >= 0) {
		check_pair_alive("lpath-pending", F.lp_pending, p);
		close(p);
	}
	check_listener("lpath", F.lpath, &a, len);

	len = abs_addr(&a);
	check_bytes("labs-accepted-queue", F.la_acc, "hello abstract", 14);
	check_pair_alive("labs-accepted", F.la_cli, F.la_acc);
	check_name("labs-name", F.labs, 0, abs_name, abs_len);
	check_listener("labs", F.labs, &a, len);

	check_msg("dsrv-1", F.dsrv, "log line 1", 10);
	check_msg("dsrv-2", F.dsrv, "log line two", 12);
	check_from("dsrv-3-sender", F.dsrv, "from snd", 8, snd_name, (socklen_t)strlen(snd_name) + 1);
	check_from("dsrv-4-sender", F.dsrv, "from gone", 9, gsnd_name, gsnd_len);
	check_empty("dsrv-drained", F.dsrv);
	xsend(F.dcli, "after", 5);
	check_msg("dsrv-client-still-connected", F.dsrv, "after", 5);
	check_name("dsrv-name", F.dsrv, 0, dsrv_name, (socklen_t)strlen(dsrv_name) + 1);

	CHECK(&R, "opt-sndbuf", sock_int(F.opt[0], SO_SNDBUF) == o_snd, "%d, want %d", sock_int(F.opt[0], SO_SNDBUF), o_snd);
	CHECK(&R, "opt-rcvbuf", sock_int(F.opt[0], SO_RCVBUF) == o_rcv, "%d, want %d", sock_int(F.opt[0], SO_RCVBUF), o_rcv);
	CHECK(&R, "opt-passcred", sock_int(F.opt[0], SO_PASSCRED) == 1, "%d", sock_int(F.opt[0], SO_PASSCRED));
	CHECK(&R, "opt-passsec", sock_int(F.opt[0], SO_PASSSEC) == 1, "%d", sock_int(F.opt[0], SO_PASSSEC));
	CHECK(&R, "opt-peek-off", sock_int(F.opt[0], SO_PEEK_OFF) == 0, "%d", sock_int(F.opt[0], SO_PEEK_OFF));
	CHECK(&R, "opt-peek-off-default", sock_int(F.opt[1], SO_PEEK_OFF) == -1, "%d", sock_int(F.opt[1], SO_PEEK_OFF));
	CHECK(&R, "opt-priority", sock_int(F.opt[0], SO_PRIORITY) == o_prio, "%d", sock_int(F.opt[0], SO_PRIORITY));
	CHECK(&R, "opt-rcvlowat", sock_int(F.opt[0], SO_RCVLOWAT) == o_lowat, "%d", sock_int(F.opt[0], SO_RCVLOWAT));
	struct timeval tv = {0, 0};
	socklen_t tl = sizeof tv;
	getsockopt(F.opt[0], SOL_SOCKET, SO_RCVTIMEO, &tv, &tl);
	CHECK(&R, "opt-rcvtimeo", tv.tv_sec == 3 && tv.tv_usec == 500000, "%ld.%06ld", tv.tv_sec, tv.tv_usec);
	getsockopt(F.opt[0], SOL_SOCKET, SO_SNDTIMEO, &tv, &tl);
	CHECK(&R, "opt-sndtimeo", tv.tv_sec == 7 && tv.tv_usec == 0, "%ld.%06ld", tv.tv_sec, tv.tv_usec);
	struct linger lg = {0, 0};
	socklen_t ll = sizeof lg;
	getsockopt(F.opt[0], SOL_SOCKET, SO_LINGER, &lg, &ll);
	CHECK(&R, "opt-linger", lg.l_onoff && lg.l_linger == 9, "%d %d", lg.l_onoff, lg.l_linger);
	CHECK(&R, "opt-nonblock", fcntl(F.opt[0], F_GETFL) & O_NONBLOCK, "flags %#x", fcntl(F.opt[0], F_GETFL));
	CHECK(&R, "opt-owner", fcntl(F.opt[0], F_GETOWN) == getpid(), "owner %d, want %d", fcntl(F.opt[0], F_GETOWN), getpid());
	CHECK(&R, "opt-owner-sig", fcntl(F.opt[0], F_GETSIG) == SIGRTMIN + 2, "sig %d", fcntl(F.opt[0], F_GETSIG));
	CHECK(&R, "opt-peer-plain", sock_int(F.opt[1], SO_PASSCRED) == 0 && !(fcntl(F.opt[1], F_GETFL) & O_NONBLOCK),
	      "the other end has passcred %d flags %#x", sock_int(F.opt[1], SO_PASSCRED), fcntl(F.opt[1], F_GETFL));

	check_bytes("shut-data", F.sh[1], "final", 5);
	char b;
	ssize_t n = recv(F.sh[1], &b, 1, MSG_DONTWAIT);
	CHECK(&R, "shut-eof", n == 0, "recv after the data gave %zd (%s)", n, n < 0 ? strerror(errno) : "data");
	n = send(F.sh[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	CHECK(&R, "shut-epipe", n < 0 && errno == EPIPE, "send on the shut end gave %zd (%s)", n, n < 0 ? strerror(errno) : "sent");
	xsend(F.sh[1], "other way", 9);
	check_bytes("shut-other-way", F.sh[0], "other way", 9);

	xsend(F.ch, "ping", 4);
	char pong[4] = {0};
	struct timeval limit = {60, 0};
	setsockopt(F.ch, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
	n = recv(F.ch, pong, 4, MSG_WAITALL);
	CHECK(&R, "child-pong", n == 4 && !memcmp(pong, "pong", 4), "recv gave %zd", n);
	int status = -1;
	waitpid(child, &status, 0);
	CHECK(&R, "child-exit", WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);

	CHECK(&R, "unbound", sock_int(F.unb, SO_TYPE) == SOCK_DGRAM, "SO_TYPE %d", sock_int(F.unb, SO_TYPE));

	char rel_path[200];
	snprintf(rel_path, sizeof rel_path, "%s/r.sock", lpath_name[0] ? dirname_of(lpath_name) : ".");
	len = un_addr(&a, rel_path);
	n = sendto(F.unb, "to rel", 6, MSG_NOSIGNAL, (struct sockaddr *)&a, len);
	CHECK(&R, "rel-reachable", n == 6, "sendto %s: %s", rel_path, n < 0 ? strerror(errno) : "short");
	check_msg("rel-received", F.rel, "to rel", 6);
	check_name("rel-name", F.rel, 0, "r.sock", 7);

	check_bytes("gone-queue", F.gone_acc, "to the gone one", 15);
	check_pair_alive("gone-accepted", F.gone_cli, F.gone_acc);
	check_name("gone-name", F.gone, 0, gone_name, (socklen_t)strlen(gone_name) + 1);
	CHECK(&R, "gone-file-still-gone", access(gone_name, F_OK) && errno == ENOENT, "%s exists", gone_name);

	if (F.ext >= 0) {
		n = send(F.ext, "restored", 8, MSG_NOSIGNAL);
		CHECK(&R, "ext-send", n == 8, "send to %s gave %zd (%s)", ext_path, n, n < 0 ? strerror(errno) : "short");
	}
	if (F.scm[1] >= 0) {
		char c[CMSG_SPACE(sizeof(int))], b2[4];
		struct iovec iov = {b2, sizeof b2};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof c};
		n = recvmsg(F.scm[1], &mh, MSG_DONTWAIT);
		struct cmsghdr *ch = n == 2 ? CMSG_FIRSTHDR(&mh) : NULL;
		int got = -1;
		if (ch && ch->cmsg_type == SCM_RIGHTS)
			memcpy(&got, CMSG_DATA(ch), sizeof got);
		char through[16] = {0};
		CHECK(&R, "scm-rights", got >= 0 && read(got, through, 10) == 10 && !memcmp(through, "through fd", 10),
		      "recvmsg gave %zd, fd %d", n, got);
		int fds[4];
		char buf[16] = {0};
		n = recv_fds(F.scm[1], buf, sizeof buf, fds);
		CHECK(&R, "scm-two", n == 2 && !memcmp(buf, "f2", 2) && fds[0] >= 0 && fds[1] >= 0 && fds[2] < 0,
		      "recvmsg gave %zd '%.*s', fds %d %d %d", n, (int)(n > 0 ? n : 0), buf, fds[0], fds[1], fds[2]);
		off_t at = fds[0] >= 0 ? lseek(fds[0], 0, SEEK_CUR) : -1;
		off_t moved = fds[0] >= 0 && lseek(fds[0], 7, SEEK_SET) == 7 ? lseek(F.scm_file, 0, SEEK_CUR) : -1;
		CHECK(&R, "scm-shared-offset", at == 3 && moved == 7, "offset %lld in flight, %lld kept after a seek to 7", (long long)at, (long long)moved);
		uint64_t v = 0;
		CHECK(&R, "scm-eventfd", fds[1] >= 0 && read(fds[1], &v, 8) == 8 && v == 5, "eventfd read %llu", (unsigned long long)v);
		n = recv_fds(F.scms[1], buf, sizeof buf, fds);
		memset(through, 0, sizeof through);
		CHECK(&R, "scm-stream", n == 4 && !memcmp(buf, "abcd", 4) && fds[0] >= 0 && read(fds[0], through, 9) == 9 && !memcmp(through, "by stream", 9),
		      "recvmsg gave %zd '%.*s', fd %d", n, (int)(n > 0 ? n : 0), buf, fds[0]);
		n = recv_fds(F.scms[1], buf, sizeof buf, fds);
		CHECK(&R, "scm-stream-after", n == 2 && !memcmp(buf, "ef", 2) && fds[0] < 0, "recvmsg gave %zd, fd %d", n, fds[0]);
		unlink("scm.file");
	}
	if (F.scmu[1] >= 0) {
		int fds[4];
		char buf[4];
		n = recv_fds(F.scmu[1], buf, sizeof buf, fds);
		CHECK(&R, "scm-socket", n == 1 && fds[0] >= 0, "recvmsg gave %zd, fd %d", n, fds[0]);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3 || chdir(argv[1]))
		return 99;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "ext=", 4))
			ext_path = argv[i] + 4;
		else if (!strcmp(argv[i], "scm"))
			with_scm = 1;
		else if (!strcmp(argv[i], "scmsock"))
			with_scm_sock = 1;
		else
			return 99;
	}
	if (setsid() < 0 && getpgrp() != getpid())
		return 99;
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	signal(SIGUSR1, on_usr1);
	setup(argv[1]);
	announce_ready("READY pid=%d child=%d\n", getpid(), child);
	while (!go)
		sigsuspend(&old);
	check_all();
	unlink(lpath_name);
	unlink(dsrv_name);
	unlink("r.sock");
	unlink(snd_name);
	if (finish_report(&R, argv[2]))
		return 98;
	return report_status(&R);
}
