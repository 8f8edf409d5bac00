/*
 * fault_proxy.h - a fault-injecting TCP proxy for the test suite.
 *
 * The kernel of these machines has no netem (see NETWORK-FAULTS.md), and some faults
 * cannot be made by the kernel at all (a cut in the middle of a frame, a flipped byte
 * at a chosen stream offset). The proxy sits between a ferry client and a ferry server
 * on loopback and does them at the byte-stream level:
 *
 *     client --tcp--> [ 127.0.0.1:<port>  fault proxy ] --tcp--> target
 *
 * Per direction (client->server, server->client) and per connection it can delay
 * every chunk, cut chunks small (to split frames at odd places), throttle to a rate,
 * cut the connection after N bytes (FIN or RST), flip bytes at given stream offsets or
 * at random, and drop everything after N bytes while keeping the socket open (a silent
 * peer). On live connections it can stall a direction for a time, silence it (drop
 * or freeze) or cut it now.
 *
 * Design notes:
 *   - One thread, one poll(2) loop, non-blocking sockets; control calls take the
 *     proxy's mutex and wake the loop through a pipe, so they may come from any thread.
 *   - Each direction keeps a bounded queue of chunks (FP_QUEUE_MAX). A full queue, a
 *     stall or a freeze stops reading from the source, so back-pressure reaches the
 *     sender as it would on a real link (the proxy's socket buffers are made small
 *     for the same reason). Only "drop" reads and discards (the kernel keeps ACKing,
 *     like a hung peer whose socket still accepts data).
 *   - Stream offsets count bytes read from the source in that direction since the
 *     connection began; flips are applied when bytes are read, before any delay.
 *   - Configuration is copied into a connection when it is accepted: the "next"
 *     queue (fp_push_conn) first, else the defaults (fp_set_defaults).
 */
#ifndef FERRY_TESTS_FAULT_PROXY_H
#define FERRY_TESTS_FAULT_PROXY_H

#include <stdint.h>

enum fp_dir {
	FP_C2S = 0, /* client -> target */
	FP_S2C = 1, /* target -> client */
};
#define FP_DIR_MASK(d) (1u << (d))
#define FP_BOTH (FP_DIR_MASK(FP_C2S) | FP_DIR_MASK(FP_S2C))

enum fp_cut {
	FP_CUT_NONE = 0,
	FP_CUT_CLOSE, /* FIN to both peers, then the proxy discards what still comes */
	FP_CUT_RST,   /* SO_LINGER 0 + close on both sockets: both peers see a reset */
};

enum fp_silence {
	FP_SILENCE_OFF = 0,
	FP_SILENCE_DROP,   /* read and discard: the sender's socket drains, nothing arrives */
	FP_SILENCE_FREEZE, /* stop reading: the sender's socket buffer fills up             */
};

#define FP_MAX_FLIPS 16

struct fp_flip {
	uint64_t offset;  /* stream offset in this direction */
	uint8_t xor_mask; /* 0 is treated as 0xff */
};

/* Faults of one direction of one connection. All zero = a clean pass-through. */
struct fp_dir_cfg {
	uint32_t delay_ms;   /* each chunk is held this long after it was read          */
	uint32_t chunk_max;  /* bytes per read (0 = 64 KiB)                             */
	int chunk_random;    /* each read takes a random size in [1, chunk_max]         */
	uint64_t rate_bps;   /* throttle to this many bytes per second (0 = unlimited)  */
	enum fp_cut cut;     /* cut the connection once cut_after bytes went this way   */
	uint64_t cut_after;
	int drop;            /* after drop_after bytes forward nothing (read, discard)   */
	uint64_t drop_after;
	struct fp_flip flips[FP_MAX_FLIPS];
	unsigned nflips;
	double flip_rate;    /* probability per byte of one flipped random bit          */
	uint64_t seed;       /* for chunk sizes and random flips (0 = fixed default)    */
};

struct fp_stats {
	uint64_t conns_accepted, conns_live, conns_failed; /* failed: target refused */
	uint64_t bytes[2];   /* forwarded per direction                                 */
	uint64_t dropped[2]; /* read and discarded (drop, silence, after a cut)          */
	uint64_t flips[2];   /* bytes changed                                           */
	uint64_t cuts;       /* connections cut by a rule or fp_cut()                    */
};

struct fp_proxy;

/*
 * Starts a proxy on 127.0.0.1:0 forwarding to target_host:target_port (numeric IPv4).
 * @return 0 or a negative errno.
 */
int fp_start(const char *target_host, uint16_t target_port, struct fp_proxy **out);

/* Stops the thread, closes every connection (RST) and frees the proxy. NULL is ok. */
void fp_stop(struct fp_proxy *p);

/* The port the proxy listens on (127.0.0.1). */
uint16_t fp_port(const struct fp_proxy *p);

/* Writes "tcp://127.0.0.1:<port>" into buf. */
void fp_uri(const struct fp_proxy *p, char *buf, unsigned len);

/* Defaults for connections accepted from now on; NULL = clean. */
void fp_set_defaults(struct fp_proxy *p, const struct fp_dir_cfg *c2s,
		     const struct fp_dir_cfg *s2c);

/* Queues a configuration for exactly one future connection (FIFO); NULL = clean. */
int fp_push_conn(struct fp_proxy *p, const struct fp_dir_cfg *c2s,
		 const struct fp_dir_cfg *s2c);

/* Live connections: stop both reading and forwarding in the directions of dirs
 * for ms milliseconds (then everything resumes, nothing is lost). */
void fp_stall(struct fp_proxy *p, unsigned dirs, uint32_t ms);

/* Live connections: silence (or un-silence) the directions of dirs. */
void fp_silence(struct fp_proxy *p, unsigned dirs, enum fp_silence mode);

/* Live connections: cut each one after `more` further bytes in direction dir
 * (0 = now). */
void fp_cut(struct fp_proxy *p, enum fp_dir dir, uint64_t more, enum fp_cut how);

/* Live connections: replace the rate limit of the directions of dirs. */
void fp_throttle(struct fp_proxy *p, unsigned dirs, uint64_t rate_bps);

void fp_get_stats(struct fp_proxy *p, struct fp_stats *out);

/* Prints every live connection's state (for a test that failed). */
void fp_dump(struct fp_proxy *p, unsigned max);

#endif /* FERRY_TESTS_FAULT_PROXY_H */
