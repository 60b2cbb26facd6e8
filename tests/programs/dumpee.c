/*
 * Test program for criu-rs dump.
 *
 * Usage: dumpee MEM_MIB NTHREADS TMPDIR [seccomp]
 * Puts known state in place (memory pattern, registers, files, signals,
 * timers), prints one "READY key=value ..." line on stdout and blocks in a
 * raw read(0) syscall with known values in r12-r15 and ymm0/ymm1. When a
 * byte arrives on stdin it checks that everything is still as it was and
 * prints "OK" or "FAIL <what>".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
static const uint64_t GP_VALS[4] = {0x1111222233334444ULL, 0x5555666677778888ULL, 0x99990000aaaabbbbULL,
				    0xccccddddeeeeffffULL};
static uint8_t ymm_in[64] __attribute__((aligned(32)));
static uint64_t gp_out[4];
static uint8_t ymm_out[64] __attribute__((aligned(32)));
static int thread_pipe[2];
static volatile sig_atomic_t got_usr1;

static int fail_count;
#define CHECK(cond, ...)                                   \
	do {                                               \
		if (!(cond)) {                             \
			printf("FAIL ");                   \
			printf(__VA_ARGS__);               \
			printf("\n");                      \
			fail_count++;                      \
		}                                          \
	} while (0)

static uint64_t pattern(uint64_t page, uint64_t word)
{
	return 0x5eed000000000000ULL ^ (page << 20) ^ (word * 0x9e3779b97f4a7c15ULL);
}

/* Pages with p % 7 == 3 are never written (some are read); p % 11 == 5 are written with zeros. */
static int page_untouched(uint64_t p) { return p % 7 == 3; }
static int page_zeroed(uint64_t p) { return p % 11 == 5; }

static void handler(int sig, siginfo_t *si, void *ctx)
{
	(void)si;
	(void)ctx;
	if (sig == SIGUSR1)
		got_usr1 = 1;
}

static void *thread_main(void *arg)
{
	uint64_t v = 0x7700000000000000ULL | (uint64_t)(uintptr_t)arg;
	char c;
	long ret;
	char name[16];
	snprintf(name, sizeof name, "worker-%lu", (unsigned long)(uintptr_t)arg);
	prctl(PR_SET_NAME, name);
	/* Thread 2 changes its own effective gid only (raw syscall: no glibc broadcast). */
	if ((uintptr_t)arg == 2)
		syscall(SYS_setresgid, -1, 4321, -1);
	/* Block in read with r12 = v; nobody ever writes to the pipe. */
	__asm__ volatile("mov %[v], %%r12\n\tsyscall"
			 : "=a"(ret)
			 : "a"((long)SYS_read), "D"((long)thread_pipe[0]), "S"(&c), "d"(1L), [v] "r"(v)
			 : "rcx", "r11", "r12", "memory");
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: dumpee MEM_MIB NTHREADS TMPDIR\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	uint64_t mib = strtoull(argv[1], NULL, 0);
	int nthreads = atoi(argv[2]);
	const char *tmp = argv[3];
	size_t len = mib << 20;
	size_t npages = len / PAGE;

	/* Memory. */
	uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 3;
	volatile uint64_t sink = 0;
	for (uint64_t p = 0; p < npages; p++) {
		if (page_untouched(p)) {
			/* Only read: every other one maps the shared zero page. */
			if (p % 2)
				sink += mem[p * (PAGE / 8)];
			continue;
		}
		uint64_t *pg = mem + p * (PAGE / 8);
		for (uint64_t w = 0; w < PAGE / 8; w++)
			pg[w] = page_zeroed(p) ? 0 : pattern(p, w);
	}
	for (int i = 0; i < 64; i++)
		ymm_in[i] = (uint8_t)(i * 3 + 1);
	/* Three special pages: PROT_NONE with data, mlock'ed, MADV_DONTFORK. */
	char *special = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (special == MAP_FAILED)
		return 3;
	memset(special, 0xa5, PAGE);
	mprotect(special, PAGE, PROT_NONE);
	special[PAGE] = 1;
	if (mlock(special + PAGE, PAGE))
		return 3;
	special[2 * PAGE] = 2;
	madvise(special + 2 * PAGE, PAGE, MADV_DONTFORK);
	/* A huge sparse area: 64 GiB reserved, two pages written. */
	char *sparse = mmap(NULL, 64UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (sparse == MAP_FAILED)
		return 3;
	strcpy(sparse, "sparse start");
	strcpy(sparse + (32UL << 30), "sparse middle");
	/* Shared anonymous memory: 16 pages, pages 0 and 2 written. */
	char *shm = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		return 3;
	strcpy(shm, "shared page 0");
	strcpy(shm + 2 * PAGE, "shared page 2");

	/* Files. */
	char path[4096];
	snprintf(path, sizeof path, "%s/dumpee-reg", tmp);
	int reg = open(path, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (write(reg, "0123456789abcdef", 16) != 16)
		return 4;
	lseek(reg, 5, SEEK_SET);
	int dupfd = dup(reg);
	snprintf(path, sizeof path, "%s/dumpee-app", tmp);
	int app = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (write(app, "xy", 2) != 2)
		return 4;
	snprintf(path, sizeof path, "%s/dumpee-ghost", tmp);
	int ghost = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(ghost, "ghost contents", 14) != 14)
		return 4;
	unlink(path);
	/* A mapped file that is then unlinked and closed: only the mapping keeps it. */
	snprintf(path, sizeof path, "%s/dumpee-mapped", tmp);
	int mf = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(mf, "mapped ghost", 12) != 12)
		return 4;
	char *mapghost = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, mf, 0);
	if (mapghost == MAP_FAILED)
		return 4;
	close(mf);
	unlink(path);
	int pfd[2];
	if (pipe(pfd))
		return 5;
	if (write(pfd[1], "queued bytes", 12) != 12)
		return 5;
	int devnull = open("/dev/null", O_WRONLY);
	snprintf(path, sizeof path, "%s/dumpee-fifo", tmp);
	mkfifo(path, 0600);
	int fifo = open(path, O_RDWR | O_NONBLOCK);
	if (write(fifo, "fifo bytes", 10) != 10)
		return 5;
	if (pipe(thread_pipe))
		return 5;

	/* Signals. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGRTMIN + 1);
	sigaddset(&blk, SIGUSR2);
	sigprocmask(SIG_BLOCK, &blk, NULL);
	union sigval sv = {.sival_int = 0x1234};
	sigqueue(getpid(), SIGRTMIN + 1, sv);
	syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);

	stack_t ss = {.ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0};
	sigaltstack(&ss, NULL);
	struct itimerval it = {.it_interval = {500, 0}, .it_value = {1000, 0}};
	setitimer(ITIMER_REAL, &it, NULL);
	/* A POSIX timer: SIGRTMIN+2 with value 0x5678, 3000 s then every 700 s. */
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGRTMIN + 2;
	sev.sigev_value.sival_ptr = (void *)0x5678;
	timer_t tid;
	if (timer_create(CLOCK_MONOTONIC, &sev, &tid))
		return 6;
	struct itimerspec its = {.it_interval = {700, 0}, .it_value = {3000, 0}};
	timer_settime(tid, 0, &its, NULL);

	for (long i = 0; i < nthreads; i++) {
		pthread_t th;
		pthread_create(&th, NULL, thread_main, (void *)(i + 1));
	}
	/* Wait until the threads sit in their read. */
	usleep(50000);
	if (argc > 4 && strcmp(argv[4], "seccomp") == 0) {
		/* An allow-everything seccomp filter. */
		struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
		struct sock_fprog prog = {.len = 1, .filter = &allow};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			return 7;
	}

	printf("READY pid=%d mem=%p pages=%zu ymm=%p reg=%d dup=%d app=%d ghost=%d pipe_r=%d pipe_w=%d devnull=%d "
	       "altstack=%p shm=%p fifo=%d special=%p mapghost=%p sparse=%p\n",
	       getpid(), (void *)mem, npages, (void *)ymm_in, reg, dupfd, app, ghost, pfd[0], pfd[1], devnull, ss.ss_sp, (void *)shm, fifo, (void *)special, (void *)mapghost, (void *)sparse);

	/* Block in read(0) with known registers; store them afterwards. */
	char go;
	long ret;
	__asm__ volatile("vmovdqu (%[yin]), %%ymm0\n\t"
			 "vmovdqu 32(%[yin]), %%ymm1\n\t"
			 "mov 0(%[gin]), %%r12\n\t"
			 "mov 8(%[gin]), %%r13\n\t"
			 "mov 16(%[gin]), %%r14\n\t"
			 "mov 24(%[gin]), %%r15\n\t"
			 "syscall\n\t"
			 "mov %%r12, 0(%[gout])\n\t"
			 "mov %%r13, 8(%[gout])\n\t"
			 "mov %%r14, 16(%[gout])\n\t"
			 "mov %%r15, 24(%[gout])\n\t"
			 "vmovdqu %%ymm0, (%[yout])\n\t"
			 "vmovdqu %%ymm1, 32(%[yout])\n\t"
			 : "=a"(ret)
			 : "a"((long)SYS_read), "D"(0L), "S"(&go), "d"(1L), [yin] "r"(ymm_in), [gin] "r"(GP_VALS),
			   [gout] "r"(gp_out), [yout] "r"(ymm_out)
			 : "rcx", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "memory");
	if (ret != 1) {
		printf("FAIL read returned %ld\n", ret);
		return 1;
	}

	/* Self check. */
	for (int i = 0; i < 4; i++)
		CHECK(gp_out[i] == GP_VALS[i], "r%d = %#lx", 12 + i, (unsigned long)gp_out[i]);
	CHECK(memcmp(ymm_out, ymm_in, 64) == 0, "ymm0/ymm1 changed");
	uint64_t bad = 0;
	for (uint64_t p = 0; p < npages; p++) {
		uint64_t *pg = mem + p * (PAGE / 8);
		for (uint64_t w = 0; w < PAGE / 8; w++) {
			uint64_t want = (page_untouched(p) || page_zeroed(p)) ? 0 : pattern(p, w);
			if (pg[w] != want)
				bad++;
		}
	}
	CHECK(bad == 0, "%lu memory words differ", (unsigned long)bad);
	CHECK(lseek(reg, 0, SEEK_CUR) == 5, "reg pos %ld", (long)lseek(reg, 0, SEEK_CUR));
	CHECK(lseek(dupfd, 0, SEEK_CUR) == 5, "dup pos");
	CHECK((fcntl(app, F_GETFL) & O_APPEND) && (fcntl(app, F_GETFD) & FD_CLOEXEC), "app flags");
	char buf[64] = {0};
	CHECK(pread(ghost, buf, 14, 0) == 14 && memcmp(buf, "ghost contents", 14) == 0, "ghost contents");
	memset(buf, 0, sizeof buf);
	CHECK(read(pfd[0], buf, sizeof buf) == 12 && memcmp(buf, "queued bytes", 12) == 0, "pipe contents '%s'", buf);
	struct sigaction cur;
	sigaction(SIGUSR1, NULL, &cur);
	CHECK(cur.sa_sigaction == handler && (cur.sa_flags & SA_RESTART) && sigismember(&cur.sa_mask, SIGUSR2),
	      "sigaction");
	sigset_t pend, mask;
	sigpending(&pend);
	CHECK(sigismember(&pend, SIGRTMIN + 1) && sigismember(&pend, SIGUSR2), "pending signals");
	sigprocmask(SIG_BLOCK, NULL, &mask);
	CHECK(sigismember(&mask, SIGRTMIN + 1) && sigismember(&mask, SIGUSR2), "signal mask");
	stack_t cur_ss;
	sigaltstack(NULL, &cur_ss);
	CHECK(cur_ss.ss_sp == ss.ss_sp && cur_ss.ss_size == 65536, "sigaltstack");
	struct itimerval cur_it;
	getitimer(ITIMER_REAL, &cur_it);
	CHECK(cur_it.it_interval.tv_sec == 500 && cur_it.it_value.tv_sec > 900, "itimer");
	/* Nothing left mapped by the dumper: same number of mappings as before? Checked by the test. */
	CHECK(devnull >= 0, "devnull");
	CHECK(memcmp(mapghost, "mapped ghost", 12) == 0, "mapped unlinked file");
	CHECK(strcmp(sparse, "sparse start") == 0 && strcmp(sparse + (32UL << 30), "sparse middle") == 0, "sparse area");
	mprotect(special, PAGE, PROT_READ);
	CHECK(special[0] == (char)0xa5 && special[PAGE - 1] == (char)0xa5 && special[PAGE] == 1 && special[2 * PAGE] == 2,
	      "special pages");
	memset(buf, 0, sizeof buf);
	CHECK(read(fifo, buf, sizeof buf) == 10 && memcmp(buf, "fifo bytes", 10) == 0, "fifo contents '%s'", buf);
	struct itimerspec cur_its;
	timer_gettime(tid, &cur_its);
	CHECK(cur_its.it_interval.tv_sec == 700 && cur_its.it_value.tv_sec > 2900, "posix timer");
	CHECK(strcmp(shm, "shared page 0") == 0 && strcmp(shm + 2 * PAGE, "shared page 2") == 0 && shm[PAGE] == 0,
	      "shared memory");
	if (!fail_count)
		printf("OK\n");
	return fail_count ? 1 : 0;
}
