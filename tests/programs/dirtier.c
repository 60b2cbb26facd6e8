/*
 * Test program for pre-dumps and incremental dumps: memory that changes
 * between dumps in every way that matters to dirty tracking, and a check of
 * all of it from inside after the restore.
 *
 *   dirtier RESULT MIB ROUNDS
 *
 * Area A (MIB MiB, private anonymous) starts filled with pattern seed 1; a
 * table (gen[], itself in memory that gets dumped) says what each page
 * should hold. On SIGUSR1 the program runs round k (1, 2, ...):
 *   - pages with pg % 7 == k % 7 are refilled with seed k + 1;
 *   - pages with pg % 11 == k % 11 are dropped with MADV_DONTNEED (zero);
 *   - pages with pg % 13 == k % 13 get zeros written (present, all zero);
 *   - area B (1 MiB) is unmapped and mapped again at the same address with
 *     seed 100 + k (a new area where an old one was);
 *   - in round 1, area C (2 MiB) is created with seed 50; later rounds
 *     rewrite its first page with seed 50 + k;
 *   - a one-page area D made read-only before the first dump gets written
 *     after an mprotect in round 2 (tracked pages behind changed protection).
 * then writes "k" to RESULT.round. Pages never touched stay as they were.
 * On SIGUSR2 it checks that it ran exactly ROUNDS rounds (a restore from a
 * stale parent would bring back an older count), every page of A, B, C and
 * D against what it should hold (C must exist once a round ran), writes the
 * report to RESULT and exits (0 if all is well).
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <sys/mman.h>

enum { ZERO_DROPPED = 0xff, ZERO_WRITTEN = 0xfe };

static volatile sig_atomic_t want_round, want_check;

static void on_usr1(int s)
{
	(void)s;
	want_round++;
}

static void on_usr2(int s)
{
	(void)s;
	want_check = 1;
}

static void *map_at(void *at, size_t len)
{
	void *p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: dirtier RESULT MIB ROUNDS\n");
		return 2;
	}
	const char *result = argv[1];
	int rounds = atoi(argv[3]);
	size_t pages = strtoull(argv[2], NULL, 0) << 8;
	uint8_t *a = map_at(NULL, pages * PAGE);
	uint8_t *gen = map_at(NULL, (pages + PAGE - 1) & ~(PAGE - 1));
	fill(a, 1, pages);
	memset(gen, 1, pages);
	size_t b_pages = 256, c_pages = 512;
	uint8_t *b = map_at(NULL, b_pages * PAGE);
	fill(b, 100, b_pages);
	int b_seed = 100;
	uint8_t *c = NULL;
	int c_seed = 0;
	uint8_t *d = map_at(NULL, PAGE);
	fill(d, 77, 1);
	int d_seed = 77;
	if (mprotect(d, PAGE, PROT_READ))
		die("mprotect");

	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, &old);
	announce_ready("READY pid=%d\n", getpid());

	int k = 0;
	for (;;) {
		while (!want_round && !want_check)
			sigsuspend(&old);
		if (want_check)
			break;
		want_round--;
		k++;
		for (size_t pg = 0; pg < pages; pg++) {
			if (pg % 7 == (size_t)k % 7) {
				uint64_t *w = (uint64_t *)(a + pg * PAGE);
				for (size_t i = 0; i < PAGE / 8; i++)
					w[i] = pattern(k + 1, pg, i);
				gen[pg] = k + 1;
			}
			if (pg % 11 == (size_t)k % 11) {
				if (madvise(a + pg * PAGE, PAGE, MADV_DONTNEED))
					die("madvise");
				gen[pg] = ZERO_DROPPED;
			}
			if (pg % 13 == (size_t)k % 13) {
				memset(a + pg * PAGE, 0, PAGE);
				gen[pg] = ZERO_WRITTEN;
			}
		}
		if (munmap(b, b_pages * PAGE))
			die("munmap");
		b = map_at(b, b_pages * PAGE);
		b_seed = 100 + k;
		fill(b, b_seed, b_pages);
		if (!c) {
			c = map_at(NULL, c_pages * PAGE);
			c_seed = 50;
			fill(c, c_seed, c_pages);
		} else {
			uint64_t *w = (uint64_t *)c;
			for (size_t i = 0; i < PAGE / 8; i++)
				w[i] = pattern(50 + k, 0, i);
		}
		if (k == 2) {
			if (mprotect(d, PAGE, PROT_READ | PROT_WRITE))
				die("mprotect");
			d_seed = 78;
			fill(d, d_seed, 1);
			mprotect(d, PAGE, PROT_READ);
		}
		char path[4200], tmp[4300], num[16];
		snprintf(path, sizeof path, "%s.round", result);
		snprintf(tmp, sizeof tmp, "%s.tmp", path);
		int n = snprintf(num, sizeof num, "%d", k);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, num, n) != n || close(fd) || rename(tmp, path))
			die("round file");
	}

	static struct report r;
	size_t bad_pages = 0, first_bad = (size_t)-1;
	for (size_t pg = 0; pg < pages; pg++) {
		int ok;
		if (gen[pg] == ZERO_DROPPED || gen[pg] == ZERO_WRITTEN)
			ok = page_is_zero(a + pg * PAGE);
		else
			ok = page_diff(a, gen[pg], pg) == 0;
		if (!ok) {
			bad_pages++;
			if (first_bad == (size_t)-1)
				first_bad = pg;
		}
	}
	CHECK(&r, "area A", bad_pages == 0, "%zu bad pages of %zu, the first %zu (gen %d)", bad_pages, pages, first_bad,
	      first_bad == (size_t)-1 ? -1 : gen[first_bad]);
	size_t bad_b = 0;
	for (size_t pg = 0; pg < b_pages; pg++)
		bad_b += page_diff(b, b_seed, pg) != 0;
	CHECK(&r, "area B (mapped again)", bad_b == 0, "%zu bad pages (seed %d)", bad_b, b_seed);
	if (!c) {
		CHECK(&r, "area C (new)", k == 0, "not mapped after %d rounds", k);
	} else {
		size_t bad_c = 0;
		uint64_t *w = (uint64_t *)c;
		for (size_t i = 0; i < PAGE / 8; i++)
			bad_c += w[i] != pattern(k > 1 ? 50 + k : 50, 0, i);
		for (size_t pg = 1; pg < c_pages; pg++)
			bad_c += page_diff(c, c_seed, pg) != 0;
		CHECK(&r, "area C (new)", bad_c == 0, "%zu bad words/pages", bad_c);
	}
	CHECK(&r, "area D (read-only, written once)", page_diff(d, d_seed, 0) == 0, "seed %d", d_seed);
	CHECK(&r, "rounds", k == rounds, "ran %d rounds, want %d", k, rounds);
	if (finish_report(&r, result))
		die("report");
	return report_status(&r);
}
