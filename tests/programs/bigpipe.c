/*
 * Test program for a pipe larger than the default 64 KiB: its buffer is
 * raised to 1 MiB (F_SETPIPE_SZ; fs.pipe-max-size is 1 MiB here) and
 * filled with 1 MiB of patterned bytes nobody has read.
 *
 * Usage: bigpipe DIR RESULT_FILE
 *
 * Phase 1: in its own session and in DIR, it makes the pipe, writes the
 * whole 1 MiB (which only fits in a 1 MiB buffer), writes "READY pid=N"
 * on the original stdout (fds 0-2 then point at /dev/null) and waits in
 * sigsuspend. Phase 2 (SIGUSR1): it checks the buffer size, that exactly
 * 1 MiB is queued (FIONREAD), reads it back and compares every byte, then
 * checks the pipe is empty; writes the report ("ALL OK" last when all
 * passed) to RESULT_FILE and exits 0 or 10 + failures.
 */
#define _GNU_SOURCE
#include <sys/ioctl.h>

#include "selfcheck.h"

#define SIZE (1 << 20)

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static uint8_t byte_at(size_t i) { return (uint8_t)(i * 131 + (i >> 12) * 7 + 3); }

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: bigpipe DIR RESULT_FILE\n");
		return 2;
	}
	sigset_t old;
	start_usr1_waiter(argv[1], on_usr1, &old);
	int p[2];
	if (pipe2(p, O_NONBLOCK) || fcntl(p[1], F_SETPIPE_SZ, SIZE) != SIZE)
		die("pipe of 1 MiB");
	static uint8_t buf[SIZE];
	for (size_t i = 0; i < SIZE; i++)
		buf[i] = byte_at(i);
	if (write(p[1], buf, SIZE) != SIZE)
		die("queueing 1 MiB");
	announce_ready("READY pid=%d\n", getpid());

	while (!go)
		sigsuspend(&old);

	struct report R = {0};
	int sz = fcntl(p[0], F_GETPIPE_SZ);
	CHECK(&R, "pipe-size", sz == SIZE, "%d, want %d", sz, SIZE);
	int queued = -1;
	ioctl(p[0], FIONREAD, &queued);
	CHECK(&R, "queued", queued == SIZE, "%d bytes, want %d", queued, SIZE);
	memset(buf, 0, SIZE);
	size_t got = 0;
	while (got < SIZE) {
		ssize_t n = read(p[0], buf + got, SIZE - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	size_t bad = 0;
	for (size_t i = 0; i < got; i++)
		bad += buf[i] != byte_at(i);
	CHECK(&R, "contents", got == SIZE && bad == 0, "read %zu bytes, %zu wrong", got, bad);
	char extra;
	CHECK(&R, "then-empty", read(p[0], &extra, 1) < 0 && errno == EAGAIN, "more bytes after 1 MiB");
	if (finish_report(&R, argv[2]))
		return 98;
	return report_status(&R);
}
