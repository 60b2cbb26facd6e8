/*
 * Test program for criu-rs restore: a process that checks itself.
 *
 * Usage: fullstate DIR RESULT_FILE
 *
 * Phase 1 puts known state in place (memory of every kind, a moved vDSO,
 * registers, signal state, timers, files, cwd, umask, rlimits), snapshots
 * what it will compare against later, points fds 0-2 at /dev/null (so that
 * nothing outside the process is needed after a restore), writes
 * "READY pid=N ..." on the original stdout and then waits in a raw
 * rt_sigsuspend(2) loop with known values in rbx, r8-r10, r12-r15,
 * ymm0-ymm15 (zmm16-zmm31 and k1-k7 too when the CPU has AVX-512) and a
 * non-default MXCSR.
 *
 * Phase 2 starts when SIGUSR1 arrives (the test sends it, after a restore or
 * without any checkpoint at all). The process checks every item from the
 * inside, writes one line per check ("ok NAME" or "FAIL NAME: detail") and a
 * last line "ALL OK" or "FAIL N check(s)" to RESULT_FILE (written to
 * RESULT_FILE.tmp and renamed, so the file appears complete), undoes what
 * it changed in files (so the same images can be restored again) and exits
 * 0 when all checks passed, 10 + the number of failed checks (at most 110)
 * otherwise; 99 means it could not set itself up, 98 that it could not write
 * the result file.
 *
 * The moved vDSO: glibc keeps pointers into the vDSO it found at start-up,
 * so after the move this program never calls glibc's clock_gettime,
 * gettimeofday, time or sched_getcpu; it calls the moved vDSO's
 * __vdso_clock_gettime through an address it resolves from the vDSO's own
 * dynamic symbol table.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "selfcheck.h"

/* ---------- vDSO ---------- */

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

struct range {
	uint64_t start, end;
	char name[32];
};

/* Finds the [vvar*] and [vdso] mappings; returns how many. */
static int find_vdso_ranges(struct range *r, int max)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;
	if (!f)
		die("open /proc/self/maps");
	while (fgets(line, sizeof line, f) && n < max) {
		char *name = strchr(line, '[');
		if (!name || (strncmp(name, "[vvar", 5) && strncmp(name, "[vdso]", 6)))
			continue;
		sscanf(line, "%lx-%lx", &r[n].start, &r[n].end);
		snprintf(r[n].name, sizeof r[n].name, "%.*s", (int)strcspn(name, "\n"), name);
		n++;
	}
	fclose(f);
	return n;
}

/* Offset of `sym` in the vDSO image at `base` (from its dynsym), or 0. */
static uint64_t vdso_sym(uint64_t base, const char *sym)
{
	const Elf64_Ehdr *eh = (const void *)base;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG))
		return 0;
	const Elf64_Phdr *ph = (const void *)(base + eh->e_phoff);
	uint64_t load_vaddr = 0;
	for (int i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD) {
			load_vaddr = ph[i].p_vaddr;
			break;
		}
	const Elf64_Shdr *sh = (const void *)(base + eh->e_shoff);
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != SHT_DYNSYM)
			continue;
		const Elf64_Sym *syms = (const void *)(base + sh[i].sh_offset);
		const char *str = (const void *)(base + sh[sh[i].sh_link].sh_offset);
		size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
		for (size_t j = 0; j < n; j++)
			if (syms[j].st_name && !strcmp(str + syms[j].st_name, sym))
				return syms[j].st_value - load_vaddr;
	}
	return 0;
}

/* ---------- state ---------- */

#define ANON_PAGES 2048 /* 8 MiB */
#define PRIV_PAGES 8
#define SHF_PAGES 4
#define RO_PAGES 16
#define NONE_PAGES 8
#define HOLE_PAGES 64
#define GD_PAGES 16
#define GHOST_LEN 10000
#define PIPE_LEN 3000
#define HEAP_LEN (48 * 1024)
#define ALT_SIZE (64 * 1024)
#define GD_HINT 0x5f0000000000UL
#define VDSO_HINT 0x5e0000000000UL

static const char *dir, *result_path;
static pid_t my_pid;
static uint8_t *anon, *priv, *shf, *shanon, *ro, *none, *holes, *gd, *heap, *alt;
static int fd_reg, fd_dup, fd_reg2, fd_hi = 100, fd_app, fd_cloexec, fd_ghost, fd_shf, fd_priv, pfd[2];
static char ghost_path[PATH_MAX + 16], cwd_before[PATH_MAX];
static char fds_before[1024];
static struct regblock rb;
static uint64_t wait_mask; /* the mask rt_sigsuspend waits with */
static struct report R;
static struct ksigaction sa_before[65];
static uint64_t mask_before;
static stack_t ss_before;
static int ptimer_id = -1, ptimer2_id = -1;
static struct rlimit nofile_before;
static long rseq_probe_before;
static uint64_t fs_before;
static __thread uint64_t tls_value;
static int avx512;
static int tkill_code;
static clock_gettime_fn vdso_cgt;
static uint64_t vdso_old, vdso_new;
static int vdso_nranges;
static struct range vdso_moved[4];

static volatile sig_atomic_t ticks, ptimer_ticks, usr1_on_altstack, hup_count;
static volatile int ptimer_last_value;

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)si, (void)ctx;
	char here;
	usr1_on_altstack = (uint8_t *)&here >= alt && (uint8_t *)&here < alt + ALT_SIZE;
	rb.go = 1;
}

static void on_alrm(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)si, (void)ctx;
	ticks++;
}

static void on_ptimer(int sig, siginfo_t *si, void *ctx)
{
	(void)sig, (void)ctx;
	ptimer_ticks++;
	ptimer_last_value = si->si_value.sival_int;
}

static void on_hup(int sig)
{
	(void)sig;
	hup_count++;
}

static long rseq_probe(void)
{
	void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
	long r = syscall(SYS_rseq, area, 32, 0, 0x53053053);
	return r < 0 ? -errno : r;
}

/* The open fds, as "0 1 2 3 ..." (from /proc/self/fd, without the dir's own fd). */
static void list_fds(char *out, size_t n)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fds[256], nfds = 0;
	if (!d)
		die("opendir /proc/self/fd");
	while ((e = readdir(d)) && nfds < 256) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		fds[nfds++] = atoi(e->d_name);
	}
	closedir(d);
	for (int i = 0; i < nfds; i++)
		for (int j = i + 1; j < nfds; j++)
			if (fds[j] < fds[i]) {
				int t = fds[i];
				fds[i] = fds[j];
				fds[j] = t;
			}
	out[0] = 0;
	for (int i = 0; i < nfds; i++)
		snprintf(out + strlen(out), n - strlen(out), "%s%d", i ? " " : "", fds[i]);
}

static void *map_at(uint64_t hint, size_t len, int prot, int flags)
{
	void *p = mmap((void *)hint, len, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static int open_in_dir(const char *name, int flags)
{
	int fd = open(name, flags, 0640);
	if (fd < 0)
		die(name);
	return fd;
}

static void write_all(int fd, const void *b, size_t n)
{
	if (write(fd, b, n) != (ssize_t)n)
		die("write");
}

/* ---------- phase 1 ---------- */

static void setup_memory(void)
{
	anon = map_at(0, ANON_PAGES * PAGE, PROT_READ | PROT_WRITE, 0);
	for (size_t p = 0; p < ANON_PAGES; p++) {
		if (p % 7 == 3)
			continue; /* never touched */
		if (p % 11 == 5)
			memset(anon + p * PAGE, 0, PAGE); /* touched, zero */
		else
			fill(anon + p * PAGE, 1, 1), ((uint64_t *)(anon + p * PAGE))[0] = p;
	}
	heap = malloc(HEAP_LEN);
	fill_bytes(heap, HEAP_LEN, 0x31);

	/* A private file mapping: pages 1 and 4 copied-on-write, the rest untouched. */
	uint8_t file_buf[PRIV_PAGES * PAGE];
	fill(file_buf, 2, PRIV_PAGES);
	fd_priv = open_in_dir("priv.dat", O_RDWR | O_CREAT | O_TRUNC);
	write_all(fd_priv, file_buf, sizeof file_buf);
	priv = mmap(NULL, PRIV_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_priv, 0);
	if (priv == MAP_FAILED)
		die("mmap priv");
	memset(priv + 1 * PAGE, 0xc1, 64);
	memset(priv + 4 * PAGE, 0xc4, 64);
	(void)*(volatile uint8_t *)(priv + 2 * PAGE); /* read-faulted, still the file's page */

	/* A shared file mapping written through. */
	fd_shf = open_in_dir("shared.dat", O_RDWR | O_CREAT | O_TRUNC);
	if (ftruncate(fd_shf, SHF_PAGES * PAGE))
		die("ftruncate");
	shf = mmap(NULL, SHF_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd_shf, 0);
	if (shf == MAP_FAILED)
		die("mmap shared");
	fill(shf, 3, 1);
	fill(shf + 2 * PAGE, 3, 1);

	shanon = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shanon == MAP_FAILED)
		die("mmap shared anon");
	strcpy((char *)shanon, "shared anon page 0");
	strcpy((char *)shanon + 3 * PAGE, "shared anon page 3");

	ro = map_at(0, RO_PAGES * PAGE, PROT_READ | PROT_WRITE, 0);
	fill(ro, 4, RO_PAGES);
	mprotect(ro, RO_PAGES * PAGE, PROT_READ);

	none = map_at(0, NONE_PAGES * PAGE, PROT_READ | PROT_WRITE, 0);
	fill(none, 5, NONE_PAGES);
	mprotect(none, NONE_PAGES * PAGE, PROT_NONE);

	holes = map_at(0, HOLE_PAGES * PAGE, PROT_READ | PROT_WRITE, 0);
	fill(holes, 6, HOLE_PAGES);
	madvise(holes + 10 * PAGE, 10 * PAGE, MADV_DONTNEED);
	madvise(holes + 40 * PAGE, 2 * PAGE, MADV_DONTNEED);

	gd = map_at(GD_HINT, GD_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_GROWSDOWN | MAP_FIXED_NOREPLACE);
	fill(gd, 7, GD_PAGES);

	alt = map_at(0, ALT_SIZE, PROT_READ | PROT_WRITE, 0);
	tls_value = 0x7153000000000000ULL | (uint64_t)getpid();
	syscall(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &fs_before);
}

static void move_vdso(void)
{
	struct range r[4];
	int n = find_vdso_ranges(r, 4);
	uint64_t lo = ~0ULL, hi = 0;
	for (int i = 0; i < n; i++) {
		if (r[i].start < lo)
			lo = r[i].start;
		if (r[i].end > hi)
			hi = r[i].end;
		if (!strcmp(r[i].name, "[vdso]"))
			vdso_old = r[i].start;
	}
	if (!vdso_old) {
		fprintf(stderr, "fullstate: no vDSO\n");
		exit(99);
	}
	uint64_t off = vdso_sym(vdso_old, "__vdso_clock_gettime");
	if (!off) {
		fprintf(stderr, "fullstate: no __vdso_clock_gettime in the vDSO\n");
		exit(99);
	}
	/* Move vvar, vvar_vclock and vdso together, keeping their layout. */
	uint8_t *base = map_at(VDSO_HINT, hi - lo, PROT_NONE, MAP_FIXED_NOREPLACE);
	for (int i = 0; i < n; i++) {
		void *to = base + (r[i].start - lo);
		if (mremap((void *)r[i].start, r[i].end - r[i].start, r[i].end - r[i].start,
			   MREMAP_MAYMOVE | MREMAP_FIXED, to) != to)
			die("mremap vdso");
	}
	vdso_new = (uint64_t)base + (vdso_old - lo);
	vdso_nranges = find_vdso_ranges(vdso_moved, 4);
	vdso_cgt = (clock_gettime_fn)(vdso_new + off);
	struct timespec ts;
	if (vdso_cgt(CLOCK_MONOTONIC, &ts)) {
		fprintf(stderr, "fullstate: the moved vDSO failed\n");
		exit(99);
	}
}

static void setup_files(void)
{
	uint8_t buf[GHOST_LEN];
	fd_reg = open_in_dir("reg.dat", O_RDWR | O_CREAT | O_TRUNC);
	fill_bytes(buf, 4096, 0x11);
	write_all(fd_reg, buf, 4096);
	lseek(fd_reg, 100, SEEK_SET);
	fd_dup = dup(fd_reg);
	fd_reg2 = open_in_dir("reg.dat", O_RDONLY);
	lseek(fd_reg2, 200, SEEK_SET);
	int t = open_in_dir("reg.dat", O_RDONLY);
	if (dup2(t, fd_hi) != fd_hi)
		die("dup2");
	close(t);
	lseek(fd_hi, 300, SEEK_SET);
	fd_cloexec = open_in_dir("reg.dat", O_RDONLY | O_CLOEXEC);
	lseek(fd_cloexec, 50, SEEK_SET);
	fd_app = open_in_dir("app.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND);
	write_all(fd_app, "hello ", 6);

	fd_ghost = open_in_dir("ghost.dat", O_RDWR | O_CREAT | O_TRUNC);
	fill_bytes(buf, GHOST_LEN, 0x47);
	write_all(fd_ghost, buf, GHOST_LEN);
	lseek(fd_ghost, 7, SEEK_SET);
	snprintf(ghost_path, sizeof ghost_path, "%s/ghost.dat", cwd_before);
	if (unlink("ghost.dat"))
		die("unlink");

	if (pipe(pfd))
		die("pipe");
	fill_bytes(buf, PIPE_LEN, 0x50);
	write_all(pfd[1], buf, PIPE_LEN);
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
}

static void setup_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGQUIT);
	sigaction(SIGUSR1, &sa, NULL);

	sa.sa_sigaction = on_alrm;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);

	sa.sa_sigaction = on_ptimer;
	sigaddset(&sa.sa_mask, SIGALRM);
	sigaction(SIGRTMIN + 7, &sa, NULL);

	struct sigaction hup;
	memset(&hup, 0, sizeof hup);
	hup.sa_handler = on_hup;
	hup.sa_flags = SA_NODEFER | SA_RESETHAND;
	sigaddset(&hup.sa_mask, SIGINT);
	sigaddset(&hup.sa_mask, SIGRTMIN + 3);
	sigaction(SIGHUP, &hup, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGWINCH, SIG_IGN);

	ss_before.ss_sp = alt;
	ss_before.ss_size = ALT_SIZE;
	if (sigaltstack(&ss_before, NULL))
		die("sigaltstack");
	sigaltstack(NULL, &ss_before);

	/* Blocked: SIGUSR1 outside the wait, and the signals queued below. */
	uint64_t blk = bit(SIGUSR1) | bit(SIGUSR2) | bit(SIGINT) | bit(SIGRTMIN + 2) | bit(SIGRTMIN + 5);
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, &blk, NULL, 8);
	mask_before = raw_sigmask();
	wait_mask = mask_before & ~bit(SIGUSR1);

	/* Pending: shared (process) queue and private (thread) queue. */
	kill(my_pid, SIGUSR2);
	for (int v = 101; v <= 103; v++)
		sigqueue(my_pid, SIGRTMIN + 2, (union sigval){.sival_int = v});
	sigqueue(my_pid, SIGRTMIN + 5, (union sigval){.sival_int = 501});
	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = SIGRTMIN + 2;
	si.si_code = SI_QUEUE;
	si.si_pid = my_pid;
	si.si_uid = getuid();
	si.si_value.sival_int = 201;
	if (syscall(SYS_rt_tgsigqueueinfo, my_pid, my_pid, SIGRTMIN + 2, &si))
		die("rt_tgsigqueueinfo");
	/* What si_code this kernel gives a tgkill'ed signal: learn it, then queue it for real. */
	syscall(SYS_tgkill, my_pid, my_pid, SIGINT);
	sigset_t intset;
	sigemptyset(&intset);
	sigaddset(&intset, SIGINT);
	struct timespec zero = {0, 0};
	if (sigtimedwait(&intset, &si, &zero) != SIGINT)
		die("sigtimedwait SIGINT");
	tkill_code = si.si_code;
	syscall(SYS_tgkill, my_pid, my_pid, SIGINT);

	/* Timers. */
	struct itimerval real = {{0, 20000}, {0, 20000}}, virt = {{900, 0}, {900, 0}}, prof = {{1000, 0}, {1000, 0}};
	setitimer(ITIMER_REAL, &real, NULL);
	setitimer(ITIMER_VIRTUAL, &virt, NULL);
	setitimer(ITIMER_PROF, &prof, NULL);
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 7;
	sev.sigev_value.sival_int = 0x77;
	if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &ptimer_id))
		die("timer_create");
	struct itimerspec its = {{0, 30000000}, {0, 30000000}};
	if (syscall(SYS_timer_settime, ptimer_id, 0, &its, NULL))
		die("timer_settime");
	sev.sigev_notify = SIGEV_NONE;
	if (syscall(SYS_timer_create, CLOCK_REALTIME, &sev, &ptimer2_id))
		die("timer_create 2");

	for (int s = 1; s <= 64; s++)
		if (s != SIGKILL && s != SIGSTOP)
			raw_sigaction(s, NULL, &sa_before[s]);
}

/* ---------- phase 2 ---------- */

static void check_memory(void)
{
	size_t bad = 0;
	for (size_t p = 0; p < ANON_PAGES; p++) {
		uint8_t *pg = anon + p * PAGE;
		if (p % 7 == 3 || p % 11 == 5)
			bad += !page_is_zero(pg);
		else
			bad += ((uint64_t *)pg)[0] != p || page_diff(pg, 1, 0) != 1;
	}
	CHECK(&R, "anon-private", !bad, "%zu of %d pages differ", bad, ANON_PAGES);
	uint8_t want[HEAP_LEN];
	fill_bytes(want, HEAP_LEN, 0x31);
	CHECK(&R, "heap", !memcmp(heap, want, HEAP_LEN), "malloc'd bytes differ");

	/* Private file mapping. */
	bad = 0;
	for (size_t p = 0; p < PRIV_PAGES; p++) {
		uint8_t exp[PAGE];
		uint64_t *w = (uint64_t *)exp;
		for (size_t i = 0; i < PAGE / 8; i++)
			w[i] = pattern(2, p, i);
		if (p == 1 || p == 4)
			memset(exp, 0xc0 + p, 64);
		bad += memcmp(priv + p * PAGE, exp, PAGE) != 0;
	}
	CHECK(&R, "private-file-contents", !bad, "%zu of %d pages differ", bad, PRIV_PAGES);
	/* Untouched pages still come from the file; copied ones do not. */
	uint8_t orig[8], mark[8] = "MARKMARK";
	pread(fd_priv, orig, 8, 6 * PAGE + 128);
	pwrite(fd_priv, mark, 8, 6 * PAGE + 128);
	int sees_file = !memcmp(priv + 6 * PAGE + 128, mark, 8);
	pwrite(fd_priv, orig, 8, 6 * PAGE + 128);
	CHECK(&R, "private-file-untouched-page-is-file-backed", sees_file,
	      "a write to the file is not seen in an untouched page of its MAP_PRIVATE mapping");
	pread(fd_priv, orig, 8, 1 * PAGE + 128);
	pwrite(fd_priv, mark, 8, 1 * PAGE + 128);
	int cow_sees = !memcmp(priv + 1 * PAGE + 128, mark, 8);
	pwrite(fd_priv, orig, 8, 1 * PAGE + 128);
	CHECK(&R, "private-file-cow-page-is-private", !cow_sees, "a copied-on-write page follows the file");

	/* Shared file mapping. */
	bad = page_diff(shf, 3, 0) + page_diff(shf + 2 * PAGE, 3, 0);
	bad += !page_is_zero(shf + PAGE) + !page_is_zero(shf + 3 * PAGE);
	CHECK(&R, "shared-file-contents", !bad, "%zu words differ", bad);
	uint8_t fbuf[PAGE];
	pread(fd_shf, fbuf, PAGE, 2 * PAGE);
	CHECK(&R, "shared-file-matches-file", !memcmp(fbuf, shf + 2 * PAGE, PAGE), "mapping and file differ");
	memcpy(shf + 3 * PAGE, "through the mapping", 20);
	pread(fd_shf, fbuf, 20, 3 * PAGE);
	int coherent = !memcmp(fbuf, "through the mapping", 20);
	memset(shf + 3 * PAGE, 0, 20);
	CHECK(&R, "shared-file-still-shared", coherent, "a write through the mapping did not reach the file");

	CHECK(&R, "shared-anon", !strcmp((char *)shanon, "shared anon page 0") &&
				     !strcmp((char *)shanon + 3 * PAGE, "shared anon page 3") &&
				     page_is_zero(shanon + PAGE),
	      "contents differ");

	bad = 0;
	for (size_t p = 0; p < RO_PAGES; p++)
		bad += page_diff(ro, 4, p);
	CHECK(&R, "read-only-contents", !bad, "%zu words differ", bad);

	/* Protections as seen in /proc/self/maps. */
	char want_ro[64], want_none[64], want_gd[64], line[512];
	int saw_ro = 0, saw_none = 0, gd_flag = 0;
	snprintf(want_ro, sizeof want_ro, "%lx-%lx r--p", (unsigned long)ro, (unsigned long)(ro + RO_PAGES * PAGE));
	snprintf(want_none, sizeof want_none, "%lx-%lx ---p", (unsigned long)none,
		 (unsigned long)(none + NONE_PAGES * PAGE));
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof line, f)) {
		saw_ro |= !strncmp(line, want_ro, strlen(want_ro));
		saw_none |= !strncmp(line, want_none, strlen(want_none));
	}
	if (f)
		fclose(f);
	CHECK(&R, "read-only-protection", saw_ro, "no '%s' line in maps", want_ro);
	CHECK(&R, "prot-none-protection", saw_none, "no '%s' line in maps", want_none);
	mprotect(none, NONE_PAGES * PAGE, PROT_READ);
	bad = 0;
	for (size_t p = 0; p < NONE_PAGES; p++)
		bad += page_diff(none, 5, p);
	mprotect(none, NONE_PAGES * PAGE, PROT_NONE);
	CHECK(&R, "prot-none-contents", !bad, "%zu words differ", bad);

	/* Holes: not populated (pagemap) and zero; the rest intact. */
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int populated = 0;
	for (size_t p = 0; p < HOLE_PAGES; p++) {
		uint64_t e = 0;
		pread(pm, &e, 8, ((uint64_t)holes / PAGE + p) * 8);
		int hole = (p >= 10 && p < 20) || p == 40 || p == 41;
		if (hole && (e >> 63))
			populated++;
	}
	close(pm);
	CHECK(&R, "dontneed-holes-unpopulated", !populated, "%d punched pages are populated", populated);
	bad = 0;
	for (size_t p = 0; p < HOLE_PAGES; p++) {
		int hole = (p >= 10 && p < 20) || p == 40 || p == 41;
		bad += hole ? !page_is_zero(holes + p * PAGE) : page_diff(holes, 6, p) != 0;
	}
	CHECK(&R, "dontneed-holes-contents", !bad, "%zu pages differ", bad);

	/* Grows-down: contents, the flag, and it still grows. */
	bad = 0;
	for (size_t p = 0; p < GD_PAGES; p++)
		bad += page_diff(gd, 7, p);
	CHECK(&R, "growsdown-contents", !bad, "%zu words differ", bad);
	f = fopen("/proc/self/smaps", "r");
	int in_gd = 0;
	snprintf(want_gd, sizeof want_gd, "%lx-", (unsigned long)gd);
	while (f && fgets(line, sizeof line, f)) {
		if (strchr(line, '-') && strchr(line, ' ') && line[0] != 'V' && strchr(line, '-') < strchr(line, ' '))
			in_gd = !strncmp(line, want_gd, strlen(want_gd));
		if (in_gd && !strncmp(line, "VmFlags:", 8))
			gd_flag = strstr(line, " gd") != NULL;
	}
	if (f)
		fclose(f);
	CHECK(&R, "growsdown-flag", gd_flag, "VmFlags of %p lack gd", gd);
	*(volatile uint8_t *)(gd - PAGE + 8) = 1; /* grows the area down by a page */
	char want_grown[64];
	snprintf(want_grown, sizeof want_grown, "%lx-%lx ", (unsigned long)(gd - PAGE),
		 (unsigned long)(gd + GD_PAGES * PAGE));
	int grown = 0;
	f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof line, f))
		grown |= !strncmp(line, want_grown, strlen(want_grown));
	if (f)
		fclose(f);
	CHECK(&R, "growsdown-grows", grown, "no '%s' line after touching below", want_grown);

	CHECK(&R, "tls", tls_value == (0x7153000000000000ULL | (uint64_t)my_pid), "tls value %#lx", tls_value);
	uint64_t fs = 0;
	syscall(SYS_arch_prctl, 0x1003, &fs);
	CHECK(&R, "fs-base", fs == fs_before, "fs base %#lx, want %#lx", fs, fs_before);
}

static void check_vdso(void)
{
	struct timespec a, v, b, rv, rs;
	sys_clock_gettime(CLOCK_MONOTONIC, &a);
	int r = vdso_cgt(CLOCK_MONOTONIC, &v);
	sys_clock_gettime(CLOCK_MONOTONIC, &b);
	long long na = a.tv_sec * 1000000000LL + a.tv_nsec, nv = v.tv_sec * 1000000000LL + v.tv_nsec,
		  nb = b.tv_sec * 1000000000LL + b.tv_nsec;
	CHECK(&R, "moved-vdso-monotonic", r == 0 && na <= nv && nv <= nb, "vdso %lld not within syscall [%lld, %lld] (ret %d)",
	      nv, na, nb, r);
	r = vdso_cgt(CLOCK_REALTIME, &rv);
	sys_clock_gettime(CLOCK_REALTIME, &rs);
	long long d = (rs.tv_sec - rv.tv_sec) * 1000000000LL + (rs.tv_nsec - rv.tv_nsec);
	CHECK(&R, "moved-vdso-realtime", r == 0 && d >= 0 && d < 1000000000LL, "vdso realtime off by %lld ns", d);
	/* For the record: where the vDSO mappings are now. */
	struct range now[4];
	int n = find_vdso_ranges(now, 4);
	for (int i = 0; i < n; i++)
		say(&R, "info vdso-now %s %lx-%lx\n", now[i].name, now[i].start, now[i].end);
	for (int i = 0; i < vdso_nranges; i++)
		say(&R, "info vdso-before-checkpoint %s %lx-%lx\n", vdso_moved[i].name, vdso_moved[i].start,
		    vdso_moved[i].end);
}

static void check_signals(void)
{
	int bad = 0;
	for (int s = 1; s <= 64; s++) {
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		struct ksigaction now;
		raw_sigaction(s, NULL, &now);
		if (memcmp(&now, &sa_before[s], sizeof now)) {
			say(&R, "FAIL sigaction %d: handler %#lx flags %#lx restorer %#lx mask %#lx, want %#lx %#lx %#lx %#lx\n",
			    s, now.handler, now.flags, now.restorer, now.mask, sa_before[s].handler,
			    sa_before[s].flags, sa_before[s].restorer, sa_before[s].mask);
			bad++;
		}
	}
	CHECK(&R, "sigactions", !bad, "%d differ", bad);
	CHECK(&R, "usr1-on-altstack", usr1_on_altstack, "the SA_ONSTACK handler did not run on the alternate stack");
	uint64_t m = raw_sigmask();
	CHECK(&R, "signal-mask", m == mask_before, "mask %#lx, want %#lx", m, mask_before);
	stack_t ss;
	sigaltstack(NULL, &ss);
	CHECK(&R, "sigaltstack", ss.ss_sp == ss_before.ss_sp && ss.ss_size == ss_before.ss_size &&
				     ss.ss_flags == ss_before.ss_flags,
	      "sp %p size %zu flags %d", ss.ss_sp, ss.ss_size, ss.ss_flags);

	/* Pending signals, in delivery order: the thread's queue first, then the process's. */
	struct {
		int sig, code, value;
	} want[] = {
		{SIGINT, tkill_code, 0},
		{SIGRTMIN + 2, SI_QUEUE, 201},
		{SIGUSR2, SI_USER, 0},
		{SIGRTMIN + 2, SI_QUEUE, 101},
		{SIGRTMIN + 2, SI_QUEUE, 102},
		{SIGRTMIN + 2, SI_QUEUE, 103},
		{SIGRTMIN + 5, SI_QUEUE, 501},
	};
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN + 2);
	sigaddset(&set, SIGRTMIN + 5);
	struct timespec zero = {0, 0};
	char got[512] = "";
	bad = 0;
	for (size_t i = 0; i < sizeof want / sizeof want[0] + 1; i++) {
		siginfo_t si;
		int s = sigtimedwait(&set, &si, &zero);
		if (s < 0) {
			snprintf(got + strlen(got), sizeof got - strlen(got), " none");
			bad += i < sizeof want / sizeof want[0];
			break;
		}
		snprintf(got + strlen(got), sizeof got - strlen(got), " %d/%d/%d/pid%d", s, si.si_code,
			 si.si_code == SI_QUEUE ? si.si_value.sival_int : 0, si.si_pid);
		if (i >= sizeof want / sizeof want[0] || s != want[i].sig || si.si_code != want[i].code ||
		    si.si_pid != my_pid || si.si_uid != getuid() ||
		    (want[i].code == SI_QUEUE && si.si_value.sival_int != want[i].value))
			bad++;
	}
	CHECK(&R, "pending-signals-in-order", !bad, "got%s (sig/code/value/sender)", got);

	/* Timers. */
	struct itimerval it[3];
	for (int w = 0; w < 3; w++)
		getitimer(w, &it[w]);
	CHECK(&R, "itimer-real-interval", it[0].it_interval.tv_sec == 0 && it[0].it_interval.tv_usec == 20000,
	      "interval %ld.%06ld", it[0].it_interval.tv_sec, it[0].it_interval.tv_usec);
	CHECK(&R, "itimer-virtual", it[1].it_interval.tv_sec == 900 && it[1].it_value.tv_sec <= 900 && it[1].it_value.tv_sec >= 800,
	      "interval %ld value %ld", it[1].it_interval.tv_sec, it[1].it_value.tv_sec);
	CHECK(&R, "itimer-prof", it[2].it_interval.tv_sec == 1000 && it[2].it_value.tv_sec <= 1000 && it[2].it_value.tv_sec >= 900,
	      "interval %ld value %ld", it[2].it_interval.tv_sec, it[2].it_value.tv_sec);
	struct itimerspec its;
	long r = syscall(SYS_timer_gettime, ptimer_id, &its);
	CHECK(&R, "posix-timer", r == 0 && its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 30000000,
	      "timer_gettime(%d) = %ld, interval %ld.%09ld", ptimer_id, r, its.it_interval.tv_sec, its.it_interval.tv_nsec);
	r = syscall(SYS_timer_gettime, ptimer2_id, &its);
	CHECK(&R, "posix-timer-disarmed", r == 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0,
	      "timer_gettime(%d) = %ld", ptimer2_id, r);
	int t0 = ticks, p0 = ptimer_ticks;
	for (int i = 0; i < 500 && (ticks < t0 + 2 || ptimer_ticks < p0 + 2); i++)
		sys_sleep_ms(10);
	CHECK(&R, "itimer-real-fires", ticks >= t0 + 2, "SIGALRM ticks %d -> %d", t0, (int)ticks);
	CHECK(&R, "posix-timer-fires", ptimer_ticks >= p0 + 2 && ptimer_last_value == 0x77,
	      "ticks %d -> %d, value %#x", p0, (int)ptimer_ticks, ptimer_last_value);
}

static void check_files(void)
{
	uint8_t buf[GHOST_LEN], want[GHOST_LEN];
	CHECK(&R, "reg-offset", lseek(fd_reg, 0, SEEK_CUR) == 100, "offset %ld", (long)lseek(fd_reg, 0, SEEK_CUR));
	CHECK(&R, "dup-offset", lseek(fd_dup, 0, SEEK_CUR) == 100, "offset %ld", (long)lseek(fd_dup, 0, SEEK_CUR));
	fill_bytes(want, 4096, 0x11);
	CHECK(&R, "reg-read", read(fd_reg, buf, 10) == 10 && !memcmp(buf, want + 100, 10), "wrong bytes at 100");
	CHECK(&R, "dup-shares-offset", lseek(fd_dup, 0, SEEK_CUR) == 110, "dup offset %ld after reading 10 bytes",
	      (long)lseek(fd_dup, 0, SEEK_CUR));
	CHECK(&R, "separate-open-offset", lseek(fd_reg2, 0, SEEK_CUR) == 200, "offset %ld", (long)lseek(fd_reg2, 0, SEEK_CUR));
	CHECK(&R, "fd-100-offset", lseek(fd_hi, 0, SEEK_CUR) == 300, "offset %ld", (long)lseek(fd_hi, 0, SEEK_CUR));
	/* fd 3 at -v4: criu-rs's log was on fd 3 and once wrote into this file. */
	struct stat pst;
	CHECK(&R, "mapped-file-offset", lseek(fd_priv, 0, SEEK_CUR) == PRIV_PAGES * PAGE, "offset %ld",
	      (long)lseek(fd_priv, 0, SEEK_CUR));
	CHECK(&R, "mapped-file-size", fstat(fd_priv, &pst) == 0 && pst.st_size == PRIV_PAGES * PAGE, "size %ld",
	      (long)pst.st_size);
	CHECK(&R, "access-modes", (fcntl(fd_reg, F_GETFL) & O_ACCMODE) == O_RDWR && (fcntl(fd_reg2, F_GETFL) & O_ACCMODE) == O_RDONLY &&
				      (fcntl(fd_app, F_GETFL) & O_ACCMODE) == O_WRONLY,
	      "flags %#x %#x %#x", fcntl(fd_reg, F_GETFL), fcntl(fd_reg2, F_GETFL), fcntl(fd_app, F_GETFL));
	CHECK(&R, "cloexec", (fcntl(fd_cloexec, F_GETFD) & FD_CLOEXEC) && !(fcntl(fd_reg, F_GETFD) & FD_CLOEXEC) &&
				 !(fcntl(fd_hi, F_GETFD) & FD_CLOEXEC),
	      "FD_CLOEXEC: cloexec fd %d, reg %d, fd100 %d", fcntl(fd_cloexec, F_GETFD), fcntl(fd_reg, F_GETFD),
	      fcntl(fd_hi, F_GETFD));
	CHECK(&R, "cloexec-offset", lseek(fd_cloexec, 0, SEEK_CUR) == 50, "offset %ld", (long)lseek(fd_cloexec, 0, SEEK_CUR));

	CHECK(&R, "append-flag", fcntl(fd_app, F_GETFL) & O_APPEND, "flags %#x", fcntl(fd_app, F_GETFL));
	CHECK(&R, "append-offset", lseek(fd_app, 0, SEEK_CUR) == 6, "offset %ld", (long)lseek(fd_app, 0, SEEK_CUR));
	lseek(fd_app, 0, SEEK_SET);
	write_all(fd_app, "x", 1);
	int rfd = open("app.log", O_RDONLY);
	ssize_t n = rfd >= 0 ? read(rfd, buf, 64) : -1;
	if (rfd >= 0)
		close(rfd);
	CHECK(&R, "append-writes-at-end", n == 7 && !memcmp(buf, "hello x", 7), "file holds %zd bytes", n);
	if (ftruncate(fd_app, 6))
		say(&R, "info ftruncate app.log: %s\n", strerror(errno));

	struct stat st;
	fstat(fd_ghost, &st);
	CHECK(&R, "unlinked-still-unlinked", st.st_nlink == 0 && access(ghost_path, F_OK) != 0, "nlink %lu", (unsigned long)st.st_nlink);
	fill_bytes(want, GHOST_LEN, 0x47);
	CHECK(&R, "unlinked-contents", st.st_size == GHOST_LEN && pread(fd_ghost, buf, GHOST_LEN, 0) == GHOST_LEN &&
					   !memcmp(buf, want, GHOST_LEN),
	      "size %ld", (long)st.st_size);
	CHECK(&R, "unlinked-offset", lseek(fd_ghost, 0, SEEK_CUR) == 7, "offset %ld", (long)lseek(fd_ghost, 0, SEEK_CUR));
	char link[PATH_MAX + 32] = "", fdp[64], want_link[PATH_MAX + 32];
	snprintf(fdp, sizeof fdp, "/proc/self/fd/%d", fd_ghost);
	ssize_t l = readlink(fdp, link, sizeof link - 1);
	if (l > 0)
		link[l] = 0;
	snprintf(want_link, sizeof want_link, "%s (deleted)", ghost_path);
	CHECK(&R, "unlinked-path", !strcmp(link, want_link), "link '%s', want '%s'", link, want_link);

	CHECK(&R, "pipe-nonblock", fcntl(pfd[0], F_GETFL) & O_NONBLOCK, "flags %#x", fcntl(pfd[0], F_GETFL));
	fill_bytes(want, PIPE_LEN, 0x50);
	n = read(pfd[0], buf, sizeof buf);
	CHECK(&R, "pipe-data", n == PIPE_LEN && !memcmp(buf, want, PIPE_LEN), "read %zd bytes", n);
	n = read(pfd[0], buf, sizeof buf);
	CHECK(&R, "pipe-drained", n < 0 && errno == EAGAIN, "read %zd more", n);
	write_all(pfd[1], "ping", 4);
	n = read(pfd[0], buf, sizeof buf);
	CHECK(&R, "pipe-connected", n == 4 && !memcmp(buf, "ping", 4), "read %zd", n);

	char cwd[PATH_MAX] = "";
	CHECK(&R, "cwd", getcwd(cwd, sizeof cwd) && !strcmp(cwd, cwd_before), "cwd '%s', want '%s'", cwd, cwd_before);
	mode_t um = umask(027);
	CHECK(&R, "umask", um == 027, "umask %03o", um);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	CHECK(&R, "rlimit-nofile", rl.rlim_cur == nofile_before.rlim_cur && rl.rlim_max == nofile_before.rlim_max,
	      "%lu/%lu", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);
	char fds_now[1024];
	list_fds(fds_now, sizeof fds_now);
	CHECK(&R, "fd-table", !strcmp(fds_now, fds_before), "fds '%s', want '%s'", fds_now, fds_before);
	struct stat s0, snull;
	fstat(0, &s0);
	stat("/dev/null", &snull);
	CHECK(&R, "stdin-devnull", s0.st_rdev == snull.st_rdev && S_ISCHR(s0.st_mode), "fd 0 is not /dev/null");
}

static void check_process(void)
{
	pid_t pid = (pid_t)syscall(SYS_getpid), tid = (pid_t)syscall(SYS_gettid);
	CHECK(&R, "pid", pid == my_pid && tid == my_pid, "pid %d tid %d, want %d", pid, tid, my_pid);
	CHECK(&R, "session-and-group", getsid(0) == my_pid && getpgrp() == my_pid, "sid %d pgid %d", getsid(0), getpgrp());
	char name[17] = "";
	prctl(PR_GET_NAME, name);
	CHECK(&R, "comm", !strcmp(name, "fullstate-main"), "comm '%s'", name);
	long rs = rseq_probe();
	CHECK(&R, "rseq-registered", rs == rseq_probe_before, "rseq probe %ld, before %ld", rs, rseq_probe_before);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fullstate DIR RESULT_FILE\n");
		return 99;
	}
	/* Only what this program opens: no fds inherited from whoever started it. */
	syscall(SYS_close_range, 3, ~0U, 0);
	dir = argv[1];
	result_path = argv[2];
	if (setsid() < 0)
		die("setsid");
	my_pid = getpid();
	if (chdir(dir) || !getcwd(cwd_before, sizeof cwd_before))
		die("chdir");
	umask(027);
	prctl(PR_SET_NAME, "fullstate-main");
	getrlimit(RLIMIT_NOFILE, &nofile_before);
	nofile_before.rlim_cur = nofile_before.rlim_cur > 1000 ? 1000 : nofile_before.rlim_cur;
	setrlimit(RLIMIT_NOFILE, &nofile_before);
	rseq_probe_before = rseq_probe();
	if (rseq_probe_before == 0)
		rseq_probe_before = rseq_probe();

	setup_memory();
	setup_files();
	setup_signals();
	move_vdso();

	avx512 = have_avx512();
	regs_init(&rb, 0);

	announce_ready("READY pid=%d vdso=%#lx vdso_old=%#lx growsdown=%p avx512=%d\n", my_pid, vdso_new, vdso_old,
		       (void *)gd, avx512);
	list_fds(fds_before, sizeof fds_before);

	wait_for_go(&rb, &wait_mask, avx512);

	check_registers(&R, &rb, avx512);
	check_process();
	check_signals();
	check_memory();
	check_vdso();
	check_files();
	if (finish_report(&R, result_path))
		exit(98);
	return report_status(&R);
}
