/*
 * Benchmark program for criu-rs dump: fills MEM_MIB of anonymous memory
 * with a non-zero pattern, prints "READY pid=N mem=ADDR", then blocks
 * reading stdin; on input it verifies the pattern and prints OK or FAIL.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bigmem MEM_MIB\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	size_t len = strtoull(argv[1], NULL, 0) << 20;
	uint64_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 3;
	for (size_t i = 0; i < len / 8; i++)
		mem[i] = i * 0x9e3779b97f4a7c15ULL + 1;
	printf("READY pid=%d mem=%p\n", getpid(), (void *)mem);
	char c;
	if (read(0, &c, 1) != 1)
		return 4;
	for (size_t i = 0; i < len / 8; i++)
		if (mem[i] != i * 0x9e3779b97f4a7c15ULL + 1) {
			printf("FAIL word %zu\n", i);
			return 1;
		}
	printf("OK\n");
	return 0;
}
