/*
 * kvm_smoke - minimal /dev/kvm smoke test for the nested-SVM rig (tests/rig/).
 *
 * Creates a VM with 64 KiB of RAM and one vCPU in real mode that runs:
 *   mov ecx, N ; 1: dec ecx ; jnz 1b      (busy loop: native speed check)
 *   mov al, 0x5a ; out 0x10, al           (PIO write exit)
 *   in al, 0x11 ; inc al ; out 0x12, al   (PIO read exit: we supply a value, it comes back +1)
 *   mov bx, 0x2000 ; mov ds, bx ; mov [0x10], al   (MMIO write exit at 0x20010, outside RAM)
 *   hlt                                   (HLT exit: no in-kernel irqchip)
 * and checks every exit, its data and the final registers.
 *
 *   kvm_smoke [N]      N loop iterations (default 100000000)
 * Exit status 0 and a last line "kvm_smoke: OK ..." on success.
 *
 * Build: gcc -O2 -static -o kvm_smoke kvm_smoke.c   (or without -static)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE 0x10000
#define CODE_AT 0x1000
#define MMIO_ADDR 0x20010
#define IN_VALUE 0x41

static int failures;

static void fail(const char *what)
{
	fprintf(stderr, "kvm_smoke: FAIL %s (errno %d: %s)\n", what, errno, strerror(errno));
	exit(1);
}

static void check(int ok, const char *what)
{
	printf("kvm_smoke: %-44s %s\n", what, ok ? "ok" : "FAILED");
	if (!ok)
		failures++;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *exit_name(uint32_t r)
{
	static char buf[24];
	switch (r) {
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_MMIO: return "MMIO";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	case KVM_EXIT_INTR: return "INTR";
	}
	snprintf(buf, sizeof buf, "exit#%u", r);
	return buf;
}

int main(int argc, char **argv)
{
	unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 0) : 100000000UL;
	setvbuf(stdout, NULL, _IOLBF, 0);

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		fail("open /dev/kvm");
	int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	check(api == KVM_API_VERSION, "KVM_GET_API_VERSION == 12");
	printf("kvm_smoke: max vcpus %d, nested state cap %d\n",
	       ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS),
	       ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_NESTED_STATE));

	int vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
	if (vm < 0)
		fail("KVM_CREATE_VM");
	uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		fail("mmap guest RAM");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uintptr_t)ram,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		fail("KVM_SET_USER_MEMORY_REGION");

	uint32_t n32 = (uint32_t)iters;
	uint8_t code[] = {
		0x66, 0xb9, n32, n32 >> 8, n32 >> 16, n32 >> 24, /* mov ecx, N */
		0x66, 0x49,                                      /* 1: dec ecx */
		0x75, 0xfc,                                      /* jnz 1b */
		0xb0, 0x5a,                                      /* mov al, 0x5a */
		0xe6, 0x10,                                      /* out 0x10, al */
		0xe4, 0x11,                                      /* in al, 0x11 */
		0xfe, 0xc0,                                      /* inc al */
		0xe6, 0x12,                                      /* out 0x12, al */
		0xbb, 0x00, 0x20,                                /* mov bx, 0x2000 */
		0x8e, 0xdb,                                      /* mov ds, bx */
		0xa2, 0x10, 0x00,                                /* mov [0x10], al */
		0xf4,                                            /* hlt */
	};
	memcpy(ram + CODE_AT, code, sizeof code);

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
	if (vcpu < 0)
		fail("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		fail("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		fail("mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		fail("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_AT, .rflags = 0x2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		fail("KVM_SET_REGS");

	/* expected exit sequence */
	enum { ST_OUT10, ST_IN11, ST_OUT12, ST_MMIO, ST_HLT, ST_DONE } st = ST_OUT10;
	double t0 = now(), t_loop = 0;
	unsigned long intr = 0;
	while (st != ST_DONE) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				intr++;
				continue;
			}
			fail("KVM_RUN");
		}
		uint8_t *io = (uint8_t *)run + run->io.data_offset;
		switch (st) {
		case ST_OUT10:
			if (run->exit_reason == KVM_EXIT_INTR) {
				intr++;
				continue;
			}
			t_loop = now() - t0;
			check(run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
			      run->io.port == 0x10 && run->io.size == 1 && *io == 0x5a,
			      "PIO out 0x10 <- 0x5a after the loop");
			st = ST_IN11;
			break;
		case ST_IN11:
			check(run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN &&
			      run->io.port == 0x11 && run->io.size == 1,
			      "PIO in 0x11");
			*io = IN_VALUE;
			st = ST_OUT12;
			break;
		case ST_OUT12:
			check(run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
			      run->io.port == 0x12 && *io == IN_VALUE + 1,
			      "PIO out 0x12 <- (value read) + 1");
			st = ST_MMIO;
			break;
		case ST_MMIO:
			check(run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write &&
			      run->mmio.phys_addr == MMIO_ADDR && run->mmio.len == 1 &&
			      run->mmio.data[0] == IN_VALUE + 1,
			      "MMIO write 0x20010 <- 0x42");
			st = ST_HLT;
			break;
		case ST_HLT:
			check(run->exit_reason == KVM_EXIT_HLT, "HLT exit");
			st = ST_DONE;
			break;
		case ST_DONE:
			break;
		}
		if (failures) {
			fprintf(stderr, "kvm_smoke: unexpected exit %s at step %d\n", exit_name(run->exit_reason), st);
			break;
		}
	}
	if (ioctl(vcpu, KVM_GET_REGS, &regs) < 0)
		fail("KVM_GET_REGS");
	check((uint32_t)regs.rcx == 0, "loop counter ecx == 0");
	check(regs.rip == CODE_AT + sizeof code, "rip after hlt");
	printf("kvm_smoke: guest loop %lu iterations in %.3f s = %.1f M iter/s (%lu signal exits)\n",
	       iters, t_loop, t_loop > 0 ? iters / t_loop / 1e6 : 0.0, intr);
	if (failures) {
		printf("kvm_smoke: FAIL (%d checks failed)\n", failures);
		return 1;
	}
	printf("kvm_smoke: OK (%.3f s)\n", now() - t0);
	return 0;
}
