// wandelay: a WAN between two network namespaces, for the round-trip benchmark
// (integration/bench/wan.sh). This kernel has no netem, so the link is a program: a TUN
// device in each namespace, every packet read from one held |delay_ms| (RTT/2), then
// written to the other. SYNs, every TLS flight and the data all pay it; packets keep
// their order (one fixed delay per direction is a FIFO).
//
//   wandelay NS_A NS_B DELAY_MS SECONDS [DEV]
//
// Creates DEV (default "wan0") in both namespaces and prints "ready" once they exist; the
// caller gives them addresses. Ends after SECONDS, or on SIGTERM / SIGINT; the devices go
// with it.
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16384  // packets in flight per direction; more are dropped, as a router would
#define MTU_MAX 2048

typedef struct {
    uint64_t due_us[SLOTS];
    uint16_t len[SLOTS];
    uint8_t data[SLOTS][MTU_MAX];
    size_t head, count;
    uint64_t dropped, passed;
} queue;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int enter_netns(const char *name) {
    char path[256];
    snprintf(path, sizeof(path), "/var/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        fprintf(stderr, "wandelay: cannot enter network namespace %s: %s\n", name, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    return 0;
}

// tun_open creates the TUN device |dev| in the current network namespace.
static int tun_open(const char *dev) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "wandelay: /dev/net/tun: %s\n", strerror(errno));
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        fprintf(stderr, "wandelay: TUNSETIFF %s: %s\n", dev, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

// take reads every packet waiting on |fd| into |q|, each due |delay_us| from now.
static void take(int fd, queue *q, uint64_t delay_us) {
    for (;;) {
        uint8_t scratch[MTU_MAX];
        int full = q->count == SLOTS;
        size_t slot = (q->head + q->count) % SLOTS;
        ssize_t n = read(fd, full ? scratch : q->data[slot], MTU_MAX);
        if (n <= 0) {
            return;
        }
        if (full) {
            q->dropped++;
            continue;
        }
        q->len[slot] = (uint16_t)n;
        q->due_us[slot] = now_us() + delay_us;
        q->count++;
    }
}

// give writes the packets of |q| that are due to |fd|. Returns µs until the next is due,
// or -1 if none waits.
static int64_t give(int fd, queue *q) {
    uint64_t now = now_us();
    while (q->count > 0) {
        size_t slot = q->head;
        if (q->due_us[slot] > now) {
            return (int64_t)(q->due_us[slot] - now);
        }
        if (write(fd, q->data[slot], q->len[slot]) < 0 && errno == EAGAIN) {
            return 100;  // the device's queue is full: a moment later
        }
        q->passed++;
        q->head = (q->head + 1) % SLOTS;
        q->count--;
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: wandelay NS_A NS_B DELAY_MS SECONDS [DEV]\n");
        return 2;
    }
    const char *dev = argc > 5 ? argv[5] : "wan0";
    uint64_t delay_us = (uint64_t)strtoul(argv[3], NULL, 10) * 1000u;
    uint64_t end = now_us() + (uint64_t)strtoul(argv[4], NULL, 10) * 1000000u;
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0 || enter_netns(argv[1]) != 0) {
        return 1;
    }
    int fa = tun_open(dev);
    if (fa < 0 || enter_netns(argv[2]) != 0) {
        return 1;
    }
    int fb = tun_open(dev);
    if (fb < 0 || setns(home, CLONE_NEWNET) != 0) {
        return 1;
    }
    close(home);
    queue *ab = calloc(1, sizeof(queue)), *ba = calloc(1, sizeof(queue));
    if (ab == NULL || ba == NULL) {
        fprintf(stderr, "wandelay: out of memory\n");
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("ready\n");
    fflush(stdout);
    while (!g_stop && now_us() < end) {
        int64_t wa = give(fb, ab), wb = give(fa, ba);
        int64_t wait = 200000;  // look at the clock at least every 200 ms
        if (wa >= 0 && wa < wait) {
            wait = wa;
        }
        if (wb >= 0 && wb < wait) {
            wait = wb;
        }
        struct pollfd p[2] = {{.fd = fa, .events = POLLIN}, {.fd = fb, .events = POLLIN}};
        struct timespec ts = {.tv_sec = wait / 1000000, .tv_nsec = (wait % 1000000) * 1000};
        if (ppoll(p, 2, &ts, NULL) < 0 && errno != EINTR) {
            break;
        }
        if (p[0].revents & POLLIN) {
            take(fa, ab, delay_us);
        }
        if (p[1].revents & POLLIN) {
            take(fb, ba, delay_us);
        }
    }
    fprintf(stderr, "wandelay: %llu packets a->b, %llu b->a, %llu dropped\n", (unsigned long long)ab->passed,
            (unsigned long long)ba->passed, (unsigned long long)(ab->dropped + ba->dropped));
    return 0;
}
