/*
 * Test program for memory areas that must come back exactly as they were:
 * two tasks, each checking its own memory from inside after the restore.
 *
 * Usage: memareas DIR RESULT_FILE FEATURE...
 *
 *   R  root: session leader, sets up the areas of every FEATURE, forks
 *   +- C  its child, which inherits them (and adds its own part).
 *
 * FEATUREs:
 *   shmem  a 64 MiB MAP_SHARED|MAP_ANONYMOUS object, every page holding a
 *          pattern, mapped by R in pieces: its first page unmapped (the
 *          first piece starts at offset 4 KiB), [16, 48) MiB moved
 *          elsewhere with mremap (offset 16 MiB), [48, 64) MiB where it
 *          was, and 1 MiB at offset 40 MiB mapped a second time through
 *          /proc/self/map_files (an alias of part of the moved piece). C
 *          inherits all four. After the restore both check the pattern,
 *          the pages each wrote, the offsets in /proc/self/maps, that the
 *          alias still is the same memory, and that a write by one task is
 *          seen by the other (through different pieces).
 *   locked R mlock()s one area (populated) and mlock2(MLOCK_ONFAULT)s
 *          another, touching 2 of its pages; C's copies are not locked
 *          (fork does not pass locks on). Checked: VmFlags lo/lf and the
 *          Locked: size of each, in each task.
 *   madvise  areas advised DONTFORK, WIPEONFORK, HUGEPAGE, NOHUGEPAGE,
 *          MERGEABLE, DONTDUMP, SEQUENTIAL, RANDOM, one MAP_NORESERVE and
 *          one MAP_DROPPABLE, each holding data, made by R before the fork
 *          (C lacks the DONTFORK one, its WIPEONFORK and droppable ones are
 *          empty). R checks its VmFlags lines are as before the dump, the
 *          data is there (droppable memory comes back empty), and what a
 *          fresh fork makes of the areas; C checks what its fork made.
 *   thp    PR_SET_THP_DISABLE: R sets it, C (inheriting it) clears it.
 *   thp-advised  R sets PR_SET_THP_DISABLE with PR_THP_DISABLE_EXCEPT_ADVISED
 *          (which CRIU's images cannot hold: the dump refuses it).
 *   cow    4 MiB of private anonymous memory with a pattern, made by R
 *          before the fork: C writes 10 pages and zeroes one, R writes 10
 *          others. Checked (as root, through both tasks' pagemaps): the
 *          contents, and that every page neither wrote is one page shared
 *          by both (copy-on-write, as the fork left it) and the others not.
 *   cow-file  the same with a private mapping of a 4 MiB file in DIR
 *          holding the pattern, R having written its first 5 pages before
 *          the fork: pages neither task wrote after the fork are one page
 *          in both (R's copy for the first 5, else the file's page).
 *   sysv   a 64 KiB SysV shared memory segment (IPC_PRIVATE), attached
 *          twice by R (read-write and SHM_RDONLY) and inherited by C.
 *          Checked: contents, 4 attachments, the read-only one without
 *          write access, one segment seen through all of them. The
 *          segment outlives the processes (READY says shmid=ID; the test
 *          removes it).
 *   sysv-rmid  the same, the segment marked IPC_RMID: the dump refuses it.
 *   file-prot  two files of 2 pages mapped shared and read-only, one opened
 *          read-write (its second page then made writable), one opened
 *          read-only (zdtm maps_file_prot). R checks the first can be made
 *          writable and writes reach the file, the second cannot (EACCES).
 *   guard  guard regions (MADV_GUARD_INSTALL): pages 1, 2 and 5 of 8 pages
 *          of private anonymous memory and page 1 of a private mapping of a
 *          4-page file, made by R before the fork. Each task checks, through
 *          PAGEMAP_SCAN, that it has the guard regions it had before the
 *          dump (C: what its fork copied), that a write to a guarded page
 *          faults and the other pages hold their data.
 *   pinned  64 KiB of R's memory registered as an io_uring fixed buffer
 *          (pinned, VmPin), the ring held only by a process outside the
 *          tree (READY says holder=PID; the test kills it): refused.
 *   device-ring  a perf_event ring buffer mapped (VM_IO|VM_PFNMAP): refused.
 *   shmem-private  shared anonymous memory mapped again privately through
 *          /proc/self/map_files; memfd-private  a memfd mapped shared and
 *          privately. Each task checks its private copy of a page, that the
 *          pages it never wrote privately follow the object (see
 *          priv_obj_check).
 *   no-vdso  R unmaps its [vdso] and [vvar] areas (C inherits that);
 *          checked: none is mapped after the restore.
 *
 * R writes "READY pid=R c=C" once both wait. On SIGUSR1 (R passes it on to
 * C) both check; C writes "result-C" in DIR and exits 0 or 10 + failures; R
 * waits for it and writes both reports, prefixed "R: " / "C: ", and "ALL
 * OK" or "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <setjmp.h>
#include <sys/ioctl.h>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "selfcheck.h"

/* What both tasks share for the test's own bookkeeping. */
struct ctl {
	atomic_int ready;
	atomic_int cow_read; /* cow: tasks done reading both pagemaps */
	atomic_int cowf_read; /* cow-file: the same */
};

static struct ctl *ctl;
static volatile sig_atomic_t go;
static struct report rep;
static int is_child;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

/* Waits (bounded: a hang guard) until *p == v. */
static int wait_for_u64(volatile uint64_t *p, uint64_t v)
{
	for (int i = 0; i < 40000 && __atomic_load_n(p, __ATOMIC_SEQ_CST) != v; i++)
		sys_sleep_ms(1);
	return __atomic_load_n(p, __ATOMIC_SEQ_CST) == v;
}

/* The /proc/self/maps line of the area holding ADDR, copied into LINE. */
static int maps_line(const void *addr, char *line, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return 0;
	int found = 0;
	while (fgets(line, (int)len, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= (unsigned long)addr && (unsigned long)addr < e) {
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

/* ---------- shmem ---------- */

#define SH_SIZE (64UL << 20)
#define SH_SEED 0x5e
#define SH_R_PAGE ((50UL << 20) / PAGE) /* object page R writes before the fork */
#define SH_C_PAGE ((20UL << 20) / PAGE) /* object page C writes after the fork */
#define SH_TOKEN_R ((8UL << 20) / PAGE) /* R's phase-2 token goes here (piece a) */
#define SH_TOKEN_C ((40UL << 20) / PAGE + 3) /* C's answer (through the alias d) */

static char *sh_a, *sh_b, *sh_c, *sh_d; /* object [4K,16M) [16M,48M) [48M,64M), alias of [40M,41M) */

/* The address of object page PG in R's and C's pieces (a, b or c). */
static char *sh_page(uint64_t pg)
{
	uint64_t off = pg * PAGE;
	if (off < (16UL << 20))
		return sh_a + off - PAGE;
	if (off < (48UL << 20))
		return sh_b + off - (16UL << 20);
	return sh_c + off - (48UL << 20);
}

#define SH_ALIAS_PAGE ((40UL << 20) / PAGE) /* the alias's first object page */

/* Object pages written by the tasks (not holding the pattern any more). */
static int sh_written_after(uint64_t pg)
{
	return pg == SH_R_PAGE || pg == SH_C_PAGE || pg == SH_TOKEN_R || pg == SH_TOKEN_C || pg == SH_ALIAS_PAGE + 5 ||
	       pg == SH_ALIAS_PAGE + 7;
}

static void shmem_setup(void)
{
	char *base = mmap(NULL, SH_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap shmem");
	fill(base, SH_SEED, SH_SIZE / PAGE);
	/* Piece b: moved to a spot of its own (reserved first, far from base). */
	char *spot = mmap(NULL, 64UL << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (spot == MAP_FAILED)
		die("mmap spot");
	sh_b = mremap(base + (16UL << 20), 32UL << 20, 32UL << 20, MREMAP_MAYMOVE | MREMAP_FIXED, spot + (16UL << 20));
	if (sh_b == MAP_FAILED)
		die("mremap");
	munmap(spot, 16UL << 20);
	munmap(spot + (48UL << 20), 16UL << 20);
	if (munmap(base, PAGE))
		die("munmap first page");
	sh_a = base + PAGE;
	sh_c = base + (48UL << 20);
	char path[80];
	snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)sh_c, (unsigned long)sh_c + (16UL << 20));
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die(path);
	sh_d = mmap(NULL, 1UL << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 40UL << 20);
	if (sh_d == MAP_FAILED)
		die("mmap alias");
	close(fd);
	strcpy(sh_page(SH_R_PAGE), "written by R before the fork");
}

static void shmem_child_setup(void)
{
	strcpy(sh_page(SH_C_PAGE), "written by C after the fork");
}

/* Whether the maps line of ADDR says shared, offset OFF, /dev/zero (deleted). */
static void check_piece(struct report *R, const char *name, const void *addr, unsigned long off)
{
	char line[512] = "", perms[8] = "";
	unsigned long s, e, o = ~0UL;
	int ok = maps_line(addr, line, sizeof line) && sscanf(line, "%lx-%lx %7s %lx", &s, &e, perms, &o) == 4;
	CHECK(R, name, ok && s == (unsigned long)addr && o == off && perms[3] == 's' && strstr(line, "/dev/zero (deleted)"),
	      "maps line '%.100s', want offset %#lx", line, off);
}

static void shmem_check(void)
{
	struct report *R = &rep;
	size_t bad = 0, bad_pages = 0;
	for (uint64_t pg = 1; pg < SH_SIZE / PAGE; pg++) {
		if (sh_written_after(pg))
			continue;
		const uint64_t *w = (const uint64_t *)sh_page(pg);
		size_t d = 0;
		for (size_t i = 0; i < PAGE / 8; i++)
			d += w[i] != pattern(SH_SEED, pg, i);
		bad += d;
		bad_pages += d != 0;
	}
	CHECK(R, "shmem-pattern", !bad, "%zu words in %zu pages differ", bad, bad_pages);
	CHECK(R, "shmem-r-page", !strcmp(sh_page(SH_R_PAGE), "written by R before the fork"), "'%.40s'",
	      sh_page(SH_R_PAGE));
	CHECK(R, "shmem-c-page", !strcmp(sh_page(SH_C_PAGE), "written by C after the fork"), "'%.40s'",
	      sh_page(SH_C_PAGE));
	check_piece(R, "shmem-offset-a", sh_a, PAGE);
	check_piece(R, "shmem-offset-b", sh_b, 16UL << 20);
	check_piece(R, "shmem-offset-c", sh_c, 48UL << 20);
	check_piece(R, "shmem-offset-alias", sh_d, 40UL << 20);
	/* The alias and piece b are one memory: a write through one shows in the other. */
	volatile uint64_t *via_d = (uint64_t *)(sh_d + PAGE * (is_child ? 7 : 5));
	volatile uint64_t *via_b = (uint64_t *)(sh_b + (24UL << 20) + PAGE * (is_child ? 7 : 5));
	*via_d = 0xa11a5000 + (uint64_t)is_child;
	CHECK(R, "shmem-alias-same-memory", *via_b == 0xa11a5000 + (uint64_t)is_child, "read %#lx", *via_b);
	/* Across the tasks: R writes through a, C sees it, answers through d, R sees it through b. */
	uint64_t token = 0x70c0000000000000ULL | (uint64_t)getppid();
	volatile uint64_t *r_tok = (uint64_t *)sh_page(SH_TOKEN_R);
	volatile uint64_t *c_tok = (uint64_t *)(sh_d + (SH_TOKEN_C - SH_ALIAS_PAGE) * PAGE);
	volatile uint64_t *c_tok_b = (uint64_t *)sh_page(SH_TOKEN_C);
	if (!is_child) {
		uint64_t mine = 0x70c0000000000000ULL | (uint64_t)getpid();
		__atomic_store_n(r_tok, mine, __ATOMIC_SEQ_CST);
		CHECK(R, "shmem-shared-with-child", wait_for_u64(c_tok_b, mine + 1), "C's answer %#lx", *c_tok_b);
	} else {
		int seen = wait_for_u64(r_tok, token);
		CHECK(R, "shmem-shared-with-parent", seen, "R's token %#lx, want %#lx", *r_tok, token);
		__atomic_store_n(c_tok, token + 1, __ATOMIC_SEQ_CST);
	}
}

/* ---------- locked ---------- */

#define LK_PAGES 8
#define LF_PAGES 16
static char *lk, *lf; /* mlock()ed (populated) / mlock2(MLOCK_ONFAULT) with 2 pages touched */

/* The VmFlags line of the smaps area holding ADDR. */
static int smaps_of(const void *addr, char *flags, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return 0;
	char line[1024];
	int in = 0, found = 0;
	flags[0] = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char c;
		if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
			if (in)
				break;
			in = s <= (unsigned long)addr && (unsigned long)addr < e;
			found |= in;
			continue;
		}
		if (!in)
			continue;
		if (!strncmp(line, "VmFlags:", 8)) {
			size_t n = strcspn(line + 8, "\n");
			n = n < len - 1 ? n : len - 1;
			memcpy(flags, line + 8, n);
			flags[n] = 0;
		}
	}
	fclose(f);
	return found;
}

/* Whether the two-letter VmFlags mnemonic NAME is in FLAGS. */
static int has_flag(const char *flags, const char *name)
{
	for (const char *p = flags; (p = strstr(p, name)); p += 2)
		if ((p == flags || p[-1] == ' ') && (p[2] == ' ' || p[2] == 0))
			return 1;
	return 0;
}

static void locked_setup(void)
{
	lk = mmap(NULL, LK_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	lf = mmap(NULL, LF_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (lk == MAP_FAILED || lf == MAP_FAILED)
		die("mmap locked");
	fill(lk, 0x10, LK_PAGES);
	if (mlock(lk, LK_PAGES * PAGE) || syscall(SYS_mlock2, lf, LF_PAGES * PAGE, MLOCK_ONFAULT))
		die("mlock");
	lf[0] = 1;
	lf[5 * PAGE] = 2;
}

/* Which of the N pages at P are resident, as a bit mask. */
static uint64_t resident(const void *p, size_t n)
{
	unsigned char v[64];
	uint64_t m = 0;
	if (n > 64 || mincore((void *)p, n * PAGE, v))
		return ~0ULL;
	for (size_t i = 0; i < n; i++)
		m |= (uint64_t)(v[i] & 1) << i;
	return m;
}

static void locked_check(void)
{
	struct report *R = &rep;
	char fl[512];
	/* fork does not pass memory locks on: C's copies are not locked. */
	int ok = smaps_of(lk, fl, sizeof fl);
	if (!is_child)
		CHECK(R, "locked-area", ok && has_flag(fl, "lo") && !has_flag(fl, "lf"), "VmFlags '%s'", fl);
	else
		CHECK(R, "locked-area-not-in-child", ok && !has_flag(fl, "lo"), "VmFlags '%s'", fl);
	uint64_t all = (1ULL << LK_PAGES) - 1;
	CHECK(R, "locked-resident", resident(lk, LK_PAGES) == all, "resident pages %#lx", resident(lk, LK_PAGES));
	size_t bad = 0;
	for (size_t pg = 0; pg < LK_PAGES; pg++)
		bad += page_diff(lk, 0x10, pg);
	CHECK(R, "locked-contents", !bad, "%zu words differ", bad);
	ok = smaps_of(lf, fl, sizeof fl);
	if (!is_child)
		CHECK(R, "lock-on-fault-area", ok && has_flag(fl, "lo") && has_flag(fl, "lf"), "VmFlags '%s'", fl);
	else
		CHECK(R, "lock-on-fault-not-in-child", ok && !has_flag(fl, "lo") && !has_flag(fl, "lf"), "VmFlags '%s'", fl);
	/* Locked on fault: only the 2 pages touched are there, not all 16. */
	uint64_t two = (1ULL << 0) | (1ULL << 5), got = resident(lf, LF_PAGES);
	CHECK(R, "lock-on-fault-resident", got == two, "resident pages %#lx, want %#lx", got, two);
	CHECK(R, "lock-on-fault-contents", lf[0] == 1 && lf[5 * PAGE] == 2, "%d %d", lf[0], lf[5 * PAGE]);
}

/* ---------- madvise ---------- */

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif

enum { MA_DONTFORK, MA_WIPEONFORK, MA_HUGEPAGE, MA_NOHUGEPAGE, MA_MERGEABLE, MA_DONTDUMP, MA_SEQUENTIAL, MA_RANDOM,
       MA_NORESERVE, MA_DROPPABLE, MA_N };
static const struct {
	const char *name;
	int advice; /* -1: none */
	int flags;  /* mmap flags */
	const char *vmflag;
} MA[MA_N] = {
	{"dontfork", MADV_DONTFORK, MAP_PRIVATE, "dc"},
	{"wipeonfork", MADV_WIPEONFORK, MAP_PRIVATE, "wf"},
	{"hugepage", MADV_HUGEPAGE, MAP_PRIVATE, "hg"},
	{"nohugepage", MADV_NOHUGEPAGE, MAP_PRIVATE, "nh"},
	{"mergeable", MADV_MERGEABLE, MAP_PRIVATE, "mg"},
	{"dontdump", MADV_DONTDUMP, MAP_PRIVATE, "dd"},
	{"sequential", MADV_SEQUENTIAL, MAP_PRIVATE, "sr"},
	{"random", MADV_RANDOM, MAP_PRIVATE, "rr"},
	{"noreserve", -1, MAP_PRIVATE | MAP_NORESERVE, "nr"},
	{"droppable", -1, MAP_DROPPABLE, "dp"},
};
#define MA_PAGES 4
static char *ma[MA_N];
static char ma_flags[MA_N][256]; /* R's VmFlags of each area before the dump */
static const char MA_DATA[] = "data written before the fork";

static void madvise_setup(void)
{
	for (int i = 0; i < MA_N; i++) {
		/* 2 MiB apart, so no two areas merge whatever their flags. */
		void *at = (void *)(0x6d0000000000UL + ((unsigned long)i << 21));
		ma[i] = mmap(at, MA_PAGES * PAGE, PROT_READ | PROT_WRITE, MA[i].flags | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
			     0);
		if (ma[i] == MAP_FAILED)
			die(MA[i].name);
		if (MA[i].advice >= 0 && madvise(ma[i], MA_PAGES * PAGE, MA[i].advice))
			die(MA[i].name);
		strcpy(ma[i], MA_DATA);
		if (!smaps_of(ma[i], ma_flags[i], sizeof ma_flags[i]) || !has_flag(ma_flags[i], MA[i].vmflag))
			die("smaps of an advised area");
	}
}

/* In a fresh fork: the areas as a child sees them. Exit status: bit i set
 * when area i looks wrong (DONTFORK: mapped; WIPEONFORK, droppable: not
 * zero; the others: not holding the data). */
static int madvise_fork_view(void)
{
	int bad = 0;
	for (int i = 0; i < MA_N; i++) {
		unsigned char v;
		if (i == MA_DONTFORK) {
			bad |= (mincore(ma[i], PAGE, &v) == 0 || errno != ENOMEM) << i;
			continue;
		}
		int zero = i == MA_WIPEONFORK || i == MA_DROPPABLE;
		bad |= (zero ? ma[i][0] != 0 : strcmp(ma[i], MA_DATA) != 0) << i;
	}
	return bad;
}

static void madvise_check(void)
{
	struct report *R = &rep;
	if (is_child) {
		/* C was forked with every flag set: what a fork made of them, kept. */
		int bad = madvise_fork_view();
		CHECK(R, "madvise-as-forked", !bad, "areas %#x look wrong", bad);
		return;
	}
	for (int i = 0; i < MA_N; i++) {
		char fl[256], name[64];
		int ok = smaps_of(ma[i], fl, sizeof fl);
		snprintf(name, sizeof name, "madvise-%s-flags", MA[i].name);
		CHECK(R, name, ok && !strcmp(fl, ma_flags[i]), "VmFlags '%s', was '%s'", fl, ma_flags[i]);
	}
	/* Droppable memory comes back empty (its pages were not dumped, as
	 * the kernel may drop them any time); the others keep their data. */
	int data_ok = 1;
	for (int i = 0; i < MA_N; i++)
		if (i != MA_DROPPABLE)
			data_ok &= !strcmp(ma[i], MA_DATA);
	CHECK(R, "madvise-data", data_ok, "an advised area lost its data");
	CHECK(R, "droppable-empty", ma[MA_DROPPABLE][0] == 0, "'%.20s'", ma[MA_DROPPABLE]);
	/* What a fork now makes of them: the flags work, not just show. */
	pid_t p = fork();
	if (p == 0)
		_exit(madvise_fork_view());
	int st = 0;
	waitpid(p, &st, 0);
	CHECK(R, "madvise-fork-after-restore", WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x (areas that look wrong)", st);
}

/* ---------- thp ---------- */

static void thp_setup(void)
{
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		die("PR_SET_THP_DISABLE");
}

static void thp_child_setup(void)
{
	/* Inherited from R: C turns it off again. */
	if (prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0))
		die("PR_SET_THP_DISABLE");
}

/* Disabled except where advised (Linux 6.18): criu-rs refuses to dump it. */
static void thp_advised_setup(void)
{
	if (prctl(PR_SET_THP_DISABLE, 1, 1 << 1 /* PR_THP_DISABLE_EXCEPT_ADVISED */, 0, 0))
		die("PR_SET_THP_DISABLE except advised");
}

static void thp_check(void)
{
	int v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	CHECK(&rep, "thp-disable", v == (is_child ? 0 : 1), "PR_GET_THP_DISABLE %d", v);
}

/* ---------- cow, cow-file ---------- */

#define COW_PAGES 1024
#define COW_SEED 0xc0
#define COW_PRE 5 /* cow-file: pages R writes before the fork */

/* One area shared copy-on-write: private anonymous (cow) or a private
 * mapping of a file (cow-file). */
struct cow_area {
	const char *name;
	char *p;
	int file;
	atomic_int *read; /* 2 once both tasks mapped every page, 4 once both read both pagemaps */
};
static struct cow_area cow_anon = {"cow", NULL, 0, NULL}, cow_file = {"cow-file", NULL, 1, NULL};
static pid_t cow_peer; /* the other task */

/* Pages C writes after the fork (30 with zeros), pages R writes after it,
 * and (cow-file) pages R wrote before it, which both tasks then share. */
static int cow_by_c(size_t pg) { return (pg >= 10 && pg < 20) || pg == 30; }
static int cow_by_r(size_t pg) { return pg >= 40 && pg < 50; }
static int cow_pre(const struct cow_area *a, size_t pg) { return a->file && pg < COW_PRE; }

static void cow_setup(void)
{
	cow_anon.read = &ctl->cow_read;
	cow_anon.p = mmap((void *)0x6e0000000000UL, COW_PAGES * PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (cow_anon.p == MAP_FAILED)
		die("mmap cow");
	fill(cow_anon.p, COW_SEED, COW_PAGES);
}

static void cow_mark(char *area, size_t pg)
{
	*(uint64_t *)(area + pg * PAGE) = 0xc0ffee0000ULL + pg;
}

/* A file NAME of PAGES pages holding the pattern of SEED, mapped privately
 * and read-write at AT. */
static char *pattern_file(const char *name, uint64_t seed, size_t pages, unsigned long at)
{
	int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)(pages * PAGE)))
		die(name);
	char *w = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (w == MAP_FAILED)
		die(name);
	fill(w, seed, pages);
	munmap(w, pages * PAGE);
	char *p = mmap((void *)at, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		die(name);
	return p;
}

/* cow-file: a file holding the pattern, mapped privately; R writes its
 * first COW_PRE pages before the fork. */
static void cow_file_setup(void)
{
	cow_file.read = &ctl->cowf_read;
	cow_file.p = pattern_file("cow-file", COW_SEED, COW_PAGES, 0x6e1000000000UL);
	for (size_t pg = 0; pg < COW_PRE; pg++)
		cow_mark(cow_file.p, pg);
}

static void cow_area_child_setup(struct cow_area *a)
{
	cow_peer = getppid();
	for (size_t pg = 0; pg < COW_PAGES; pg++)
		if (cow_by_c(pg) && pg != 30)
			cow_mark(a->p, pg);
	memset(a->p + 30 * PAGE, 0, PAGE);
}

static void cow_area_after_fork(struct cow_area *a, pid_t child)
{
	cow_peer = child;
	for (size_t pg = 0; pg < COW_PAGES; pg++)
		if (cow_by_r(pg))
			cow_mark(a->p, pg);
}

/* The pagemap entries of area A in process PID (0: ourselves). */
static int cow_pagemap(const struct cow_area *a, pid_t pid, uint64_t *out)
{
	char path[64];
	snprintf(path, sizeof path, pid ? "/proc/%d/pagemap" : "/proc/self/pagemap", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t want = COW_PAGES * 8, n = pread(fd, out, want, (off_t)((unsigned long)a->p / PAGE * 8));
	close(fd);
	return n == want;
}

static void cow_area_check(const struct cow_area *a)
{
	struct report *R = &rep;
	char what[64];
	size_t bad = 0;
	/* Reads every page (so that each is mapped for the pagemap below). */
	for (size_t pg = 0; pg < COW_PAGES; pg++) {
		const uint64_t *w = (const uint64_t *)(a->p + pg * PAGE);
		int mine = is_child ? cow_by_c(pg) : cow_by_r(pg);
		if (mine && pg == 30)
			bad += !page_is_zero(w);
		else if (mine || cow_pre(a, pg))
			bad += w[0] != 0xc0ffee0000ULL + pg || w[1] != pattern(COW_SEED, pg, 1);
		else
			bad += page_diff(a->p, COW_SEED, pg) != 0;
	}
	snprintf(what, sizeof what, "%s-contents", a->name);
	CHECK(R, what, !bad, "%zu pages differ", bad);
	/* Both tasks have every page mapped (a file page is mapped once read)
	 * before either reads the pagemaps. */
	atomic_fetch_add(a->read, 1);
	for (int i = 0; i < 40000 && atomic_load(a->read) < 2; i++)
		sys_sleep_ms(1);
	static uint64_t own[COW_PAGES], peer[COW_PAGES];
	int ok = cow_pagemap(a, 0, own) && cow_pagemap(a, cow_peer, peer);
	size_t shared = 0, wrong = 0, no_pfn = 0;
	for (size_t pg = 0; ok && pg < COW_PAGES; pg++) {
		uint64_t pfn = own[pg] & ((1ULL << 55) - 1), peer_pfn = peer[pg] & ((1ULL << 55) - 1);
		int both = (own[pg] >> 63) && (peer[pg] >> 63);
		no_pfn += (own[pg] >> 63) && !pfn;
		int same = both && pfn == peer_pfn;
		shared += same;
		wrong += same == (cow_by_c(pg) || cow_by_r(pg));
	}
	/* The other task stays until both have read both pagemaps. */
	atomic_fetch_add(a->read, 1);
	for (int i = 0; i < 40000 && atomic_load(a->read) < 4; i++)
		sys_sleep_ms(1);
	/* Every page neither task wrote after the fork is one page shared by
	 * both (an anonymous copy, or the file's page in the page cache). */
	snprintf(what, sizeof what, "%s-pages-shared", a->name);
	CHECK(R, what, ok && !no_pfn && !wrong && shared == COW_PAGES - 21,
	      "pagemaps read %d, %zu shared, %zu wrong, %zu without a pfn", ok, shared, wrong, no_pfn);
}

static void cow_child_setup(void) { cow_area_child_setup(&cow_anon); }
static void cow_after_fork(pid_t child) { cow_area_after_fork(&cow_anon, child); }
static void cow_check(void) { cow_area_check(&cow_anon); }
static void cow_file_child_setup(void) { cow_area_child_setup(&cow_file); }
static void cow_file_after_fork(pid_t child) { cow_area_after_fork(&cow_file, child); }
static void cow_file_check(void) { cow_area_check(&cow_file); }

/* ---------- sysv ---------- */

#define SV_SIZE (64UL << 10)
#define SV_SEED 0x5f
static int sv_id = -1;
static char *sv_rw, *sv_ro; /* the segment attached twice: read-write and read-only */

static void sysv_attach(void)
{
	sv_rw = shmat(sv_id, NULL, 0);
	sv_ro = shmat(sv_id, NULL, SHM_RDONLY);
	if (sv_rw == (void *)-1 || sv_ro == (void *)-1)
		die("shmat");
}

static void sysv_setup(void)
{
	sv_id = shmget(IPC_PRIVATE, SV_SIZE, IPC_CREAT | 0600);
	if (sv_id < 0)
		die("shmget");
	sysv_attach();
	fill(sv_rw, SV_SEED, SV_SIZE / PAGE);
}

/* Marked for removal while attached: it goes away with its last user. */
static void sysv_rmid_setup(void)
{
	sysv_setup();
	if (shmctl(sv_id, IPC_RMID, NULL))
		die("IPC_RMID");
}

static void sysv_check(void)
{
	struct report *R = &rep;
	size_t bad = 0;
	for (size_t pg = 1; pg < SV_SIZE / PAGE; pg++)
		bad += page_diff(sv_rw, SV_SEED, pg) + page_diff(sv_ro, SV_SEED, pg);
	CHECK(R, "sysv-contents", !bad, "%zu words differ", bad);
	struct shmid_ds ds;
	int st = shmctl(sv_id, IPC_STAT, &ds);
	CHECK(R, "sysv-attached", st == 0 && ds.shm_nattch == 4, "IPC_STAT %d, %lu attachments", st, (unsigned long)ds.shm_nattch);
	char fl[256];
	CHECK(R, "sysv-read-only", smaps_of(sv_ro, fl, sizeof fl) && !has_flag(fl, "mw") && !has_flag(fl, "wr"), "VmFlags '%s'", fl);
	CHECK(R, "sysv-read-write", smaps_of(sv_rw, fl, sizeof fl) && has_flag(fl, "mw") && has_flag(fl, "wr"), "VmFlags '%s'", fl);
	/* One segment: R's write through its read-write attachment shows in
	 * both of C's attachments, and in R's read-only one. */
	volatile uint64_t *w = (uint64_t *)sv_rw, *r = (uint64_t *)sv_ro;
	uint64_t token = 0x5e9e000000000000ULL | (uint64_t)(is_child ? getppid() : getpid());
	if (!is_child) {
		*w = token;
		CHECK(R, "sysv-same-segment", *r == token, "read-only view %#lx", *r);
	} else {
		CHECK(R, "sysv-shared-with-parent", wait_for_u64(r, token) && *w == token, "%#lx / %#lx", *r, *w);
	}
}

/* ---------- guard ---------- */

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD (1 << 8)
#endif
/* struct pm_scan_arg / page_region and PAGEMAP_SCAN (linux/fs.h, 6.7). */
struct gd_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct gd_region {
	uint64_t start, end, categories;
};
#define GD_PAGEMAP_SCAN 0xc0606610UL
#define GD_ANON_PAGES 8
#define GD_FILE_PAGES 4
#define GD_SEED 0x9d
#define GD_ANON_MASK 0x26u /* anonymous pages 1, 2 and 5 */
#define GD_FILE_MASK 0x2u  /* file page 1 */

static char *gd_anon, *gd_file;
static uint32_t gd_before[2]; /* guarded pages of each area (bit = page) before the dump */

/* The guarded pages of [P, P + PAGES pages) as a bitmask, through
 * PAGEMAP_SCAN (PAGE_IS_GUARD); ~0 if the scan fails. */
static uint32_t gd_mask(const char *p, size_t pages)
{
	struct gd_region regs[8];
	struct gd_scan_arg a = {
		.size = sizeof a,
		.start = (uintptr_t)p,
		.end = (uintptr_t)p + pages * PAGE,
		.vec = (uintptr_t)regs,
		.vec_len = 8,
		.category_mask = PAGE_IS_GUARD,
		.return_mask = PAGE_IS_GUARD,
	};
	int fd = open("/proc/self/pagemap", O_RDONLY);
	long n = fd < 0 ? -1 : ioctl(fd, GD_PAGEMAP_SCAN, &a);
	if (fd >= 0)
		close(fd);
	if (n < 0)
		return ~0u;
	uint32_t m = 0;
	for (long i = 0; i < n; i++)
		for (uint64_t at = regs[i].start; at < regs[i].end; at += PAGE)
			m |= 1u << ((at - (uintptr_t)p) / PAGE);
	return m;
}

static sigjmp_buf gd_jmp;
static void gd_segv(int sig)
{
	(void)sig;
	siglongjmp(gd_jmp, 1);
}

/* Whether a write to P (of the byte already there) goes through (a guard
 * page raises SIGSEGV). */
static int gd_writable(char *p)
{
	struct sigaction sa = {0}, old;
	sa.sa_handler = gd_segv;
	sigaction(SIGSEGV, &sa, &old);
	int ok = 0;
	if (!sigsetjmp(gd_jmp, 1)) {
		*(volatile char *)p = *(volatile char *)p;
		ok = 1;
	}
	sigaction(SIGSEGV, &old, NULL);
	return ok;
}

static void guard_record(void)
{
	gd_before[0] = gd_mask(gd_anon, GD_ANON_PAGES);
	gd_before[1] = gd_mask(gd_file, GD_FILE_PAGES);
}

static void guard_setup(void)
{
	gd_anon = mmap((void *)0x6e2000000000UL, GD_ANON_PAGES * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (gd_anon == MAP_FAILED)
		die("mmap guard");
	fill(gd_anon, GD_SEED, GD_ANON_PAGES);
	gd_file = pattern_file("guard-file", GD_SEED, GD_FILE_PAGES, 0x6e2100000000UL);
	for (size_t pg = 0; pg < GD_ANON_PAGES; pg++)
		if (GD_ANON_MASK >> pg & 1 && madvise(gd_anon + pg * PAGE, PAGE, MADV_GUARD_INSTALL))
			die("MADV_GUARD_INSTALL");
	if (madvise(gd_file + PAGE, PAGE, MADV_GUARD_INSTALL))
		die("MADV_GUARD_INSTALL (file)");
	guard_record();
}

static void guard_check(void)
{
	struct report *R = &rep;
	uint32_t anon = gd_mask(gd_anon, GD_ANON_PAGES), file = gd_mask(gd_file, GD_FILE_PAGES);
	if (!is_child)
		CHECK(R, "guard-set-up", gd_before[0] == GD_ANON_MASK && gd_before[1] == GD_FILE_MASK,
		      "before the dump: %#x %#x", gd_before[0], gd_before[1]);
	CHECK(R, "guard-pages", anon == gd_before[0] && file == gd_before[1], "%#x %#x, were %#x %#x", anon, file,
	      gd_before[0], gd_before[1]);
	size_t bad = 0;
	for (size_t pg = 0; pg < GD_ANON_PAGES; pg++)
		if (!(gd_before[0] >> pg & 1))
			bad += page_diff(gd_anon, GD_SEED, pg) != 0;
	for (size_t pg = 0; pg < GD_FILE_PAGES; pg++)
		if (!(gd_before[1] >> pg & 1))
			bad += page_diff(gd_file, GD_SEED, pg) != 0;
	CHECK(R, "guard-contents", !bad, "%zu unguarded pages differ", bad);
	/* Page 1 of each is guarded in R (checked above) and, if its fork
	 * copied the guards, in C. */
	int w0 = gd_writable(gd_anon), w1 = gd_writable(gd_anon + PAGE), wf = gd_writable(gd_file + PAGE);
	CHECK(R, "guard-faults", w0 && w1 == !(gd_before[0] >> 1 & 1) && wf == !(gd_before[1] >> 1 & 1),
	      "writes: page 0 %d, page 1 %d, file page 1 %d", w0, w1, wf);
}

/* ---------- file-prot ---------- */

static char *fp_rw_file, *fp_ro_file; /* 2 pages each: file-prot-rw, file-prot-ro */

/* FILE (2 pages) mapped shared and read-only from an fd opened with
 * OPEN_MODE (then closed); the second page of the read-write one made
 * writable (two areas of one file, zdtm maps_file_prot). */
static char *fp_map(const char *file, int open_mode)
{
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 2 * PAGE))
		die("file-prot file");
	close(fd);
	fd = open(file, open_mode);
	char *p = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (fd < 0 || p == MAP_FAILED)
		die("file-prot mmap");
	close(fd);
	return p;
}

static void file_prot_setup(void)
{
	fp_rw_file = fp_map("file-prot-rw", O_RDWR);
	fp_ro_file = fp_map("file-prot-ro", O_RDONLY);
	if (mprotect(fp_rw_file + PAGE, PAGE, PROT_READ | PROT_WRITE))
		die("file-prot mprotect");
}

static void file_prot_check(void)
{
	struct report *R = &rep;
	if (is_child)
		return;
	fp_rw_file[PAGE] = 'w';
	int widened = !mprotect(fp_rw_file, PAGE, PROT_READ | PROT_WRITE);
	if (widened)
		fp_rw_file[0] = 'v';
	char got[2] = {0};
	int fd = open("file-prot-rw", O_RDONLY);
	int n = fd >= 0 ? (int)pread(fd, got, 1, 0) + (int)pread(fd, got + 1, 1, PAGE) : -1;
	if (fd >= 0)
		close(fd);
	CHECK(R, "file-prot-widened", widened && n == 2 && got[0] == 'v' && got[1] == 'w',
	      "mprotect %d, file holds %d %#x %#x", widened, n, got[0], got[1]);
	/* A file opened read-only still cannot be written through its mapping. */
	errno = 0;
	int r = mprotect(fp_ro_file, PAGE, PROT_READ | PROT_WRITE);
	CHECK(R, "file-prot-ro-stays", r < 0 && errno == EACCES, "mprotect %d errno %d", r, errno);
}

/* ---------- refused: pinned, device-ring ---------- */

#define PIN_SIZE (64UL << 10)
static pid_t pin_holder = -1; /* holds the io_uring outside the tree */

/* 64 KiB registered as an io_uring fixed buffer (pinned: VmPin), the ring
 * then held by a process outside the tree only (a grandchild whose parent
 * exited), R's own descriptor closed. */
static void pinned_setup(void)
{
	char *buf = mmap(NULL, PIN_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct io_uring_params p = {0};
	int ring = (int)syscall(SYS_io_uring_setup, 4, &p);
	struct iovec iov = {buf, PIN_SIZE};
	if (buf == MAP_FAILED || ring < 0 || syscall(SYS_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1) < 0)
		die("io_uring fixed buffer");
	int fds[2], life[2]; /* the holder's pid; its life (R and C hold the write end) */
	if (pipe(fds) || pipe(life))
		die("pipe");
	pid_t x = fork();
	if (x < 0)
		die("fork");
	if (!x) {
		pid_t y = fork();
		if (!y) {
			close(life[1]);
			char c;
			while (read(life[0], &c, 1) != 0)
				;
			_exit(0);
		}
		_exit(write(fds[1], &y, sizeof y) == sizeof y ? 0 : 1);
	}
	if (read(fds[0], &pin_holder, sizeof pin_holder) != sizeof pin_holder || waitpid(x, NULL, 0) != x)
		die("ring holder");
	close(fds[0]);
	close(fds[1]);
	close(life[0]);
	close(ring);
}

/* A perf_event ring buffer (VM_IO | VM_PFNMAP), its descriptor closed. */
static void device_ring_setup(void)
{
	struct perf_event_attr a = {0};
	a.type = PERF_TYPE_SOFTWARE;
	a.size = sizeof a;
	a.config = PERF_COUNT_SW_DUMMY;
	int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
	if (fd < 0 || mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
		die("perf_event ring");
	close(fd);
}

/* ---------- private mappings of shared memory objects ---------- */

/* A 4-page object (shared anonymous memory, or a memfd) mapped shared (sh)
 * and privately (pv), the object's descriptor closed. Before the fork R
 * writes pv page 1 (its private copy) and, through sh, page 2 (which pv,
 * never written there, follows). After the restore: page 1 is the private
 * copy in both tasks and differs from the object; page 2 reads the
 * object's write; R writes page 0 through sh, C page 3: each then reads
 * its write through pv (an unwritten private page still follows the
 * object, as a fresh copy would not). */
struct priv_obj {
	const char *name;
	char *sh, *pv;
};
static struct priv_obj po_shmem = {"shmem-private", NULL, NULL}, po_memfd = {"memfd-private", NULL, NULL};
static const char PO_PRIVATE[] = "private copy", PO_SHARED[] = "written through the object";

static void priv_obj_map(struct priv_obj *o, int fd)
{
	o->pv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (o->pv == MAP_FAILED)
		die("private mapping of a shared memory object");
	close(fd);
	strcpy(o->pv + PAGE, PO_PRIVATE);
	strcpy(o->sh + 2 * PAGE, PO_SHARED);
}

static void shmem_private_setup(void)
{
	po_shmem.sh = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (po_shmem.sh == MAP_FAILED)
		die("mmap shared");
	fill(po_shmem.sh, 21, 4);
	char path[96];
	snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", (unsigned long)po_shmem.sh, (unsigned long)po_shmem.sh + 4 * PAGE);
	int fd = open(path, O_RDWR);
	if (fd < 0)
		die("open map_files");
	priv_obj_map(&po_shmem, fd);
}

static void memfd_private_setup(void)
{
	int fd = (int)syscall(SYS_memfd_create, "privmap", 0);
	if (fd < 0 || ftruncate(fd, 4 * PAGE))
		die("memfd");
	po_memfd.sh = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (po_memfd.sh == MAP_FAILED)
		die("mmap memfd");
	fill(po_memfd.sh, 22, 4);
	priv_obj_map(&po_memfd, fd);
}

static void priv_obj_check(struct priv_obj *o, uint64_t seed)
{
	char name[64];
	snprintf(name, sizeof name, "%s-private-page", o->name);
	CHECK(&rep, name, !strcmp(o->pv + PAGE, PO_PRIVATE) && !page_diff(o->sh, seed, 1), "pv \"%.16s\", object page 1 %s",
	      o->pv + PAGE, page_diff(o->sh, seed, 1) ? "changed" : "intact");
	snprintf(name, sizeof name, "%s-follows-earlier-write", o->name);
	CHECK(&rep, name, !strcmp(o->pv + 2 * PAGE, PO_SHARED), "pv page 2 \"%.16s\"", o->pv + 2 * PAGE);
	size_t mine = is_child ? 3 : 0;
	snprintf(name, sizeof name, "%s-unwritten-page", o->name);
	CHECK(&rep, name, !page_diff(o->pv, seed, mine), "pv page %zu differs from the object's pattern", mine);
	const char *text = is_child ? "written by C after" : "written by R after";
	strcpy(o->sh + mine * PAGE, text);
	snprintf(name, sizeof name, "%s-follows-object", o->name);
	CHECK(&rep, name, !strcmp(o->pv + mine * PAGE, text), "pv page %zu \"%.20s\" after a write to the object", mine,
	      o->pv + mine * PAGE);
}

static void shmem_private_check(void) { priv_obj_check(&po_shmem, 21); }
static void memfd_private_check(void) { priv_obj_check(&po_memfd, 22); }

static void no_check(void) {}

/* ---------- no-vdso ---------- */

/* The special areas named in /proc/self/maps: how many, and (with UNMAP)
 * unmapped. */
static int special_areas(int unmap)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		die("maps");
	unsigned long at[8][2];
	int n = 0;
	char line[512];
	while (fgets(line, sizeof line, f) && n < 8) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 &&
		    (strstr(line, "[vdso]") || strstr(line, "[vvar]") || strstr(line, "[vvar_vclock]"))) {
			at[n][0] = s;
			at[n++][1] = e;
		}
	}
	fclose(f);
	for (int i = 0; unmap && i < n; i++)
		if (munmap((void *)at[i][0], at[i][1] - at[i][0]))
			die("munmap vdso");
	return n;
}

/* R unmaps its vDSO and vvar (zdtm vdso02; nothing here calls the vDSO),
 * C inherits that; after the restore neither has them back. */
static void no_vdso_setup(void)
{
	if (special_areas(1) == 0)
		die("no [vdso] to unmap");
}

static void no_vdso_check(void)
{
	int n = special_areas(0);
	CHECK(&rep, "no-vdso", n == 0, "%d vDSO/vvar areas mapped", n);
}

/* ---------- the features ---------- */

struct feature {
	const char *name;
	void (*setup)(void);            /* R, before the fork */
	void (*child_setup)(void);      /* C, after the fork (may be NULL) */
	void (*after_fork)(pid_t child); /* R, after the fork (may be NULL) */
	void (*check)(void);            /* both, after SIGUSR1 */
	int on;
};

static struct feature features[] = {
	{"shmem", shmem_setup, shmem_child_setup, NULL, shmem_check, 0},
	{"locked", locked_setup, NULL, NULL, locked_check, 0},
	{"madvise", madvise_setup, NULL, NULL, madvise_check, 0},
	{"thp", thp_setup, thp_child_setup, NULL, thp_check, 0},
	{"thp-advised", thp_advised_setup, NULL, NULL, thp_check, 0},
	{"cow", cow_setup, cow_child_setup, cow_after_fork, cow_check, 0},
	{"cow-file", cow_file_setup, cow_file_child_setup, cow_file_after_fork, cow_file_check, 0},
	{"sysv", sysv_setup, NULL, NULL, sysv_check, 0},
	{"sysv-rmid", sysv_rmid_setup, NULL, NULL, sysv_check, 0},
	{"file-prot", file_prot_setup, NULL, NULL, file_prot_check, 0},
	{"guard", guard_setup, guard_record, NULL, guard_check, 0},
	{"pinned", pinned_setup, NULL, NULL, no_check, 0},
	{"device-ring", device_ring_setup, NULL, NULL, no_check, 0},
	{"shmem-private", shmem_private_setup, NULL, NULL, shmem_private_check, 0},
	{"memfd-private", memfd_private_setup, NULL, NULL, memfd_private_check, 0},
	{"no-vdso", no_vdso_setup, NULL, NULL, no_vdso_check, 0},
};
#define NFEATURES (sizeof features / sizeof features[0])

static void wait_go(void)
{
	sigset_t none;
	sigemptyset(&none);
	while (!go)
		sigsuspend(&none);
}

static void run_checks(void)
{
	for (size_t i = 0; i < NFEATURES; i++)
		if (features[i].on)
			features[i].check();
}

static void run_child(void)
{
	is_child = 1;
	int null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		die("/dev/null");
	close(null);
	for (size_t i = 0; i < NFEATURES; i++)
		if (features[i].on && features[i].child_setup)
			features[i].child_setup();
	atomic_fetch_add(&ctl->ready, 1);
	wait_go();
	run_checks();
	if (finish_report(&rep, "result-C"))
		_exit(98);
	_exit(report_status(&rep));
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: memareas DIR RESULT_FILE FEATURE...\n");
		return 99;
	}
	for (int a = 3; a < argc; a++) {
		size_t i = 0;
		while (i < NFEATURES && strcmp(features[i].name, argv[a]))
			i++;
		if (i == NFEATURES) {
			fprintf(stderr, "memareas: unknown feature %s\n", argv[a]);
			return 99;
		}
		features[i].on = 1;
	}
	syscall(SYS_close_range, 3, ~0U, 0);
	if (setsid() < 0 || chdir(argv[1]))
		die("setsid/chdir");
	handle_blocked(SIGUSR1, on_usr1);
	ctl = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED)
		die("mmap ctl");
	for (size_t i = 0; i < NFEATURES; i++)
		if (features[i].on)
			features[i].setup();
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (!child)
		run_child();
	for (size_t i = 0; i < NFEATURES; i++)
		if (features[i].on && features[i].after_fork)
			features[i].after_fork(child);
	wait_count(&ctl->ready, 1);
	announce_ready("READY pid=%d c=%d shmid=%d holder=%d\n", getpid(), child, sv_id, pin_holder);
	wait_go();
	kill(child, SIGUSR1);
	run_checks();
	int st = 0;
	pid_t w = waitpid(child, &st, 0);
	CHECK(&rep, "child-exited-ok", w == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "waitpid %d status %#x", w, st);
	if (finish_report(&rep, "result-R"))
		return 98;
	static struct report all;
	collect_report(&all, 'R');
	collect_report(&all, 'C');
	if (finish_report(&all, argv[2]))
		return 98;
	return report_status(&all);
}
