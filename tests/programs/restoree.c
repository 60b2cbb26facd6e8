/*
 * Test program for criu-rs restore.
 *
 * Usage: restoree WORKDIR   (stdout: a log file; stdin: /dev/null)
 * Puts known state in place (memory of every kind, registers, signal
 * state, files, cwd, umask), prints "READY" and waits in pause() with
 * known values in r12-r15 and ymm0-ymm3 until SIGUSR1 arrives (having
 * moved its vDSO first). Then it
 * checks everything from inside, prints "OK" or "FAIL <what>" lines and
 * exits 0 if all checks passed, 1 otherwise.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define ANON_PAGES 2048 /* 8 MiB */

static int fails;

/* Prints "FAIL <what>" and counts it unless ok. */
static void check(int ok, const char *fmt, ...)
{
	va_list ap;
	if (ok)
		return;
	va_start(ap, fmt);
	fputs("FAIL ", stdout);
	vprintf(fmt, ap);
	putchar('\n');
	va_end(ap);
	fails++;
}
#define CHECK(cond, ...) check(!!(cond), __VA_ARGS__)

static volatile sig_atomic_t got_usr1, alarms, rt_value = -1, usr2_count;
static uint8_t ymm_in[128] __attribute__((aligned(32)));
static uint8_t ymm_out[128] __attribute__((aligned(32)));
static uint64_t gp_out[4];
static const uint64_t GP[4] = {0x1111222233334444ULL, 0x5555666677778888ULL, 0x99990000aaaabbbbULL, 0xccccddddeeeeffffULL};

static uint64_t pattern(uint64_t page, uint64_t word)
{
	return 0xc0ffee0000000000ULL ^ (page << 24) ^ (word * 0x9e3779b97f4a7c15ULL);
}

static int is_hole(uint64_t p) { return p % 7 == 3; }

static volatile sig_atomic_t ptimer_ticks;
static void on_usr1(int s) { (void)s; got_usr1 = 1; }
static void on_ptimer(int s) { (void)s; ptimer_ticks++; }
static void on_alarm(int s) { (void)s; alarms++; }
static void on_usr2(int s) { (void)s; usr2_count++; }
static void on_rt(int s, siginfo_t *si, void *uc) { (void)s; (void)uc; rt_value = si->si_value.sival_int; }

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 13);
}

static int same(const uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)(seed + i * 13))
			return 0;
	return 1;
}

/* Address of dynamic symbol `name` in the vDSO image mapped at `base`. */
static void *vdso_sym(uintptr_t base, const char *name)
{
	Elf64_Ehdr *eh = (void *)base;
	Elf64_Phdr *ph = (void *)(base + eh->e_phoff);
	uintptr_t load = 0;
	for (int i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD) {
			load = ph[i].p_vaddr;
			break;
		}
	Elf64_Shdr *sh = (void *)(base + eh->e_shoff);
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		Elf64_Sym *sym = (void *)(base + sh[i].sh_offset);
		const char *str = (const char *)(base + sh[sh[i].sh_link].sh_offset);
		for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
			if (!strcmp(str + sym[k].st_name, name))
				return (void *)(base + sym[k].st_value - load);
	}
	return NULL;
}

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

/*
 * Moves [vvar], [vvar_vclock] and [vdso] together (keeping their relative
 * layout) to a new place; returns __vdso_clock_gettime there. glibc keeps
 * pointing at the old place, so glibc's clock_gettime must not be used
 * afterwards.
 */
static clock_gettime_fn move_vdso(uintptr_t *new_vdso)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	struct {
		uintptr_t s, e;
	} a[4];
	int n = 0;
	uintptr_t lo = ~0UL, hi = 0, vdso = 0;
	while (n < 4 && fgets(line, sizeof line, f)) {
		uintptr_t s, e;
		char name[256] = "";
		sscanf(line, "%lx-%lx %*s %*s %*s %*s %255s", &s, &e, name);
		if (strcmp(name, "[vdso]") && strcmp(name, "[vvar]") && strcmp(name, "[vvar_vclock]"))
			continue;
		a[n].s = s;
		a[n++].e = e;
		lo = s < lo ? s : lo;
		hi = e > hi ? e : hi;
		if (!strcmp(name, "[vdso]"))
			vdso = s;
	}
	fclose(f);
	char *hole = mmap(NULL, hi - lo + (2 << 20), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t dst = ((uintptr_t)hole + (1 << 20)) & ~0xfffUL;
	for (int i = 0; i < n; i++)
		if (mremap((void *)a[i].s, a[i].e - a[i].s, a[i].e - a[i].s, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (void *)(dst + (a[i].s - lo))) == MAP_FAILED)
			return NULL;
	*new_vdso = dst + (vdso - lo);
	return (clock_gettime_fn)vdso_sym(*new_vdso, "__vdso_clock_gettime");
}

/* Loads r12-r15 and ymm0-3, pauses until SIGUSR1 set got_usr1, stores them. */
static void wait_with_registers(void)
{
	__asm__ volatile(
		"mov 0(%[gp]), %%r12\n\t"
		"mov 8(%[gp]), %%r13\n\t"
		"mov 16(%[gp]), %%r14\n\t"
		"mov 24(%[gp]), %%r15\n\t"
		"vmovdqa 0(%[yin]), %%ymm0\n\t"
		"vmovdqa 32(%[yin]), %%ymm1\n\t"
		"vmovdqa 64(%[yin]), %%ymm2\n\t"
		"vmovdqa 96(%[yin]), %%ymm3\n\t"
		"1:\n\t"
		"mov %[nr], %%eax\n\t"
		"syscall\n\t"
		"cmpl $0, %[flag]\n\t"
		"je 1b\n\t"
		"mov %%r12, 0(%[gout])\n\t"
		"mov %%r13, 8(%[gout])\n\t"
		"mov %%r14, 16(%[gout])\n\t"
		"mov %%r15, 24(%[gout])\n\t"
		"vmovdqa %%ymm0, 0(%[yout])\n\t"
		"vmovdqa %%ymm1, 32(%[yout])\n\t"
		"vmovdqa %%ymm2, 64(%[yout])\n\t"
		"vmovdqa %%ymm3, 96(%[yout])\n\t"
		:
		: [gp] "r"(GP), [yin] "r"(ymm_in), [gout] "r"(gp_out), [yout] "r"(ymm_out), [nr] "i"(SYS_pause),
		  [flag] "m"(got_usr1)
		: "rax", "rcx", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "memory");
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	const char *dir = argv[1];
	char path[4096];

	/* Anonymous memory with MADV_DONTNEED holes. */
	uint64_t *anon = mmap(NULL, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (uint64_t p = 0; p < ANON_PAGES; p++)
		for (uint64_t w = 0; w < PAGE / 8; w++)
			anon[p * PAGE / 8 + w] = pattern(p, w);
	for (uint64_t p = 0; p < ANON_PAGES; p++)
		if (is_hole(p))
			madvise((char *)anon + p * PAGE, PAGE, MADV_DONTNEED);
	/* Read-only and PROT_NONE areas with contents. */
	uint8_t *ro = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(ro, 4 * PAGE, 11);
	mprotect(ro, 4 * PAGE, PROT_READ);
	uint8_t *none = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(none, 4 * PAGE, 22);
	mprotect(none, 4 * PAGE, PROT_NONE);
	/* Private file mapping: page 1 copied-on-write, pages 0/2/3 untouched. */
	snprintf(path, sizeof path, "%s/private.bin", dir);
	int pf = open(path, O_RDONLY);
	uint8_t *priv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, pf, 0);
	close(pf);
	fill(priv + PAGE, PAGE, 33);
	/* Shared file mapping: written through, so the file holds the data. */
	snprintf(path, sizeof path, "%s/shared.bin", dir);
	int sf = open(path, O_RDWR);
	uint8_t *shared = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, sf, 0);
	close(sf);
	fill(shared, 2 * PAGE, 44);
	/* Shared anonymous memory: contents, and still shared with a child. */
	uint8_t *shanon = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fill(shanon, 3 * PAGE, 66);
	/* A grows-down area. */
	uint8_t *gd = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
	fill(gd, 4 * PAGE, 55);

	/* Files. */
	snprintf(path, sizeof path, "%s/data.txt", dir);
	int data = open(path, O_RDWR);
	char buf[64];
	if (read(data, buf, 5) != 5)
		return 3;
	int dupd = dup(data);
	snprintf(path, sizeof path, "%s/append.txt", dir);
	int app = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	snprintf(path, sizeof path, "%s/ghost.txt", dir);
	int ghost = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(ghost, "ghost contents", 14) != 14)
		return 3;
	unlink(path);
	lseek(ghost, 6, SEEK_SET);
	snprintf(path, sizeof path, "%s/sub", dir);
	mkdir(path, 0755);
	if (chdir(path))
		return 3;
	umask(027);

	/* Signals: handlers, a blocked mask, a queued RT signal, an itimer. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_RESTART | SA_NODEFER;
	sigaddset(&sa.sa_mask, SIGINT);
	sigaction(SIGUSR2, &sa, NULL);
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGRTMIN + 2, &sa, NULL);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &block, NULL);
	union sigval v = {.sival_int = 4242};
	sigqueue(getpid(), SIGRTMIN + 2, v);
	struct itimerval it = {.it_interval = {0, 20000}, .it_value = {0, 20000}};
	setitimer(ITIMER_REAL, &it, NULL);
	/* A POSIX timer signalling SIGPROF every 10 ms, and an alternate stack. */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_ptimer;
	sa.sa_flags = SA_RESTART | SA_ONSTACK;
	sigaction(SIGPROF, &sa, NULL);
	struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGPROF};
	timer_t tid;
	if (timer_create(CLOCK_MONOTONIC, &sev, &tid))
		return 3;
	struct itimerspec its = {.it_interval = {0, 10000000}, .it_value = {0, 10000000}};
	timer_settime(tid, 0, &its, NULL);
	static uint8_t altstack[64 * 1024];
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
	sigaltstack(&ss, NULL);

	prctl(PR_SET_NAME, "restoree-name");
	uintptr_t moved_vdso = 0;
	clock_gettime_fn moved_cg = move_vdso(&moved_vdso);
	struct timespec t0 = {0, 0};
	if (!moved_cg || moved_cg(CLOCK_MONOTONIC, &t0))
		return 5;

	for (int i = 0; i < 128; i++)
		ymm_in[i] = (uint8_t)(i * 7 + 3);
	printf("READY pid=%d\n", getpid());
	wait_with_registers();

	/* ---- restored: check everything ---- */
	for (int i = 0; i < 4; i++)
		CHECK(gp_out[i] == GP[i], "r%d %#lx", 12 + i, (unsigned long)gp_out[i]);
	CHECK(memcmp(ymm_in, ymm_out, sizeof ymm_in) == 0, "ymm0-3 changed");
	uint64_t bad = 0;
	for (uint64_t p = 0; p < ANON_PAGES; p++)
		for (uint64_t w = 0; w < PAGE / 8; w++)
			if (anon[p * PAGE / 8 + w] != (is_hole(p) ? 0 : pattern(p, w)))
				bad++;
	CHECK(bad == 0, "anonymous memory: %lu bad words", (unsigned long)bad);
	CHECK(same(ro, 4 * PAGE, 11), "read-only area contents");
	CHECK(mprotect(none, 4 * PAGE, PROT_READ) == 0 && same(none, 4 * PAGE, 22), "PROT_NONE area contents");
	uint8_t file_page[PAGE];
	snprintf(path, sizeof path, "%s/private.bin", dir);
	int pf2 = open(path, O_RDONLY);
	CHECK(pread(pf2, file_page, PAGE, 0) == PAGE && memcmp(priv, file_page, PAGE) == 0, "private file page 0");
	CHECK(same(priv + PAGE, PAGE, 33), "private file page 1 (copied on write)");
	CHECK(pread(pf2, file_page, PAGE, 2 * PAGE) == PAGE && memcmp(priv + 2 * PAGE, file_page, PAGE) == 0,
	      "private file page 2");
	close(pf2);
	CHECK(same(shared, 2 * PAGE, 44), "shared file mapping contents");
	shared[0] = 0x5a;
	snprintf(path, sizeof path, "%s/shared.bin", dir);
	int sf2 = open(path, O_RDONLY);
	CHECK(pread(sf2, buf, 1, 0) == 1 && buf[0] == 0x5a, "shared mapping writes reach the file");
	close(sf2);
	CHECK(same(gd, 4 * PAGE, 55), "grows-down area contents");
	CHECK(same(shanon, 3 * PAGE, 66) && shanon[5 * PAGE] == 0, "shared anonymous contents");
	pid_t kid = fork();
	if (kid == 0) {
		shanon[7 * PAGE] = 0x77;
		_exit(0);
	}
	int kst;
	waitpid(kid, &kst, 0);
	CHECK(shanon[7 * PAGE] == 0x77, "shared anonymous memory still shared");

	CHECK(lseek(data, 0, SEEK_CUR) == 5, "data.txt offset %ld", (long)lseek(data, 0, SEEK_CUR));
	CHECK(read(dupd, buf, 3) == 3 && memcmp(buf, "567", 3) == 0, "dup'd fd reads on");
	CHECK(lseek(data, 0, SEEK_CUR) == 8, "dup'd fds share the offset");
	CHECK((fcntl(app, F_GETFL) & O_APPEND) != 0, "O_APPEND");
	CHECK((fcntl(app, F_GETFD) & FD_CLOEXEC) != 0, "close-on-exec kept");
	CHECK((fcntl(data, F_GETFD) & FD_CLOEXEC) == 0, "no close-on-exec on data");
	CHECK(lseek(ghost, 0, SEEK_CUR) == 6, "ghost offset");
	memset(buf, 0, sizeof buf);
	CHECK(pread(ghost, buf, 14, 0) == 14 && memcmp(buf, "ghost contents", 14) == 0, "ghost contents");
	struct stat st;
	CHECK(fstat(ghost, &st) == 0 && st.st_nlink == 0, "ghost file unlinked");
	char cwd[4096];
	snprintf(path, sizeof path, "%s/sub", dir);
	CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, path) == 0, "cwd %s", cwd);
	char comm[32] = "";
	prctl(PR_GET_NAME, comm);
	CHECK(!strcmp(comm, "restoree-name"), "comm %s", comm);
	mode_t old = umask(0);
	CHECK(old == 027, "umask %o", old);

	struct sigaction cur;
	sigaction(SIGUSR2, NULL, &cur);
	CHECK(cur.sa_handler == on_usr2 && (cur.sa_flags & SA_NODEFER) && sigismember(&cur.sa_mask, SIGINT), "SIGUSR2 action");
	sigset_t now;
	sigprocmask(SIG_SETMASK, NULL, &now);
	CHECK(sigismember(&now, SIGINT) && sigismember(&now, SIGRTMIN + 2), "blocked mask");
	sigset_t pend;
	sigpending(&pend);
	CHECK(sigismember(&pend, SIGRTMIN + 2), "queued RT signal still pending");
	sigprocmask(SIG_UNBLOCK, &block, NULL);
	CHECK(rt_value == 4242, "RT signal value %d", (int)rt_value);
	raise(SIGUSR2);
	CHECK(usr2_count == 1, "SIGUSR2 handler ran");
	int before = alarms;
	struct timespec ts = {0, 200000000};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	CHECK(alarms > before, "interval timer still fires (%d)", alarms - before);
	int pbefore = ptimer_ticks;
	ts.tv_sec = 0;
	ts.tv_nsec = 100000000;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	CHECK(ptimer_ticks > pbefore, "POSIX timer still fires (%d)", ptimer_ticks - pbefore);
	struct itimerspec cur_its;
	CHECK(timer_gettime(tid, &cur_its) == 0 && cur_its.it_interval.tv_nsec == 10000000, "POSIX timer id and interval");
	stack_t cur_ss;
	CHECK(sigaltstack(NULL, &cur_ss) == 0 && cur_ss.ss_sp == altstack && cur_ss.ss_size == sizeof altstack,
	      "sigaltstack");
	struct timespec t1 = {0, 0};
	CHECK(moved_cg(CLOCK_MONOTONIC, &t1) == 0 && (t1.tv_sec > t0.tv_sec || t1.tv_nsec > t0.tv_nsec),
	      "clock_gettime through the moved vDSO");
	char want[64], line[512];
	snprintf(want, sizeof want, "%lx-", (unsigned long)moved_vdso);
	FILE *maps = fopen("/proc/self/maps", "r");
	int at_moved = 0;
	while (fgets(line, sizeof line, maps))
		if (!strncmp(line, want, strlen(want)) && strstr(line, "[vdso]"))
			at_moved = 1;
	fclose(maps);
	CHECK(at_moved, "[vdso] is where the program moved it");

	printf(fails ? "FAILED %d\n" : "OK\n", fails);
	return fails ? 1 : 0;
}
