/*
 * Live snapshots (dump -R and pre-dump copy memory while the process runs):
 * threads that write their memory all the time, in a way that lets the
 * process check from inside, exactly, that its memory is that of a single
 * instant.
 *
 *   livewriter DIR STATIC_MIB
 *
 * Runs in DIR (a session of its own). DIR/ctl, one page of a file mapped
 * MAP_SHARED (not part of the private memory a dump copies; the test reads
 * and writes it from outside): `go` (1: write, 0: park between steps) and
 * `count[t]`, a copy of each writer's progress for the test to watch.
 *
 * NW writer threads each own NP pages of private anonymous memory. Step s
 * of writer t writes every word of page (s * STRIDE) % NP with generation
 * s + 1, then stores done = s + 1 (in private memory beside the pages). So
 * at any instant, with done = c, page p holds the generation of the last
 * step s < c that wrote it, plus one (0: the initial fill), except the page
 * of step c, which a writer stopped in the middle holds half new, half old.
 * A snapshot taken at one instant therefore satisfies this for its own
 * `done`: a page copied after a later write holds a newer generation, one
 * copied from before the instant an older one. Writer 0 writes its pages
 * with read(2) from a pipe (kernel-mode writes); the others store them.
 *
 * STATIC_MIB more MiB are filled once with a pattern and never written.
 * A 1 MiB area V holds pattern 20 + remaps; SIGUSR2 makes the main thread
 * unmap V and map it again at the same address with the next pattern
 * (address-space changes during a live copy).
 *
 * SIGUSR1 (sent with go = 0): the main thread waits until every writer is
 * parked, then checks every writer's pages against its `done` (a restored
 * writer first finishes the step it was in) and the static area, writes
 * the report to DIR/result ("ALL OK" last when all is well) and waits for
 * the next SIGUSR1; go = 1 lets the writers go on.
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <pthread.h>
#include <sys/mman.h>

enum { NW = 4, NP = 2048, STRIDE = 1021, WORDS = PAGE / 8 };

struct ctl {
	volatile int go;
	int pad;
	volatile uint64_t count[NW];
};

struct writer {
	int t;
	uint64_t *pages;
	volatile uint64_t done;
	volatile int parked;
	int pipe[2];
	uint64_t buf[WORDS];
};

static struct ctl *ctl;
static struct writer writers[NW];
static volatile sig_atomic_t want_check, want_remap;
enum { VPAGES = 256 };
static void *victim;
static uint64_t remaps;

static uint64_t gen_word(int t, uint64_t gen, uint64_t page, uint64_t w)
{
	return (gen << 24) ^ ((uint64_t)t << 56) ^ (page << 12) ^ w ^ 0x5a5a000000000001ULL;
}

static void nap_us(long us)
{
	struct timespec ts = {0, us * 1000};
	nanosleep(&ts, NULL);
}

static void *write_loop(void *arg)
{
	struct writer *w = arg;
	for (uint64_t s = w->done;; s = w->done) {
		/* parked is 1 only while this thread cannot be writing: it is
		 * cleared before go is read again. */
		for (;;) {
			w->parked = 0;
			if (ctl->go)
				break;
			w->parked = 1;
			nap_us(1000);
		}
		uint64_t p = (s * STRIDE) % NP;
		uint64_t *page = w->pages + p * WORDS;
		if (w->t == 0) {
			for (uint64_t i = 0; i < WORDS; i++)
				w->buf[i] = gen_word(w->t, s + 1, p, i);
			if (write(w->pipe[1], w->buf, PAGE) != (ssize_t)PAGE)
				die("write pipe");
			for (size_t got = 0; got < PAGE;) {
				ssize_t n = read(w->pipe[0], (char *)page + got, PAGE - got);
				if (n <= 0)
					die("read pipe");
				got += (size_t)n;
			}
		} else {
			for (uint64_t i = 0; i < WORDS; i++)
				page[i] = gen_word(w->t, s + 1, p, i);
		}
		__atomic_store_n(&w->done, s + 1, __ATOMIC_RELEASE);
		ctl->count[w->t] = s + 1;
		if ((s & 7) == 7)
			nap_us(50);
	}
	return NULL;
}

static void on_usr1(int s)
{
	(void)s;
	want_check = 1;
}

static void on_usr2(int s)
{
	(void)s;
	want_remap = 1;
}

static void map_victim(void)
{
	void *p = mmap(victim, VPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | (victim ? MAP_FIXED : 0), -1, 0);
	if (p == MAP_FAILED)
		die("mmap victim");
	victim = p;
	fill(victim, 20 + remaps, VPAGES);
}

static void check(struct report *r, uint64_t *stat, size_t stat_pages)
{
	static uint64_t expect[NP];
	for (int t = 0; t < NW; t++) {
		struct writer *w = &writers[t];
		uint64_t c = w->done;
		memset(expect, 0, sizeof expect);
		for (uint64_t s = c > NP ? c - NP : 0; s < c; s++)
			expect[(s * STRIDE) % NP] = s + 1;
		size_t bad = 0, first = 0;
		uint64_t got_gen = 0;
		for (uint64_t p = 0; p < NP; p++) {
			for (uint64_t i = 0; i < WORDS; i++) {
				if (w->pages[p * WORDS + i] != gen_word(t, expect[p], p, i)) {
					if (!bad++) {
						first = p;
						got_gen = (w->pages[p * WORDS + i] ^ gen_word(t, 0, p, i)) >> 24;
					}
					break;
				}
			}
		}
		CHECK(r, "writer pages hold their generations", bad == 0,
		      "writer %d done=%llu: %zu pages wrong, first page %zu holds generation %llu instead of %llu", t,
		      (unsigned long long)c, bad, first, (unsigned long long)got_gen, (unsigned long long)expect[first]);
		say(r, "ok writer %d done=%llu\n", t, (unsigned long long)c);
	}
	size_t bad = 0;
	for (size_t pg = 0; pg < stat_pages; pg++)
		bad += page_diff(stat, 7, pg) != 0;
	CHECK(r, "static area", bad == 0, "%zu of %zu pages differ", bad, stat_pages);
	bad = 0;
	for (size_t pg = 0; pg < VPAGES; pg++)
		bad += page_diff(victim, 20 + remaps, pg) != 0;
	CHECK(r, "remapped area", bad == 0, "%zu of %d pages differ from pattern %llu", bad, VPAGES, (unsigned long long)(20 + remaps));
	say(r, "ok remaps=%llu\n", (unsigned long long)remaps);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: livewriter DIR STATIC_MIB\n");
		return 2;
	}
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	size_t stat_pages = (size_t)atol(argv[2]) * 256;
	int fd = open("ctl", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, PAGE))
		die("ctl");
	ctl = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (ctl == MAP_FAILED)
		die("mmap ctl");
	close(fd);
	ctl->go = 1;
	uint64_t *stat = mmap(NULL, stat_pages * PAGE + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (stat == MAP_FAILED)
		die("mmap static");
	fill(stat, 7, stat_pages);
	map_victim();
	handle_blocked(SIGUSR2, on_usr2);
	for (int t = 0; t < NW; t++) {
		struct writer *w = &writers[t];
		w->t = t;
		w->pages = mmap(NULL, NP * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (w->pages == MAP_FAILED)
			die("mmap writer");
		for (uint64_t p = 0; p < NP; p++)
			for (uint64_t i = 0; i < WORDS; i++)
				w->pages[p * WORDS + i] = gen_word(t, 0, p, i);
		if (t == 0 && pipe(w->pipe))
			die("pipe");
		pthread_t th;
		if (pthread_create(&th, NULL, write_loop, w))
			die("pthread_create");
	}
	announce_ready("READY pid=%d\n", getpid());
	sigset_t wait;
	sigprocmask(SIG_BLOCK, NULL, &wait);
	sigdelset(&wait, SIGUSR1);
	sigdelset(&wait, SIGUSR2);
	for (;;) {
		while (!want_check && !want_remap)
			sigsuspend(&wait);
		if (want_remap) {
			want_remap = 0;
			if (munmap(victim, VPAGES * PAGE))
				die("munmap victim");
			remaps++;
			map_victim();
			continue;
		}
		want_check = 0;
		for (int t = 0; t < NW; t++)
			while (!writers[t].parked)
				nap_us(1000);
		struct report r = {.len = 0};
		check(&r, stat, stat_pages);
		if (finish_report(&r, "result"))
			die("report");
	}
}
