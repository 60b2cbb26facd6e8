/*
 * Test program for internet and netlink sockets that are not connections:
 * listeners, bound and unbound sockets, UDP, netlink, each with options.
 *
 * Usage: inet_socks DIR RESULT_FILE
 *
 *   l4   TCP listener on 127.0.0.1, backlog 7, SO_REUSEADDR, SO_KEEPALIVE,
 *        TCP_NODELAY, TCP_KEEPIDLE 77, SO_RCVBUF, SO_SNDTIMEO 3.5 s,
 *        SO_LINGER 5 s, IP_TOS 0x10
 *   l6   TCP listener on ::1, IPV6_V6ONLY, SO_REUSEPORT, backlog 3
 *   lm   TCP listener on ::ffff:127.0.0.1 (v4-mapped, V6ONLY off)
 *   b4   TCP socket bound to 127.0.0.1 (not listening), IP_FREEBIND
 *   t0   TCP socket neither bound nor connected, TCP_NODELAY
 *   u4   UDP bound to 127.0.0.1, SO_BROADCAST, IP_TTL 33, SO_RCVTIMEO
 *   uc   UDP bound to 127.0.0.1 and connected to u4, SO_BINDTODEVICE lo
 *   u6   UDP bound to ::1, shut down for reading
 *   nl   NETLINK_ROUTE bound (kernel-chosen port id) to RTNLGRP_LINK
 *   pk   AF_PACKET SOCK_DGRAM (ETH_P_ALL) bound to lo, PACKET_AUXDATA
 *
 * Prints "READY pid=P l4=PORT l6=PORT lm=PORT u4=PORT" once set up.
 *
 * Phase 2 (SIGUSR1): every socket is checked for its address, state and
 * options; each listener accepts a new connection made from inside (lm from
 * an IPv4 client), t0 connects to l4 and writes; uc sends a datagram that u4 receives from uc's address,
 * and u4 answers it; nl asks the kernel for the links and gets the answer.
 * Writes RESULT_FILE ("ALL OK" or "FAIL N check(s)").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include "selfcheck.h"

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static int get_int(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof v;
	if (getsockopt(fd, level, name, &v, &l))
		return -2;
	return v;
}

static void set_int(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof v))
		die("setsockopt");
}

/* Fills SS with ADDR:PORT of FAMILY; returns its length. */
static socklen_t sockaddr_of(struct sockaddr_storage *ss, int family, const char *addr, int port)
{
	memset(ss, 0, sizeof *ss);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, addr, &a->sin_addr);
		return sizeof *a;
	}
	struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
	a->sin6_family = AF_INET6;
	a->sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, addr, &a->sin6_addr);
	return sizeof *a;
}

static int sock_bound(int family, int type, const char *addr, int port)
{
	int s = socket(family, type, 0);
	if (s < 0)
		die("socket");
	if (!addr)
		return s;
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(&ss, family, addr, port);
	if (bind(s, (struct sockaddr *)&ss, len))
		die("bind");
	return s;
}

static int port_of(int s)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	if (getsockname(s, (struct sockaddr *)&ss, &l))
		return -1;
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);
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

static void same_names(struct report *R, const char *name, int fd, const struct sockaddr_storage *self, const struct sockaddr_storage *peer)
{
	struct sockaddr_storage a, b;
	names(fd, &a, &b);
	CHECK(R, name, memcmp(&a, self, sizeof a) == 0 && memcmp(&b, peer, sizeof b) == 0, "address or peer changed");
}

/* Connects a new client of FAMILY to ADDR:PORT and accepts it on L. */
static void accepts(struct report *R, const char *name, int l, int family, const char *addr, int port)
{
	int c = sock_bound(family, SOCK_STREAM, NULL, 0);
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(&ss, family, addr, port);
	int r = connect(c, (struct sockaddr *)&ss, len);
	struct pollfd p = {.fd = l, .events = POLLIN};
	int ready = r == 0 ? poll(&p, 1, 30000) : -1;
	int a = ready == 1 ? accept(l, NULL, NULL) : -1;
	int ok = a >= 0 && write(c, "hi", 2) == 2;
	char buf[2] = {0};
	ok = ok && read(a, buf, 2) == 2 && memcmp(buf, "hi", 2) == 0;
	CHECK(R, name, ok, "connect %d poll %d accept %d: %s", r, ready, a, strerror(errno));
	close(c);
	if (a >= 0)
		close(a);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	if (chdir(argv[1]))
		die("chdir");
	const char *result = argv[2];
	setsid();
	handle_blocked(SIGUSR1, on_usr1);

	int l4 = socket(AF_INET, SOCK_STREAM, 0);
	set_int(l4, SOL_SOCKET, SO_REUSEADDR, 1);
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(l4, (struct sockaddr *)&a4, sizeof a4) || listen(l4, 7))
		die("l4");
	set_int(l4, SOL_SOCKET, SO_KEEPALIVE, 1);
	set_int(l4, IPPROTO_TCP, TCP_NODELAY, 1);
	set_int(l4, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	set_int(l4, SOL_SOCKET, SO_RCVBUF, 100000);
	set_int(l4, IPPROTO_IP, IP_TOS, 0x10);
	struct timeval tv = {3, 500000};
	setsockopt(l4, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	struct linger lg = {1, 5};
	setsockopt(l4, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	int l4_rcvbuf = get_int(l4, SOL_SOCKET, SO_RCVBUF);

	int l6 = socket(AF_INET6, SOCK_STREAM, 0);
	set_int(l6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	set_int(l6, SOL_SOCKET, SO_REUSEPORT, 1);
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	if (bind(l6, (struct sockaddr *)&a6, sizeof a6) || listen(l6, 3))
		die("l6");

	int lm = socket(AF_INET6, SOCK_STREAM, 0);
	set_int(lm, IPPROTO_IPV6, IPV6_V6ONLY, 0);
	struct sockaddr_in6 am = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &am.sin6_addr);
	if (bind(lm, (struct sockaddr *)&am, sizeof am) || listen(lm, 5))
		die("lm");

	int b4 = socket(AF_INET, SOCK_STREAM, 0);
	set_int(b4, IPPROTO_IP, IP_FREEBIND, 1);
	if (bind(b4, (struct sockaddr *)&a4, sizeof a4))
		die("b4");

	int t0 = socket(AF_INET, SOCK_STREAM, 0);
	set_int(t0, IPPROTO_TCP, TCP_NODELAY, 1);

	int u4 = sock_bound(AF_INET, SOCK_DGRAM, "127.0.0.1", 0);
	set_int(u4, SOL_SOCKET, SO_BROADCAST, 1);
	set_int(u4, IPPROTO_IP, IP_TTL, 33);
	struct timeval rtv = {7, 0};
	setsockopt(u4, SOL_SOCKET, SO_RCVTIMEO, &rtv, sizeof rtv);

	int uc = sock_bound(AF_INET, SOCK_DGRAM, "127.0.0.1", 0);
	if (setsockopt(uc, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3))
		die("SO_BINDTODEVICE");
	struct sockaddr_storage u4s, u4p;
	names(u4, &u4s, &u4p);
	if (connect(uc, (struct sockaddr *)&u4s, sizeof(struct sockaddr_in)))
		die("uc connect");

	int u6 = sock_bound(AF_INET6, SOCK_DGRAM, "::1", 0);
	shutdown(u6, SHUT_RD);

	int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl nla = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK};
	if (nl < 0 || bind(nl, (struct sockaddr *)&nla, sizeof nla))
		die("netlink");
	struct sockaddr_nl nl_self;
	socklen_t nll = sizeof nl_self;
	getsockname(nl, (struct sockaddr *)&nl_self, &nll);

	int pk = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
	struct sockaddr_ll pka = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)if_nametoindex("lo")};
	if (pk < 0 || bind(pk, (struct sockaddr *)&pka, sizeof pka))
		die("packet socket");
	set_int(pk, SOL_PACKET, PACKET_AUXDATA, 1);

	struct sockaddr_storage s[8], p[8];
	int fds[8] = {l4, l6, lm, b4, t0, u4, uc, u6};
	for (int i = 0; i < 8; i++)
		names(fds[i], &s[i], &p[i]);

	announce_ready("READY pid=%d l4=%d l6=%d lm=%d u4=%d\n", getpid(), port_of(l4), port_of(l6), port_of(lm), port_of(u4));
	suspend_until(SIGUSR1, &go);

	struct report rep = {0}, *R = &rep;
	static const char *what[8] = {"l4-names", "l6-names", "lm-names", "b4-names", "t0-names", "u4-names", "uc-names", "u6-names"};
	for (int i = 0; i < 8; i++)
		same_names(R, what[i], fds[i], &s[i], &p[i]);
	CHECK(R, "l4-listening", get_int(l4, SOL_SOCKET, SO_ACCEPTCONN) == 1, "not listening");
	CHECK(R, "l4-reuseaddr", get_int(l4, SOL_SOCKET, SO_REUSEADDR) == 1, "lost");
	CHECK(R, "l4-keepalive", get_int(l4, SOL_SOCKET, SO_KEEPALIVE) == 1, "lost");
	CHECK(R, "l4-nodelay", get_int(l4, IPPROTO_TCP, TCP_NODELAY) == 1, "lost");
	CHECK(R, "l4-keepidle", get_int(l4, IPPROTO_TCP, TCP_KEEPIDLE) == 77, "%d", get_int(l4, IPPROTO_TCP, TCP_KEEPIDLE));
	CHECK(R, "l4-rcvbuf", get_int(l4, SOL_SOCKET, SO_RCVBUF) == l4_rcvbuf, "%d, was %d", get_int(l4, SOL_SOCKET, SO_RCVBUF), l4_rcvbuf);
	CHECK(R, "l4-tos", get_int(l4, IPPROTO_IP, IP_TOS) == 0x10, "%d", get_int(l4, IPPROTO_IP, IP_TOS));
	struct timeval t2 = {0};
	socklen_t tl = sizeof t2;
	getsockopt(l4, SOL_SOCKET, SO_SNDTIMEO, &t2, &tl);
	CHECK(R, "l4-sndtimeo", t2.tv_sec == 3 && t2.tv_usec == 500000, "%ld.%06ld", (long)t2.tv_sec, (long)t2.tv_usec);
	struct linger lg2 = {0};
	socklen_t ll = sizeof lg2;
	getsockopt(l4, SOL_SOCKET, SO_LINGER, &lg2, &ll);
	CHECK(R, "l4-linger", lg2.l_onoff && lg2.l_linger == 5, "%d %d", lg2.l_onoff, lg2.l_linger);
	CHECK(R, "l6-v6only", get_int(l6, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "lost");
	CHECK(R, "l6-reuseport", get_int(l6, SOL_SOCKET, SO_REUSEPORT) == 1, "lost");
	CHECK(R, "l6-reuseaddr-off", get_int(l6, SOL_SOCKET, SO_REUSEADDR) == 0, "set");
	CHECK(R, "lm-v6only-off", get_int(lm, IPPROTO_IPV6, IPV6_V6ONLY) == 0, "set");
	CHECK(R, "b4-not-listening", get_int(b4, SOL_SOCKET, SO_ACCEPTCONN) == 0, "listening");
	CHECK(R, "b4-freebind", get_int(b4, IPPROTO_IP, IP_FREEBIND) == 1, "lost");
	CHECK(R, "t0-nodelay", get_int(t0, IPPROTO_TCP, TCP_NODELAY) == 1, "lost");
	CHECK(R, "u4-broadcast", get_int(u4, SOL_SOCKET, SO_BROADCAST) == 1, "lost");
	CHECK(R, "u4-ttl", get_int(u4, IPPROTO_IP, IP_TTL) == 33, "%d", get_int(u4, IPPROTO_IP, IP_TTL));
	getsockopt(u4, SOL_SOCKET, SO_RCVTIMEO, &t2, &tl);
	CHECK(R, "u4-rcvtimeo", t2.tv_sec == 7, "%ld", (long)t2.tv_sec);
	char dev[IFNAMSIZ] = {0};
	socklen_t dl = sizeof dev;
	getsockopt(uc, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl);
	CHECK(R, "uc-bindtodevice", strcmp(dev, "lo") == 0, "\"%s\"", dev);
	char buf[64] = {0};
	struct pollfd pu = {.fd = u6, .events = POLLRDHUP};
	CHECK(R, "u6-shut-rd", poll(&pu, 1, 0) == 1 && (pu.revents & POLLRDHUP), "revents %#x", pu.revents);

	accepts(R, "l4-accepts", l4, AF_INET, "127.0.0.1", port_of(l4));
	struct sockaddr_in to4;
	socklen_t to4l = sizeof to4;
	getsockname(l4, (struct sockaddr *)&to4, &to4l);
	int t0c = connect(t0, (struct sockaddr *)&to4, to4l);
	int t0a = t0c == 0 ? accept(l4, NULL, NULL) : -1;
	char t0b[1] = {0};
	int t0ok = t0a >= 0 && write(t0, "t", 1) == 1 && read(t0a, t0b, 1) == 1 && t0b[0] == 't';
	CHECK(R, "t0-connects-and-writes", t0ok, "connect %d accept %d: %s", t0c, t0a, strerror(errno));

	struct sockaddr_ll pl = {0};
	socklen_t pll = sizeof pl;
	getsockname(pk, (struct sockaddr *)&pl, &pll);
	CHECK(R, "pk-bound-to-lo", pl.sll_ifindex == (int)if_nametoindex("lo") && pl.sll_protocol == htons(ETH_P_ALL), "ifindex %d proto %#x",
	      pl.sll_ifindex, ntohs(pl.sll_protocol));
	CHECK(R, "pk-auxdata", get_int(pk, SOL_PACKET, PACKET_AUXDATA) == 1, "lost");
	accepts(R, "l6-accepts", l6, AF_INET6, "::1", port_of(l6));
	accepts(R, "lm-accepts-v4", lm, AF_INET, "127.0.0.1", port_of(lm));
	CHECK(R, "b4-listens-again", listen(b4, 1) == 0, "%s", strerror(errno));
	accepts(R, "b4-accepts", b4, AF_INET, "127.0.0.1", port_of(b4));

	CHECK(R, "uc-send", send(uc, "ping", 4, 0) == 4, "%s", strerror(errno));
	struct sockaddr_storage from;
	socklen_t fl = sizeof from;
	ssize_t n = recvfrom(u4, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
	CHECK(R, "u4-receives", n == 4 && memcmp(buf, "ping", 4) == 0 && memcmp(&from, &s[6], sizeof(struct sockaddr_in)) == 0, "%zd: %s", n, strerror(errno));
	sendto(u4, "pong", 4, 0, (struct sockaddr *)&from, fl);
	struct timeval ctv = {30, 0};
	setsockopt(uc, SOL_SOCKET, SO_RCVTIMEO, &ctv, sizeof ctv);
	n = recv(uc, buf, sizeof buf, 0);
	CHECK(R, "uc-receives", n == 4 && memcmp(buf, "pong", 4) == 0, "%zd: %s", n, strerror(errno));

	struct sockaddr_nl nl_now;
	nll = sizeof nl_now;
	getsockname(nl, (struct sockaddr *)&nl_now, &nll);
	CHECK(R, "nl-bound", nl_now.nl_pid == nl_self.nl_pid && nl_now.nl_groups == RTMGRP_LINK, "port id %u (was %u) groups %#x", nl_now.nl_pid,
	      nl_self.nl_pid, nl_now.nl_groups);
	struct {
		struct nlmsghdr h;
		struct rtgenmsg g;
	} req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
		 .g = {.rtgen_family = AF_UNSPEC}};
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	int sent = sendto(nl, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) == sizeof req;
	static char reply[1 << 16];
	setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &ctv, sizeof ctv);
	n = sent ? recv(nl, reply, sizeof reply, 0) : -1;
	CHECK(R, "nl-answers", n > (ssize_t)sizeof(struct nlmsghdr) && ((struct nlmsghdr *)reply)->nlmsg_type == RTM_NEWLINK, "%zd: %s", n,
	      strerror(errno));

	finish_report(R, result);
	return report_status(R);
}
