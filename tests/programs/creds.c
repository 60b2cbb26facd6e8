/*
 * Test program for restoring credentials: a tree of tasks running as
 * different users and groups, with reduced capability sets and securebits,
 * each checking from inside that it got back exactly the identity it had.
 *
 * Usage: creds DIR RESULT_FILE     (started as root; DIR must be writable by all)
 *
 *   R  root, uid 0, groups 10 20; bounding set without CAP_SYS_ADMIN and
 *      CAP_NET_RAW, CAP_DAC_OVERRIDE permitted but not effective,
 *      inheritable CAP_NET_BIND_SERVICE, securebits NOROOT (+ locked)
 *   +- A  uids 1001/1002/1003 fs 1004, gids 2001/2002/2003 fs 2004, groups
 *   |     3001-3003; kept CAP_CHOWN (effective), CAP_NET_BIND_SERVICE and
 *   |     CAP_FOWNER (permitted, inheritable), ambient CAP_NET_BIND_SERVICE;
 *   |     bounding set of five; securebits KEEP_CAPS | NOROOT | NOROOT_LOCKED;
 *   |     dumpable set back to 1.
 *   |     Its second thread T has its own credentials (raw syscalls act on
 *   |     the calling thread only): uids 1002/1002/1001 fs 1002 and only
 *   |     CAP_CHOWN permitted, nothing effective.
 *   +- B  nobody (65534 everywhere), no groups, no capabilities, an empty
 *   |     bounding set, no_new_privs, not dumpable.
 *   +- C  uid and gid 2500, group 2500; CAP_NET_ADMIN effective and ambient,
 *      CAP_SYS_PTRACE permitted and inheritable; securebits NO_SETUID_FIXUP
 *      (+ locked) | NO_CAP_AMBIENT_RAISE
 *      +- D  forked by C after that: the same credentials, inherited.
 *
 * Each task (and thread) takes a snapshot of everything it can read about
 * its identity (getresuid, getresgid, fsuid, fsgid, getgroups, capget,
 * every capability's bounding and ambient bit, securebits, no_new_privs,
 * dumpable) once set up, and compares the snapshot with what it sees after
 * the restore. It also checks the snapshot against what it meant to set,
 * so a restore that quietly leaves everyone root fails.
 *
 * R writes "READY pid=R a=A b=B c=C d=D t=T" once every task waits. On
 * SIGUSR1 R passes the signal on to A, B and C (C to D; A to its thread T
 * with SIGUSR2); each writes "result-NAME" in DIR and exits 0 or 10 +
 * failures; each parent waits for its children and collects their reports;
 * R writes every line and a last "ALL OK" or "FAIL N check(s)" to
 * RESULT_FILE.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "selfcheck.h"

#define CAPBIT(c) (1ULL << (c))

/* Everything a task can read about its identity. */
struct ident {
	uid_t uid[4];
	gid_t gid[4];
	int ngroups;
	gid_t groups[64];
	uint64_t eff, prm, inh, bnd, amb;
	int secbits, nnp, dumpable;
};

static struct report rep;
static volatile sig_atomic_t go, t_go;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		go = 1;
	else
		t_go = 1;
}

static uint64_t caps_of(const struct __user_cap_data_struct d[2], int which)
{
	uint32_t lo = which == 0 ? d[0].effective : which == 1 ? d[0].permitted : d[0].inheritable;
	uint32_t hi = which == 0 ? d[1].effective : which == 1 ? d[1].permitted : d[1].inheritable;
	return lo | (uint64_t)hi << 32;
}

/* The calling thread's identity (raw syscalls: per thread). */
static void snapshot(struct ident *s)
{
	memset(s, 0, sizeof *s);
	syscall(SYS_getresuid, &s->uid[0], &s->uid[1], &s->uid[2]);
	syscall(SYS_getresgid, &s->gid[0], &s->gid[1], &s->gid[2]);
	s->uid[3] = (uid_t)syscall(SYS_setfsuid, -1);
	s->gid[3] = (gid_t)syscall(SYS_setfsgid, -1);
	s->ngroups = (int)syscall(SYS_getgroups, 64, s->groups);
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		die("capget");
	s->eff = caps_of(d, 0);
	s->prm = caps_of(d, 1);
	s->inh = caps_of(d, 2);
	for (int c = 0; c < 64; c++) {
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			s->bnd |= CAPBIT(c);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
			s->amb |= CAPBIT(c);
	}
	s->secbits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	s->nnp = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	s->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
}

/* What a task meant to have (checked on its snapshot before the dump and
 * again after: the snapshot must not be all root by accident). */
struct want {
	uid_t uid[4];
	gid_t gid[4];
	int ngroups;
	gid_t groups[4];
	uint64_t eff, prm, inh, amb;
	int secbits, nnp, dumpable;
};

static void compare(struct report *r, const char *who, const struct ident *a, const struct ident *b)
{
	char name[64];
#define SAME(field, fmt, cond, ...)                                                                    \
	do {                                                                                           \
		snprintf(name, sizeof name, "%s %s", who, field);                                      \
		CHECK(r, name, cond, fmt, __VA_ARGS__);                                                \
	} while (0)
	SAME("uids", "%u %u %u %u, was %u %u %u %u", !memcmp(a->uid, b->uid, sizeof a->uid), b->uid[0], b->uid[1],
	     b->uid[2], b->uid[3], a->uid[0], a->uid[1], a->uid[2], a->uid[3]);
	SAME("gids", "%u %u %u %u, was %u %u %u %u", !memcmp(a->gid, b->gid, sizeof a->gid), b->gid[0], b->gid[1],
	     b->gid[2], b->gid[3], a->gid[0], a->gid[1], a->gid[2], a->gid[3]);
	SAME("groups", "%d groups, was %d", a->ngroups == b->ngroups &&
	     !memcmp(a->groups, b->groups, sizeof(gid_t) * (a->ngroups > 0 ? a->ngroups : 0)), b->ngroups, a->ngroups);
	SAME("effective", "%#llx, was %#llx", a->eff == b->eff, (unsigned long long)b->eff, (unsigned long long)a->eff);
	SAME("permitted", "%#llx, was %#llx", a->prm == b->prm, (unsigned long long)b->prm, (unsigned long long)a->prm);
	SAME("inheritable", "%#llx, was %#llx", a->inh == b->inh, (unsigned long long)b->inh, (unsigned long long)a->inh);
	SAME("bounding", "%#llx, was %#llx", a->bnd == b->bnd, (unsigned long long)b->bnd, (unsigned long long)a->bnd);
	SAME("ambient", "%#llx, was %#llx", a->amb == b->amb, (unsigned long long)b->amb, (unsigned long long)a->amb);
	SAME("securebits", "%#x, was %#x", a->secbits == b->secbits, b->secbits, a->secbits);
	SAME("no_new_privs", "%d, was %d", a->nnp == b->nnp, b->nnp, a->nnp);
	SAME("dumpable", "%d, was %d", a->dumpable == b->dumpable, b->dumpable, a->dumpable);
#undef SAME
}

/* Checks snapshot S against what the task meant (bounding set aside). */
static void check_meant(struct report *r, const char *who, const struct ident *s, const struct want *w)
{
	struct ident m = *s;
	memcpy(m.uid, w->uid, sizeof m.uid);
	memcpy(m.gid, w->gid, sizeof m.gid);
	m.ngroups = w->ngroups;
	memset(m.groups, 0, sizeof m.groups);
	memcpy(m.groups, w->groups, sizeof(gid_t) * w->ngroups);
	m.eff = w->eff;
	m.prm = w->prm;
	m.inh = w->inh;
	m.amb = w->amb;
	m.secbits = w->secbits;
	m.nnp = w->nnp;
	m.dumpable = w->dumpable;
	char name[64];
	snprintf(name, sizeof name, "%s as meant:", who);
	compare(r, name, &m, s);
}

static void must(long ret, const char *what)
{
	if (ret < 0)
		die(what);
}

/* Drops every capability but those in KEEP from the bounding set. */
static void keep_bounding(uint64_t keep)
{
	for (int c = 0; c < 64; c++)
		if (!(keep & CAPBIT(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno != EINVAL)
			die("PR_CAPBSET_DROP");
}

/* capset on the calling thread. */
static void set_caps(uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {
		{(uint32_t)eff, (uint32_t)prm, (uint32_t)inh},
		{(uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32)},
	};
	must(syscall(SYS_capset, &h, d), "capset");
}

static void set_groups(int n, const gid_t *g)
{
	must(syscall(SYS_setgroups, n, g), "setgroups");
}

/* Raw per-thread setresuid/setresgid/setfsuid/setfsgid (glibc's would
 * change every thread). */
static void set_ids(const uid_t u[4], const gid_t g[4])
{
	if (g) {
		must(syscall(SYS_setresgid, g[0], g[1], g[2]), "setresgid");
		syscall(SYS_setfsgid, g[3]);
	}
	if (u) {
		must(syscall(SYS_setresuid, u[0], u[1], u[2]), "setresuid");
		syscall(SYS_setfsuid, u[3]);
	}
}

/* ---------- the tasks ---------- */

/* Effective and permitted sets filled in by become_r (criu-rs's own, less
 * a few). */
static struct want WANT_R = {
	{0, 0, 0, 0}, {0, 0, 0, 0}, 2, {10, 20}, 0, 0, CAPBIT(CAP_NET_BIND_SERVICE), 0,
	SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 1,
};
static const uint64_t DROPPED_R = CAPBIT(CAP_SYS_ADMIN) | CAPBIT(CAP_NET_RAW);

static const struct want WANT_A = {
	{1001, 1002, 1003, 1004}, {2001, 2002, 2003, 2004}, 3, {3001, 3002, 3003},
	CAPBIT(CAP_CHOWN),
	CAPBIT(CAP_CHOWN) | CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_FOWNER),
	CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_FOWNER),
	CAPBIT(CAP_NET_BIND_SERVICE),
	SECBIT_KEEP_CAPS | SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 1,
};
static const uint64_t BOUND_A =
	CAPBIT(CAP_CHOWN) | CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_FOWNER) | CAPBIT(CAP_KILL) | CAPBIT(CAP_SETPCAP);

static const struct want WANT_T = {
	{1002, 1002, 1001, 1002}, {2001, 2002, 2003, 2004}, 3, {3001, 3002, 3003},
	0, CAPBIT(CAP_CHOWN), 0, 0,
	SECBIT_KEEP_CAPS | SECBIT_NOROOT | SECBIT_NOROOT_LOCKED, 0, 1,
};

static const struct want WANT_B = {
	{65534, 65534, 65534, 65534}, {65534, 65534, 65534, 65534}, 0, {0}, 0, 0, 0, 0, 0, 1, 0,
};

static const struct want WANT_C = {
	{2500, 2500, 2500, 2500}, {2500, 2500, 2500, 2500}, 1, {2500},
	CAPBIT(CAP_NET_ADMIN),
	CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_SYS_PTRACE),
	CAPBIT(CAP_NET_ADMIN) | CAPBIT(CAP_SYS_PTRACE),
	CAPBIT(CAP_NET_ADMIN),
	SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE, 0, 0,
};
static const uint64_t DROPPED_C = CAPBIT(CAP_SYS_MODULE) | CAPBIT(CAP_SYS_BOOT) | CAPBIT(CAP_MKNOD);

static void become_a(void)
{
	set_groups(WANT_A.ngroups, WANT_A.groups);
	set_ids(NULL, WANT_A.gid);
	keep_bounding(BOUND_A);
	/* Capabilities stay effective across the change of uids, so the
	 * fsuid can differ from the three others. */
	must(prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0), "PR_SET_SECUREBITS");
	set_ids(WANT_A.uid, NULL);
	must(prctl(PR_SET_SECUREBITS, WANT_A.secbits, 0, 0, 0), "PR_SET_SECUREBITS");
	set_caps(WANT_A.eff, WANT_A.prm, WANT_A.inh);
	must(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0), "PR_CAP_AMBIENT_RAISE");
}

static void become_b(void)
{
	set_groups(0, NULL);
	set_ids(NULL, WANT_B.gid);
	keep_bounding(0);
	set_ids(WANT_B.uid, NULL);
	must(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS");
}

static void become_c(void)
{
	set_groups(WANT_C.ngroups, WANT_C.groups);
	set_ids(NULL, WANT_C.gid);
	must(prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED, 0, 0, 0), "securebits");
	set_ids(WANT_C.uid, NULL);
	for (int c = 0; c < 64; c++)
		if (DROPPED_C & CAPBIT(c))
			must(prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "PR_CAPBSET_DROP");
	set_caps(WANT_C.eff | CAPBIT(CAP_SETPCAP), WANT_C.prm | CAPBIT(CAP_SETPCAP), WANT_C.inh);
	must(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0), "PR_CAP_AMBIENT_RAISE");
	must(prctl(PR_SET_SECUREBITS, WANT_C.secbits, 0, 0, 0), "PR_SET_SECUREBITS");
	set_caps(WANT_C.eff, WANT_C.prm, WANT_C.inh);
}

static void become_r(void)
{
	set_groups(WANT_R.ngroups, WANT_R.groups);
	for (int c = 0; c < 64; c++)
		if (DROPPED_R & CAPBIT(c))
			must(prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "PR_CAPBSET_DROP");
	must(prctl(PR_SET_SECUREBITS, WANT_R.secbits, 0, 0, 0), "PR_SET_SECUREBITS");
	struct ident now;
	snapshot(&now);
	/* Everything we had, bar CAP_DAC_OVERRIDE effective; CAP_KILL stays
	 * (R passes SIGUSR1 on to tasks of other users). */
	WANT_R.prm = now.prm & ~DROPPED_R;
	WANT_R.eff = WANT_R.prm & ~CAPBIT(CAP_DAC_OVERRIDE);
	set_caps(WANT_R.eff, WANT_R.prm, WANT_R.inh);
}

/* ---------- A's second thread ---------- */

static struct ident t_before;
static struct report t_rep;
/* 1: T set up; 2: A made the process dumpable again (T's change of ids
 * reset it); 3: T took its snapshot and waits. */
static atomic_int t_state;
static pid_t t_tid;

static void *thread_t(void *arg)
{
	(void)arg;
	t_tid = (pid_t)syscall(SYS_gettid);
	must(syscall(SYS_setresuid, WANT_T.uid[0], WANT_T.uid[1], WANT_T.uid[2]), "thread setresuid");
	set_caps(WANT_T.eff, WANT_T.prm, WANT_T.inh);
	atomic_store(&t_state, 1);
	while (atomic_load(&t_state) != 2)
		usleep(1000);
	snapshot(&t_before);
	check_meant(&t_rep, "T", &t_before, &WANT_T);
	sigset_t wait_for;
	sigfillset(&wait_for);
	sigdelset(&wait_for, SIGUSR2);
	atomic_store(&t_state, 3);
	while (!t_go)
		sigsuspend(&wait_for);
	struct ident after;
	snapshot(&after);
	compare(&t_rep, "T after restore:", &t_before, &after);
	atomic_store(&t_state, 2);
	return NULL;
}

/* ---------- common ---------- */

static const struct want *want_of(char name)
{
	switch (name) {
	case 'R':
		return &WANT_R;
	case 'A':
		return &WANT_A;
	case 'B':
		return &WANT_B;
	default:
		return &WANT_C;
	}
}

/* Waits for SIGUSR1 (all other signals blocked), then compares. */
static void wait_and_check(char name, const struct ident *before)
{
	sigset_t wait_for;
	sigfillset(&wait_for);
	sigdelset(&wait_for, SIGUSR1);
	while (!go)
		sigsuspend(&wait_for);
	struct ident after;
	snapshot(&after);
	char who[32];
	snprintf(who, sizeof who, "%c after restore:", name);
	compare(&rep, who, before, &after);
}

static void wait_child(pid_t pid, char name)
{
	int st;
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid");
	collect_report(&rep, name);
}

/* Shared by the tree: how many children are ready, and D's pid. */
struct shared {
	atomic_int ready;
	pid_t d;
};

/* A child task: become NAME, snapshot, report ready, wait, check. */
__attribute__((noreturn)) static void child_main(char name, struct shared *sh)
{
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		die("/dev/null");
	close(null);
	switch (name) {
	case 'A':
		become_a();
		break;
	case 'B':
		become_b();
		break;
	case 'C':
	case 'D':
		if (name == 'C')
			become_c();
		break;
	}
	pthread_t th;
	if (name == 'A') {
		if (pthread_create(&th, NULL, thread_t, NULL))
			die("pthread_create");
		while (atomic_load(&t_state) != 1)
			usleep(1000);
		must(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "PR_SET_DUMPABLE");
		atomic_store(&t_state, 2);
		while (atomic_load(&t_state) != 3)
			usleep(1000);
	}
	pid_t d = -1;
	if (name == 'C') {
		d = fork();
		if (d < 0)
			die("fork");
		if (d == 0)
			child_main('D', sh);
		sh->d = d;
	}
	struct ident before;
	snapshot(&before);
	check_meant(&rep, (char[]){name, 0}, &before, want_of(name == 'D' ? 'C' : name));
	atomic_fetch_add(&sh->ready, 1);
	wait_and_check(name, &before);
	if (name == 'A') {
		syscall(SYS_tgkill, getpid(), t_tid, SIGUSR2);
		pthread_join(th, NULL);
		say(&rep, "%s", t_rep.buf);
		rep.fails += t_rep.fails;
	}
	if (name == 'C') {
		kill(d, SIGUSR1);
		wait_child(d, 'D');
	}
	char path[32];
	snprintf(path, sizeof path, "result-%c", name);
	if (finish_report(&rep, path))
		die("writing the report");
	exit(report_status(&rep));
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: creds DIR RESULT_FILE\n");
		return 2;
	}
	if (chdir(argv[1]))
		die("chdir");
	const char *result = argv[2];
	if (setsid() < 0)
		die("setsid");
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, NULL);
	struct shared *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	pid_t kids[3];
	const char names[3] = {'A', 'B', 'C'};
	for (int i = 0; i < 3; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			die("fork");
		if (kids[i] == 0)
			child_main(names[i], sh);
	}
	become_r();
	struct ident before;
	snapshot(&before);
	check_meant(&rep, "R", &before, &WANT_R);
	char name[64];
	snprintf(name, sizeof name, "R bounding lacks CAP_SYS_ADMIN and CAP_NET_RAW");
	CHECK(&rep, name, !(before.bnd & DROPPED_R), "%#llx", (unsigned long long)before.bnd);
	wait_count(&sh->ready, 4); /* A, B, C, D */
	announce_ready("READY pid=%d a=%d b=%d c=%d d=%d\n", getpid(), kids[0], kids[1], kids[2], sh->d);
	wait_and_check('R', &before);
	for (int i = 0; i < 3; i++)
		if (kill(kids[i], SIGUSR1))
			die("kill");
	for (int i = 0; i < 3; i++)
		wait_child(kids[i], names[i]);
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
