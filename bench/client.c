/*
 * client: hammer one sysfs-like file with one kind of operation.
 *
 *   client -o OP -p PATH [-t SECONDS | -n COUNT] [-c PROCS] [-e ERRNO]
 *
 * OP is one of
 *   read     open(O_RDONLY), read until EOF, close
 *   stat     stat(PATH)
 *   write    open(O_WRONLY), write "1\n", close
 *   trunc    open(O_WRONLY|O_TRUNC), write "1\n", close (as `echo 1 >` does)
 *   readdir  opendir(dirname(PATH)), readdir until the end, closedir
 *   mixed    read, stat, write, readdir in turn
 *
 * PROCS processes (default 1) start together and each runs for SECONDS
 * (default 1) or COUNT operations. A failure with errno ERRNO (-e) counts as
 * the expected result, not as an error: a write of "1\n" to an enabled
 * patch fails with EINVAL every time, as on the kernel.
 *
 * Prints one JSON object on stdout: the operation counts, the throughput
 * (the sum of every process's operations per second) and the errors by
 * errno number. Exit status 0 unless the client itself failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64
#define MAX_ERRNO 134

enum op { OP_READ, OP_STAT, OP_WRITE, OP_TRUNC, OP_READDIR, OP_MIXED };

static const char *const op_names[] = {"read", "stat", "write", "trunc", "readdir", "mixed"};
static const enum op mixed_ops[] = {OP_READ, OP_STAT, OP_WRITE, OP_READDIR};

#define NR_MIXED (sizeof(mixed_ops) / sizeof(mixed_ops[0]))

struct config {
	enum op op;
	const char *path;
	char parent[PATH_MAX];
	double seconds;
	long count;
	int procs;
	int expect_errno;
};

/* What one process sends back: small enough for one atomic pipe write. */
struct result {
	int64_t ops;
	int64_t ok;
	int64_t expected;
	int64_t elapsed_ns;
	int32_t errors[MAX_ERRNO + 1];
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* 0 on success, else the errno of the first failing call. */
static int do_read(const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd, err = 0;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return errno;
	do {
		n = read(fd, buf, sizeof(buf));
	} while (n > 0);
	if (n < 0)
		err = errno;
	if (close(fd) < 0 && !err)
		err = errno;
	return err;
}

static int do_stat(const char *path)
{
	struct stat st;

	return stat(path, &st) < 0 ? errno : 0;
}

static int do_write(const char *path, int flags)
{
	int fd, err = 0;

	fd = open(path, O_WRONLY | flags);
	if (fd < 0)
		return errno;
	if (write(fd, "1\n", 2) < 0)
		err = errno;
	if (close(fd) < 0 && !err)
		err = errno;
	return err;
}

static int do_readdir(const char *dir)
{
	DIR *d;
	int err;

	d = opendir(dir);
	if (!d)
		return errno;
	errno = 0;
	while (readdir(d))
		;
	err = errno;
	if (closedir(d) < 0 && !err)
		err = errno;
	return err;
}

static int do_op(const struct config *cfg, enum op op)
{
	switch (op) {
	case OP_READ:
		return do_read(cfg->path);
	case OP_STAT:
		return do_stat(cfg->path);
	case OP_WRITE:
		return do_write(cfg->path, 0);
	case OP_TRUNC:
		return do_write(cfg->path, O_TRUNC);
	case OP_READDIR:
		return do_readdir(cfg->parent);
	case OP_MIXED:
		break;
	}
	return EINVAL;
}

static void record(struct result *res, const struct config *cfg, int err)
{
	res->ops++;
	if (!err)
		res->ok++;
	else if (err == cfg->expect_errno)
		res->expected++;
	else
		res->errors[err <= MAX_ERRNO ? err : 0]++;
}

static void run_worker(const struct config *cfg, int go_fd, int result_fd)
{
	struct result res;
	int64_t start, deadline;
	char byte;
	long i;

	memset(&res, 0, sizeof(res));
	/* Every worker starts when the parent closes the go pipe. */
	if (read(go_fd, &byte, 1) < 0)
		_exit(2);
	start = now_ns();
	deadline = start + (int64_t)(cfg->seconds * 1e9);
	for (i = 0;; i++) {
		if (cfg->count ? i >= cfg->count : now_ns() >= deadline)
			break;
		record(&res, cfg, do_op(cfg, cfg->op == OP_MIXED ? mixed_ops[i % NR_MIXED] : cfg->op));
	}
	res.elapsed_ns = now_ns() - start;
	if (write(result_fd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(2);
	_exit(0);
}

static void print_json(const struct config *cfg, const struct result *res, int n)
{
	double rate = 0, elapsed = 0;
	int64_t ops = 0, ok = 0, expected = 0;
	const char *sep = "";
	int i, e;

	for (i = 0; i < n; i++) {
		ops += res[i].ops;
		ok += res[i].ok;
		expected += res[i].expected;
		if (res[i].elapsed_ns > 0)
			rate += res[i].ops / (res[i].elapsed_ns / 1e9);
		if (res[i].elapsed_ns / 1e9 > elapsed)
			elapsed = res[i].elapsed_ns / 1e9;
	}
	printf("{\"op\": \"%s\", \"procs\": %d, \"elapsed_s\": %.6f, \"ops\": %lld, "
	       "\"ok\": %lld, \"expected\": %lld, \"ops_per_s\": %.1f, \"errors\": {",
	       op_names[cfg->op], n, elapsed, (long long)ops, (long long)ok,
	       (long long)expected, rate);
	for (e = 0; e <= MAX_ERRNO; e++) {
		long long count = 0;

		for (i = 0; i < n; i++)
			count += res[i].errors[e];
		if (count) {
			printf("%s\"%d\": %lld", sep, e, count);
			sep = ", ";
		}
	}
	printf("}}\n");
}

static int parse_op(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
		if (!strcmp(name, op_names[i]))
			return (int)i;
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: client -o read|stat|write|trunc|readdir|mixed -p PATH "
			"[-t SECONDS | -n COUNT] [-c PROCS] [-e ERRNO]\n");
	exit(2);
}

static void parse_args(int argc, char **argv, struct config *cfg)
{
	char copy[PATH_MAX];
	int opt, op = -1;

	memset(cfg, 0, sizeof(*cfg));
	cfg->seconds = 1.0;
	cfg->procs = 1;
	while ((opt = getopt(argc, argv, "o:p:t:n:c:e:")) != -1) {
		switch (opt) {
		case 'o':
			op = parse_op(optarg);
			break;
		case 'p':
			cfg->path = optarg;
			break;
		case 't':
			cfg->seconds = atof(optarg);
			break;
		case 'n':
			cfg->count = atol(optarg);
			break;
		case 'c':
			cfg->procs = atoi(optarg);
			break;
		case 'e':
			cfg->expect_errno = atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (op < 0 || !cfg->path || cfg->procs < 1 || cfg->procs > MAX_PROCS ||
	    strlen(cfg->path) >= PATH_MAX)
		usage();
	cfg->op = (enum op)op;
	strcpy(copy, cfg->path);
	strcpy(cfg->parent, dirname(copy));
}

int main(int argc, char **argv)
{
	struct result res[MAX_PROCS];
	struct config cfg;
	int go[2], results[2], i, status, failed = 0;
	pid_t pid;

	parse_args(argc, argv, &cfg);
	if (pipe(go) < 0 || pipe(results) < 0) {
		perror("client: pipe");
		return 1;
	}
	for (i = 0; i < cfg.procs; i++) {
		pid = fork();
		if (pid < 0) {
			perror("client: fork");
			return 1;
		}
		if (pid == 0) {
			close(go[1]);
			close(results[0]);
			run_worker(&cfg, go[0], results[1]);
		}
	}
	close(go[0]);
	close(results[1]);
	close(go[1]);
	for (i = 0; i < cfg.procs; i++) {
		if (read(results[0], &res[i], sizeof(res[i])) != (ssize_t)sizeof(res[i])) {
			fprintf(stderr, "client: a worker sent no result\n");
			return 1;
		}
	}
	while (wait(&status) > 0)
		failed |= !WIFEXITED(status) || WEXITSTATUS(status);
	if (failed) {
		fprintf(stderr, "client: a worker failed\n");
		return 1;
	}
	print_json(&cfg, res, cfg.procs);
	return 0;
}
