/*
 * usbdev: simulated Kiln DUTs behind umockdev live ioctl handlers (see usbdev.h).
 *
 * Threads and locks. umockdev runs every ioctl handler of the testbed on one worker thread, which
 * must never wait for the device model: handlers only move bytes between URB buffers and the
 * device's FIFOs under d->lock and return. Each device has its own thread that feeds the device
 * agent (key generation, fuse writes: milliseconds each) and carries its answers back into IN
 * URBs. d->feed serialises the agent and the chip state (held around kiln_agent_feed/init and by
 * readers of the chip state); the order is feed, then lock.
 *
 * URBs. A submitted URB is kept with the references umockdev gave us until it is reaped: its
 * data is written into our copy of the URB and buffer, and umockdev copies them back into the
 * client when the reap completes. A reap that finds nothing answers EAGAIN at once a few times,
 * then is parked: it is completed as soon as a URB completes, or with EAGAIN after a back-off
 * that doubles up to reap_backoff_max_ms. That is the cure for usbfs busy polling under umockdev
 * (the device node is a regular file, so poll() always reports it ready and libusb would spin on
 * empty reaps): the client waits inside the reap instead, without slowing down round trips.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/ioctl.h>
#include <linux/usbdevice_fs.h>

#include <umockdev.h>

#include "kiln/agent.h"
#include "kiln/log.h"
#include "kiln/proto.h"
#include "kiln/sim.h"
#include "kiln/util.h"
#include "usbdev.h"

#define URBS_MAX 64u            /* URBs in flight per device (libusb keeps one or two) */
#define PARK_MAX 8u             /* parked reaps: one per usbdevfs client at most */
#define RX_CAP (64u << 10)      /* device receive FIFO (host to agent) */
#define TX_CAP (1u << 20)       /* device transmit FIFO (agent to host) */
#define URB_LEN_MAX (1u << 20)  /* largest URB buffer accepted */
#define FEED_MAX 4096u          /* bytes handed to the agent at once */
#define REAP_SPIN 4u            /* empty reaps answered at once before backing off */
#define BACKOFF_MAX_DEFAULT 8u  /* ms */
#define DRAIN_MAX_US 1000000u   /* a rebooting device waits this long for its last answer to go */
#define UNPLUG_WAIT_US 1000000u /* an unplug fault waits this long for an IN URB to be pending */
#define BOOT_MS_DEFAULT 50u
#define HUBS_MAX 16u
#define DEVS_MAX 16u
#define MAX_PAYLOAD 4096u /* the device agent's maximum payload (as kiln-dut-sim's default) */
#define NOISE_MAX 4096u
#define SPEED_HIGH 3 /* enum usb_device_speed USB_SPEED_HIGH (USBDEVFS_GET_SPEED) */
#define SYSFS_ROOT "/sys/devices/pci0000:00/0000:00:14.0/usb1"
#define DESC_ROOT_HUB                                                                              \
        "12010002090001406b1d020000010302000109021900010100e0000904000001090000000705810304000c"

struct urb {
        int used;
        int done;
        UMockdevIoctlClient *client; /* referenced */
        UMockdevIoctlData *data;     /* our copy of struct usbdevfs_urb, referenced */
        UMockdevIoctlData *buf;      /* our copy of its buffer, referenced; NULL when empty */
        gulong addr;                 /* the URB's address in the client: DISCARDURB names it */
        uint8_t type;
        uint8_t ep;
        size_t len;
        size_t actual;
        uint64_t sub; /* submission order */
        uint64_t seq; /* completion order */
};

struct park {
        UMockdevIoctlClient *client; /* referenced; NULL: slot free */
        UMockdevIoctlData *ptr;      /* the client's `struct usbdevfs_urb *` the reap fills */
        uint64_t deadline_us;        /* 0: blocking REAPURB, no deadline */
};

struct usbdev {
        struct usbdev_bed *bed;
        struct usbdev_opts o;
        char serial[USBDEV_SERIAL_MAX + 1];
        int has_serial;
        char pos[40];
        char syspath[256];
        char devnode[64];
        char uid_hex[2 * KILN_UID_MAX + 1];
        unsigned devnum;
        UMockdevIoctlBase *handler;

        pthread_mutex_t feed; /* the agent and the chip state */
        pthread_mutex_t lock; /* everything below */
        pthread_cond_t cond;
        pthread_t thread;
        int thread_started;
        int stop;
        int present;

        int halted_in;
        int halted_out;
        UMockdevIoctlClient *claimer; /* referenced */
        struct urb urbs[URBS_MAX];
        uint64_t sub;
        uint64_t seq;
        struct park park[PARK_MAX];
        unsigned empty_streak;
        unsigned backoff_ms;
        uint8_t *rx; /* OUT bytes not yet fed to the agent */
        size_t rx_len;
        uint8_t *tx; /* agent output not yet in an IN URB */
        size_t tx_head;
        size_t tx_len;

        unsigned trigger_count;
        int armed;
        int silent;
        int garbage;
        int hold_in;
        int unplug_pending;
        uint64_t unplug_deadline_us;
        int reset_pending;
        uint64_t reset_deadline_us;
        struct sim_prng rng;

        struct sim_state *st;
        struct sim_chip chip;
        struct kiln_agent_ops ops;
        struct kiln_agent_config cfg;
        struct kiln_agent agent;
        uint8_t *agent_rx;
        uint8_t *agent_resp;

        struct usbdev_stats stats;
};

struct usbdev_bed {
        UMockdevTestbed *tb;
        pthread_mutex_t lock; /* the testbed, hubs, devices, addresses */
        unsigned next_devnum;
        char hubs[HUBS_MAX][40];
        unsigned n_hubs;
        struct usbdev *devs[DEVS_MAX];
        unsigned n_devs;
};

static uint64_t now_us(void)
{
        return kiln_now_us();
}

/* Absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait (the condvar uses that clock). */
static void deadline_ts(uint64_t at_us, struct timespec *ts)
{
        struct timespec mono;
        uint64_t now = now_us(), wait = at_us > now ? at_us - now : 0;

        clock_gettime(CLOCK_MONOTONIC, &mono);
        ts->tv_sec = mono.tv_sec + (time_t)(wait / 1000000u);
        ts->tv_nsec = mono.tv_nsec + (long)(wait % 1000000u) * 1000L;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

static void wait_until(struct usbdev *d, uint64_t at_us)
{
        struct timespec ts;

        deadline_ts(at_us, &ts);
        (void)pthread_cond_timedwait(&d->cond, &d->lock, &ts);
}

void usbdev_opts_default(struct usbdev_opts *o)
{
        memset(o, 0, sizeof(*o));
        o->vid = USBDEV_VID;
        o->pid = USBDEV_PID;
        o->ports[0] = 1;
        o->n_ports = 1;
}

/* ---------------------------------------------------------------- preload */

void usbdev_preload_reexec(int argc, char **argv)
{
        const char *pre = getenv("LD_PRELOAD"), *asan = getenv("ASAN_OPTIONS");
        char lp[8192], ao[8192];
        int n1, n2;

        (void)argc;
        if (access(USBDEV_PRELOAD, R_OK) != 0) {
                fprintf(stderr,
                        "usbdev: the umockdev preload library %s is missing (%s): install "
                        "umockdev and libumockdev-dev; USB tests cannot run without it\n",
                        USBDEV_PRELOAD, strerror(errno));
                exit(1);
        }
        if (pre != NULL && strstr(pre, "libumockdev-preload") != NULL)
                return;
        n1 = snprintf(lp, sizeof(lp), "%s%s%s", USBDEV_PRELOAD, pre != NULL && pre[0] ? ":" : "",
                      pre != NULL ? pre : "");
        n2 = snprintf(ao, sizeof(ao), "%s%sverify_asan_link_order=0", asan != NULL ? asan : "",
                      asan != NULL && asan[0] ? ":" : "");
        if (n1 < 0 || (size_t)n1 >= sizeof(lp) || n2 < 0 || (size_t)n2 >= sizeof(ao) ||
            setenv("LD_PRELOAD", lp, 1) != 0 || setenv("ASAN_OPTIONS", ao, 1) != 0) {
                fprintf(stderr, "usbdev: cannot set up the environment for the preload\n");
                exit(1);
        }
        execv("/proc/self/exe", argv);
        fprintf(stderr, "usbdev: cannot re-execute under %s: %s\n", USBDEV_PRELOAD,
                strerror(errno));
        exit(1);
}

/* ---------------------------------------------------------------- descriptors */

/* Device descriptor (USB 2.0, EP0 64 bytes, bcdDevice 1.00, strings 1 2 3) followed by
 * configuration 1: one vendor-class interface, bulk OUT 0x01 and bulk IN 0x81 of 512 bytes. */
/* clang-format off */
static const uint8_t desc_tmpl[50] = {
        18, 1, 0x00, 0x02, 0x00, 0x00, 0x00, 64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 1, 2, 3, 1,
        9, 2, 32, 0, 1, 1, 0, 0x80, 50,
        9, 4, 0, 0, 2, 0xFF, 0, 0, 0,
        7, 5, 0x01, 0x02, USBDEV_MPS & 0xFF, USBDEV_MPS >> 8, 0,
        7, 5, 0x81, 0x02, USBDEV_MPS & 0xFF, USBDEV_MPS >> 8, 0,
};
/* clang-format on */

static size_t descriptors(const struct usbdev *d, uint8_t *out)
{
        memcpy(out, desc_tmpl, sizeof(desc_tmpl));
        out[8] = (uint8_t)(d->o.vid & 0xFF);
        out[9] = (uint8_t)(d->o.vid >> 8);
        out[10] = (uint8_t)(d->o.pid & 0xFF);
        out[11] = (uint8_t)(d->o.pid >> 8);
        out[16] = d->has_serial ? 3 : 0; /* iSerialNumber */
        return sizeof(desc_tmpl);
}

/* String descriptor idx into out (UTF-16LE); 0 when there is no such string. */
static size_t string_desc(const struct usbdev *d, unsigned idx, uint8_t *out, size_t cap)
{
        const char *s;
        size_t n, k = 2;

        if (idx == 0) {
                if (cap < 4)
                        return 0;
                out[0] = 4;
                out[1] = 3;
                out[2] = 0x09; /* LANGID 0x0409, English (US) */
                out[3] = 0x04;
                return 4;
        }
        if (idx == 1)
                s = "Kiln";
        else if (idx == 2)
                s = "Kiln simulated DUT";
        else if (idx == 3 && d->has_serial)
                s = d->serial;
        else
                return 0;
        n = strlen(s);
        if (2 + 2 * n > cap || 2 + 2 * n > 255)
                return 0;
        for (size_t i = 0; i < n; i++) {
                out[k++] = (uint8_t)s[i];
                out[k++] = 0;
        }
        out[0] = (uint8_t)k;
        out[1] = 3;
        return k;
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[p[i] >> 4];
                out[2 * i + 1] = digits[p[i] & 15];
        }
        out[2 * n] = '\0';
}

/* ---------------------------------------------------------------- testbed */

/* One usb_device in umockdev's text format. */
static int describe(char *out, size_t cap, const char *syspath, unsigned devnum, uint16_t vid,
                    uint16_t pid, const char *serial, const char *desc_hex)
{
        int n = snprintf(out, cap,
                         "P: %s\n"
                         "N: bus/usb/001/%03u\n"
                         "E: SUBSYSTEM=usb\n"
                         "E: DEVTYPE=usb_device\n"
                         "E: DEVNAME=/dev/bus/usb/001/%03u\n"
                         "E: BUSNUM=001\n"
                         "E: DEVNUM=%03u\n"
                         "E: ID_VENDOR_ID=%04x\n"
                         "E: ID_MODEL_ID=%04x\n"
                         "%s%s%s"
                         "A: busnum=1\\n\n"
                         "A: devnum=%u\\n\n"
                         "A: speed=480\\n\n"
                         "A: idVendor=%04x\\n\n"
                         "A: idProduct=%04x\\n\n"
                         "A: bConfigurationValue=1\\n\n"
                         "%s%s%s"
                         "A: dev=189:%u\\n\n"
                         "H: descriptors=%s\n",
                         syspath + 4, devnum, devnum, devnum, vid, pid,
                         serial ? "E: ID_SERIAL_SHORT=" : "", serial ? serial : "",
                         serial ? "\n" : "", devnum, vid, pid, serial ? "A: serial=" : "",
                         serial ? serial : "", serial ? "\\n\n" : "", devnum - 1u, desc_hex);

        return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* Caller holds b->lock. */
static unsigned bed_devnum(struct usbdev_bed *b)
{
        if (b->next_devnum > 127)
                b->next_devnum = 2; /* addresses are 1..127; the root hub keeps 1 */
        return b->next_devnum++;
}

/* The hub at ports[0..n) (n >= 1) and its parents. Caller holds b->lock. */
static int bed_hub(struct usbdev_bed *b, const uint8_t *ports, unsigned n)
{
        char name[40], path[256], text[2048];
        GError *err = NULL;
        size_t k;

        if (n > 1 && bed_hub(b, ports, n - 1) < 0)
                return -1;
        snprintf(name, sizeof(name), "1-%u", ports[0]);
        for (unsigned i = 1; i < n; i++) {
                k = strlen(name);
                snprintf(name + k, sizeof(name) - k, ".%u", ports[i]);
        }
        for (unsigned i = 0; i < b->n_hubs; i++)
                if (strcmp(b->hubs[i], name) == 0)
                        return 0;
        if (b->n_hubs == HUBS_MAX)
                return -1;
        snprintf(path, sizeof(path), "%s", SYSFS_ROOT);
        for (unsigned i = 1; i <= n; i++) {
                k = strlen(path);
                snprintf(path + k, sizeof(path) - k, "/1-%u", ports[0]);
                for (unsigned j = 1; j < i; j++) {
                        k = strlen(path);
                        snprintf(path + k, sizeof(path) - k, ".%u", ports[j]);
                }
        }
        if (describe(text, sizeof(text), path, bed_devnum(b), 0x1d6b, 0x0002, NULL, DESC_ROOT_HUB) <
                0 ||
            !umockdev_testbed_add_from_string(b->tb, text, &err)) {
                fprintf(stderr, "usbdev: cannot add hub %s: %s\n", name,
                        err != NULL ? err->message : "description too long");
                g_clear_error(&err);
                return -1;
        }
        snprintf(b->hubs[b->n_hubs++], sizeof(b->hubs[0]), "%s", name);
        return 0;
}

int usbdev_bed_new(struct usbdev_bed **ret)
{
        struct usbdev_bed *b = calloc(1, sizeof(*b));
        char text[2048];
        GError *err = NULL;

        if (b == NULL)
                return -1;
        pthread_mutex_init(&b->lock, NULL);
        b->tb = umockdev_testbed_new();
        b->next_devnum = 2;
        /* umockdev_in_mock_environment() caches its first answer: ask after the testbed exists */
        if (!umockdev_in_mock_environment()) {
                fprintf(stderr, "usbdev: not running under the umockdev preload library (call "
                                "usbdev_preload_reexec first)\n");
                usbdev_bed_free(b);
                return -1;
        }
        if (describe(text, sizeof(text), SYSFS_ROOT, 1, 0x1d6b, 0x0002, NULL, DESC_ROOT_HUB) < 0 ||
            !umockdev_testbed_add_from_string(b->tb, text, &err)) {
                fprintf(stderr, "usbdev: cannot add the root hub: %s\n",
                        err != NULL ? err->message : "description too long");
                g_clear_error(&err);
                usbdev_bed_free(b);
                return -1;
        }
        *ret = b;
        return 0;
}

void usbdev_remove_all(struct usbdev_bed *b)
{
        while (b->n_devs > 0)
                usbdev_remove(b->devs[b->n_devs - 1]);
}

void usbdev_bed_free(struct usbdev_bed *b)
{
        if (b == NULL)
                return;
        usbdev_remove_all(b);
        if (b->tb != NULL)
                g_object_unref(b->tb);
        pthread_mutex_destroy(&b->lock);
        free(b);
}

/* Put d on the bus at a new address: attach the handler first, then add the device. */
static int dev_plug(struct usbdev *d)
{
        struct usbdev_bed *b = d->bed;
        uint8_t desc[64];
        char hex[2 * sizeof(desc) + 1], text[4096], node[64];
        GError *err = NULL;
        unsigned devnum;
        int r = -1;

        hex_of(desc, descriptors(d, desc), hex);
        pthread_mutex_lock(&b->lock);
        devnum = bed_devnum(b);
        snprintf(node, sizeof(node), "/dev/bus/usb/001/%03u", devnum);
        /* before the device exists: a hotplug-triggered open must reach this handler */
        if (!umockdev_testbed_attach_ioctl(b->tb, node, d->handler, &err)) {
                fprintf(stderr, "usbdev: cannot attach to %s: %s\n", node, err->message);
                goto out;
        }
        pthread_mutex_lock(&d->lock);
        d->devnum = devnum;
        snprintf(d->devnode, sizeof(d->devnode), "%s", node);
        d->present = 1;
        d->stats.enumerations++;
        pthread_mutex_unlock(&d->lock);
        if (describe(text, sizeof(text), d->syspath, devnum, d->o.vid, d->o.pid,
                     d->has_serial ? d->serial : NULL, hex) < 0 ||
            !umockdev_testbed_add_from_string(b->tb, text, &err)) {
                fprintf(stderr, "usbdev: cannot add %s: %s\n", d->syspath,
                        err != NULL ? err->message : "description too long");
                goto out;
        }
        r = 0;
out:
        g_clear_error(&err);
        pthread_mutex_unlock(&b->lock);
        return r;
}

/* ---------------------------------------------------------------- URBs */

static void urb_free(struct urb *u)
{
        if (u->buf != NULL)
                g_object_unref(u->buf);
        if (u->data != NULL)
                g_object_unref(u->data);
        if (u->client != NULL)
                g_object_unref(u->client);
        memset(u, 0, sizeof(*u));
}

static void park_free(struct park *p)
{
        if (p->ptr != NULL)
                g_object_unref(p->ptr);
        if (p->client != NULL)
                g_object_unref(p->client);
        memset(p, 0, sizeof(*p));
}

static struct park *park_of(struct usbdev *d, UMockdevIoctlClient *c)
{
        for (unsigned i = 0; i < PARK_MAX; i++)
                if (d->park[i].client == c)
                        return &d->park[i];
        return NULL;
}

/* The oldest completed URB of client c, NULL when none. */
static struct urb *urb_reapable(struct usbdev *d, UMockdevIoctlClient *c)
{
        struct urb *best = NULL;

        for (unsigned i = 0; i < URBS_MAX; i++) {
                struct urb *u = &d->urbs[i];

                if (u->used && u->done && u->client == c && (best == NULL || u->seq < best->seq))
                        best = u;
        }
        return best;
}

/* Hand a completed URB to a reap (ptr: the client's pointer the reap fills) and forget it. */
static void urb_give(struct usbdev *d, UMockdevIoctlClient *c, UMockdevIoctlData *ptr,
                     struct urb *u)
{
        umockdev_ioctl_data_set_ptr(ptr, 0, u->data);
        if (u->type == USBDEVFS_URB_TYPE_BULK && (u->ep & 0x80))
                d->stats.bytes_in += u->actual;
        d->empty_streak = 0;
        d->backoff_ms = 0;
        urb_free(u);
        umockdev_ioctl_client_complete(c, 0, 0);
}

/* The URB is finished (status 0 or -errno): reapable now; a parked reap gets it at once. */
static void urb_done(struct usbdev *d, struct urb *u, int status)
{
        struct usbdevfs_urb *k = (struct usbdevfs_urb *)(void *)u->data->data;
        struct park *p;

        k->status = status;
        k->actual_length = (int)u->actual;
        u->done = 1;
        u->seq = ++d->seq;
        p = park_of(d, u->client);
        if (p != NULL && !umockdev_ioctl_client_get_connected(p->client)) {
                park_free(p); /* the client went away; gc_clients() drops its URBs */
        } else if (p != NULL) {
                UMockdevIoctlClient *c = g_object_ref(p->client);
                UMockdevIoctlData *ptr = g_object_ref(p->ptr);

                park_free(p);
                urb_give(d, c, ptr, u);
                g_object_unref(ptr);
                g_object_unref(c);
        }
        pthread_cond_broadcast(&d->cond);
}

/* The oldest pending URB on endpoint ep, NULL when none. */
static struct urb *urb_pending(struct usbdev *d, uint8_t ep)
{
        struct urb *best = NULL;

        for (unsigned i = 0; i < URBS_MAX; i++) {
                struct urb *u = &d->urbs[i];

                if (u->used && !u->done && u->type == USBDEVFS_URB_TYPE_BULK && u->ep == ep &&
                    (best == NULL || u->sub < best->sub))
                        best = u;
        }
        return best;
}

/* Move agent output into pending IN URBs, with the packet model the options ask for. */
static void in_pump(struct usbdev *d)
{
        for (;;) {
                struct urb *u = urb_pending(d, 0x81);
                size_t n, room;
                int complete;

                if (u == NULL)
                        return;
                if (d->halted_in) {
                        urb_done(d, u, -EPIPE);
                        continue;
                }
                if (d->tx_len == 0)
                        return;
                room = u->len - u->actual;
                n = d->tx_len < room ? d->tx_len : room;
                if (d->o.in_chunk > 0 && n > d->o.in_chunk)
                        n = d->o.in_chunk;
                if (d->o.no_zlp && n < room)
                        n -= n % USBDEV_MPS; /* whole packets only; a short one would end it */
                if (n == 0)
                        return;
                memcpy(u->buf->data + u->actual, d->tx + d->tx_head, n);
                u->actual += n;
                d->tx_head += n;
                d->tx_len -= n;
                if (d->tx_len == 0)
                        d->tx_head = 0;
                if (d->hold_in)
                        complete = 0; /* the unplug comes first */
                else if (d->o.no_zlp)
                        complete = u->actual == u->len;
                else
                        complete = 1; /* the device ends the transfer with a short packet/ZLP */
                if (!complete)
                        return;
                urb_done(d, u, 0);
        }
}

/* Take bytes of pending OUT URBs into the receive FIFO. */
static void out_pump(struct usbdev *d)
{
        for (;;) {
                struct urb *u = urb_pending(d, 0x01);
                size_t n, room = RX_CAP - d->rx_len;

                if (u == NULL)
                        return;
                if (d->halted_out) {
                        urb_done(d, u, -EPIPE);
                        continue;
                }
                n = u->len - u->actual;
                if (d->o.out_accept > 0) {
                        /* this transfer takes out_accept bytes, then NAKs */
                        size_t left = u->actual < d->o.out_accept ? d->o.out_accept - u->actual : 0;

                        if (n > left)
                                n = left;
                }
                if (n > room)
                        n = room;
                if (n > 0) {
                        memcpy(d->rx + d->rx_len, u->buf->data + u->actual, n);
                        d->rx_len += n;
                        u->actual += n;
                        d->stats.bytes_out += n;
                        pthread_cond_broadcast(&d->cond);
                }
                if (u->actual < u->len)
                        return; /* NAKed until there is room (or for good, with out_accept) */
                urb_done(d, u, 0);
        }
}

static void tx_push(struct usbdev *d, const uint8_t *p, size_t n)
{
        if (d->tx_head > 0 && d->tx_head + d->tx_len + n > TX_CAP) {
                memmove(d->tx, d->tx + d->tx_head, d->tx_len);
                d->tx_head = 0;
        }
        if (d->tx_head + d->tx_len + n > TX_CAP)
                return; /* the host does not read: a real device would drop it too */
        memcpy(d->tx + d->tx_head + d->tx_len, p, n);
        d->tx_len += n;
}

/* A frame as a host would reject it: one byte flipped (never to a delimiter). */
static void push_corrupt(struct usbdev *d, const uint8_t *p, size_t n)
{
        uint8_t tmp[256];
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);

        memcpy(tmp, p, k);
        if (k > 4) {
                tmp[k / 2] ^= 0x01;
                if (tmp[k / 2] == 0x00)
                        tmp[k / 2] = 0x02;
        }
        tx_push(d, tmp, k);
}

static void push_junk(struct usbdev *d, size_t n)
{
        uint8_t b[NOISE_MAX];

        if (n > sizeof(b))
                n = sizeof(b);
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t)sim_prng_next(&d->rng);
        tx_push(d, b, n);
}

/* ---------------------------------------------------------------- usbdevfs */

static void reply(UMockdevIoctlClient *c, long ret, int err)
{
        umockdev_ioctl_client_complete(c, ret, err);
}

/* Answer a parked reap (unless its client went away meanwhile) and free the slot. */
static void park_reply(struct park *p, long ret, int err)
{
        if (umockdev_ioctl_client_get_connected(p->client))
                reply(p->client, ret, err);
        park_free(p);
}

/* Forget what disconnected clients left behind. Caller holds d->lock. */
static void gc_clients(struct usbdev *d)
{
        for (unsigned i = 0; i < URBS_MAX; i++)
                if (d->urbs[i].used && !umockdev_ioctl_client_get_connected(d->urbs[i].client))
                        urb_free(&d->urbs[i]);
        for (unsigned i = 0; i < PARK_MAX; i++)
                if (d->park[i].client != NULL &&
                    !umockdev_ioctl_client_get_connected(d->park[i].client))
                        park_free(&d->park[i]);
        if (d->claimer != NULL && !umockdev_ioctl_client_get_connected(d->claimer)) {
                g_object_unref(d->claimer);
                d->claimer = NULL;
        }
}

static void do_control(struct usbdev *d, struct urb *u)
{
        const uint8_t *s = u->buf->data;
        unsigned type = s[0], req = s[1], value = s[2] | (unsigned)s[3] << 8;
        size_t want = s[6] | (size_t)s[7] << 8, n = 0;
        uint8_t out[256];

        if (type == 0x80 && req == 6 && (value >> 8) == 1) {
                uint8_t all[64];

                descriptors(d, all);
                memcpy(out, all, 18);
                n = 18;
        } else if (type == 0x80 && req == 6 && (value >> 8) == 2) {
                uint8_t all[64];

                n = descriptors(d, all) - 18;
                memcpy(out, all + 18, n);
        } else if (type == 0x80 && req == 6 && (value >> 8) == 3) {
                n = string_desc(d, value & 0xFF, out, sizeof(out));
        }
        if (n == 0) {
                urb_done(d, u, -EPIPE); /* an EP0 stall: "request not supported" */
                return;
        }
        if (n > want)
                n = want;
        if (n > u->len - 8)
                n = u->len - 8;
        memcpy(u->buf->data + 8, out, n);
        u->actual = n;
        urb_done(d, u, 0);
}

static void do_submit(struct usbdev *d, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
        UMockdevIoctlData *ud =
            umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_urb), NULL);
        UMockdevIoctlData *bd = NULL;
        struct usbdevfs_urb *k;
        struct urb *u = NULL;
        int len;

        if (ud == NULL) {
                reply(c, -1, EFAULT);
                return;
        }
        k = (struct usbdevfs_urb *)(void *)ud->data;
        len = k->buffer_length;
        if (len < 0 || (unsigned)len > URB_LEN_MAX ||
            (k->type == USBDEVFS_URB_TYPE_CONTROL && len < 8) ||
            !(k->type == USBDEVFS_URB_TYPE_CONTROL ||
              (k->type == USBDEVFS_URB_TYPE_BULK &&
               (k->endpoint == 0x01 || k->endpoint == 0x81)))) {
                g_object_unref(ud);
                reply(c, -1, EINVAL);
                return;
        }
        if (len > 0) {
                bd = umockdev_ioctl_data_resolve(ud, offsetof(struct usbdevfs_urb, buffer),
                                                 (gsize)len, NULL);
                if (bd == NULL) {
                        g_object_unref(ud);
                        reply(c, -1, EFAULT);
                        return;
                }
        }
        for (unsigned i = 0; i < URBS_MAX && u == NULL; i++)
                if (!d->urbs[i].used)
                        u = &d->urbs[i];
        if (u == NULL) {
                if (bd != NULL)
                        g_object_unref(bd);
                g_object_unref(ud);
                reply(c, -1, ENOMEM);
                return;
        }
        u->used = 1;
        u->client = g_object_ref(c);
        u->data = ud;
        u->buf = bd;
        u->addr = ud->client_addr;
        u->type = k->type;
        u->ep = k->endpoint;
        u->len = (size_t)len;
        u->sub = ++d->sub;
        /* the submit returns first; the URB completes when the device says so */
        reply(c, 0, 0);
        if (u->type == USBDEVFS_URB_TYPE_CONTROL) {
                do_control(d, u);
        } else if (u->ep == 0x01) {
                out_pump(d);
        } else {
                in_pump(d);
        }
}

static void do_reap(struct usbdev *d, UMockdevIoctlClient *c, UMockdevIoctlData *arg, int blocking,
                    int stale)
{
        struct urb *u = urb_reapable(d, c);
        unsigned cap = d->o.reap_backoff_max_ms ? d->o.reap_backoff_max_ms : BACKOFF_MAX_DEFAULT;
        UMockdevIoctlData *ptr;
        struct park *p = NULL;

        if (u == NULL && stale) {
                reply(c, -1, ENODEV); /* after the URBs it had: "device gone" */
                return;
        }
        ptr = umockdev_ioctl_data_resolve(arg, 0, sizeof(void *), NULL);
        if (ptr == NULL) {
                reply(c, -1, EFAULT);
                return;
        }
        if (u != NULL) {
                urb_give(d, c, ptr, u);
                g_object_unref(ptr);
                return;
        }
        d->stats.reaps_empty++;
        if (!blocking && d->empty_streak < REAP_SPIN) {
                d->empty_streak++;
                g_object_unref(ptr);
                reply(c, -1, EAGAIN);
                return;
        }
        for (unsigned i = 0; i < PARK_MAX && p == NULL; i++)
                if (d->park[i].client == NULL)
                        p = &d->park[i];
        if (p == NULL) {
                g_object_unref(ptr);
                reply(c, -1, EAGAIN);
                return;
        }
        /* busy-polling cure: keep the client waiting here until a URB completes or the back-off
         * ends (the device thread times it out) */
        d->backoff_ms = d->backoff_ms == 0 ? 1 : d->backoff_ms * 2;
        if (d->backoff_ms > cap)
                d->backoff_ms = cap;
        p->client = g_object_ref(c);
        p->ptr = ptr;
        p->deadline_us = blocking ? 0 : now_us() + d->backoff_ms * 1000u;
        d->stats.reaps_parked++;
        pthread_cond_broadcast(&d->cond);
}

static void do_discard(struct usbdev *d, UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
        gulong addr = *(gulong *)(void *)arg->data;

        for (unsigned i = 0; i < URBS_MAX; i++) {
                struct urb *u = &d->urbs[i];

                if (u->used && !u->done && u->client == c && u->addr == addr) {
                        /* what already arrived stays in actual_length, as with the kernel */
                        urb_done(d, u, -ENOENT);
                        reply(c, 0, 0);
                        return;
                }
        }
        reply(c, -1, EINVAL); /* already complete: libusb then reaps it */
}

/* The first unsigned int the argument points to (interface or endpoint number). */
static int arg_uint(UMockdevIoctlData *arg, unsigned *ret)
{
        UMockdevIoctlData *v = umockdev_ioctl_data_resolve(arg, 0, sizeof(unsigned), NULL);

        if (v == NULL)
                return -1;
        memcpy(ret, v->data, sizeof(*ret));
        g_object_unref(v);
        return 0;
}

static gboolean on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer user)
{
        struct usbdev *d = user;
        gulong req = umockdev_ioctl_client_get_request(c);
        UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c);
        unsigned v = 0;
        int stale;

        (void)h;
        pthread_mutex_lock(&d->lock);
        gc_clients(d);
        /* a client of an earlier enumeration, or of an unplugged device */
        stale = !d->present || strcmp(umockdev_ioctl_client_get_devnode(c), d->devnode) != 0;
        if (req == USBDEVFS_REAPURB || req == USBDEVFS_REAPURBNDELAY) {
                do_reap(d, c, arg, req == USBDEVFS_REAPURB, stale);
        } else if (stale) {
                reply(c, -1, ENODEV);
        } else if (req == USBDEVFS_GET_CAPABILITIES) {
                UMockdevIoctlData *cap = umockdev_ioctl_data_resolve(arg, 0, sizeof(guint32), NULL);
                guint32 caps = USBDEVFS_CAP_BULK_SCATTER_GATHER | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
                               USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_REAP_AFTER_DISCONNECT;

                if (cap == NULL) {
                        reply(c, -1, EFAULT);
                } else {
                        memcpy(cap->data, &caps, sizeof(caps));
                        g_object_unref(cap);
                        reply(c, 0, 0);
                }
        } else if (req == USBDEVFS_SUBMITURB) {
                do_submit(d, c, arg);
        } else if (req == USBDEVFS_DISCARDURB) {
                do_discard(d, c, arg);
        } else if (req == USBDEVFS_CLAIMINTERFACE || req == USBDEVFS_DISCONNECT_CLAIM) {
                if (arg_uint(arg, &v) < 0)
                        reply(c, -1, EFAULT);
                else if (v != 0)
                        reply(c, -1, EINVAL);
                else if (d->claimer != NULL && d->claimer != c)
                        reply(c, -1, EBUSY);
                else {
                        if (d->claimer == NULL) {
                                d->claimer = g_object_ref(c);
                                d->stats.claims++;
                        }
                        reply(c, 0, 0);
                }
        } else if (req == USBDEVFS_RELEASEINTERFACE) {
                if (d->claimer == c) {
                        g_object_unref(d->claimer);
                        d->claimer = NULL;
                }
                reply(c, 0, 0);
        } else if (req == USBDEVFS_CLEAR_HALT) {
                if (arg_uint(arg, &v) < 0) {
                        reply(c, -1, EFAULT);
                } else {
                        if (v == 0x81)
                                d->halted_in = 0;
                        else if (v == 0x01)
                                d->halted_out = 0;
                        reply(c, 0, 0);
                }
        } else if (req == USBDEVFS_SETINTERFACE || req == USBDEVFS_RESETEP ||
                   req == USBDEVFS_RESET) {
                reply(c, 0, 0);
        } else if (req == USBDEVFS_GETDRIVER || req == USBDEVFS_IOCTL) {
                reply(c, -1, ENODATA); /* no kernel driver bound */
        } else if (req == USBDEVFS_CONNECTINFO) {
                UMockdevIoctlData *ci =
                    umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_connectinfo), NULL);

                if (ci == NULL) {
                        reply(c, -1, EFAULT);
                } else {
                        struct usbdevfs_connectinfo info = {.devnum = d->devnum, .slow = 0};

                        memcpy(ci->data, &info, sizeof(info));
                        g_object_unref(ci);
                        reply(c, 0, 0);
                }
        } else if (req == USBDEVFS_GET_SPEED) {
                reply(c, SPEED_HIGH, 0);
        } else {
                reply(c, -1, ENOTTY);
        }
        pthread_mutex_unlock(&d->lock);
        return TRUE;
}

static void on_client(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer user)
{
        struct usbdev *d = user;

        (void)h;
        (void)c;
        pthread_mutex_lock(&d->lock);
        d->stats.opens++;
        pthread_mutex_unlock(&d->lock);
}

/* ---------------------------------------------------------------- the device */

/* Off the bus: pending URBs end with ENODEV, the "remove" uevent goes out, every later request
 * of the old clients fails with ENODEV. Caller holds d->lock (released around the testbed). */
static void unplug_locked(struct usbdev *d)
{
        char syspath[sizeof(d->syspath)];

        if (!d->present)
                return;
        d->present = 0;
        d->hold_in = 0;
        for (unsigned i = 0; i < URBS_MAX; i++)
                if (d->urbs[i].used && !d->urbs[i].done)
                        urb_done(d, &d->urbs[i], -ENODEV);
        for (unsigned i = 0; i < PARK_MAX; i++)
                if (d->park[i].client != NULL)
                        park_reply(&d->park[i], -1, ENODEV);
        if (d->claimer != NULL) {
                g_object_unref(d->claimer);
                d->claimer = NULL;
        }
        d->rx_len = 0;
        d->tx_head = d->tx_len = 0;
        d->halted_in = d->halted_out = 0;
        snprintf(syspath, sizeof(syspath), "%s", d->syspath);
        pthread_mutex_unlock(&d->lock);
        pthread_mutex_lock(&d->bed->lock);
        /* umockdev's remove_device sends no uevent itself */
        umockdev_testbed_uevent(d->bed->tb, syspath, "remove");
        umockdev_testbed_remove_device(d->bed->tb, syspath);
        pthread_mutex_unlock(&d->bed->lock);
        pthread_mutex_lock(&d->lock);
}

/* hooks.output: one whole frame from the agent. */
static int dev_output(void *ctx, const uint8_t *p, size_t n)
{
        struct usbdev *d = ctx;

        pthread_mutex_lock(&d->lock);
        if (d->armed == 1) {
                d->armed = 2;
                d->stats.fault_fired = 1;
                switch (d->o.fault) {
                case USBDEV_FAULT_STALL:
                        d->halted_in = 1;
                        n = 0;
                        break;
                case USBDEV_FAULT_SILENT:
                        d->silent = 1;
                        break;
                case USBDEV_FAULT_TRUNCATE:
                        tx_push(d, p, n / 2);
                        d->silent = 1;
                        break;
                case USBDEV_FAULT_UNPLUG:
                        d->hold_in = 1;
                        tx_push(d, p, n / 2);
                        d->unplug_pending = 1;
                        d->unplug_deadline_us = now_us() + UNPLUG_WAIT_US;
                        n = 0;
                        break;
                case USBDEV_FAULT_GARBAGE:
                        d->garbage = 1;
                        break;
                default:
                        break;
                }
        }
        if (!d->silent && n > 0 && d->garbage) {
                push_corrupt(d, p, n);
                push_junk(d, 32);
        } else if (!d->silent && n > 0) {
                if (d->o.noise > 0) {
                        push_corrupt(d, p, n);
                        push_junk(d, d->o.noise);
                }
                tx_push(d, p, n);
        }
        in_pump(d);
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
        return KILN_OK;
}

/* hooks.stop: only a failing state save or a fault of kiln_sim's own calls it; neither is set up
 * here, so it is a bug. */
static void dev_stop(void *ctx, int code, const char *why)
{
        (void)ctx;
        fprintf(stderr, "usbdev: simulated chip stopped (%d): %s\n", code, why);
        abort();
}

static void dev_trace(void *ctx, const struct kiln_agent_event *ev)
{
        struct sim_chip *chip = ctx;
        struct usbdev *d = chip->hooks.ctx;
        unsigned nth;

        sim_chip_ops.trace(ctx, ev);
        if (ev->kind != KILN_AGENT_EV_RX || (ev->frame->flags & KILN_FLAG_RESPONSE))
                return;
        pthread_mutex_lock(&d->lock);
        d->stats.frames_rx = chip->frames_rx;
        nth = d->o.fault_nth ? d->o.fault_nth : 1;
        if (d->o.fault != USBDEV_FAULT_NONE && d->armed == 0 &&
            (d->o.fault_type == 0 || ev->frame->type == d->o.fault_type) &&
            ++d->trigger_count == nth)
                d->armed = 1;
        pthread_mutex_unlock(&d->lock);
}

/* IN data the host has not reaped yet (in the FIFO, or in a completed URB). */
static int in_flight(const struct usbdev *d)
{
        if (d->tx_len > 0)
                return 1;
        for (unsigned i = 0; i < URBS_MAX; i++)
                if (d->urbs[i].used && d->urbs[i].done && d->urbs[i].ep == 0x81)
                        return 1;
        return 0;
}

/* After RESET: let the answer go, drop off the bus, boot, come back at a new address. */
static void reboot_locked(struct usbdev *d)
{
        uint64_t boot_end;
        int r;

        if (in_flight(d) && now_us() < d->reset_deadline_us) {
                wait_until(d, d->reset_deadline_us);
                return; /* the loop comes back here */
        }
        d->reset_pending = 0;
        unplug_locked(d);
        boot_end = now_us() + (uint64_t)(d->o.boot_ms ? d->o.boot_ms : BOOT_MS_DEFAULT) * 1000u;
        while (!d->stop && now_us() < boot_end)
                wait_until(d, boot_end); /* the modelled boot time, woken early only by stop */
        if (d->stop)
                return;
        d->silent = d->garbage = 0;
        pthread_mutex_unlock(&d->lock);
        pthread_mutex_lock(&d->feed);
        r = kiln_agent_init(&d->cfg, &d->agent);
        pthread_mutex_unlock(&d->feed);
        if (r < 0 || dev_plug(d) < 0) {
                fprintf(stderr, "usbdev: %s cannot come back after RESET\n", d->pos);
                abort();
        }
        pthread_mutex_lock(&d->lock);
}

static void *dev_main(void *arg)
{
        struct usbdev *d = arg;
        uint8_t chunk[FEED_MAX];

        pthread_mutex_lock(&d->lock);
        while (!d->stop) {
                uint64_t now = now_us(), wake = now + 1000000u;

                for (unsigned i = 0; i < PARK_MAX; i++) {
                        struct park *p = &d->park[i];

                        if (p->client == NULL || p->deadline_us == 0)
                                continue;
                        if (p->deadline_us <= now) {
                                park_reply(p, -1, EAGAIN);
                        } else if (p->deadline_us < wake) {
                                wake = p->deadline_us;
                        }
                }
                if (d->reset_pending) {
                        reboot_locked(d);
                        continue;
                }
                if (d->unplug_pending) {
                        struct urb *u = urb_pending(d, 0x81);

                        in_pump(d);
                        if ((u != NULL && u->actual > 0) || now >= d->unplug_deadline_us) {
                                d->unplug_pending = 0;
                                unplug_locked(d);
                                continue;
                        }
                        if (d->unplug_deadline_us < wake)
                                wake = d->unplug_deadline_us;
                } else if (d->rx_len > 0 && d->present) {
                        size_t n = d->rx_len < sizeof(chunk) ? d->rx_len : sizeof(chunk);
                        int r;

                        memcpy(chunk, d->rx, n);
                        memmove(d->rx, d->rx + n, d->rx_len - n);
                        d->rx_len -= n;
                        out_pump(d);
                        if (d->silent)
                                continue; /* swallowed */
                        pthread_mutex_unlock(&d->lock);
                        pthread_mutex_lock(&d->feed);
                        r = kiln_agent_feed(&d->agent, chunk, n);
                        d->chip.busy_ms = 0; /* no line model here: answers go at once */
                        if (d->chip.reset_requested)
                                r = KILN_AGENT_RESET;
                        d->chip.reset_requested = 0;
                        pthread_mutex_unlock(&d->feed);
                        pthread_mutex_lock(&d->lock);
                        if (r == KILN_AGENT_RESET) {
                                d->reset_pending = 1;
                                d->reset_deadline_us = now_us() + DRAIN_MAX_US;
                        }
                        continue;
                }
                wait_until(d, wake);
        }
        pthread_mutex_unlock(&d->lock);
        return NULL;
}

static int uid_parse(const char *hex, uint8_t *out, size_t *ret_len)
{
        size_t n = strlen(hex);

        if (n == 0 || n % 2 != 0 || n / 2 > KILN_UID_MAX)
                return -1;
        return kiln_hex_decode(hex, out, KILN_UID_MAX, ret_len) < 0 ? -1 : 0;
}

int usbdev_add(struct usbdev_bed *b, const struct usbdev_opts *o, struct usbdev **ret)
{
        struct usbdev *d = NULL;
        struct sim_identity id;
        uint8_t uid[KILN_UID_MAX];
        size_t uid_len = 0, k;
        pthread_condattr_t ca;

        if (o->n_ports < 1 || o->n_ports > USBDEV_PORTS_MAX || b->n_devs == DEVS_MAX ||
            (o->serial != NULL && strlen(o->serial) > USBDEV_SERIAL_MAX) ||
            (o->uid_hex != NULL && uid_parse(o->uid_hex, uid, &uid_len) < 0)) {
                fprintf(stderr, "usbdev: bad device options\n");
                return -1;
        }
        d = calloc(1, sizeof(*d));
        if (d == NULL)
                return -1;
        d->bed = b;
        d->o = *o;
        d->o.serial = NULL;
        d->o.uid_hex = NULL;
        if (o->serial != NULL) {
                snprintf(d->serial, sizeof(d->serial), "%s", o->serial);
                d->has_serial = 1;
        }
        pthread_mutex_init(&d->feed, NULL);
        pthread_mutex_init(&d->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&d->cond, &ca);
        pthread_condattr_destroy(&ca);
        snprintf(d->pos, sizeof(d->pos), "1-%u", o->ports[0]);
        snprintf(d->syspath, sizeof(d->syspath), "%s/1-%u", SYSFS_ROOT, o->ports[0]);
        for (unsigned i = 1; i < o->n_ports; i++) {
                k = strlen(d->pos);
                snprintf(d->pos + k, sizeof(d->pos) - k, ".%u", o->ports[i]);
                k = strlen(d->syspath);
                snprintf(d->syspath + k, sizeof(d->syspath) - k, "/%s", d->pos);
        }
        d->rx = malloc(RX_CAP);
        d->tx = malloc(TX_CAP);
        d->agent_rx = malloc(KILN_AGENT_RX_SIZE(MAX_PAYLOAD));
        d->agent_resp = malloc(KILN_AGENT_RESP_SIZE(MAX_PAYLOAD));
        if (d->rx == NULL || d->tx == NULL || d->agent_rx == NULL || d->agent_resp == NULL)
                goto fail;
        sim_prng_seed(o->ports[o->n_ports - 1], 7, &d->rng);

        memset(&id, 0, sizeof(id));
        id.uid = uid_len > 0 ? uid : NULL;
        id.uid_len = uid_len;
        id.product = o->product != NULL ? o->product : "smartplug-a1";
        id.hw_rev = o->hw_rev != 0 ? o->hw_rev : 2;
        id.fw_version = o->fw_version != NULL ? o->fw_version : "1.0.0";
        id.storage_cap = SIM_STORAGE_DEFAULT;
        if (sim_state_new(&id, &d->st) < 0)
                goto fail;
        d->o.product = NULL;
        d->o.fw_version = NULL;
        hex_of(d->st->uid, d->st->uid_len, d->uid_hex);
        /* no state file: the chip lives in memory, the test reads it here */
        sim_chip_init(d->st, NULL, &d->chip);
        d->chip.hooks.ctx = d;
        d->chip.hooks.output = dev_output;
        d->chip.hooks.stop = dev_stop;
        d->ops = sim_chip_ops;
        d->ops.trace = dev_trace;
        d->cfg.ops = &d->ops;
        d->cfg.ctx = &d->chip;
        d->cfg.rx_buf = d->agent_rx;
        d->cfg.rx_cap = KILN_AGENT_RX_SIZE(MAX_PAYLOAD);
        d->cfg.resp_buf = d->agent_resp;
        d->cfg.resp_cap = KILN_AGENT_RESP_SIZE(MAX_PAYLOAD);
        d->cfg.max_payload = MAX_PAYLOAD;
        d->cfg.name = NULL;
        if (kiln_agent_init(&d->cfg, &d->agent) < 0)
                goto fail;

        d->handler = umockdev_ioctl_base_new();
        g_signal_connect(d->handler, "handle-ioctl", G_CALLBACK(on_ioctl), d);
        g_signal_connect(d->handler, "client-connected", G_CALLBACK(on_client), d);
        if (pthread_create(&d->thread, NULL, dev_main, d) != 0)
                goto fail;
        d->thread_started = 1;
        pthread_mutex_lock(&b->lock);
        if (o->n_ports > 1 && bed_hub(b, o->ports, o->n_ports - 1) < 0) {
                pthread_mutex_unlock(&b->lock);
                goto fail;
        }
        b->devs[b->n_devs++] = d;
        pthread_mutex_unlock(&b->lock);
        if (dev_plug(d) < 0) {
                usbdev_remove(d);
                return -1;
        }
        *ret = d;
        return 0;
fail:
        fprintf(stderr, "usbdev: cannot create the device at %s\n", d->pos);
        if (d->thread_started) {
                pthread_mutex_lock(&d->lock);
                d->stop = 1;
                pthread_cond_broadcast(&d->cond);
                pthread_mutex_unlock(&d->lock);
                pthread_join(d->thread, NULL);
        }
        if (d->handler != NULL)
                g_object_unref(d->handler);
        sim_state_free(d->st);
        free(d->rx);
        free(d->tx);
        free(d->agent_rx);
        free(d->agent_resp);
        free(d);
        return -1;
}

void usbdev_unplug(struct usbdev *d)
{
        pthread_mutex_lock(&d->lock);
        unplug_locked(d);
        pthread_mutex_unlock(&d->lock);
}

void usbdev_remove(struct usbdev *d)
{
        struct usbdev_bed *b;

        if (d == NULL)
                return;
        b = d->bed;
        pthread_mutex_lock(&d->lock);
        unplug_locked(d);
        d->stop = 1;
        pthread_cond_broadcast(&d->cond);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->thread, NULL);
        pthread_mutex_lock(&d->lock);
        for (unsigned i = 0; i < URBS_MAX; i++)
                if (d->urbs[i].used)
                        urb_free(&d->urbs[i]);
        for (unsigned i = 0; i < PARK_MAX; i++)
                if (d->park[i].client != NULL)
                        park_reply(&d->park[i], -1, ENODEV);
        pthread_mutex_unlock(&d->lock);
        pthread_mutex_lock(&b->lock);
        for (unsigned i = 0; i < b->n_devs; i++) {
                if (b->devs[i] == d) {
                        b->devs[i] = b->devs[--b->n_devs];
                        break;
                }
        }
        pthread_mutex_unlock(&b->lock);
        /* the handler stays attached to its (now deleted) nodes until the testbed goes: old
         * clients may still be connected; our signal handlers must not see the freed device */
        g_signal_handlers_disconnect_by_data(d->handler, d);
        g_object_unref(d->handler);
        sim_state_free(d->st);
        pthread_cond_destroy(&d->cond);
        pthread_mutex_destroy(&d->lock);
        pthread_mutex_destroy(&d->feed);
        free(d->rx);
        free(d->tx);
        free(d->agent_rx);
        free(d->agent_resp);
        free(d);
}

void usbdev_stats_get(struct usbdev *d, struct usbdev_stats *ret)
{
        int blank = 1;

        pthread_mutex_lock(&d->feed);
        pthread_mutex_lock(&d->lock);
        *ret = d->stats;
        ret->devnum = d->devnum;
        ret->present = d->present;
        ret->lifecycle = d->st->lifecycle;
        ret->debug_port = d->st->debug_port;
        ret->key_present = 0;
        for (unsigned i = 0; i < SIM_KEY_SLOTS; i++)
                if (d->st->keys[i].present)
                        ret->key_present |= (uint16_t)(1u << i);
        for (unsigned i = 0; i < SIM_FUSE_COUNT; i++)
                for (unsigned j = 0; j < KILN_FUSE_BYTES_MAX; j++)
                        if (d->st->fuses[i][j] != 0)
                                blank = 0;
        ret->fuses_blank = blank;
        pthread_mutex_unlock(&d->lock);
        pthread_mutex_unlock(&d->feed);
}

const char *usbdev_uid_hex(const struct usbdev *d)
{
        return d->uid_hex;
}

const char *usbdev_position(const struct usbdev *d)
{
        return d->pos;
}
