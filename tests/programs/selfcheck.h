/*
 * Shared by the self-checking test programs (fullstate.c, threads.c, tree.c):
 * check reports, memory patterns, the register-holding wait loop and raw
 * signal helpers. Header-only; each program includes it once.
 */
#ifndef SELFCHECK_H
#define SELFCHECK_H
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

/* ---------- reporting ---------- */

/* One task's (or thread's) check results. */
struct report {
	char buf[1 << 15];
	size_t len;
	int fails;
};

__attribute__((format(printf, 2, 3))) static inline void say(struct report *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(r->buf + r->len, sizeof r->buf - r->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		r->len += (size_t)n < sizeof r->buf - r->len ? (size_t)n : sizeof r->buf - r->len - 1;
}

/* Records "ok NAME" or "FAIL NAME: detail" in report R. */
#define CHECK(R, name, cond, ...)                             \
	do {                                                  \
		if (cond) {                                   \
			say(R, "ok %s\n", name);              \
		} else {                                      \
			say(R, "FAIL %s: ", name);            \
			say(R, __VA_ARGS__);                  \
			say(R, "\n");                         \
			(R)->fails++;                         \
		}                                             \
	} while (0)

/* Appends "ALL OK" or "FAIL N check(s)" and writes the report to PATH
 * (via PATH.tmp and rename, so a reader sees it whole). */
static inline int finish_report(struct report *r, const char *path)
{
	if (r->fails)
		say(r, "FAIL %d check(s)\n", r->fails);
	else
		say(r, "ALL OK\n");
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, r->buf, r->len) != (ssize_t)r->len || close(fd) || rename(tmp, path))
		return -1;
	return 0;
}

/* Appends the lines of the report file "result-NAME" (in the cwd), each
 * prefixed "NAME: ", to ALL; a missing file or one not ending in "ALL OK"
 * counts as a failure (a tree's root collecting its tasks' reports). */
static inline void collect_report(struct report *all, char name)
{
	char path[32];
	static char buf[1 << 15];
	snprintf(path, sizeof path, "result-%c", name);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		say(all, "FAIL %c: no %s\n", name, path);
		all->fails++;
		return;
	}
	buf[n] = 0;
	char *save, *l = strtok_r(buf, "\n", &save);
	const char *last = "";
	for (; l; l = strtok_r(NULL, "\n", &save)) {
		say(all, "%c: %s\n", name, l);
		last = l;
	}
	if (strcmp(last, "ALL OK"))
		all->fails++;
}

/* The exit status for a report: 0 if all passed, 10 + failures (at most 110). */
static inline int report_status(const struct report *r)
{
	return r->fails ? 10 + (r->fails > 100 ? 100 : r->fails) : 0;
}

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
	exit(99);
}

/* Points fds 0-2 at /dev/null (nothing outside the process is needed after
 * a restore) and writes LINE, the READY line, on the original stdout. */
__attribute__((format(printf, 1, 2))) static inline void announce_ready(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	int out = dup(1), null = open("/dev/null", O_RDWR);
	if (out < 0 || null < 0 || n < 0 || n >= (int)sizeof line)
		die("announce_ready");
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	close(null);
	if (write(out, line, (size_t)n) != n)
		die("write READY");
	close(out);
}

/* Installs FN as SIG's handler and blocks SIG (taken in sigsuspend). */
static inline void handle_blocked(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sigaction(sig, &sa, NULL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

/* Waits in sigsuspend (the current mask but SIG) until *FLAG is set, by
 * SIG's handler (installed with handle_blocked). */
static inline void suspend_until(int sig, volatile sig_atomic_t *flag)
{
	sigset_t wait;
	sigprocmask(SIG_BLOCK, NULL, &wait);
	sigdelset(&wait, sig);
	while (!*flag)
		sigsuspend(&wait);
}

/* Phase 1 start-up of a program that waits for SIGUSR1 in sigsuspend:
 * enters DIR in a session of its own, blocks SIGUSR1 (the mask to wait
 * with goes to *wait_mask) and installs HANDLER for it. */
static inline void start_usr1_waiter(const char *dir, void (*handler)(int), sigset_t *wait_mask)
{
	if (chdir(dir) || setsid() < 0)
		die("chdir/setsid");
	struct sigaction sa = {0};
	sa.sa_handler = handler;
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, wait_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction");
}

/* Sleeps until *counter reaches n (phase 1 start-up only). */
static inline void wait_count(atomic_int *counter, int n)
{
	while (atomic_load(counter) < n) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

/* ---------- patterns ---------- */

static inline uint64_t pattern(uint64_t seed, uint64_t page, uint64_t word)
{
	return (seed << 48) ^ (page << 20) ^ ((word + 1) * 0x9e3779b97f4a7c15ULL);
}

static inline void fill(void *p, uint64_t seed, size_t pages)
{
	uint64_t *w = p;
	for (size_t pg = 0; pg < pages; pg++)
		for (size_t i = 0; i < PAGE / 8; i++)
			w[pg * (PAGE / 8) + i] = pattern(seed, pg, i);
}

/* Number of words of page `pg` that differ from the pattern. */
static inline size_t page_diff(const void *p, uint64_t seed, size_t pg)
{
	const uint64_t *w = (const uint64_t *)p + pg * (PAGE / 8);
	size_t bad = 0;
	for (size_t i = 0; i < PAGE / 8; i++)
		bad += w[i] != pattern(seed, pg, i);
	return bad;
}

static inline int page_is_zero(const void *p)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

static inline void fill_bytes(uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

/* ---------- the register block the wait loop uses ---------- */

struct regblock {
	uint64_t gp_in[8];      /* rbx r8 r9 r10 r12 r13 r14 r15 */
	uint64_t gp_out[8];     /* 64 */
	uint8_t ymm_in[512];    /* 128: ymm0-ymm15 */
	uint8_t ymm_out[512];   /* 640 */
	uint32_t mx_in, mx_out; /* 1152, 1156 */
	volatile int go;        /* 1160 */
	uint32_t mx_default;    /* 1164 */
	uint8_t zmm_in[1024];   /* 1168: zmm16-zmm31 */
	uint8_t zmm_out[1024];  /* 2192 */
	uint64_t k_in[8];       /* 3216: k1-k7 (k_in[0] unused) */
	uint64_t k_out[8];      /* 3280 */
} __attribute__((aligned(64)));
_Static_assert(offsetof(struct regblock, gp_out) == 64, "layout");
_Static_assert(offsetof(struct regblock, ymm_in) == 128, "layout");
_Static_assert(offsetof(struct regblock, ymm_out) == 640, "layout");
_Static_assert(offsetof(struct regblock, mx_in) == 1152, "layout");
_Static_assert(offsetof(struct regblock, go) == 1160, "layout");
_Static_assert(offsetof(struct regblock, zmm_in) == 1168, "layout");
_Static_assert(offsetof(struct regblock, zmm_out) == 2192, "layout");
_Static_assert(offsetof(struct regblock, k_in) == 3216, "layout");
_Static_assert(offsetof(struct regblock, k_out) == 3280, "layout");


#define LOAD_GP_YMM                                                                    \
	"vmovdqu 128(%%rdx), %%ymm0\n\tvmovdqu 160(%%rdx), %%ymm1\n\t"                 \
	"vmovdqu 192(%%rdx), %%ymm2\n\tvmovdqu 224(%%rdx), %%ymm3\n\t"                 \
	"vmovdqu 256(%%rdx), %%ymm4\n\tvmovdqu 288(%%rdx), %%ymm5\n\t"                 \
	"vmovdqu 320(%%rdx), %%ymm6\n\tvmovdqu 352(%%rdx), %%ymm7\n\t"                 \
	"vmovdqu 384(%%rdx), %%ymm8\n\tvmovdqu 416(%%rdx), %%ymm9\n\t"                 \
	"vmovdqu 448(%%rdx), %%ymm10\n\tvmovdqu 480(%%rdx), %%ymm11\n\t"               \
	"vmovdqu 512(%%rdx), %%ymm12\n\tvmovdqu 544(%%rdx), %%ymm13\n\t"               \
	"vmovdqu 576(%%rdx), %%ymm14\n\tvmovdqu 608(%%rdx), %%ymm15\n\t"               \
	"ldmxcsr 1152(%%rdx)\n\t"                                                      \
	"mov 0(%%rdx), %%rbx\n\tmov 8(%%rdx), %%r8\n\tmov 16(%%rdx), %%r9\n\t"         \
	"mov 24(%%rdx), %%r10\n\tmov 32(%%rdx), %%r12\n\tmov 40(%%rdx), %%r13\n\t"     \
	"mov 48(%%rdx), %%r14\n\tmov 56(%%rdx), %%r15\n\t"

#define WAIT_LOOP                                                                      \
	"1:\n\tmov %[nr], %%eax\n\tsyscall\n\t"                                        \
	"cmpl $0, 1160(%%rdx)\n\tje 1b\n\t"

#define STORE_GP_YMM                                                                   \
	"mov %%rbx, 64(%%rdx)\n\tmov %%r8, 72(%%rdx)\n\tmov %%r9, 80(%%rdx)\n\t"       \
	"mov %%r10, 88(%%rdx)\n\tmov %%r12, 96(%%rdx)\n\tmov %%r13, 104(%%rdx)\n\t"    \
	"mov %%r14, 112(%%rdx)\n\tmov %%r15, 120(%%rdx)\n\t"                           \
	"stmxcsr 1156(%%rdx)\n\t"                                                      \
	"vmovdqu %%ymm0, 640(%%rdx)\n\tvmovdqu %%ymm1, 672(%%rdx)\n\t"                 \
	"vmovdqu %%ymm2, 704(%%rdx)\n\tvmovdqu %%ymm3, 736(%%rdx)\n\t"                 \
	"vmovdqu %%ymm4, 768(%%rdx)\n\tvmovdqu %%ymm5, 800(%%rdx)\n\t"                 \
	"vmovdqu %%ymm6, 832(%%rdx)\n\tvmovdqu %%ymm7, 864(%%rdx)\n\t"                 \
	"vmovdqu %%ymm8, 896(%%rdx)\n\tvmovdqu %%ymm9, 928(%%rdx)\n\t"                 \
	"vmovdqu %%ymm10, 960(%%rdx)\n\tvmovdqu %%ymm11, 992(%%rdx)\n\t"               \
	"vmovdqu %%ymm12, 1024(%%rdx)\n\tvmovdqu %%ymm13, 1056(%%rdx)\n\t"             \
	"vmovdqu %%ymm14, 1088(%%rdx)\n\tvmovdqu %%ymm15, 1120(%%rdx)\n\t"

#define CLOBBERS                                                                       \
	"rax", "rbx", "rcx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", \
	"xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
	"xmm13", "xmm14", "xmm15", "memory"

/* Waits in rt_sigsuspend(mask) until a handler sets rb->go, with registers
 * loaded from rb and stored back to rb afterwards; AVX only. */
static inline void wait_avx(struct regblock *rb, const uint64_t *mask)
{
	__asm__ volatile(LOAD_GP_YMM WAIT_LOOP STORE_GP_YMM "ldmxcsr 1164(%%rdx)\n\t"
			 :
			 : "d"(rb), "D"(mask), "S"(8L), [nr] "i"(SYS_rt_sigsuspend)
			 : CLOBBERS);
}

/* The same, also holding zmm16-zmm31 and k1-k7. */
__attribute__((target("avx512f"))) static inline void wait_avx512(struct regblock *rb, const uint64_t *mask)
{
#define Z(n, off) "vmovdqu64 " #off "(%%rdx), %%zmm" #n "\n\t"
#define ZS(n, off) "vmovdqu64 %%zmm" #n ", " #off "(%%rdx)\n\t"
#define K(n) "kmovq " #n "*8+3216(%%rdx), %%k" #n "\n\t"
#define KS(n) "kmovq %%k" #n ", " #n "*8+3280(%%rdx)\n\t"
	__asm__ volatile(LOAD_GP_YMM
			 Z(16, 1168) Z(17, 1232) Z(18, 1296) Z(19, 1360) Z(20, 1424) Z(21, 1488) Z(22, 1552)
			 Z(23, 1616) Z(24, 1680) Z(25, 1744) Z(26, 1808) Z(27, 1872) Z(28, 1936) Z(29, 2000)
			 Z(30, 2064) Z(31, 2128)
			 K(1) K(2) K(3) K(4) K(5) K(6) K(7)
			 WAIT_LOOP STORE_GP_YMM
			 ZS(16, 2192) ZS(17, 2256) ZS(18, 2320) ZS(19, 2384) ZS(20, 2448) ZS(21, 2512)
			 ZS(22, 2576) ZS(23, 2640) ZS(24, 2704) ZS(25, 2768) ZS(26, 2832) ZS(27, 2896)
			 ZS(28, 2960) ZS(29, 3024) ZS(30, 3088) ZS(31, 3152)
			 KS(1) KS(2) KS(3) KS(4) KS(5) KS(6) KS(7)
			 "ldmxcsr 1164(%%rdx)\n\t"
			 :
			 : "d"(rb), "D"(mask), "S"(8L), [nr] "i"(SYS_rt_sigsuspend)
			 : CLOBBERS, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",
			   "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2",
			   "k3", "k4", "k5", "k6", "k7");
#undef Z
#undef ZS
#undef K
#undef KS
}

static inline int have_avx512(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16)))
		return 0;
	/* The OS must have enabled opmask/ZMM state in XCR0. */
	uint32_t lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 0xe6) == 0xe6;
}

/* ---------- raw syscalls ---------- */

struct ksigaction {
	uint64_t handler, flags, restorer, mask;
};

static inline long raw_sigaction(int sig, const struct ksigaction *act, struct ksigaction *old)
{
	return syscall(SYS_rt_sigaction, sig, act, old, 8);
}

static inline uint64_t raw_sigmask(void)
{
	uint64_t m = 0;
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, 8);
	return m;
}

static inline uint64_t bit(int sig) { return 1ULL << (sig - 1); }

static inline int sys_clock_gettime(clockid_t c, struct timespec *ts) { return (int)syscall(SYS_clock_gettime, c, ts); }

static inline void sys_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	syscall(SYS_nanosleep, &ts, NULL);
}
/* Fills rb's input values from SEED (distinct per thread/task). */
static inline void regs_init(struct regblock *rb, uint64_t seed)
{
	for (int i = 0; i < 8; i++)
		rb->gp_in[i] = (0x0123456789abcdefULL * (i + 1) ^ 0xa5a5a5a500000000ULL) + (seed << 56);
	fill_bytes(rb->ymm_in, sizeof rb->ymm_in, (uint8_t)(0x99 + seed * 13));
	fill_bytes(rb->zmm_in, sizeof rb->zmm_in, (uint8_t)(0x3c + seed * 29));
	for (int i = 1; i < 8; i++)
		rb->k_in[i] = 0x1111111111111111ULL * i + 0x0102030405060708ULL + seed;
	rb->mx_in = 0x1f80 | (3 << 13) | (1 << 15); /* round toward zero, flush to zero */
	rb->mx_default = 0x1f80;
}

/* Waits for rb->go with the registers held (zmm/k too when AVX-512 is there). */
static inline void wait_for_go(struct regblock *rb, const uint64_t *mask, int avx512)
{
	if (avx512)
		wait_avx512(rb, mask);
	else
		wait_avx(rb, mask);
}

/* Compares the registers held across the wait with what was loaded. */
static inline void check_registers(struct report *R, const struct regblock *rb, int avx512)
{
	int bad = 0;
	static const char *gpn[8] = {"rbx", "r8", "r9", "r10", "r12", "r13", "r14", "r15"};
	for (int i = 0; i < 8; i++)
		if (rb->gp_out[i] != rb->gp_in[i]) {
			say(R, "FAIL regs: %s = %#lx, want %#lx\n", gpn[i], rb->gp_out[i], rb->gp_in[i]);
			bad++;
		}
	CHECK(R, "gp-registers", !bad, "%d registers differ", bad);
	bad = 0;
	for (int i = 0; i < 16; i++)
		bad += memcmp(rb->ymm_out + 32 * i, rb->ymm_in + 32 * i, 32) != 0;
	CHECK(R, "ymm0-15", !bad, "%d ymm registers differ", bad);
	CHECK(R, "mxcsr", (rb->mx_out & 0xffc0) == (rb->mx_in & 0xffc0), "mxcsr %#x, want %#x", rb->mx_out, rb->mx_in);
	if (avx512) {
		bad = 0;
		for (int i = 0; i < 16; i++)
			bad += memcmp(rb->zmm_out + 64 * i, rb->zmm_in + 64 * i, 64) != 0;
		CHECK(R, "zmm16-31", !bad, "%d zmm registers differ", bad);
		bad = 0;
		for (int i = 1; i < 8; i++)
			bad += rb->k_out[i] != rb->k_in[i];
		CHECK(R, "k1-7", !bad, "%d opmask registers differ", bad);
	} else {
		/* Counted as a skip by the tests (assert_all_ok), never silent. */
		say(R, "skip zmm16-31 k1-7: this CPU has no AVX-512\n");
	}
}

#endif
