/*
 * Test program for a thread caught inside an rseq critical section.
 *
 * Usage: rseqcs DIR RESULT_FILE
 *
 * Thread T uses glibc's rseq registration and enters a critical section
 * whose body blocks in read() on a pipe. Whatever stops a thread inside
 * a critical section (being scheduled out while blocked, a signal, a
 * checkpoint) must make it leave through the abort handler, or, if it
 * runs on to the commit, leave the rseq_cs pointer it stored untouched:
 * a restore that puts T back inside the section with the pointer cleared
 * (the kernel clears it whenever the thread returns to user space
 * elsewhere, e.g. in a syscall a dumper runs in it) lets the section
 * commit unprotected, which T sees.
 *
 * READY line: "READY pid=R t=T abort=ADDR" (ADDR: the abort handler, where
 * a dump puts T's instruction pointer). On SIGUSR1, R writes a byte to the
 * pipe, joins T and writes "ok"/"FAIL" lines and a last "ALL OK" or
 * "FAIL N check(s)" to RESULT_FILE.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/rseq.h>

#include "selfcheck.h"

extern char rseqcs_abort_ip[];

static struct report rep;
static volatile sig_atomic_t go;
static int pipefd[2];
static atomic_int t_tid, t_in;
static int t_aborted = -1;
static uint64_t t_seen = 1, t_want = 2;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

/* Enters the critical section and reads one byte inside it; returns 1 if
 * it left through the abort handler. SEEN gets the rseq_cs pointer as the
 * section finds it at its end, WANT the one it stored. */
__attribute__((noinline)) static int read_in_cs(volatile struct rseq *rs, int fd, char *buf, uint64_t *seen, uint64_t *want)
{
	__asm__ __volatile__ goto(
		".pushsection __rseqcs_table, \"aw\"\n\t"
		".balign 32\n\t"
		"rseqcs_cs_obj:\n\t"
		".long 0, 0\n\t"                       /* version, flags */
		".quad 1f, (2f - 1f), rseqcs_abort_ip\n\t" /* start, post-commit offset, abort */
		".popsection\n\t"
		"leaq rseqcs_cs_obj(%%rip), %%r8\n\t"
		"1:\n\t"
		"movq %%r8, %[rseq_cs]\n\t"
		"xor %%eax, %%eax\n\t" /* read(fd, buf, 1) */
		"syscall\n\t"
		"movq %%r8, %[want]\n\t"
		"movq %[rseq_cs], %%r9\n\t"
		"movq %%r9, %[seen]\n\t"
		"2:\n\t"
		".pushsection __rseqcs_abort, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t" /* nopl <sig>(%rip): the signature */
		".long 0x53053053\n\t"
		".globl rseqcs_abort_ip\n\t"
		"rseqcs_abort_ip:\n\t"
		"jmp %l[aborted]\n\t"
		".popsection\n\t"
		:
		: [rseq_cs] "m"(rs->rseq_cs), [want] "m"(*want), [seen] "m"(*seen), "D"(fd), "S"(buf), "d"(1L)
		: "memory", "cc", "rax", "rcx", "r8", "r9", "r11"
		: aborted);
	return 0;
aborted:
	return 1;
}

static void *thread_t(void *arg)
{
	(void)arg;
	atomic_store(&t_tid, (int)syscall(SYS_gettid));
	volatile struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	char c;
	atomic_store(&t_in, 1);
	t_aborted = read_in_cs(rs, pipefd[0], &c, &t_seen, &t_want);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: rseqcs DIR RESULT_FILE\n");
		return 2;
	}
	const char *result = argv[2];
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	if (__rseq_size == 0) {
		fprintf(stderr, "rseqcs: glibc did not register rseq\n");
		return 3;
	}
	if (pipe(pipefd))
		die("pipe");
	pthread_t th;
	if (pthread_create(&th, NULL, thread_t, NULL))
		die("pthread_create");
	while (!atomic_load(&t_in))
		usleep(1000);
	/* T sits in the read inside the section (a hang guard, not a timing check). */
	char path[64], buf[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", atomic_load(&t_tid));
	for (int i = 0; i < 60000; i++) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 2 && buf[0] == '0' && buf[1] == ' ')
			break;
		usleep(1000);
	}
	announce_ready("READY pid=%d t=%d abort=%p\n", getpid(), atomic_load(&t_tid), (void *)rseqcs_abort_ip);
	while (!go)
		sigsuspend(&wait_mask);
	if (write(pipefd[1], "x", 1) != 1)
		die("write");
	pthread_join(th, NULL);
	say(&rep, "T %s\n", t_aborted == 1 ? "aborted" : "committed");
	CHECK(&rep, "section left safely", t_aborted == 1 || (t_aborted == 0 && t_seen == t_want),
	      "aborted %d, rseq_cs %#llx at the commit, stored %#llx", t_aborted, (unsigned long long)t_seen,
	      (unsigned long long)t_want);
	if (finish_report(&rep, result))
		die("writing the result");
	return report_status(&rep);
}
