/*
 * Test program for the per-task state restore sets late, in the blob:
 * resource limits, personality and (optionally) credentials.
 *
 * Usage: taskstate DIR RESULT_FILE [ids|chroot|timer]
 *
 * Phase 1: in its own session (setsid) and in DIR, it lowers eleven resource
 * limits to values no default has, each soft limit below its hard one
 * (hard limits only go down: there is no CAP_SYS_RESOURCE here), and sets
 * the personality ADDR_NO_RANDOMIZE | UNAME26 (harmless: the first only
 * matters at the next exec, the second makes uname(2) report a 2.6
 * release). With "ids" it then becomes another user: groups {65534, 27},
 * gids r=65534 e=1001 s=1002, uids r=65534 e=1001 s=1002 (fsuid and
 * fsgid follow the effective ids). It writes "READY pid=N" on the original
 * stdout (fds 0-2 then point at /dev/null) and waits in sigsuspend.
 *
 * Phase 2 (SIGUSR1): it checks every limit, the personality, what uname
 * says and, with "ids", every id from the inside; writes one line per check
 * and a last line "ALL OK" or "FAIL N check(s)" to RESULT_FILE, and exits
 * 0 or 10 + failures.
 *
 * With "chroot" it takes DIR/jail as its root instead of changing ids
 * (DIR/jail/marker holds "inside", cwd /work in the jail), keeping an
 * O_PATH fd on the old root to leave the jail by before it writes
 * RESULT_FILE. Phase 2 checks its root (the marker, the root's inode) and
 * cwd from inside the jail.
 *
 * With "timer" a second thread T waits in pause() and a POSIX timer
 * (SIGEV_THREAD_ID, every 2 ms) signals it alone: the handler counts the
 * signals T takes and those any other thread takes (the main thread, in
 * sigsuspend, would take a signal sent to the process). Phase 1 waits for
 * T's first 3; phase 2 checks T takes 5 more and nobody else ever took one.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/personality.h>
#include <sys/resource.h>
#include <sys/fsuid.h>
#include <sys/utsname.h>

#include "selfcheck.h"

static const struct {
	int res;
	const char *name;
	rlim_t cur, max;
} LIMITS[] = {
	{RLIMIT_CPU, "cpu", 1000003, 2000003},
	{RLIMIT_FSIZE, "fsize", 1UL << 30, 3UL << 30},
	{RLIMIT_STACK, "stack", 7UL << 20, 30UL << 20},
	{RLIMIT_CORE, "core", 1UL << 20, 5UL << 20},
	{RLIMIT_NOFILE, "nofile", 999, 1999},
	{RLIMIT_MEMLOCK, "memlock", 3UL << 20, 6UL << 20},
	{RLIMIT_LOCKS, "locks", 4001, 8001},
	{RLIMIT_SIGPENDING, "sigpending", 5003, 6007},
	{RLIMIT_MSGQUEUE, "msgqueue", 204801, 409601},
	{RLIMIT_RSS, "rss", 1UL << 30, 2UL << 30},
	{RLIMIT_RTTIME, "rttime", 5000011, 9000011},
};
#define NLIMITS (sizeof LIMITS / sizeof LIMITS[0])

#define PERSONA (ADDR_NO_RANDOMIZE | UNAME26)

static volatile sig_atomic_t go;
static atomic_int timer_tid, in_t, elsewhere;

static void on_timer(int sig)
{
	(void)sig;
	if ((int)syscall(SYS_gettid) == atomic_load(&timer_tid))
		atomic_fetch_add(&in_t, 1);
	else
		atomic_fetch_add(&elsewhere, 1);
}

static void *timer_thread(void *arg)
{
	(void)arg;
	atomic_store(&timer_tid, (int)syscall(SYS_gettid));
	for (;;)
		pause();
	return NULL;
}

/* T and its timer (see "timer" above); returns once T took 3 signals. */
static void start_thread_timer(void)
{
	struct sigaction sa = {.sa_handler = on_timer, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	pthread_t th;
	if (sigaction(SIGRTMIN + 3, &sa, NULL) || pthread_create(&th, NULL, timer_thread, NULL))
		die("timer thread");
	wait_count(&timer_tid, 1);
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGRTMIN + 3;
	sev._sigev_un._tid = atomic_load(&timer_tid);
	timer_t id;
	struct itimerspec its = {{0, 2000000}, {0, 2000000}};
	if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &id) || syscall(SYS_timer_settime, id, 0, &its, NULL))
		die("timer_create");
	wait_count(&in_t, 3);
}

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (argc > 3 && strcmp(argv[3], "ids") && strcmp(argv[3], "chroot") && strcmp(argv[3], "timer"))) {
		fprintf(stderr, "usage: taskstate DIR RESULT_FILE [ids|chroot|timer]\n");
		return 2;
	}
	int ids = argc > 3 && !strcmp(argv[3], "ids");
	int jail = argc > 3 && !strcmp(argv[3], "chroot");
	int timer = argc > 3 && !strcmp(argv[3], "timer");
	int old_root = -1;
	struct stat jail_st = {0};
	sigset_t old;
	start_usr1_waiter(argv[1], on_usr1, &old);
	for (size_t i = 0; i < NLIMITS; i++) {
		struct rlimit rl = {LIMITS[i].cur, LIMITS[i].max};
		if (setrlimit(LIMITS[i].res, &rl))
			die(LIMITS[i].name);
	}
	if (personality(PERSONA) < 0 || personality(0xffffffff) != PERSONA)
		die("personality");
	if (ids) {
		gid_t groups[] = {65534, 27};
		if (setgroups(2, groups) || setresgid(65534, 1001, 1002) || setresuid(65534, 1001, 1002))
			die("setgroups/setresgid/setresuid");
	}
	if (timer)
		start_thread_timer();
	if (jail) {
		FILE *m;
		if ((mkdir("jail", 0755) && errno != EEXIST) || (mkdir("jail/work", 0755) && errno != EEXIST) ||
		    !(m = fopen("jail/marker", "w")) || fputs("inside", m) < 0 || fclose(m))
			die("making the jail");
		old_root = open("/", O_PATH | O_DIRECTORY);
		/* announce_ready's /dev/null is outside the jail: open it first. */
		int out = dup(1), null = open("/dev/null", O_RDWR);
		if (old_root < 0 || out < 0 || null < 0 || stat("jail", &jail_st) || chroot("jail") || chdir("/work"))
			die("chroot");
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		close(null);
		if (dprintf(out, "READY pid=%d\n", getpid()) < 0)
			die("write READY");
		close(out);
	} else {
		announce_ready("READY pid=%d\n", getpid());
	}

	while (!go)
		sigsuspend(&old);

	struct report R = {0};
	for (size_t i = 0; i < NLIMITS; i++) {
		struct rlimit rl;
		char name[32];
		snprintf(name, sizeof name, "rlimit-%s", LIMITS[i].name);
		if (getrlimit(LIMITS[i].res, &rl)) {
			CHECK(&R, name, 0, "getrlimit: %s", strerror(errno));
			continue;
		}
		CHECK(&R, name, rl.rlim_cur == LIMITS[i].cur && rl.rlim_max == LIMITS[i].max,
		      "soft %lu hard %lu, want %lu %lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max,
		      (unsigned long)LIMITS[i].cur, (unsigned long)LIMITS[i].max);
	}
	int persona = personality(0xffffffff);
	CHECK(&R, "personality", persona == PERSONA, "%#x, want %#x", persona, PERSONA);
	struct utsname u;
	CHECK(&R, "uname26", uname(&u) == 0 && !strncmp(u.release, "2.6.", 4), "release %s", u.release);
	if (ids) {
		uid_t ru, eu, su;
		gid_t rg, eg, sg;
		getresuid(&ru, &eu, &su);
		getresgid(&rg, &eg, &sg);
		CHECK(&R, "uids", ru == 65534 && eu == 1001 && su == 1002, "r %u e %u s %u", ru, eu, su);
		CHECK(&R, "gids", rg == 65534 && eg == 1001 && sg == 1002, "r %u e %u s %u", rg, eg, sg);
		/* setfsuid(-1) fails and returns the current value. */
		int fsu = setfsuid(-1), fsg = setfsgid(-1);
		CHECK(&R, "fsuid-fsgid", fsu == 1001 && fsg == 1001, "fsuid %d fsgid %d", fsu, fsg);
		gid_t g[8];
		int n = getgroups(8, g);
		/* The kernel keeps groups sorted. */
		CHECK(&R, "groups", n == 2 && g[0] == 27 && g[1] == 65534, "%d groups: %u %u", n, n > 0 ? g[0] : 0,
		      n > 1 ? g[1] : 0);
		CHECK(&R, "no-capabilities", kill(1, 0) < 0 && errno == EPERM, "kill(1, 0) allowed: still root");
	}
	if (timer) {
		int t0 = atomic_load(&in_t), moved = 0;
		for (int i = 0; i < 60000 && !moved; i++) {
			usleep(1000);
			moved = atomic_load(&in_t) >= t0 + 5;
		}
		CHECK(&R, "timer-signals-its-thread", moved, "thread took %d signals, %d before", atomic_load(&in_t), t0);
		CHECK(&R, "timer-signals-no-other-thread", atomic_load(&elsewhere) == 0, "%d signals taken by another thread",
		      atomic_load(&elsewhere));
	}
	if (jail) {
		char buf[16] = {0}, cwd[64] = {0};
		int m = open("/marker", O_RDONLY);
		ssize_t n = m >= 0 ? read(m, buf, sizeof buf - 1) : -1;
		CHECK(&R, "root-marker", n == 6 && !strcmp(buf, "inside"), "/marker: %zd bytes %s", n, buf);
		struct stat st;
		CHECK(&R, "root-inode", !stat("/", &st) && st.st_ino == jail_st.st_ino && st.st_dev == jail_st.st_dev,
		      "/ is inode %lu, want %lu", (unsigned long)st.st_ino, (unsigned long)jail_st.st_ino);
		CHECK(&R, "cwd", getcwd(cwd, sizeof cwd) && !strcmp(cwd, "/work"), "cwd %s", cwd);
		/* Leave the jail to write the result where the test reads it. */
		if (fchdir(old_root) || chroot("."))
			die("leaving the jail");
	}
	if (finish_report(&R, argv[2]))
		return 98;
	return report_status(&R);
}
