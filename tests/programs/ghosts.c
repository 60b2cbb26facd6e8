/*
 * Test program for files removed while open ("ghosts") that are not plain
 * open regular files.
 *
 * Usage: ghosts DIR RESULT
 * Phase 1, in DIR (in a session of its own): its working directory is
 * DIR/gone/sub, removed with its parent gone (fd 10 is open on it too); fd
 * 11 a character device node made like /dev/null (1:3) and removed; fd 12
 * a FIFO holding "in the fifo", removed; fd 13 a symbolic link to
 * "target-of-link" opened O_PATH | O_NOFOLLOW, removed; fd 14 an O_TMPFILE
 * file holding "tmpfile" at offset 2; fd 15 a 2 MiB file, removed (over
 * criu-rs's default --ghost-limit); a file of two pages mapped shared,
 * removed and closed (only the mapping holds it), 'A' written at byte
 * 4096 + 5 through the mapping; fd 16 its own /proc/PID/stat (a file that
 * exists only once the restored task does). Prints "READY pid=N" and waits for
 * SIGUSR1. Phase 2 checks from inside: each file is still the same kind
 * with its contents, still removed, and DIR holds nothing. Report to
 * RESULT (selfcheck.h).
 */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

enum { FD_DIR = 10, FD_DEV = 11, FD_FIFO = 12, FD_LINK = 13, FD_TMP = 14, FD_BIG = 15, FD_PROC = 16 };
#define BIG (2 << 20)

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void place(int fd, int at)
{
	if (fd < 0 || dup2(fd, at) != at)
		die("placing fd");
	close(fd);
}

/* The byte of the big file at OFF. */
static char big_at(long off) { return (char)('a' + off % 23); }

/* Whether the directory DIR holds no entry. */
static int empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n == 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: ghosts DIR RESULT\n");
		return 2;
	}
	sigset_t wait_mask;
	start_usr1_waiter(argv[1], on_usr1, &wait_mask);
	char dir[4096];
	if (!getcwd(dir, sizeof dir))
		die("getcwd");

	if (mkdir("gone", 0755) || mkdir("gone/sub", 0710))
		die("mkdir");
	place(open("gone/sub", O_RDONLY | O_DIRECTORY), FD_DIR);
	if (mknod("null", S_IFCHR | 0666, makedev(1, 3)))
		die("mknod");
	place(open("null", O_RDWR), FD_DEV);
	if (mkfifo("fifo", 0640))
		die("mkfifo");
	place(open("fifo", O_RDWR | O_NONBLOCK), FD_FIFO);
	if (write(FD_FIFO, "in the fifo", 11) != 11)
		die("fifo write");
	if (symlink("target-of-link", "link"))
		die("symlink");
	place(open("link", O_PATH | O_NOFOLLOW), FD_LINK);
	place(open(".", O_RDWR | O_TMPFILE, 0600), FD_TMP);
	if (write(FD_TMP, "tmpfile", 7) != 7 || lseek(FD_TMP, 2, SEEK_SET) != 2)
		die("tmpfile");
	place(open("big", O_RDWR | O_CREAT | O_EXCL, 0644), FD_BIG);
	static char big[BIG];
	for (long i = 0; i < BIG; i++)
		big[i] = big_at(i);
	if (write(FD_BIG, big, BIG) != BIG)
		die("big write");
	int m = open("mapped", O_RDWR | O_CREAT | O_EXCL, 0644);
	if (m < 0 || ftruncate(m, 8192))
		die("mapped");
	char *map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	if (map == MAP_FAILED)
		die("mmap");
	close(m);
	map[4096 + 5] = 'A';
	if (unlink("null") || unlink("fifo") || unlink("link") || unlink("big") || unlink("mapped"))
		die("unlink");
	if (chdir("gone/sub") || rmdir("../sub") || rmdir("../../gone"))
		die("rmdir");
	place(open("/proc/self/stat", O_RDONLY), FD_PROC);

	announce_ready("READY pid=%d\n", getpid());
	while (!go)
		sigsuspend(&wait_mask);

	struct report R = {0};
	struct stat cwd, fd;
	char link[4096] = {0};
	int n = readlink("/proc/self/cwd", link, sizeof link - 1);
	CHECK(&R, "cwd-same-as-fd", !stat(".", &cwd) && !fstat(FD_DIR, &fd) && cwd.st_ino == fd.st_ino && cwd.st_dev == fd.st_dev,
	      "cwd and fd %d differ", FD_DIR);
	CHECK(&R, "cwd-removed", n > 0 && strstr(link, "/gone/sub (deleted)") && fd.st_nlink == 0 && S_ISDIR(fd.st_mode) &&
	      (fd.st_mode & 07777) == 0710, "cwd %s, nlink %lu, mode %o", link, (unsigned long)fd.st_nlink, fd.st_mode);
	struct stat st;
	CHECK(&R, "dev-node", !fstat(FD_DEV, &st) && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3) && st.st_nlink == 0 &&
	      write(FD_DEV, "x", 1) == 1, "mode %o rdev %lx nlink %lu", st.st_mode, (unsigned long)st.st_rdev, (unsigned long)st.st_nlink);
	char buf[32] = {0};
	CHECK(&R, "fifo-data", !fstat(FD_FIFO, &st) && S_ISFIFO(st.st_mode) && st.st_nlink == 0 && read(FD_FIFO, buf, sizeof buf) == 11 &&
	      !memcmp(buf, "in the fifo", 11), "mode %o nlink %lu read '%s'", st.st_mode, (unsigned long)st.st_nlink, buf);
	memset(buf, 0, sizeof buf);
	CHECK(&R, "symlink", !fstatat(FD_LINK, "", &st, AT_EMPTY_PATH) && S_ISLNK(st.st_mode) && st.st_nlink == 0 &&
	      readlinkat(FD_LINK, "", buf, sizeof buf) == 14 && !strcmp(buf, "target-of-link"), "mode %o target '%s'", st.st_mode, buf);
	memset(buf, 0, sizeof buf);
	CHECK(&R, "tmpfile", lseek(FD_TMP, 0, SEEK_CUR) == 2 && pread(FD_TMP, buf, sizeof buf, 0) == 7 && !strcmp(buf, "tmpfile") &&
	      !fstat(FD_TMP, &st) && st.st_nlink == 0 && (fcntl(FD_TMP, F_GETFL) & O_ACCMODE) == O_RDWR, "'%s' at %ld", buf,
	      (long)lseek(FD_TMP, 0, SEEK_CUR));
	static char back[BIG];
	int same = pread(FD_BIG, back, BIG, 0) == BIG && !memcmp(back, big, BIG);
	CHECK(&R, "big-ghost", same && !fstat(FD_BIG, &st) && st.st_size == BIG && st.st_nlink == 0, "contents differ or size %ld",
	      (long)st.st_size);
	map[4096 + 6] = 'B';
	CHECK(&R, "mapped-ghost", map[4096 + 5] == 'A' && map[0] == 0 && map[8191] == 0, "byte %d", map[4096 + 5]);
	char want[32], stat[64] = {0};
	snprintf(want, sizeof want, "%d (ghosts)", getpid());
	memset(link, 0, sizeof link);
	snprintf(buf, sizeof buf, "/proc/self/fd/%d", FD_PROC);
	n = readlink(buf, link, sizeof link - 1);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/stat", getpid());
	CHECK(&R, "proc-own-stat", pread(FD_PROC, stat, sizeof stat - 1, 0) > 0 && !strncmp(stat, want, strlen(want)) && n > 0 &&
	      !strcmp(link, path), "read '%.20s', link %s", stat, link);
	CHECK(&R, "dir-empty", empty_dir(dir), "%s holds files", dir);
	CHECK(&R, "gone-gone", access(strcat(dir, "/gone"), F_OK) && errno == ENOENT, "%s exists", dir);
	if (finish_report(&R, argv[2]))
		return 98;
	return report_status(&R);
}
