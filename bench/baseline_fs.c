/*
 * baseline_fs: the least a libfuse2 filesystem can do to serve lpfs's files.
 *
 *   baseline_fs MOUNTPOINT -f [-s] -o OPTIONS
 *
 * A fixed tree of the same shape as an lpfs mount with the demo patch:
 *
 *   /kernel/livepatch/livepatch_demo/{enabled,transition,force,replace,stack_order}
 *   /kernel/livepatch/livepatch_demo/vmlinux/
 *
 * with the kernel's modes and a size of 4096 for every file. Reads serve
 * constant text; every write fails with EINVAL, which is what the kernel's
 * enabled_store() answers for the state the patch is already in (and
 * force_store() for a patch not in transition). Opening a file in a
 * direction its mode lacks fails with EACCES, as on sysfs. Nothing is
 * locked or allocated: the tree never changes.
 *
 * /requests counts the callbacks made so far, by name: libfuse 2 makes one
 * per request, LOOKUP and GETATTR alike calling getattr (FORGET and the
 * FLUSH it answers ENOSYS once call none). Requests about /requests itself
 * are not counted, so reading it does not change what it shows.
 */
#define FUSE_USE_VERSION 26
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <fuse.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATCH_DIR "/kernel/livepatch/livepatch_demo"
#define PAGE_SIZE 4096

struct node {
	const char *path;
	mode_t mode;
	const char *text;
};

static const struct node nodes[] = {
	{"/", S_IFDIR | 0755, NULL},
	{"/kernel", S_IFDIR | 0755, NULL},
	{"/kernel/livepatch", S_IFDIR | 0755, NULL},
	{PATCH_DIR, S_IFDIR | 0755, NULL},
	{PATCH_DIR "/enabled", S_IFREG | 0644, "1\n"},
	{PATCH_DIR "/transition", S_IFREG | 0444, "0\n"},
	{PATCH_DIR "/force", S_IFREG | 0200, NULL},
	{PATCH_DIR "/replace", S_IFREG | 0444, "0\n"},
	{PATCH_DIR "/stack_order", S_IFREG | 0444, "1\n"},
	{PATCH_DIR "/vmlinux", S_IFDIR | 0755, NULL},
};

#define NR_NODES (sizeof(nodes) / sizeof(nodes[0]))
#define REQUESTS "/requests"

enum callback { GETATTR, OPENDIR, READDIR, RELEASEDIR, OPEN, READ, WRITE, TRUNCATE, RELEASE,
		NR_CALLBACKS };
static const char *const callback_names[NR_CALLBACKS] = {
	"getattr", "opendir", "readdir", "releasedir", "open", "read", "write", "truncate",
	"release",
};
static unsigned long calls[NR_CALLBACKS];

static void count(enum callback callback, const char *path)
{
	if (strcmp(path, REQUESTS))
		__atomic_fetch_add(&calls[callback], 1, __ATOMIC_RELAXED);
}

/* The text of /requests: one "name count" line per callback. */
static int requests_text(char *buf, size_t size)
{
	int len = 0, i;

	for (i = 0; i < NR_CALLBACKS; i++)
		len += snprintf(buf + len, size - len, "%s %lu\n", callback_names[i],
				__atomic_load_n(&calls[i], __ATOMIC_RELAXED));
	return len;
}

static time_t mounted;

static const struct node *find(const char *path)
{
	size_t i;

	for (i = 0; i < NR_NODES; i++)
		if (!strcmp(nodes[i].path, path))
			return &nodes[i];
	return NULL;
}

/* The last component of @child if its parent is @dir, else NULL. */
static const char *child_name(const char *dir, const char *child)
{
	size_t len = strlen(dir);
	const char *name;

	if (!strcmp(child, "/"))
		return NULL;
	if (len == 1)
		name = child + 1;
	else if (!strncmp(child, dir, len) && child[len] == '/')
		name = child + len + 1;
	else
		return NULL;
	return strchr(name, '/') ? NULL : name;
}

static int bl_getattr(const char *path, struct stat *st)
{
	const struct node *node = find(path);
	size_t i;

	count(GETATTR, path);
	if (!strcmp(path, REQUESTS)) {
		memset(st, 0, sizeof(*st));
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = PAGE_SIZE;
		return 0;
	}
	if (!node)
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->st_mode = node->mode;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_atime = st->st_mtime = st->st_ctime = mounted;
	if (S_ISREG(node->mode)) {
		st->st_nlink = 1;
		st->st_size = PAGE_SIZE;
		return 0;
	}
	st->st_nlink = 2;
	for (i = 0; i < NR_NODES; i++)
		if (S_ISDIR(nodes[i].mode) && child_name(path, nodes[i].path))
			st->st_nlink++;
	return 0;
}

static int bl_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
		      struct fuse_file_info *fi)
{
	const struct node *node = find(path);
	const char *name;
	size_t i;

	(void)offset;
	(void)fi;
	count(READDIR, path);
	if (!node)
		return -ENOENT;
	if (!S_ISDIR(node->mode))
		return -ENOTDIR;
	filler(buf, ".", NULL, 0);
	filler(buf, "..", NULL, 0);
	for (i = 0; i < NR_NODES; i++) {
		name = child_name(path, nodes[i].path);
		if (name)
			filler(buf, name, NULL, 0);
	}
	return 0;
}

static int bl_open(const char *path, struct fuse_file_info *fi)
{
	const struct node *node = find(path);
	int access = fi->flags & O_ACCMODE;

	count(OPEN, path);
	if (!strcmp(path, REQUESTS))
		return access == O_RDONLY ? 0 : -EACCES;
	if (!node)
		return -ENOENT;
	if (S_ISDIR(node->mode))
		return access == O_RDONLY ? 0 : -EISDIR;
	if (access != O_RDONLY && !(node->mode & 0222))
		return -EACCES;
	if (access != O_WRONLY && !(node->mode & 0444))
		return -EACCES;
	return 0;
}

static int bl_read(const char *path, char *buf, size_t size, off_t offset,
		   struct fuse_file_info *fi)
{
	const struct node *node = find(path);
	size_t len;
	char text[PAGE_SIZE];

	(void)fi;
	count(READ, path);
	if (!strcmp(path, REQUESTS)) {
		len = requests_text(text, sizeof(text));
		if ((size_t)offset >= len)
			return 0;
		if (size > len - offset)
			size = len - offset;
		memcpy(buf, text + offset, size);
		return (int)size;
	}
	if (!node || !node->text)
		return -EBADF;
	len = strlen(node->text);
	if ((size_t)offset >= len)
		return 0;
	if (size > len - offset)
		size = len - offset;
	memcpy(buf, node->text + offset, size);
	return (int)size;
}

static int bl_write(const char *path, const char *buf, size_t size, off_t offset,
		    struct fuse_file_info *fi)
{
	count(WRITE, path);
	(void)buf;
	(void)size;
	(void)offset;
	(void)fi;
	return -EINVAL;
}

static int bl_truncate(const char *path, off_t size)
{
	const struct node *node = find(path);

	(void)size;
	count(TRUNCATE, path);
	if (!node)
		return -ENOENT;
	return S_ISDIR(node->mode) ? -EISDIR : 0;
}

/* Requests libfuse answers the same without these; they are here to be counted. */
static int bl_opendir(const char *path, struct fuse_file_info *fi)
{
	(void)fi;
	count(OPENDIR, path);
	return 0;
}

static int bl_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)fi;
	count(RELEASEDIR, path);
	return 0;
}

static int bl_release(const char *path, struct fuse_file_info *fi)
{
	(void)fi;
	count(RELEASE, path);
	return 0;
}

static const struct fuse_operations ops = {
	.getattr = bl_getattr,
	.opendir = bl_opendir,
	.readdir = bl_readdir,
	.releasedir = bl_releasedir,
	.open = bl_open,
	.read = bl_read,
	.write = bl_write,
	.truncate = bl_truncate,
	.release = bl_release,
};

int main(int argc, char *argv[])
{
	mounted = time(NULL);
	return fuse_main(argc, argv, &ops, NULL);
}
