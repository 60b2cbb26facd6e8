/*
 * Test program for freezing: threads keep appearing and exiting. Prints
 * "READY pid=N", then on each byte from stdin reports how many threads it
 * has created so far ("COUNT n"); exits with "OK" when stdin closes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

static atomic_long created;

static void *short_lived(void *arg)
{
	(void)arg;
	return NULL;
}

static void *spawner(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_t t;
		if (pthread_create(&t, NULL, short_lived, NULL) == 0) {
			pthread_detach(t);
			atomic_fetch_add(&created, 1);
		}
	}
	return NULL;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	pthread_t s;
	for (int i = 0; i < 2; i++)
		pthread_create(&s, NULL, spawner, NULL);
	while (atomic_load(&created) < 100)
		usleep(1000);
	printf("READY pid=%d\n", getpid());
	char c;
	while (read(0, &c, 1) == 1)
		printf("COUNT %ld\n", atomic_load(&created));
	printf("OK\n");
	return 0;
}
