/*
 * Self-check for `restore --mmap-page-image` (criu-cli/tests/mmap_image.rs).
 *
 * Usage: mmapimg DIR MIB WRITERS [nothp]
 *
 * Maps MIB MiB of private anonymous memory. The first part (all of it when
 * WRITERS is 0, else all but WRITERS * 8 MiB) is filled with a pattern and
 * read back, every byte, over and over by the main thread; the last
 * WRITERS * 8 MiB are written by WRITERS threads, each its own 8 MiB, as
 * fast as they can: every page holds a generation counter in its first and
 * last word, and the thread checks the page still holds the generation it
 * wrote last (kept in its own array) before writing the next one. This runs
 * from start-up through the dump, the restore and the conversion of the
 * mappings. Each writer also keeps STACK_PAGES pages of generation counters
 * in an array on its own thread stack, written and checked the same way:
 * after a `--mmap-page-image` restore the stack is mapped from the image
 * (a stretch of more than 16 pages) and the thread runs on it while it is
 * converted. The writers' stack arrays are listed in DIR/stacks ("ADDR
 * BYTES" per line, hexadecimal address). The region is advised
 * MADV_HUGEPAGE unless "nothp" is given (its address and size in
 * DIR/region, the same way): the converted memory must stay eligible for
 * huge pages. Prints "READY PID"
 * once every part runs. On SIGUSR1 (sent once
 * the conversion is done and the images are deleted) the threads stop, each
 * checks all of its pages once more, the main thread makes one more full
 * pass, and the report goes to DIR/result: "ok" lines and "ALL OK".
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <pthread.h>
#include <sys/mman.h>

#define WRITER_BYTES (8UL << 20)
#define STACK_PAGES 64
#define SEED 0x5eed

static volatile sig_atomic_t stop;
static atomic_int started;

static void on_usr1(int sig)
{
	(void)sig;
	stop = 1;
}

struct writer {
	pthread_t th;
	uint64_t *pages; /* WRITER_BYTES of the region */
	uint64_t *gen;   /* the generation last written, per page */
	uint64_t rounds, lost, first_lost_page;
	uint64_t *stack;      /* the array on the thread's stack */
	uint64_t *stack_gen;  /* the generation last written, per stack page */
	uint64_t stack_lost;
};

/* Checks the page's counters against *gen and writes the next
 * generation; returns 1 if the page had lost a write. */
static int bump(uint64_t *pg, uint64_t *gen)
{
	size_t words = PAGE / 8;
	int lost = pg[0] != *gen || pg[words - 1] != *gen;
	uint64_t next = *gen + 1;
	pg[0] = next;
	pg[words - 1] = next;
	*gen = next;
	return lost;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t n = WRITER_BYTES / PAGE, words = PAGE / 8;
	/* Page-aligned so that its pages are whole stack pages. */
	uint64_t stack[STACK_PAGES * (PAGE / 8)] __attribute__((aligned(4096)));
	memset(stack, 0, sizeof stack);
	w->stack = stack;
	atomic_fetch_add(&started, 1);
	do {
		for (size_t p = 0; p < STACK_PAGES; p++)
			w->stack_lost += bump(stack + p * words, &w->stack_gen[p]);
		/* The compiler must not keep the array in registers. */
		__asm__ volatile("" : : "r"(stack) : "memory");
		for (size_t p = 0; p < n; p++) {
			uint64_t *pg = w->pages + p * words;
			if (pg[0] != w->gen[p] || pg[words - 1] != w->gen[p]) {
				if (!w->lost)
					w->first_lost_page = p;
				w->lost++;
			}
			uint64_t next = w->gen[p] + 1;
			pg[0] = next;
			pg[words - 1] = next;
			w->gen[p] = next;
		}
		w->rounds++;
	} while (!stop);
	/* Final check of every page. */
	for (size_t p = 0; p < n; p++) {
		uint64_t *pg = w->pages + p * words;
		if (pg[0] != w->gen[p] || pg[words - 1] != w->gen[p])
			w->lost++;
	}
	for (size_t p = 0; p < STACK_PAGES; p++)
		if (stack[p * words] != w->stack_gen[p] || stack[p * words + words - 1] != w->stack_gen[p])
			w->stack_lost++;
	return NULL;
}

/* Pages of the checked part that differ from the pattern. */
static size_t check_pass(const void *base, size_t pages, size_t *first_bad)
{
	size_t bad = 0;
	for (size_t pg = 0; pg < pages; pg++)
		if (page_diff(base, SEED, pg)) {
			if (!bad)
				*first_bad = pg;
			bad++;
		}
	return bad;
}

int main(int argc, char **argv)
{
	if (argc != 4 && !(argc == 5 && !strcmp(argv[4], "nothp")))
		return 2;
	int nothp = argc == 5;
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	size_t total = strtoul(argv[2], NULL, 10) << 20;
	int nw = atoi(argv[3]);
	size_t wbytes = (size_t)nw * WRITER_BYTES;
	if (wbytes > total)
		return 2;
	size_t checked = total - wbytes;
	char *region = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	if (!nothp && madvise(region, total, MADV_HUGEPAGE))
		die("madvise");
	fill(region, SEED, checked / PAGE);
	struct writer *ws = calloc((size_t)nw + 1, sizeof *ws);
	for (int i = 0; i < nw; i++) {
		ws[i].pages = (uint64_t *)(region + checked + (size_t)i * WRITER_BYTES);
		ws[i].gen = calloc(WRITER_BYTES / PAGE, sizeof(uint64_t));
		ws[i].stack_gen = calloc(STACK_PAGES, sizeof(uint64_t));
		if (!ws[i].gen || !ws[i].stack_gen || pthread_create(&ws[i].th, NULL, writer_main, &ws[i]))
			die("writer");
	}
	/* SIGUSR1 goes to the main thread only (the writers inherit the mask
	 * with it blocked), which polls for it between passes. */
	wait_count(&started, nw);
	char path[4096];
	snprintf(path, sizeof path, "%s/stacks", argv[1]);
	FILE *f = fopen(path, "w");
	if (!f)
		die("stacks");
	for (int i = 0; i < nw; i++)
		fprintf(f, "%lx %lx\n", (unsigned long)ws[i].stack, STACK_PAGES * PAGE);
	if (fclose(f))
		die("stacks");
	snprintf(path, sizeof path, "%s/region", argv[1]);
	f = fopen(path, "w");
	if (!f || fprintf(f, "%lx %lx\n", (unsigned long)region, (unsigned long)total) < 0 || fclose(f))
		die("region");
	announce_ready("READY %d\n", getpid());

	size_t passes = 0, bad = 0, first_bad = 0;
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	while (!stop) {
		bad += check_pass(region, checked / PAGE, &first_bad);
		passes++;
		struct timespec zero = {0, 0};
		if (sigtimedwait(&usr1, NULL, &zero) == SIGUSR1)
			stop = 1;
	}
	uint64_t rounds = 0, lost = 0, stack_lost = 0;
	for (int i = 0; i < nw; i++) {
		pthread_join(ws[i].th, NULL);
		rounds += ws[i].rounds;
		lost += ws[i].lost;
		stack_lost += ws[i].stack_lost;
	}
	size_t last = check_pass(region, checked / PAGE, &first_bad);

	struct report r = {0};
	CHECK(&r, "checked part read whole", passes >= 1, "%zu passes", passes);
	CHECK(&r, "every byte right on every pass", bad == 0, "%zu bad pages, first %zu", bad, first_bad);
	CHECK(&r, "every byte right after the images are gone", last == 0, "%zu bad pages, first %zu", last, first_bad);
	if (nw) {
		CHECK(&r, "writers ran", rounds >= (uint64_t)nw, "%llu rounds", (unsigned long long)rounds);
		CHECK(&r, "no write lost", lost == 0, "%llu pages lost a write (writer 0 first at page %llu)", (unsigned long long)lost,
		      (unsigned long long)ws[0].first_lost_page);
		CHECK(&r, "no write to a thread stack lost", stack_lost == 0, "%llu stack pages lost a write", (unsigned long long)stack_lost);
	}
	say(&r, "info passes %zu writer rounds %llu\n", passes, (unsigned long long)rounds);
	return finish_report(&r, "result") ? 3 : report_status(&r);
}
