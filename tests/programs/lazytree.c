/*
 * Lazy restore of a process tree: a root R and two children A and B, each
 * with its own private anonymous memory holding its own pattern, plus an
 * area R filled before forking that all three inherit copy-on-write (each
 * child then rewrites the first page of it with its own pattern, so that
 * page differs per task while the rest is still shared).
 *
 * Usage: lazytree WORKDIR RESULT MEM_MIB
 *
 * R starts a session, forks A and B, says "READY pid=R a=A b=B" once both
 * wait, and every task waits for SIGUSR1 in rt_sigsuspend. On SIGUSR1, R
 * passes it on to A and B; each task checks, from inside, its own memory
 * (touching it in a task-specific random page order, so that the three
 * fault at once in different places), the inherited area and its pid, and
 * writes "result-NAME" in WORKDIR; R waits for A and B, then writes all
 * lines, prefixed by task name, and "ALL OK" or "FAIL N check(s)" to RESULT.
 * Exit 0 when all checks pass.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/mman.h>
#include <sys/wait.h>

enum { R_, A_, B_, NTASKS };
static const char NAMES[NTASKS] = {'R', 'A', 'B'};
/* Seeds: own memory 1 + role, the inherited area 50, its first page 60 + role. */
#define SEED_OWN(r) (1 + (uint64_t)(r))
#define SEED_INHERITED 50
#define SEED_FIRST(r) (60 + (uint64_t)(r))

struct shared {
	atomic_int ready;
};

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static size_t pages;
static uint8_t *inherited;
static struct report rep;

/* Checks every page of `mem` (seed `seed`) in a random order seeded by `r`. */
static size_t bad_pages_random(const uint8_t *mem, uint64_t seed, size_t n, uint64_t r)
{
	size_t *order = malloc(n * sizeof *order), bad = 0;
	if (!order)
		die("malloc");
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	uint64_t x = 0x9e3779b97f4a7c15ULL ^ (r << 32);
	for (size_t i = n - 1; i > 0; i--) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t j = x % (i + 1), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	for (size_t i = 0; i < n; i++)
		bad += page_diff(mem, seed, order[i]) != 0;
	free(order);
	return bad;
}

/* One task: own memory filled, counted ready, waits for SIGUSR1, checks,
 * writes its result. */
static void run(int role, struct shared *shm, const sigset_t *unblocked, const pid_t *kids)
{
	pid_t want = getpid();
	uint8_t *own = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (own == MAP_FAILED)
		die("mmap");
	fill(own, SEED_OWN(role), pages);
	if (role != R_)
		fill(inherited, SEED_FIRST(role), 1);
	atomic_fetch_add(&shm->ready, 1);
	if (role == R_) {
		wait_count(&shm->ready, NTASKS);
		announce_ready("READY pid=%d a=%d b=%d\n", want, kids[A_], kids[B_]);
	}
	while (!go)
		sigsuspend(unblocked);
	if (role == R_) {
		kill(kids[A_], SIGUSR1);
		kill(kids[B_], SIGUSR1);
	}
	CHECK(&rep, "pid", (pid_t)syscall(SYS_getpid) == want, "%ld, want %d", syscall(SYS_getpid), want);
	size_t bad = bad_pages_random(own, SEED_OWN(role), pages, (uint64_t)role);
	CHECK(&rep, "own memory", bad == 0, "%zu of %zu pages wrong", bad, pages);
	uint64_t first = role == R_ ? SEED_INHERITED : SEED_FIRST(role);
	CHECK(&rep, "inherited first page", page_diff(inherited, first, 0) == 0, "%zu words wrong",
	      page_diff(inherited, first, 0));
	bad = 0;
	for (size_t pg = 1; pg < pages; pg++)
		bad += page_diff(inherited, SEED_INHERITED, pg) != 0;
	CHECK(&rep, "inherited memory", bad == 0, "%zu of %zu pages wrong", bad, pages - 1);
	char path[32];
	snprintf(path, sizeof path, "result-%c", NAMES[role]);
	if (finish_report(&rep, path))
		exit(98);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: lazytree WORKDIR RESULT MEM_MIB\n");
		return 2;
	}
	if (setsid() < 0 || chdir(argv[1]))
		die("setsid/chdir");
	pages = (strtoull(argv[3], NULL, 0) << 20) / PAGE;
	if (pages < 2)
		die("MEM_MIB");
	sigset_t usr1, unblocked;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &unblocked);
	sigdelset(&unblocked, SIGUSR1);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);

	struct shared *shm = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	inherited = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED || inherited == MAP_FAILED)
		die("mmap");
	fill(inherited, SEED_INHERITED, pages);

	pid_t kids[NTASKS] = {0};
	for (int r = A_; r < NTASKS; r++) {
		kids[r] = fork();
		if (kids[r] < 0)
			die("fork");
		if (!kids[r]) {
			int null = open("/dev/null", O_RDWR);
			if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
				die("/dev/null");
			close(null);
			run(r, shm, &unblocked, kids);
			exit(report_status(&rep));
		}
	}
	run(R_, shm, &unblocked, kids);
	for (int r = A_; r < NTASKS; r++) {
		int st = 0;
		pid_t w = waitpid(kids[r], &st, 0);
		CHECK(&rep, "child exited ok", w == kids[r] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "%c: waitpid %d status %#x", NAMES[r], w, st);
	}
	static struct report all;
	for (int r = 0; r < NTASKS; r++)
		collect_report(&all, NAMES[r]);
	if (all.fails == 0 && rep.fails)
		all.fails = rep.fails;
	if (finish_report(&all, argv[2]))
		return 98;
	return report_status(&all);
}
