/*
 * Lazy restore test program: fills MEM_MIB of private anonymous memory with
 * a per-page pattern, says "READY pid=N mem=ADDR", then waits for SIGUSR1
 * in rt_sigsuspend. What it does when woken (after a lazy restore, while
 * its memory is still arriving) depends on MODE:
 *
 *   check   verifies every word, writes the report to RESULT and exits.
 *   churn   at once forks (the child checks and rewrites the first quarter),
 *           mremaps the second quarter elsewhere, munmaps and maps anew part
 *           of the third, MADV_DONTNEEDs more of it, then checks everything
 *           (moved data where it went, zeroes where memory was dropped).
 *   halves  checks the first half, writes RESULT.half, waits for a second
 *           SIGUSR1, checks the second half, writes RESULT.
 *   random  touches one word of every page in a random order, timing each
 *           first touch; writes "touch_median_ns=N touch_p90_ns=N
 *           touch_p99_ns=N" to
 *           RESULT.times, then checks everything.
 *
 * Usage: lazymem WORKDIR RESULT MEM_MIB MODE. Exit 0 when all checks pass.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/mman.h>
#include <sys/wait.h>

static volatile sig_atomic_t woken;

static void on_usr1(int sig)
{
	(void)sig;
	woken++;
}

/* Sleeps in rt_sigsuspend until the SIGUSR1 count reaches n. */
static void wait_usr1(int n, const sigset_t *open)
{
	while (woken < n)
		sigsuspend(open);
}

/* Pages in [from, to) of the pattern (page indices of the original area,
 * data at base + (page - from) * PAGE) that differ. */
static size_t bad_pages(const uint8_t *base, size_t from, size_t to)
{
	size_t bad = 0;
	for (size_t pg = from; pg < to; pg++) {
		const uint64_t *w = (const uint64_t *)(base + (pg - from) * PAGE);
		for (size_t i = 0; i < PAGE / 8; i++)
			if (w[i] != pattern(1, pg, i)) {
				bad++;
				break;
			}
	}
	return bad;
}

static size_t nonzero_pages(const uint8_t *base, size_t pages)
{
	size_t bad = 0;
	for (size_t i = 0; i < pages; i++)
		bad += !page_is_zero(base + i * PAGE);
	return bad;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void churn(struct report *r, uint8_t *mem, size_t pages)
{
	size_t q = pages / 4;
	pid_t kid = fork();
	if (kid == 0) {
		/* The child's own copy: check the first quarter, then write it. */
		size_t bad = bad_pages(mem, 0, q);
		for (size_t pg = 0; pg < q; pg++)
			mem[pg * PAGE] ^= 0xff;
		_exit(bad ? 1 : 0);
	}
	CHECK(r, "fork", kid > 0, "fork: %s", strerror(errno));

	/* Second quarter moves to a fresh spot. */
	uint8_t *spot = mmap(NULL, q * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *moved = spot == MAP_FAILED ? MAP_FAILED
					    : mremap(mem + q * PAGE, q * PAGE, q * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
	CHECK(r, "mremap", moved != MAP_FAILED, "mremap: %s", strerror(errno));

	/* Third quarter: an eighth unmapped and mapped anew, 64 pages dropped. */
	size_t e = pages / 8, drop = 64;
	uint8_t *third = mem + 2 * q * PAGE;
	int unmapped = munmap(third, e * PAGE) == 0 &&
		       mmap(third, e * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == third;
	CHECK(r, "munmap+mmap", unmapped, "%s", strerror(errno));
	int dropped = madvise(third + e * PAGE, drop * PAGE, MADV_DONTNEED) == 0;
	CHECK(r, "madvise(DONTNEED)", dropped, "%s", strerror(errno));

	int status = -1;
	CHECK(r, "child checked its quarter", kid > 0 && waitpid(kid, &status, 0) == kid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "status %#x", status);
	size_t bad = bad_pages(mem, 0, q);
	CHECK(r, "first quarter (the child wrote its copy)", bad == 0, "%zu bad pages", bad);
	if (moved != MAP_FAILED) {
		bad = bad_pages(moved, q, 2 * q);
		CHECK(r, "moved quarter", bad == 0, "%zu bad pages", bad);
	}
	bad = nonzero_pages(third, e);
	CHECK(r, "remapped eighth is zero", bad == 0, "%zu non-zero pages", bad);
	bad = nonzero_pages(third + e * PAGE, drop);
	CHECK(r, "dropped pages are zero", bad == 0, "%zu non-zero pages", bad);
	bad = bad_pages(third + (e + drop) * PAGE, 2 * q + e + drop, pages);
	CHECK(r, "the rest", bad == 0, "%zu bad pages", bad);
}

static void random_touch(struct report *r, uint8_t *mem, size_t pages, const char *result)
{
	size_t *order = malloc(pages * sizeof *order);
	uint64_t *ns = malloc(pages * sizeof *ns);
	if (!order || !ns)
		die("malloc");
	for (size_t i = 0; i < pages; i++)
		order[i] = i;
	uint64_t x = 0x2545f4914f6cdd1dULL;
	for (size_t i = pages - 1; i > 0; i--) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t j = x % (i + 1), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	volatile uint64_t sink = 0;
	for (size_t i = 0; i < pages; i++) {
		uint64_t t0 = now_ns();
		sink += *(volatile uint64_t *)(mem + order[i] * PAGE);
		ns[i] = now_ns() - t0;
	}
	(void)sink;
	qsort(ns, pages, sizeof *ns, cmp_u64);
	char path[4200], line[128];
	snprintf(path, sizeof path, "%s.times", result);
	int n = snprintf(line, sizeof line, "touch_median_ns=%llu touch_p90_ns=%llu touch_p99_ns=%llu\n",
			 (unsigned long long)ns[pages / 2], (unsigned long long)ns[pages * 9 / 10],
			 (unsigned long long)ns[pages * 99 / 100]);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(r, "times written", fd >= 0 && write(fd, line, (size_t)n) == n && close(fd) == 0, "%s", strerror(errno));
	size_t bad = bad_pages(mem, 0, pages);
	CHECK(r, "every page", bad == 0, "%zu bad pages", bad);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: lazymem WORKDIR RESULT MEM_MIB MODE\n");
		return 2;
	}
	if (setsid() < 0 || chdir(argv[1]))
		die("setsid/chdir");
	const char *result = argv[2], *mode = argv[4];
	size_t pages = (strtoull(argv[3], NULL, 0) << 20) / PAGE;
	uint8_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	fill(mem, 1, pages);

	sigset_t usr1, open;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &open);
	sigdelset(&open, SIGUSR1);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	announce_ready("READY pid=%d mem=%p\n", getpid(), (void *)mem);
	wait_usr1(1, &open);

	static struct report r;
	if (!strcmp(mode, "check")) {
		size_t bad = bad_pages(mem, 0, pages);
		CHECK(&r, "every page", bad == 0, "%zu bad pages", bad);
	} else if (!strcmp(mode, "churn")) {
		churn(&r, mem, pages);
	} else if (!strcmp(mode, "halves")) {
		size_t bad = bad_pages(mem, 0, pages / 2);
		CHECK(&r, "first half", bad == 0, "%zu bad pages", bad);
		char half[4200];
		snprintf(half, sizeof half, "%s.half", result);
		if (finish_report(&r, half))
			die("report");
		r.len = 0;
		wait_usr1(2, &open);
		bad = bad_pages(mem + pages / 2 * PAGE, pages / 2, pages);
		CHECK(&r, "second half", bad == 0, "%zu bad pages", bad);
	} else if (!strcmp(mode, "random")) {
		random_touch(&r, mem, pages, result);
	} else {
		CHECK(&r, "mode", 0, "unknown mode %s", mode);
	}
	if (finish_report(&r, result))
		die("report");
	return report_status(&r);
}
