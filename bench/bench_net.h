// bench_net.h: what the network benchmarks (rlx-bench-transport, rlx-bench-weights) share:
// endpoints on a chosen transport, a throw-away prompt file for the hub, medians, and a
// bounded thread join. Benchmarks only: nothing here is part of the rlx processes.
#ifndef RLX_BENCH_NET_H
#define RLX_BENCH_NET_H

#include <pthread.h>
#include <stddef.h>

// A ZeroMQ endpoint for transport "tcp" (127.0.0.1:port) or "ipc" (a socket file under
// /tmp named after the pid, the port and tag), written to buf. -1 for another transport.
int bench_endpoint(char *buf, size_t cap, const char *transport, int port, const char *tag);
// Removes the socket file of an ipc endpoint (no-op for tcp).
void bench_endpoint_cleanup(const char *endpoint);
// A default port for this process: 20000 + pid % 20000, so that concurrent runs rarely clash.
int bench_default_port(void);

// Writes n lines "AB+CD=<TAB>target" to a fresh file under /tmp (removed at exit); its path
// goes to buf.
// 0, or -1 with a message on stderr.
int bench_write_prompts(char *buf, size_t cap, int n);

// Median of n values (sorts v in place); 0 for n == 0.
double bench_median(double *v, int n);

// CPU seconds used so far by this process's threads whose name (comm) starts with prefix
// (from /proc/self/task/*/schedstat, nanosecond resolution); "" counts every thread.
// Threads that already ended are not counted.
double bench_thread_cpu_s(const char *prefix);

// This process's name (its main thread's comm, /proc/self/comm) into out; fallback if it
// cannot be read. Threads created later inherit it, which the CPU accounting above relies on.
void bench_process_name(char *out, size_t cap, const char *fallback);

// Joins t, waiting at most timeout_s. 0 if joined; -1 if it did not end in time (it is then
// detached and left running: the caller should exit soon).
int bench_join(pthread_t t, double timeout_s);

#endif
