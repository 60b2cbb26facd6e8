/* A stand-in for a lazily restored task (the restorer is not there yet):
 * maps SIZE bytes at BASE, registers them with a userfaultfd in MISSING mode,
 * prints "ready", waits for "go" on stdin, hands the uffd to the lazy-pages
 * daemon at SOCKET (criu-rs's hand-over protocol), closes its copy and then
 * checks the memory from inside: every 8-byte word at address A must hold
 * pattern(A), except the last page, which the images leave out (zero).
 *
 * usage: lazy_child MODE SIZE_BYTES BASE_HEX SOCKET
 * modes: check   read everything in order
 *        random  touch one byte per page in random order, timing each
 *                ("median_ns N", "p90_ns N"), then check everything
 *        events  fork at once; the child mremaps the 2nd quarter away and
 *                unmaps the 3rd, the parent drops 16 pages with
 *                MADV_DONTNEED (they must read zero); both check the rest
 *        halt    check the first half, print "half", wait for a line on
 *                stdin, check the rest, print "done"
 *        forkhalt  fork; the child does "halt", the parent waits for it and
 *                exits with its status
 *        idle    wait for a line on stdin, then check everything
 *        late    hand over first, register afterwards (as the restorer
 *                blob does), then as check
 *        nofeatures  UFFDIO_API without the event features (refused)
 *        partial register only the first half, then as idle (the daemon
 *                must kill it once its registration timeout passes)
 * exit 0: all correct; 2: wrong data (printed); 1: setup failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static uint64_t pattern(uint64_t a) { return a * 0x9E3779B97F4A7C15ULL + 0x1234567ULL; }

static void die(const char *what) { perror(what); exit(1); }

/* Checks [from, to) of the mapping now at `at`, whose data belongs at
 * original address `orig`; `zero_from`: original address where the hole
 * (zero) starts. */
static int check(uint64_t at, uint64_t orig, uint64_t len, uint64_t zero_from)
{
    for (uint64_t off = 0; off < len; off += 8) {
        uint64_t got = *(volatile uint64_t *)(at + off);
        uint64_t want = orig + off >= zero_from ? 0 : pattern(orig + off);
        if (got != want) {
            printf("BAD at %#lx (orig %#lx): got %#lx want %#lx\n", (unsigned long)(at + off),
                   (unsigned long)(orig + off), (unsigned long)got, (unsigned long)want);
            fflush(stdout);
            return 2;
        }
    }
    return 0;
}

static void hand_over(const char *path, int uffd)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    if (s < 0)
        die("socket");
    /* The daemon may still be starting: retry for up to 20 s. */
    for (int i = 0; connect(s, (struct sockaddr *)&sa, sizeof(sa)); i++) {
        if ((errno != ENOENT && errno != ECONNREFUSED) || i == 20000)
            die("connect");
        usleep(1000);
    }
    uint32_t hello[4] = { 0x47505a4c, 1, (uint32_t)getpid(), 0 };
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = { hello, sizeof(hello) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &uffd, sizeof(int));
    if (sendmsg(s, &mh, 0) != sizeof(hello))
        die("sendmsg");
    uint32_t ack[2];
    if (read(s, ack, sizeof(ack)) != sizeof(ack) || ack[0] != 0x47505a4c || ack[1] != 0) {
        fprintf(stderr, "daemon refused: %u\n", ack[1]);
        exit(1);
    }
    close(s);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 1;
    const char *mode = argv[1];
    uint64_t size = strtoull(argv[2], NULL, 0), base = strtoull(argv[3], NULL, 16);
    uint64_t hole = base + size - PAGE;
    void *m = mmap((void *)base, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (m != (void *)base)
        die("mmap");
    int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0)
        die("userfaultfd");
    struct uffdio_api api = { .api = UFFD_API,
        .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
                    UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_THREAD_ID };
    if (!strcmp(mode, "nofeatures"))
        api.features = 0;
    if (ioctl(uffd, UFFDIO_API, &api))
        die("UFFDIO_API");
    struct uffdio_register reg = { .range = { base, size }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (!strcmp(mode, "partial"))
        reg.range.len = size / 2;
    int late = !strcmp(mode, "late");
    if (!late && ioctl(uffd, UFFDIO_REGISTER, &reg))
        die("UFFDIO_REGISTER");
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof(line), stdin))
        return 1;
    hand_over(argv[4], uffd);
    if (late) {
        /* The blob's order: the daemon already holds the uffd. */
        if (ioctl(uffd, UFFDIO_REGISTER, &reg))
            die("UFFDIO_REGISTER");
        mode = "check";
    }
    close(uffd);
    if (!strcmp(mode, "partial"))
        mode = "idle";

    if (!strcmp(mode, "check"))
        return check(base, base, size, hole);
    if (!strcmp(mode, "random")) {
        uint64_t n = size / PAGE;
        uint64_t *order = malloc(n * 8), *lat = malloc(n * 8);
        for (uint64_t i = 0; i < n; i++)
            order[i] = i;
        uint64_t r = 88172645463325252ULL;
        for (uint64_t i = n - 1; i > 0; i--) {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            uint64_t j = r % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t t0 = now_ns();
            (void)*(volatile char *)(base + order[i] * PAGE);
            lat[i] = now_ns() - t0;
        }
        qsort(lat, n, 8, cmp_u64);
        printf("median_ns %lu\np90_ns %lu\n", (unsigned long)lat[n / 2], (unsigned long)lat[n * 9 / 10]);
        fflush(stdout);
        return check(base, base, size, hole);
    }
    if (!strcmp(mode, "events")) {
        uint64_t q = size / 4;
        pid_t child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            uint64_t to = base + 2 * size;
            if (mremap((void *)(base + q), q, q, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)to) != (void *)to)
                die("mremap");
            if (munmap((void *)(base + 2 * q), q))
                die("munmap");
            int rc = check(base, base, q, hole);
            rc = rc ? rc : check(to, base + q, q, hole);
            rc = rc ? rc : check(base + 3 * q, base + 3 * q, q, hole);
            _exit(rc);
        }
        if (madvise((void *)base, 16 * PAGE, MADV_DONTNEED))
            die("madvise");
        int rc = 0;
        for (uint64_t off = 0; off < 16 * PAGE && !rc; off += 8)
            if (*(volatile uint64_t *)(base + off)) {
                printf("BAD after DONTNEED at %#lx\n", (unsigned long)(base + off));
                rc = 2;
            }
        rc = rc ? rc : check(base + 16 * PAGE, base + 16 * PAGE, size - 16 * PAGE, hole);
        int st;
        if (waitpid(child, &st, 0) != child)
            die("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
            printf("child failed: status %#x\n", st);
            return rc ? rc : 2;
        }
        return rc;
    }
    if (!strcmp(mode, "idle")) {
        if (!fgets(line, sizeof(line), stdin))
            return 1;
        return check(base, base, size, hole);
    }
    if (!strcmp(mode, "forkhalt")) {
        pid_t child = fork();
        if (child < 0)
            die("fork");
        if (child > 0) {
            int st;
            if (waitpid(child, &st, 0) != child)
                die("waitpid");
            return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
        }
        mode = "halt";
    }
    if (!strcmp(mode, "halt")) {
        int rc = check(base, base, size / 2, hole);
        if (rc)
            return rc;
        printf("half\n");
        fflush(stdout);
        if (!fgets(line, sizeof(line), stdin))
            return 1;
        rc = check(base + size / 2, base + size / 2, size / 2, hole);
        printf("done %d\n", rc);
        fflush(stdout);
        return rc;
    }
    return 1;
}
