/* tsc_khz - measure the TSC rate in kHz against CLOCK_MONOTONIC_RAW (rig.sh fallback
 * when dmesg has no "tsc:" line). Prints the median of 5 x 100 ms samples. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <x86intrin.h>

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(void)
{
	double s[5];
	for (int i = 0; i < 5; i++) {
		double t0 = mono();
		unsigned long long c0 = __rdtsc();
		struct timespec d = { 0, 100000000 };
		nanosleep(&d, NULL);
		double t1 = mono();
		unsigned long long c1 = __rdtsc();
		s[i] = (c1 - c0) / (t1 - t0) / 1000.0;
	}
	qsort(s, 5, sizeof s[0], cmp);
	printf("%.0f\n", s[2]);
	return 0;
}
